"""Crypto-shredding (eskit.privacy): personal fields encrypted per subject, forgotten on every read path."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sqlite3
import time
import traceback
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import unique

import eskit
from eskit import FORGOTTEN, Event, Personal
from eskit.aggregate import Aggregate, applies
from eskit.privacy import KeyRing
from eskit.projections import Projection
from eskit.widgets import EventBrowser

ANN = {"customer": "c1", "email": "ann@example.com", "name": "Ann"}
BOB = {"customer": "c2", "email": "bob@example.com", "name": "Bob"}


@dataclass
class Setup:
    client: eskit.Client
    personal: Personal
    store: eskit.EventStore  # opened with privacy=
    raw: eskit.EventStore  # the same stream, opened without it


async def drop_bucket(client: eskit.Client, bucket: str) -> None:
    await client.wire.request(f"$JS.API.STREAM.DELETE.KV_{client.store_name(bucket)}", b"")


@pytest.fixture
async def setup(client: eskit.Client) -> AsyncIterator[Setup]:
    name, bucket = unique("people"), unique("keys")
    personal = Personal({"registered": ["email", "name"], "moved": ["street"]}, subject="customer", bucket=bucket)
    store = await client.event_store(name, privacy=personal)
    try:
        yield Setup(client, personal, store, await client.event_store(name))
    finally:
        await client.delete_store(name)
        await drop_bucket(client, bucket)


async def registered(s: Setup) -> None:
    await s.store.append("c1", [Event("registered", ANN)], expected_position=0)
    await s.store.append("c2", [Event("registered", BOB)], expected_position=0)


async def stored_key(client: eskit.Client, bucket: str, key: str) -> bytes:
    """The key's bytes as the bucket holds them (what must never show anywhere)."""
    stream = f"KV_{client.store_name(bucket)}"
    request = json.dumps({"last_by_subj": f"$KV.{client.store_name(bucket)}.{key}"}).encode()
    reply = json.loads((await client.wire.request(f"$JS.API.STREAM.MSG.GET.{stream}", request)).data)
    return base64.b64decode(reply["message"]["data"])


class Customer(Aggregate):
    on_unknown = "ignore"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.email, self.name = "", ""

    def register(self, email: str, name: str) -> None:
        self.record("registered", {"customer": self.id, "email": email, "name": name})

    @applies("registered")
    def _registered(self, data: dict[str, Any]) -> None:
        self.email, self.name = data["email"], data["name"]


class CustomersView(Projection):
    schema = "CREATE TABLE customers (id TEXT PRIMARY KEY, email TEXT, name TEXT)"

    @applies("registered")
    def _registered(self, db: sqlite3.Connection, event: eskit.RecordedEvent) -> None:
        d = event.data
        db.execute("INSERT OR REPLACE INTO customers VALUES (?, ?, ?)", (d["customer"], d["email"], d["name"]))


def rows(view: Projection) -> dict[str, tuple[str, str]]:
    return {r[0]: (r[1], r[2]) for r in view.db.execute("SELECT id, email, name FROM customers")}


# -- round trip ------------------------------------------------------------------------------------------


async def test_personal_fields_are_stored_encrypted_and_every_read_gives_them_back(setup: Setup) -> None:
    await registered(setup)
    assert [e.data for e in await setup.store.read("c1")] == [ANN]
    assert [e.data async for e in setup.store.replay()] == [ANN, BOB]
    stored = (await setup.raw.read("c1"))[0]
    assert stored.data["customer"] == "c1" and stored.data["email"].startswith("eskit-pii:1:")
    assert b"ann@example.com" not in stored.raw and b"Ann" not in stored.raw
    customer = await setup.store.load(Customer, "c1")
    assert (customer.email, customer.name) == ("ann@example.com", "Ann")


async def test_events_without_personal_fields_and_undeclared_types_are_stored_as_they_are(setup: Setup) -> None:
    await setup.store.append("c3", [Event("registered", {"customer": "c3"}), Event("noted", {"email": "x@y"})])
    assert [e.raw for e in await setup.raw.read("c3")] == [b'{"customer":"c3"}', b'{"email":"x@y"}']
    assert await setup.store.privacy.ring.history("c3") == []  # type: ignore[union-attr]  # no key made


