"""Bulk reads: many events at once through a short-lived pull consumer, delivered on a fast lane.

For a whole stream (or everything on a few subject filters) a consumer beats batch Direct Get: the server
walks the stream once instead of searching for the next match per page, its messages carry only the
headers they were published with (the position and the store time come in the reply subject,
``$JS.ACK.<stream>.<consumer>.<delivered>.<seq>.<n>.<nanos>.<pending>``), and on a fast lane
(:mod:`eskit._nats.fastlane`) they arrive as raw bytes, collected into :class:`RawBatch` lists without a Python
object per message. Several pulls are in flight, so the server sends the next batch while the caller
decodes this one.

The consumer is ephemeral (memory storage, one replica, no acks, deleted at the end, and by the server
after 10 minutes without a pull, if this process dies or its reader stalls). It reads what matched when it
was created: events appended later are not included. A server or account that refuses to create it gives
:class:`ConsumerRefused`; callers then read with Direct Get. If the read ends early (events deleted
meanwhile) or fails half-way, callers read on with Direct Get from the last position they got. So they do
if the consumer passed over a stored event: any writer may update any consumer (:mod:`eskit.auth`), and a
consumer refiltered mid-read would otherwise drop events from the read without a word.

>>> async for batch in consumer_batches(store.reader, after=0, filters=["orders.>"]):   # doctest: +SKIP
...     print(len(batch.payloads))
>>> async for events in event_batches(store.reader, after=0, filters=["orders.>"]): ...  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import nats

from ._nats import fastlane as _fastlane
from ._nats.codes import STREAM_NOT_FOUND
from ._rawdecode import ack_tokens, recorded_events
from .errors import EskitError, EventStoreError, PermissionDeniedError, StoreTimeoutError, StreamNotFoundError
from .events import RecordedEvent

if TYPE_CHECKING:
    from ._reader import Reader

BATCH = 2000
AHEAD = 4
IDLE_CLEANUP_NS = 600_000_000_000  # the server deletes the consumer after 10 min without pulls
_END = (b"404", b"408")  # nothing more right now (events deleted since the consumer was made): callers read
# on from the last position with Direct Get


class ConsumerRefused(Exception):
    """The server or the account would not create the read's consumer; read with Direct Get instead."""


@dataclass(slots=True)
class RawBatch:
    """Messages as they came off the wire: subject, reply subject, header block and payload of each."""

    subjects: list[bytes] = field(default_factory=list)
    replies: list[bytes] = field(default_factory=list)
    headers: list[bytes] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.payloads)


async def consumer_batches(
    source: Reader,
    *,
    after: int,
    filters: Sequence[str],
    batch: int = 0,
    ahead: int = 0,
    timeout: float = 5.0,
) -> AsyncGenerator[RawBatch, None]:
    """The messages after position ``after`` on ``filters``, in stream order, ``batch`` at a time
    (default ``BATCH``) with ``ahead`` pulls in flight (default ``AHEAD``); ``timeout``: the longest wait
    for the next message before :class:`~eskit.errors.StoreTimeoutError`.
    """
    batch, ahead = batch or BATCH, ahead or AHEAD
    nc = source.nc
    if not _fastlane.available(nc):
        raise ConsumerRefused("this nats-py has no fast lane")
    name = f"eskit_read_{uuid.uuid4().hex[:12]}"
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    reader = _Reader(batch)
    _fastlane.route(nc, sub, reader.on_message)
    created = False
    try:
        total = await _create(source, name, after, filters)
        created = True
        pull = f"$JS.API.CONSUMER.MSG.NEXT.{source.stream}.{name}"
        pulled = 0

        async def request_more() -> None:
            nonlocal pulled
            size = min(batch, total - pulled)
            if size > 0:
                pulled += size
                await nc.publish(pull, json.dumps({"batch": size, "no_wait": True}).encode(), reply=inbox)

        reader.total = total
        for _ in range(ahead):
            await request_more()
        expected = after + 1  # the next position the consumer must deliver, unless nothing is stored there
        while True:
            ready = await reader.next_batch(timeout, source.stream)
            if ready is None:
                return
            await request_more()
            ready, passed_over = await _unskipped(source, filters, ready, expected)
            if ready.payloads:
                yield ready
            if passed_over:  # the callers read on with Direct Get from the last position they got
                raise EventStoreError(f"bulk read of {source.stream}: {passed_over}; read again")
            expected = ack_tokens(ready.replies[-1:]).positions[0] + 1
    finally:
        _fastlane.unroute(nc, sub)
        with contextlib.suppress(nats.errors.Error):  # a closed connection: nothing to unsubscribe from
            await sub.unsubscribe()
        if created and nc.is_connected:
            with contextlib.suppress(EskitError):  # else the server deletes it after 10 min unused
                await source.wire.request(f"$JS.API.CONSUMER.DELETE.{source.stream}.{name}", b"", timeout=2)


async def event_batches(
    source: Reader, *, after: int, filters: Sequence[str]
) -> AsyncGenerator[list[RecordedEvent], None]:
    """:func:`consumer_batches`, decoded: the events after ``after`` on ``filters``, a batch at a time."""
    async with contextlib.aclosing(consumer_batches(source, after=after, filters=filters)) as batches:
        async for batch in batches:  # closed with this generator: the consumer goes at once
            yield recorded_events(batch.subjects, ack_tokens(batch.replies), batch.headers, batch.payloads)


