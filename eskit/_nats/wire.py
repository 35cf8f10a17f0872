"""Raw JetStream requests that nats-py lacks: batch Direct Get and atomic batch publish.

All replies arrive on one wildcard inbox subscription per connection (``_INBOX.<nuid>.*``), routed by the
last token to the waiting request: no subscription per request, no consumer, one round trip per page.

What the replies say is read in :mod:`.replies`; the HPUB of a pipelined request is written in
:mod:`.publishing`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from ..errors import (
    EskitError,
    EventStoreError,
    PayloadTooLargeError,
    PermissionDeniedError,
    StoreTimeoutError,
    StoreUnavailableError,
    StreamNotFoundError,
)
from . import fastlane as _fastlane
from .codes import NO_MESSAGE, STREAM_NOT_FOUND
from .headers import parse_block
from .jsapi import NATS_ERRORS, translate
from .pipeline import Pipeline
from .publishing import header_block as header_block
from .publishing import header_size as header_size
from .publishing import hpub as hpub
from .publishing import raw_publishing as raw_publishing
from .replies import DESCRIPTION as DESCRIPTION
from .replies import SEQUENCE as SEQUENCE
from .replies import STATUS as STATUS
from .replies import ApiError as ApiError
from .replies import Page as Page
from .replies import Reply as Reply
from .replies import StoredMsg as StoredMsg
from .replies import description_of as description_of
from .replies import parse_ack as parse_ack
from .replies import status_of as status_of

DEFAULT_TIMEOUT = 5.0
MAX_INFLIGHT_BATCHES = 32  # open atomic batches per connection (the server allows 50 per stream)
_VIOLATION = re.compile(r'Permissions Violation for (Publish|Subscription) to "?([^"\s]+)"?', re.IGNORECASE)


class TooManySubjectsError(EventStoreError):
    """A ``multi_last`` Direct Get spans more subjects than the server answers in one reply (1,024)."""


class _NoResponders(Exception):
    """A 503 status reply: nobody listens on the subject (diagnosed into a public error by the Wire)."""


class Wire:
    """Request/reply multiplexed over one inbox subscription.

    >>> wire = Wire(nc)        # doctest: +SKIP
    >>> page = await wire.direct_get("ORDERS", "orders.123.>", start=1, batch=500)  # doctest: +SKIP
    """

    def __init__(self, nc: NATS, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._nc = nc
        self._timeout = timeout
        inbox = getattr(nc, "_inbox_prefix", b"_INBOX")  # connect(inbox_prefix=...), per user (eskit.auth)
        self._prefix = f"{bytes(inbox).decode()}.{uuid.uuid4().hex}"
        self._handlers: dict[str, Callable[[Msg], None]] = {}
        self._waiting: dict[str, tuple[str, asyncio.Future[Any]]] = {}
        self._batch_slots = asyncio.Semaphore(MAX_INFLIGHT_BATCHES)
        self._connected = asyncio.Event()  # cleared while nats-py reconnects
        self._connected.set()
        self._sub: Any = None
        self._lock = asyncio.Lock()
        self._counter = 0
        self._raw = raw_publishing(nc)  # HPUB written here, or nats-py's publish for every request

    def on_disconnected(self) -> None:
        """The connection dropped: requests wait for :meth:`on_reconnected` (see :meth:`_ensure_subscribed`)."""
        self._connected.clear()

    def on_reconnected(self) -> None:
        self._connected.set()

    async def _ensure_subscribed(self) -> None:
        if not self._connected.is_set() and not self._nc.is_closed:
            # nats-py reports "connected" once the handshake is done, before it has subscribed again: a
            # request sent in between would have its reply go nowhere. Wait for the reconnect to finish.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), self._timeout)
        if self._sub is None:
            async with self._lock:
                if self._sub is None:
                    self._sub = await self._nc.subscribe(f"{self._prefix}.*", cb=self._on_msg)
                    _fastlane.route(self._nc, self._sub, self._on_raw)  # replies skip nats-py's Msg path

    def _on_raw(self, subject: bytes, reply: bytes, headers: bytes, data: bytes) -> None:
        name = subject.decode()
        handler = self._handlers.get(name[len(self._prefix) + 1 :])
        if handler is not None:
            fields, status, description = parse_block(headers) if headers else ({}, None, "")
            handler(Reply(name, reply.decode(), data, fields or None, status, description))  # type: ignore[arg-type]

    async def _on_msg(self, msg: Msg) -> None:
        handler = self._handlers.get(msg.subject[len(self._prefix) + 1 :])
        if handler is not None:
            handler(msg)

    def _token(self) -> str:
        self._counter += 1
        return format(self._counter, "x")

    async def _exchange(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str] | None,
        handler: Callable[[Msg, asyncio.Future[Any]], None],
        timeout: float | None,
    ) -> Any:
        await self._ensure_subscribed()
        token = self._token()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def route(msg: Msg) -> None:
            if not fut.done():
                handler(msg, fut)

        self._handlers[token] = route
        self._waiting[token] = (subject, fut)
        try:
            await self._publish(subject, payload, f"{self._prefix}.{token}", headers)
            return await asyncio.wait_for(fut, timeout or self._timeout)
        except TimeoutError:
            raise StoreTimeoutError(
                f"no reply from the server on {subject!r} within {timeout or self._timeout:.1f}s; "
                "is the server overloaded, or is the stream's leader being elected?"
            ) from None
        finally:
            self._handlers.pop(token, None)
            self._waiting.pop(token, None)

    async def request(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None, timeout: float | None = None
    ) -> Msg:
        """One request, one reply message (a status reply raises)."""

        def one(msg: Msg, fut: asyncio.Future[Any]) -> None:
            if status_of(msg) == "503":
                fut.set_exception(_NoResponders())
            else:
                fut.set_result(msg)

        try:
            msg: Msg = await self._exchange(subject, payload, headers, one, timeout)
        except _NoResponders:
            raise await self._no_responders(subject, None) from None
        return msg

    async def request_many(
        self,
        messages: Sequence[tuple[str, bytes, dict[str, str] | None]],
        *,
        window: int = 4096,
        timeout: float | None = None,
    ) -> list[Msg]:
        """Pipelined requests, at most ``window`` in flight; the replies in order (as ``request`` gives them).

        No task, future or timer per request (``request`` costs one of each): a handler per request stores
        its reply, and the sender waits only when the window is full. If no reply at all arrives for
        ``timeout`` seconds, the call fails with :class:`StoreTimeoutError`.
        """
        await self._ensure_subscribed()
        pipe = Pipeline(self._handlers, messages, window, timeout or self._timeout)
        prefix, raw, max_payload = self._prefix, self._raw, self._nc.max_payload
        tokens: list[str] = []
        try:
            for i, (subject, payload, headers) in enumerate(messages):
                if pipe.inflight >= window:
                    await pipe.drain_to(pipe.low_water)
                self._counter += 1
                token = format(self._counter, "x")
                tokens.append(token)
                pipe.expect(i, token)
                self._waiting[token] = (subject, pipe.refused)
                reply = f"{prefix}.{token}"
                command = hpub(subject, reply, headers, payload) if raw and headers else None
                # else nats-py's publish: it checks, cleans, buffers (and _publish the size)
                if command is None or raw is None or len(command) > max_payload or not await raw(command):
                    await self._publish(subject, payload, reply, headers)
            await pipe.drain_to(0)
        finally:
            for token in tokens:
                self._handlers.pop(token, None)
                self._waiting.pop(token, None)
            pipe.close()
        if pipe.failed_subject is not None:
            raise await self._no_responders(pipe.failed_subject, None)
        return pipe.results

    async def _no_responders(self, subject: str, stream: str | None) -> EventStoreError:
        """Why nobody answered: no such stream, or the stream exists but has no leader/responder right now."""
        if stream is None and subject.startswith("$JS.API."):
            return StoreUnavailableError(f"JetStream does not answer on {subject!r}; is it on (nats-server -js)?")
        try:
            if stream is None:
                reply = await self.request("$JS.API.STREAM.NAMES", json.dumps({"subject": subject}).encode(), timeout=1)
                found = json.loads(reply.data).get("streams") or []
                stream = found[0] if found else None
            else:
                reply = await self.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=1)
                if json.loads(reply.data).get("error", {}).get("err_code") == STREAM_NOT_FOUND:
                    stream = None
        except (EskitError, ValueError):
            stream = stream or "?"  # cannot tell now: treat as temporary
        if stream is None:
            return StreamNotFoundError(f"no stream listens on {subject!r}; create the store first")
        return StoreUnavailableError(
            f"no server answers for stream {stream} on {subject!r} now (is its leader being elected?); retry"
        )

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> None:
        """Fire and forget (used for the non-final messages of an atomic batch)."""
        await self._publish(subject, payload, "", headers)

    async def _publish(self, subject: str, payload: bytes, reply: str, headers: Mapping[str, str] | None) -> None:
        """nats-py's publish, with its errors as eskit's: a message over the server's max_payload (headers
        included: the server closes the connection on one) is refused before anything is sent."""
        size = len(payload) + (header_size(headers) if headers else 0)
        if size > self._nc.max_payload:
            raise PayloadTooLargeError(
                f"a message to {subject!r} is {size:,} bytes with headers; the server's max_payload is "
                f"{self._nc.max_payload:,} bytes: store large data elsewhere and keep a reference"
            )
        try:
            await self._nc.publish(subject, payload, reply=reply, headers=dict(headers) if headers else None)
        except NATS_ERRORS as exc:
            raise translate(exc, f"publish to {subject!r}") from exc

    async def direct_get(
        self, stream: str, filter_subject: str, *, start: int, batch: int, timeout: float | None = None
    ) -> Page:
        """Messages on ``filter_subject`` from sequence ``start`` on, at most ``batch`` of them, in one reply."""
        request = {"seq": max(start, 1), "next_by_subj": filter_subject, "batch": batch}
        return await self._direct(stream, request, timeout)

    async def direct_last_per_subject(
        self, stream: str, filters: Sequence[str], *, start: int, up_to: int, timeout: float | None = None
    ) -> Page:
        """The last message of every subject on ``filters`` in [start, up_to], from one replica, in one reply.

        Raises :class:`TooManySubjectsError` if the filters hold more than 1,024 subjects up to ``up_to``.
        """
        request = {"multi_last": list(filters), "seq": max(start, 1), "up_to_seq": up_to}
        return await self._direct(stream, request, timeout)

    async def _direct(self, stream: str, request: dict[str, Any], timeout: float | None) -> Page:
        messages: list[StoredMsg] = []

        def collect(msg: Msg, fut: asyncio.Future[Any]) -> None:
            headers = msg.headers or {}
            seq = headers.get(SEQUENCE)
            if seq is not None:  # a stored message, whatever headers it was published with
                messages.append(StoredMsg(int(seq), headers["Nats-Subject"], headers, msg.data))
                return
            status = status_of(msg)
            if status == "204":  # EOB: end of this batch
                fut.set_result(Page(messages, int(headers.get("Nats-Num-Pending", 0)),
                                    int(headers.get("Nats-Last-Sequence", 0)),
                                    int(headers.get("Nats-UpTo-Sequence", 0))))  # multi_last replies
            elif status == "404":  # nothing (more) matches
                fut.set_result(Page(messages, 0, 0))
            elif status == "503":
                fut.set_exception(_NoResponders())
            elif status == "413":
                fut.set_exception(TooManySubjectsError(f"direct get on {stream}: more than 1,024 subjects"))
            else:
                what = f"{status or 'a reply without a status'} {description_of(msg)}".strip()
                fut.set_exception(EventStoreError(f"direct get on {stream} failed: {what}"))

        subject = f"$JS.API.DIRECT.GET.{stream}"
        try:
            page: Page = await self._exchange(subject, json.dumps(request).encode(), None, collect, timeout)
        except _NoResponders:
            raise await self._no_responders(subject, stream) from None
        return page

    async def leader_last(self, stream: str, filter_subject: str) -> int:
        """The last sequence on ``filter_subject`` as the stream's leader knows it (0: none).

        ``$JS.API.STREAM.MSG.GET`` is answered by the leader only (Direct Get by any replica), so this is
        consistent with the leader's append checks; it is the slower API path, kept for rare cases.
        """
        request = json.dumps({"last_by_subj": filter_subject}).encode()
        reply = json.loads((await self.request(f"$JS.API.STREAM.MSG.GET.{stream}", request)).data)
        error = reply.get("error")
        if error and error.get("err_code") != NO_MESSAGE:
            raise StoreUnavailableError(
                f"the leader of {stream} cannot answer now ({error.get('description')}); retry"
            )
        return int(reply.get("message", {}).get("seq", 0))

    async def publish_batch(
        self, messages: Sequence[tuple[str, bytes, dict[str, str]]], timeout: float | None = None
    ) -> Msg:
        """Atomic batch publish: all messages are stored, or none. Returns the commit's reply.

        At most ``MAX_INFLIGHT_BATCHES`` batches are open at once on a connection: the server refuses more
        than 50 per stream (err_code 10210), so concurrent appends wait here for a slot instead.
        """
        if not messages:
            raise ValueError("publish_batch needs at least one message")
        async with self._batch_slots:
            batch_id = uuid.uuid4().hex
            last = len(messages)
            for n, (subj, payload, headers) in enumerate(messages[:-1], 1):
                await self.publish(subj, payload, {**headers, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(n)})
            subj, payload, headers = messages[-1]
            commit = {**headers, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(last), "Nats-Batch-Commit": "1"}
            return await self.request(subj, payload, commit, timeout)

    def on_server_error(self, exc: Exception) -> None:
        """Fail the requests a server ``-ERR`` is about (a permissions violation), instead of timing out."""
        match = _VIOLATION.search(str(exc))
        if match is None:
            return
        kind, subject = match.group(1).lower(), match.group(2)
        for subj, fut in list(self._waiting.values()):
            if not fut.done() and (kind == "subscription" or subj.lower() == subject.lower()):  # nats-py lowercases
                fut.set_exception(PermissionDeniedError(
                    f"permission denied: this account may not {'publish to' if kind == 'publish' else 'subscribe to'} "
                    f"{subj if kind == 'publish' else subject!r}; connect with an account that has this permission"
                    + ("" if kind == "publish" else " (or with the inbox_prefix its replies may arrive on)")
                ))

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
