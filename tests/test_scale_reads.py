"""Loads that stay flat as the stream grows: an aggregate is read by literal subjects (issue 17).

nats-server answers a wildcard scan (``orders.123.>``) by walking every block from the aggregate's first
event to the stream's end; a literal subject is found through its subject index. ``load`` asks
``multi_last`` for the aggregate's subjects and the cut, and scans each subject literally (see
:mod:`eskit._bysubject`). These tests pin what must not change: every event, in order, up to one cut.
In a small stream a load reads by one wildcard scan instead (:func:`eskit._bysubject.literal`): the tests
here make every stream count as large, except those about that choice.
"""

from __future__ import annotations

from typing import Any

import pytest

import eskit
from eskit import Aggregate, _bysubject, applies
from eskit._nats.wire import Page, Wire
from eskit.examples import Order


class Ledger(Aggregate):
    """Two event types, applied in stream order."""

    on_unknown = "ignore"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.seen: list[str] = []

    @applies("noted")
    def _noted(self, data: dict[str, Any]) -> None:
        self.seen.append(f"n{data['i']}")

    @applies("marked")
    def _marked(self, data: dict[str, Any]) -> None:
        self.seen.append(f"m{data['i']}")


@pytest.fixture(autouse=True)
def every_stream_large(monkeypatch: Any) -> None:
    monkeypatch.setattr(_bysubject, "WILDCARD_UNTIL", 0)


def spy_filters(store: eskit.EventStore, monkeypatch: Any) -> list[str]:
    """The subject filters of every batch Direct Get the store's wire sends from now on."""
    seen: list[str] = []
    original = Wire.direct_get

    async def direct_get(self: Wire, stream: str, filter_subject: str, **kwargs: Any) -> Page:
        seen.append(filter_subject)
        return await original(self, stream, filter_subject, **kwargs)

    monkeypatch.setattr(Wire, "direct_get", direct_get)
    return seen


async def test_a_load_scans_literal_subjects_never_a_wildcard_that_walks_the_rest_of_the_stream(
    store: eskit.EventStore, monkeypatch: Any
) -> None:
    order = Order("o1")
    order.create("ada")
    order.add_item("A1")
    await store.save(order)
    await store.append("o2", [eskit.Event("created", {"customer": "bo"})])
    filters = spy_filters(store, monkeypatch)
    loaded = await store.load(Order, "o1")
    assert (loaded.version, loaded.items[0]["sku"]) == (2, "A1")
    assert filters and not any(f.endswith(">") or "*" in f for f in filters), filters


async def test_a_load_merges_the_types_in_stream_order_across_pages(store: eskit.EventStore) -> None:
    expected = []
    appends = []
    for i in range(2300):  # more than one 2,000-message page of "noted"
        kind = "marked" if i % 7 == 0 else "noted"
        expected.append(("m" if kind == "marked" else "n") + str(i))
        appends.append(("l1", [eskit.Event(kind, {"i": i})], None))
        appends.append(("l2", [eskit.Event("noted", {"i": -i})], None))  # another aggregate in between
    await store.append_many(appends)
    ledger = await store.load(Ledger, "l1")
    assert ledger.seen == expected
    assert ledger.position == (await store.read("l1"))[-1].position


async def test_an_event_type_the_class_does_not_handle_is_still_read_in_its_place(store: eskit.EventStore) -> None:
    await store.append("l1", [eskit.Event("noted", {"i": 1}), eskit.Event("other", {"i": 2})])
    await store.append("l1", [eskit.Event("marked", {"i": 3})])
    ledger = await store.load(Ledger, "l1")  # on_unknown = "ignore": skipped, but counted and positioned
    assert (ledger.seen, ledger.version) == (["n1", "m3"], 3)
    assert ledger.position == await store.last_position("l1")


async def test_a_load_applies_nothing_past_its_cut_so_a_racing_append_makes_the_save_conflict(
    store: eskit.EventStore, monkeypatch: Any
) -> None:
    await store.append("l1", [eskit.Event("noted", {"i": 1})])
    original = Wire.direct_last_per_subject
    raced = []

    async def multi_last(self: Wire, *args: Any, **kwargs: Any) -> Page:
        page = await original(self, *args, **kwargs)
        if not raced:  # another writer appends right after the cut was taken, before the literal scans
            raced.append(await store.append("l1", [eskit.Event("noted", {"i": 2})]))
        return page

    monkeypatch.setattr(Wire, "direct_last_per_subject", multi_last)
    ledger = await store.load(Ledger, "l1")
    monkeypatch.undo()
    assert ledger.seen == ["n1"] and ledger.position < raced[0]
    ledger.record("noted", {"i": 3})
    try:
        await store.save(ledger)
    except eskit.ConcurrencyError:
        pass
    else:
        raise AssertionError("a save on a state that misses an event was accepted")


