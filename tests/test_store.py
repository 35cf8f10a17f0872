"""EventStore against the real server: round trips, reads, replays, concurrency, dedup, atomic batches."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from datetime import UTC, datetime, timedelta

import nats
import pytest
from conftest import unique

import eskit
from eskit import Event, RecordedEvent
from eskit._reader import READ_PAGE
from eskit.events import encode_data, encode_headers
from eskit.store import MAX_BATCH


async def message_count(store: eskit.EventStore) -> int:
    info = await store.client.js.stream_info(store.stream)
    return int(info.state.messages)


async def replayed(store: eskit.EventStore, **kwargs: object) -> list[RecordedEvent]:
    return [e async for e in store.replay(**kwargs)]  # type: ignore[arg-type]


async def wait_for_position(store: eskit.EventStore, position: int, timeout: float = 5.0) -> None:
    """Bounded poll until the stream's last position reaches ``position``."""
    deadline = time.monotonic() + timeout
    while await store.last_position() < position:
        assert time.monotonic() < deadline, f"stream {store.stream} never reached position {position}"
        await asyncio.sleep(0.01)


# -- round trip ----------------------------------------------------------------------------------------------


async def test_append_then_read_round_trips_data_and_metadata(store: eskit.EventStore) -> None:
    event = Event(
        "created", {"customer": "zoë", "lines": [{"sku": "A1", "qty": 2}], "note": None},
        schema_version=3, correlation_id="req-7", causation_id="cmd-9",
        metadata={"user": "alice", "tenant": "t-1"},
    )  # fmt: skip
    before = datetime.now(UTC)
    position = await store.append("o-1", [event])
    [recorded] = await store.read("o-1")
    assert (recorded.position, recorded.subject) == (position, f"{store.name}.o-1.created")
    assert (recorded.aggregate_id, recorded.type, recorded.data) == ("o-1", "created", event.data)
    assert (recorded.id, recorded.schema_version) == (event.id, 3)
    assert (recorded.correlation_id, recorded.causation_id) == ("req-7", "cmd-9")
    assert recorded.metadata == {"user": "alice", "tenant": "t-1"}
    assert recorded.is_decodable and recorded.raw == encode_data(event)
    assert recorded.timestamp.tzinfo is not None
    assert before - timedelta(seconds=5) <= recorded.timestamp <= datetime.now(UTC) + timedelta(seconds=5)


async def test_occurred_at_survives_the_round_trip_as_an_aware_datetime(store: eskit.EventStore) -> None:
    at = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    await store.append("o-1", [Event("created", occurred_at=at), Event("shipped")])
    first, second = await store.read("o-1")
    assert first.occurred_at == at, f"stored {at.isoformat()!r}, read back {first.occurred_at!r}"
    assert second.occurred_at is not None and second.occurred_at.tzinfo is not None


async def test_append_returns_the_position_of_the_last_event(store: eskit.EventStore) -> None:
    first = await store.append("a", [Event("created")])
    last = await store.append("a", [Event("item_added"), Event("item_added"), Event("paid")])
    other = await store.append("b", [Event("created")])
    assert (first, last, other) == (1, 4, 5)
    assert [e.position for e in await store.read("a")] == [1, 2, 3, 4]


# -- reading one aggregate -----------------------------------------------------------------------------------


async def test_read_returns_only_the_aggregates_events_in_order(store: eskit.EventStore) -> None:
    for n in range(3):
        await store.append("a", [Event("step", {"n": n})])
        await store.append("b", [Event("step", {"n": -n})])
    assert [e.data["n"] for e in await store.read("a")] == [0, 1, 2]
    assert {e.aggregate_id for e in await store.read("b")} == {"b"}
    assert await store.read("nobody") == []


async def test_read_after_and_up_to_a_position_bound_the_history(store: eskit.EventStore) -> None:
    positions = [await store.append("a", [Event("step", {"n": n})]) for n in range(5)]
    await store.append("b", [Event("noise")])
    assert [e.position for e in await store.read("a", after=positions[1])] == positions[2:]
    assert [e.position for e in await store.read("a", up_to=positions[2])] == positions[:3]
    assert [e.position for e in await store.read("a", after=positions[0], up_to=positions[3])] == positions[
        1:4
    ]
    assert await store.read("a", after=positions[3], up_to=positions[3]) == []
    assert await store.read("a", after=positions[-1]) == []


async def test_read_up_to_a_time_returns_what_was_stored_by_then(store: eskit.EventStore) -> None:
    for n in range(4):
        await store.append("a", [Event("step", {"n": n})])
    history = await store.read("a")
    cut = history[1].timestamp
    assert [e.data["n"] for e in await store.read("a", up_to=cut)] == [0, 1]
    naive_local = cut.astimezone().replace(tzinfo=None)
    assert [e.data["n"] for e in await store.read("a", up_to=naive_local)] == [0, 1]
    assert await store.read("a", up_to=history[0].timestamp - timedelta(seconds=1)) == []


