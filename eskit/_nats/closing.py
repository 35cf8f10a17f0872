"""Closing a nats-py connection within a bound, whatever the server does.

nats-py's ``drain()`` waits for PONGs (a 10 s flush timeout, a 30 s drain timeout); when the server is stalled
(SIGSTOP, a frozen VM) it raises ``FlushTimeoutError`` after 10 s and leaves the connection open. Its
``close()`` waits for the socket's write buffer to empty, which a stalled server never lets happen.
:func:`close` drains only a server that answers a PING in time, then closes; what cannot close politely is
aborted. It never raises.

>>> await close(nc, timeout=2.0)                                                     # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from typing import Any

from nats.aio.client import Client as NATS


async def close(nc: NATS, *, timeout: float) -> None:
    """Drain ``nc`` if its server answers within ``timeout`` seconds, then close it; at most ~2x ``timeout``."""
    drain: asyncio.Future[None] | None = None
    if nc.is_connected and await _answers(nc, timeout):
        drain = asyncio.ensure_future(nc.drain())
        await asyncio.wait({drain}, timeout=timeout)
    if not nc.is_closed:
        closing = asyncio.ensure_future(nc.close())
        await asyncio.wait({closing}, timeout=timeout / 2)
        if not closing.done():  # the socket's write buffer does not empty: drop it
            _abort(nc)
            await asyncio.wait({closing}, timeout=timeout / 2)
        _forget(closing)
    if drain is not None:
        if not drain.done():  # stalled half-way; the connection is closed now, so it ends at once
            drain.cancel()
            await asyncio.wait({drain}, timeout=timeout / 2)
        _forget(drain)


async def _answers(nc: NATS, timeout: float) -> bool:
    try:
        await nc.flush(max(1, round(timeout)))
    except Exception:  # FlushTimeoutError (stalled), ConnectionClosedError (gone): a drain would hang
        return False
    return True


def _abort(nc: NATS) -> None:
    writer: Any = getattr(nc._transport, "_io_writer", None)  # nats-py's TCP transport
    transport = getattr(writer, "transport", None)
    if transport is not None:
        transport.abort()


def _forget(task: asyncio.Future[Any]) -> None:
    """Nobody needs the outcome of a close-time task: retrieve it (now or when it ends) so none is logged."""
    if task.done():
        if not task.cancelled():
            task.exception()
    else:
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