async def test_aggregate_save_encrypts_and_load_decrypts(setup: Setup) -> None:
    customer = Customer("c9")
    customer.register("eve@example.com", "Eve")
    customer.record("moved", {"customer": "c9", "street": "Main St 1"})
    await setup.store.save(customer)
    assert b"eve@example.com" not in (await setup.raw.read("c9"))[0].raw
    assert b"Main St" not in (await setup.raw.read("c9"))[1].raw
    assert (await setup.store.load(Customer, "c9")).email == "eve@example.com"


# -- forget: every read path shows the placeholder ----------------------------------------------------------


async def test_after_forget_store_read_shows_the_placeholder_and_other_subjects_stay_readable(setup: Setup) -> None:
    await registered(setup)
    assert await eskit.forget(setup.client, "c1", bucket=setup.personal.bucket) is True
    assert (await setup.store.read("c1"))[0].data == {"customer": "c1", "email": FORGOTTEN, "name": FORGOTTEN}
    assert (await setup.store.read("c2"))[0].data == BOB
    assert await eskit.forget(setup.store, "c1") is False  # nothing left to forget


async def test_after_forget_replay_shows_the_placeholder_on_the_bulk_consumer_path_too(setup: Setup) -> None:
    people = [(f"p{i}", [Event("registered", {"customer": f"p{i}", "email": f"{i}@x", "name": f"N{i}"})], 0)
              for i in range(4500)]  # fmt: skip  # more than BULK_REPLAY after the first page: a consumer
    await setup.store.append_many(people)
    await eskit.forget(setup.store, "p4400")
    await eskit.forget(setup.store, "p7")
    replayed = {e.aggregate_id: e.data for e in [e async for e in setup.store.replay()]}
    assert replayed["p7"]["email"] == replayed["p4400"]["name"] == FORGOTTEN
    assert replayed["p8"]["email"] == "8@x" and replayed["p4499"]["name"] == "N4499"
    assert len(replayed) == 4500


async def test_after_forget_an_aggregate_loads_with_the_placeholder(setup: Setup) -> None:
    await registered(setup)
    await eskit.forget(setup.store, "c1")
    loaded = await setup.store.load(Customer, "c1")
    assert (loaded.email, loaded.name) == (FORGOTTEN, FORGOTTEN)
    assert (await setup.store.load(Customer, "c2")).email == "bob@example.com"


async def test_a_snapshot_holding_personal_fields_is_sealed_and_ignored_once_its_subject_is_forgotten(
    client: eskit.Client, setup: Setup
) -> None:
    await registered(setup)
    store = await client.event_store(setup.store.name, privacy=setup.personal, snapshots=eskit.SnapshotPolicy(every=1))
    assert store.snapshots is not None
    for cid in ("c1", "c2"):
        assert (await store.load(Customer, cid)).name in ("Ann", "Bob")  # one event replayed: a snapshot written
    bucket = f"KV_{store.snapshots.bucket}"
    stored = await client.wire.direct_get(bucket, f"$KV.{store.snapshots.bucket}.>", start=1, batch=10)
    assert len(stored.messages) == 2
    assert all(b"ann@example.com" not in m.data and b"Bob" not in m.data for m in stored.messages)  # sealed
    assert (await store.snapshots.find(Customer, "c1")).snapshot is not None  # and it opens with the key
    await eskit.forget(store, "c1")
    assert (await store.snapshots.find(Customer, "c1")).snapshot is None
    loaded = await store.load(Customer, "c1")  # replayed (and a new snapshot written, of the forgotten state)
    assert (loaded.email, loaded.name) == (FORGOTTEN, FORGOTTEN)
    assert (await store.snapshots.find(Customer, "c1")).snapshot.state["email"] == FORGOTTEN  # type: ignore[union-attr]
    assert (await store.load(Customer, "c2")).email == "bob@example.com"


async def test_a_cached_aggregate_is_dropped_when_a_subject_is_forgotten_here_or_elsewhere(
    nats_url: str, client: eskit.Client, setup: Setup
) -> None:
    await registered(setup)
    store = await client.event_store(setup.store.name, privacy=setup.personal, cache=eskit.AggregateCache())
    assert (await store.load(Customer, "c1")).email == "ann@example.com"
    await eskit.forget(setup.store, "c1")
    assert (await store.load(Customer, "c1")).email == FORGOTTEN
    assert (await store.load(Customer, "c2")).email == "bob@example.com"  # cached now
    async with await eskit.connect(nats_url) as other:
        await eskit.forget(other, "c2", bucket=setup.personal.bucket)
    deadline = time.monotonic() + 5
    while (await store.load(Customer, "c2")).email != FORGOTTEN and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert (await store.load(Customer, "c2")).email == FORGOTTEN


