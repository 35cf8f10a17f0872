"""Following a DCB store: matching events after a position, then new ones as they are stored.

>>> query = Query([QueryItem(tags=["course:c1"])])
>>> async with await courses.subscribe(query, after=0) as events:              # doctest: +SKIP
...     async for event in events: ...

An ordered push consumer (ephemeral, no acks, in memory) on the narrowest single filter that holds the
query; events are re-checked against the query before they are handed out. It is eskit's own, on a plain
subscription, not nats-py's ``ordered_consumer``: nats-py takes any message with a ``Status: 100`` header
and no payload for an idle heartbeat, so an event stored with those headers would be dropped and the
consumer recreated at it again and again. Here a stored message is one with its ``$JS.ACK`` reply subject;
a server's heartbeat has none. A gap in the consumer's sequence (or one a heartbeat reports), or two
heartbeat intervals without a word from the server, recreates the consumer after the last event received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

import nats
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from .._nats import connection_of
from .._nats.jsapi import guarded
from ..errors import EventStoreError
from .query import Query, SequencedEvent, decode, upcast

if TYPE_CHECKING:
    from .._nats.wire import Wire
    from ..upcasting import Upcasters

HEARTBEAT = 5.0
LAST_CONSUMER = "Nats-Last-Consumer"  # on a heartbeat: the consumer sequence of the last message sent


class Subscription:
    """An async iterator of matching events; ``close()`` (or leaving ``async with``) ends it."""

    def __init__(self, js: JetStreamContext, stream: str, subject: str, query: Query, skip: str = "") -> None:
        self._js = js
        self._stream = stream
        self._subject = subject
        self._query = query
        self._skip = skip
        self._queue: asyncio.Queue[SequencedEvent | None] = asyncio.Queue()
        self._sub: Any = None
        self._live: Any = None  # the subscription whose messages count (None: while reopening)
        self._consumer: str | None = None
        self._opening = asyncio.Lock()
        self._next = 1  # the stream position to go on from
        self._delivered = 0  # consumer sequence of the last message taken from the current consumer
        self._active = True  # the server said something since the last look
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.upcasters: Upcasters | None = None  # applied as events are taken (an upcaster's error is yours)
        self.wire: Wire | None = None  # creates the consumer: a refusal is a PermissionDeniedError at once

    @classmethod
    async def start(
        cls, js: JetStreamContext, stream: str, subject: str, query: Query, after: int, *, skip: str = "",
        wire: Wire | None = None,
    ) -> Subscription:  # fmt: skip
        """Follow ``subject`` in ``stream`` from position ``after + 1``, ignoring messages on ``skip``."""
        subscription = cls(js, stream, subject, query, skip)
        subscription.wire = wire
        subscription._next = after + 1
        await subscription._open()
        subscription._spawn(subscription._watch())
        return subscription

    async def _open(self) -> None:
        """A new consumer from ``_next`` on, delivering to a new inbox; the previous one is dropped."""
        async with self._opening:
            if not self._closed:
                await self._replace()

    async def _replace(self) -> None:
        nc = connection_of(self._js)
        self._live = None
        old_sub, old_consumer, self._sub, self._consumer = self._sub, self._consumer, None, None
        await self._drop(old_sub, old_consumer)
        inbox = nc.new_inbox()
        self._delivered, self._active = 0, True

        async def on_msg(msg: Msg) -> None:
            if self._live is sub:  # else a message of a consumer being replaced
                self._on_msg(msg)

        sub = self._sub = self._live = await nc.subscribe(inbox, cb=on_msg)
        config = ConsumerConfig(
            deliver_subject=inbox, deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self._next,
            filter_subject=self._subject, ack_policy=AckPolicy.NONE, max_deliver=1, idle_heartbeat=HEARTBEAT,
            mem_storage=True, num_replicas=1,
        )  # fmt: skip
        if self.wire is None:
            added = await guarded(f"consumer on {self._stream}", self._js.add_consumer(self._stream, config=config))
            self._consumer = added.name
            return
        body = json.dumps({"stream_name": self._stream, "config": config.as_dict()}).encode()
        try:  # an account that may not create consumers (an analyst): PermissionDeniedError at once, not 5 s
            reply = json.loads((await self.wire.request(f"$JS.API.CONSUMER.CREATE.{self._stream}", body)).data)
        except BaseException:
            self._sub = self._live = None
            await self._drop(sub, None)
            raise
        if "error" in reply:
            self._sub = self._live = None
            await self._drop(sub, None)
            raise EventStoreError(f"cannot follow {self._stream}: {reply['error'].get('description')}")
        self._consumer = str(reply["name"])

    async def _drop(self, sub: Any, consumer: str | None) -> None:
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        if consumer is not None:  # else the server removes it soon: nobody listens on its inbox
            with contextlib.suppress(nats.errors.Error):
                await self._js.delete_consumer(self._stream, consumer)

    def _on_msg(self, msg: Msg) -> None:
        self._active = True
        if not msg.reply:  # a heartbeat (stored messages come with their $JS.ACK reply subject)
            last = (msg.headers or {}).get(LAST_CONSUMER, "")
            if last.isdigit() and int(last) > self._delivered:
                self._reopen()  # it sent messages we never got
            return
        sequence = msg.metadata.sequence
        if sequence.consumer != self._delivered + 1:
            self._reopen()  # a gap: go on from the last event received
            return
        self._delivered, self._next = sequence.consumer, sequence.stream + 1
        if msg.subject == self._skip or msg.subject.startswith(self._skip + "."):  # a carrier or a ticket
            return
        event = decode(sequence.stream, msg.subject, msg.headers or {}, msg.data)
        if self._query.matches(event.type, event.tags):
            self._queue.put_nowait(event)

    def _reopen(self) -> None:
        self._live = None  # ignore the rest of this consumer's messages
        self._spawn(self._open())  # not awaited here: nats-py runs this callback in the task unsubscribe stops

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # the server unreachable: _watch tries again
            self._active = False

    async def _watch(self) -> None:
        """Two heartbeat intervals without a word from the server (it restarted, the consumer is gone): reopen."""
        while not self._closed and not connection_of(self._js).is_closed:
            await asyncio.sleep(2 * HEARTBEAT)
            if not self._active and not self._closed:
                with contextlib.suppress(nats.errors.Error):
                    await self._open()
            self._active = False

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> SequencedEvent:
        event = await self._queue.get()
        if event is None:
            self._queue.put_nowait(None)
            raise StopAsyncIteration
        return event if self.upcasters is None else upcast(self.upcasters, f"{self._stream} stream", event)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        self._queue.put_nowait(None)
        sub, self._sub, self._live = self._sub, None, None
        await self._drop(sub, self._consumer)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
