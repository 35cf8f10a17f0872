"""Bulk reads through a short-lived consumer: the same rows as Direct Get and replay, nothing left behind."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pandas as pd
import pytest
from conftest import unique

import eskit
from eskit import _bulkread, _reader, frames
from eskit._nats import fastlane as _fastlane
from eskit.projections.consumer import PullConsumer

N = _reader.BULK + 700  # more than the whole-store policy reads with Direct Get: to_dataframe takes a consumer
ADA = {"user": "ada"}


@pytest.fixture(scope="module")
async def mixed(client: eskit.Client) -> AsyncIterator[eskit.EventStore]:
    """Over a page of events: singles, atomic batches, metadata, ids, and raw messages someone else wrote."""
    store = await client.event_store(unique("bulk"))
    appends = []
    for i in range(N):
        event = eskit.Event("item_added", {"i": i, "sku": f"s{i % 7}", "nested": {"q": i % 3}})
        if i % 5 == 0:
            event = eskit.Event("noted", {"i": i}, correlation_id=f"c{i}", causation_id=f"k{i}", metadata=ADA)
        appends.append((f"o{i % 40}", [event], None))
    await store.append_many(appends)
    for i in range(12):  # two-event atomic batches: extra batch headers on the stored messages
        await store.append(f"b{i % 5}", [eskit.Event("a", {"x": i}), eskit.Event("b", {"y": "é" * (i % 3)})])
    js = store.client.js
    await js.publish(f"{store.name}.raw.blob", b"\x00not json")  # no headers at all
    await js.publish(f"{store.name}.raw.odd", b"[1,", headers={"Eskit-Schema-Version": "x", "Other": "1"})
    await js.publish(f"{store.name}.raw.json", json.dumps({"z": 1}).encode(), headers={"Nats-Msg-Id": "m1"})
    yield store
    await client.delete_store(store.name)


async def test_a_consumer_read_gives_the_same_frame_as_a_replay(mixed: eskit.EventStore) -> None:
    fast = await eskit.to_dataframe(mixed)
    slow = await eskit.to_dataframe(mixed.replay())
    assert len(fast) == await mixed.last_position() > _reader.BULK
    fast["timestamp"] = fast["timestamp"].dt.floor("us")  # a RecordedEvent's datetime keeps microseconds
    pd.testing.assert_frame_equal(fast, slow[fast.columns], check_dtype=False)
    raw = fast[fast["aggregate_id"] == "raw"].set_index("type")
    assert raw.loc["json", "event_id"] == "m1" and raw.loc["json", "z"] == 1
    assert pd.isna(raw.loc["blob", "event_id"]) and raw.loc["odd", "schema_version"] == 1


async def test_a_consumer_read_gives_the_same_frame_as_direct_get_pages(mixed: eskit.EventStore) -> None:
    by_consumer = await eskit.to_dataframe(mixed, after=5)
    columns = frames._Columns()
    async for messages in mixed.reader.ahead(after=5, last=await mixed.last_position()):
        columns.add_messages(messages)
    by_direct_get = columns.frame()
    pd.testing.assert_frame_equal(by_consumer, by_direct_get[by_consumer.columns])


async def test_filtered_reads_through_a_consumer_keep_stream_order(mixed: eskit.EventStore) -> None:
    name = mixed.name
    df = await eskit.to_dataframe(mixed, subjects=[f"{name}.*.noted", f"{name}.raw.>"])
    expected = [e.position async for e in mixed.replay() if e.type == "noted" or e.aggregate_id == "raw"]
    assert df["position"].tolist() == expected and len(expected) > 100


async def test_overlapping_filters_fall_back_to_direct_get_with_each_event_once(mixed: eskit.EventStore) -> None:
    name = mixed.name  # the server refuses overlapping filters on one consumer
    df = await eskit.to_dataframe(mixed, subjects=[f"{name}.o1.>", f"{name}.*.noted"])
    expected = [e.position async for e in mixed.replay() if e.type == "noted" or e.aggregate_id == "o1"]
    assert df["position"].tolist() == expected


async def test_a_read_leaves_no_consumer_behind(mixed: eskit.EventStore) -> None:
    await eskit.to_dataframe(mixed)
    info = await mixed.client.js.stream_info(mixed.stream)
    assert info.state.consumer_count == 0


@pytest.mark.fast_lane  # the consumer read exists on the fast lane only (else: Direct Get)
async def test_events_appended_after_the_read_started_are_not_included(store: eskit.EventStore) -> None:
    await store.append_many([(f"o{i}", [eskit.Event("a", {})], None) for i in range(1200)])
    seen = 0
    async for batch in _bulkread.consumer_batches(store.reader, after=0, filters=[f"{store.name}.>"], batch=500):
        if seen == 0:
            await store.append("late", [eskit.Event("late", {})])
        seen += len(batch)
    assert seen == 1200 and await store.last_position() == 1201


@pytest.mark.fast_lane  # the consumer read exists on the fast lane only (else: Direct Get)
async def test_a_missing_stream_is_stream_not_found(client: eskit.Client, store: eskit.EventStore) -> None:
    await store.append("x", [eskit.Event("a", {})])
    await client.delete_store(store.name)
    with pytest.raises(eskit.StreamNotFoundError):
        async for _ in _bulkread.consumer_batches(store.reader, after=0, filters=[f"{store.name}.>"]):
            pass


async def test_consumer_deliveries_decode_to_the_same_events_as_a_replay(mixed: eskit.EventStore) -> None:
    consumer = PullConsumer(mixed.client, mixed.stream, unique("c"), [f"{mixed.name}.>"], max_ack_pending=5000)
    await consumer.create(after=0)
    try:
        total = await mixed.last_position()
        events: list[eskit.RecordedEvent] = []
        for _ in range(20):  # bounded: 1,000 a fetch
            events += (await consumer.fetch(1000, wait=0.5)).events
            if len(events) >= total:
                break
    finally:
        await consumer.delete()
        await consumer.close()
    replayed = [e async for e in mixed.replay()]
    assert len(events) == len(replayed) == total
    assert events == replayed
    assert events[0].metadata is not events[1].metadata  # each event has a dict of its own


class Shipping(eskit.Projection):
    schema = "CREATE TABLE seen (position INTEGER PRIMARY KEY, type TEXT)"

    @eskit.applies("noted")
    def _noted(self, db: Any, event: eskit.RecordedEvent) -> None:
        db.execute("INSERT INTO seen VALUES (?, ?)", (event.position, event.type))

    @eskit.applies("b")
    def _b(self, db: Any, event: eskit.RecordedEvent) -> None:
        db.execute("INSERT INTO seen VALUES (?, ?)", (event.position, event.type))


async def filters_of(view: eskit.Projection) -> list[str]:
    info = await view.store.client.js.consumer_info(view.store.stream, f"projection-{view.name}")
    return list(info.config.filter_subjects or [info.config.filter_subject])


async def test_a_projection_reads_the_whole_store_and_applies_only_its_types(mixed: eskit.EventStore) -> None:
    view = Shipping(mixed, name=unique("ship"))
    try:
        assert await view.run_until_caught_up() == view.stats.applied > 100
        assert await filters_of(view) == [f"{mixed.name}.>"]
        seen = view.db.execute("SELECT position, type FROM seen ORDER BY position").fetchall()
        expected = [(e.position, e.type) async for e in mixed.replay() if e.type in ("noted", "b")]
        assert seen == expected
        assert view.position == await mixed.last_position() > expected[-1][0]  # passed over the raw tail too
        await view.wait_for(await mixed.last_position(), timeout=1)  # read-your-writes works for any event
    finally:
        await view.close(delete_consumer=True)


async def test_a_whole_store_replay_through_a_consumer_equals_one_through_direct_get(
    mixed: eskit.EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_reader, "BULK", 10**9)
    by_direct_get = [e async for e in mixed.replay(after=3)]
    monkeypatch.setattr(_reader, "BULK", 100)
    by_consumer = [e async for e in mixed.replay(after=3)]
    assert by_consumer == by_direct_get and len(by_consumer) == await mixed.last_position() - 3
    middle = by_direct_get[len(by_direct_get) // 2]
    up_to_position = [e async for e in mixed.replay(up_to=middle.position)]
    assert up_to_position[-1] == middle and len(up_to_position) == middle.position
    info = await mixed.client.js.stream_info(mixed.stream)
    assert info.state.consumer_count == 0  # the replay that stopped early removed its consumer too


async def test_a_replay_through_a_consumer_includes_events_appended_while_it_runs(
    store: eskit.EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_reader, "BULK", 100)
    await store.append_many([(f"o{i}", [eskit.Event("a", {"i": i})], None) for i in range(3000)])
    seen: list[int] = []
    async for event in store.replay():
        if not seen:  # the consumer was made before this: the new events come with the Direct Get tail
            await store.append_many([(f"late{i}", [eskit.Event("late", {})], None) for i in range(5)])
        seen.append(event.position)
        if len(seen) > 3100:  # bounded
            break
    assert seen == list(range(1, 3006))


async def drop_read_consumers(store: eskit.EventStore) -> int:
    js = store.client.js
    names = [c.name for c in await js.consumers_info(store.stream) if c.name.startswith("eskit_read_")]
    for name in names:
        await js.delete_consumer(store.stream, name)
    return len(names)


@pytest.fixture
async def small_pulls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_bulkread, "BATCH", 100)
    monkeypatch.setattr(_bulkread, "AHEAD", 2)
    monkeypatch.setattr(_reader, "BULK", 100)


@pytest.mark.fast_lane  # the consumer read exists on the fast lane only (else: Direct Get)
@pytest.mark.usefixtures("small_pulls")
async def test_a_replay_whose_consumer_vanishes_half_way_reads_on_with_direct_get(store: eskit.EventStore) -> None:
    await store.append_many([(f"o{i}", [eskit.Event("a", {"i": i})], None) for i in range(3000)])
    seen: list[int] = []
    async for event in store.replay():
        if len(seen) == _reader.READ_PAGE:  # the first event after the first page: the consumer's
            assert await drop_read_consumers(store) == 1  # as if the server removed it (idle, or restarted)
        seen.append(event.position)
        if len(seen) > 3100:  # bounded
            break
    assert seen == list(range(1, 3001))


@pytest.mark.fast_lane  # the consumer read exists on the fast lane only (else: Direct Get)
@pytest.mark.usefixtures("small_pulls")
async def test_a_frame_whose_consumer_vanishes_half_way_is_still_whole(
    store: eskit.EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.append_many([(f"o{i}", [eskit.Event("a", {"i": i})], None) for i in range(3000)])
    add_raw, dropped = frames._Columns.add_raw, []

    def add_and_drop(columns: frames._Columns, batch: _bulkread.RawBatch) -> None:
        if not dropped:
            dropped.append(asyncio.ensure_future(drop_read_consumers(store)))
        add_raw(columns, batch)

    monkeypatch.setattr(frames._Columns, "add_raw", add_and_drop)
    df = await eskit.to_dataframe(store)
    assert await dropped[0] == 1
    assert df["position"].tolist() == list(range(1, 3001)) and df["i"].tolist() == list(range(3000))


class Count(eskit.Projection):
    schema = "CREATE TABLE n (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)"

    @eskit.applies("a")
    def _a(self, db: Any, event: eskit.RecordedEvent) -> None:
        db.execute("INSERT INTO n VALUES (1, 1) ON CONFLICT (k) DO UPDATE SET v = v + 1")


async def test_bulk_reads_and_a_projection_go_on_after_the_server_is_killed_and_restarted() -> None:
    server = eskit.EmbeddedServer().start()
    client = await eskit.connect(server.url)
    try:
        store = await client.event_store("restarted")
        await store.append_many([(f"o{i}", [eskit.Event("a", {"i": i})], None) for i in range(5000)])
        view = Count(store)
        assert await view.run_until_caught_up() == 5000
        server.kill()  # SIGKILL: the connection drops mid-stream; the store on disk is kept
        server.start()
        for _ in range(500):  # bounded, 10 s: until nats-py says "connected" again. It says so after the
            if client.nc.is_connected and client.nc.stats["reconnects"]:  # handshake, before it has subscribed
                break  # again: a reply sent in between goes nowhere. eskit's requests wait for the reconnect to end
            await asyncio.sleep(0.02)
        await store.append_many([(f"p{i}", [eskit.Event("a", {"i": i})], None) for i in range(500)])
        assert [e.position async for e in store.replay()] == list(range(1, 5501))
        assert (await eskit.to_dataframe(store))["position"].tolist() == list(range(1, 5501))
        await view.run_until_caught_up()  # may see events again: the consumer's acks of the last instants
        assert view.stats.applied == 5500 and view.position == 5500  # before the kill were not on disk
        assert view.db.execute("SELECT v FROM n").fetchone() == (5500,)  # exactly once in effect
        await view.close(delete_consumer=True)
    finally:
        await client.close()
        server.stop()


async def test_without_a_fast_lane_reads_and_projections_take_nats_py_s_ordinary_path(
    store: eskit.EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_fastlane, "available", lambda nc: False)  # as with a nats-py whose internals differ
    monkeypatch.setattr(_fastlane, "route", lambda nc, sub, sink: False)
    monkeypatch.setattr(_reader, "BULK", 100)
    await store.append_many([(f"o{i}", [eskit.Event("a", {"i": i})], None) for i in range(2500)])
    await store.append("x", [eskit.Event("b", {}, metadata={"user": "ada"})])
    assert [e.position async for e in store.replay()] == list(range(1, 2502))
    df = await eskit.to_dataframe(store)
    assert df["position"].tolist() == list(range(1, 2502)) and df["meta:user"].iloc[-1] == "ada"
    view = Count(store, batch_size=700)
    try:
        assert await view.run_until_caught_up() == 2500
        assert view.position == 2501 and view.db.execute("SELECT v FROM n").fetchone() == (2500,)
    finally:
        await view.close(delete_consumer=True)


@pytest.mark.fast_lane  # the consumer read exists on the fast lane only (else: Direct Get)
async def test_a_consumer_read_over_deleted_events_passes_their_gaps_without_calling_them_skipped(
    client: eskit.Client,
) -> None:
    from eskit._bulkread import consumer_batches
    from eskit._rawdecode import ack_tokens

    name = unique("holes")
    store = await client.event_store(name, allow_delete_history=True)
    try:
        await store.append_many([(f"a{i}", [eskit.Event("created")], None) for i in range(50)])
        for seq in (1, 7, 8, 30, 50):  # deleted: gaps a consumer passes over, nothing stored in them
            await client.js.delete_msg(store.stream, seq)
        got = [p async for b in consumer_batches(store.reader, after=0, filters=[f"{name}.>"], batch=10)
               for p in ack_tokens(b.replies).positions]  # fmt: skip
        assert got == [p for p in range(1, 51) if p not in (1, 7, 8, 30, 50)]  # no "passed over" error
    finally:
        await client.delete_store(name)
