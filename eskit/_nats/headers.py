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

import inspect
import operator
import re
from typing import Any

HEADER_LINE = "NATS/1.0"
_FIELD = operator.methodcaller("split", ": ", 1)
_SPACE = re.compile(rb"[\s\x1c-\x1f]")  # what str.isspace() finds in an ASCII name
_INVALID = object()
_WS = " \t\n\r\x0b\x0c"  # what bytes.strip() strips: nats-py strips names and values so (ADR-4: a value is
# what is between the colon and CRLF, leading and trailing whitespace excluded)
_fine: set[str] = set()  # names seen to need nothing (ASCII, no whitespace, no colon): the same few every time
_names: dict[bytes, object] = {}  # raw name -> its str, or _INVALID: the same few names on every event


def parse_block(raw: bytes) -> tuple[dict[str, str], str | None, str]:
    """A whole NATS header block: its ``Name: Value`` headers, the status line's code (None: no status) and
    description.

    Lines as servers and clients write them (``Name: Value``) are split in C (``map``); anything else (a
    value with spaces around it, a name to strip or to skip) falls back to a careful parse with nats-py's rules.
    """
    first, _, rest = raw.decode("utf-8", "replace").partition("\r\n")
    rest = rest.removesuffix("\r\n\r\n") if rest.endswith("\r\n\r\n") else rest.removesuffix("\r\n")
    try:
        out = dict(map(_FIELD, rest.split("\r\n"))) if rest else {}
    except ValueError:
        out = _careful(rest)
    else:
        if _padded(rest) or not (_fine.issuperset(out) or _names_fine(out)):
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
        out.setdefault("Status", code)  # nats-py: the header lines come after, and win
    if description:
        out.setdefault("Description", description)
    return out or None


def _padded(text: str) -> bool:
    """Whether a value in these ``Name: Value`` lines may have whitespace nats-py would strip, or a lone CR or
    LF (then the careful parse decides). C-level substring searches: a regex costs several times more."""
    crlf = text.count("\r\n")
    return (
        " \r\n" in text or "  " in text or "\t" in text or "\x0b" in text or "\x0c" in text
        or text[-1:] in _WS or text.count("\r") != crlf or text.count("\n") != crlf
    )  # fmt: skip


def _names_fine(names: dict[str, str]) -> bool:
    """Whether nats-py would take these names as they are (and remember the ones it would)."""
    for name in names:
        if name.strip(_WS) != name or not name.isascii() or ":" in name or any(c.isspace() for c in name):
            return False
        if len(_fine) < 1000:
            _fine.add(name)
    return True


def _careful(text: str) -> dict[str, str]:
    """Every line, as nats-py does: names stripped, none with whitespace inside or non-ASCII; values stripped."""
    out: dict[str, str] = {}
    for line in text.split("\r\n"):
        name, sep, value = line.partition(":")
        key = name.strip(_WS)
        if sep and key.isascii() and not any(c.isspace() for c in key):
            out[key] = value.strip(_WS)
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


def missing(nc: Any) -> str | None:
    """Why :func:`install` cannot work on this nats-py client (None: it can)."""
    theirs = getattr(type(nc), "_parse_header_lines", None)
    if not callable(theirs) or list(inspect.signature(theirs).parameters) != ["raw"]:
        return "nats-py's Client has no _parse_header_lines(raw)"
    return None


def install(nc: Any) -> str | None:
    """Use :func:`parse_header_lines` on this connection (never on nats-py's class); None when done, else why
    not (nats-py no longer parses header lines with ``_parse_header_lines(raw)``)."""
    problem = missing(nc)
    if problem is None:
        nc._parse_header_lines = parse_header_lines
    return problem
