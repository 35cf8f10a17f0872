"""Unit tests of the event envelope: name validation, the JSON codec, decoding and timestamps (no server)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eskit import EncodeError, Event, InvalidNameError, ValidationError
from eskit.events import (
    CAUSATION_ID,
    CORRELATION_ID,
    MAX_TOKEN_BYTES,
    META_PREFIX,
    MSG_ID,
    OCCURRED_AT,
    SCHEMA_VERSION,
    check_token,
    decode,
    encode_data,
    encode_headers,
    parse_time,
    subject,
)

# -- check_token -------------------------------------------------------------------------------------------

INVALID_TOKENS = {
    "empty": "",
    "dot": "a.b",
    "only a dot": ".",
    "star": "*",
    "star inside": "a*b",
    "gt": ">",
    "gt inside": "a>",
    "space": "a b",
    "tab": "a\tb",
    "newline": "a\nb",
    "carriage return": "a\rb",
    "nul": "a\x00b",
    "bell": "\x07",
    "delete": "a\x7fb",
    "no-break space": "a\u00a0b",
    "zero-width space": "a\u200bb",
    "line separator": "a\u2028b",
    "over-long ascii": "a" * (MAX_TOKEN_BYTES + 1),
    "over-long in bytes, not chars": "ë" * 128,
}


@pytest.mark.parametrize("token", INVALID_TOKENS.values(), ids=INVALID_TOKENS.keys())
def test_check_token_rejects_names_that_are_not_one_subject_token(token: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        check_token(token, "aggregate id")
    assert "aggregate id" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", [None, 42, b"order-1", ["a"], 1.5])
def test_check_token_rejects_values_that_are_not_str(value: object) -> None:
    with pytest.raises(InvalidNameError, match="must be a str"):
        check_token(value, "event type")


@pytest.mark.parametrize("token", ["order-1", "zoë-1", "注文_7", "A_b-C", "1", "$x", "a" * MAX_TOKEN_BYTES])
def test_check_token_accepts_and_returns_valid_names(token: str) -> None:
    assert check_token(token, "aggregate id") == token


def test_invalid_name_error_is_a_validation_error_and_a_value_error() -> None:
    with pytest.raises(ValidationError):
        check_token("a.b", "x")
    with pytest.raises(ValueError):
        check_token("a.b", "x")


@settings(max_examples=500, database=None, deadline=None)
@given(st.text(max_size=300))
def test_any_text_either_passes_check_token_or_raises_invalid_name_error(text: str) -> None:
    try:
        result = check_token(text, "aggregate id")
    except InvalidNameError:
        return
    assert result == text
    assert text and len(text.encode()) <= MAX_TOKEN_BYTES
    assert not any(c in ".*>" or c.isspace() for c in text)
    assert subject("orders", text, "created").split(".") == ["orders", text, "created"]


# -- encode_data / encode_headers ---------------------------------------------------------------------------

UNSERIALISABLE: dict[str, Any] = {
    "set": {"tags": {1, 2}},
    "object": {"x": object()},
    "bytes": {"blob": b"\x00\x01"},
    "timedelta": {"wait": timedelta(seconds=3)},
    "tuple key": {(1, 2): "pair"},
    "nan": {"price": math.nan},
    "infinity": {"price": math.inf},
    "nested nan": {"lines": [{"qty": 1, "price": -math.inf}]},
}


@pytest.mark.parametrize("data", UNSERIALISABLE.values(), ids=UNSERIALISABLE.keys())
def test_encode_data_rejects_data_that_is_not_json_with_encode_error(data: dict[str, Any]) -> None:
    with pytest.raises(EncodeError) as info:
        encode_data(Event("item_added", data))
    assert "item_added" in str(info.value)
    assert isinstance(info.value, ValidationError)


def test_encode_data_is_compact_utf8_json() -> None:
    assert (
        encode_data(Event("created", {"name": "zoë", "qty": [1, 2]})) == '{"name":"zoë","qty":[1,2]}'.encode()
    )


def test_encode_headers_carry_the_envelope() -> None:
    at = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    event = Event("created", id="e1", schema_version=3, occurred_at=at, correlation_id="c1",
                  causation_id="k1", metadata={"user": "alice"})  # fmt: skip
    assert encode_headers(event) == {
        MSG_ID: "e1",
        SCHEMA_VERSION: "3",
        OCCURRED_AT: at.isoformat(),
        CORRELATION_ID: "c1",
        CAUSATION_ID: "k1",
        META_PREFIX + "user": "alice",
    }


def test_each_new_event_gets_its_own_id() -> None:
    ids = {Event("created").id for _ in range(100)}
    assert len(ids) == 100


# -- decode --------------------------------------------------------------------------------------------------

STAMP = "2024-05-06T07:08:09.123456789Z"


@pytest.mark.parametrize(
    "raw", [b"not json", b"\xff\xfe\x00", b"{", b'{"a": 1'], ids=["text", "binary", "brace", "cut"]
)
def test_decode_never_raises_on_a_payload_that_is_not_json(raw: bytes) -> None:
    event = decode(7, "orders.1.raw", {"Nats-Time-Stamp": STAMP}, raw)
    assert event.decode_error is not None and "not JSON" in event.decode_error
    assert not event.is_decodable
    assert (event.data, event.raw, event.position, event.aggregate_id, event.type) == (
        None,
        raw,
        7,
        "1",
        "raw",
    )


def test_decode_of_a_message_without_eskit_headers_uses_defaults() -> None:
    event = decode(3, "orders.9", {}, b"{}")
    assert (event.aggregate_id, event.type, event.id, event.schema_version) == ("9", "", None, 1)
    assert event.timestamp.tzinfo is not None
    assert event.metadata == {} and event.is_decodable


def test_decode_tolerates_a_bad_schema_version_header() -> None:
    assert decode(1, "orders.1.created", {SCHEMA_VERSION: "two"}, b"{}").schema_version == 1


def test_decode_reads_the_envelope_back_from_headers() -> None:
    at = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    event = Event("created", {"a": 1}, schema_version=2, occurred_at=at, correlation_id="c",
                  causation_id="k", metadata={"user": "alice"})  # fmt: skip
    headers = {**encode_headers(event), "Nats-Time-Stamp": STAMP}
    recorded = decode(5, "orders.1.created", headers, encode_data(event))
    assert (recorded.id, recorded.data, recorded.schema_version) == (event.id, {"a": 1}, 2)
    assert (recorded.correlation_id, recorded.causation_id, recorded.metadata) == (
        "c",
        "k",
        {"user": "alice"},
    )
    assert recorded.occurred_at == at
    assert recorded.timestamp == datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


# -- parse_time ----------------------------------------------------------------------------------------------


def at(microsecond: int = 0, hours: int = 0) -> datetime:
    """2024-05-06 07:08:09 with the given microseconds, at a UTC offset of ``hours``."""
    return datetime(2024, 5, 6, 7, 8, 9, microsecond, tzinfo=timezone(timedelta(hours=hours)))


TIMES = {
    "nanoseconds with Z": ("2024-05-06T07:08:09.123456789Z", at(123456)),
    "no fraction with Z": ("2024-05-06T07:08:09Z", at()),
    "one digit": ("2024-05-06T07:08:09.5Z", at(500000)),
    "three digits": ("2024-05-06T07:08:09.123Z", at(123000)),
    "no fraction with offset": ("2024-05-06T07:08:09+02:00", at(hours=2)),
}


@pytest.mark.parametrize(("text", "expected"), TIMES.values(), ids=TIMES.keys())
def test_parse_time_reads_rfc3339_into_a_tz_aware_datetime(text: str, expected: datetime) -> None:
    parsed = parse_time(text)
    assert parsed is not None and parsed.tzinfo is not None
    assert parsed == expected


OFFSET_TIMES = {
    "microseconds with +00:00 (what isoformat() writes)": ("2024-05-06T07:08:09.123456+00:00", at(123456)),
    "nanoseconds with -05:00": ("2024-05-06T07:08:09.123456789-05:00", at(123456, hours=-5)),
    "one digit with +02:00": ("2024-05-06T07:08:09.5+02:00", at(500000, hours=2)),
}


@pytest.mark.parametrize(("text", "expected"), OFFSET_TIMES.values(), ids=OFFSET_TIMES.keys())
def test_parse_time_keeps_a_numeric_offset_after_a_fraction(text: str, expected: datetime) -> None:
    parsed = parse_time(text)
    assert parsed is not None and parsed.tzinfo is not None, f"{text!r} parsed as {parsed!r}"
    assert parsed == expected


def test_parse_time_reads_back_what_event_occurred_at_writes() -> None:
    at = datetime.now(UTC).replace(microsecond=654321)
    assert parse_time(Event("created", occurred_at=at).occurred_at.isoformat()) == at


@pytest.mark.parametrize("text", [None, "", "yesterday", "2024-13-01T00:00:00Z"])
def test_parse_time_returns_none_for_missing_or_garbage(text: str | None) -> None:
    assert parse_time(text) is None
