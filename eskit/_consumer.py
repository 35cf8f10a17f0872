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
from collections.abc import Callable
from dataclasses import dataclass
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
        self._inbox = client.nc.new_inbox()
        self._sub: Any = None
        self._collect: Callable[[Msg], None] | None = None

    async def create(self, *, after: int) -> None:
        """(Re)create the consumer so that it delivers the events after position ``after``, in order.

        The read model, not the consumer, is the source of truth for the position: a consumer left with
        unacknowledged messages by a crash would deliver newer events before redelivering those.
        """
        await self.delete()
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
        request: dict[str, Any] = {"batch": batch, "no_wait": True}
        if wait > 0:
            request["expires"] = int(wait * 1e9)
        msgs: list[Msg] = []
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def collect(msg: Msg) -> None:
            if fut.done():
                return
            status = msg.headers.get("Status") if msg.headers else None
            if status is None:
                msgs.append(msg)
                if len(msgs) >= batch:
                    fut.set_result(None)
            elif status in _END:
                fut.set_result(None)
            elif status != "100":  # 100 = idle heartbeat
                description = msg.headers.get("Description", "") if msg.headers else ""
                fut.set_exception(
                    ProjectionError(
                        f"consumer {self.durable} on {self.stream}: {status} {description}; it is recreated"
                    )
                )

        if self._sub is None:
            self._sub = await self.client.nc.subscribe(self._inbox, cb=self._on_msg)
        self._collect = collect
        try:
            await self.client.nc.publish(self._next, json.dumps(request).encode(), reply=self._inbox)
            await asyncio.wait_for(fut, wait + 5.0)
        except TimeoutError:
            raise ProjectionError(
                f"consumer {self.durable} on {self.stream}: no answer in {wait + 5:.0f}s; is the server up?"
            ) from None
        finally:
            self._collect = None
        return self._decode(msgs)

    async def _on_msg(self, msg: Msg) -> None:
        if self._collect is not None:
            self._collect(msg)

    async def close(self) -> None:
        """Stop listening (the consumer stays on the server; :meth:`delete` removes it)."""
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