# -- replay --------------------------------------------------------------------------------------------------


async def test_replay_returns_the_whole_stream_in_order(store: eskit.EventStore) -> None:
    for n, agg in enumerate(["a", "b", "a", "c", "b"]):
        await store.append(agg, [Event("step", {"n": n})])
    events = await replayed(store)
    assert [e.position for e in events] == [1, 2, 3, 4, 5]
    assert [(e.aggregate_id, e.data["n"]) for e in events] == [
        ("a", 0),
        ("b", 1),
        ("a", 2),
        ("c", 3),
        ("b", 4),
    ]
    assert [e.position for e in await replayed(store, after=3)] == [4, 5]
    assert [e.position for e in await replayed(store, up_to=2)] == [1, 2]


async def test_replay_with_one_subject_filter_returns_only_matching_events(store: eskit.EventStore) -> None:
    await store.append("a", [Event("created"), Event("shipped")])
    await store.append("b", [Event("created")])
    await store.append("b", [Event("shipped")])
    shipped = await replayed(store, subjects=[f"{store.name}.*.shipped"])
    assert [(e.aggregate_id, e.position) for e in shipped] == [("a", 2), ("b", 4)]


async def test_replay_with_several_filters_merges_them_in_order_without_duplicates(
    store: eskit.EventStore,
) -> None:
    await store.append("a", [Event("created"), Event("item_added")])  # 1, 2
    await store.append("b", [Event("created"), Event("shipped")])  # 3, 4
    await store.append("a", [Event("shipped")])  # 5
    await store.append("c", [Event("cancelled")])  # 6
    name = store.name
    merged = await replayed(store, subjects=[f"{name}.*.shipped", f"{name}.*.created"])
    assert [e.position for e in merged] == [1, 3, 4, 5]
    overlapping = await replayed(store, subjects=[f"{name}.a.>", f"{name}.*.shipped", f"{name}.>"])
    assert [e.position for e in overlapping] == [1, 2, 3, 4, 5, 6]
    after = await replayed(store, subjects=[f"{name}.a.>", f"{name}.*.shipped"], after=2)
    assert [e.position for e in after] == [4, 5]


async def test_replay_rejects_a_filter_outside_the_store(store: eskit.EventStore) -> None:
    with pytest.raises(eskit.ValidationError, match="outside store"):
        await replayed(store, subjects=["elsewhere.>"])


# -- paging --------------------------------------------------------------------------------------------------


async def test_a_long_history_is_read_back_complete_and_in_order_across_pages(
    store: eskit.EventStore,
) -> None:
    total = 5 * MAX_BATCH
    assert total > 2 * READ_PAGE  # several Direct Get pages
    for start in range(0, total, MAX_BATCH):
        await store.append("long", [Event("step", {"n": n}) for n in range(start, start + MAX_BATCH)])
    await store.append("other", [Event("noise")])
    history = await store.read("long")
    assert [e.data["n"] for e in history] == list(range(total))
    assert [e.position for e in history] == list(range(1, total + 1))
    window = await store.read("long", after=1500, up_to=4500)
    assert [e.position for e in window] == list(range(1501, 4501))
    assert len(await replayed(store)) == total + 1


# -- optimistic concurrency ----------------------------------------------------------------------------------


async def test_expected_position_zero_creates_a_new_aggregate(store: eskit.EventStore) -> None:
    position = await store.append("new", [Event("created")], expected_position=0)
    assert [e.position for e in await store.read("new")] == [position]


async def test_expected_position_zero_on_an_existing_aggregate_raises_concurrency_error(
    store: eskit.EventStore,
) -> None:
    await store.append("other", [Event("created")])
    actual = await store.append("a", [Event("created")])
    with pytest.raises(eskit.ConcurrencyError) as info:
        await store.append("a", [Event("created")], expected_position=0)
    assert (info.value.expected, info.value.actual) == (0, actual)
    assert "expected position 0" in str(info.value) and f"at {actual}" in str(info.value)
    assert await message_count(store) == 2


async def test_a_stale_expected_position_raises_concurrency_error(store: eskit.EventStore) -> None:
    seen = await store.append("a", [Event("created")])
    actual = await store.append("a", [Event("item_added")])
    with pytest.raises(eskit.ConcurrencyError, match=rf"expected position {seen}\b.*\bat {actual}\b"):
        await store.append("a", [Event("paid")], expected_position=seen)
    assert await store.append("a", [Event("paid")], expected_position=actual) == actual + 1