async def test_after_forget_a_projection_catching_up_and_a_rebuilt_one_show_the_placeholder(setup: Setup) -> None:
    await registered(setup)
    view = CustomersView(setup.store)
    try:
        await view.run_until_caught_up()
        assert rows(view)["c1"] == ("ann@example.com", "Ann")
        await eskit.forget(setup.store, "c1")
        await setup.store.append("c1", [Event("moved", {"customer": "c1", "street": "Elm 2"})])
        await setup.store.append("c4", [Event("registered", {**ANN, "customer": "c4"})])
        await view.run_until_caught_up()
        assert rows(view)["c1"] == ("ann@example.com", "Ann")  # a copy made before: rebuild it (the docs say)
        await view.rebuild()
        assert rows(view) == {"c1": (FORGOTTEN, FORGOTTEN), "c2": ("bob@example.com", "Bob"),
                              "c4": ("ann@example.com", "Ann")}  # fmt: skip
    finally:
        await view.close(delete_consumer=True)


async def test_a_new_projection_after_forget_shows_the_placeholder(setup: Setup) -> None:
    await registered(setup)
    await eskit.forget(setup.store, "c2")
    view = CustomersView(setup.store)
    try:
        await view.run_until_caught_up()
        assert rows(view) == {"c1": ("ann@example.com", "Ann"), "c2": (FORGOTTEN, FORGOTTEN)}
    finally:
        await view.close(delete_consumer=True)


async def test_after_forget_to_dataframe_shows_the_placeholder_by_direct_get_and_by_consumer(setup: Setup) -> None:
    await registered(setup)
    await eskit.forget(setup.store, "c1")
    df = await eskit.to_dataframe(setup.store)
    assert df.set_index("aggregate_id")[["email", "name"]].to_dict("index") == {
        "c1": {"email": FORGOTTEN, "name": FORGOTTEN}, "c2": {"email": "bob@example.com", "name": "Bob"}
    }  # fmt: skip
    filtered = await eskit.to_dataframe(setup.store, subjects=[f"{setup.store.name}.c1.>"])
    assert filtered["email"].tolist() == [FORGOTTEN]
    many = [(f"p{i}", [Event("registered", {"customer": f"p{i}", "email": f"{i}@x", "name": "N"})], 0)
            for i in range(2500)]  # fmt: skip  # more than a page: read through a consumer
    await setup.store.append_many(many)
    df = await eskit.to_dataframe(setup.store)
    assert len(df) == 2502 and df.loc[df["aggregate_id"] == "c1", "email"].tolist() == [FORGOTTEN]
    assert df.loc[df["aggregate_id"] == "p2499", "email"].tolist() == ["2499@x"]
    assert not df["email"].astype(str).str.startswith("eskit-pii").any()


async def test_after_forget_to_arrow_shows_the_placeholder(setup: Setup) -> None:
    pytest.importorskip("pyarrow")
    await registered(setup)
    await eskit.forget(setup.store, "c2")
    table = (await eskit.to_arrow(setup.store)).read_all()
    assert dict(zip(table["aggregate_id"].to_pylist(), table["email"].to_pylist(), strict=True)) == {
        "c1": "ann@example.com", "c2": FORGOTTEN
    }  # fmt: skip


async def test_after_forget_the_event_browser_widget_shows_the_placeholder(setup: Setup) -> None:
    await registered(setup)
    await eskit.forget(setup.store, "c1")
    browser = EventBrowser(setup.store)
    await browser.refresh()
    shown = browser.static_html()
    assert FORGOTTEN.replace("<", "&lt;").replace(">", "&gt;") in shown and "bob@example.com" in shown
    assert "ann@example.com" not in shown and "eskit-pii" not in shown


