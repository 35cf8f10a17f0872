"""The aggregate cache saves work and never changes an answer: a cached load equals a full replay."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from conftest import unique

import eskit
from eskit.examples import Order


@pytest.fixture
async def cached(client: eskit.Client) -> AsyncIterator[eskit.EventStore]:
    name = unique("cached")
    store = await client.event_store(name, cache=eskit.AggregateCache(maxsize=2))
    yield store
    await client.delete_store(name)


async def placed(store: eskit.EventStore, order_id: str) -> Order:
    order = Order(order_id)
    order.create("ada")
    order.add_item("A1", qty=2, price=4.5)
    await store.save(order)
    return order


async def test_loads_after_a_save_come_from_the_cache_and_equal_a_full_replay(cached: eskit.EventStore) -> None:
    await placed(cached, "o1")
    first = await cached.load(Order, "o1")
    second = await cached.load(Order, "o1")
    replayed = Order.from_events("o1", await cached.read("o1"))
    assert cached.cache is not None and (cached.cache.hits, cached.cache.misses) == (2, 0)
    assert (second.snapshot(), second.version, second.position) == (
        replayed.snapshot(), replayed.version, replayed.position)  # fmt: skip
    assert second is not first and second.items is not first.items  # callers never share state


async def test_events_appended_by_another_writer_are_applied_on_top_of_the_cached_state(
    cached: eskit.EventStore, client: eskit.Client
) -> None:
    await placed(cached, "o1")
    await cached.load(Order, "o1")
    other = await client.event_store(cached.name)  # another writer, no cache
    order = await other.load(Order, "o1")
    order.add_item("B2", qty=1, price=1.0)
    await other.save(order)
    seen = await cached.load(Order, "o1")
    assert [i["sku"] for i in seen.items] == ["A1", "B2"] and seen.position == order.position


async def test_a_stale_cached_aggregate_cannot_lose_an_update(cached: eskit.EventStore, client: eskit.Client) -> None:
    await placed(cached, "o1")
    mine = await cached.load(Order, "o1")
    other = await client.event_store(cached.name)
    theirs = await other.load(Order, "o1")
    theirs.pay(9.0)
    await other.save(theirs)
    mine.add_item("late", qty=1, price=1.0)  # decided on the state before the payment
    with pytest.raises(eskit.ConcurrencyError):
        await cached.save(mine)
    again = await cached.load(Order, "o1")
    assert again.status == "paid" and [i["sku"] for i in again.items] == ["A1"]


async def test_the_least_recently_used_aggregate_leaves_a_full_cache(cached: eskit.EventStore) -> None:
    for oid in ("o1", "o2", "o3"):
        await placed(cached, oid)
    assert cached.cache is not None and len(cached.cache) == 2
    assert cached.cache.get(Order, "o1") is None and cached.cache.get(Order, "o3") is not None


async def test_a_cached_aggregate_of_a_recreated_stream_is_forgotten(
    cached: eskit.EventStore, client: eskit.Client
) -> None:
    await placed(cached, "o1")
    await client.delete_store(cached.name)
    await client.event_store(cached.name)
    fresh = await cached.load(Order, "o1")
    assert (fresh.version, fresh.position, fresh.status) == (0, 0, "new")


async def test_deleting_a_store_clears_its_caches_so_a_recreated_stream_is_read_afresh(client: eskit.Client) -> None:
    name = unique("cached")
    cached = await client.event_store(name, cache=eskit.AggregateCache())
    await placed(cached, "o1")  # positions 1-2, cached at 2
    await client.delete_store(name)
    fresh = await client.event_store(name)
    late = Order("o1")
    late.create("bob")  # position 1 of the new stream
    await fresh.save(late)
    for k in range(3):
        await placed(fresh, f"x{k}")
    late.add_item("B2", qty=1, price=1.0)  # a position above the cached one
    await fresh.save(late)
    loaded = await cached.load(Order, "o1")
    await client.delete_store(name)
    assert (loaded.customer, [i["sku"] for i in loaded.items], loaded.version) == ("bob", ["B2"], 2)


@pytest.mark.parametrize("items", [1, 3], ids=["same-last-position", "later-last-position"])
async def test_a_cached_aggregate_of_a_stream_recreated_outside_eskit_is_not_served(
    cached: eskit.EventStore, client: eskit.Client, items: int
) -> None:
    await placed(cached, "o1")  # ada's order, positions 1-2, cached at 2
    await client.js.delete_stream(cached.stream)  # outside eskit: nobody clears the cache
    fresh = await client.event_store(cached.name)
    late = Order("o1")
    late.create("bob")
    for k in range(items):
        late.add_item(f"B{k}", qty=1, price=1.0)
    await fresh.save(late)  # positions 1..1+items of the new stream
    loaded = await cached.load(Order, "o1")
    assert (loaded.customer, [i["sku"] for i in loaded.items], loaded.version) == (
        "bob", [f"B{k}" for k in range(items)], 1 + items)  # fmt: skip


async def test_a_cached_aggregate_is_served_again_after_its_stored_event_was_checked(cached: eskit.EventStore) -> None:
    await placed(cached, "o1")  # cached by save(): the event's store time is not known yet
    for _ in range(3):
        order = await cached.load(Order, "o1")
    assert cached.cache is not None and (cached.cache.hits, cached.cache.misses) == (3, 0)
    assert order._mark is not None and order._mark.stored_at is not None  # learnt on the first load
