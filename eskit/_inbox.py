"""A fast lane for the Wire's reply inbox: replies go straight to their waiting request.

nats-py hands every message through a per-subscription queue and a task, builds a ``Msg`` and parses its
header block character by character (``any(c.isspace() ...)`` per name). A batch Direct Get reply is one
message per event with about ten headers, so on a replay that machinery is most of the client's time.
:func:`install` routes messages of the Wire's inbox subscription (and only those) to the Wire's handler
synchronously, as a light :class:`Reply` whose :class:`Headers` look a name up in the raw block
(C-speed ``str.find``) instead of parsing every line. Every other
subscription of the connection is untouched. If nats-py's internals ever differ, nothing is installed
and the ordinary path keeps working.

>>> headers = parse_headers(b"NATS/1.0 204 EOB\\r\\nNats-Num-Pending: 0\\r\\n\\r\\n")
>>> headers.get("Status"), headers["Nats-Num-Pending"], dict(headers)
('204', '0', {'Status': '204', 'Description': 'EOB', 'Nats-Num-Pending': '0'})
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
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


class Headers(Mapping[str, str]):
    """A header block read lazily: ``get`` finds one ``\\r\\nName: `` line (C speed); iterating parses all."""

    __slots__ = ("_parsed", "_status", "_text")

    def __init__(self, text: str, status: dict[str, str]) -> None:
        self._text = text  # "\r\nName: Value\r\nName: Value\r\n..."
        self._status = status
        self._parsed: dict[str, str] | None = None

    def get(self, key: str, default: Any = None) -> Any:
        if self._parsed is not None:
            return self._parsed.get(key, default)
        if key in self._status:
            return self._status[key]
        start = self._text.rfind(f"\r\n{key}: ")  # the last one wins, as in nats-py's dict
        if start < 0:
            if f"\r\n{key}:" in self._text:  # unusual spacing: parse it all, carefully
                return self._all().get(key, default)
            return default
        start += len(key) + 4
        return self._text[start : self._text.find("\r\n", start)].strip()

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return str(value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def _all(self) -> dict[str, str]:
        if self._parsed is None:
            self._parsed = {**self._status, **_careful(self._text)}
        return self._parsed

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __bool__(self) -> bool:
        return True

    def has(self, fragment: str) -> bool:
        """Whether ``fragment`` occurs in the block's text (e.g. ``"\\r\\nEskit-Meta-"``)."""
        return fragment in self._text

    def __repr__(self) -> str:
        return repr(self._all())


def parse_headers(raw: bytes) -> Headers | None:
    """A NATS header block (``NATS/1.0 [status [description]]`` then ``Name: Value`` lines)."""
    if not raw:
        return None
    text = raw.decode("utf-8", "replace")
    end = text.find("\r\n")
    first = text[:end] if end >= 0 else text
    status: dict[str, str] = {}
    if len(first) > len(HEADER_LINE):  # an inline status: "NATS/1.0 404 No Messages"
        code, _, description = first[len(HEADER_LINE) :].strip().partition(" ")
        if code.isdigit():
            status["Status"] = code
        if description:
            status["Description"] = description.strip()
    return Headers(text[end:] if end >= 0 else "", status)


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
