"""Raw JetStream requests that nats-py lacks: batch Direct Get and atomic batch publish.

All replies arrive on one wildcard inbox subscription per connection (``_INBOX.<nuid>.*``), routed by the
last token to the waiting request: no subscription per request, no consumer, one round trip per page.

A server's status reply (``NATS/1.0 404 No Messages``, ``204 EOB``, ``503``) is told from a message by
:func:`status_of`: by its status line, and never for a stored message (Direct Get adds ``Nats-Sequence`` to
those), so a ``Status`` header that someone published into a stream is just a header.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from asyncio import FIRST_COMPLETED
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from ..errors import (
    EskitError,
    EventStoreError,
    PermissionDeniedError,
    StoreTimeoutError,
    StoreUnavailableError,
    StreamNotFoundError,
)
from . import fastlane as _fastlane
from .codes import NO_MESSAGE, STREAM_NOT_FOUND
from .headers import parse_block

STATUS = "Status"
DESCRIPTION = "Description"
SEQUENCE = "Nats-Sequence"  # on every message Direct Get returns, never on a status reply
DEFAULT_TIMEOUT = 5.0
MAX_INFLIGHT_BATCHES = 32  # open atomic batches per connection (the server allows 50 per stream)
_VIOLATION = re.compile(r'Permissions Violation for (Publish|Subscription) to "?([^"\s]+)"?', re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class StoredMsg:
    """One message from a Direct Get reply."""

    seq: int
    subject: str
    headers: Mapping[str, str]
    data: bytes


@dataclass(frozen=True, slots=True)
class Page:
    """One batch Direct Get reply: the messages, and how many more match after them (``up_to``: a
    ``multi_last`` reply's cut, the position it answered as of; 0 otherwise)."""

    messages: list[StoredMsg]
    pending: int
    last_seq: int
    up_to: int = 0


@dataclass(frozen=True, slots=True)
class ApiError:
    """A JetStream API error reply (``{"error": {...}}``)."""

    code: int
    err_code: int
    description: str


class Reply:
    """What the Wire's handlers read of a fast-lane message: subject, reply, data, headers (as ``Msg``), and
    apart from the headers the status line's code (None: no status line) and description."""

    __slots__ = ("data", "description", "headers", "reply", "status", "subject")

    def __init__(
        self, subject: str, reply: str, data: bytes, headers: Mapping[str, str] | None,
        status: str | None = None, description: str = "",
    ) -> None:  # fmt: skip
        self.subject = subject
        self.reply = reply
        self.data = data
        self.headers = headers
        self.status = status
        self.description = description


def status_of(msg: Msg | Reply) -> str | None:
    """The status code of a server's status reply (``"404"``); None for a message, stored ones included.

    A fast-lane :class:`Reply` keeps its status line apart from its headers. nats-py merges the two into
    ``headers["Status"]``, so on its path a stored message (one that carries ``Nats-Sequence``) never counts
    as a status, whatever headers it was published with.

    >>> status_of(Reply("_INBOX.x.1", "", b"", {"Status": "404", "Nats-Sequence": "7"}))
    >>> status_of(Reply("_INBOX.x.1", "", b"", {}, "404", "No Messages"))
    '404'
    """
    headers = msg.headers
    if headers and SEQUENCE in headers:
        return None
    if isinstance(msg, Reply):
        return msg.status
    return headers.get(STATUS) if headers else None


def description_of(msg: Msg | Reply) -> str:
    """The description of a status reply (``"No Messages"``), for error messages."""
    if isinstance(msg, Reply):
        return msg.description
    return (msg.headers or {}).get(DESCRIPTION, "")


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
            await self._nc.publish(subject, payload, reply=f"{self._prefix}.{token}", headers=headers)
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
        limit = timeout or self._timeout
        n = len(messages)
        results: list[Any] = [None] * n
        loop = asyncio.get_running_loop()
        handlers = self._handlers
        low_water = max(1, window // 2)
        inflight = 0
        received = 0
        waiter: asyncio.Future[None] | None = None
        refused: asyncio.Future[None] = loop.create_future()  # set by on_server_error for these requests
        failed_subject: str | None = None

        def make_route(i: int, token: str) -> Callable[[Msg], None]:
            def route(msg: Msg) -> None:
                nonlocal inflight, received, failed_subject
                if handlers.pop(token, None) is None:
                    return
                if failed_subject is None and status_of(msg) == "503":
                    failed_subject = messages[i][0]
                results[i] = msg
                inflight -= 1
                received += 1
                if waiter is not None and not waiter.done() and inflight <= low_water:
                    waiter.set_result(None)

            return route

        async def drain_to(level: int) -> None:
            nonlocal waiter
            while inflight > level:
                seen = received
                waiter = loop.create_future()
                try:
                    await asyncio.wait_for(asyncio.wait({waiter, refused}, return_when=FIRST_COMPLETED), limit)
                    if refused.done():
                        refused.result()  # a permissions violation: raise it now, not a timeout later
                except TimeoutError:
                    if received == seen:
                        raise StoreTimeoutError(
                            f"no reply from the server within {limit:.1f}s for {inflight} of {n} pipelined "
                            "requests; is the server overloaded, or is the stream's leader being elected?"
                        ) from None
                finally:
                    waiter = None

        prefix = self._prefix
        nc = self._nc
        send = nc._send_command
        tokens: list[str] = []
        try:
            for i, (subject, payload, headers) in enumerate(messages):
                if inflight >= window:
                    await drain_to(low_water)
                self._counter += 1
                token = format(self._counter, "x")
                tokens.append(token)
                handlers[token] = make_route(i, token)
                self._waiting[token] = (subject, refused)
                inflight += 1
                block = _header_block(headers) if headers else None
                if block is None or not nc.is_connected or nc.is_draining_pubs:  # unusual: nats-py checks, buffers
                    await nc.publish(subject, payload, reply=f"{prefix}.{token}", headers=headers)
                    continue
                size = len(block)
                await send(b"HPUB %s %s.%s %d %d\r\n%s%s\r\n" % (
                    subject.encode(), prefix.encode(), token.encode(), size, size + len(payload), block, payload))
                if nc._flush_queue is not None and nc._flush_queue.empty():
                    await nc._flush_pending()
            await drain_to(0)
        finally:
            for token in tokens:
                handlers.pop(token, None)
                self._waiting.pop(token, None)
            if refused.done() and not refused.cancelled():
                refused.exception()  # retrieved: no "exception was never retrieved" warning
        if failed_subject is not None:
            raise await self._no_responders(failed_subject, None)
        return results

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
        await self._nc.publish(subject, payload, headers=headers)

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


def _header_block(headers: Mapping[str, str]) -> bytes | None:
    """``NATS/1.0`` + ``Name: value`` lines, or None if a value needs nats-py's sanitising (CR/LF, padding)."""
    text = "".join([f"{k}: {v}\r\n" for k, v in headers.items()])
    if text.count("\r") != len(headers) or text.count("\n") != len(headers):
        return None
    return b"NATS/1.0\r\n" + text.encode() + b"\r\n"


def parse_ack(msg: Msg) -> dict[str, Any] | ApiError:
    """A PubAck as a dict, or the API error it carries."""
    try:
        body = json.loads(msg.data)
    except ValueError:
        return ApiError(0, 0, f"unreadable reply: {msg.data[:80]!r}")
    err = body.get("error")
    if err:
        return ApiError(int(err.get("code", 0)), int(err.get("err_code", 0)), str(err.get("description", "")))
    result: dict[str, Any] = body
    return result
