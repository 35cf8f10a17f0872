"""NATS header blocks parsed with C-level string operations: every stored event carries a few headers.

nats-py parses each header block in pure Python and checks every character of every header name with a
generator; on a replay or a projection's catch-up that is one of the largest costs. Two parsers here, with
nats-py's results:

- :func:`parse_headers`: a whole block (``NATS/1.0 [status [description]]`` then ``Name: Value`` lines), as
  eskit's fast lanes receive it; an inline status becomes ``Status``/``Description`` as in nats-py;
- :func:`parse_header_lines`: the lines after the first, as nats-py's own ``_parse_header_lines`` takes them;
  :func:`install` sets it on one connection object (never on nats-py's class).

>>> parse_headers(b"NATS/1.0 204 EOB\\r\\nNats-Num-Pending: 0\\r\\n\\r\\n")
{'Nats-Num-Pending': '0', 'Status': '204', 'Description': 'EOB'}
>>> parse_header_lines(b"Nats-Msg-Id: 7\\r\\nEskit-Schema-Version: 1\\r\\n\\r\\n")
{'Nats-Msg-Id': '7', 'Eskit-Schema-Version': '1'}
"""

from __future__ import annotations

import operator
import re
from typing import Any

HEADER_LINE = "NATS/1.0"
_FIELD = operator.methodcaller("split", ": ", 1)
_SPACE = re.compile(rb"[\s\x1c-\x1f]")  # what str.isspace() finds in an ASCII name
_INVALID = object()
_names: dict[bytes, object] = {}  # raw name -> its str, or _INVALID: the same few names on every event


def parse_headers(raw: bytes) -> dict[str, str] | None:
    """A whole NATS header block as a dict (None for an empty block).

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


def parse_header_lines(raw: bytes) -> dict[str, str]:
    """``Name: Value`` lines (CRLF-separated) as a dict, exactly as nats-py's parser reads them."""
    out: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        key = _names.get(name)
        if key is None:
            key = _name(name)
            if len(_names) < 1000:
                _names[name] = key
        if key is not _INVALID:
            out[key] = value.strip().decode("utf-8", "replace")  # type: ignore[index]
    return out


def _name(raw: bytes) -> object:
    name = raw.strip()
    return name.decode() if name.isascii() and _SPACE.search(name) is None else _INVALID


def install(nc: Any) -> None:
    """Use :func:`parse_header_lines` on this connection, if nats-py still parses headers that way."""
    if callable(getattr(type(nc), "_parse_header_lines", None)):
        nc._parse_header_lines = parse_header_lines
