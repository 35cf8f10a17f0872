"""Integration events: a public stream the server fills from chosen types of a private store (no second
write), and a republishing projection that publishes a curated shape exactly once in effect."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import unique

import eskit
from eskit import Event, applies
from eskit.events import RecordedEvent


@pytest.fixture
async def public_name(client: eskit.Client, store: eskit.EventStore) -> AsyncIterator[str]:
    name = f"{store.name}-public"
    yield name
    reply = await client.wire.request(f"$JS.API.STREAM.DELETE.{name.upper()}", b"")
    assert reply is not None


async def fill(store: eskit.EventStore) -> int:
    await store.append("1", [Event("placed", {"total": 5, "email": "ada@example.com"}), Event("noted", {"x": 1})])
    await store.append("2", [Event("placed", {"total": 7, "email": "bob@example.com"})])
    return await store.append("1", [Event("shipped", {"tracking": "T1"})])


async def test_the_public_stream_holds_only_the_chosen_types_whole_and_in_order(
    client: eskit.Client, store: eskit.EventStore, public_name: str
) -> None:
    last = await fill(store)
    public = await client.publish_integration(store, public_name, types=["placed", "shipped"])
    assert public.types == ("placed", "shipped") and public.source == store.name and public.name == public_name
    copied = await public.wait_for(last)
    events = [e async for e in public.store.replay()]
    assert [(e.aggregate_id, e.type) for e in events] == [("1", "placed"), ("2", "placed"), ("1", "shipped")]
    assert copied == 3 and [e.position for e in events] == [1, 2, 3]  # the public store's own positions
    private = {e.id: e for e in [e async for e in store.replay()]}
    for event in events:  # whole events: the same id, data and time of occurrence
        assert (event.data, event.occurred_at) == (private[event.id].data, private[event.id].occurred_at)
    assert [e.type for e in await public.store.read("1")] == ["placed", "shipped"]
    assert await public.lag() == 0 and await public.source_position() == last


async def test_events_appended_later_reach_the_public_stream_and_nobody_appends_to_it(
    client: eskit.Client, store: eskit.EventStore, public_name: str
) -> None:
    public = await client.publish_integration(store, public_name, types=["shipped"])
    assert await public.wait_for() == 0  # nothing to copy yet
    for i in range(20):
        position = await store.append(f"o{i}", [Event("placed"), Event("shipped", {"n": i})])
    assert await public.wait_for(position) == 20
    assert [e.data["n"] async for e in public.store.replay()] == list(range(20))
    with pytest.raises(eskit.StreamNotFoundError):
        await public.store.append("x", [Event("shipped")])
    reader = await client.public_store(public_name)
    assert len([e async for e in reader.replay()]) == 20
    with pytest.raises(eskit.EventStoreError, match=r"is a public stream of .*client\.public_store"):
        await client.event_store(public_name)  # not a store anyone appends to
    upcasters = eskit.Upcasters()  # the partner's own: the copies are the events as stored (v1)
    upcasters.register("shipped", from_version=1)(lambda data: {**data, "carrier": "unknown"})
    upcast = await client.public_store(public_name, upcasters=upcasters)
    assert [(e.schema_version, e.data["carrier"]) for e in await upcast.read("o3")] == [(2, "unknown")]
    with pytest.raises(eskit.ValidationError):
        await client.public_store(public_name, upcasters="yes")  # type: ignore[arg-type]


async def test_publishing_again_with_the_same_types_opens_it_and_bad_input_is_one_line_error(
    client: eskit.Client, store: eskit.EventStore, public_name: str
) -> None:
    await fill(store)
    first = await client.publish_integration(store, public_name, types=["placed"])
    again = await client.publish_integration(store, public_name, types=["placed"])
    assert (again.stream, again.types) == (first.stream, first.types)
    for types in ([], "placed", ["bad type"], None):
        with pytest.raises(eskit.ValidationError) as info:
            await client.publish_integration(store, public_name, types=types)  # type: ignore[arg-type]
        assert "\n" not in str(info.value)
    with pytest.raises(eskit.ValidationError):
        await client.publish_integration(store, store.name, types=["placed"])
    other = await client.event_store(unique("orders"))
    try:
        with pytest.raises(eskit.EventStoreError, match="not a public stream"):
            await client.publish_integration(other, public_name, types=["placed"])
        with pytest.raises(eskit.EventStoreError, match="not a public stream"):
            await client.public_store(other.name)  # a private store is not opened as a public one
    finally:
        await client.delete_store(other.name)
    with pytest.raises(eskit.StreamNotFoundError):
        await client.public_store(unique("nothing"))


async def test_asking_for_other_types_on_a_public_store_is_refused_not_a_second_copy_of_its_history(
    client: eskit.Client, store: eskit.EventStore, public_name: str
) -> None:
    """nats-server copies a source's history again when its transforms change (the old types twice)."""
    await fill(store)
    public = await client.publish_integration(store, public_name, types=["placed"])
    await public.wait_for()
    with pytest.raises(eskit.EventStoreError, match="new name") as info:
        await client.publish_integration(store, public_name, types=["placed", "shipped"])
    assert "\n" not in str(info.value)
    reordered = await client.publish_integration(store, public_name, types=["placed", "placed"])
    assert reordered.types == ("placed",)
    wider = await client.publish_integration(store, f"{public_name}-v2", types=["placed", "shipped"])
    try:
        await wider.wait_for()
        assert [(e.aggregate_id, e.type) async for e in wider.store.replay()] == [
            ("1", "placed"), ("2", "placed"), ("1", "shipped")]  # fmt: skip
        assert [e.type async for e in public.store.replay()] == ["placed", "placed"]
    finally:
        assert await wider.delete()
    assert not await wider.delete()


