"""Aggregates on a real server: apply order, unknown and undecodable events, as-of loads, concurrent saves."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import eskit
from eskit import Aggregate, applies
from eskit.examples import Order, OrderError


class Log(Aggregate):
    """Remembers every event it applied, in order."""

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.seen: list[str] = []

    def note(self, text: str) -> None:
        self.record("noted", {"text": text})

    @applies("noted")
    def _noted(self, data: dict[str, Any]) -> None:
        self.seen.append(data["text"])


class TolerantLog(Log):
    on_unknown = "ignore"


async def new_order(store: eskit.EventStore, order_id: str, *skus: str) -> Order:
    order = Order(order_id)
    order.create("ada")
    for sku in skus:
        order.add_item(sku)
    await store.save(order)
    return order


async def test_events_are_applied_in_the_order_they_were_stored(store: eskit.EventStore) -> None:
    texts = [f"t{i}" for i in range(12)]
    for chunk in (texts[:5], texts[5:6], texts[6:]):
        await store.append("log-1", [eskit.Event("noted", {"text": t}) for t in chunk])
    await store.append("other", [eskit.Event("noted", {"text": "elsewhere"})])
    log = await store.load(Log, "log-1")
    assert log.seen == texts
    assert log.version == 12
    assert log.position == (await store.read("log-1"))[-1].position


async def test_a_command_applies_its_event_at_once_and_save_stores_it(store: eskit.EventStore) -> None:
    order = Order("o1")
    order.create("ada")
    order.add_item("A1", qty=2, price=3.0)
    assert (order.status, order.total, order.version, order.position) == ("pending", 6.0, 2, 0)
    assert [e.type for e in order.pending] == ["created", "item_added"]
    position = await store.save(order)
    assert (order.position, order.pending) == (position, ())
    assert [e.type for e in await store.read("o1")] == ["created", "item_added"]


async def test_loading_a_missing_aggregate_gives_a_fresh_one(store: eskit.EventStore) -> None:
    order = await store.load(Order, "nobody")
    assert (order.status, order.version, order.position) == ("new", 0, 0)


async def test_saving_with_nothing_pending_appends_nothing(store: eskit.EventStore) -> None:
    order = await new_order(store, "o1", "A1")
    assert await store.save(order) == order.position
    assert len(await store.read("o1")) == 2


async def test_a_rule_refuses_a_command_without_recording_anything(store: eskit.EventStore) -> None:
    order = await new_order(store, "o1")
    with pytest.raises(OrderError, match="only paid orders ship"):
        order.ship("T1")
    assert order.pending == ()


async def test_an_unknown_event_type_fails_loudly_naming_type_and_position(store: eskit.EventStore) -> None:
    await store.append("log-1", [eskit.Event("noted", {"text": "a"}), eskit.Event("renamed", {"to": "b"})])
    position = await store.last_position("log-1")
    with pytest.raises(eskit.UnknownEventError, match=rf"'renamed' \(position {position}\).*on_unknown"):
        await store.load(Log, "log-1")


async def test_an_aggregate_can_be_configured_to_skip_unknown_event_types(store: eskit.EventStore) -> None:
    await store.append("log-1", [eskit.Event("noted", {"text": "a"}), eskit.Event("renamed", {"to": "b"})])
    log = await store.load(TolerantLog, "log-1")
    assert log.seen == ["a"]
    assert log.version == 2


async def test_an_undecodable_event_is_reported_with_its_position(
    store: eskit.EventStore, client: eskit.Client
) -> None:
    await store.append("log-1", [eskit.Event("noted", {"text": "a"})])
    ack = await client.js.publish(f"{store.name}.log-1.noted", b"\xff{not json")
    with pytest.raises(eskit.UndecodableEventError, match=rf"position {ack.seq} .*cannot be decoded"):
        await store.load(Log, "log-1")


async def test_a_failing_handler_says_which_event_it_was_applying(store: eskit.EventStore) -> None:
    await store.append("log-1", [eskit.Event("noted", {"wrong": "key"})])
    with pytest.raises(KeyError) as caught:
        await store.load(Log, "log-1")
    assert any("_noted applied 'noted' (position" in note for note in caught.value.__notes__)


def test_two_handlers_for_one_event_type_are_refused_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match="both apply 'x'"):

        class Twice(Aggregate):
            @applies("x")
            def _one(self, data: Any) -> None: ...

            @applies("x")
            def _two(self, data: Any) -> None: ...


async def test_state_as_of_a_position_replays_only_up_to_it(store: eskit.EventStore) -> None:
    await new_order(store, "o1", "A1", "B2", "C3")
    history = await store.read("o1")
    order = await store.load(Order, "o1", up_to=history[1].position)
    assert [i["sku"] for i in order.items] == ["A1"]
    assert (order.version, order.position) == (2, history[1].position)


async def test_state_as_of_a_position_ignores_the_aggregates_later_events(store: eskit.EventStore) -> None:
    order = await new_order(store, "o1", "A1")
    await new_order(store, "o2")  # positions 3 and onwards are interleaved with another order
    order.pay(1.0)
    await store.save(order)
    order.ship("T1")
    await store.save(order)
    for event in await store.read("o1"):
        then = await store.load(Order, "o1", up_to=event.position)
        assert (then.position, then.version) == (
            event.position,
            len(await store.read("o1", up_to=event.position)),
        )


async def test_state_as_of_a_time_replays_only_events_stored_by_then(store: eskit.EventStore) -> None:
    order = await new_order(store, "o1", "A1")
    order.add_item("B2")
    await store.save(order)
    order.add_item("C3")
    await store.save(order)
    history = await store.read("o1")
    then = await store.load(Order, "o1", up_to=history[2].timestamp)
    assert [i["sku"] for i in then.items] == ["A1", "B2"]
    assert then.position == history[2].position


async def test_of_two_concurrent_saves_exactly_one_wins(store: eskit.EventStore) -> None:
    await new_order(store, "o1", "A1")
    alice, bob = await store.load(Order, "o1"), await store.load(Order, "o1")
    alice.add_item("ALICE")
    bob.pay(1.0)
    results = await asyncio.gather(store.save(alice), store.save(bob), return_exceptions=True)
    assert sum(isinstance(r, eskit.ConcurrencyError) for r in results) == 1
    assert sum(isinstance(r, int) for r in results) == 1
    assert len(await store.read("o1")) == 3


async def test_a_new_aggregate_cannot_be_saved_over_an_existing_one(store: eskit.EventStore) -> None:
    await new_order(store, "o1")
    with pytest.raises(eskit.ConcurrencyError, match="expected position 0"):
        await new_order(store, "o1")


async def test_the_retry_helper_converges_when_writers_collide(store: eskit.EventStore) -> None:
    await new_order(store, "o1")
    skus = [f"S{i}" for i in range(8)]
    await asyncio.wait_for(
        asyncio.gather(
            *(eskit.run_command(store, Order, "o1", lambda o, s=s: o.add_item(s), attempts=20) for s in skus)
        ),
        timeout=20,
    )
    order = await store.load(Order, "o1")
    assert sorted(i["sku"] for i in order.items) == skus


async def test_the_retry_helper_reloads_and_decides_again_on_fresh_state(store: eskit.EventStore) -> None:
    await new_order(store, "o1", "A1")
    tries = 0

    async def pay_and_ship() -> int:
        nonlocal tries
        tries += 1
        order = await store.load(Order, "o1")
        if tries == 1:  # another writer pays between our load and our save
            await eskit.run_command(store, Order, "o1", lambda o: o.pay(1.0))
        if order.status == "pending":
            order.pay(1.0)
        order.ship("T1")
        return await store.save(order)

    await eskit.retry_on_conflict(pay_and_ship, attempts=3)
    assert tries == 2
    assert [e.type for e in await store.read("o1")] == [
        "created",
        "item_added",
        "payment_received",
        "shipped",
    ]


async def test_the_retry_helper_gives_up_after_its_attempts() -> None:
    calls = 0

    async def always_conflicts() -> None:
        nonlocal calls
        calls += 1
        raise eskit.ConcurrencyError("orders", "o1", expected=1, actual=2)

    with pytest.raises(eskit.ConcurrencyError) as caught:
        await eskit.retry_on_conflict(always_conflicts, attempts=3, base_delay=0.001)
    assert calls == 3
    assert "gave up after 3 attempts" in caught.value.__notes__[0]


def test_a_payment_that_does_not_cover_the_total_is_refused_and_records_nothing() -> None:
    order = Order("o1")
    order.create("ada")
    order.add_item("A1", qty=2, price=4.5)
    with pytest.raises(OrderError, match=r"a payment of 5\.0 does not cover the total 9\.0"):
        order.pay(5.0)
    assert [e.type for e in order.pending] == ["created", "item_added"] and order.status == "pending"
    order.pay(9.0)
    assert order.status == "paid"
