"""A fast lane for the Wire's reply inbox: replies go straight to their waiting request.

nats-py hands every message through a per-subscription queue and a task, builds a ``Msg`` and parses its
header block character by character (``any(c.isspace() ...)`` per name). A batch Direct Get reply is one
message per event with about ten headers, so on a replay that machinery is most of the client's time.
:func:`install` routes messages of the Wire's inbox subscription (and only those) to the Wire's handler
synchronously, as a light :class:`Reply` whose headers were split in C (``map`` over the lines). Every other
subscription of the connection is untouched. If nats-py's internals ever differ, nothing is installed
and the ordinary path keeps working.

>>> parse_headers(b"NATS/1.0 204 EOB\\r\\nNats-Num-Pending: 0\\r\\n\\r\\n")
{'Nats-Num-Pending': '0', 'Status': '204', 'Description': 'EOB'}
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable, Mapping
from typing import Any

HEADER_LINE = "NATS/1.0"


class Reply:
    """What the Wire's handlers read of a message: subject, reply, data, headers (as ``nats.aio.msg.Msg``)."""

    __slots__ = ("data", "headers", "reply", "subject")

    def __init__(self, subject: str, reply: str, data: bytes, headers: Mapping[str, str] | None) -> None:
        self.subject = subject
        self.reply = reply
        self.data = data
        self.headers = headers


_FIELD = operator.methodcaller("split", ": ", 1)


def parse_headers(raw: bytes) -> dict[str, str] | None:
    """A NATS header block (``NATS/1.0 [status [description]]`` then ``Name: Value`` lines) as a dict.

    Lines as servers and clients write them (``Name: Value``) are split in C (``map``); anything else
    falls back to a careful parse with nats-py's rules.
    """
    if not raw:
        return None
    first, _, rest = raw.decode("utf-8", "replace").partition("\r\n")
    rest = rest.strip("\r\n")
    try:
        out = dict(map(_FIELD, rest.split("\r\n"))) if rest else {}
    except ValueError:
        out = _careful(rest)
    if len(first) > len(HEADER_LINE):  # an inline status: "NATS/1.0 404 No Messages"
        code, _, description = first[len(HEADER_LINE) :].strip().partition(" ")
        if code.isdigit():
            out["Status"] = code
        if description:
            out["Description"] = description.strip()
    return out


def _careful(text: str) -> dict[str, str]:
    """Every line, as nats-py does: names stripped, none with whitespace inside; values stripped."""
    out: dict[str, str] = {}
    for line in text.split("\r\n"):
        name, sep, value = line.partition(":")
        key = name.strip()
        if sep and key and key.isascii() and len(key.split()) == 1:
            out[key] = value.strip()
    return out


def install(nc: Any, sub: Any, prefix: str, handlers: Mapping[str, Callable[[Any], None]]) -> bool:
    """Deliver messages of ``sub`` (the Wire's ``prefix.*`` inbox) to ``handlers[last token]`` directly."""
    original = getattr(nc, "_process_msg", None)
    sid = getattr(sub, "_id", None)
    if (
        original is None
        or sid is None
        or list(inspect.signature(original).parameters) != ["sid", "subject", "reply", "data", "headers"]
    ):
        return False
    cut = len(prefix) + 1

    async def process(sid_: int, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        if sid_ != sid:
            await original(sid_, subject, reply, data, headers)
            return
        name = subject.decode()
        handler = handlers.get(name[cut:])
        if handler is not None:
            try:
                handler(Reply(name, reply.decode(), data, parse_headers(headers)))
            except Exception:  # as nats-py does for a failing callback: the request then times out
                return

    nc._process_msg = process
    return True
