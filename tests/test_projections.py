"""Projections on the real server: exactly once in effect, poison events parked, rebuilds, independence."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from projection_worker import Totals, fill, rows

import eskit
from eskit.aggregate import applies
from eskit.events import RecordedEvent
from eskit.projections import Projection


@pytest.fixture
async def parked_store(client: eskit.Client, store: eskit.EventStore) -> AsyncIterator[eskit.EventStore]:
    """The ``store`` fixture, with its dead-letter stream deleted afterwards too."""
    yield store
    await client.delete_store(f"{store.name}_parked")


class Picky(Totals):
    """Totals whose shipped handler fails for one order, as a buggy handler would."""

    bad_order = "o3"

    @applies("shipped")
    def _shipped(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        if event.aggregate_id == self.bad_order:
            raise KeyError("tracking")
        super()._shipped(db, event)


async def test_a_projection_applies_every_event_once_and_stores_its_position(store: eskit.EventStore) -> None:
    last = await fill(store, 20)
    view = Totals(store)
    assert await view.run_until_caught_up() == 100
    assert view.position == last
    assert dict(view.db.execute("SELECT kind, n FROM totals").fetchall()) == {
        "created": 20, "item_added": 60, "shipped": 20}  # fmt: skip
    assert view.db.execute("SELECT sum(items) FROM orders").fetchone() == (120,)
    assert view.stats.lag == 0 and view.stats.applied == 100
    await view.close()


async def test_a_redelivered_batch_is_skipped_not_applied_twice(store: eskit.EventStore) -> None:
    await fill(store, 10)  # 50 events
    view = Totals(store, batch_size=50, ack_wait=0.3)
    await view.step(ack=False)  # committed, never acknowledged: as if the ack was lost on the way
    await view.run_until_caught_up(timeout=20)  # the server redelivers the batch after ack_wait
    assert view.stats.redelivered == 50 and view.stats.skipped == 50
    assert view.stats.applied == 50
    assert dict(view.db.execute("SELECT kind, n FROM totals").fetchall())["item_added"] == 30
    await view.close()


async def test_a_projection_reopened_on_its_file_goes_on_from_its_position(
    store: eskit.EventStore, tmp_path: Path
) -> None:
    await fill(store, 4)
    first = Totals(store, db=tmp_path / "v.db")
    await first.run_until_caught_up()
    await first.close()
    last = await fill(store, 2, first=4)
    again = Totals(store, db=tmp_path / "v.db")
    assert await again.run_until_caught_up() == 10
    assert again.position == last
    assert dict(again.db.execute("SELECT kind, n FROM totals").fetchall())["created"] == 6
    await again.close()


async def test_a_fresh_read_model_gets_everything_even_from_a_used_consumer(store: eskit.EventStore) -> None:
    await fill(store, 3)
    used = Totals(store)
    await used.run_until_caught_up()
    await used.close()  # a :memory: model is gone, but its durable consumer has acknowledged everything
    fresh = Totals(store)
    assert await fresh.run_until_caught_up() == 15
    assert dict(fresh.db.execute("SELECT kind, n FROM totals").fetchall())["created"] == 3
    await fresh.close(delete_consumer=True)
    assert not await fresh._consumer.delete()  # nothing left behind


async def test_a_handler_that_keeps_raising_is_parked_with_its_reason_and_the_rest_is_applied(
    parked_store: eskit.EventStore,
) -> None:
    await fill(parked_store, 6)
    view = Picky(parked_store, retry_delay=0.001)
    await view.run_until_caught_up()
    [parked] = await view.parked()
    assert parked.position == (await parked_store.read("o3"))[-1].position
    assert (parked.type, parked.event.aggregate_id, parked.attempts) == ("shipped", "o3", 3)
    assert parked.reason == "Picky._shipped raised KeyError: 'tracking'"
    assert parked.event.data == {"tracking": "T3"}
    assert view.position == 30 and view.stats.parked == 1 and view.stats.applied == 29
    assert view.db.execute("SELECT count(*) FROM orders WHERE status = 'shipped'").fetchone() == (5,)
    await view.close()


async def test_a_parked_event_is_applied_by_replay_parked_once_the_handler_is_fixed(
    parked_store: eskit.EventStore,
) -> None:
    await fill(parked_store, 4)
    view = Picky(parked_store, retry_delay=0.001)
    await view.run_until_caught_up()
    assert len(await view.parked()) == 1
    view.bad_order = "none"  # the fix
    assert await view.replay_parked() == 1
    assert await view.parked() == []
    assert view.db.execute("SELECT status FROM orders WHERE id = 'o3'").fetchone() == ("shipped",)
    await view.close()


async def test_an_event_parked_again_after_its_dead_letter_was_removed_is_parked_again(
    parked_store: eskit.EventStore,
) -> None:
    await fill(parked_store, 4)
    view = Picky(parked_store, retry_delay=0.001)
    await view.run_until_caught_up()
    [parked] = await view.parked()
    await view.dead_letters.remove(parked)
    assert await view.dead_letters.park(view.name, parked.event, reason="again", attempts=1)
    assert [p.reason for p in await view.parked()] == ["again"]  # stored, not swallowed as a duplicate id
    await view.close()


async def test_an_undecodable_event_is_parked_at_once_and_kept_byte_for_byte(
    client: eskit.Client, parked_store: eskit.EventStore
) -> None:
    await fill(parked_store, 2)
    await client.nc.publish(f"{parked_store.name}.o9.created", b"\xffnot json")
    await client.nc.flush()
    await fill(parked_store, 1, first=2)
    view = Totals(parked_store)
    await view.run_until_caught_up()
    [parked] = await view.parked()
    assert parked.position == 11 and parked.attempts == 1 and parked.event.raw == b"\xffnot json"
    assert parked.reason.startswith("undecodable event: payload is not JSON")
    assert view.stats.applied == 15 and view.position == 16
    await view.close()


async def test_a_rebuild_switches_without_a_window_where_queries_fail(
    store: eskit.EventStore, tmp_path: Path
) -> None:
    await fill(store, 200)
    path = tmp_path / "live.db"
    view = Totals(store, db=path, batch_size=100)
    await view.run_until_caught_up()
    view.start()
    errors: list[BaseException] = []
    reads = {"task": 0, "thread": 0}
    done = threading.Event()

    def read_in_a_thread() -> None:  # another reader: its own connection to the file, opened per query
        while not done.is_set() and reads["thread"] < 100_000:
            try:
                with sqlite3.connect(path) as db:
                    db.execute("SELECT count(*) FROM orders").fetchone()
                reads["thread"] += 1
            except Exception as exc:
                errors.append(exc)
            time.sleep(0.001)

    async def read_in_the_loop() -> None:
        while not done.is_set():
            try:
                assert view.db.execute("SELECT count(*) FROM orders").fetchone()[0] >= 200
                reads["task"] += 1
            except Exception as exc:
                errors.append(exc)
            await asyncio.sleep(0)

    thread = threading.Thread(target=read_in_a_thread)
    thread.start()
    reader = asyncio.ensure_future(read_in_the_loop())
    writer = asyncio.ensure_future(fill(store, 100, first=200))
    try:
        assert await view.rebuild() >= 1000
        await writer
    finally:
        done.set()
        await reader
        thread.join(10)
    await view.stop()
    await view.run_until_caught_up()
    clean = Totals(store, name="clean")
    await clean.run_until_caught_up()
    assert errors == []
    assert reads["task"] > 0 and reads["thread"] > 0
    assert rows(view.db) == rows(clean.db) and view.position == clean.position
    assert not Path(f"{path}.rebuild").exists()
    await view.close()
    await clean.close()


async def test_a_rebuild_drops_parked_copies_of_events_it_could_apply(parked_store: eskit.EventStore) -> None:
    await fill(parked_store, 4)
    view = Picky(parked_store, retry_delay=0.001)
    await view.run_until_caught_up()
    view.bad_order = "none"
    assert await view.rebuild() == 20
    assert await view.parked() == []
    assert view.db.execute("SELECT count(*) FROM orders WHERE status = 'shipped'").fetchone() == (4,)
    await view.close()


async def test_several_projections_on_one_stream_are_independent(parked_store: eskit.EventStore) -> None:
    await fill(parked_store, 5)
    good, picky = Totals(parked_store, name="good"), Picky(parked_store, name="picky", retry_delay=0.001)
    good.start()
    await picky.run_until_caught_up()
    await picky.close(delete_consumer=True)
    await fill(parked_store, 5, first=5)
    for _ in range(200):  # bounded: at most ~10 s
        if good.position == 50:
            break
        await asyncio.sleep(0.05)
    await good.stop()
    assert good.stats.applied == 50 and good.stats.parked == 0 and picky.stats.parked == 1
    assert [p.projection for p in await good.dead_letters.list()] == ["picky"]
    await good.close()


async def test_a_projection_applies_only_its_event_types_and_moves_past_the_rest(store: eskit.EventStore) -> None:
    class Shipments(Projection):
        schema = "CREATE TABLE shipped (id TEXT PRIMARY KEY)"

        @applies("shipped")
        def _shipped(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
            db.execute("INSERT INTO shipped VALUES (?)", (event.aggregate_id,))

    await fill(store, 3)
    view = Shipments(store)
    assert await view.run_until_caught_up() == 3
    assert view.position == 15
    await view.close()


async def test_lag_is_the_number_of_events_not_yet_delivered(store: eskit.EventStore) -> None:
    await fill(store, 10)
    view = Totals(store, batch_size=20)
    await view.step(wait=2.0)  # a full batch of 20 (waiting, not racing the server's first delivery)
    try:
        assert view.stats.applied == 20
        assert view.lag == 30  # from the batch's own metadata: exact
        # the server's view also counts what is delivered but not yet acked (acks and a prefetch in flight)
        assert 30 <= await view.fetch_lag() <= 50
        await view.run_until_caught_up()
        assert view.lag == 0 and await view.fetch_lag() == 0
    finally:
        await view.close()


async def test_a_projection_without_handlers_is_refused(store: eskit.EventStore) -> None:
    class Empty(Projection):
        schema = "CREATE TABLE t (x)"

    with pytest.raises(eskit.errors.ProjectionError, match="handles no event type"):
        Empty(store)


async def test_a_background_projection_applies_new_events_as_they_arrive(store: eskit.EventStore) -> None:
    view = Totals(store, max_wait=0.2)
    view.start()
    with pytest.raises(eskit.errors.ProjectionError, match="already running"):
        view.start()
    await fill(store, 2)
    for _ in range(200):
        if view.position == 10:
            break
        await asyncio.sleep(0.02)
    assert view.running and view.position == 10
    await view.stop()
    assert not view.running and view.stats.error is None
    await view.close()


async def test_a_rebuild_leaves_no_consumer_behind(client: eskit.Client, store: eskit.EventStore) -> None:
    await fill(store, 3)
    view = Totals(store, name="only")
    await view.run_until_caught_up()
    assert await view.rebuild() == 15
    names = [c.name for c in await client.js.consumers_info(store.stream)]
    assert names == ["projection-only"]
    await view.close(delete_consumer=True)
    assert await client.js.consumers_info(store.stream) == []


async def test_the_dashboard_shows_each_projections_stats(store: eskit.EventStore) -> None:
    await fill(store, 2)
    view = Totals(store, name="shown")
    await view.run_until_caught_up()
    board = eskit.dashboard(view, every=60)  # no refresh during the test: render() is what a refresh shows
    board.stop()
    html = board.render()
    assert "<td style='padding:2px 10px'>shown</td>" in html
    assert "<td style='padding:2px 10px'>10</td>" in html  # position and applied
    await view.close()


async def test_a_projection_passes_over_events_deleted_from_a_store_that_allows_it(client: eskit.Client) -> None:
    name = f"holes{time.monotonic_ns()}"
    store = await client.event_store(name, allow_delete_history=True)
    try:
        last = await fill(store, 4)  # 20 events
        for seq in (2, 3, 7, 9, 11, 13, 15, 16):  # more holes than one batch reads one by one
            await client.js.delete_msg(store.stream, seq)
        view = Totals(store, batch_size=6)
        await view.run_until_caught_up()
        assert view.position == last and view.stats.recovered == 0
        assert sum(n for _, n in view.db.execute("SELECT kind, n FROM totals")) == 20 - 8
        await view.close(delete_consumer=True)
    finally:
        await client.delete_store(name)
