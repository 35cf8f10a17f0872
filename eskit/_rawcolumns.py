"""Raw consumer messages (:class:`~eskit._bulkread.RawBatch`) into DataFrame columns, a column at a time.

The per-event Python work is what limits a bulk read, so every column is cut from all messages at once:

- positions and store times from the reply subjects, joined and split in one call (``$JS.ACK`` v1 has nine
  tokens: the stream sequence is the 6th, the time in nanoseconds the 8th; v2 subjects are read one by one);
- eskit's headers from all header blocks with one regex ``findall`` (block by block if a block is empty or
  not as NATS clients write it; the last value of a repeated header wins, as in nats-py);
- aggregate id and type once per distinct subject.

>>> columns = raw_columns(batches)                                    # doctest: +SKIP
>>> columns.base["position"][:3]
array([1, 2, 3])
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd

from ._bulkread import RawBatch
from ._headers import parse_headers
from .eventlog import decode_token
from .events import CAUSATION_ID, CORRELATION_ID, META_PREFIX, MSG_ID, OCCURRED_AT, SCHEMA_VERSION

_FIELDS = (MSG_ID, SCHEMA_VERSION, OCCURRED_AT, CORRELATION_ID, CAUSATION_ID)
_START = "NATS/1.0\r\n"
_START_BYTES = _START.encode()
_BLOCK = re.compile(  # a header block; the groups keep the value of the last line that matched them
    r"NATS/1\.0\r\n(?:(?:Nats-Msg-Id: ([^\r]*)|Eskit-Schema-Version: ([^\r]*)|Eskit-Occurred-At: ([^\r]*)"
    r"|Eskit-Correlation-Id: ([^\r]*)|Eskit-Causation-Id: ([^\r]*)|(Eskit-Meta-)[^\r]*|[^\r]*)\r\n)*?\r\n"
)
_NO_META: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class RawColumns:
    """The base columns (frames.BASE order, except the times), metadata per row, and the payloads."""

    base: dict[str, Any]
    occurred_at: list[str | None]
    meta: list[dict[str, str]]
    has_meta: bool
    payloads: list[bytes]


def raw_columns(batches: Sequence[RawBatch]) -> RawColumns:
    subjects = [s for b in batches for s in b.subjects]
    replies = [r for b in batches for r in b.replies]
    headers = [h for b in batches for h in b.headers]
    payloads = [p for b in batches for p in b.payloads]
    positions, nanos = _positions_and_times(replies)
    subject, aggregate, event_type = _subjects(subjects)
    found = _header_fields(headers)
    ids, versions, occurred, correlations, causations, markers = zip(*found, strict=True) if found else [()] * 6
    meta, has_meta = _meta(headers, markers)
    base = {
        "position": positions,
        "aggregate_id": aggregate,
        "type": event_type,
        "timestamp": pd.Series(nanos.view("datetime64[ns]")).dt.tz_localize("UTC"),
        "event_id": _or_none(ids),
        "schema_version": _versions(versions),
        "correlation_id": _or_none(correlations),
        "causation_id": _or_none(causations),
        "subject": subject,
    }
    return RawColumns(base, _or_none(occurred), meta, has_meta, payloads)


def _or_none(values: tuple[str, ...]) -> list[str | None]:
    """A column of header values; a missing header (``""``) is None."""
    if "" not in values:
        return list(values)
    return [v or None for v in values]


def _positions_and_times(replies: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Stream sequences and store times (ns since the epoch) from ``$JS.ACK`` reply subjects."""
    n = len(replies)
    tokens = b".".join(replies).split(b".")
    if len(tokens) == 9 * n and tokens[1::9].count(b"ACK") == n:
        return np.array(tokens[5::9]).astype(np.int64), np.array(tokens[7::9]).astype(np.int64)
    positions, nanos = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for i, reply in enumerate(replies):
        parts = reply.split(b".")
        at = 5 if len(parts) == 9 else 7  # v2: $JS.ACK.<domain>.<account>.<stream>.<consumer>.<n>.<seq>...
        positions[i], nanos[i] = int(parts[at]), int(parts[at + 2])
    return positions, nanos


def _subjects(subjects: list[bytes]) -> tuple[list[str], list[str], list[str]]:
    """Subject, aggregate id and type (original names) per message, worked out once per distinct subject."""
    named: dict[bytes, tuple[str, str, str]] = {}
    for raw in dict.fromkeys(subjects):
        text = raw.decode("utf-8", "replace")
        parts = text.split(".", 2)
        named[raw] = (
            text,
            decode_token(parts[1]) if len(parts) > 1 else "",
            decode_token(parts[2]) if len(parts) > 2 else "",
        )
    rows = list(map(named.__getitem__, subjects))
    if not rows:
        return [], [], []
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def _header_fields(headers: list[bytes]) -> list[tuple[str, ...]]:
    """Per block: message id, schema version, occurred at, correlation id, causation id, and a meta marker.

    One ``findall`` over all blocks when each block starts with the only ``NATS/1.0`` line in it and every
    block matched (then match i is block i); otherwise block by block. A missing header is ``""``.
    """
    text = b"".join(headers).decode("utf-8", "replace")
    if text.count(_START) == len(headers) and all(map(bytes.startswith, headers, repeat(_START_BYTES))):
        found = _BLOCK.findall(text)
        if len(found) == len(headers):
            return found
    return [_one_block(block) for block in headers]


def _one_block(block: bytes) -> tuple[str, ...]:
    text = block.decode("utf-8", "replace")
    match = _BLOCK.fullmatch(text)
    if match is not None:
        return match.groups(default="")
    parsed = parse_headers(block) or {}  # no headers, or not as NATS clients write them
    meta = META_PREFIX if any(k.startswith(META_PREFIX) for k in parsed) else ""
    return (*(parsed.get(name, "") for name in _FIELDS), meta)


def _meta(headers: list[bytes], markers: tuple[str, ...]) -> tuple[list[dict[str, str]], bool]:
    if not any(markers):
        return [_NO_META] * len(headers), False
    rows = []
    for block, marker in zip(headers, markers, strict=True):
        if marker:
            parsed = parse_headers(block) or {}
            rows.append({k[len(META_PREFIX) :]: v for k, v in parsed.items() if k.startswith(META_PREFIX)})
        else:
            rows.append(_NO_META)
    return rows, any(rows)


def _versions(values: tuple[str, ...]) -> Any:
    if values.count("1") == len(values):
        return np.ones(len(values), np.int64)
    return pd.array([_version(v) for v in values], dtype="int64")


def _version(value: str | None) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # missing or garbled: version 1, as events.decode does
        return 1
