"""nats-py's errors as eskit's, in one place: no nats-py exception reaches a caller of eskit.

:func:`translate` turns an exception nats-py raised (a timeout, no responders, a closed connection, a
JetStream API error reply) into the :mod:`eskit.errors` error that says what happened and what to do, in
one line; the caller raises it ``from`` the original, so ``__cause__`` keeps nats-py's details.
:func:`api_error` does the same for a JetStream API error reply read by :class:`~eskit._nats.wire.Wire`
(``{"error": {"code": 404, "err_code": 10059, ...}}``).

>>> try:
...     await client.js.stream_info("nope")                                          # doctest: +SKIP
... except Exception as exc:
...     raise translate(exc, "stream info of 'nope'") from exc                       # doctest: +SKIP
eskit.errors.StreamNotFoundError: stream info of 'nope': the stream does not exist; create the store first
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import nats.errors
import nats.js.errors

from ..errors import (
    ConnectError,
    EskitError,
    EventStoreError,
    PayloadTooLargeError,
    PermissionDeniedError,
    StoreTimeoutError,
    StoreUnavailableError,
    StreamNotFoundError,
    ValidationError,
)
from .codes import STREAM_NOT_FOUND

T = TypeVar("T")
NATS_ERRORS = (nats.errors.Error, asyncio.TimeoutError)  # what a nats-py call may raise besides OSError


def translate(exc: BaseException, doing: str) -> EskitError:
    """The eskit error for ``exc``, raised by nats-py while ``doing`` (``"stream info of 'orders'"``).

    >>> print(translate(nats.errors.NoRespondersError(), "stream info of 'orders'"))
    stream info of 'orders': no server answers (is JetStream on, is its leader being elected?); retry
    """
    if isinstance(exc, EskitError):
        return exc
    if isinstance(exc, nats.js.errors.APIError):
        return api_error(doing, exc.code or 0, exc.err_code or 0, exc.description or "")
    if isinstance(exc, nats.errors.NoRespondersError | nats.js.errors.ServiceUnavailableError):
        return StoreUnavailableError(
            f"{doing}: no server answers (is JetStream on, is its leader being elected?); retry"
        )
    if isinstance(exc, asyncio.TimeoutError):  # nats.errors.TimeoutError is one
        return StoreTimeoutError(f"{doing}: no reply from the server in time; is it overloaded, or electing a leader?")
    if isinstance(exc, nats.errors.MaxPayloadError):
        return PayloadTooLargeError(f"{doing}: the message is over the server's max_payload; keep large data elsewhere")
    if isinstance(exc, nats.errors.BadSubjectError | nats.errors.BadHeaderError):
        what = type(exc).__name__.removesuffix("Error").lower()
        return ValidationError(f"{doing}: {what} refused by nats-py ({exc})")
    if isinstance(exc, nats.errors.AuthorizationError):
        return PermissionDeniedError(f"{doing}: permission denied; connect with an account that has this permission")
    if isinstance(exc, nats.errors.ConnectionClosedError | nats.errors.ConnectionDrainingError):
        return ConnectError(f"{doing}: the connection is closed; connect again (eskit.connect())")
    if isinstance(exc, nats.errors.Error | OSError):
        return StoreUnavailableError(f"{doing}: {type(exc).__name__}: {exc or 'no details'}; retry")
    return EventStoreError(f"{doing}: {type(exc).__name__}: {exc}")


def api_error(doing: str, code: int, err_code: int, description: str) -> EventStoreError:
    """The eskit error for a JetStream API error reply (HTTP-like ``code``, JetStream ``err_code``).

    >>> print(api_error("stream info of 'x'", 404, 10059, "stream not found"))
    stream info of 'x': stream not found; create the store first
    """
    what = description or f"error {code}/{err_code}"
    if err_code == STREAM_NOT_FOUND:
        return StreamNotFoundError(f"{doing}: {what}; create the store first")
    if code == 503:
        return StoreUnavailableError(f"{doing}: {what}; retry")
    return EventStoreError(f"{doing}: {what} (err_code {err_code})")


async def guarded(doing: str, call: Awaitable[T]) -> T:
    """Await a nats-py call; what it raises comes out as the eskit error for it (:func:`translate`).

    >>> info = await guarded(f"consumer info of {name!r}", client.js.consumer_info(stream, name))  # doctest: +SKIP
    """
    try:
        return await call
    except NATS_ERRORS as exc:
        raise translate(exc, doing) from exc
