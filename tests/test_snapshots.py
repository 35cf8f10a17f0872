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
from eskit.examples import Account, Order
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
    if raw.startswith(b"{"):  # older eskit: one JSON object
        old = json.loads(raw)
        old.update(fields)
        old["state"] = old["state"] if state is None else state
        await kv.put(key_for(cls, aggregate_id), json.dumps(old).encode())
        return
    old_digest, head, body = raw.split(b"\n", 2)
    header = json.dumps(json.loads(head) | fields).encode()
    signed = header + b"\n" + (body if state is None else json.dumps(state, separators=(",", ":")).encode())
    new_digest = hashlib.sha256(signed).hexdigest().encode() if digest else old_digest
    await kv.put(key_for(cls, aggregate_id), new_digest + b"\n" + signed)


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


# -- a snapshot must prove it belongs to this stream and this aggregate's history (issue 11, item 5) ---------


class Balance(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.total = 0

    @applies("deposited")
    def _deposited(self, data: dict[str, Any]) -> None:
        self.total += data["amount"]


class Elsewhere:
    class Balance(Aggregate):
        """Another aggregate class named Balance, over the same events: it counts them."""

        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.count = 0

        @applies("deposited")
        def _deposited(self, data: dict[str, Any]) -> None:
            self.count += 1


def deposits(*amounts: int) -> list[eskit.Event]:
    return [eskit.Event("deposited", {"amount": a}) for a in amounts]


async def publish_raw(client: eskit.Client, store: eskit.EventStore, aggregate_id: str, *amounts: int) -> None:
    """Events published by someone else with plain JetStream: no event id (Nats-Msg-Id)."""
    for amount in amounts:
        await client.js.publish(f"{store.name}.{aggregate_id}.deposited", json.dumps({"amount": amount}).encode())


@pytest.mark.parametrize("reopened", [False, True], ids=["same-store-object", "store-opened-again"])
@pytest.mark.parametrize("new_events", [3, 15], ids=["shorter-history", "longer-history"])
async def test_a_stream_deleted_and_recreated_outside_eskit_is_replayed_not_served_from_the_old_snapshot(
    client: eskit.Client, reopened: bool, new_events: int
) -> None:
    name = unique("snap")
    store = await client.event_store(name, snapshots=SnapshotPolicy(every=5))
    try:
        await store.append("a1", deposits(*[6] * 11, 12))  # balance 78 at version 12
        assert (await store.load(Account, "a1")).balance == 78  # writes the snapshot at position 12
        await client.js.delete_stream(store.stream)  # outside eskit: the snapshot bucket stays
        again = await client.event_store(name, snapshots=SnapshotPolicy(every=5))
        amounts = [100] * 3 if new_events == 3 else [20] * 15
        await again.append("a1", deposits(*amounts))
        with pytest.warns(eskit.SnapshotWarning, match="another stream|not from this stream's history"):
            account = await (again if reopened else store).load(Account, "a1")
        assert (account.balance, account.version) == (sum(amounts), new_events)
        with warnings.catch_warnings():  # the ignored snapshot was replaced by one of the new stream
            warnings.simplefilter("error")
            assert (await (again if reopened else store).load(Account, "a1")).balance == sum(amounts)
    finally:
        await client.delete_store(name)


async def test_a_recreated_stream_whose_events_have_no_ids_is_told_apart_by_their_store_times(
    client: eskit.Client,
) -> None:
    name = unique("snap")
    store = await client.event_store(name, snapshots=SnapshotPolicy(every=5))
    try:
        await publish_raw(client, store, "a1", *[6] * 11, 12)
        assert (await store.load(Account, "a1")).balance == 78  # snapshot at 12: an event without an id
        await client.js.delete_stream(store.stream)
        await client.event_store(name)
        await publish_raw(client, store, "a1", *[20] * 15)  # position 12 is again a1's, again without an id
        with pytest.warns(eskit.SnapshotWarning, match="not from this stream's history"):
            account = await store.load(Account, "a1")  # the same store object: its stream identity is stale
        assert (account.balance, account.version) == (300, 15)
    finally:
        await client.delete_store(name)


async def test_two_aggregate_classes_with_the_same_name_do_not_share_snapshots(snap_store: eskit.EventStore) -> None:
    assert Balance.__name__ == Elsewhere.Balance.__name__
    await snap_store.append("a1", deposits(10, 20, 30, 40, 50, 60))
    assert (await snap_store.load(Balance, "a1")).total == 210  # writes Balance's snapshot
    await snap_store.append("a1", deposits(70))
    counted = await snap_store.load(Elsewhere.Balance, "a1")  # no warning: it never sees Balance's snapshot
    assert (counted.count, counted.version, vars(counted).get("total")) == (7, 7, None)
    assert key_for(Balance, "a1") != key_for(Elsewhere.Balance, "a1")


async def test_a_snapshot_whose_position_is_beyond_the_streams_last_is_ignored_with_a_warning(
    snap_store: eskit.EventStore, client: eskit.Client
) -> None:
    await snap_store.append("c1", [added(s) for s in "ABCDE"])
    await snap_store.load(Cart, "c1")
    await forge(client, snap_store, Cart, "c1", position=999, version=50, state={"lines": {"Z": 1}, "checked_out": 0})
    with pytest.warns(eskit.SnapshotWarning, match="not from this stream's history"):
        cart = await snap_store.load(Cart, "c1")
    assert (list(cart.lines), cart.version, cart.position) == (list("ABCDE"), 5, 5)


@pytest.mark.parametrize(
    "edit", [{"state": {"lines": {"FREE": 99}, "checked_out": 0}}, {"version": 2}], ids=["state", "version"]
)
async def test_a_snapshot_edited_by_hand_is_ignored_with_a_warning(
    snap_store: eskit.EventStore, client: eskit.Client, edit: dict[str, Any]
) -> None:
    await snap_store.append("c1", [added(s) for s in "ABCDE"])
    await snap_store.load(Cart, "c1")
    await forge(client, snap_store, Cart, "c1", digest=False, **edit)
    with pytest.warns(eskit.SnapshotWarning, match="digest"):
        cart = await snap_store.load(Cart, "c1")
    assert (list(cart.lines), cart.version) == (list("ABCDE"), 5)


async def test_a_snapshot_of_another_aggregate_copied_under_this_key_is_ignored_with_a_warning(
    snap_store: eskit.EventStore, client: eskit.Client
) -> None:
    await snap_store.append("c1", [added(s) for s in "ABCDE"])
    await snap_store.append("c2", [added(s) for s in "VWXYZ"])
    await snap_store.load(Cart, "c1")
    await snap_store.load(Cart, "c2")
    assert snap_store.snapshots is not None
    kv = await client.js.key_value(snap_store.snapshots.bucket)
    await kv.put(key_for(Cart, "c1"), (await kv.get(key_for(Cart, "c2"))).value or b"")
    with pytest.warns(eskit.SnapshotWarning, match="undecodable"):
        cart = await snap_store.load(Cart, "c1")
    assert list(cart.lines) == list("ABCDE")


@pytest.mark.parametrize(
    ("key", "value"),
    [("id", "someone-else"), ("record", 1), ("snapshot_schema", 7), ("_pending", "xyz"), ("pending", [1])],
)
async def test_a_snapshot_state_key_that_is_not_a_plain_attribute_never_overwrites_it(
    snap_store: eskit.EventStore, client: eskit.Client, key: str, value: Any
) -> None:
    await snap_store.append("c1", [added(s) for s in "ABCDE"])
    await snap_store.load(Cart, "c1")
    await forge(client, snap_store, Cart, "c1", state={"lines": {"Z": 1}, "checked_out": 0, key: value})
    with pytest.warns(eskit.SnapshotWarning, match="restore"):
        cart = await snap_store.load(Cart, "c1")
    assert (cart.id, cart.pending, cart.snapshot_schema, callable(cart.record)) == ("c1", (), 1, True)
    assert list(cart.lines) == list("ABCDE")  # replayed, not the snapshot's state


def with_header(state: bytes) -> bytes:
    """A snapshot value with a right digest, a header that says its format, and ``state`` as it is."""
    signed = b'{"format":2}\n' + state
    return hashlib.sha256(signed).hexdigest().encode() + b"\n" + signed


@pytest.mark.parametrize(
    "payload",
    [b"[" * 100_000, b'{"a":' * 100_000, with_header(b'{"a":' + b"[" * 100_000), with_header(b"[" * 5000)],
    ids=["open-brackets", "open-objects", "deep-state", "deep-state-array"],
)
async def test_a_snapshot_nested_too_deep_is_ignored_with_a_warning_never_a_recursion_error(
    snap_store: eskit.EventStore, client: eskit.Client, payload: bytes
) -> None:
    await snap_store.append("c1", [added("A"), added("B")])
    await write_raw_snapshot(client, snap_store, key_for(Cart, "c1"), payload)
    with pytest.warns(eskit.SnapshotWarning, match="undecodable"):
        cart = await snap_store.load(Cart, "c1")
    assert cart.lines == {"A": 1, "B": 1}


async def test_a_state_nested_deeper_than_a_snapshot_may_hold_is_a_clear_error(snap_store: eskit.EventStore) -> None:
    deep: Any = "bottom"
    for _ in range(150):
        deep = [deep]
    await snap_store.append("d1", [eskit.Event("added", {"sku": "A", "qty": 1})] * 1)
    cart = await snap_store.load(Cart, "d1")
    cart.lines = {"A": deep}  # type: ignore[dict-item]
    assert snap_store.snapshots is not None
    with pytest.raises(eskit.EncodeError, match="nests deeper than 100"):
        await snap_store.snapshots.save(cart)


def json_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(json_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(json_depth, value), default=0)
    return 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\\\ab\n\u00e9', max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\\\k'), inner, max_size=3),
    max_leaves=40,
)