async def test_after_forget_an_ocel_export_shows_the_placeholder(setup: Setup, tmp_path: Any) -> None:
    await registered(setup)
    await eskit.forget(setup.store, "c1")
    await eskit.to_ocel(setup.store, tmp_path / "people.jsonocel")
    doc = json.loads((tmp_path / "people.jsonocel").read_text())
    emails = {
        a["value"] for e in doc["events"] for a in e["attributes"] if a["name"] == "email"
    }  # fmt: skip
    assert emails == {FORGOTTEN, "bob@example.com"}


async def test_migrate_reads_decrypted_and_the_target_encrypts_with_its_own_declaration(
    client: eskit.Client, setup: Setup
) -> None:
    await registered(setup)
    await eskit.forget(setup.store, "c2")
    target_name = unique("copy")
    target = await client.event_store(target_name, privacy=setup.personal)
    try:
        await eskit.migrate(setup.store, target)
        assert [e.data for e in await target.read("c1")] == [ANN]
        assert (await target.read("c2"))[0].data["email"] == FORGOTTEN  # stays forgotten: a plain placeholder
        assert b"ann@example.com" not in (await (await client.event_store(target_name)).read("c1"))[0].raw
    finally:
        await client.delete_store(target_name)


async def test_migrate_into_a_store_opened_without_privacy_is_refused_and_stores_no_plain_text(
    client: eskit.Client, setup: Setup
) -> None:
    """The source reads decrypted: a target without a declaration got every personal field in plain text,
    beyond the reach of eskit.forget."""
    await registered(setup)
    target_name = unique("copy")
    target = await client.event_store(target_name)
    try:
        with pytest.raises(eskit.ValidationError, match="privacy=") as info:
            await eskit.migrate(setup.store, target)
        assert "\n" not in str(info.value)
        assert await target.read("c1") == [] and await target.last_position() == 0
    finally:
        await client.delete_store(target_name)


# -- forget: the key is gone for good, everywhere -----------------------------------------------------------


async def test_a_kv_delete_keeps_older_revisions_and_a_purge_does_not(client: eskit.Client) -> None:
    """Why forget() erases and purges: with history, a KV delete leaves the key readable in older revisions."""
    bucket = unique("hist")
    kv = await client.js.create_key_value(bucket=bucket, history=5)
    try:
        await kv.put("c1", b"the-key")
        await kv.delete("c1")
        assert [(e.value, e.operation) for e in await kv.history("c1")] == [(b"the-key", None), (b"", "DEL")]
        await kv.purge("c1")
        assert [(e.value, e.operation) for e in await kv.history("c1")] == [(b"", "PURGE")]  # the marker only
    finally:
        await client.js.delete_key_value(bucket)


async def test_forget_leaves_only_an_empty_purge_marker_in_the_key_bucket(setup: Setup) -> None:
    await registered(setup)
    ring = setup.store.privacy.ring  # type: ignore[union-attr]
    assert [h["bytes"] for h in await ring.history("c1")] == [40]
    await eskit.forget(setup.client, "c1", bucket=setup.personal.bucket)
    assert [h["bytes"] for h in await ring.history("c1")] == [0]
    assert [h["bytes"] for h in await ring.history("c2")] == [40]


async def test_a_forget_in_another_connection_reaches_a_reader_that_had_the_key_cached(
    nats_url: str, setup: Setup
) -> None:
    await registered(setup)
    assert (await setup.store.read("c1"))[0].data == ANN  # the key is cached now
    async with await eskit.connect(nats_url) as other:
        assert await eskit.forget(other, "c1", bucket=setup.personal.bucket)
    deadline = time.monotonic() + 5
    while (await setup.store.read("c1"))[0].data["email"] != FORGOTTEN and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert (await setup.store.read("c1"))[0].data["email"] == FORGOTTEN


async def test_a_process_that_was_idle_shows_a_forget_made_elsewhere_on_its_first_read_and_load(
    nats_url: str, client: eskit.Client, setup: Setup
) -> None:
    """The check for forgets made elsewhere only started on a read, in the background: a process idle for a
    while (a dashboard, a service between requests) gave the forgotten fields out on its next read and load,
    however long ago the forget was."""
    await registered(setup)
    store = await client.event_store(setup.store.name, privacy=setup.personal, cache=eskit.AggregateCache())
    assert (await store.load(Customer, "c1")).email == "ann@example.com"  # the key and the aggregate cached
    assert (await setup.store.read("c2"))[0].data == BOB
    ring = setup.store.privacy.ring  # type: ignore[union-attr]
    async with await eskit.connect(nats_url) as other:
        assert await eskit.forget(other, "c1", bucket=setup.personal.bucket)
        assert await eskit.forget(other, "c2", bucket=setup.personal.bucket)
    ring._checked -= 60  # its last check a minute ago: idle since (instead of waiting a minute)
    assert (await store.load(Customer, "c1")).email == FORGOTTEN
    ring._checked -= 60
    assert (await setup.store.read("c2"))[0].data["email"] == FORGOTTEN


