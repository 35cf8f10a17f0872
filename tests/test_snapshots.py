"""Snapshots on a real server: written by policy, used, ignored if stale or corrupt, equal to a replay."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from conftest import unique
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eskit
from eskit import Aggregate, SnapshotPolicy, applies
from eskit.examples import Order
from eskit.snapshots import key_for


class Cart(Aggregate):
    """Quantities per sku: a state that changes shape with every event type."""

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.lines: dict[str, int] = {}
        self.checked_out = 0

    @applies("added")
    def _added(self, data: dict[str, Any]) -> None:
        self.lines[data["sku"]] = self.lines.get(data["sku"], 0) + data["qty"]

    @applies("removed")
    def _removed(self, data: dict[str, Any]) -> None:
        self.lines.pop(data["sku"], None)

    @applies("checked_out")
    def _checked_out(self, data: dict[str, Any]) -> None:
        self.checked_out += 1
        self.lines = {}


class CartV2(Cart):
    snapshot_schema = 2
    snapshot_name = Cart.snapshot_name


class CountedCart(Cart):
    """A Cart that counts the events it applies (to see which ones a load read)."""

    calls = 0

    @applies("added")
    def _added(self, data: dict[str, Any]) -> None:
        CountedCart.calls += 1
        super()._added(data)


class Tags(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.tags: set[str] = set()

    @applies("tagged")
    def _tagged(self, data: dict[str, Any]) -> None:
        self.tags.add(data["tag"])


@pytest.fixture
async def snap_store(client: eskit.Client) -> AsyncIterator[eskit.EventStore]:
    name = unique("snap")
    store = await client.event_store(name, snapshots=SnapshotPolicy(every=5))
    yield store
    await client.delete_store(name)


def added(sku: str, qty: int = 1) -> eskit.Event:
    return eskit.Event("added", {"sku": sku, "qty": qty})


async def write_raw_snapshot(client: eskit.Client, store: eskit.EventStore, key: str, payload: bytes) -> None:
    assert store.snapshots is not None
    await client.js.publish(f"$KV.{store.snapshots.bucket}.{key}", payload)


async def forge(
    client: eskit.Client,
    store: eskit.EventStore,
    cls: type[Aggregate],
    aggregate_id: str,
    *,
    digest: bool = True,
    state: dict[str, Any] | None = None,
    **fields: Any,
) -> None:
    """Rewrite the stored snapshot as a forger would: some fields or the state changed, and (``digest``) its
    digest recomputed. Reads both the one-object format of older eskit and the header + state format."""
    assert store.snapshots is not None
    kv = await client.js.key_value(store.snapshots.bucket)
    raw = (await kv.get(key_for(cls, aggregate_id))).value or b""
    head, newline, body = raw.partition(b"\n")
    if not newline:  # older eskit: one JSON object
        old = json.loads(raw)
        old.update(fields)
        old["state"] = old["state"] if state is None else state
        await kv.put(key_for(cls, aggregate_id), json.dumps(old).encode())
        return
    header = json.loads(head) | fields
    new_body = body if state is None else json.dumps(state, separators=(",", ":")).encode()
    if digest:
        header |= {"digest": hashlib.sha256(new_body).hexdigest(), "state_bytes": len(new_body)}
    await kv.put(key_for(cls, aggregate_id), json.dumps(header).encode() + b"\n" + new_body)


async def test_a_snapshot_is_written_once_a_load_replays_every_n_events(snap_store: eskit.EventStore) -> None:
    assert snap_store.snapshots is not None
    await snap_store.append("c1", [added("A"), added("B", 3)])
    await snap_store.append("c1", [added("C"), added("D")])
    await snap_store.load(Cart, "c1")
    assert await snap_store.snapshots.get(Cart, "c1") is None  # 4 events: under the policy's 5
    await snap_store.append("c1", [added("E")])
    cart = await snap_store.load(Cart, "c1")
    snapshot = await snap_store.snapshots.get(Cart, "c1")
    assert snapshot is not None
    assert (snapshot.position, snapshot.version, snapshot.schema) == (cart.position, 5, 1)
    assert snapshot.state == {"lines": {"A": 1, "B": 3, "C": 1, "D": 1, "E": 1}, "checked_out": 0}


async def test_a_load_uses_the_snapshot_and_reads_only_the_events_after_it(snap_store: eskit.EventStore) -> None:
    await snap_store.append("c2", [added(s) for s in "ABCDE"])
    await snap_store.load(CountedCart, "c2")  # writes the snapshot at version 5
    await snap_store.append("c2", [added("F"), added("G")])
    CountedCart.calls = 0
    cart = await snap_store.load(CountedCart, "c2")
    assert CountedCart.calls == 2  # F and G: the five events before the snapshot were not applied again
    assert cart.version == 7 and list(cart.lines) == list("ABCDEFG")


async def test_a_slow_load_writes_a_snapshot_when_a_threshold_is_set(client: eskit.Client) -> None:
    name = unique("snap")
    store = await client.event_store(name, snapshots=SnapshotPolicy(every=None, slower_than=0.0))
    try:
        await store.append("c1", [added("A")])
        await store.load(Cart, "c1")
        assert store.snapshots is not None
        snapshot = await store.snapshots.get(Cart, "c1")
        assert snapshot is not None and snapshot.version == 1
    finally:
        await client.delete_store(name)


async def test_a_snapshot_of_another_schema_is_ignored_with_a_warning_and_replaced(
    snap_store: eskit.EventStore,
) -> None:
    await snap_store.append("c1", [added(s) for s in "ABCDEF"])
    await snap_store.load(Cart, "c1")
    with pytest.warns(eskit.SnapshotWarning, match="has schema 1, CartV2 expects 2"):
        cart = await snap_store.load(CartV2, "c1")
    assert cart.version == 6 and len(cart.lines) == 6
    assert snap_store.snapshots is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        snapshot = await snap_store.snapshots.get(CartV2, "c1")
    assert snapshot is not None and snapshot.schema == 2


@pytest.mark.parametrize(
    "payload",
    [b"\xff garbage", b'{"schema":1}', b'{"schema":1,"version":"x","position":1,"state":{}}', b"[]"],
    ids=["not-json", "missing-fields", "bad-number", "not-an-object"],
)
async def test_a_corrupt_snapshot_is_ignored_with_a_warning_never_a_crash(
    snap_store: eskit.EventStore, client: eskit.Client, payload: bytes
) -> None:
    await snap_store.append("c1", [added("A"), added("B")])
    await write_raw_snapshot(client, snap_store, key_for(Cart, "c1"), payload)
    with pytest.warns(eskit.SnapshotWarning, match="undecodable"):
        cart = await snap_store.load(Cart, "c1")
    assert cart.lines == {"A": 1, "B": 1}
    assert snap_store.snapshots is not None
    assert (await snap_store.snapshots.check(Cart, "c1")).ok  # replaced by a good one


async def test_a_restore_hook_that_fails_falls_back_to_a_full_replay(
    snap_store: eskit.EventStore, client: eskit.Client
) -> None:
    await snap_store.append("c1", [added(s) for s in "ABCDE"])
    await snap_store.load(Cart, "c1")
    await forge(client, snap_store, Cart, "c1", state={"lines": 5})

    class Strict(Cart):
        snapshot_name = Cart.snapshot_name

        def restore(self, state: Any) -> None:
            self.lines = dict(state["lines"])

    with pytest.warns(eskit.SnapshotWarning, match="restore"):
        cart = await snap_store.load(Strict, "c1")
    assert list(cart.lines) == list("ABCDE")


async def test_an_older_snapshot_never_replaces_a_newer_one(snap_store: eskit.EventStore) -> None:
    await snap_store.append("c1", [added(s) for s in "ABCDE"])
    older = await snap_store.load(Cart, "c1")
    await snap_store.append("c1", [added(s) for s in "FGHIJ"])
    newer = await snap_store.load(Cart, "c1")
    assert snap_store.snapshots is not None
    assert await snap_store.snapshots.save(older, revision=0) is False
    snapshot = await snap_store.snapshots.get(Cart, "c1")
    assert snapshot is not None and snapshot.position == newer.position


async def test_state_as_of_a_position_before_the_snapshot_replays_from_the_start(
    snap_store: eskit.EventStore,
) -> None:
    await snap_store.append("c1", [added(s) for s in "ABCDEFG"])
    await snap_store.load(Cart, "c1")
    history = await snap_store.read("c1")
    then = await snap_store.load(Cart, "c1", up_to=history[2].position)
    assert list(then.lines) == ["A", "B", "C"]
    then = await snap_store.load(Cart, "c1", up_to=history[2].timestamp)
    assert list(then.lines) == ["A", "B", "C"]
    now = await snap_store.load(Cart, "c1", up_to=history[-1].timestamp)
    assert len(now.lines) == 7


async def test_ids_that_are_not_kv_tokens_get_snapshots_too(snap_store: eskit.EventStore) -> None:
    await snap_store.append("köln:42", [added(s) for s in "ABCDE"])
    await snap_store.load(Cart, "köln:42")
    assert snap_store.snapshots is not None
    assert (await snap_store.snapshots.check(Cart, "köln:42")).ok


async def test_state_json_cannot_hold_is_a_clear_error(snap_store: eskit.EventStore) -> None:
    await snap_store.append("t1", [eskit.Event("tagged", {"tag": t}) for t in "abcde"])
    with pytest.raises(eskit.EncodeError, match="override snapshot"):
        await snap_store.load(Tags, "t1")


async def test_deleting_a_store_deletes_its_snapshots(client: eskit.Client) -> None:
    name = unique("snap")
    store = await client.event_store(name, snapshots=SnapshotPolicy(every=1))
    await store.append("o1", [eskit.Event("created", {"customer": "c"})])
    await store.load(Order, "o1")
    assert await client.delete_store(name)
    assert store.snapshots is not None
    with pytest.raises(nats.js.errors.BucketNotFoundError):
        await client.js.key_value(store.snapshots.bucket)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("added"), st.sampled_from("ABCD"), st.integers(1, 3)),
        st.tuples(st.just("removed"), st.sampled_from("ABCD"), st.just(0)),
        st.tuples(st.just("checked_out"), st.just(""), st.just(0)),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations, loads=st.lists(st.integers(1, 25), max_size=4))
async def test_snapshot_plus_tail_equals_a_full_replay_for_any_history(
    snap_store: eskit.EventStore, ops: list[tuple[str, str, int]], loads: list[int]
) -> None:
    cart_id = unique("c")
    events = [eskit.Event(kind, {"sku": sku, "qty": qty}) for kind, sku, qty in ops]
    for i, event in enumerate(events, 1):
        await snap_store.append(cart_id, [event])
        if i in loads:
            await snap_store.load(Cart, cart_id)  # snapshots land wherever the policy says
    assert snap_store.snapshots is not None
    before = await snap_store.snapshots.check(Cart, cart_id)  # snapshot (if any) + a tail
    assert before.ok or before.differences == ["no usable snapshot"], before.differences
    loaded = await snap_store.load(Cart, cart_id)
    replayed = Cart.from_events(cart_id, await snap_store.read(cart_id))
    assert (loaded.snapshot(), loaded.version, loaded.position) == (
        replayed.snapshot(),
        replayed.version,
        replayed.position,
    )
    after = await snap_store.snapshots.check(Cart, cart_id)
    assert after.ok == (len(events) >= 5), after.differences