class PublicOrders(eskit.Republisher):
    @applies("placed")
    def _placed(self, event: RecordedEvent) -> Event:
        return Event("placed", {"total": event.data["total"]})  # no e-mail

    @applies("shipped")
    def _shipped(self, event: RecordedEvent) -> Event | None:
        return None if event.data.get("internal") else Event("shipped", {})


class CrashAfterAppend(PublicOrders):
    """Dies after appending the outbox and before emptying it (once)."""

    def _forget(self, seq: int) -> None:
        raise RuntimeError("killed between the public append and emptying the outbox")


async def test_a_republisher_that_died_after_appending_publishes_nothing_twice_even_past_the_duplicate_window(
    client: eskit.Client, store: eskit.EventStore, tmp_path: Path
) -> None:
    await fill(store)
    await store.append("2", [Event("shipped", {"internal": True})])
    target = await client.event_store(unique("public"))
    db = tmp_path / "republisher.db"
    try:
        crashing = CrashAfterAppend(store, target, db=db, name="public_orders")
        with pytest.raises(RuntimeError, match="killed"):
            await crashing.run_until_caught_up()
        assert crashing.outbox == 3 and crashing.position == 5  # committed with the position, appended, not emptied
        crashing._model.close()
        restarted = PublicOrders(store, target, db=db, name="public_orders")
        await restarted.run_until_caught_up()
        assert restarted.outbox == 0
        assert restarted.published == 0  # found in the public store, not left to the duplicate window
        events = [e async for e in target.replay()]
        assert [(e.aggregate_id, e.type, e.data) for e in events] == [
            ("1", "placed", {"total": 5}), ("2", "placed", {"total": 7}), ("1", "shipped", {})]  # fmt: skip
        private = [e async for e in store.replay()]
        assert events[0].causation_id == private[0].id and events[0].occurred_at == private[0].occurred_at
        with sqlite3.connect(db) as check:
            assert check.execute("SELECT count(*) FROM eskit_outbox").fetchone() == (0,)
        with pytest.raises(eskit.ProjectionError, match="publish them again"):
            await restarted.rebuild()
        await restarted.close(delete_consumer=True)
    finally:
        await client.delete_store(target.name)


