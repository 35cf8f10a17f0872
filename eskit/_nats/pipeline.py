"""The replies of pipelined requests (:meth:`eskit._nats.wire.Wire.request_many`), kept in order as they
arrive, and the sender's wait for its window to empty.

>>> pipe = Pipeline(wire._handlers, messages, window=4096, limit=5.0)      # doctest: +SKIP
>>> pipe.expect(0, "1f"); await pipe.drain_to(0); pipe.results           # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from asyncio import FIRST_COMPLETED
from collections.abc import Callable, Sequence
from typing import Any

from nats.aio.msg import Msg

from ..errors import StoreTimeoutError
from .replies import status_of


class Pipeline:
    """The replies of one :meth:`Wire.request_many`: stored in order as they arrive, and the sender's wait
    for the window to empty (``drain_to``), bounded by ``limit`` seconds without any reply."""

    def __init__(
        self, handlers: dict[str, Callable[[Msg], None]], messages: Sequence[tuple[str, bytes, Any]],
        window: int, limit: float,
    ) -> None:  # fmt: skip
        self.handlers, self.messages, self.limit = handlers, messages, limit
        self.results: list[Any] = [None] * len(messages)
        self.low_water = max(1, window // 2)
        self.inflight = self.received = 0
        self.waiter: asyncio.Future[None] | None = None
        self.refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # by on_server_error
        self.failed_subject: str | None = None

    def expect(self, i: int, token: str) -> None:
        """Request ``i`` is about to go out with reply token ``token``."""
        self.handlers[token] = lambda msg: self.arrived(i, token, msg)
        self.inflight += 1

    def arrived(self, i: int, token: str, msg: Msg) -> None:
        if self.handlers.pop(token, None) is None:
            return
        if self.failed_subject is None and status_of(msg) == "503":
            self.failed_subject = self.messages[i][0]
        self.results[i] = msg
        self.inflight -= 1
        self.received += 1
        if self.waiter is not None and not self.waiter.done() and self.inflight <= self.low_water:
            self.waiter.set_result(None)

    async def drain_to(self, level: int) -> None:
        while self.inflight > level:
            seen = self.received
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                either = asyncio.wait({self.waiter, self.refused}, return_when=FIRST_COMPLETED)
                await asyncio.wait_for(either, self.limit)
                if self.refused.done():
                    self.refused.result()  # a permissions violation: raise it now, not a timeout later
            except TimeoutError:
                if self.received == seen:
                    raise StoreTimeoutError(
                        f"no reply from the server within {self.limit:.1f}s for {self.inflight} of "
                        f"{len(self.messages)} pipelined requests; is the server overloaded, or is the stream's "
                        "leader being elected?"
                    ) from None
            finally:
                self.waiter = None

    def close(self) -> None:
        if self.refused.done() and not self.refused.cancelled():
            self.refused.exception()  # retrieved: no "exception was never retrieved" warning
