"""Upcasting on every read path (read, replay, load, to_dataframe, projections, DCB, widgets), and migrate."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import unique

import eskit
from eskit.aggregate import Aggregate, applies
from eskit.dcb import Query, QueryItem, TaggedEvent
from eskit.events import Event, RecordedEvent
from eskit.migrate import copy_event
from eskit.projections import Projection
from eskit.widgets import EventBrowser, StreamOverview


def v1(sku: str = "A1", qty: int = 2) -> Event:
    return Event("item_added", {"sku": sku, "qty": qty})  # v1: no price currency


def v2(sku: str = "B2", qty: int = 1) -> Event:
    return Event("item_added", {"sku": sku, "qty": qty, "currency": "USD"}, schema_version=2)


def currency_upcasters() -> eskit.Upcasters:
    upcasters = eskit.Upcasters()

    @upcasters.register("item_added", from_version=1)
    def add_currency(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "currency": "EUR"}

    return upcasters


class Order(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.lines: list[tuple[str, str]] = []

    @applies("created")
    def _created(self, data: dict[str, Any]) -> None:
        pass

    @applies("item_added")
    def _item_added(self, data: dict[str, Any]) -> None:
        self.lines.append((data["sku"], data["currency"]))  # a v2 handler: a v1 event has no currency


class Lines(Projection):
    schema = "CREATE TABLE lines (position INTEGER, sku TEXT, currency TEXT)"

    @applies("item_added")
    def _item_added(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        db.execute("INSERT INTO lines VALUES (?, ?, ?)", (event.position, event.data["sku"], event.data["currency"]))


@pytest.fixture
async def pair(client: eskit.Client) -> AsyncIterator[tuple[eskit.EventStore, eskit.EventStore]]:
    """One stream opened twice: without upcasters (the writer, and what is stored) and with them."""
    name = unique("up")
    plain = await client.event_store(name)
    upcast = await client.event_store(name, upcasters=currency_upcasters())
    yield plain, upcast
    await client.delete_store(name)
    await client.delete_store(f"{name}_parked")


# -- the registry on its own ------------------------------------------------------------------------------


def test_a_chain_of_three_upcasters_applies_in_order_and_reports_the_last_version() -> None:
    ups = eskit.Upcasters()
    ups.register("paid", from_version=2)(lambda d: {**d, "steps": [*d["steps"], 2]})
    ups.register("paid", from_version=1)(lambda d: {**d, "steps": [1]})
    ups.register("paid", from_version=3)(lambda d: {**d, "steps": [*d["steps"], 3]})
    assert ups.resolve(5, "o.1.paid", "paid", 1, {}) == ("paid", 4, {"steps": [1, 2, 3]})
    assert ups.resolve(5, "o.1.paid", "paid", 3, {"steps": []}) == ("paid", 4, {"steps": [3]})
    assert ups.resolve(5, "o.1.paid", "paid", 7, {"x": 1}) == ("paid", 7, {"x": 1})  # newer: untouched


def test_a_rename_reads_the_old_type_as_the_new_one_with_the_new_types_steps() -> None:
    ups = currency_upcasters()
    ups.rename("ItemAdded", "item_added")
    assert ups.resolve(1, "o.1.ItemAdded", "ItemAdded", 1, {"sku": "A"}) == (
        "item_added", 2, {"sku": "A", "currency": "EUR"})  # fmt: skip
    assert ups.sources({"item_added"}) == {"item_added", "ItemAdded"}


def test_a_raising_upcaster_names_the_event_position_type_and_version() -> None:
    ups = eskit.Upcasters()

    @ups.register("item_added", from_version=1)
    def needs_price(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "total": data["price"] * data["qty"]}

    with pytest.raises(eskit.UpcastError) as caught:
        ups.resolve(42, "orders.o1.item_added", "item_added", 1, {"qty": 1})
    message = str(caught.value)
    assert "position 42" in message and "item_added v1 -> v2" in message and "needs_price" in message
    assert "KeyError" in message and "\n" not in message
    assert (caught.value.position, caught.value.event_type, caught.value.version) == (42, "item_added", 1)


def test_an_upcaster_that_returns_nothing_is_an_error_not_a_none_event() -> None:
    ups = eskit.Upcasters()
    ups.register("created", from_version=1)(lambda d: d.update(x=1))  # forgot to return
    with pytest.raises(eskit.UpcastError, match="returned None"):
        ups.resolve(1, "o.1.created", "created", 1, {})


def test_bad_registrations_are_refused_with_one_line() -> None:
    ups = currency_upcasters()
    with pytest.raises(eskit.ValidationError, match="already has an upcaster"):
        ups.register("item_added", from_version=1)(lambda d: d)
    with pytest.raises(eskit.ValidationError, match="from_version"):
        ups.register("item_added", from_version=0)
    ups.rename("a", "b")
    with pytest.raises(eskit.ValidationError, match="cycle"):
        ups.rename("b", "a")
    with pytest.raises(eskit.InvalidNameError):
        ups.rename("a.b", "c")


# -- every read path --------------------------------------------------------------------------------------


async def test_read_and_replay_see_upcast_events_and_a_store_without_upcasters_the_stored_ones(
    pair: tuple[eskit.EventStore, eskit.EventStore],
) -> None:
    plain, upcast = pair
    await plain.append("o1", [Event("created"), v1(), v2()])
    read = await upcast.read("o1")
    assert [(e.schema_version, e.data.get("currency")) for e in read] == [(1, None), (2, "EUR"), (2, "USD")]
    assert read[1].raw == b'{"sku":"A1","qty":2}'  # the stored bytes, unchanged
    replayed = [e async for e in upcast.replay()]
    assert [e.data for e in replayed] == [e.data for e in read]
    filtered = [e async for e in upcast.replay(subjects=[f"{upcast.name}.*.item_added"])]
    assert [e.data["currency"] for e in filtered] == ["EUR", "USD"]
    original = await plain.read("o1")
    assert (original[1].schema_version, original[1].data) == (1, {"sku": "A1", "qty": 2})


async def test_a_raising_upcaster_fails_a_read_with_the_events_position(client: eskit.Client) -> None:
    ups = eskit.Upcasters()
    ups.register("item_added", from_version=1)(lambda d: {**d, "total": d["price"]})
    name = unique("up")
    store = await client.event_store(name, upcasters=ups)
    try:
        position = await store.append("o1", [v1()])
        with pytest.raises(eskit.UpcastError, match=f"position {position} "):
            await store.read("o1")
        with pytest.raises(eskit.UpcastError):
            await eskit.to_dataframe(store)
        with pytest.raises(eskit.UpcastError):
            await store.load(Order, "o1")
    finally:
        await client.delete_store(name)


async def test_a_bulk_replay_and_to_dataframe_through_a_consumer_are_upcast(
    pair: tuple[eskit.EventStore, eskit.EventStore],
) -> None:
    plain, upcast = pair
    n = 7000  # more than a first page plus eskit._reader.BULK: the consumer path
    await plain.append_many([(f"o{i}", [v1() if i % 2 else v2()], None) for i in range(n)])
    versions, currencies = set(), set()
    count = 0
    async for event in upcast.replay():
        count += 1
        versions.add(event.schema_version)
        currencies.add(event.data["currency"])
    assert count == n and versions == {2} and currencies == {"EUR", "USD"}
    df = await eskit.to_dataframe(upcast)
    assert len(df) == n and set(df["schema_version"]) == {2}
    assert (df["currency"] == "EUR").sum() == n // 2
    raw = await eskit.to_dataframe(plain)
    assert set(raw["schema_version"]) == {1, 2} and raw["currency"].isna().sum() == n // 2


async def test_to_dataframe_by_direct_get_and_of_an_event_stream_are_upcast(
    pair: tuple[eskit.EventStore, eskit.EventStore],
) -> None:
    plain, upcast = pair
    await plain.append("o1", [Event("created"), v1(), v2()])
    df = await eskit.to_dataframe(upcast)
    assert df["schema_version"].tolist() == [1, 2, 2] and df["currency"].tolist()[1:] == ["EUR", "USD"]
    filtered = await eskit.to_dataframe(upcast, subjects=[f"{upcast.name}.*.item_added"])
    assert filtered["currency"].tolist() == ["EUR", "USD"]
    streamed = await eskit.to_dataframe(upcast.replay())
    assert streamed["currency"].tolist()[1:] == ["EUR", "USD"]


async def test_load_applies_upcast_events_to_the_aggregate(pair: tuple[eskit.EventStore, eskit.EventStore]) -> None:
    plain, upcast = pair
    await plain.append("o1", [Event("created"), v1("A1"), v2("B2")])
    with pytest.raises(KeyError):  # the v2 handler breaks on a v1 event without upcasters
        await plain.load(Order, "o1")
    order = await upcast.load(Order, "o1")
    assert order.lines == [("A1", "EUR"), ("B2", "USD")] and order.version == 3
    as_of = await upcast.load(Order, "o1", up_to=datetime.now(UTC))  # the RecordedEvent path
    assert as_of.lines == order.lines


async def test_a_projection_gets_upcast_events_parks_a_raising_upcasters_event_and_replays_it_once_fixed(
    client: eskit.Client,
) -> None:
    ups = eskit.Upcasters()
    broken = {"on": True}

    @ups.register("item_added", from_version=1)
    def add_currency(data: dict[str, Any]) -> dict[str, Any]:
        if broken["on"] and data["sku"] == "BAD":
            raise ValueError("no currency for BAD")
        return {**data, "currency": "EUR"}

    name = unique("up")
    store = await client.event_store(name, upcasters=ups)
    try:
        await store.append("o1", [v1("A1"), v1("BAD"), v2("C3")])
        view = Lines(store)
        await view.run_until_caught_up()
        assert view.db.execute("SELECT sku, currency FROM lines ORDER BY position").fetchall() == [
            ("A1", "EUR"), ("C3", "USD")]  # fmt: skip
        parked = await view.parked()
        assert [p.event.data["sku"] for p in parked] == ["BAD"] and view.stats.parked == 1
        assert "add_currency" in parked[0].reason and "item_added v1" in parked[0].reason
        assert parked[0].event.schema_version == 1  # parked as stored
        broken["on"] = False  # the upcaster fixed
        assert await view.replay_parked() == 1
        assert ("BAD", "EUR") in view.db.execute("SELECT sku, currency FROM lines").fetchall()
        assert await view.parked() == []
        assert await view.rebuild() == 3
        await view.close(delete_consumer=True)
    finally:
        await client.delete_store(name)
        await client.delete_store(f"{name}_parked")


async def test_a_projection_handles_a_renamed_type_under_its_new_name(client: eskit.Client) -> None:
    ups = currency_upcasters()
    ups.rename("ItemAdded", "item_added")
    name = unique("up")
    store = await client.event_store(name, upcasters=ups)
    try:
        await store.append("o1", [Event("ItemAdded", {"sku": "OLD", "qty": 1}), v2("NEW")])
        view = Lines(store)
        await view.run_until_caught_up()
        assert view.db.execute("SELECT sku, currency FROM lines ORDER BY position").fetchall() == [
            ("OLD", "EUR"), ("NEW", "USD")]  # fmt: skip
        await view.close(delete_consumer=True)
    finally:
        await client.delete_store(name)


async def test_a_handler_failing_on_an_upcast_event_parks_it_as_it_was_seen(
    pair: tuple[eskit.EventStore, eskit.EventStore],
) -> None:
    plain, upcast = pair

    class Fussy(Lines):
        fail = True

        @applies("item_added")
        def _item_added(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
            if type(self).fail:
                raise RuntimeError("not today")
            super()._item_added(db, event)

    await plain.append("o1", [v1("A1")])
    view = Fussy(upcast, max_attempts=1)
    await view.run_until_caught_up()
    parked = (await view.parked())[0]
    assert (parked.event.schema_version, parked.event.data["currency"]) == (2, "EUR")  # data and version agree
    Fussy.fail = False
    assert await view.replay_parked() == 1
    assert view.db.execute("SELECT sku, currency FROM lines").fetchall() == [("A1", "EUR")]
    await view.close(delete_consumer=True)


async def test_the_dcb_stores_reads_last_and_subscriptions_are_upcast(client: eskit.Client) -> None:
    ups = eskit.Upcasters()
    ups.register("Subscribed", from_version=1)(lambda d: {**d, "seats": 1})
    name = unique("updcb")
    plain = await client.dcb_store(name, tag_keys=["course"])
    store = await client.dcb_store(name, upcasters=ups)
    try:
        await plain.append([TaggedEvent("Subscribed", {"student": "s1"}, ["course:c1"]),
                            TaggedEvent("Subscribed", {"student": "s2", "seats": 3}, ["course:c1"], schema_version=2)])
        query = Query([QueryItem(types=["Subscribed"], tags=["course:c1"])])
        read = await store.read(query)
        assert [(e.schema_version, e.data["seats"]) for e in read] == [(2, 1), (2, 3)]
        assert [e.schema_version for e in await plain.read(query)] == [1, 2]
        last = await store.last(Query([QueryItem(types=["Subscribed"])]))
        assert last is not None and last.data["seats"] == 3
        async with await store.subscribe(query, after=0) as events:
            first = await anext(events)
        assert first.data == {"student": "s1", "seats": 1}
    finally:
        await client.delete_store(name)


async def test_the_widgets_show_upcast_events(pair: tuple[eskit.EventStore, eskit.EventStore]) -> None:
    plain, upcast = pair
    await plain.append("o1", [v1()])
    browser = EventBrowser(upcast)
    await browser.refresh()
    assert browser.frame["schema_version"].tolist() == [2]
    overview = StreamOverview(upcast)
    await overview.refresh()
    assert overview.totals["events"] == 1


async def test_reads_without_upcasters_registered_are_unchanged(client: eskit.Client) -> None:
    name = unique("up")
    store = await client.event_store(name, upcasters=eskit.Upcasters())  # empty: nothing to do
    try:
        await store.append("o1", [v1()])
        assert (await store.read("o1"))[0].data == {"sku": "A1", "qty": 2}
        assert (await eskit.to_dataframe(store))["schema_version"].tolist() == [1]
    finally:
        await client.delete_store(name)


# -- copy-and-transform -----------------------------------------------------------------------------------


async def test_migrate_transforms_splits_and_drops_and_a_second_run_writes_nothing(client: eskit.Client) -> None:
    source, target = unique("src"), unique("dst")
    src = await client.event_store(source, upcasters=currency_upcasters())
    dst = await client.event_store(target)
    try:
        await src.append("o1", [Event("created"), v1("A1"), Event("noise"), v2("B2")])

        def transform(event: RecordedEvent) -> Event | list[Event] | None:
            if event.type == "noise":
                return None
            if event.type == "item_added":  # split: one line per unit (a shape an upcaster cannot give)
                return [Event("unit_added", {"sku": event.data["sku"]}) for _ in range(event.data["qty"])]
            return copy_event(event)

        result = await eskit.migrate(src, dst, transform)
        assert (result.read, result.written, result.dropped) == (4, 4, 1)
        assert [e.type for e in await dst.read("o1")] == ["created", "unit_added", "unit_added", "unit_added"]
        again = await eskit.migrate(src, dst, transform)
        assert (again.resumed_after, again.read, again.written) == (4, 0, 0)
    finally:
        await client.delete_store(source)
        await client.delete_store(target)


async def test_a_migration_stopped_half_way_resumes_after_the_last_migrated_position(client: eskit.Client) -> None:
    source, target = unique("src"), unique("dst")
    src, dst = await client.event_store(source), await client.event_store(target)
    try:
        await src.append_many([(f"o{i}", [Event("created", {"n": i})], None) for i in range(50)])
        stop_at = 30

        def crashing(event: RecordedEvent) -> Event:
            if event.position == stop_at:
                raise RuntimeError("killed")
            return Event(event.type, event.data)

        with pytest.raises(RuntimeError):
            await eskit.migrate(src, dst, crashing)  # the first 29 were sent before it stopped
        assert await dst.last_position() == stop_at - 1
        result = await eskit.migrate(src, dst)
        assert result.resumed_after == stop_at - 1 and result.read == 50 - (stop_at - 1)
        df = await eskit.to_dataframe(dst)
        assert df["data:n" if "data:n" in df else "n"].tolist() == list(range(50))  # each once, in order
        assert df["event_id"].is_unique
    finally:
        await client.delete_store(source)
        await client.delete_store(target)


@pytest.mark.parametrize("claim", [40, 10**9], ids=["inside the source", "past its end"])
async def test_a_forged_migrated_from_marker_in_the_target_is_refused_not_trusted_to_skip_source_events(
    client: eskit.Client, claim: int
) -> None:
    source, target = unique("src"), unique("dst")
    src, dst = await client.event_store(source), await client.event_store(target)
    try:
        await src.append_many([(f"o{i}", [Event("created", {"n": i})], None) for i in range(50)])

        def crashing(event: RecordedEvent) -> Event:
            if event.position == 30:
                raise RuntimeError("killed")
            return Event(event.type, event.data)

        with pytest.raises(RuntimeError):
            await eskit.migrate(src, dst, crashing)
        forged = Event("created", {"n": 40}, metadata={"migrated_from": str(claim)})  # any writer may append it
        await dst.append("o40", [forged])
        with pytest.raises(eskit.ValidationError, match=r"no migration of .* wrote it") as info:
            await eskit.migrate(src, dst)  # was: resumed after the claim, skipping source events 30..claim
        assert "\n" not in str(info.value)
        assert await dst.last_position() == 30  # nothing more written
    finally:
        await client.delete_store(source)
        await client.delete_store(target)


async def test_migrate_refuses_a_target_that_holds_other_events(client: eskit.Client) -> None:
    source, target = unique("src"), unique("dst")
    src, dst = await client.event_store(source), await client.event_store(target)
    try:
        await src.append("o1", [Event("created")])
        await dst.append("x", [Event("created")])
        with pytest.raises(eskit.ValidationError, match="new, empty store"):
            await eskit.migrate(src, dst)
        with pytest.raises(eskit.ValidationError, match="new store"):
            await eskit.migrate(src, src)
    finally:
        await client.delete_store(source)
        await client.delete_store(target)


async def test_an_undecodable_event_error_points_to_eskit_migrate_not_to_a_missing_upcaster_api(
    client: eskit.Client, store: eskit.EventStore
) -> None:
    await store.append("o1", [Event("created")])
    await client.js.publish(f"{store.name}.o1.item_added", b"{not json")
    for load in (store.load(Order, "o1"), store.load(Order, "o1", up_to=datetime.now(UTC))):
        with pytest.raises(eskit.UndecodableEventError) as caught:
            await load
        message = str(caught.value)
        assert "eskit.migrate(source, target, transform)" in message and "in an upcaster" not in message
        assert "') cannot be decoded" in message  # the type, a space, then the reason


async def test_migrate_refuses_to_copy_an_undecodable_event_as_is_and_a_transform_repairs_it(
    client: eskit.Client,
) -> None:
    source, target = unique("src"), unique("dst")
    src, dst = await client.event_store(source), await client.event_store(target)
    try:
        await src.append("o1", [Event("created")])
        await client.js.publish(f"{source}.o1.item_added", b"{'sku': 'A1'}")  # not JSON
        with pytest.raises(eskit.ValidationError, match=r"position 2 .* not JSON"):
            await eskit.migrate(src, dst)

        def repair(event: RecordedEvent) -> Event:
            if event.decode_error is not None:
                return Event(event.type, json.loads(event.raw.replace(b"'", b'"')))
            return copy_event(event)

        result = await eskit.migrate(src, dst, repair)
        assert (result.resumed_after, result.written) == (1, 1)  # the first run stored what came before
        assert [e.data for e in await dst.read("o1")] == [{}, {"sku": "A1"}]
    finally:
        await client.delete_store(source)
        await client.delete_store(target)


@pytest.mark.parametrize("split", [False, True], ids=["copied", "split in two"])
async def test_a_foreign_event_the_target_cannot_hold_stops_migrate_naming_its_position_after_storing_the_rest(
    client: eskit.Client, split: bool
) -> None:
    source, target = unique("src"), unique("dst")
    src, dst = await client.event_store(source), await client.event_store(target)
    try:
        await src.append("o1", [Event("created")])
        await client.js.publish(f"{source}.o1.evil.created", b"{}")  # someone else's: type 'evil.created'
        await src.append("o1", [Event("shipped")])

        def copy(event: RecordedEvent) -> list[Event]:
            return [copy_event(event)] * (2 if split else 1)

        refused = r"source position 2 cannot be stored .*evil\.created.* None to drop"
        with pytest.raises(eskit.ValidationError, match=refused):
            await eskit.migrate(src, dst, copy)  # was an InvalidNameError naming no position, nothing stored
        assert [e.type for e in await dst.read("o1")] == ["created"] * (2 if split else 1)

        def drop_foreign(event: RecordedEvent) -> list[Event] | None:
            return None if "." in event.type else copy(event)

        result = await eskit.migrate(src, dst, drop_foreign)
        assert (result.resumed_after, result.dropped, result.written) == (1, 1, 2 if split else 1)
    finally:
        await client.delete_store(source)
        await client.delete_store(target)
