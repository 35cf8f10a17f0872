"""The async core of the pyeventsourcing recorders: one eskit store, checked inserts, reads that reach.

>>> recorder = NatsRecorder("bank_events", url="nats://127.0.0.1:4222")      # doctest: +SKIP
>>> recorder.portal.call(recorder._insert, [StoredEvent(uuid4(), 1, "bank:Opened", b"{}")])  # doctest: +SKIP
[1]

The layout is in :mod:`eskit.interop._layout`; what it means for the library's contract is in
:mod:`eskit.interop.eventsourcing`; the library's interfaces are in :mod:`eskit.interop._recorders`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.persistence import DataError, IntegrityError, Notification, OperationalError, StoredEvent, Tracking
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from .._nats.codes import CONFLICT, EXPECTED_SEQ, EXPECTED_SUBJECT, SUBJECT_SEQUENCE_UNAVAILABLE
from .._nats.jsapi import guarded
from .._nats.wire import ApiError, StoredMsg, parse_ack
from .._reader import READ_PAGE
from ..analysis.eventlog import encode_token
from ..errors import EventStoreError, StoreUnavailableError
from ..events import subject_parts
from ..store import MAX_BATCH, EventStore
from ..streams import stream_name
from ._layout import (
    TRACKING,
    Message,
    event_message,
    is_event,
    notification,
    originator_token,
    stored_event,
    tracked_id,
    tracking_message,
    tracking_token,
    version_of,
)
from ._portal import Portal

MAX_ATTEMPTS = 5  # inserts re-judged after a conflict before giving up with an IntegrityError
KNOWN = 10_000  # sequences whose last version and position a recorder remembers
REACH_WITHIN = 5.0  # seconds a read waits for a lagging replica to hold what this recorder wrote
LAG_PAUSE = 0.005


class Last(NamedTuple):
    """The last message of a sequence: its version (or tracked notification id) and its position."""

    version: int
    position: int


class NatsRecorder:
    """The store ``name`` opened through a portal (its own, or one shared with the factory's recorders)."""

    def __init__(self, name: str, *, url: str | None = None, portal: Portal | None = None, create: bool = True) -> None:
        self.name = name
        self._owns_portal = portal is None
        self.portal = portal or Portal(url)
        try:
            self.store: EventStore = self.portal.call(self._open, create)
        except BaseException:
            if self._owns_portal:
                self.portal.close()
            raise
        self._known: dict[str, Last] = {}
        self._seen = 0  # the highest position this recorder wrote: its reads reach it (a lagging replica)

    async def _open(self, create: bool) -> EventStore:
        client = self.portal.client
        if create:  # CREATE_TABLE: create or update the stream
            return await client.event_store(self.name)
        name = client.store_name(self.name)  # in a learner namespace (ESKIT_LEARNER): <learner>_<name>
        return EventStore(client, name, stream_name(name))

    def _call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return self.portal.call(func, *args, **kwargs)
        except EventStoreError as exc:  # the library's callers expect its PEP 249 errors
            raise OperationalError(str(exc)) from exc

    def close(self, *, delete_store: bool = False) -> None:
        """Close the recorder (its portal, if it owns one), deleting its store first if asked."""
        try:
            if delete_store:
                self.portal.call(self.portal.client.delete_store, self.name)
        finally:
            if self._owns_portal:
                self.portal.close()

    # -- writing -------------------------------------------------------------------------------------------

    async def _insert(self, events: Sequence[StoredEvent], tracking: Tracking | None = None) -> list[int]:
        """Events (and a tracking record) in one atomic append; their positions. Checked per sequence."""
        if not events and tracking is None:
            return []
        messages = [event_message(self.name, e) for e in events]
        versions = [e.originator_version for e in events]
        if tracking is not None:
            messages.append(tracking_message(self.name, tracking))
            versions.append(tracking.notification_id)
        if len(messages) > MAX_BATCH:
            raise DataError(
                f"{len(messages)} records in one insert into {self.name}; an atomic batch holds at most {MAX_BATCH}"
            )
        keys = [_key(m) for m in messages]
        firsts = _first_versions(keys, versions)
        known = {k: self._known.get(k) for k in firsts}
        for attempt in range(MAX_ATTEMPTS):
            self._judge(firsts, known)
            batch = self._with_checks(messages, keys, known)
            reply = await (
                self.store._wire.request(*batch[0]) if len(batch) == 1 else self.store._wire.publish_batch(batch)
            )
            ack = parse_ack(reply)
            if not isinstance(ack, ApiError):
                first = int(ack["seq"]) - len(batch) + 1
                for n, (key, version) in enumerate(zip(keys, versions, strict=True)):
                    self._remember(key, Last(version, first + n))
                self._seen = max(self._seen, first + len(batch) - 1)
                return list(range(first, first + len(events)))
            if ack.err_code == SUBJECT_SEQUENCE_UNAVAILABLE:  # a new stream leader catching up
                await asyncio.sleep(LAG_PAUSE * 2**attempt)
            elif ack.err_code in CONFLICT:  # a sequence moved on since we knew it: ask the leader, judge again
                fresh = await asyncio.gather(*(self._fresh(k) for k in firsts))
                known = dict(zip(firsts, fresh, strict=True))
            else:
                raise OperationalError(f"insert into {self.name} failed: {ack.description} (err_code {ack.err_code})")
        raise IntegrityError(f"insert into {self.name}: still conflicting after {MAX_ATTEMPTS} attempts; retry")

    def _judge(self, firsts: dict[str, int], known: dict[str, Last | None]) -> None:
        """IntegrityError if a sequence already holds the version (or tracking id) we would write first."""
        for key, version in firsts.items():
            last = known[key]
            if last is not None and version <= last.version:
                what = "tracking id" if key.startswith(TRACKING) else "version"
                raise IntegrityError(
                    f"{self.name}/{key}: {what} {last.version} is recorded; {what} {version} is not after it"
                )

    def _with_checks(self, messages: list[Message], keys: list[str], known: dict[str, Last | None]) -> list[Message]:
        """The batch, with one concurrency check per sequence on its first message."""
        batch, checked = [], set()
        for (subject, data, headers), key in zip(messages, keys, strict=True):
            if key not in checked:
                checked.add(key)
                last = known[key]
                headers = {**headers, EXPECTED_SEQ: str(last.position if last else 0)}
                headers[EXPECTED_SUBJECT] = f"{self.name}.{key}.>"
            batch.append((subject, data, headers))
        return batch

    def _remember(self, key: str, last: Last) -> None:
        known = self._known.get(key)
        if known is None or last.position >= known.position:
            self._known.pop(key, None)  # most recent last: the oldest are forgotten first
            self._known[key] = last
            if len(self._known) > KNOWN:
                del self._known[next(iter(self._known))]

    async def _fresh(self, key: str) -> Last | None:
        """The last message of a sequence as the stream's leader has it (a replica is read until it has it)."""
        subject = f"{self.name}.{key}.>"
        position = await self.store._wire.leader_last(self.store.stream, subject)
        if position == 0:
            return None
        found = await self._scan(subject, after=position - 1, reach=position, limit=1)
        if not found:
            raise StoreUnavailableError(
                f"{self.store.stream}: no replica answering reads holds position {position} yet; retry"
            )
        msg = found[0]
        if not key.startswith(TRACKING) and not is_event(msg):
            raise OperationalError(
                f"{self.store.stream}: the last message on {subject} (position {msg.seq}) was not written by a "
                "recorder (it has no version header); keep other writers out of a recorder's store"
            )
        last = Last(tracked_id(msg.subject) if key.startswith(TRACKING) else version_of(msg.headers), msg.seq)
        self._remember(key, last)
        return last

    # -- reading -------------------------------------------------------------------------------------------

    async def _scan(
        self,
        subject: str,
        *,
        after: int,
        reach: int = 0,
        stop: int | None = None,
        limit: int | None = None,
        keep: Callable[[StoredMsg], bool] = lambda m: True,
        expect: int | None = None,
    ) -> list[StoredMsg]:
        """Messages on ``subject`` after ``after`` (up to ``stop``, at most ``limit`` kept), read on until the
        scan has seen position ``reach`` (a replica that lags behind this recorder's writes), for 5 s at most."""
        out: list[StoredMsg] = []
        deadline = time.monotonic() + REACH_WITHIN
        target = reach if stop is None else min(reach, stop)
        while True:
            first = min(expect or limit or READ_PAGE, READ_PAGE)
            async with contextlib.aclosing(self.store.reader.pages(subject, after, stop, first=first)) as pages:
                async for page in pages:
                    for m in page.messages:
                        if stop is not None and m.seq > stop:
                            return out
                        after = m.seq
                        if keep(m):
                            out.append(m)
                            if limit is not None and len(out) >= limit:
                                return out
            if after >= target or time.monotonic() > deadline:
                return out
            await asyncio.sleep(LAG_PAUSE)

    async def _select(
        self, originator_id: UUID | str, gt: int | None, lte: int | None, desc: bool, limit: int | None
    ) -> list[StoredEvent]:
        token = originator_token(originator_id)
        known = self._known.get(token)
        last = None
        if desc and limit == 1 and lte is None:  # the last one (a latest snapshot): one Direct Get
            last = await self.store.reader.last(f"{self.store.name}.{token}.>")
            if known is not None and (last is None or last.seq < known.position):
                last = None  # this replica lags behind what this recorder wrote: scan until it has it
            elif last is None:
                return []
        if last is not None:
            msgs = [last]
        else:
            # Versions usually count from 1: a first page of exactly `version` messages lets the server stop
            # at the last one instead of searching the rest of the stream for one more (see eskit._reader.Reader.pages)
            expect = known.version if known and known.version > 0 else None
            msgs = await self._scan(
                f"{self.name}.{token}.>", after=0, reach=known.position if known else 0, expect=expect
            )
        msgs = [m for m in msgs if is_event(m)]  # pass over messages others appended
        if msgs:
            self._remember(token, Last(version_of(msgs[-1].headers), msgs[-1].seq))
        events = [
            stored_event(m, originator_id)
            for m in msgs
            if (gt is None or version_of(m.headers) > gt) and (lte is None or version_of(m.headers) <= lte)
        ]
        if desc:
            events.reverse()
        return events[:limit] if limit is not None else events

    async def _notifications(
        self, start: int | None, limit: int, stop: int | None, topics: Sequence[str], inclusive_of_start: bool
    ) -> list[Notification]:
        after = 0 if start is None else max(start - 1 if inclusive_of_start else start, 0)
        if limit <= 0 or (stop is not None and stop <= after):
            return []
        wanted = {encode_token(t) for t in topics}

        def keep(m: StoredMsg) -> bool:
            return is_event(m) and (not wanted or subject_parts(m.subject)[1] in wanted)

        msgs = await self._scan(f"{self.name}.>", after=after, reach=self._seen, stop=stop, limit=limit, keep=keep)
        return [notification(m) for m in msgs]

    async def _max_notification_id(self) -> int | None:
        """The last event's position, as the leader has it (``<store>.*.*``: tracking records have 4 tokens)."""
        return await self.store._wire.leader_last(self.store.stream, f"{self.name}.*.*") or None

    async def _max_tracking_id(self, application_name: str) -> int | None:
        key = tracking_token(application_name)
        msg = await self.store.reader.last(f"{self.store.name}.{key}.>")
        if msg is not None:
            self._remember(key, Last(tracked_id(msg.subject), msg.seq))
        known = self._known.get(key)  # what this recorder wrote, if a replica has not got it yet
        return known.version if known is not None else None

    async def _follow(self, after: int, deliver: Callable[[StoredMsg], Awaitable[None]]) -> Any:
        """An ordered consumer on the whole store from ``after + 1``: catch up, then live."""

        async def on_msg(msg: Msg) -> None:
            await deliver(StoredMsg(msg.metadata.sequence.stream, msg.subject, msg.headers or {}, msg.data))

        return await guarded(f"follow {self.store.stream}", self.portal.client.js.subscribe(
            f"{self.name}.>", stream=self.store.stream, cb=on_msg, ordered_consumer=True,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, config=ConsumerConfig(opt_start_seq=after + 1),
        ))  # fmt: skip


def _key(message: Message) -> str:
    """The sequence a message belongs to: its originator token, or ``%tracking=<application>``."""
    return subject_parts(message[0])[0]


def _first_versions(keys: list[str], versions: list[int]) -> dict[str, int]:
    """Each sequence's first version in the insert; IntegrityError unless versions grow within a sequence."""
    firsts: dict[str, int] = {}
    previous: dict[str, int] = {}
    for key, version in zip(keys, versions, strict=True):
        if key in previous and version <= previous[key]:
            raise IntegrityError(f"{key}: version {version} follows version {previous[key]} in one insert")
        firsts.setdefault(key, version)
        previous[key] = version
    return firsts
