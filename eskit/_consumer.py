"""A durable pull consumer, seen as batches: create it at a position, fetch a batch, ack, delete.

Fetches are raw ``CONSUMER.MSG.NEXT`` requests with ``no_wait`` + ``expires``, answered on an inbox of the
consumer's own (deliveries keep their stream subject, so they cannot share the client's request inbox). The
server answers at once with what it has (then ``404 No Messages``), or, when nothing is pending, as soon as
the next event is stored, or with ``408`` when ``expires`` runs out. So a caught-up projection never waits
for a timer, and an idle one costs one request per ``wait``.

>>> consumer = PullConsumer(client, "ORDERS", "projection-v", ["orders.*.created"])  # doctest: +SKIP
>>> await consumer.create(after=0)                                                  # doctest: +SKIP
>>> batch = await consumer.fetch(1000, wait=0.5)                                    # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from .errors import ProjectionError
from .events import RecordedEvent, decode

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from .connection import Client

_END = frozenset({"404", "408"})  # no (more) messages / request expired


@dataclass(slots=True)
class _Request:
    """One outstanding pull request: the messages it got so far, set done by its last one."""

    batch: int
    done: asyncio.Future[None]
    msgs: list[Msg] = field(default_factory=list)


@dataclass(slots=True)
class Batch:
    """Events fetched in one request, the ack subjects to settle them, and what is still undelivered."""

    events: list[RecordedEvent]
    replies: list[str]
    pending: int | None  # events not yet delivered after this batch (None: the server did not say)
    redelivered: int  # how many of these events the server had delivered before


class PullConsumer:
    """One durable pull consumer with explicit acks (see the module docstring)."""

    def __init__(
        self, client: Client, stream: str, durable: str, filters: list[str], *,
        max_ack_pending: int = 2000, ack_wait: float = 30.0,
    ) -> None:  # fmt: skip
        self.client = client
        self.stream = stream
        self.durable = durable
        self.filters = filters
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
        self._sub = await self.client.nc.subscribe(self._inbox, cb=self._on_msg)
        start = {"deliver_policy": DeliverPolicy.ALL} if after == 0 else {
            "deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": after + 1}  # fmt: skip
        config = ConsumerConfig(
            durable_name=self.durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=self.ack_wait,
            max_ack_pending=self.max_ack_pending, max_waiting=16,
            filter_subject=self.filters[0] if len(self.filters) == 1 else None,
            filter_subjects=self.filters if len(self.filters) > 1 else None, **start,
        )  # fmt: skip
        try:
            await self.client.js.add_consumer(self.stream, config=config)
        except nats.js.errors.APIError as exc:
            raise ProjectionError(
                f"cannot create consumer {self.durable} on {self.stream}: {exc.description}"
            ) from None

    async def delete(self) -> bool:
        """Delete the consumer; False if there was none."""
        try:
            return bool(await self.client.js.delete_consumer(self.stream, self.durable))
        except nats.js.errors.NotFoundError:
            return False

    async def info(self) -> tuple[int, int]:
        """(events not yet delivered, events delivered but not acknowledged)."""
        info = await self.client.js.consumer_info(self.stream, self.durable)
        return int(info.num_pending or 0), int(info.num_ack_pending or 0)

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
        await self.client.nc.publish(self._next, json.dumps(body).encode(), reply=self._inbox)
        return self._settle(request, wait + 5.0)

    async def _settle(self, request: _Request, timeout: float) -> Batch:
        try:
            await asyncio.wait_for(asyncio.shield(request.done), timeout)
        except TimeoutError:
            raise ProjectionError(
                f"consumer {self.durable} on {self.stream}: no answer in {timeout:.0f}s; is the server up?"
            ) from None
        return self._decode(request.msgs)

    async def _on_msg(self, msg: Msg) -> None:
        if not self._requests:
            return  # nobody asked (a request given up on): it is redelivered after ack_wait
        request = self._requests[0]
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            request.msgs.append(msg)
            if len(request.msgs) < request.batch:
                return
        elif status == "100":  # idle heartbeat
            return
        elif status not in _END:
            description = msg.headers.get("Description", "") if msg.headers else ""
            request.done.set_exception(
                ProjectionError(
                    f"consumer {self.durable} on {self.stream}: {status} {description}; recreate it"
                )
            )
            self._requests.popleft()
            return
        request.done.set_result(None)
        self._requests.popleft()

    async def close(self) -> None:
        """Stop listening (the consumer stays on the server; :meth:`delete` removes it)."""
        for request in self._requests:
            if not request.done.done():
                request.done.cancel()
        self._requests.clear()
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    def _decode(self, msgs: list[Msg]) -> Batch:
        events, replies, pending, redelivered = [], [], None, 0
        for msg in msgs:
            meta = _ack_tokens(msg.reply)
            delivered, seq, ts, pending = int(meta[0]), int(meta[1]), int(meta[3]), int(meta[4])
            redelivered += delivered > 1
            event = decode(seq, msg.subject, msg.headers or {}, msg.data)
            # the store time is in the ack subject, not in the headers: set it on the new (frozen) event
            object.__setattr__(event, "timestamp", datetime.fromtimestamp(ts / 1e9, UTC))
            events.append(event)
            replies.append(msg.reply)
        return Batch(events, replies, pending, redelivered)

    async def ack(self, batch: Batch) -> None:
        """Acknowledge every event of ``batch`` (call it after the read model committed them)."""
        publish = self.client.nc.publish
        for reply in batch.replies:
            await publish(reply, b"")

    async def flush(self) -> None:
        """Wait until the server has received everything sent so far (e.g. the acks)."""
        await self.client.nc.flush()


def _ack_tokens(reply: str) -> list[str]:
    """delivered, stream seq, consumer seq, timestamp (ns), pending from a ``$JS.ACK...`` subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`` (v1, 9 tokens), or v2 with
    ``<domain>.<account hash>`` after ``ACK`` and a random token at the end (12 tokens).
    """
    tokens = reply.split(".")
    if len(tokens) == 9:
        return tokens[4:9]
    return tokens[6:11]
