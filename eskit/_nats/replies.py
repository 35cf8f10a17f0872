"""What the server answers, read: Direct Get's stored messages and pages, JetStream API errors and acks, and
status replies told from messages.

A server's status reply (``NATS/1.0 404 No Messages``, ``204 EOB``, ``503``) is told from a message by
:func:`status_of`: by its status line, and never for a stored message (Direct Get adds ``Nats-Sequence`` to
those), so a ``Status`` header that someone published into a stream is just a header.

>>> parse_ack(reply)                                                   # doctest: +SKIP
{'stream': 'ORDERS', 'seq': 7}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg

STATUS = "Status"
DESCRIPTION = "Description"
SEQUENCE = "Nats-Sequence"  # on every message Direct Get returns, never on a status reply


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