async def test_an_aggregate_loaded_before_its_subject_was_forgotten_cannot_save_the_forgotten_fields_again(
    setup: Setup,
) -> None:
    """Its state held the decrypted fields; a command that copied one into a new event after the forget was
    sealed under a new key for the subject: the forgotten e-mail address was readable again, for good."""
    await registered(setup)
    customer = await setup.store.load(Customer, "c1")
    assert customer.email == "ann@example.com"
    assert await eskit.forget(setup.store, "c1")
    customer.record("moved", {"customer": "c1", "street": customer.email})  # a command using the state
    with pytest.raises(eskit.EventStoreError, match="load it again") as info:
        await setup.store.save(customer)
    assert "\n" not in str(info.value) and "ann@example.com" not in str(info.value)
    assert [e.type for e in await setup.store.read("c1")] == ["registered"]  # nothing stored
    again = await setup.store.load(Customer, "c1")
    assert again.email == FORGOTTEN
    again.record("moved", {"customer": "c1", "street": "Main St 1"})  # what it learns afresh: stored, readable
    await setup.store.save(again)
    assert (await setup.store.read("c1"))[-1].data["street"] == "Main St 1"


async def test_a_subject_that_comes_back_after_forget_gets_a_new_key_and_its_old_events_stay_forgotten(
    setup: Setup,
) -> None:
    await registered(setup)
    await eskit.forget(setup.store, "c1")
    await setup.store.append("c1", [Event("registered", {**ANN, "email": "ann@new.example"})])
    assert [e.data["email"] for e in await setup.store.read("c1")] == [FORGOTTEN, "ann@new.example"]


async def test_two_writers_appending_for_a_new_subject_at_once_use_one_key(nats_url: str, setup: Setup) -> None:
    clients = [await eskit.connect(nats_url) for _ in range(4)]
    try:
        stores = [await c.event_store(setup.store.name, privacy=setup.personal) for c in clients]
        await asyncio.gather(*(
            s.append(f"c1-{i}", [Event("registered", {**ANN, "name": f"Ann {i}"})]) for i, s in enumerate(stores)
        ))  # fmt: skip
        assert [h["bytes"] for h in await setup.store.privacy.ring.history("c1")] == [40]  # type: ignore[union-attr]
        names = sorted([e.data["name"] async for e in setup.store.replay()])
        assert names == [f"Ann {i}" for i in range(4)]
    finally:
        for c in clients:
            await c.close()


# -- the ciphertext is bound to its subject, field and store ------------------------------------------------


async def test_a_ciphertext_copied_into_another_subjects_event_reads_as_forgotten_never_as_the_other_subject(
    client: eskit.Client, setup: Setup
) -> None:
    await registered(setup)
    ann = (await setup.raw.read("c1"))[0].data
    await setup.raw.append("c2", [Event("registered", {"customer": "c2", "email": ann["email"], "name": ann["name"]})])
    await setup.raw.append("c1", [Event("registered", {"customer": "c1", "email": ann["name"], "name": ann["name"]})])
    swapped = (await setup.store.read("c2"))[1].data
    assert swapped == {"customer": "c2", "email": FORGOTTEN, "name": FORGOTTEN}  # c2's key, c1's ciphertext
    other_field = (await setup.store.read("c1"))[1].data
    assert other_field == {"customer": "c1", "email": FORGOTTEN, "name": "Ann"}  # name's ciphertext in email
    elsewhere_name = unique("other")
    elsewhere = await client.event_store(elsewhere_name, privacy=setup.personal)
    try:
        raw = await client.event_store(elsewhere_name)
        await raw.append("c1", [Event("registered", ann)])
        assert (await elsewhere.read("c1"))[0].data["email"] == FORGOTTEN  # another store's ciphertext
    finally:
        await client.delete_store(elsewhere_name)


