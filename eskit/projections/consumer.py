"""A durable pull consumer, seen as batches: create it at a position, fetch a batch, ack, delete.

Fetches are raw ``CONSUMER.MSG.NEXT`` requests with ``no_wait`` + ``expires``, answered on an inbox of the
consumer's own (deliveries keep their stream subject, so they cannot share the client's request inbox). The
server answers at once with what it has (then ``404 No Messages``), or, when nothing is pending, as soon as
the next event is stored, or with ``408`` when ``expires`` runs out. So a caught-up projection never waits
for a timer, and an idle one costs one request per ``wait``.

Deliveries arrive on a fast lane (:mod:`eskit._nats.fastlane`) as raw bytes and are decoded a batch at a time
(:mod:`eskit._rawdecode`). The consumer acknowledges with ack policy "all": one ack after a batch is
committed settles every event of it.

The consumer can read the whole store (``orders.>``) and hand on only the event ``types`` asked for: the
others are dropped before they are decoded. Per-type filters on the server look cheaper, but nats-server
(2.15) finds the next match of a wildcard filter such as ``orders.*.shipped`` by searching its subject
index, so a catch-up through many aggregates slows down with their number, and more so with several
filters (``bench/projections.py`` measures it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Awaitable, Container
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from .._bulkread import RawBatch
from .._nats import fastlane as _fastlane
from .._nats.jsapi import guarded
from .._rawdecode import ack_tokens, recorded_events, split_subjects
from .._reader import READ_PAGE
from ..errors import ProjectionError
from ..events import RecordedEvent, decode

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from .._reader import Reader
    from ..connection import Client

MAX_GAP_READS = 4  # more holes than this in one batch: one Direct Get read over the span instead
_END = frozenset({b"404", b"408"})  # no (more) messages / request expired


@dataclass(slots=True)
class _Request:
    """One outstanding pull request: the messages it got so far, set done by its last one."""

    batch: int
    done: asyncio.Future[None]
    raw: RawBatch = field(default_factory=RawBatch)


@dataclass(slots=True)
class Batch:
    """Events fetched in one request, the ack subject that settles them all, and what is still undelivered."""

    events: list[RecordedEvent]
    ack_subject: str | None  # the last event's: with ack policy "all", acking it acknowledges the batch
    pending: int | None  # events not yet delivered after this batch (None: the server did not say)
    redelivered: int  # how many of these events the server had delivered before
    last_position: int  # of the last event delivered, handed on or not (0: none)
    delivered: int  # events delivered, handed on or not
    positions: list[int] = field(default_factory=list)  # of every event delivered, handed on or not, in order


@dataclass(frozen=True, slots=True)
class Progress:
    """What the server says of the consumer (:meth:`PullConsumer.progress`)."""

    pending: int  # events not yet delivered
    unacked: int  # delivered but not acknowledged
    delivered: int  # stream position of the last event delivered (to anyone pulling from this consumer)
    changed: str = ""  # what someone else changed on the consumer (its filter, a pause): recreate it


class PullConsumer:
    """One durable pull consumer, acked a batch at a time (see the module docstring)."""

    def __init__(
        self, client: Client, stream: str, durable: str, filters: list[str], *,
        max_ack_pending: int = 2000, ack_wait: float = 30.0, types: frozenset[str] | None = None,
    ) -> None:  # fmt: skip
        self.client = client
        self.stream = stream
        self.durable = durable
        self.filters = filters
        self.types = types  # event types to hand on (None: all)
        self.max_ack_pending = max_ack_pending
        self.ack_wait = ack_wait
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = ""
        self._sub: Any = None
        self._requests: deque[_Request] = deque()  # outstanding, answered in order

    async def create(self, *, after: int) -> None:
        """(Re)create the consumer so that it delivers the events after position ``after``, in order.

        The read model, not the consumer, is the source of truth for the position: a consumer left with
        unacknowledged messages by a crash would deliver newer events before redelivering those.
        """
        await self.delete()
        await self.close()  # a new inbox: nothing the old consumer still sends can reach the new one
        self._inbox = self.client.nc.new_inbox()
        nc = self.client.nc
        self._sub = await nc.subscribe(self._inbox, cb=self._on_msg)
        _fastlane.route(nc, self._sub, self._on_raw)  # else _on_msg gets nats-py's messages
        await self._add(after, self.filters)

    async def _add(self, after: int, filters: list[str]) -> None:
        """Create the durable consumer on ``filters`` (through the wire: an account without the right, an
        analyst, gets :class:`~eskit.errors.PermissionDeniedError` at once, not a timeout)."""
        start = {"deliver_policy": DeliverPolicy.ALL} if after == 0 else {
            "deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": after + 1}  # fmt: skip
        config = ConsumerConfig(
            durable_name=self.durable, ack_policy=AckPolicy.ALL, ack_wait=self.ack_wait,
            max_ack_pending=self.max_ack_pending, max_waiting=16,
            filter_subject=filters[0] if len(filters) == 1 else None,
            filter_subjects=filters if len(filters) > 1 else None, **start,
        )  # fmt: skip
        body = json.dumps({"stream_name": self.stream, "config": config.as_dict()}).encode()
        reply = await self._api(f"CONSUMER.DURABLE.CREATE.{self.stream}.{self.durable}", body)
        if "error" in reply:
            raise ProjectionError(
                f"cannot create consumer {self.durable} on {self.stream}: {reply['error'].get('description')}"
            )

    async def delete(self) -> bool:
        """Delete the consumer; False if there was none."""
        reply = await self._api(f"CONSUMER.DELETE.{self.stream}.{self.durable}", b"")
        return bool(reply.get("success"))

    async def _api(self, call: str, body: bytes) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads((await self.client.wire.request(f"$JS.API.{call}", body)).data)
        return answer

    async def info(self) -> tuple[int, int]:
        """(events not yet delivered, events delivered but not acknowledged)."""
        progress = await self.progress()
        return progress.pending, progress.unacked

    async def progress(self) -> Progress:
        """Pending, unacknowledged, and the last position delivered, in one request."""
        doing = f"consumer {self.durable} of {self.stream}"
        info = await guarded(doing, self.client.js.consumer_info(self.stream, self.durable))
        delivered = int(info.delivered.stream_seq or 0) if info.delivered is not None else 0
        config, changed = info.config, []
        filters = config.filter_subjects or ([config.filter_subject] if config.filter_subject else [])
        if filters != self.filters:
            changed.append(f"filter {filters}")
        if info.paused:
            changed.append("paused")
        return Progress(int(info.num_pending or 0), int(info.num_ack_pending or 0), delivered, ", ".join(changed))

    async def fetch(self, batch: int, *, wait: float) -> Batch:
        """Up to ``batch`` events: those available now, else the first to arrive within ``wait`` seconds."""
        return await (await self.request(batch, wait=wait))

    async def request(self, batch: int, *, wait: float) -> Awaitable[Batch]:
        """Ask for a batch now, await it later (a prefetch while the previous batch is being applied)."""
        if self._sub is None:
            raise ProjectionError(f"consumer {self.durable} is not created yet; call create() first")
        body: dict[str, Any] = {"batch": batch, "no_wait": True}
        if wait > 0:
            body["expires"] = int(wait * 1e9)
        request = _Request(batch, asyncio.get_running_loop().create_future())
        self._requests.append(request)
        pull = self.client.nc.publish(self._next, json.dumps(body).encode(), reply=self._inbox)
        await guarded(f"pull from consumer {self.durable}", pull)
        return self._settle(request, wait + 5.0)

    async def _settle(self, request: _Request, timeout: float) -> Batch:
        try:
            await asyncio.wait_for(asyncio.shield(request.done), timeout)
        except TimeoutError:
            raise ProjectionError(
                f"consumer {self.durable} on {self.stream}: no answer in {timeout:.0f}s; is the server up?"
            ) from None
        raw = request.raw
        if not raw.payloads:
            return Batch([], None, None, 0, 0, 0)
        acks = ack_tokens(raw.replies)  # of all delivered, handed on or not
        subjects, events_acks, headers, payloads = raw.subjects, acks, raw.headers, raw.payloads
        if self.types is not None:  # drop other types before decoding them
            types = split_subjects(subjects, original_names=False)[2]
            wanted = [i for i, t in enumerate(types) if t in self.types]
            if len(wanted) < len(subjects):
                subjects, events_acks = [subjects[i] for i in wanted], acks.pick(wanted)
                headers, payloads = [headers[i] for i in wanted], [payloads[i] for i in wanted]
        events = recorded_events(subjects, events_acks, headers, payloads)
        redelivered = len(acks.delivered) - acks.delivered.count(1)
        top = acks.positions.index(max(acks.positions))  # a redelivery may come after newer events
        ack = raw.replies[top].decode()
        return Batch(events, ack, acks.pending[-1], redelivered, acks.positions[top], len(raw), acks.positions)

    def _on_raw(self, subject: bytes, reply: bytes, headers: bytes, data: bytes) -> None:
        if not self._requests:
            return  # nobody asked (a request given up on): it is redelivered after ack_wait
        request = self._requests[0]
        if reply:  # a stored message (statuses come without a reply subject)
            raw = request.raw
            raw.subjects.append(subject)
            raw.replies.append(reply)
            raw.headers.append(headers)
            raw.payloads.append(data)
            if len(raw.payloads) < request.batch:
                return
        else:
            code = headers[9:12]  # NATS/1.0 <code> <description>
            if code == b"100":  # idle heartbeat
                return
            if code not in _END:
                line = headers[9 : headers.find(b"\r\n")].decode("utf-8", "replace")
                request.done.set_exception(
                    ProjectionError(f"consumer {self.durable} on {self.stream}: {line}; recreate it")
                )
                self._requests.popleft()
                return
        request.done.set_result(None)
        self._requests.popleft()

    async def _on_msg(self, msg: Msg) -> None:
        """The same, from nats-py's ordinary delivery (when this nats-py has no fast lane)."""
        headers = dict(msg.headers or {})
        status = None if msg.reply else headers.pop("Status", None)  # a delivery's Status is a stored header
        first = f"NATS/1.0 {status} {headers.pop('Description', '')}" if status else "NATS/1.0"
        block = "".join([first, "\r\n", *(f"{k}: {v}\r\n" for k, v in headers.items()), "\r\n"])
        self._on_raw(msg.subject.encode(), (msg.reply or "").encode(), block.encode(), msg.data)

    async def close(self) -> None:
        """Stop listening (the consumer stays on the server; :meth:`delete` removes it)."""
        for request in self._requests:
            if not request.done.done():
                request.done.cancel()
        self._requests.clear()
        if self._sub is not None:
            sub, self._sub = self._sub, None
            _fastlane.unroute(self.client.nc, sub)
            with contextlib.suppress(nats.errors.Error):  # a closed connection: nothing to unsubscribe from
                await sub.unsubscribe()

    async def ack(self, batch: Batch) -> None:
        """Acknowledge every event of ``batch`` (call it after the read model committed them)."""
        if batch.ack_subject is not None:
            await guarded(f"ack to consumer {self.durable}", self.client.nc.publish(batch.ack_subject, b""))

    async def flush(self) -> None:
        """Wait until the server has received everything sent so far (e.g. the acks)."""
        await guarded(f"flush the acks to consumer {self.durable}", self.client.nc.flush())

