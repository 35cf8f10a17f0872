"""Sync callers of the async eskit client: one event loop in a portal thread, one connection.

>>> portal = Portal(url)                                          # doctest: +SKIP
>>> store = portal.call(portal.client.event_store, "orders")      # doctest: +SKIP
>>> portal.close()                                                # doctest: +SKIP

pyeventsourcing is synchronous; eskit is async. ``anyio.from_thread.start_blocking_portal`` runs an event loop
in a thread and every sync method calls its async twin through it: no method body is written twice. Calls
go straight onto the portal's asyncio loop (``run_coroutine_threadsafe``: a quarter of ``BlockingPortal.call``'s
overhead per call, which a recorder pays on every read and write). Several recorders (an application's events
and snapshots) share one portal, as they share one connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from ..connection import Client, connect


class Portal:
    """An eskit :class:`~eskit.connection.Client` (``url``, else ``$NATS_URL``, else an embedded server)."""

    def __init__(self, url: str | None = None) -> None:
        self._cm: AbstractContextManager[BlockingPortal] = start_blocking_portal()
        self._portal = self._cm.__enter__()
        self.closed = False
        try:
            self._loop: asyncio.AbstractEventLoop = self._portal.call(_running_loop)
            self.client: Client = self.call(connect, url)
        except BaseException:
            self._cm.__exit__(None, None, None)
            raise

    def call(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any, **kwargs: Any) -> Any:
        """Run an async eskit call on the portal's event loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(func(*args, **kwargs), self._loop).result()

    def soon(self, func: Callable[[], Any]) -> None:
        """Run a plain function on the portal's event loop, without waiting (e.g. to set an asyncio.Event)."""
        self._loop.call_soon_threadsafe(func)

    def close(self) -> None:
        """Disconnect (stopping an embedded server the client started) and stop the portal thread; once."""
        if self.closed:
            return
        self.closed = True
        try:
            self.call(self.client.close)
        finally:
            self._cm.__exit__(None, None, None)


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()
