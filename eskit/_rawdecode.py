"""Raw consumer messages decoded in bulk: the per-event Python work is what limits a catch-up or a bulk read.

Each field is cut from all messages of a batch at once, with C-level string operations:

- position, store time, delivery count and pending count from the reply subjects, joined and split in one
  call (``$JS.ACK`` v1 has nine tokens; v2 subjects are read one by one);
- eskit's headers from all header blocks with one regex ``findall`` (block by block if a block is empty or
  not as NATS clients write it; the last value of a repeated header wins, as in nats-py);
- JSON payloads with one C scanner call each over one joined string;
- aggregate id and type once per distinct subject.

>>> events = recorded_events(subjects, ack_tokens(replies), headers, payloads)   # doctest: +SKIP
>>> events[0].position, events[0].type
(1, 'created')
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from typing import Any

from ._nats.headers import parse_headers
from .events import (
    CAUSATION_ID,
    CORRELATION_ID,
    META_PREFIX,
    MSG_ID,
    OCCURRED_AT,
    SCHEMA_VERSION,
    RecordedEvent,
    decode_token,
    parse_time,
    parse_version,
    subject_parts,
)

_FIELDS = (MSG_ID, SCHEMA_VERSION, OCCURRED_AT, CORRELATION_ID, CAUSATION_ID)
_START = "NATS/1.0\r\n"
_START_BYTES = _START.encode()
_BLOCK = re.compile(  # a header block; the groups keep the value of the last line that matched them
    r"NATS/1\.0\r\n(?:(?:"
    + "|".join(rf"{re.escape(name)}: ([^\r]*)" for name in _FIELDS)  # the names events.py defines
    + rf"|({re.escape(META_PREFIX)})[^\r]*|[^\r]*)\r\n)*?\r\n"
)
_DECODER = json.JSONDecoder()
NO_META: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class AckTokens:
    """What a ``$JS.ACK`` reply subject says of each message."""

    delivered: list[int]  # 1 on the first delivery
    positions: list[int]  # stream sequences
    nanos: list[int]  # store times, ns since the epoch
    pending: list[int]  # messages after this one not yet delivered

    def pick(self, indices: list[int]) -> AckTokens:
        """The tokens of the messages at ``indices`` only."""
        columns = (self.delivered, self.positions, self.nanos, self.pending)
        return AckTokens(*([column[i] for i in indices] for column in columns))


def ack_tokens(replies: list[bytes]) -> AckTokens:
    """``$JS.ACK.<stream>.<consumer>.<delivered>.<seq>.<n>.<nanos>.<pending>`` (v1) or v2, of each reply."""
    n = len(replies)
    tokens = b".".join(replies).split(b".")
    if len(tokens) == 9 * n and tokens[1::9].count(b"ACK") == n:
        columns = [list(map(int, tokens[at::9])) for at in (4, 5, 7, 8)]
        return AckTokens(*columns)
    out: AckTokens = AckTokens([], [], [], [])
    for reply in replies:  # v2: $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<seq>...
        parts = reply.split(b".")
        at = 4 if len(parts) == 9 else 6
        out.delivered.append(int(parts[at]))
        out.positions.append(int(parts[at + 1]))
        out.nanos.append(int(parts[at + 3]))
        out.pending.append(int(parts[at + 4]))
    return out


@dataclass(frozen=True, slots=True)
class HeaderFields:
    """eskit's headers of each message (``""`` where missing) and its metadata."""

    ids: tuple[str, ...]
    versions: tuple[str, ...]
    occurred: tuple[str, ...]
    correlations: tuple[str, ...]
    causations: tuple[str, ...]
    meta: list[dict[str, str]]
    has_meta: bool


def header_fields(headers: list[bytes]) -> HeaderFields:
    """One ``findall`` over all blocks when each block starts with the only ``NATS/1.0`` line in it and
    every block matched (then match i is block i); otherwise block by block."""
    found: list[tuple[str, ...]] = []
    text = b"".join(headers).decode("utf-8", "replace")
    if text.count(_START) == len(headers) and all(map(bytes.startswith, headers, repeat(_START_BYTES))):
        found = _BLOCK.findall(text)
    if len(found) != len(headers):
        found = [_one_block(block) for block in headers]
    if not found:
        return HeaderFields((), (), (), (), (), [], False)
    ids, versions, occurred, correlations, causations, markers = zip(*found, strict=True)
    meta, has_meta = _meta(headers, markers)
    return HeaderFields(ids, versions, occurred, correlations, causations, meta, has_meta)


def _one_block(block: bytes) -> tuple[str, ...]:
    match = _BLOCK.fullmatch(block.decode("utf-8", "replace"))
    if match is not None:
        return match.groups(default="")
    parsed = parse_headers(block) or {}  # no headers, or not as NATS clients write them
    meta = META_PREFIX if any(k.startswith(META_PREFIX) for k in parsed) else ""
    return (*(parsed.get(name, "") for name in _FIELDS), meta)


def _meta(headers: list[bytes], markers: tuple[str, ...]) -> tuple[list[dict[str, str]], bool]:
    if not any(markers):
        return [NO_META] * len(headers), False
    rows = []
    for block, marker in zip(headers, markers, strict=True):
        if marker:
            parsed = parse_headers(block) or {}
            rows.append({k[len(META_PREFIX) :]: v for k, v in parsed.items() if k.startswith(META_PREFIX)})
        else:
            rows.append(NO_META)
    return rows, any(rows)