def missing_ranges(after: int, positions: list[int]) -> list[tuple[int, int]]:
    """The (first, last) ranges of positions after ``after`` and up to the highest in ``positions`` that
    ``positions`` lacks: a consumer of the whole store delivers every position, so these went elsewhere.

    >>> missing_ranges(2, [3, 4, 7, 8, 5])
    [(6, 6)]
    """
    if not positions:
        return []
    top = max(positions)
    if top <= after or (positions[0] == after + 1 and positions[-1] == top == after + len(positions)
                        and len(set(positions)) == len(positions)):  # fmt: skip
        return []  # the usual case: exactly after+1 .. top
    gaps, expected = [], after + 1
    for position in sorted({p for p in positions if p > after}):
        if position > expected:
            gaps.append((expected, position - 1))
        expected = position + 1
    return gaps


async def missing_events(
    reader: Reader, gaps: list[tuple[int, int]], have: Container[int], types: Container[str]
) -> list[RecordedEvent]:
    """The events of ``types`` stored in the ``gaps`` (first, last) at positions not in ``have``, read by
    Direct Get, in stream order. Positions that hold nothing (deleted events) are passed over."""
    if len(gaps) > MAX_GAP_READS:  # many small holes (deleted events): one read over all of them
        gaps = [(gaps[0][0], gaps[-1][1])]
    found: dict[int, RecordedEvent] = {}
    for first, last in gaps:
        pages = reader.pages(f"{reader.name}.>", first - 1, last, first=min(READ_PAGE, last - first + 1))
        async with contextlib.aclosing(pages):
            async for page in pages:
                for m in page.messages:
                    if m.seq <= last and m.seq not in have and m.seq not in found:
                        event = decode(m.seq, m.subject, m.headers, m.data)
                        if event.type in types:
                            found[m.seq] = event
    return list(found.values())
