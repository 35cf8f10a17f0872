"""EventStore: append with optimistic concurrency, dedup and atomic batches; read one aggregate; replay.

>>> orders = await client.event_store("orders")                             # doctest: +SKIP
>>> pos = await orders.append("123", [Event("created", {"customer": "c1"})], expected_position=0)
>>> [e.type for e in await orders.read("123")]                               # doctest: +SKIP
['created']

Concurrency: ``expected_position`` is the stream sequence of the aggregate's last event (0 = the aggregate
must not exist yet). It is checked by the server against the last message on ``orders.<id>.>`` (all event
types), with ``Nats-Expected-Last-Subject-Sequence`` + ``Nats-Expected-Last-Subject-Sequence-Subject``.
Checking only the subject of the event being written (as the pattern's seed does) lets a concurrent
writer of another event type slip in unnoticed: a lost update.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ._bulkread import ConsumerRefused
from ._nats.codes import (
    BATCH_DUPLICATE,
    CONFLICT,
    DUPLICATE_IN_PROCESS,
    EXPECTED_SEQ,
    EXPECTED_SUBJECT,
    SUBJECT_SEQUENCE_UNAVAILABLE,
    WRONG_LAST_SEQUENCE,
)
from ._nats.wire import ApiError, StoredMsg, parse_ack
from ._reader import Reader, beyond, by_consumer, merge_scans
from .aggregate import Aggregate
from .aggregate import load as load_aggregate
from .aggregate import save as save_aggregate
from .errors import (
    ConcurrencyError,
    DuplicateEventError,
    EventStoreError,
    PayloadTooLargeError,
    StoreUnavailableError,
    ValidationError,
)
from .events import (
    Event,
    Position,
    RecordedEvent,
    check_events,
    check_position,
    check_token,
    decode,
    encode_data,
    encode_headers,
    stored_run,
    subject,
)

if TYPE_CHECKING:
    from .cache import AggregateCache
    from .connection import Client
    from .privacy import Privacy
    from .snapshots import Snapshots
    from .upcasting import Upcasters

    A = TypeVar("A", bound=Aggregate)

MAX_BATCH = 1000  # the server's atomic batch limit (err_code 10199)
BATCH_HEADER_BYTES = 100  # Nats-Batch-Id (32 hex) + Nats-Batch-Sequence + Nats-Batch-Commit

LAG_PAUSE = 0.005  # seconds between reads while a follower catches up with what the leader named


class EventStore:
    """Events of one aggregate type in one JetStream stream (``orders`` -> ``ORDERS``, ``orders.>``)."""

    def __init__(self, client: Client, name: str, stream: str) -> None:
        self.client = client
        self.name = name
        self.stream = stream
        self._wire = client.wire
        self.reader = Reader(client, stream, name)  # every read of the stream
        self.snapshots: Snapshots | None = None  # set by client.event_store(..., snapshots=SnapshotPolicy())
        self.cache: AggregateCache | None = None  # set by client.event_store(..., cache=AggregateCache())
        self.upcasters: Upcasters | None = None  # set by client.event_store(..., upcasters=Upcasters())
        self._types_seen: set[str] = set()  # event types its loads have met (see eskit._bysubject)
        self.privacy: Privacy | None = None  # set by client.event_store(..., privacy=Personal(...))

    def __repr__(self) -> str:
        return f"<EventStore {self.name} stream={self.stream}>"

    # -- writing -------------------------------------------------------------------------------------------

    async def append(
        self, aggregate_id: str, events: Sequence[Event], *, expected_position: int | None = None
    ) -> int:
        """Append ``events`` to one aggregate, all or nothing; return the position of the last one.

        Raises :class:`ConcurrencyError` if ``expected_position`` is given and the aggregate's last event
        is elsewhere. Appending the same ``Event`` objects again (a retry) stores nothing new and returns
        the position they were stored at. A store opened with ``privacy=`` encrypts personal fields first
        (:mod:`eskit.privacy`).
        """
        if self.privacy is not None:
            check_token(aggregate_id, "aggregate id")  # before a key is made for a subject
            check_events(events, Event, "append(id, [event])")
            events = await self.privacy.seal(events)
        messages = self._encode(aggregate_id, events, expected_position)
        if len(messages) == 1:
            reply = await self._wire.request(*messages[0])
        else:
            reply = await self._wire.publish_batch(messages)
        return await self._settle(reply, aggregate_id, events, expected_position)

    def _encode(
        self, aggregate_id: str, events: Sequence[Event], expected_position: int | None
    ) -> list[tuple[str, bytes, dict[str, str]]]:
        check_token(aggregate_id, "aggregate id")
        check_events(events, Event, "append(id, [event])")
        check_position(expected_position)
        if not events:
            raise ValidationError(f"nothing to append to {self.name}/{aggregate_id}: the event list is empty")
        if len(events) > MAX_BATCH:
            raise ValidationError(
                f"{len(events)} events in one append; the server's atomic batch holds at most {MAX_BATCH}"
            )
        limit = self.client.max_payload
        out = []
        for n, event in enumerate(events):
            check_token(event.type, "event type")
            data, headers = encode_data(event), encode_headers(event)
            if n == 0 and expected_position is not None:
                headers[EXPECTED_SEQ] = str(expected_position)
                headers[EXPECTED_SUBJECT] = f"{self.name}.{aggregate_id}.>"
            size = len(data) + _header_bytes(headers) + (BATCH_HEADER_BYTES if len(events) > 1 else 0)
            if size > limit:
                raise PayloadTooLargeError(
                    f"event {event.type!r} for {self.name}/{aggregate_id} is {size:,} bytes with headers; the "
                    f"server's max_payload is {limit:,} bytes: store large data elsewhere and keep a reference"
                )
            out.append((subject(self.name, aggregate_id, event.type), data, headers))
        return out

    async def _resolve_error(
        self, error: ApiError, aggregate_id: str, events: Sequence[Event], expected: int | None
    ) -> int:
        """A conflict or duplicate may be our own earlier attempt (a retry): then the append succeeded."""
        if error.err_code in (*CONFLICT, BATCH_DUPLICATE, DUPLICATE_IN_PROCESS):
            named = re.search(r"(\d+)\s*$", error.description) if error.err_code == WRONG_LAST_SEQUENCE else None
            reach = int(named.group(1)) if named else None  # else: the leader is asked (clusters, batches)
            stored = await self._find_stored(aggregate_id, events, after=expected or 0, reach=reach)
            if stored is not None:
                return stored
        if error.err_code == SUBJECT_SEQUENCE_UNAVAILABLE:
            raise StoreUnavailableError(
                f"append to {self.name}/{aggregate_id}: {error.description}; retry (the stream's leader is catching up)"
            )
        if error.err_code in CONFLICT:
            match = re.search(r"(\d+)\s*$", error.description)
            actual = int(match.group(1)) if match else None
            raise ConcurrencyError(self.name, aggregate_id, expected=expected or 0, actual=actual)
        if error.err_code in (BATCH_DUPLICATE, DUPLICATE_IN_PROCESS):
            raise DuplicateEventError(
                f"{self.name}/{aggregate_id}: some of these event ids are already stored by another append; "
                "create new Event objects for a new decision"
            )
        raise EventStoreError(f"append to {self.name}/{aggregate_id} failed: {error.description}")

    async def _find_stored(
        self, aggregate_id: str, events: Sequence[Event], *, after: int, reach: int | None
    ) -> int | None:
        """Where ``events`` are stored (a retry whose first attempt landed), read up to ``reach``."""
        return stored_run(await self.read_reaching(aggregate_id, after=after, reach=reach), events)

    async def append_many(
        self, appends: Iterable[tuple[str, Sequence[Event], int | None]], *, concurrency: int = 1024
    ) -> list[int]:
        """Many independent appends, pipelined; each is checked and atomic on its own.

        Everything is validated and encoded before anything is sent. Single-event appends are pipelined
        (at most ``concurrency`` awaiting their ack); multi-event appends are atomic batches, at most 32 open
        at once per connection (``eskit._nats.wire.MAX_INFLIGHT_BATCHES``; the server allows 50 per stream). If one
        append fails, its error is raised once all were sent; the others may have been stored (each is
        independent).

        >>> await orders.append_many([("1", [Event("created")], 0), ("2", [Event("created")], 0)])  # doctest: +SKIP
        [1, 2]
        """
        appends = list(appends) if isinstance(appends, Iterable) and not isinstance(appends, str | bytes) else [None]
        if any(not isinstance(a, tuple | list) or len(a) != 3 for a in appends):
            raise ValidationError(
                "append_many takes a list of (aggregate_id, [events], expected_position) tuples, "
                "e.g. [('1', [Event('created')], 0)] (expected_position None: no check)"
            )
        if self.privacy is not None:  # everything checked first: no key is made for input that fails
            privacy = self.privacy
            for aggregate_id, events, expected in appends:
                self._encode(aggregate_id, events, expected)
            plans = [privacy.check(events) for _, events, _ in appends]
            appends = [
                (a, await privacy.sealed(events, plan), x) for (a, events, x), plan in zip(appends, plans, strict=True)
            ]
        encoded = [self._encode(aggregate_id, events, expected) for aggregate_id, events, expected in appends]
        positions: list[int] = [0] * len(appends)
        singles = [i for i, messages in enumerate(encoded) if len(messages) == 1]
        batches = [i for i, messages in enumerate(encoded) if len(messages) > 1]

        async def one_batch(i: int) -> None:  # multi-event appends: an atomic batch each
            aggregate_id, events, expected = appends[i]
            reply = await self._wire.publish_batch(encoded[i])
            positions[i] = await self._settle(reply, aggregate_id, events, expected)

        async def pipelined() -> None:  # single-event appends: one pipelined request each
            replies = await self._wire.request_many([encoded[i][0] for i in singles], window=max(concurrency, 1))
            for i, reply in zip(singles, replies, strict=True):
                aggregate_id, events, expected = appends[i]
                positions[i] = await self._settle(reply, aggregate_id, events, expected)

        outcomes = await asyncio.gather(pipelined(), *(one_batch(i) for i in batches), return_exceptions=True)
        for outcome in outcomes:  # every append has finished: only now report the first failure
            if isinstance(outcome, BaseException):
                raise outcome
        return positions

    async def _settle(self, reply: Any, aggregate_id: str, events: Sequence[Event], expected: int | None) -> int:
        ack = parse_ack(reply)
        if isinstance(ack, ApiError):
            return await self._resolve_error(ack, aggregate_id, events, expected)
        if not ack.get("duplicate"):  # a new message's position is the stream's end
            self.reader.reached(int(ack["seq"]))
        elif await self._find_stored(aggregate_id, events, after=0, reach=int(ack["seq"])) is None:
            raise DuplicateEventError(
                f"{self.name}/{aggregate_id}: event id {events[0].id} is already stored on another aggregate; "
                "create a new Event object for a new fact"
            )
        return int(ack["seq"])

    # -- reading -------------------------------------------------------------------------------------------

    async def read(self, aggregate_id: str, *, after: int = 0, up_to: Position = None) -> list[RecordedEvent]:
        """The aggregate's events after position ``after``, up to a position or a time (inclusive).

        One Direct Get round trip per 2,000 events; no consumer is created.
        """
        check_position(after, "after", optional=False)
        return await self._read(aggregate_id, after=after, up_to=up_to, upcast=True)

    async def _read(self, aggregate_id: str, *, after: int, up_to: Position, upcast: bool) -> list[RecordedEvent]:
        check_token(aggregate_id, "aggregate id")
        scan = self._scan(f"{self.name}.{aggregate_id}.>", after=after, up_to=up_to, upcast=upcast)
        return [e async for e in scan]

    async def read_reaching(
        self, aggregate_id: str, *, after: int = 0, reach: int | None = None, within: float = 5.0
    ) -> list[RecordedEvent]:
        """:meth:`read`, repeated until it reaches position ``reach`` (``None``: the leader's last position).

        Direct Get is answered by any replica and a follower may lag the leader; a read that judges what the
        leader did (is my retried append already stored?) must see at least what the leader named. Gives up
        after ``within`` seconds and returns what it read (then the caller sees a conflict, never a false
        success). The events are as stored (no upcasting: this read judges ids and positions).
        """
        if reach is None:
            reach = await self._wire.leader_last(self.stream, f"{self.name}.{aggregate_id}.>")
        history = await self._read(aggregate_id, after=after, up_to=None, upcast=False)
        deadline = time.monotonic() + within
        while (history[-1].position if history else after) < reach and time.monotonic() < deadline:
            await asyncio.sleep(LAG_PAUSE)  # this replica lags: read the rest again
            history += await self._read(
                aggregate_id, after=history[-1].position if history else after, up_to=None, upcast=False
            )
        return history

    async def replay(
        self, *, after: int = 0, up_to: Position = None, subjects: Sequence[str] | None = None
    ) -> AsyncIterator[RecordedEvent]:
        """Every event in the stream (or on ``subjects``, e.g. ``["orders.*.shipped"]``), in order.

        Events appended while the replay runs are included, up to ``up_to`` (a position or a time) if given.
        A whole store with many events after the first page (the policy: :func:`eskit._reader.by_consumer`)
        comes through a short-lived consumer, decoded a batch at a time (:mod:`eskit._bulkread`), then the
        rest with batch Direct Get.
        Subject filters are read with Direct Get only: nats-server's consumers find the next match of a
        wildcard filter by searching their subject index, which slows down with the number of aggregates.

        >>> async for event in orders.replay(after=0): ...                # doctest: +SKIP
        """
        check_position(after, "after", optional=False)
        if isinstance(subjects, str):
            raise ValidationError(f"subjects takes a list of subject filters, e.g. [{subjects!r}]")
        filters = list(subjects or [f"{self.name}.>"])
        for f in filters:
            if type(f) is not str or not (f == f"{self.name}.>" or f.startswith(f"{self.name}.")):
                raise ValidationError(f"subject filter {f!r} is outside store {self.name!r} ({self.name}.>)")
        if filters == [f"{self.name}.>"]:
            async for event in self._replay_store(after, up_to):
                yield event
            return
        if len(filters) > 1 and up_to is None:  # one cut for all filters: no scan sees later events than another
            up_to = await self.last_position()
        if len(filters) == 1:
            async for event in self._scan(filters[0], after=after, up_to=up_to):
                yield event
            return
        async for event in merge_scans([self._scan(f, after=after, up_to=up_to) for f in filters]):
            yield event

    async def _replay_store(
        self, after: int, up_to: Position, *, strict: bool = True
    ) -> AsyncIterator[RecordedEvent]:
        """The whole store: a first Direct Get page; if it says many events follow (:func:`eskit._reader.by_consumer`),
        a short-lived consumer; then Direct Get pages for what was appended meanwhile. ``strict=False``: an event
        whose upcaster raises comes with the error in ``decode_error`` (see :mod:`eskit.upcasting`)."""
        whole, limit = f"{self.name}.>", up_to if isinstance(up_to, int) else None
        upcasters, privacy = self.upcasters, self.privacy
        async with contextlib.aclosing(self.reader.pages(whole, after, limit)) as pages:
            async for page in pages:
                events = await self._readable(page.messages, upcasters, privacy, strict)
                for event in events:
                    if beyond(event, up_to):
                        return
                    yield event
                    after = event.position
                if by_consumer(page.pending) and (limit is None or by_consumer(limit - after)):
                    break
            else:
                return  # all read
        async with contextlib.aclosing(self.reader.events(after=after, filters=[whole])) as batches:
            try:
                async for events in batches:
                    events = await self._readable(events, upcasters, privacy, strict)
                    for event in events:
                        if beyond(event, up_to):
                            return
                        yield event
                        after = event.position
            except (ConsumerRefused, EventStoreError):
                pass  # refused (permissions), or its consumer failed half-way: Direct Get from `after` below
        async for event in self._scan(whole, after=after, up_to=up_to, strict=strict):
            yield event

    @staticmethod
    async def _readable(
        items: Sequence[StoredMsg] | list[RecordedEvent], upcasters: Upcasters | None, privacy: Privacy | None,
        strict: bool,
    ) -> list[RecordedEvent]:
        """Stored messages (decoded here) or decoded events as a reader sees them: personal fields revealed
        (or :data:`eskit.FORGOTTEN`), old versions upcast."""
        events = [m if isinstance(m, RecordedEvent) else decode(m.seq, m.subject, m.headers, m.data) for m in items]
        if privacy is not None:
            await privacy.reveal_events(events)
        if upcasters is not None:
            events = upcasters._apply_fresh(events, strict=strict)
        return events

    async def _scan(
        self, filter_subject: str, *, after: int, up_to: Position, upcast: bool = True, strict: bool = True
    ) -> AsyncIterator[RecordedEvent]:
        upcasters, privacy = (self.upcasters, self.privacy) if upcast else (None, None)
        async for page in self.reader.pages(filter_subject, after, up_to if isinstance(up_to, int) else None):
            events = await self._readable(page.messages, upcasters, privacy, strict)
            for event in events:
                if beyond(event, up_to):
                    return
                yield event

    async def load(self, cls: type[A], aggregate_id: str, *, up_to: Position = None) -> A:
        """The aggregate ``cls`` rebuilt from its events (and snapshot), as of ``up_to`` if given.

        >>> order = await orders.load(Order, "123")                    # doctest: +SKIP
        """
        if not (isinstance(cls, type) and issubclass(cls, Aggregate)):
            raise ValidationError(f"load takes an Aggregate subclass (the class, e.g. load(Order, '123')), got {cls!r}")
        return await load_aggregate(self, cls, aggregate_id, up_to=up_to)

    async def save(self, aggregate: Aggregate) -> int:
        """Append the aggregate's pending events atomically, checked against its loaded position.

        >>> await orders.save(order)                                    # doctest: +SKIP
        """
        return await save_aggregate(self, aggregate)

    async def last_position(self, aggregate_id: str | None = None) -> int:
        """Stream sequence of the aggregate's last event (or the stream's last), 0 if there is none."""
        if aggregate_id is None:
            return await self.reader.last_position()
        last = await self._last_stored(aggregate_id)
        return 0 if last is None else last.seq

    async def _last_stored(self, aggregate_id: str) -> StoredMsg | None:
        """The aggregate's last stored event (from the server's per-subject index), None if it has none."""
        check_token(aggregate_id, "aggregate id")
        return await self.reader.last(f"{self.name}.{aggregate_id}.>")


def _header_bytes(headers: dict[str, str]) -> int:
    """Size of the encoded header block: ``NATS/1.0\\r\\n`` + ``Key: value\\r\\n``... + ``\\r\\n``."""
    return 12 + sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())
