"""Following a DCB store: matching events after a position, then new ones as they are stored.

>>> query = Query([QueryItem(tags=["course:c1"])])
>>> async with await courses.subscribe(query, after=0) as events:              # doctest: +SKIP
...     async for event in events: ...

An ordered push consumer (no state on the server, recreated by nats-py after a gap) on the narrowest single
filter that holds the query; events are re-checked against the query before they are handed out.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from .dcb_query import Query, SequencedEvent, decode

HEARTBEAT = 5.0


class Subscription:
    """An async iterator of matching events; ``close()`` (or leaving ``async with``) ends it."""

    def __init__(self, query: Query, skip: str = "") -> None:
        self._query = query
        self._skip = skip
        self._queue: asyncio.Queue[SequencedEvent | None] = asyncio.Queue()
        self._sub: Any = None

    @classmethod
    async def start(
        cls, js: JetStreamContext, stream: str, subject: str, query: Query, after: int, *, skip: str = ""
    ) -> Subscription:
        """Follow ``subject`` in ``stream`` from position ``after + 1``, ignoring messages on ``skip``."""
        subscription = cls(query, skip)
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1)
        subscription._sub = await js.subscribe(
            subject, stream=stream, ordered_consumer=True, config=config, idle_heartbeat=HEARTBEAT,
            cb=subscription._on_msg,
        )  # fmt: skip
        return subscription

    async def _on_msg(self, msg: Msg) -> None:
        if msg.subject == self._skip:  # a check carrier, not an event
            return
        event = decode(msg.metadata.sequence.stream, msg.subject, msg.headers or {}, msg.data)
        if self._query.matches(event.type, event.tags):
            self._queue.put_nowait(event)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> SequencedEvent:
        event = await self._queue.get()
        if event is None:
            self._queue.put_nowait(None)
            raise StopAsyncIteration
        return event

    async def close(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            self._queue.put_nowait(None)
            await sub.unsubscribe()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