class _Reader:
    """Collects a consumer's messages into batches (called in the read loop, never awaits)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.room = size  # messages until the current batch is full
        self.total = -1  # messages to expect: unknown until the consumer exists
        self.received = 0
        self.current = RawBatch()
        self.ready: deque[RawBatch] = deque()
        self.ended = False
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None

    def on_message(self, subject: bytes, reply: bytes, headers: bytes, data: bytes) -> None:
        if not reply:  # a status (stored messages come with their $JS.ACK reply subject)
            self._on_status(headers)
            return
        current = self.current
        current.subjects.append(subject)
        current.replies.append(reply)
        current.headers.append(headers)
        current.payloads.append(data)
        self.received += 1
        self.room -= 1
        if not self.room or self.received == self.total:
            self.ready.append(current)
            self.current, self.room = RawBatch(), self.size
            self._wake()

    def _on_status(self, headers: bytes) -> None:
        code = headers[9:12]  # NATS/1.0 <code> <description>
        if code in _END:
            self.ended = True
        elif code == b"503":  # no responders: the consumer is gone (deleted, or idle for too long)
            self.error = EventStoreError("bulk read: its consumer is gone (removed, or idle 10 min); read again")
        elif code != b"100":  # 100: a heartbeat or flow control, not asked for
            line = headers[9 : headers.find(b"\r\n")].decode("utf-8", "replace")
            self.error = EventStoreError(f"bulk read interrupted by the server: {line}; read again")
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def next_batch(self, timeout: float, stream: str) -> RawBatch | None:
        """The next full batch; None at the end. Waits at most ``timeout`` for anything to arrive."""
        while True:
            if self.ready:
                return self.ready.popleft()
            if self.error is not None:
                raise self.error
            if self.received >= self.total or self.ended:
                if self.current.payloads:
                    last, self.current = self.current, RawBatch()
                    return last
                return None
            self.waiter = asyncio.get_running_loop().create_future()
            seen = self.received
            try:
                await asyncio.wait_for(self.waiter, timeout)
            except TimeoutError:
                if self.received == seen:
                    raise StoreTimeoutError(
                        f"bulk read of {stream}: nothing arrived for {timeout:.1f}s; is the server overloaded?"
                    ) from None
            finally:
                self.waiter = None


async def _unskipped(
    source: Reader, filters: Sequence[str], batch: RawBatch, expected: int
) -> tuple[RawBatch, str]:
    """``(batch, "")`` if ``batch`` passes over no stored message on the read's filter (from position
    ``expected`` on); else the messages before the first one it passes over, and what happened.

    A consumer delivers every message on its filter: a gap in the positions is a message on another subject or
    one deleted (both need a look only with one filter: a whole-store read has no other subjects, and an
    immutable store no deleted ones), or the consumer was refiltered by someone else (another writer may
    update any consumer) and would miss events silently. One Direct Get per gap tells them apart.
    """
    first, last = ack_tokens([batch.replies[0], batch.replies[-1]]).positions
    if (first == expected and last - first + 1 == len(batch)) or len(filters) != 1:
        return batch, ""  # contiguous: the hot path costs two splits per batch
    previous = expected - 1
    for i, position in enumerate(ack_tokens(batch.replies).positions):
        if position != previous + 1:
            reply = await source.wire.request(
                f"$JS.API.DIRECT.GET.{source.stream}",
                json.dumps({"seq": previous + 1, "next_by_subj": filters[0]}).encode(),
            )
            held = (reply.headers or {}).get("Nats-Sequence", "")
            if held.isdigit() and int(held) < position:
                kept = RawBatch(batch.subjects[:i], batch.replies[:i], batch.headers[:i], batch.payloads[:i])
                return kept, f"its consumer passed over position {held}, which the store holds (someone changed it)"
        previous = position
    return batch, ""


async def _create(source: Reader, name: str, after: int, filters: Sequence[str]) -> int:
    """Create the read's consumer; how many messages it will deliver."""
    config: dict[str, object] = {
        "name": name,
        "deliver_policy": "by_start_sequence",
        "opt_start_seq": after + 1,
        "ack_policy": "none",
        "replay_policy": "instant",
        "mem_storage": True,
        "num_replicas": 1,
        "inactive_threshold": IDLE_CLEANUP_NS,
    }
    if len(filters) == 1:
        config["filter_subject"] = filters[0]
    else:
        config["filter_subjects"] = list(filters)
    body = json.dumps({"stream_name": source.stream, "config": config, "action": "create"}).encode()
    try:
        reply = await source.wire.request(f"$JS.API.CONSUMER.CREATE.{source.stream}.{name}", body)
    except PermissionDeniedError as exc:
        raise ConsumerRefused(str(exc)) from None
    answer = json.loads(reply.data)
    error = answer.get("error")
    if error:
        if error.get("err_code") == STREAM_NOT_FOUND:
            raise StreamNotFoundError(f"store {source.name} has no stream {source.stream}; create the store first")
        raise ConsumerRefused(str(error.get("description", error)))
    return int(answer.get("num_pending", 0))