def test_the_public_config_sources_with_one_transform_per_type_and_no_subjects() -> None:
    from types import SimpleNamespace

    from eskit.integration.public import public_config

    config = public_config(SimpleNamespace(name="orders", stream="ORDERS"), "orders-public",  # type: ignore[arg-type]
                           ["placed", "shipped"], replicas=1)  # fmt: skip
    assert config["subjects"] == [] and config["deny_delete"] and config["allow_direct"]
    assert json.dumps(config["sources"][0]["subject_transforms"][1]) == (
        '{"src": "orders.*.shipped", "dest": "orders-public.{{wildcard(1)}}.shipped"}'
    )


class Careless(eskit.Republisher):
    @applies("placed")
    def _placed(self, event: RecordedEvent) -> Event:
        note = "line\nbreak" if event.aggregate_id == "1" else "fine"  # a header value that cannot be sent
        return Event("placed", {"total": event.data["total"]}, metadata={"note": note})


async def test_a_public_shape_that_cannot_be_sent_is_parked_when_staged_not_retried_forever_by_every_flush(
    client: eskit.Client, store: eskit.EventStore
) -> None:
    await fill(store)
    target = await client.event_store(unique("public"))
    view = Careless(store, target, name=unique("careless"), max_attempts=1)
    try:
        await view.run_until_caught_up(timeout=10)
        assert [p.event.aggregate_id for p in await view.parked()] == ["1"] and view.outbox == 0
        assert [(e.aggregate_id, e.metadata) async for e in target.replay()] == [("2", {"note": "fine"})]
    finally:
        await view.close(delete_consumer=True)
        await client.delete_store(target.name)
        await client.js.delete_stream(f"{store.stream}_PARKED")


class Numbered(eskit.Republisher):
    """Keeps a table of its own (the public sequence number per order), in the outbox's transaction."""

    schema = "CREATE TABLE numbers (id TEXT PRIMARY KEY, n INTEGER NOT NULL)"

    @applies("placed")
    def _placed(self, event: RecordedEvent) -> Event:
        self.db.execute("INSERT INTO numbers VALUES (?, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1",
                        (event.aggregate_id,))  # fmt: skip
        [(n,)] = self.db.execute("SELECT n FROM numbers WHERE id = ?", (event.aggregate_id,)).fetchall()
        return Event("placed", {"n": n})


async def test_a_republisher_keeps_tables_of_its_own_beside_the_outbox(
    client: eskit.Client, store: eskit.EventStore
) -> None:
    await fill(store)
    await store.append("1", [Event("placed", {"total": 1})])
    target = await client.event_store(unique("public"))
    view = Numbered(store, target, name=unique("numbered"))
    try:
        await view.run_until_caught_up(timeout=10)
        assert [(e.aggregate_id, e.data["n"]) async for e in target.replay()] == [("1", 1), ("2", 1), ("1", 2)]
    finally:
        await view.close(delete_consumer=True)
        await client.delete_store(target.name)


class PublicCustomers(eskit.Republisher):
    @applies("registered")
    def _registered(self, event: RecordedEvent) -> Event:
        return Event("registered", {"customer": event.data["customer"], "email": event.data["email"]})


async def test_personal_fields_stay_encrypted_in_a_sourced_public_stream_and_a_republisher_seals_them_too(
    client: eskit.Client,
) -> None:
    pytest.importorskip("cryptography")
    bucket = unique("keys")
    personal = eskit.Personal({"registered": ["email"]}, subject="customer", bucket=bucket)
    customers = await client.event_store(unique("customers"), privacy=personal)
    sourced = await client.publish_integration(customers, f"{customers.name}-public", types=["registered"])
    target = await client.event_store(unique("public"), privacy=personal)
    view = PublicCustomers(customers, target, name=unique("customers"))
    try:
        await customers.append("c1", [Event("registered", {"customer": "c1", "email": "ann@example.com"})])
        await sourced.wait_for()
        await view.run_until_caught_up(timeout=10)
        for stream in (sourced.stream, target.stream):  # what the servers hold: ciphertext, never the address
            raw = json.loads((await client.js.get_msg(stream, 1, direct=True)).data)
            assert raw["email"].startswith("eskit-pii:") and raw["customer"] == "c1", stream
        assert [e.data["email"] for e in await target.read("c1")] == ["ann@example.com"]  # its key opens it
        copied = (await sourced.store.read("c1"))[0].data["email"]  # bound to the private store: opaque here
        assert copied.startswith("eskit-pii:") and "ann" not in copied
        assert await eskit.forget(client, "c1", bucket=bucket)
        assert [e.data["email"] for e in await target.read("c1")] == [eskit.FORGOTTEN]
    finally:
        await view.close(delete_consumer=True)
        await sourced.delete()
        for name in (customers.name, target.name):
            await client.delete_store(name)
        await client.js.delete_key_value(bucket)