async def test_a_tampered_or_garbled_ciphertext_reads_as_forgotten(setup: Setup) -> None:
    await registered(setup)
    ann = (await setup.raw.read("c1"))[0].data
    flipped = ann["email"][:-2] + ("A" if ann["email"][-2] != "A" else "B") + ann["email"][-1]
    await setup.raw.append("c1", [Event("registered", {**ann, "email": flipped, "name": ann["name"][:30] + "!!"})])
    assert (await setup.store.read("c1"))[1].data == {"customer": "c1", "email": FORGOTTEN, "name": FORGOTTEN}


async def test_a_store_opened_without_privacy_reads_the_stored_strings_and_never_fails(setup: Setup) -> None:
    await registered(setup)
    await eskit.forget(setup.store, "c1")

    class Loose(Customer):
        pass

    loaded = await setup.raw.load(Loose, "c1")
    assert loaded.email.startswith("eskit-pii:1:")
    assert (await eskit.to_dataframe(setup.raw))["email"].str.startswith("eskit-pii:1:").all()


async def test_a_parked_copy_of_an_event_with_personal_fields_keeps_the_ciphertext(setup: Setup) -> None:
    class Failing(Projection):
        schema = "CREATE TABLE t (id TEXT)"
        max_attempts = 1

        @applies("registered")
        def _registered(self, db: sqlite3.Connection, event: eskit.RecordedEvent) -> None:
            assert event.data["email"] == "ann@example.com"  # it sees the plain text...
            raise RuntimeError("handler bug")

    await setup.store.append("c1", [Event("registered", ANN)])
    view = Failing(setup.store)
    try:
        await view.run_until_caught_up()
        [parked] = await view.parked()
        assert b"ann@example.com" not in parked.event.raw  # ...the dead-letter stream does not
        assert parked.event.data["email"].startswith("eskit-pii:1:")
    finally:
        await view.dead_letters.delete()
        await view.close(delete_consumer=True)


async def test_a_parked_events_reason_does_not_keep_the_personal_values_its_handlers_error_quoted(
    setup: Setup,
) -> None:
    """A handler's error often quotes the value it choked on (``int('Ann')``, ``fromisoformat('...')``): the
    reason was stored in the dead-letter stream as it was, the personal data in plain text, beyond forget."""

    class Choking(Projection):
        schema = "CREATE TABLE t (id TEXT)"
        max_attempts = 1

        @applies("registered")
        def _registered(self, db: sqlite3.Connection, event: eskit.RecordedEvent) -> None:
            raise ValueError(f"not an address: {event.data['email']!r} of {event.data['name']}")

    await setup.store.append("c1", [Event("registered", ANN)])
    view = Choking(setup.store)
    try:
        await view.run_until_caught_up()
        [parked] = await view.parked()
        assert "ann@example.com" not in parked.reason and "Ann" not in parked.reason
        assert parked.reason.endswith(f"_registered raised ValueError: not an address: '{FORGOTTEN}' of {FORGOTTEN}")
        headers = (await setup.client.js.get_msg(view.dead_letters.stream, parked.parked_seq, direct=True)).headers
        assert "ann@example.com" not in str(headers)
    finally:
        await view.dead_letters.delete()
        await view.close(delete_consumer=True)


# -- keys never show ---------------------------------------------------------------------------------------