@settings(max_examples=200, deadline=None)
@given(value=json_values, limit=st.integers(0, 6))
def test_the_depth_check_agrees_with_a_parser_on_any_json(value: Any, limit: int) -> None:
    from eskit._snapshotformat import nesting_within

    for raw in (json.dumps(value).encode(), json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()):
        assert nesting_within(raw, limit) == (json_depth(value) <= limit), raw


async def test_a_snapshot_written_by_a_store_that_missed_a_recreation_is_set_right_by_the_next_load(
    client: eskit.Client,
) -> None:
    name = unique("snap")
    stale = await client.event_store(name, snapshots=SnapshotPolicy(every=5))
    try:
        await client.js.delete_stream(stale.stream)
        fresh = await client.event_store(name, snapshots=SnapshotPolicy(every=5))
        await fresh.append("a1", deposits(*[10] * 6))
        assert (await stale.load(Account, "a1")).balance == 60  # writes a snapshot naming the old stream
        with pytest.warns(eskit.SnapshotWarning, match="another stream"):
            assert (await fresh.load(Account, "a1")).balance == 60  # once: it writes a right one
        await fresh.append("a1", deposits(1))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert (await fresh.load(Account, "a1")).balance == 61
            assert (await stale.load(Account, "a1")).balance == 61  # it learns the new identity, silently
    finally:
        await client.delete_store(name)


async def test_a_load_as_of_a_position_at_or_after_the_snapshot_uses_it_and_equals_a_replay(
    snap_store: eskit.EventStore,
) -> None:
    await snap_store.append("c1", [added(s) for s in "ABCDEFG"])
    await snap_store.load(CountedCart, "c1")  # snapshot at the 7th event
    await snap_store.append("c1", [added(s) for s in "HIJ"])
    history = await snap_store.read("c1")
    for event in history[6:]:
        CountedCart.calls = 0
        then = await snap_store.load(CountedCart, "c1", up_to=event.position)
        replayed = Cart.from_events("c1", [e for e in history if e.position <= event.position])
        assert (then.lines, then.version, then.position) == (replayed.lines, replayed.version, replayed.position)
        assert CountedCart.calls == history.index(event) - 6  # only the events after the snapshot


def test_the_snapshot_format_and_mark_doctests_pass() -> None:
    import doctest

    from eskit import _marks, _snapshotformat

    for module in (_marks, _snapshotformat):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__
