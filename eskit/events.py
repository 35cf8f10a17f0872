"""The event envelope, its metadata as NATS headers, the JSON codec, subject naming and validation.

An :class:`Event` is what you append; a :class:`RecordedEvent` is what the stream gives back.

>>> e = Event("item_added", {"sku": "A1", "qty": 2})
>>> subject("orders", "123", e.type)
'orders.123.item_added'

The event id is fixed when the event is created and travels as ``Nats-Msg-Id``, so appending the same
``Event`` object twice (a retry after a timeout, within the stream's duplicate window) stores it once.

Checked before anything is sent, each failure one line: ids and other header values are ``str`` without
surrounding whitespace or line breaks (headers would silently drop or change them), an event id is
not empty (an empty one turns deduplication off), ``occurred_at`` is a ``datetime``, ``expected_position`` an
``int`` in ``0..MAX_POSITION``; data follows :mod:`eskit.codec` (JSON, with a documented rule for dates,
decimals, UUIDs, enums and dataclasses).
"""

from __future__ import annotations

import json
import re
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from .codec import encode_json
from .errors import EncodeError, EventLogError, InvalidNameError, ValidationError

MSG_ID = "Nats-Msg-Id"
SCHEMA_VERSION = "Eskit-Schema-Version"
OCCURRED_AT = "Eskit-Occurred-At"
CORRELATION_ID = "Eskit-Correlation-Id"
CAUSATION_ID = "Eskit-Causation-Id"
META_PREFIX = "Eskit-Meta-"

MAX_TOKEN_BYTES = 255
_FORBIDDEN = frozenset(".*>")
_PLAIN_TOKEN = re.compile(r"[!-)+-\-/-=?-~]{1,255}")  # printable ASCII but '.', '*', '>': always valid
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
_FRACTION = re.compile(r"(\.\d+)")
EPOCH = datetime.fromtimestamp(0, UTC)  # the timestamp of an event whose store time is unknown
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_PLAIN_VALUE = re.compile(r"[!-~](?:[ -~]*[!-~])?")  # printable ASCII, no surrounding space: a header as it is
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_:,;=+@!#$&'()[]{}|/~^")
_ESCAPES = re.compile(r"(?:%[0-9A-F]{2})+")
Position = int | datetime | None  # an event's position, or the time up to which to read; None: the end
MAX_POSITION = 2**63 - 1  # the largest stream sequence a JetStream header carries as a number


def new_event_id() -> str:
    """A fresh, random event id (UUID4 hex)."""
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Event:
    """A new event, not yet stored.

    >>> Event("created", {"customer": "c1"}, correlation_id="req-7").type
    'created'
    """

    type: str
    data: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_event_id)
    schema_version: int = 1
    occurred_at: datetime = field(default_factory=_now)
    correlation_id: str | None = None
    causation_id: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored in the stream.

    ``position`` is the stream sequence (it counts the whole stream, not one aggregate).
    ``timestamp`` is when the server stored it. If the payload is not valid JSON (someone published raw
    bytes into the stream), ``data`` is ``None``, ``raw`` keeps the bytes and ``decode_error`` says why.
    """

    position: int
    subject: str
    aggregate_id: str
    type: str
    data: Any
    id: str | None
    timestamp: datetime
    schema_version: int = 1
    occurred_at: datetime | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    raw: bytes = b""
    decode_error: str | None = None

    @property
    def is_decodable(self) -> bool:
        return self.decode_error is None


def check_token(value: object, what: str) -> str:
    """Return ``value`` if it is a valid single subject token, else raise :class:`InvalidNameError`.

    >>> check_token("order-1", "aggregate id")
    'order-1'
    """
    if type(value) is str and _PLAIN_TOKEN.fullmatch(value):  # fast path: the common case
        return value
    if not isinstance(value, str):
        raise InvalidNameError(f"{what} must be a str, got {type(value).__name__}: {value!r}")
    if not value:
        raise InvalidNameError(f"{what} is empty; use a non-empty name such as 'order-1'")
    for ch in value:
        if ch in _FORBIDDEN or ch.isspace() or unicodedata.category(ch) in _BAD_CATEGORIES:
            raise InvalidNameError(
                f"{what} {value!r} contains {ch!r}; a subject token may not contain '.', '*', '>', "
                "whitespace or control characters (use '-' or '_' instead)"
            )
    if len(value.encode()) > MAX_TOKEN_BYTES:
        raise InvalidNameError(f"{what} {value[:20]!r}... is over {MAX_TOKEN_BYTES} bytes; use a shorter name")
    return value


def subject(prefix: str, aggregate_id: str, event_type: str) -> str:
    """The subject an event is stored on: ``<prefix>.<aggregate id>.<event type>``."""
    return f"{prefix}.{aggregate_id}.{event_type}"


def subject_parts(subj: str) -> tuple[str, str]:
    """The aggregate id and event type of a stored subject, ``<store>.<aggregate id>.<event type>``.

    The one reading of a subject for every read path (read, replay, load, frames, projections): tokens
    after the id belong to the type, so a message someone else published on ``orders.1.evil.created`` is of
    type ``evil.created`` (a type no eskit append can write, so no handler of ``created`` applies it).

    >>> subject_parts("orders.1.evil.created")
    ('1', 'evil.created')
    """
    tokens = subj.split(".", 2)
    return (tokens[1] if len(tokens) > 1 else "", tokens[2] if len(tokens) > 2 else "")


def encode_data(event: Event) -> bytes:
    """The event's data as JSON, by the rules of :mod:`eskit.codec`."""
    return encode_json(event.data, event.type)


