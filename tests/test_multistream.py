"""A projection fed by two stores (orders and payments): one read model, a position per store, exactly once
in effect per store, rebuilt blue/green; handlers that commute across stores give the same model whatever
the interleaving."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import unique

import eskit
from eskit import Event, applies
from eskit.events import RecordedEvent


class Fulfilment(eskit.MultiStreamProjection):
    schema = """
        CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT, paid INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE seen (store TEXT NOT NULL, position INTEGER NOT NULL, PRIMARY KEY (store, position))
    """

    def _seen(self, db: sqlite3.Connection, event: RecordedEvent) -> None:  # a second apply fails the insert
        db.execute("INSERT INTO seen VALUES (?, ?)", (self.store_of(event), event.position))

    @applies("placed")
    def _placed(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        self._seen(db, event)
        db.execute("INSERT INTO orders (id, status) VALUES (?, 'placed') "
                   "ON CONFLICT (id) DO UPDATE SET status = 'placed'", (event.aggregate_id,))  # fmt: skip

    @applies("received")
    def _received(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        self._seen(db, event)
        db.execute("INSERT INTO orders (id, paid) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET paid = paid + ?",
                   (event.data["order"], event.data["amount"], event.data["amount"]))  # fmt: skip


def table(db: sqlite3.Connection) -> list[tuple[object, ...]]:
    return db.execute("SELECT * FROM orders ORDER BY id").fetchall()


@pytest.fixture
async def payments(client: eskit.Client) -> AsyncIterator[eskit.EventStore]:
    name = unique("payments")
    yield await client.event_store(name)
    await client.delete_store(name)


async def fill(orders: eskit.EventStore, payments: eskit.EventStore, n: int, *, first: int = 0) -> tuple[int, int]:
    ids = [f"o{i}" for i in range(first, first + n)]
    paid = await payments.append_many([(f"p{i}", [Event("received", {"order": i, "amount": 10})], None) for i in ids])
    placed = await orders.append_many([(i, [Event("placed"), Event("noted")], None) for i in ids])
    return max(placed), max(paid)


async def test_one_read_model_from_two_stores_with_a_position_per_store(
    store: eskit.EventStore, payments: eskit.EventStore
) -> None:
    last_order, last_payment = await fill(store, payments, 30)  # payments first: paid before placed
    view = Fulfilment({"orders": store, "payments": payments})
    assert await view.run_until_caught_up() == 60
    assert view.positions == {"orders": last_order, "payments": last_payment}
    assert table(view.db) == [(f"o{i}", "placed", 10) for i in sorted(range(30), key=lambda i: f"o{i}")]
    stores = dict(view.db.execute("SELECT store, count(*) FROM seen GROUP BY store").fetchall())
    assert stores == {"orders": 30, "payments": 30}
    positions = dict(view.db.execute("SELECT name, position FROM eskit_positions").fetchall())
    assert positions == {f"Fulfilment:{store.name}": last_order, f"Fulfilment:{payments.name}": last_payment}
    assert view.lag == 0 and set(view.stats) == {"orders", "payments"}
    await view.close(delete_consumer=True)


async def test_a_running_multi_stream_projection_follows_both_stores(
    store: eskit.EventStore, payments: eskit.EventStore
) -> None:
    view = Fulfilment([store, payments])  # labelled by the store names
    view.start()
    try:
        paid = await payments.append("p1", [Event("received", {"order": "o1", "amount": 5})])
        await view.wait_for(payments, paid)
        assert table(view.db) == [("o1", None, 5)]  # the payment came first: handlers must not assume order
        placed = await store.append("o1", [Event("placed")])
        await view.wait_for(store.name, placed)
        assert table(view.db) == [("o1", "placed", 5)]
        with pytest.raises(eskit.ValidationError):
            await view.wait_for("shipping", 1)
    finally:
        await view.close(delete_consumer=True)


async def test_a_rebuild_switches_every_store_at_once_while_the_live_model_keeps_serving(
    store: eskit.EventStore, payments: eskit.EventStore, tmp_path: Path
) -> None:
    await fill(store, payments, 50)
    db = tmp_path / "fulfilment.db"
    view = Fulfilment({"orders": store, "payments": payments}, db=db)
    await view.run_until_caught_up()
    before, positions = table(view.db), view.positions
    view.db.execute("UPDATE orders SET paid = 0")  # damage the live model: the rebuild must repair it
    view.start()
    try:
        rebuilding = asyncio.create_task(view.rebuild())
        more = await fill(store, payments, 5, first=50)  # appended during the rebuild
        assert await rebuilding == 110
        await view.wait_for("orders", more[0])
        await view.wait_for("payments", more[1])
        assert table(view.db)[: len(before)] != [] and len(table(view.db)) == 55
        assert all(row[2] == 10 for row in table(view.db))
        assert view.positions["orders"] > positions["orders"]
        with sqlite3.connect(db) as reopened:  # the file was replaced: readers that reopen see the new model
            assert len(table(reopened)) == 55
    finally:
        await view.close(delete_consumer=True)
    assert not Path(f"{db}.rebuild").exists()


async def test_bad_stores_are_one_line_errors(store: eskit.EventStore) -> None:
    for stores in ({}, [], None, {"orders": store, "again": store}, {"orders": "orders"}):
        with pytest.raises(eskit.ValidationError) as info:
            Fulfilment(stores)  # type: ignore[arg-type]
        assert "\n" not in str(info.value)

    class Nothing(eskit.MultiStreamProjection):
        pass

    with pytest.raises(eskit.ProjectionError, match="handles no event type"):
        Nothing([store])


async def test_the_dashboard_shows_a_row_per_store_of_a_multi_stream_projection(
    store: eskit.EventStore, payments: eskit.EventStore
) -> None:
    pytest.importorskip("ipywidgets")
    await fill(store, payments, 3)
    view = Fulfilment({"orders": store, "payments": payments}, name="shown")
    await view.run_until_caught_up()
    board = eskit.dashboard(view, every=60)
    board.stop()
    html = board.render()
    assert "<td style='padding:2px 10px'>shown (orders)</td>" in html
    assert "<td style='padding:2px 10px'>shown (payments)</td>" in html
    assert board._repr_mimebundle_()["text/plain"] == "projection dashboard: shown (orders), shown (payments)"
    await view.close(delete_consumer=True)


class Picky(Fulfilment):
    fail = True

    @applies("received")
    def _received(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        if self.fail and event.data["amount"] < 0:
            raise ValueError("a negative payment")
        super()._received(db, event)


async def test_a_poison_event_is_parked_in_its_own_stores_dead_letters_and_the_other_store_goes_on(
    store: eskit.EventStore, payments: eskit.EventStore
) -> None:
    await payments.append("p1", [Event("received", {"order": "o1", "amount": -5})])
    paid = await payments.append("p2", [Event("received", {"order": "o1", "amount": 7})])
    placed = await store.append("o1", [Event("placed")])
    view = Picky({"orders": store, "payments": payments}, name=unique("picky"), max_attempts=1)
    try:
        await view.run_until_caught_up()
        assert view.positions == {"orders": placed, "payments": paid}
        assert table(view.db) == [("o1", "placed", 7)]
        parked = await view.parked()
        assert [p.position for p in parked["payments"]] == [1] and parked["orders"] == []
        assert view.stats["payments"].parked == 1 and view.stats["orders"].parked == 0
        view.fail = False
        assert await view.replay_parked() == 1
        assert table(view.db) == [("o1", "placed", 2)]
        assert (await view.parked())["payments"] == []
    finally:
        await view.close(delete_consumer=True)
        await payments.client.js.delete_stream(f"{payments.stream}_PARKED")
