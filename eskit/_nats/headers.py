"""NATS header blocks parsed with C-level string operations: every stored event carries a few headers.

nats-py parses each header block in pure Python and checks every character of every header name with a
generator; on a replay or a projection's catch-up that is one of the largest costs. The parsers here give
nats-py's results:

- :func:`parse_block`: a whole block (``NATS/1.0 [status [description]]`` then ``Name: Value`` lines), as
  eskit's fast lanes receive it: the headers, and apart from them the status line's code and description
  (a server's status reply, never a ``Status`` header some publisher stored); :func:`parse_headers` merges
  the two into ``Status``/``Description`` as nats-py does;
- :func:`parse_header_lines`: the lines after the first, as nats-py's own ``_parse_header_lines`` takes them;
  :func:`install` sets it on one connection object (never on nats-py's class).

>>> parse_block(b"NATS/1.0 204 EOB\\r\\nNats-Num-Pending: 0\\r\\n\\r\\n")
({'Nats-Num-Pending': '0'}, '204', 'EOB')
>>> parse_block(b"NATS/1.0\\r\\nStatus: 404\\r\\n\\r\\n")    # a stored header, not a status
({'Status': '404'}, None, '')
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


def parse_block(raw: bytes) -> tuple[dict[str, str], str | None, str]:
    """A whole NATS header block: its ``Name: Value`` headers, the status line's code (None: no status) and
    description.

    Lines as servers and clients write them (``Name: Value``) are split in C (``map``); anything else
    falls back to a careful parse with nats-py's rules.
    """
    first, _, rest = raw.decode("utf-8", "replace").partition("\r\n")
    rest = rest.strip("\r\n")
    try:
        out = dict(map(_FIELD, rest.split("\r\n"))) if rest else {}
    except ValueError:
        out = _careful(rest)
    if len(first) <= len(HEADER_LINE):
        return out, None, ""
    code, _, description = first[len(HEADER_LINE) :].strip().partition(" ")  # "NATS/1.0 404 No Messages"
    return out, code if code.isdigit() else None, description.strip()


def parse_headers(raw: bytes) -> dict[str, str] | None:
    """A whole NATS header block as nats-py gives it (None for an empty block): an inline status becomes
    ``Status``/``Description``, so a stored ``Status`` header cannot be told from it (see :func:`parse_block`).
    """
    if not raw:
        return None
    out, code, description = parse_block(raw)
    if code is not None:
        out["Status"] = code
    if description:
        out["Description"] = description
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