async def test_a_scan_that_misses_what_multi_last_named_falls_back_to_the_wildcard_read(
    store: eskit.EventStore, monkeypatch: Any
) -> None:
    await store.append("l1", [eskit.Event("noted", {"i": 1}), eskit.Event("marked", {"i": 2})])
    await store.append("l1", [eskit.Event("noted", {"i": 3})])
    original = Wire.direct_get

    async def lagging(self: Wire, stream: str, filter_subject: str, **kwargs: Any) -> Page:
        page = await original(self, stream, filter_subject, **kwargs)
        if filter_subject.endswith(".noted"):  # a replica that has not stored the last "noted" yet
            return Page(page.messages[:-1], 0, page.messages[-2].seq if len(page.messages) > 1 else 0)
        return page

    monkeypatch.setattr(Wire, "direct_get", lagging)
    ledger = await store.load(Ledger, "l1")
    assert ledger.seen == ["n1", "m2", "n3"]


async def test_a_load_as_of_a_position_cuts_every_subject_there(store: eskit.EventStore) -> None:
    first = await store.append("l1", [eskit.Event("noted", {"i": 1}), eskit.Event("marked", {"i": 2})])
    await store.append("l1", [eskit.Event("noted", {"i": 3}), eskit.Event("marked", {"i": 4})])
    ledger = await store.load(Ledger, "l1", up_to=first)
    assert (ledger.seen, ledger.position) == (["n1", "m2"], first)
    assert (await store.load(Ledger, "l1", up_to=first - 1)).seen == ["n1"]


async def test_a_handled_type_the_store_has_not_met_yet_is_read_when_it_appears(store: eskit.EventStore) -> None:
    await store.append("l1", [eskit.Event("noted", {"i": 1})])
    assert (await store.load(Ledger, "l1")).seen == ["n1"]  # the store has met "noted" only
    await store.append("l1", [eskit.Event("marked", {"i": 2}), eskit.Event("noted", {"i": 3})])
    assert (await store.load(Ledger, "l1")).seen == ["n1", "m2", "n3"]


def spy_direct_gets(monkeypatch: Any) -> list[bytes]:
    """The request of every Direct Get (batch, ``multi_last``, last by subject) sent from now on, as sent."""
    sent: list[bytes] = []
    original = Wire._exchange

    async def exchange(self: Wire, subject: str, payload: bytes, *args: Any) -> Any:
        if subject.startswith("$JS.API.DIRECT.GET."):
            sent.append(payload)
        return await original(self, subject, payload, *args)

    monkeypatch.setattr(Wire, "_exchange", exchange)
    return sent


async def test_a_load_in_a_small_store_sends_one_wildcard_direct_get_not_a_request_per_event_type(
    store: eskit.EventStore, monkeypatch: Any
) -> None:
    monkeypatch.setattr(_bysubject, "WILDCARD_UNTIL", 5000)
    monkeypatch.setattr(_bysubject, "PROBE_EVERY", 3600.0)  # the store saw its end at its last append
    order = Order("o1")
    order.create("ada")
    order.add_item("A1")
    await store.save(order)
    sent = spy_direct_gets(monkeypatch)
    loaded = await store.load(Order, "o1")
    assert (loaded.version, loaded.items[0]["sku"]) == (2, "A1")
    assert len(sent) == 1 and f'"{store.name}.o1.>"'.encode() in sent[0], sent


async def test_a_load_in_a_store_past_the_threshold_reads_by_literal_subjects(
    store: eskit.EventStore, monkeypatch: Any
) -> None:
    monkeypatch.setattr(_bysubject, "WILDCARD_UNTIL", 50)
    monkeypatch.setattr(_bysubject, "PROBE_EVERY", 3600.0)
    await store.append_many([(f"x{i}", [eskit.Event("noted", {"i": i})], None) for i in range(60)])
    await store.append("l1", [eskit.Event("noted", {"i": 1}), eskit.Event("marked", {"i": 2})])
    sent = spy_direct_gets(monkeypatch)
    assert (await store.load(Ledger, "l1")).seen == ["n1", "m2"]
    assert any(b"multi_last" in r for r in sent) and not any(b'.l1.>", "batch"' in r for r in sent), sent


async def test_a_store_that_other_writers_grew_past_the_threshold_learns_it_from_its_next_literal_read(
    store: eskit.EventStore, monkeypatch: Any
) -> None:
    monkeypatch.setattr(_bysubject, "WILDCARD_UNTIL", 50)
    monkeypatch.setattr(_bysubject, "PROBE_EVERY", 3600.0)
    other = eskit.EventStore(store.client, store.name, store.stream)  # another writer: its own reader
    await other.append_many([(f"x{i}", [eskit.Event("noted", {"i": i})], None) for i in range(60)])
    await other.append("l1", [eskit.Event("noted", {"i": 1})])
    assert store.reader.reach < 50  # opened empty, it has not seen the stream grow
    assert (await store.load(Ledger, "l1")).seen == ["n1"]  # by wildcard: slower, still right
    store.reader.reached_at -= 3600.0  # its end was seen PROBE_EVERY ago: the next load reads literally
    sent = spy_direct_gets(monkeypatch)
    assert (await store.load(Ledger, "l1")).seen == ["n1"]
    assert store.reader.reach == await store.last_position() and any(b"multi_last" in r for r in sent)
    sent.clear()
    assert (await store.load(Ledger, "l1")).seen == ["n1"]
    assert any(b"multi_last" in r for r in sent), sent  # it knows the stream is large now