async def test_two_concurrent_writers_exactly_one_wins(store: eskit.EventStore) -> None:
    seen = await store.append("a", [Event("created")], expected_position=0)
    mine, theirs = Event("item_added", {"by": "A"}), Event("cancelled", {"by": "B"})
    results = await asyncio.gather(
        store.append("a", [mine], expected_position=seen),
        store.append("a", [theirs], expected_position=seen),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, int)]
    losers = [r for r in results if isinstance(r, eskit.ConcurrencyError)]
    assert (len(winners), len(losers)) == (1, 1), results
    history = await store.read("a")
    assert [e.position for e in history] == [seen, winners[0]]
    assert losers[0].actual == winners[0]


async def test_many_concurrent_writers_of_multi_event_decisions_exactly_one_wins(
    store: eskit.EventStore,
) -> None:
    seen = await store.append("a", [Event("created")], expected_position=0)
    decisions = [[Event("item_added", {"by": w}), Event("paid", {"by": w})] for w in range(8)]
    results = await asyncio.gather(
        *(store.append("a", d, expected_position=seen) for d in decisions), return_exceptions=True
    )
    assert sum(isinstance(r, int) for r in results) == 1, results
    assert sum(isinstance(r, eskit.ConcurrencyError) for r in results) == 7, results
    history = await store.read("a")
    assert len(history) == 3 and history[1].data["by"] == history[2].data["by"]


# -- dedup on retry ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 3], ids=["single event", "batch"])
@pytest.mark.parametrize("check", [False, True], ids=["unchecked", "expected_position"])
async def test_appending_the_same_events_again_stores_nothing_new(
    store: eskit.EventStore, count: int, check: bool
) -> None:
    await store.append("a", [Event("created")])
    expected = await store.last_position("a") if check else None
    events = [Event("item_added", {"n": n}) for n in range(count)]
    position = await store.append("a", events, expected_position=expected)
    stored = await message_count(store)
    assert await store.append("a", events, expected_position=expected) == position
    assert await message_count(store) == stored
    assert [e.id for e in await store.read("a", after=1)] == [e.id for e in events]


@pytest.mark.parametrize("count", [1, 3], ids=["single event", "batch"])
async def test_a_retry_after_someone_else_appended_still_returns_the_original_position(
    store: eskit.EventStore, count: int
) -> None:
    seen = await store.append("a", [Event("created")], expected_position=0)
    events = [Event("item_added", {"n": n}) for n in range(count)]
    position = await store.append("a", events, expected_position=seen)
    await store.append("a", [Event("shipped")], expected_position=position)
    stored = await message_count(store)
    assert await store.append("a", events, expected_position=seen) == position
    assert await message_count(store) == stored


@pytest.mark.parametrize("count", [1, 3], ids=["single event", "batch"])
async def test_appending_stored_events_to_another_aggregate_raises_duplicate_event_error(
    store: eskit.EventStore, count: int
) -> None:
    events = [Event("created", {"n": n}) for n in range(count)]
    await store.append("a", events)
    with pytest.raises(eskit.DuplicateEventError):
        await store.append("b", events)
    assert await store.read("b") == []


# -- atomic batches and validation before sending ----------------------------------------------------------


async def test_a_batch_whose_concurrency_check_fails_stores_nothing(store: eskit.EventStore) -> None:
    seen = await store.append("a", [Event("created")])
    await store.append("a", [Event("cancelled")])
    stored = await message_count(store)
    with pytest.raises(eskit.ConcurrencyError):
        await store.append(
            "a", [Event("item_added"), Event("item_added"), Event("paid")], expected_position=seen
        )
    assert await message_count(store) == stored
    assert [e.type for e in await store.read("a")] == ["created", "cancelled"]


async def test_more_than_the_batch_limit_in_one_append_raises_before_sending(store: eskit.EventStore) -> None:
    with pytest.raises(eskit.ValidationError, match=str(MAX_BATCH)):
        await store.append("a", [Event("step") for _ in range(MAX_BATCH + 1)])
    assert await message_count(store) == 0


async def test_an_empty_event_list_raises_validation_error(store: eskit.EventStore) -> None:
    with pytest.raises(eskit.ValidationError, match="empty"):
        await store.append("a", [])
    with pytest.raises(eskit.ValidationError, match="list"):
        await store.append("a", Event("created"))  # type: ignore[arg-type]
    assert await message_count(store) == 0


async def test_an_oversize_event_raises_payload_too_large_and_stores_nothing(
    client: eskit.Client, store: eskit.EventStore
) -> None:
    limit = client.max_payload
    big = Event("uploaded", {"blob": "x" * limit})
    with pytest.raises(eskit.PayloadTooLargeError) as info:
        await store.append("a", [big])
    assert f"{limit:,}" in str(info.value)
    with pytest.raises(eskit.PayloadTooLargeError):
        await store.append("a", [Event("created"), big])
    assert await message_count(store) == 0