def split_subjects(
    subjects: Sequence[bytes | str], *, original_names: bool
) -> tuple[list[str], list[str], list[str]]:
    """Subject, aggregate id and type per message (``original_names``: ``%XX`` escapes undone), worked
    out once per distinct subject."""
    named: dict[bytes | str, tuple[str, str, str]] = {}
    for raw in dict.fromkeys(subjects):
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        aggregate, event_type = subject_parts(text)
        if original_names:
            aggregate, event_type = decode_token(aggregate), decode_token(event_type)
        named[raw] = (text, aggregate, event_type)
    rows = list(map(named.__getitem__, subjects))
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def decode_payloads(payloads: list[bytes]) -> tuple[list[Any], dict[int, str]]:
    """JSON payloads, and why each undecodable one is not JSON (by index; its value is None).

    One C scanner call each over one joined string (no per-call setup); a payload counts only if one JSON
    value spans it exactly, anything else goes through ``json.loads`` on its own.
    """
    joined = b"\n".join(payloads)
    if joined.isascii():  # one decode for all; offsets in characters are offsets in bytes
        text, lengths = joined.decode("ascii"), list(map(len, payloads))
    else:
        texts = []
        for payload in payloads:
            try:
                texts.append(payload.decode())
            except UnicodeDecodeError:
                texts.append("\x00")  # never valid JSON: decoded on its own below
        text, lengths = "\n".join(texts), list(map(len, texts))
    scan, values, errors, start = _DECODER.scan_once, [], {}, 0  # type: ignore[attr-defined]
    for i, (payload, length) in enumerate(zip(payloads, lengths, strict=True)):
        end = start + length
        try:
            value, stop = scan(text, start)
            if stop != end:
                raise ValueError("not exactly one JSON value")
        except (StopIteration, ValueError, RecursionError):
            value, error = _loads(payload)
            if error is not None:
                errors[i] = error
        values.append(value)
        start = end + 1
    return values, errors


def _loads(payload: bytes) -> tuple[Any, str | None]:
    if not payload:
        return None, None
    try:
        return json.loads(payload), None
    except (ValueError, RecursionError) as exc:  # RecursionError: e.g. 1 MB of '[' from someone else
        return None, f"payload is not JSON ({len(payload)} bytes): {exc}"


def version(value: str | None) -> int:
    """A schema version header; missing or garbled: version 1, as :func:`eskit.events.decode` does."""
    return parse_version(value)


def recorded_events(
    subjects: list[bytes], acks: AckTokens, headers: list[bytes], payloads: list[bytes]
) -> list[RecordedEvent]:
    """The messages as :class:`RecordedEvent` (as :func:`eskit.events.decode` builds them); ``acks`` are
    their :func:`ack_tokens`."""
    texts, aggregates, types = split_subjects(subjects, original_names=False)
    fields = header_fields(headers)
    values, errors = decode_payloads(payloads)
    n = len(payloads)
    versions = [1] * n if fields.versions.count("1") == n else [*map(version, fields.versions)]
    stamps = [_from_timestamp(nanos // 1000 / 1e6, UTC) for nanos in acks.nanos]  # exact to the us
    ids = [i or None for i in fields.ids]
    correlations = [None] * n if not any(fields.correlations) else [c or None for c in fields.correlations]
    causations = [None] * n if not any(fields.causations) else [c or None for c in fields.causations]
    failed = [errors.get(i) for i in range(n)] if errors else [None] * n
    columns = (acks.positions, texts, aggregates, types, values, ids, stamps, versions, _times(fields.occurred),
               correlations, causations, fields.meta, payloads, failed)  # fmt: skip
    return list(map(_event, *columns))


def _times(values: tuple[str, ...]) -> list[datetime | None]:
    try:
        times = [_from_iso(v) if v else None for v in values]
    except ValueError:
        return [parse_time(v) for v in values]  # other formats, or garbled: None
    if any(t is not None and t.tzinfo is None for t in times):
        return [parse_time(v) for v in values]  # no offset: UTC
    return times


_new = object.__new__
_from_timestamp = datetime.fromtimestamp
_from_iso = datetime.fromisoformat
_SLOTS = ("position", "subject", "aggregate_id", "type", "data", "id", "timestamp", "schema_version",
          "occurred_at", "correlation_id", "causation_id", "metadata", "raw", "decode_error")  # fmt: skip
if tuple(f.name for f in dataclasses.fields(RecordedEvent)) != _SLOTS:
    raise RuntimeError("eskit: RecordedEvent's fields changed; update eskit._rawdecode._event")
(_position, _subject, _aggregate_id, _type, _data, _id, _timestamp, _schema_version, _occurred_at,
 _correlation_id, _causation_id, _metadata, _raw, _decode_error) = (
    RecordedEvent.__dict__[name].__set__ for name in _SLOTS)  # fmt: skip


def _event(
    position: int, subject: str, aggregate_id: str, event_type: str, data: Any, event_id: str | None,
    timestamp: datetime, schema_version: int, occurred_at: datetime | None, correlation_id: str | None,
    causation_id: str | None, metadata: dict[str, str], raw: bytes, decode_error: str | None,
) -> RecordedEvent:  # fmt: skip
    """``RecordedEvent(...)`` without the frozen dataclass's per-field ``object.__setattr__`` (the slow part)."""
    event = _new(RecordedEvent)
    _position(event, position)
    _subject(event, subject)
    _aggregate_id(event, aggregate_id)
    _type(event, event_type)
    _data(event, data)
    _id(event, event_id)
    _timestamp(event, timestamp)
    _schema_version(event, schema_version)
    _occurred_at(event, occurred_at)
    _correlation_id(event, correlation_id)
    _causation_id(event, causation_id)
    _metadata(event, metadata or {})  # a dict of its own for each event
    _raw(event, raw)
    _decode_error(event, decode_error)
    return event
