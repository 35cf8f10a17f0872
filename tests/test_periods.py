"""Closing the books (eskit.periods): a long-lived aggregate in periods, each opened by what the last carried."""

from __future__ import annotations

import contextlib
import io
import itertools
import re
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

import eskit
from eskit.periods import CLOSED, OPENED, PeriodicAggregate, append_together, close_period, period_id


class Account(PeriodicAggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.balance = 0
        self.deposits = 0

    def deposit(self, amount: int) -> None:
        self.record("deposited", {"amount": amount})

    @eskit.applies("deposited")
    def _deposited(self, data: dict[str, Any]) -> None:
        self.balance += data["amount"]
        self.deposits += 1


class BalanceOnly(Account):
    """Carries the balance, not the count of deposits."""

    def carried_forward(self) -> dict[str, Any]:
        return {"balance": self.balance}


def deposits(n: int, amount: int = 1) -> list[eskit.Event]:
    return [eskit.Event("deposited", {"amount": amount}) for _ in range(n)]


async def test_a_closed_period_carries_its_state_into_the_next_which_loads_from_its_opening_event(
    store: eskit.EventStore,
) -> None:
    await store.append(period_id("acc-1", "2024"), deposits(5, 10), expected_position=0)
    opened_at = await close_period(store, Account, "acc-1", "2024", "2025")
    await store.append(period_id("acc-1", "2025"), deposits(2, 1))
    current = await store.load(Account, period_id("acc-1", "2025"))
    assert (current.balance, current.deposits, current.period, current.version) == (52, 7, "2025", 3)
    assert [e.type for e in await store.read(period_id("acc-1", "2025"))] == [OPENED, "deposited", "deposited"]
    assert (await store.read(period_id("acc-1", "2025")))[0].position == opened_at
    old = await store.load(Account, period_id("acc-1", "2024"))
    assert (old.closed_into, old.balance, [e.type for e in await store.read(old.id)][-1]) == ("2025", 50, CLOSED)


async def test_a_load_of_the_current_period_reads_that_period_only_however_many_years_came_before(
    store: eskit.EventStore,
) -> None:
    years = [str(y) for y in range(2016, 2026)]
    for year, following in itertools.pairwise(years):
        await store.append(period_id("acc-1", year), deposits(30))
        await close_period(store, Account, "acc-1", year, following)
    await store.append(period_id("acc-1", years[-1]), deposits(30))
    current = await store.load(Account, period_id("acc-1", years[-1]))
    assert current.version == 31  # the opening event and this year's 30 deposits: not 300
    assert (current.balance, current.deposits) == (300, 300)


async def test_a_class_that_carries_less_forward_opens_the_next_period_with_that_only(store: eskit.EventStore) -> None:
    await store.append(period_id("acc-1", "2024"), deposits(4, 5))
    await close_period(store, BalanceOnly, "acc-1", "2024", "2025")
    current = await store.load(BalanceOnly, period_id("acc-1", "2025"))
    assert (current.balance, current.deposits) == (20, 0)


async def test_a_closed_period_refuses_new_events_and_a_writer_that_loaded_before_the_close_gets_a_conflict(
    store: eskit.EventStore,
) -> None:
    await store.append(period_id("acc-1", "2024"), deposits(3))
    late = await store.load(Account, period_id("acc-1", "2024"))  # a writer that read before the close
    await close_period(store, Account, "acc-1", "2024", "2025")
    late.deposit(7)
    with pytest.raises(eskit.ConcurrencyError):
        await store.save(late)
    reloaded = await store.load(Account, period_id("acc-1", "2024"))
    with pytest.raises(eskit.DecisionError, match=r"closed .*'2025'.*load that period"):
        reloaded.deposit(7)
    assert (await store.load(Account, period_id("acc-1", "2025"))).balance == 3


async def test_a_close_when_the_next_period_already_has_events_stores_neither_event(store: eskit.EventStore) -> None:
    await store.append(period_id("acc-1", "2024"), deposits(3))
    await store.append(period_id("acc-1", "2025"), deposits(1))  # someone wrote into 2025 without opening it
    before = await store.last_position()
    with pytest.raises(eskit.ConcurrencyError, match=r"acc-1_2025: expected position 0"):
        await close_period(store, Account, "acc-1", "2024", "2025")
    assert await store.last_position() == before
    assert (await store.load(Account, period_id("acc-1", "2024"))).closed_into is None


async def test_a_deposit_stored_after_the_close_read_the_period_fails_the_whole_batch(store: eskit.EventStore) -> None:
    old, new = period_id("acc-1", "2024"), period_id("acc-1", "2025")
    read_at = await store.append(old, deposits(3))
    await store.append(old, deposits(1))  # arrives between the close's read and its append
    closed = eskit.Event(CLOSED, {"next": "2025", "carried": {"balance": 3}})
    opened = eskit.Event(OPENED, {"period": "2025", "previous": "2024", "carried": {"balance": 3}})
    with pytest.raises(eskit.ConcurrencyError, match=rf"acc-1_2024: expected position {read_at}"):
        await append_together(store, [(old, [closed], read_at), (new, [opened], 0)])
    assert await store.read(new) == []
    assert [e.type for e in await store.read(old)] == ["deposited"] * 4


async def test_closing_again_into_the_same_period_is_one_close_and_into_another_is_refused(
    store: eskit.EventStore,
) -> None:
    await store.append(period_id("acc-1", "2024"), deposits(2))
    first = await close_period(store, Account, "acc-1", "2024", "2025")
    assert await close_period(store, Account, "acc-1", "2024", "2025") == first
    with pytest.raises(eskit.DecisionError, match="already closed into period '2025'"):
        await close_period(store, Account, "acc-1", "2024", "2026")
    assert [e.type for e in await store.read(period_id("acc-1", "2025"))] == [OPENED]


async def test_a_retried_atomic_append_to_two_aggregates_stores_its_events_once(store: eskit.EventStore) -> None:
    a, b = deposits(1), deposits(2)
    first = await append_together(store, [("x", a, 0), ("y", b, 0)])
    assert await append_together(store, [("x", a, 0), ("y", b, 0)]) == first
    assert (len(await store.read("x")), len(await store.read("y")), await store.last_position()) == (1, 2, 3)


async def test_bad_periods_and_classes_are_refused_before_anything_is_sent(store: eskit.EventStore) -> None:
    with pytest.raises(eskit.ValidationError, match="letters, digits and '-'"):
        await close_period(store, Account, "acc-1", "2024", "2025.q1")
    with pytest.raises(eskit.ValidationError, match="must differ"):
        await close_period(store, Account, "acc-1", "2024", "2024")
    with pytest.raises(eskit.ValidationError, match="PeriodicAggregate subclass"):
        await close_period(store, eskit.Aggregate, "acc-1", "2024", "2025")  # type: ignore[type-var]
    assert await store.last_position() == 0


async def test_bad_atomic_appends_are_refused_with_one_line_before_anything_is_sent(store: eskit.EventStore) -> None:
    with pytest.raises(eskit.ValidationError, match="non-empty list"):
        await append_together(store, [])
    with pytest.raises(eskit.ValidationError, match="tuples"):
        await append_together(store, [("x", deposits(1))])  # type: ignore[list-item]
    with pytest.raises(eskit.ValidationError, match=r"\['x'\] appear more than once"):
        await append_together(store, [("x", deposits(1), 0), ("x", deposits(1), None)])
    with pytest.raises(eskit.ValidationError, match="at most 1000"):
        await append_together(store, [("x", deposits(600), 0), ("y", deposits(600), 0)])
    assert await store.last_position() == 0


async def test_a_period_loaded_from_its_snapshot_knows_it_is_closed(client: eskit.Client) -> None:
    name = f"books{uuid.uuid4().hex[:8]}"
    store = await client.event_store(name, snapshots=eskit.SnapshotPolicy(every=10))
    try:
        await store.append(period_id("acc-1", "2024"), deposits(30))
        await store.load(Account, period_id("acc-1", "2024"))  # writes a snapshot at version 30
        await close_period(store, Account, "acc-1", "2024", "2025")
        await store.load(Account, period_id("acc-1", "2024"))  # snapshot + the closing event
        closed = await store.load(Account, period_id("acc-1", "2024"))
        assert (closed.closed_into, closed.balance) == ("2025", 30)
        assert (await store.snapshots.check(Account, period_id("acc-1", "2024"))).ok
        with pytest.raises(eskit.DecisionError):
            closed.deposit(1)
    finally:
        await client.delete_store(name)


async def test_the_closing_the_books_walk_through_runs_and_prints_what_the_doc_says(client: eskit.Client) -> None:
    doc = Path(__file__).resolve().parent.parent / "docs" / "closing-the-books.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    source = "async def walk_through():\n" + textwrap.indent("\n".join(blocks), "    ") + "\n"
    namespace: dict[str, object] = {"eskit": eskit}
    exec(compile(source, str(doc), "exec"), namespace)
    await client.delete_store("books")  # a run that failed before
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            await namespace["walk_through"]()  # type: ignore[operator]
    finally:
        await client.delete_store("books")
    assert out.getvalue().splitlines() == [
        "5",
        "300 [] 1",
        "ConcurrencyError",
        "Account 'acc-1_2024' is closed (carried forward into period '2025'): load that period and record there",
    ]