async def test_keys_never_show_in_reprs_errors_or_log_records(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await registered(setup)
    key = await stored_key(setup.client, setup.personal.bucket, "c1")
    forms = {key.hex(), key[8:].hex(), base64.b64encode(key).decode(), base64.b64encode(key[8:]).decode(), repr(key)}
    privacy = setup.store.privacy
    assert privacy is not None
    said = [repr(setup.store), repr(privacy), repr(privacy.ring), repr(setup.personal), str(vars(privacy.ring))]
    said += [repr(e) for e in await setup.store.read("c1")]
    for bad in (lambda: setup.store.append("c5", [Event("registered", {"customer": 5, "email": "x"})]),
                lambda: eskit.forget(setup.client, 7)):  # type: ignore[arg-type]  # fmt: skip
        with pytest.raises(eskit.ValidationError) as caught:
            await bad()
        said.append("".join(traceback.format_exception(caught.value)))
    await eskit.forget(setup.store, "c1")
    said += [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    assert [f for f in forms if any(f in s for s in said)] == []


# -- bad input: one line, nothing stored ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "subject", "says"),
    [
        ({"registered": "email"}, "customer", "must be a list of field names"),
        ({}, "customer", "dict of event type -> personal fields"),
        (["email"], "customer", "dict of event type -> personal fields"),
        ({"registered": ["email", 3]}, "customer", "non-empty str"),
        ({"registered": ["customer", "email"]}, "customer", "is the subject field"),
        ({"bad type": ["email"]}, "customer", "Personal event type"),
        ({"registered": ["email"]}, "", "names the data field of the subject id"),
    ],
)
def test_a_bad_declaration_is_one_line_saying_what_to_do(fields: Any, subject: str, says: str) -> None:
    with pytest.raises(eskit.ValidationError, match=says) as caught:
        Personal(fields, subject=subject)
    assert "\n" not in str(caught.value)


async def test_a_bad_bucket_or_privacy_value_is_refused_before_anything_is_made(client: eskit.Client) -> None:
    with pytest.raises(eskit.ValidationError, match="KV bucket name"):
        Personal({"registered": ["email"]}, subject="customer", bucket="no.dots")
    with pytest.raises(eskit.ValidationError, match="event_store takes None or Personal"):
        await client.event_store(unique("x"), privacy={"registered": ["email"]})  # type: ignore[arg-type]


@pytest.mark.parametrize("subject_id", [7, None, "", ["c1"]])
async def test_a_personal_event_without_a_str_subject_id_is_refused_and_nothing_is_stored(
    setup: Setup, subject_id: Any
) -> None:
    data = {"email": "x@y"} if subject_id is None else {"customer": subject_id, "email": "x@y"}
    with pytest.raises(eskit.ValidationError, match=r"subject id in data\['customer'\]") as caught:
        await setup.store.append("c1", [Event("created"), Event("registered", data)])
    assert "\n" not in str(caught.value)
    assert await setup.store.last_position() == 0
    with pytest.raises(eskit.ValidationError):
        await setup.store.append_many([("c2", [Event("registered", BOB)], 0), ("c3", [Event("registered", data)], 0)])
    assert await setup.store.last_position() == 0
    assert await setup.store.privacy.ring.history("c2") == []  # type: ignore[union-attr]  # no key made either


async def test_forget_with_a_bad_target_or_id_is_one_line(setup: Setup) -> None:
    for call, says in [
        (lambda: eskit.forget(setup.client, 7), "must be a str"),  # type: ignore[arg-type]
        (lambda: eskit.forget("nats://x", "c1"), "forget takes a client or a store"),
        (lambda: eskit.forget(setup.raw, "c1"), "opened without privacy="),
        (lambda: eskit.forget(setup.store, "c1", bucket="other"), "keeps its keys in"),
    ]:
        with pytest.raises(eskit.ValidationError, match=says) as caught:
            await call()
        assert "\n" not in str(caught.value)


async def test_subject_ids_that_are_not_kv_tokens_get_their_own_keys(setup: Setup) -> None:
    odd = ["ann@example", "c 1", "ü", "c1.x"]
    for s in odd:
        await setup.store.append("c1", [Event("registered", {"customer": s, "email": f"{s}!", "name": "A"})])
    await eskit.forget(setup.store, "c 1")
    assert [e.data["email"] for e in await setup.store.read("c1")] == ["ann@example!", FORGOTTEN, "ü!", "c1.x!"]
    assert isinstance(await KeyRing.open(setup.client, setup.personal.bucket), KeyRing)


# -- roles (eskit.auth.least_privilege_config) ---------------------------------------------------------------


async def test_under_least_privilege_writers_encrypt_only_the_admin_forgets_and_analysts_see_the_placeholder() -> None:
    from eskit.auth import least_privilege_config

    config = least_privilege_config(writer_password="w-pw", analyst_password="a-pw", admin_password="adm-pw")
    personal = Personal({"registered": ["email", "name"]}, subject="customer")
    name = unique("people")
    with eskit.EmbeddedServer(config=config) as server:
        async with await eskit.connect(server.url, user="admin", password="adm-pw") as admin:
            await admin.event_store(name, privacy=personal)  # an admin creates the store and the key bucket
        async with await eskit.connect(server.url, user="writer", password="w-pw") as writer:
            store = await writer.event_store(name, privacy=personal)
            await registered(Setup(writer, personal, store, store))
            with pytest.raises(eskit.PermissionDeniedError) as refused:  # a writer may not delete a message
                await eskit.forget(writer, "c1")
            assert "\n" not in str(refused.value)
            assert (await store.read("c1"))[0].data == ANN  # nothing was forgotten
        async with await eskit.connect(server.url, user="admin", password="adm-pw") as admin:
            assert await eskit.forget(admin, "c1") is True
        async with await eskit.connect(server.url, user="analyst", password="a-pw") as analyst:
            readable = await analyst.event_store(name, privacy=personal)
            assert [e.data["email"] async for e in readable.replay()] == [FORGOTTEN, "bob@example.com"]


async def test_replaying_a_parked_event_gives_the_fixed_handler_the_decrypted_fields(setup: Setup) -> None:
    seen: list[str] = []

    class Flaky(Projection):
        schema = "CREATE TABLE t (id TEXT)"
        max_attempts = 1
        broken = True

        @applies("registered")
        def _registered(self, db: sqlite3.Connection, event: eskit.RecordedEvent) -> None:
            if self.broken:
                raise RuntimeError("handler bug")
            seen.append(event.data["email"])

    await registered(setup)
    view = Flaky(setup.store)
    try:
        await view.run_until_caught_up()
        assert len(await view.parked()) == 2
        await eskit.forget(setup.store, "c2")
        view.broken = False
        assert await view.replay_parked() == 2
        assert seen == ["ann@example.com", FORGOTTEN]
    finally:
        await view.dead_letters.delete()
        await view.close(delete_consumer=True)


async def test_the_walk_through_in_docs_privacy_runs_and_prints_what_it_says(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import re
    import textwrap
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "privacy.md").read_text()
    block = re.findall(r"```python\n(.*?)```", doc, flags=re.S)[-1]
    assert "client = await eskit.connect()" in block  # the lesson cell's first line (NATS_URL: the test server)
    namespace: dict[str, Any] = {}
    exec(compile("async def walk():\n" + textwrap.indent(block, "    "), "docs/privacy.md", "exec"), namespace)
    await namespace["walk"]()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "{'customer': 'c1', 'email': 'ann@example.com', 'name': 'Ann'}"
    assert out[1].startswith("eskit-pii:1:") and out[2] == "True"
    assert out[3] == "{'customer': 'c1', 'email': '<forgotten>', 'name': '<forgotten>'}"
    assert "bob@example.com" in "\n".join(out[4:]) and out[-1].endswith("'bytes': 0}]")


async def test_one_forget_reaches_every_store_that_shares_the_key_bucket(client: eskit.Client, setup: Setup) -> None:
    orders_name = unique("orders")
    orders = await client.event_store(
        orders_name, privacy=Personal({"placed": ["address"]}, subject="customer", bucket=setup.personal.bucket)
    )
    try:
        await registered(setup)
        await orders.append("o1", [Event("placed", {"customer": "c1", "address": "Elm 2", "total": 30})])
        assert (await orders.read("o1"))[0].data["address"] == "Elm 2"
        await eskit.forget(setup.store, "c1")
        assert (await orders.read("o1"))[0].data == {"customer": "c1", "address": FORGOTTEN, "total": 30}
        assert (await setup.store.read("c1"))[0].data["email"] == FORGOTTEN
    finally:
        await client.delete_store(orders_name)


async def test_after_a_reconnect_keys_are_read_again_and_cached_aggregates_dropped(
    client: eskit.Client, setup: Setup
) -> None:
    await registered(setup)
    store = await client.event_store(setup.store.name, privacy=setup.personal, cache=eskit.AggregateCache())
    assert (await store.load(Customer, "c1")).email == "ann@example.com"
    ring = setup.store.privacy.ring  # type: ignore[union-attr]
    assert "c1" in ring._current and store.cache is not None and len(store.cache) == 1
    client.nc.stats["reconnects"] += 1  # as after a reconnect: forgets may have been missed meanwhile
    try:
        assert (await store.load(Customer, "c1")).email == "ann@example.com"  # replayed, the key read again
        assert store.cache.misses == 2 and "c1" in ring._current
    finally:
        client.nc.stats["reconnects"] -= 1
        ring._check_connection()
