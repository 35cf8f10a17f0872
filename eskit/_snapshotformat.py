"""The stored form of a snapshot: three lines, a digest, a header (what it is, where it belongs), the state.

>>> raw = encode({"format": FORMAT, "version": 3}, {"balance": 78})
>>> raw
b'...\\n{"format":2,"version":3}\\n{"balance":78}'
>>> decode(raw)
({'format': 2, 'version': 3}, {'balance': 78})

The digest (SHA-256 of the two lines after it, in hex) catches a snapshot edited by hand or cut short. It is
not a signature: whoever may write the snapshot bucket and read the stream can forge a snapshot, so let only the
accounts that run aggregates write the bucket. Every value is checked for nesting depth before it is parsed,
so a hostile value (``b"[" * 100000``) cannot make the decoder recurse.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .errors import EncodeError

if TYPE_CHECKING:
    from ._marks import Mark
    from .aggregate import Aggregate

FORMAT = 2  # 1: one JSON object without the stream identity, event mark and digest (ignored when read)
MAX_NESTING = 100  # arrays/objects inside each other; deeper state is refused when written, ignored when read

_DROP = bytes(b for b in range(256) if b not in b'[]{}"')  # all but brackets and quotes
_DROP_KEEP_ESCAPES = _DROP.replace(b"\\", b"")
_SQUARE = bytes.maketrans(b"{}", b"[]")  # one kind of bracket: a pass of replace(b"[]") strips one level
_DIGEST_HEX = 64
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


class TooDeep(ValueError):
    """A state that nests deeper than :data:`MAX_NESTING`."""


def nesting_within(raw: bytes, limit: int = MAX_NESTING) -> bool:
    """Whether the JSON text ``raw`` nests arrays and objects at most ``limit`` deep (strings do not count).

    Bytes operations only (C speed, no recursion): escapes are removed, then everything but brackets and
    quotes, then the strings; then each pass strips the innermost level.

    >>> nesting_within(b'{"a": [1, [2]], "b": "[[[[", "c": "\\\\\\"[["}', 3), nesting_within(b"[" * 100_000)
    (True, False)
    """
    skeleton = raw.translate(_SQUARE, _DROP_KEEP_ESCAPES)
    if len(skeleton) <= limit:  # cannot open more than `limit`: the common case
        return True
    if b"\\" in skeleton:  # in JSON a backslash escapes the next byte: drop the pairs as a parser reads them
        skeleton = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(_SQUARE, _DROP)
    if skeleton.count(b'"') == 2 * skeleton.count(b'""'):  # no string holds a bracket: drop the quotes
        skeleton = skeleton.translate(None, b'"')
    else:  # keep what lies between strings
        skeleton = b"".join(skeleton.split(b'"')[::2])
    for _ in range(limit):
        if not skeleton:
            return True
        inner = skeleton.replace(b"[]", b"")
        if len(inner) == len(skeleton):  # unbalanced: not JSON, and the parser would recurse on it
            return False
        skeleton = inner
    return not skeleton


def encode(header: dict[str, Any], state: dict[str, Any]) -> bytes:
    """The stored bytes; raises TypeError or ValueError if ``state`` is not JSON, TooDeep if it nests too deep."""
    try:
        body = _JSON(state).encode()
    except RecursionError:
        raise TooDeep(f"it nests deeper than {MAX_NESTING} levels") from None
    if not nesting_within(body):
        raise TooDeep(f"it nests deeper than {MAX_NESTING} levels")
    signed = _JSON(header).encode() + b"\n" + body
    return hashlib.sha256(signed).hexdigest().encode() + b"\n" + signed


def decode(raw: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and the state; raises ValueError saying why they cannot be trusted."""
    digest, _, signed = raw.partition(b"\n")
    if len(digest) != _DIGEST_HEX:
        raise ValueError("no digest line: an older format, or not written by eskit")
    if hashlib.sha256(signed).hexdigest().encode() != digest:
        raise ValueError("it does not match its digest (edited or cut short)")
    head, _, body = signed.partition(b"\n")
    header = _parse(head, "header")
    if header.get("format") != FORMAT:
        raise ValueError(f"format {header.get('format')!r}, expected {FORMAT}")
    return header, _parse(body, "state")


def _parse(raw: bytes, what: str) -> dict[str, Any]:
    if not nesting_within(raw):
        raise ValueError(f"its {what} nests deeper than {MAX_NESTING} levels")
    try:
        value = json.loads(raw)
    except RecursionError:  # not reachable after the depth check; kept so no decoder error escapes
        raise ValueError(f"its {what} nests too deep") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"its {what} is not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ValueError(f"its {what} is not a JSON object")
    return value


def encode_aggregate(aggregate: Aggregate, timestamp: datetime | None, stream: str, mark: Mark) -> bytes:
    """The stored form of ``aggregate``'s snapshot, marked with the event it was built up to."""
    header = {
        "format": FORMAT,
        "name": type(aggregate).snapshot_name,
        "id": aggregate.id,
        "schema": aggregate.snapshot_schema,
        "version": aggregate.version,
        "position": aggregate.position,
        "timestamp": timestamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if timestamp else None,
        "stream": stream,
        "event_id": mark.event_id,
        "stored_at": mark.stored_at,
    }
    name = type(aggregate).__name__
    try:
        return encode(header, aggregate.snapshot())
    except TooDeep as exc:
        raise EncodeError(f"{name} state cannot be snapshotted: {exc}; override snapshot() to flatten it") from exc
    except (TypeError, ValueError) as exc:
        raise EncodeError(
            f"{name} state is not JSON-serialisable ({exc}); override snapshot() and restore() to convert it"
        ) from exc


def ints(header: dict[str, Any], *names: str) -> list[int]:
    """The header's values of ``names``, each an int, else ValueError."""
    values = [header.get(name) for name in names]
    bad = [name for name, value in zip(names, values, strict=True) if type(value) is not int]
    if bad:
        raise ValueError(f"{', '.join(bad)} not an integer")
    return values  # type: ignore[return-value]