class DiesBeforeFlushing(PublicCustomers):
    """Dies after its batch was staged in the outbox (committed with the position) and before the flush."""

    async def flush(self) -> int:
        if self.outbox:
            raise RuntimeError("killed before the outbox was appended")
        return await super().flush()


async def test_a_republisher_does_not_bring_back_a_forgotten_subject_it_staged_before_the_forget(
    client: eskit.Client, tmp_path: Path
) -> None:
    """The outbox holds the shape decrypted; flushed after the forget, the seal made the subject a new key and
    the public store showed the forgotten e-mail address to everyone, readable for good."""
    pytest.importorskip("cryptography")
    bucket = unique("keys")
    personal = eskit.Personal({"registered": ["email"]}, subject="customer", bucket=bucket)
    customers = await client.event_store(unique("customers"), privacy=personal)
    target = await client.event_store(unique("public"), privacy=personal)
    db, name = tmp_path / "republisher.db", unique("customers")
    try:
        await customers.append("c1", [Event("registered", {"customer": "c1", "email": "ann@example.com"})])
        await customers.append("c2", [Event("registered", {"customer": "c2", "email": "bob@example.com"})])
        dying = DiesBeforeFlushing(customers, target, db=db, name=name)
        with pytest.raises(RuntimeError, match="killed"):
            await dying.run_until_caught_up(timeout=10)
        assert dying.outbox == 2
        dying._model.close()
        assert await eskit.forget(client, "c1", bucket=bucket)
        restarted = PublicCustomers(customers, target, db=db, name=name)
        try:
            await restarted.run_until_caught_up(timeout=10)
            assert restarted.outbox == 0
            assert [e.data["email"] for e in await target.read("c1")] == [eskit.FORGOTTEN]
            assert [e.data["email"] for e in await target.read("c2")] == ["bob@example.com"]
            assert await customers.privacy.ring.history("c1") == [{"seq": pytest.approx(0, abs=10**9), "bytes": 0}]
        finally:
            await restarted.close(delete_consumer=True)
    finally:
        for store_name in (customers.name, target.name):
            await client.delete_store(store_name)
        await client.js.delete_key_value(bucket)



class FailsOnceHalfWay(PublicOrders):
    """Its next flush finds its second row refused (sent where no stream listens), once."""

    fail_next = False

    async def flush(self) -> int:
        rows = self.db.execute("SELECT seq, subject FROM eskit_outbox ORDER BY seq").fetchall()
        if not self.fail_next or len(rows) < 2:
            return await super().flush()
        self.fail_next = False
        (seq, subject) = rows[1]
        self.db.execute("UPDATE eskit_outbox SET subject = ? WHERE seq = ?", (unique("nowhere") + ".x.y", seq))
        try:
            return await super().flush()
        finally:
            self.db.execute("UPDATE eskit_outbox SET subject = ? WHERE seq = ?", (subject, seq))  # repaired