def encode_headers(event: Event) -> dict[str, str]:
    """The envelope as NATS headers, each value checked (the event id by :func:`check_events`, on append)."""
    event_id, at, version = event.id, event.occurred_at, event.schema_version
    if not isinstance(at, datetime):
        raise ValidationError(f"occurred_at must be a datetime such as datetime.now(UTC), got {_shown(at)}")
    if type(version) is not int or not 1 <= version <= MAX_POSITION:
        raise ValidationError(f"schema_version must be an int (1, 2, ...), got {_shown(version)}")
    headers = {MSG_ID: event_id, SCHEMA_VERSION: str(version), OCCURRED_AT: at.isoformat()}
    if event.correlation_id is not None:
        headers[CORRELATION_ID] = header_text(event.correlation_id, "correlation_id")
    if event.causation_id is not None:
        headers[CAUSATION_ID] = header_text(event.causation_id, "causation_id")
    if not isinstance(event.metadata, Mapping):
        raise ValidationError(f"metadata must be a dict of str to str, got {_shown(event.metadata)}")
    for key, value in event.metadata.items():
        text = value if type(value) is str else str(value)
        if type(key) is not str or not _HEADER_NAME.match(key) or "\r" in text or "\n" in text:
            raise EncodeError(
                f"metadata {key!r}: keys must be str of header-name characters (letters, digits, '-', '_') and "
                "values one line; put structured data in the event's data instead"
            )
        headers[META_PREFIX + key] = header_text(text, f"metadata {key!r}", empty=True)
    return headers


def check_event_id(value: object) -> str:
    """An event id: a non-empty ``str`` that a header carries as it is.

    >>> check_event_id(" e1")
    Traceback (most recent call last):
    eskit.errors.ValidationError: event id ' e1' has leading or trailing whitespace, which NATS headers drop: strip it
    """
    if type(value) is str and _PLAIN_VALUE.fullmatch(value):
        return value
    if isinstance(value, str) and not value.strip():
        raise ValidationError(
            f"event id {value!r} is empty or blank, which turns deduplication off: leave id out and the event "
            "gets a unique one"
        )
    return header_text(value, "event id")


def header_text(value: object, what: str, *, empty: bool = False) -> str:
    """``value`` if a NATS header carries it unchanged: a ``str`` without surrounding whitespace (dropped) or
    line breaks (changed); ``empty=True`` also allows ``""``. Else :class:`ValidationError`."""
    if type(value) is str and (_PLAIN_VALUE.fullmatch(value) or (empty and not value)):
        return value
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a str, got {_shown(value)}")
    if not value:
        raise ValidationError(f"{what} is empty: leave it out (None) or give it a value")
    if value != value.strip():
        raise ValidationError(f"{what} {value!r} has leading or trailing whitespace, which NATS headers drop: strip it")
    if "\r" in value or "\n" in value:
        raise ValidationError(f"{what} {value!r} contains a line break; a header carries one line of text")
    return value


class _Identified(Protocol):
    @property
    def id(self) -> str: ...


def check_events(events: object, kind: type[_Identified], example: str) -> None:
    """Raise :class:`ValidationError` unless ``events`` is a list (or tuple) of ``kind`` objects, each with
    an event id (:func:`check_event_id`).

    >>> check_events({"x": Event("x")}, Event, "append(id, [Event('x')])")
    Traceback (most recent call last):
    eskit.errors.ValidationError: events must be a list of Event objects, e.g. append(id, [Event('x')]); got a dict
    """
    if type(events) is not list and type(events) is not tuple:
        if isinstance(events, kind):
            raise ValidationError(f"append takes a list of events: {example}")
        if not isinstance(events, Sequence) or isinstance(events, str | bytes):
            hint = " (pass list(...))" if hasattr(events, "__next__") else ""
            raise ValidationError(
                f"events must be a list of {kind.__name__} objects, e.g. {example}; got a {type(events).__name__}{hint}"
            )
    for event in events:
        if not isinstance(event, kind):
            raise ValidationError(f"events must be {kind.__name__} objects, e.g. {example}; got {_shown(event)}")
        event_id = event.id
        if type(event_id) is not str or not (event_id.isascii() and event_id.isalnum()):  # uuid hex: fast
            check_event_id(event_id)


