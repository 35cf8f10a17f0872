"""Hostile input, generated: odd unicode names, data JSON cannot hold, and raw messages that someone else
published into the stream (not JSON, no or garbage eskit headers, odd subjects, up to max_payload).

Read, replay and analysis never crash on them: such an event comes back with ``data=None``, its bytes in
``raw`` and the reason in ``decode_error``, and nothing around it is lost. Each property reuses one store and
checks what it reads against what it just wrote (500 examples each, no deadline: the server is real).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import math
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
from conftest import unique
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import eskit
from eskit import EncodeError, Event, InvalidNameError
from eskit.dcb import AppendCondition, DCBStore, Query, QueryItem, TaggedEvent
from eskit.events import check_token

REUSED_STORE = [HealthCheck.function_scoped_fixture]  # on purpose: one store for all examples of a test
EXAMPLES = settings(max_examples=500, deadline=None, suppress_health_check=REUSED_STORE)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=6,
)
json_data = st.dictionaries(st.text(max_size=8), json_values, max_size=3)
names = st.text(min_size=1, max_size=16)  # any unicode: eskit accepts it or refuses it before sending
# what NATS accepts in a subject token (someone else's publisher does not go through eskit's checks)
raw_tokens = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters=".*> \t\r\n"),
    min_size=1,
    max_size=12,
)
header_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)
garbage_headers = st.dictionaries(
    st.sampled_from(["Eskit-Schema-Version", "Eskit-Occurred-At", "Eskit-Correlation-Id", "Eskit-Meta-x"]),
    header_text,
    max_size=4,
)


@given(aggregate_id=names, event_type=names, data=json_data)
@EXAMPLES
async def test_any_name_is_either_refused_before_sending_or_read_back_exactly(
    store: eskit.EventStore, aggregate_id: str, event_type: str, data: dict[str, Any]
) -> None:
    event = Event(event_type, data)
    before = await store.last_position()
    try:
        position = await store.append(aggregate_id, [event])
    except InvalidNameError as exc:
        assert "\n" not in str(exc)
        assert await store.last_position() == before, "a refused event was stored"
        return
    [stored] = await store.read(aggregate_id, after=position - 1)
    assert (stored.position, stored.aggregate_id, stored.type, stored.id) == (
        position,
        aggregate_id,
        event_type,
        event.id,
    )
    assert stored.data == data and stored.decode_error is None


unserialisable = st.one_of(
    st.sets(st.integers(), min_size=1, max_size=3),
    st.binary(min_size=1, max_size=8),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.timedeltas(),
    st.builds(object),
    st.dictionaries(st.tuples(st.integers()), st.integers(), min_size=1, max_size=2),
)


@given(good=json_data, bad=unserialisable, key=st.text(max_size=8), nested=st.booleans())
@EXAMPLES
async def test_data_json_cannot_hold_is_refused_with_encode_error_and_nothing_is_sent(
    store: eskit.EventStore, good: dict[str, Any], bad: object, key: str, nested: bool
) -> None:
    data = {**good, key: {"inner": [bad]} if nested else bad}
    before = await store.last_position()
    with pytest.raises(EncodeError) as info:
        await store.append("a-1", [Event("ok", {"n": 1}), Event("noted", data)])
    assert "\n" not in str(info.value) and "JSON" in str(info.value)
    assert await store.last_position() == before


raw_subjects = st.one_of(
    st.tuples(raw_tokens),
    st.tuples(raw_tokens, raw_tokens),
    st.tuples(raw_tokens, raw_tokens, raw_tokens),
)
small_payloads = (
    st.binary(max_size=300) | st.text(max_size=50).map(str.encode) | json_values.map(lambda v: json.dumps(v).encode())
)


@given(tokens=raw_subjects, payload=small_payloads, headers=st.none() | garbage_headers, data=json_data)
@EXAMPLES
async def test_raw_messages_never_break_read_replay_or_analysis_and_lose_nothing(
    store: eskit.EventStore,
    tokens: tuple[str, ...],
    payload: bytes,
    headers: dict[str, str] | None,
    data: dict[str, Any],
) -> None:
    raw_position = (await store.client.js.publish(".".join([store.name, *tokens]), payload, headers=headers)).seq
    await check_surfaced(store, tokens, payload, raw_position, data)


@given(size=st.integers(0, 2_000), fill=st.binary(min_size=1, max_size=4), aggregate=raw_tokens)
@example(size=0, fill=b"[", aggregate="deep")  # valid JSON's start, nested a million deep: RecursionError
@settings(max_examples=20, deadline=None, suppress_health_check=REUSED_STORE)
async def test_raw_messages_up_to_max_payload_are_surfaced_whole(
    store: eskit.EventStore, size: int, fill: bytes, aggregate: str
) -> None:
    payload = (fill * store.client.max_payload)[: store.client.max_payload - size]  # up to max_payload exactly
    tokens = (aggregate, "blob")
    raw_position = (await store.client.js.publish(f"{store.name}.{aggregate}.blob", payload)).seq
    await check_surfaced(store, tokens, payload, raw_position, {"after": "blob"})


async def check_surfaced(
    store: eskit.EventStore, tokens: tuple[str, ...], payload: bytes, raw_position: int, data: dict[str, Any]
) -> None:
    """The raw message at ``raw_position`` and an eskit event appended after it both come back whole."""
    eskit_event = Event("after_raw", data)
    eskit_position = await store.append("eskit-writer", [eskit_event])
    replayed = [e async for e in store.replay(after=raw_position - 1)]
    assert [e.position for e in replayed] == [raw_position, eskit_position]
    raw, mine = replayed
    assert raw.raw == payload and raw.subject == ".".join([store.name, *tokens])
    assert_decoded_or_explained(raw, payload)
    assert (mine.id, mine.data, mine.decode_error) == (eskit_event.id, data, None)
    if len(tokens) >= 2 and acceptable(tokens[0]):  # an aggregate eskit can name: a read finds it too
        [read] = await store.read(tokens[0], after=raw_position - 1, up_to=raw_position)
        assert read.raw == payload and read.decode_error == raw.decode_error
    frames = pytest.importorskip("eskit.frames")  # analysis: one row per event, even an undecodable one
    frame = await frames.to_dataframe(store, after=raw_position - 1)
    assert frame["position"].tolist() == [raw_position, eskit_position]


def acceptable(name: str) -> bool:
    try:
        check_token(name, "aggregate id")
    except InvalidNameError:
        return False
    return True


def assert_decoded_or_explained(event: eskit.RecordedEvent, payload: bytes) -> None:
    try:
        expected = json.loads(payload) if payload else None
    except (ValueError, RecursionError):
        assert event.data is None and event.decode_error, "undecodable payload without an explanation"
        assert "not JSON" in event.decode_error and "\n" not in event.decode_error
        return
    assert event.decode_error is None
    assert json.dumps(event.data, sort_keys=True) == json.dumps(expected, sort_keys=True)  # NaN-safe
    assert isinstance(event.timestamp, datetime) and event.timestamp.tzinfo is not None
    assert event.timestamp > datetime(2020, 1, 1, tzinfo=UTC)


class Created(eskit.Aggregate):
    on_unknown = "ignore"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.customer = ""

    @eskit.applies("created")
    def _created(self, data: dict[str, Any]) -> None:
        self.customer = data["customer"]


class CreatedRows(eskit.Projection):
    schema = "CREATE TABLE created (position INTEGER PRIMARY KEY)"

    @eskit.applies("created")
    def _created(self, db: Any, event: eskit.RecordedEvent) -> None:
        db.execute("INSERT INTO created VALUES (?)", (event.position,))


async def test_a_subject_with_extra_tokens_is_not_loaded_as_the_last_token_s_type(store: eskit.EventStore) -> None:
    mine = await store.append("1", [Event("created", {"customer": "ada"})])
    evil = (await store.client.js.publish(f"{store.name}.1.evil.created", b'{"customer": "mallory"}')).seq
    assert [e.type for e in await store.read("1")] == ["created", "evil.created"]  # one decoder, one answer:
    assert [e.type async for e in store.replay()] == ["created", "evil.created"]
    assert (await eskit.to_dataframe(store))["type"].tolist() == ["created", "evil.created"]
    order = await store.load(Created, "1")  # no handler for evil.created: ignored, as this class asks
    assert (order.customer, order.version, order.position) == ("ada", 2, evil)
    strict = type("Strict", (Created,), {"on_unknown": "raise"})
    with pytest.raises(eskit.UnknownEventError, match=r"'evil\.created'"):
        await store.load(strict, "1")
    view = CreatedRows(store)
    try:
        assert await view.run_until_caught_up() == 1
        assert view.db.execute("SELECT position FROM created").fetchall() == [(mine,)]
    finally:
        await view.close(delete_consumer=True)


# -- store names and the streams behind them (issue 11, item 6) -------------------------------------------------

FOLDING = [("straße", "strasse"), ("ﬀ", "ff"), ("ıd", "id"), ("σx", "ςx")]  # noqa: RUF001 (STRASSE, FF, ID, ΣX)


@pytest.mark.parametrize(("first", "second"), FOLDING)
async def test_store_names_that_fold_onto_one_stream_never_rewrite_or_delete_each_others_events(
    client: eskit.Client, first: str, second: str
) -> None:
    suffix = uuid.uuid4().hex[:8]
    opened: dict[str, eskit.EventStore] = {}
    try:
        for name in (first + suffix, second + suffix):
            try:
                opened[name] = await client.event_store(name)
            except eskit.InvalidNameError as exc:
                assert not name.isascii() and "\n" not in str(exc) and "ASCII" in str(exc)
                with pytest.raises(eskit.InvalidNameError):
                    await client.delete_store(name)
                continue
            await opened[name].append("1", [Event("created")])
        assert [n for n in opened if n.isascii()] == [n for n in (first + suffix, second + suffix) if n.isascii()]
        for store in opened.values():
            await store.append("1", [Event("again")])  # the other name's open took its subjects: StreamNotFound
            assert [e.type for e in await store.read("1")] == ["created", "again"]
    finally:
        for name in {first + suffix, second + suffix}:
            with contextlib.suppress(Exception):
                await client.js.delete_stream(name.upper())


async def test_a_stream_made_outside_eskit_with_other_subjects_is_neither_rewritten_nor_deleted(
    client: eskit.Client,
) -> None:
    name, elsewhere = unique("foreign"), unique("elsewhere")
    await client.js.add_stream(name=name.upper(), subjects=[f"{elsewhere}.>"])
    try:
        await client.js.publish(f"{elsewhere}.1", b"theirs")
        with pytest.raises(eskit.EventStoreError) as opening:
            await client.event_store(name)
        with pytest.raises(eskit.EventStoreError) as deleting:
            await client.delete_store(name)
        with pytest.raises(eskit.EventStoreError):
            await client.dcb_store(name)
        for message in (str(opening.value), str(deleting.value)):
            assert f"{elsewhere}.>" in message and f"{name}.>" in message and "\n" not in message
        info = await client.js.stream_info(name.upper())
        assert (info.config.subjects, info.state.messages) == ([f"{elsewhere}.>"], 1)
    finally:
        await client.js.delete_stream(name.upper())


async def test_opening_a_store_with_another_duplicate_window_says_what_differs_and_changes_nothing(
    client: eskit.Client,
) -> None:
    name = unique("window")
    try:
        await client.event_store(name, duplicate_window=60)
        await client.event_store(name)  # no setting asked for: the store's own
        with pytest.raises(eskit.EventStoreError) as info:
            await client.event_store(name, duplicate_window=30)
        assert "duplicate_window=60" in str(info.value) and "30" in str(info.value)
        assert (await client.js.stream_info(name.upper())).config.duplicate_window == 60
        await client.event_store(name, duplicate_window=30, reconfigure=True)
        assert (await client.js.stream_info(name.upper())).config.duplicate_window == 30
    finally:
        await client.delete_store(name)


async def test_opening_either_kind_of_store_with_other_replicas_says_what_differs_and_changes_nothing(
    client: eskit.Client,
) -> None:
    plain, dcb = unique("orders"), unique("courses")
    try:
        await client.event_store(plain)
        await client.dcb_store(dcb, tag_keys=["course"])
        for kind in (client.event_store, client.dcb_store):
            with pytest.raises(eskit.EventStoreError) as info:
                await kind(plain if kind == client.event_store else dcb, replicas=2)
            assert "replicas=1 (you asked for 2)" in str(info.value) and "reconfigure=True" in str(info.value)
        for name in (plain, dcb):
            assert (await client.js.stream_info(name.upper())).config.num_replicas == 1
    finally:
        await client.delete_store(plain)
        await client.delete_store(dcb)


async def test_an_event_store_and_a_dcb_store_of_one_name_refuse_to_open_each_others_stream(
    client: eskit.Client,
) -> None:
    dcb_name, plain_name = unique("courses"), unique("orders")
    try:
        await client.dcb_store(dcb_name, tag_keys=["course"])
        with pytest.raises(eskit.EventStoreError, match="dcb_store"):
            await client.event_store(dcb_name)
        plain = await client.event_store(plain_name)
        await plain.append("1", [Event("created")])
        with pytest.raises(eskit.EventStoreError, match="event_store"):
            await client.dcb_store(plain_name)
        kept = (await client.js.stream_info(dcb_name.upper())).config.metadata or {}
        assert kept.get("eskit_dcb_tag_keys") == "course"
        assert "eskit_dcb_tag_keys" not in ((await client.js.stream_info(plain_name.upper())).config.metadata or {})
    finally:
        await client.delete_store(dcb_name)
        await client.delete_store(plain_name)


# -- input the envelope and the codec refuse, in one line, before anything is sent (issue 11, item 7) -------------


@pytest.fixture
async def courses(client: eskit.Client) -> AsyncIterator[DCBStore]:
    name = unique("courses")
    yield await client.dcb_store(name, tag_keys=["course"])
    await client.delete_store(name)


def nested(depth: int) -> dict[str, Any]:
    data: dict[str, Any] = {}
    inner = data
    for _ in range(depth):
        inner["a"] = {}
        inner = inner["a"]
    return data


async def refused(store: eskit.EventStore | DCBStore, append: Awaitable[object]) -> eskit.ValidationError:
    """``append`` raises one line of ValidationError and nothing is stored."""
    before = await store.last_position() if isinstance(store, eskit.EventStore) else await store.head()
    with pytest.raises(eskit.ValidationError) as info:
        await append
    after = await store.last_position() if isinstance(store, eskit.EventStore) else await store.head()
    assert "\n" not in str(info.value) and after == before, "a refused append stored something"
    return info.value


async def test_data_nested_100000_deep_is_an_encode_error_not_a_recursion_error_in_both_stores(
    store: eskit.EventStore, courses: DCBStore
) -> None:
    deep = nested(100_000)
    error = await refused(store, store.append("1", [Event("deep", deep)]))
    assert isinstance(error, EncodeError) and "nested" in str(error)
    error = await refused(courses, courses.append([TaggedEvent("Deep", deep, ["course:c1"])]))
    assert isinstance(error, EncodeError) and "nested" in str(error)


BAD_EVENTS = {
    "int id": Event("x", id=5),  # type: ignore[arg-type]
    "empty id": Event("x", id=""),
    "blank id": Event("x", id="   "),
    "id with surrounding spaces": Event("x", id=" e-1 "),
    "id with a line break": Event("x", id="e\r\n1"),
    "int correlation id": Event("x", correlation_id=7),  # type: ignore[arg-type]
    "bytes causation id": Event("x", causation_id=b"c"),  # type: ignore[arg-type]
    "int metadata key": Event("x", metadata={1: "a"}),  # type: ignore[dict-item]
    "str occurred_at": Event("x", occurred_at="2024-05-06T07:08:09Z"),  # type: ignore[arg-type]
    "str schema_version": Event("x", schema_version="2"),  # type: ignore[arg-type]
    "colliding keys": Event("x", {1: "a", "1": "b"}),
    "none key": Event("x", {"lines": [{None: 1}]}),
}


@pytest.mark.parametrize("event", BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
async def test_an_envelope_or_data_that_headers_or_json_would_change_is_refused_by_append_and_append_many(
    store: eskit.EventStore, event: Event
) -> None:
    for expected in (None, 0):
        await refused(store, store.append("1", [event], expected_position=expected))
        await refused(store, store.append_many([("1", [Event("ok"), event], expected)]))
        await refused(store, store.append_many([("2", [Event("ok")], None), ("1", [event], expected)]))


async def test_an_id_with_surrounding_spaces_is_one_rule_for_append_and_append_many(store: eskit.EventStore) -> None:
    error = await refused(store, store.append("1", [Event("x", id=" e-1 ")]))
    assert "whitespace" in str(error)
    assert str(await refused(store, store.append_many([("1", [Event("x", id=" e-1 ")], None)]))) == str(error)


NOT_EVENT_LISTS = {
    "dict": {"created": Event("created")},
    "generator": (Event("created") for _ in range(2)),
    "str": "created",
    "list of dicts": [{"type": "created"}],
    "none": None,
}


@pytest.mark.parametrize("events", NOT_EVENT_LISTS.values(), ids=NOT_EVENT_LISTS.keys())
async def test_events_that_are_not_a_list_of_events_are_refused_in_both_stores(
    store: eskit.EventStore, courses: DCBStore, events: object
) -> None:
    await refused(store, store.append("1", events))  # type: ignore[arg-type]
    await refused(store, store.append_many([("1", events, None)]))  # type: ignore[list-item]
    await refused(courses, courses.append(events))  # type: ignore[arg-type]


@pytest.mark.parametrize("position", ["abc", 2**64, 2**63, -1, 1.5, True], ids=repr)
async def test_an_expected_position_that_is_no_stream_position_is_refused_on_new_and_existing_aggregates(
    store: eskit.EventStore, position: object
) -> None:
    await refused(store, store.append("new", [Event("created")], expected_position=position))  # type: ignore[arg-type]
    await store.append("old", [Event("created")])
    error = await refused(store, store.append("old", [Event("x")], expected_position=position))  # type: ignore[arg-type]
    assert "expected_position" in str(error) and str(2**63 - 1) in str(error)
    with pytest.raises(eskit.ValidationError):
        AppendCondition(Query(), after=position)  # type: ignore[arg-type]


# -- data that JSON cannot hold as it is: a documented rule, or a line that says what to pass (issue 15, item 5) --


class Colour(enum.Enum):
    RED = "red"


class Size(enum.IntEnum):
    LARGE = 3


@dataclass
class Line:
    sku: str
    due: date


RICH = {
    "at": datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
    "day": date(2024, 5, 6),
    "clock": time(7, 8, 9),
    "price": Decimal("12.50"),
    "order": uuid.UUID("1b4e28ba-2fa1-11d2-883f-0016d3cca427"),
    "colour": Colour.RED,
    "size": Size.LARGE,
    "line": Line("A1", date(2024, 5, 7)),
    "pair": (1, 2),
}
STORED = {
    "at": "2024-05-06T07:08:09.123456+00:00",
    "day": "2024-05-06",
    "clock": "07:08:09",
    "price": "12.50",
    "order": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
    "colour": "red",
    "size": 3,
    "line": {"sku": "A1", "due": "2024-05-07"},
    "pair": [1, 2],
}


async def test_dates_decimals_uuids_enums_and_dataclasses_are_stored_by_the_documented_rule_in_both_stores(
    store: eskit.EventStore, courses: DCBStore
) -> None:
    await store.append("1", [Event("rich", RICH)])
    assert [e.data for e in await store.read("1")] == [STORED]
    await courses.append([TaggedEvent("Rich", RICH, ["course:c1"])])
    assert [e.data for e in await courses.read()] == [STORED]
    assert Decimal(STORED["price"]) == RICH["price"] and datetime.fromisoformat(STORED["at"]) == RICH["at"]


UNCONVERTED = {
    "set": ({1, 2}, "list"),
    "bytes": (b"\x00", "base64"),
    "timedelta": (timedelta(seconds=3), "total_seconds"),
}


@pytest.mark.parametrize(("value", "advice"), UNCONVERTED.values(), ids=UNCONVERTED.keys())
async def test_data_without_a_json_rule_is_refused_with_a_line_that_says_what_to_pass(
    store: eskit.EventStore, courses: DCBStore, value: object, advice: str
) -> None:
    for error in (
        await refused(store, store.append("1", [Event("x", {"v": [value]})])),
        await refused(courses, courses.append([TaggedEvent("X", {"v": value}, ["course:c1"])])),
    ):
        assert isinstance(error, EncodeError) and advice in str(error) and type(value).__name__ in str(error)


def test_the_codec_and_store_name_doctests_pass() -> None:
    import doctest

    import eskit.codec
    import eskit.streams

    for module in (eskit.codec, eskit.streams):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


@pytest.mark.parametrize("stored", ["9" * 30, "-" + "9" * 30, str(2**63)])
async def test_a_stored_schema_version_beyond_64_bits_reads_as_version_1_and_breaks_no_dataframe(
    store: eskit.EventStore, stored: str
) -> None:
    await store.append("a", [Event("a", {"i": 0})])
    headers = {"Eskit-Schema-Version": stored, "Nats-Msg-Id": uuid.uuid4().hex}  # someone else's publisher
    await store.client.js.publish(f"{store.name}.a.a", b'{"i": 1}', headers=headers)
    await store.append("a", [Event("a", {"i": 2}, schema_version=3)])
    assert [e.schema_version for e in await store.read("a")] == [1, 1, 3]
    for df in (await eskit.to_dataframe(store), await eskit.to_dataframe(store, after=1)):
        assert df["schema_version"].tolist()[-2:] == [1, 3]


CARELESS = {
    "read after='3'": lambda s, c: s.read("a", after="3"),
    "read after=1.5": lambda s, c: s.read("a", after=1.5),
    "read after=2**64": lambda s, c: s.read("a", after=2**64),
    "replay after='3'": lambda s, c: anext(s.replay(after="3")),
    "replay subjects=[5]": lambda s, c: anext(s.replay(subjects=[5])),
    "replay subjects=one str": lambda s, c: anext(s.replay(subjects=f"{s.name}.a.>")),
    "load('Order')": lambda s, c: s.load("Order", "a"),
    "load(dict)": lambda s, c: s.load(dict, "a"),
    "append_many 2-tuples": lambda s, c: s.append_many([("a", [Event("a")])]),
    "append_many None": lambda s, c: s.append_many(None),
    "schema_version=0": lambda s, c: s.append("a", [Event("a", schema_version=0)]),
    "schema_version=2**70": lambda s, c: s.append("a", [Event("a", schema_version=2**70)]),
    "to_dataframe after='3'": lambda s, c: eskit.to_dataframe(s, after="3"),
    "to_dataframe('orders')": lambda s, c: eskit.to_dataframe("orders"),
    "duplicate_window='2'": lambda s, c: c.event_store(unique("careless"), duplicate_window="2"),  # was a 1 GB string
    "replicas='1'": lambda s, c: c.event_store(unique("careless"), replicas="1"),
    "dcb tag_keys=[5]": lambda s, c: c.dcb_store(unique("careless"), tag_keys=[5]),
}


@pytest.mark.parametrize("call", CARELESS)
async def test_careless_arguments_are_one_line_eskit_errors_not_raw_type_errors_and_store_nothing(
    store: eskit.EventStore, call: str
) -> None:
    await store.append("a", [Event("a")])
    with pytest.raises(eskit.ValidationError) as refused:
        await CARELESS[call](store, store.client)
    assert "\n" not in str(refused.value)
    assert await store.last_position() == 1
    assert not [i for i in await store.client.js.streams_info() if i.config.name.startswith("CARELESS")]


@pytest.mark.parametrize(
    "options",
    [{"snapshots": True}, {"snapshots": "every 5"}, {"cache": True}, {"upcasters": {"a": 1}}],
    ids=["snapshots=True", "snapshots=str", "cache=True", "upcasters=dict"],
)
async def test_an_event_store_opened_with_options_of_the_wrong_kind_is_refused_before_its_stream_exists(
    client: eskit.Client, options: dict[str, Any]
) -> None:
    name = unique("careless")
    with pytest.raises(eskit.ValidationError, match="event_store takes None or"):
        await client.event_store(name, **options)  # was created, then every load raised AttributeError
    assert name.upper() not in [i.config.name for i in await client.js.streams_info()]


@pytest.mark.parametrize("policy", [{"every": "5"}, {"every": 0}, {"slower_than": "0.1"}, {"slower_than": -1.0}])
def test_a_snapshot_policy_of_the_wrong_kind_or_sign_is_refused_when_made_not_at_each_load(
    policy: dict[str, Any],
) -> None:
    with pytest.raises(eskit.ValidationError, match="SnapshotPolicy"):  # was a TypeError at every load
        eskit.SnapshotPolicy(**policy)


DCB_CARELESS = {
    "read('course:c1')": lambda d, q: d.read("course:c1"),
    "read(after='3')": lambda d, q: d.read(q, after="3"),
    "read(limit='3')": lambda d, q: d.read(q, limit="3"),
    "last('course:c1')": lambda d, q: d.last("course:c1"),
    "subscribe(after='3')": lambda d, q: d.subscribe(q, after="3"),
    "append(events, query)": lambda d, q: d.append([TaggedEvent("E", {}, ["course:c1"])], q),
    "AppendCondition([query])": lambda d, q: d.append([TaggedEvent("E", {}, ["course:c1"])], AppendCondition([q])),
    "Query(item)": lambda d, q: d.read(Query(q.items[0])),
    "AggregateCache('5')": lambda d, q: asyncio.sleep(0, eskit.AggregateCache("5")),
    "schema_version='2'": lambda d, q: d.append([TaggedEvent("E", {}, ["course:c1"], schema_version="2")]),
    "schema_version=0": lambda d, q: d.append([TaggedEvent("E", {}, ["course:c1"], schema_version=0)]),
    "schema_version=2**70": lambda d, q: d.append([TaggedEvent("E", {}, ["course:c1"], schema_version=2**70)]),
}


@pytest.mark.parametrize("call", DCB_CARELESS)
async def test_careless_dcb_and_cache_arguments_are_one_line_eskit_errors_and_store_nothing(
    client: eskit.Client, call: str
) -> None:
    name = unique("careless")
    courses = await client.dcb_store(name, tag_keys=("course",))
    query = Query([QueryItem(types=["E"], tags=["course:c1"])])
    try:
        with pytest.raises(eskit.ValidationError) as refused:  # raw AttributeError/TypeError before
            await DCB_CARELESS[call](courses, query)
        assert "\n" not in str(refused.value)
        assert (await courses.read()).head == 0  # nothing stored
    finally:
        await client.delete_store(name)


class _Seen(eskit.Projection):
    schema = "CREATE TABLE seen (position INTEGER PRIMARY KEY)"

    @eskit.applies("a")
    def _a(self, db: Any, event: eskit.RecordedEvent) -> None:
        db.execute("INSERT INTO seen VALUES (?)", (event.position,))


@pytest.mark.parametrize(
    "options", [{"db": 5}, {"batch_size": "10"}, {"batch_size": 0}, {"max_wait": "1"}, {"max_attempts": 0}]
)
async def test_a_projection_with_options_of_the_wrong_kind_is_refused_when_made_not_later_or_by_the_server(
    store: eskit.EventStore, options: dict[str, Any], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # db=5 made a database file named '5' here
    with pytest.raises(eskit.ValidationError, match=next(iter(options))):
        _Seen(store, **options)
    assert list(tmp_path.iterdir()) == []