async def test_an_event_eskit_sizes_as_fitting_never_breaks_the_connection(
    nats_url: str, client: eskit.Client
) -> None:
    """The size check must count every header that is sent, including the concurrency and batch headers."""
    own = await eskit.connect(nats_url)
    name = unique("orders")
    try:
        store = await own.event_store(name)
        aggregate = "a" * 200
        seen = await store.append(aggregate, [Event("created")])
        probe = Event("uploaded", {"blob": ""})
        overhead = (
            len(encode_data(probe)) + sum(len(k) + len(v) + 4 for k, v in encode_headers(probe).items()) + 200
        )
        edge = dataclasses.replace(probe, data={"blob": "x" * (own.max_payload - overhead)})
        failure: eskit.EskitError | None = None
        try:
            await asyncio.wait_for(store.append(aggregate, [edge], expected_position=seen), 15)
        except eskit.PayloadTooLargeError:
            pass  # rejected before sending: fine
        except eskit.EskitError as exc:
            failure = exc
        assert failure is None and own.nc.is_connected, (
            f"an event that passed eskit's size check failed: {failure!r}; connected: {own.nc.is_connected}"
        )
    finally:
        with contextlib.suppress(nats.errors.ConnectionClosedError):
            await own.close()
        await client.delete_store(name)


@pytest.mark.parametrize(
    ("aggregate_id", "event_type"),
    [("a.b", "created"), ("a b", "created"), ("", "created"), ("a", "item.added"), ("a", "*"), ("a", "")],
)
async def test_an_invalid_aggregate_id_or_event_type_raises_before_sending(
    store: eskit.EventStore, aggregate_id: str, event_type: str
) -> None:
    with pytest.raises(eskit.InvalidNameError):
        await store.append(aggregate_id, [Event("created"), Event(event_type)])
    assert await message_count(store) == 0


async def test_reading_an_invalid_aggregate_id_raises_invalid_name_error(store: eskit.EventStore) -> None:
    with pytest.raises(eskit.InvalidNameError):
        await store.read("a.>")
    with pytest.raises(eskit.InvalidNameError):
        await store.last_position("*")


async def test_data_that_is_not_json_raises_encode_error_and_stores_nothing(store: eskit.EventStore) -> None:
    with pytest.raises(eskit.EncodeError):
        await store.append("a", [Event("created"), Event("priced", {"price": float("nan")})])
    assert await message_count(store) == 0


# -- positions and foreign messages -------------------------------------------------------------------------


async def test_last_position_reports_the_aggregate_and_the_stream(store: eskit.EventStore) -> None:
    assert (await store.last_position(), await store.last_position("a")) == (0, 0)
    await store.append("a", [Event("created"), Event("item_added")])
    await store.append("b", [Event("created")])
    assert (await store.last_position("a"), await store.last_position("b")) == (2, 3)
    assert (await store.last_position(), await store.last_position("nobody")) == (3, 0)


async def test_a_raw_message_without_eskit_headers_reads_back_with_decode_error(
    client: eskit.Client, store: eskit.EventStore
) -> None:
    first = await store.append("a", [Event("created", {"n": 1})])
    await client.nc.publish(f"{store.name}.a.raw", b"\xffnot json at all")
    await client.nc.flush()
    await wait_for_position(store, first + 1)
    await store.append("a", [Event("shipped", {"n": 3})])
    created, raw, shipped = await store.read("a")
    assert (created.data, shipped.data) == ({"n": 1}, {"n": 3})
    assert (raw.type, raw.data, raw.id, raw.raw) == ("raw", None, None, b"\xffnot json at all")
    assert raw.decode_error is not None and not raw.is_decodable
    assert [e.type for e in await replayed(store)] == ["created", "raw", "shipped"]


async def test_more_concurrent_multi_event_appends_than_the_server_keeps_open_batches_all_succeed(
    store: eskit.EventStore,
) -> None:
    # the server refuses more than 50 open atomic batches per stream (err_code 10210): eskit queues them
    appends = [store.append(f"b{i}", [eskit.Event("x"), eskit.Event("y")], expected_position=0) for i in range(120)]
    positions = await asyncio.gather(*appends)
    assert len(set(positions)) == 120
    assert sum([len(await store.read(f"b{i}")) for i in range(120)]) == 240


async def test_append_many_reports_a_failure_only_after_every_other_append_has_finished(
    store: eskit.EventStore,
) -> None:
    await store.append("taken", [eskit.Event("created")], expected_position=0)
    batches = [(f"c{i}", [eskit.Event("x"), eskit.Event("y")], 0) for i in range(60)]
    with pytest.raises(eskit.ConcurrencyError):
        await store.append_many([("taken", [eskit.Event("again")], 0), *batches])
    stored = await store.last_position()
    assert sum([len(await store.read(f"c{i}")) for i in range(60)]) == 120  # all landed before the raise
    assert await store.last_position() == stored  # and nothing more arrives afterwards