async def test_a_republisher_whose_flush_failed_half_way_does_not_publish_the_first_half_again_after_the_window(
    client: eskit.Client, store: eskit.EventStore, tmp_path: Path
) -> None:
    """A flush that failed on one row (after the rows before it were appended) left them all in the outbox; the
    next flush sent them all again, relying on the duplicate window only: after it, they were stored twice."""
    await fill(store)
    target = await client.event_store(unique("public"), duplicate_window=0.1)  # the shortest nats-server takes
    view = FailsOnceHalfWay(store, target, db=tmp_path / "republisher.db", name=unique("public_orders"))
    try:
        await view.run_until_caught_up(timeout=10)
        assert await target.last_position() == 3
        await store.append("3", [Event("placed", {"total": 1})])
        await store.append("4", [Event("placed", {"total": 2})])
        view.fail_next = True
        with pytest.raises(eskit.EventStoreError, match="no stream listens"):
            await view.run_until_caught_up(timeout=10)  # order 3 appended, order 4 refused
        assert await target.last_position() == 4 and view.outbox == 2
        failed_at = time.monotonic()
        while time.monotonic() - failed_at < 0.3:  # the target's duplicate window (0.1 s) has passed
            await asyncio.sleep(0.05)
        await view.run_until_caught_up(timeout=10)
        assert [(e.aggregate_id, e.type) async for e in target.replay()] == [
            ("1", "placed"), ("2", "placed"), ("1", "shipped"), ("3", "placed"), ("4", "placed")]  # fmt: skip
    finally:
        await view.close(delete_consumer=True)
        await client.delete_store(target.name)


class NoSubject(eskit.Republisher):
    @applies("registered")
    def _registered(self, event: RecordedEvent) -> Event:
        if event.data["customer"] == "c1":
            return Event("registered", {"email": event.data["email"]})  # a personal field, no subject id
        return Event("registered", {"customer": event.data["customer"], "email": event.data["email"]})


async def test_a_republisher_shape_with_a_personal_field_but_no_subject_id_is_parked_not_stuck_in_the_outbox(
    client: eskit.Client,
) -> None:
    """It was staged, then refused by every flush (no subject id to encrypt it for): the outbox never emptied and
    nothing after it was published again."""
    pytest.importorskip("cryptography")
    bucket = unique("keys")
    personal = eskit.Personal({"registered": ["email"]}, subject="customer", bucket=bucket)
    customers = await client.event_store(unique("customers"), privacy=personal)
    target = await client.event_store(unique("public"), privacy=personal)
    view = NoSubject(customers, target, name=unique("customers"), max_attempts=1)
    try:
        await customers.append("c1", [Event("registered", {"customer": "c1", "email": "ann@example.com"})])
        await customers.append("c2", [Event("registered", {"customer": "c2", "email": "bob@example.com"})])
        await view.run_until_caught_up(timeout=10)
        assert view.outbox == 0
        assert [e.data["email"] for e in await target.read("c2")] == ["bob@example.com"]
        [parked] = await view.parked()
        assert parked.event.aggregate_id == "c1" and "subject id" in parked.reason
    finally:
        await view.dead_letters.delete()
        await view.close(delete_consumer=True)
        for store_name in (customers.name, target.name):
            await client.delete_store(store_name)
        await client.js.delete_key_value(bucket)


async def test_publish_integration_refuses_a_stream_of_that_name_that_sources_more_than_it_says(
    client: eskit.Client, store: eskit.EventStore, public_name: str
) -> None:
    """Only the metadata was checked: a stream made beforehand (by anyone who may create streams) with the
    public metadata but a source of every type, or one that allows deleting, was opened as the public store
    and its partners read the private types."""
    from eskit.integration.public import public_config

    await fill(store)
    config = public_config(store, public_name, ["placed"], replicas=1)
    config["sources"] = [{"name": store.stream, "subject_transforms": [
        {"src": f"{store.name}.>", "dest": f"{public_name}.>"}]}]  # fmt: skip
    reply = json.loads((await client.wire.request(f"$JS.API.STREAM.CREATE.{public_name.upper()}",
                                                  json.dumps(config).encode())).data)  # fmt: skip
    assert "error" not in reply
    with pytest.raises(eskit.EventStoreError, match="not a public stream") as info:
        await client.publish_integration(store, public_name, types=["placed"])
    assert "\n" not in str(info.value)
