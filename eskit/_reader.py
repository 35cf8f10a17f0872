"""Reading a stream: the one way eskit reads stored messages, for every kind of store.

A :class:`Reader` belongs to one stream and reads it with batch Direct Get or, for a whole store, through a
short-lived consumer (:mod:`eskit._bulkread`). Event stores, aggregates, DCB stores, dead letters, frames
and the importers all read through one; none reaches into another class for it.

>>> reader = Reader(client, "ORDERS", "orders")                                     # doctest: +SKIP
>>> async for page in reader.pages("orders.123.>", after=0, up_to=None): ...          # doctest: +SKIP
>>> last = await reader.last("orders.123.>")       # the last message on a filter      # doctest: +SKIP

- :meth:`Reader.pages`: a Direct Get scan of one subject filter, page by page; the next page is requested
  while the caller works on this one;
- :meth:`Reader.ahead`: the whole stream, several pages in flight (their ranges are known up front);
- :meth:`Reader.batches`: through a consumer, raw (:class:`~eskit._bulkread.RawBatch`);
- :meth:`Reader.last` and :meth:`Reader.last_position`: the last message on a filter (the server's
  per-subject index), the stream's last sequence.

One policy decides when a whole-store read goes through a consumer: :func:`by_consumer`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from ._bulkread import RawBatch, consumer_batches, event_batches
from ._nats.codes import STREAM_NOT_FOUND
from ._nats.wire import Page, StoredMsg, description_of, status_of
from .errors import EventStoreError, StreamNotFoundError
from .events import Position, RecordedEvent

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from ._nats.wire import Wire
    from .connection import Client

READ_PAGE = 2000  # messages per Direct Get page
AHEAD = 4  # pages in flight on a whole-stream Direct Get read
BULK = 4000  # a whole-store read with more events than this still to read goes through a consumer


def by_consumer(remaining: int) -> bool:
    """The whole-store policy: read ``remaining`` events through a consumer (else with Direct Get pages)."""
    return remaining > BULK


class Reader:
    """The reads of one stream ``stream`` whose subjects start with ``name.``."""

    __slots__ = ("name", "nc", "reach", "reached_at", "stream", "wire")

    def __init__(self, client: Client, stream: str, name: str) -> None:
        self.wire: Wire = client.wire
        self.nc: NATS = client.nc
        self.stream = stream
        self.name = name
        self.reach = 0  # the highest stream position this reader knows of (see eskit._bysubject.literal)
        self.reached_at = 0.0  # time.monotonic() when the stream's end was last seen (0: never)

    def reached(self, end: int) -> None:
        """The stream's end was seen at ``end`` (its info, an append's ack, a ``multi_last`` cut)."""
        self.reach, self.reached_at = max(self.reach, end), time.monotonic()

    def __repr__(self) -> str:
        return f"<Reader {self.stream} ({self.name}.>)>"

    async def pages(
        self, filter_subject: str, after: int, up_to: int | None, *, first: int = READ_PAGE
    ) -> AsyncGenerator[Page, None]:
        """Pages of a Direct Get scan; the next page is requested while the caller works on this one.

        Every page after the first asks for exactly as many messages as the server said were pending
        (``Nats-Num-Pending``), so the server stops at the last match instead of searching the rest of the
        stream for one more (it indexes subjects per block, not per message: that search costs it a scan of
        every later message in the block). ``first=1`` would make that true of the first page too, at the
        price of a second round trip: it pays only for aggregates whose last event is far behind the
        stream's end (``bench/`` measures both), so it is not the default.
        """

        def get(start: int, batch: int) -> Awaitable[Page]:
            return self.wire.direct_get(self.stream, filter_subject, start=start, batch=batch)

        if up_to is not None and up_to <= after:
            return
        page = await get(after + 1, first)
        task: asyncio.Future[Page] | None = None
        try:
            while True:
                more = page.pending > 0 and page.messages and (up_to is None or page.last_seq < up_to)
                if more:
                    task = asyncio.ensure_future(get(page.last_seq + 1, min(page.pending, READ_PAGE)))
                yield page
                if task is None:
                    return
                page, task = await task, None
        finally:
            if task is not None and not task.done():
                task.cancel()

    async def ahead(self, *, after: int, last: int, ahead: int = AHEAD) -> AsyncIterator[list[StoredMsg]]:
        """Messages at positions ``after+1 .. last``, page by page in order, ``ahead`` pages in flight.

        A range with deleted messages returns messages of the next range too; those are dropped here (each
        message is yielded once, in stream order). Events appended after the read started are not included.
        """
        starts = iter(range(after + 1, last + 1, READ_PAGE))

        def fetch(start: int) -> asyncio.Future[Page]:
            batch = min(READ_PAGE, last - start + 1)
            return asyncio.ensure_future(
                self.wire.direct_get(self.stream, f"{self.name}.>", start=start, batch=batch)
            )

        window = deque(fetch(start) for start in itertools.islice(starts, ahead))
        seen = after
        try:
            while window:
                page = await window.popleft()
                following = next(starts, None)
                if following is not None:
                    window.append(fetch(following))
                messages = [m for m in page.messages if m.seq > seen]
                if messages:
                    seen = messages[-1].seq
                    yield messages
        finally:
            for task in window:
                task.cancel()

    def batches(self, *, after: int, filters: Sequence[str]) -> AsyncGenerator[RawBatch, None]:
        """The messages after ``after`` on ``filters`` through a short-lived consumer, raw, a batch at a time."""
        return consumer_batches(self, after=after, filters=filters)

    def events(self, *, after: int, filters: Sequence[str]) -> AsyncGenerator[list[RecordedEvent], None]:
        """:meth:`batches`, decoded into events."""
        return event_batches(self, after=after, filters=filters)

    async def last(self, filter_subject: str) -> StoredMsg | None:
        """The last message on ``filter_subject`` (from the server's per-subject index), None if there is none."""
        msg = await self.wire.request(
            f"$JS.API.DIRECT.GET.{self.stream}", json.dumps({"last_by_subj": filter_subject}).encode()
        )
        headers = dict(msg.headers or {})
        if status_of(msg) == "404":  # a status reply; a stored message's own Status header is not one
            return None
        if "Nats-Sequence" not in headers:
            answer = description_of(msg) or "no answer"
            raise EventStoreError(f"last message on {filter_subject} in {self.stream}: {answer}")
        return StoredMsg(int(headers["Nats-Sequence"]), headers.get("Nats-Subject", ""), headers, msg.data)

    async def last_position(self, *, opened_with: str = "client.event_store") -> int:
        """The stream's last sequence (0: empty); a missing stream is :class:`StreamNotFoundError`."""
        reply = json.loads((await self.wire.request(f"$JS.API.STREAM.INFO.{self.stream}", b"")).data)
        if reply.get("error", {}).get("err_code") == STREAM_NOT_FOUND:
            raise StreamNotFoundError(f"stream {self.stream} does not exist; open it with {opened_with}({self.name!r})")
        if "error" in reply:
            raise EventStoreError(f"stream {self.stream}: {reply['error'].get('description', 'unavailable')}")
        return int(reply["state"]["last_seq"])

async def merge_scans(scans: list[AsyncIterator[RecordedEvent]]) -> AsyncIterator[RecordedEvent]:
    """Merge position-ordered scans into one, dropping events matched by more than one filter."""
    heads: dict[int, RecordedEvent] = {}
    for i, scan in enumerate(scans):
        first = await anext(scan, None)
        if first is not None:
            heads[i] = first
    last = 0
    while heads:
        i = min(heads, key=lambda k: heads[k].position)
        event = heads[i]
        if event.position > last:
            last = event.position
            yield event
        nxt = await anext(scans[i], None)
        if nxt is None:
            del heads[i]
        else:
            heads[i] = nxt


def beyond(event: RecordedEvent, up_to: Position) -> bool:
    """Whether ``event`` is past ``up_to`` (a position, or a time: naive = local time; None: nothing is)."""
    if up_to is None:
        return False
    if isinstance(up_to, datetime):
        return event.timestamp > (up_to if up_to.tzinfo else up_to.astimezone())  # naive = local time
    return event.position > up_to