def check_position(value: object, what: str = "expected_position", *, optional: bool = True) -> None:
    """Raise :class:`ValidationError` unless ``value`` is a stream position (0..``MAX_POSITION``), or ``None``
    if ``optional``.

    >>> check_position("3", "after", optional=False)
    Traceback (most recent call last):
    eskit.errors.ValidationError: after must be a stream position, an int from 0 to 9223372036854775807, got str '3'
    """
    if (value is None and optional) or (type(value) is int and 0 <= value <= MAX_POSITION):
        return
    raise ValidationError(
        f"{what} must be {'None or ' if optional else ''}a stream position, an int from 0 to {MAX_POSITION}, "
        f"got {_shown(value)}"
    )


def _shown(value: object) -> str:
    text = repr(value).replace("\n", " ")
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def parse_time(value: str | None) -> datetime | None:
    """Parse an RFC 3339 timestamp (nanoseconds allowed) into a tz-aware datetime."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)  # the fast path: Python 3.11+ reads Z and 9 digits too
    except ValueError:
        value = _FRACTION.sub(lambda m: m.group(1)[:7], value)  # Python keeps microseconds: cut to 6 digits
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _metadata(headers: Mapping[str, str]) -> dict[str, str]:
    return {k[len(META_PREFIX) :]: v for k, v in headers.items() if k.startswith(META_PREFIX)}


def parse_version(value: str | None) -> int:
    """A stored schema version header; missing, garbled or beyond a 64-bit integer (someone else's): 1.

    >>> parse_version("2"), parse_version("v2"), parse_version("9" * 30), parse_version(None)
    (2, 1, 1, 1)
    """
    try:
        version = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 1
    return version if -MAX_POSITION - 1 <= version <= MAX_POSITION else 1


def decode(position: int, subj: str, headers: Mapping[str, str], raw: bytes) -> RecordedEvent:
    """Build a :class:`RecordedEvent` from a stored message; never raises on bad data."""
    aggregate_id, event_type = subject_parts(subj)
    data: Any = None
    error: str | None = None
    try:
        data = json.loads(raw) if raw else None
    except (ValueError, RecursionError) as exc:  # RecursionError: e.g. 1 MB of '[' from someone else
        error = f"payload is not JSON ({len(raw)} bytes): {exc}"
    version = parse_version(headers.get(SCHEMA_VERSION))
    return RecordedEvent(
        position=position,
        subject=subj,
        aggregate_id=aggregate_id,
        type=event_type,
        data=data,
        id=headers.get(MSG_ID),
        timestamp=parse_time(headers.get("Nats-Time-Stamp")) or EPOCH,
        schema_version=version,
        occurred_at=parse_time(headers.get(OCCURRED_AT)),
        correlation_id=headers.get(CORRELATION_ID),
        causation_id=headers.get(CAUSATION_ID),
        metadata=_metadata(headers),
        raw=raw,
        decode_error=error,
    )



def stored_run(history: Sequence[RecordedEvent], events: Sequence[Event]) -> int | None:
    """The position of the last of ``events`` if ``history`` holds them all, contiguous and in order (by
    id: a retried append finds where its first attempt stored them), else None.

    >>> stored_run([], [Event("created")]) is None
    True
    """
    ids = [e.id for e in events]
    stored = [e for e in history if e.id is not None]
    for i, recorded in enumerate(stored):
        if recorded.id == ids[0]:
            run = stored[i : i + len(ids)]
            if [r.id for r in run] == ids:
                return run[-1].position
    return None

def encode_token(text: str) -> str:
    """Map free text onto one subject token, reversibly: unsafe characters become ``%XX`` (UTF-8).

    >>> encode_token("T02 Check confirmation.")
    'T02%20Check%20confirmation%2E'
    """
    if not text:
        raise EventLogError("an empty case id or activity name cannot be stored; fill it in the log")
    return "".join(c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in text)


def decode_token(token: str) -> str:
    """The original text of an :func:`encode_token` token (tokens without ``%XX`` come back unchanged).

    >>> decode_token("T02%20Check%20confirmation%2E")
    'T02 Check confirmation.'
    """
    if "%" not in token:
        return token
    return _ESCAPES.sub(lambda m: bytes.fromhex(m.group(0).replace("%", "")).decode(errors="replace"), token)
