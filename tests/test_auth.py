"""Least privilege: an admin, a writer that may append, an analyst that may only read; immutable history;
projections that notice a gap someone else made; credentials passed through.

Every refusal is one line, fast (the server's -ERR fails the waiting request), never a 5 s timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from conftest import unique

import eskit
from eskit import EmbeddedServer, Event, PermissionDeniedError
from eskit.aggregate import applies
from eskit.auth import least_privilege_config
from eskit.events import RecordedEvent
from eskit.projections import Projection

WRITER, ANALYST, ADMIN = "w-secret", "a-secret", "adm-secret"
FAST = 2.0  # seconds: well under the wire's 5 s request timeout


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedServer]:
    config = least_privilege_config(writer_password=WRITER, analyst_password=ANALYST, admin_password=ADMIN)
    with EmbeddedServer(config=config) as s:
        yield s


@pytest.fixture(scope="module")
async def orders(server: EmbeddedServer) -> AsyncIterator[str]:
    """A store the writer filled: aggregate "1" with two events."""
    name = unique("orders")
    async with await eskit.connect(server.url, user="admin", password=ADMIN) as admin:
        await admin.event_store(name)  # an admin creates stores; the writer fills them
    async with await eskit.connect(server.url, user="writer", password=WRITER) as writer:
        store = await writer.event_store(name)
        first = await store.append("1", [Event("created", {"customer": "ada"})], expected_position=0)
        await store.append("1", [Event("item_added", {"sku": "A1"})], expected_position=first)
    return name


@pytest.fixture
async def analyst(server: EmbeddedServer) -> AsyncIterator[eskit.Client]:
    async with await eskit.connect(server.url, user="analyst", password=ANALYST) as client:
        yield client


@pytest.fixture
async def writer(server: EmbeddedServer) -> AsyncIterator[eskit.Client]:
    async with await eskit.connect(server.url, user="writer", password=WRITER) as client:
        yield client


@pytest.fixture
async def admin(server: EmbeddedServer) -> AsyncIterator[eskit.Client]:
    async with await eskit.connect(server.url, user="admin", password=ADMIN) as client:
        yield client


async def refused_fast(call: object) -> PermissionDeniedError:
    started = time.monotonic()
    with pytest.raises(PermissionDeniedError) as info:
        await asyncio.wait_for(call, 10)  # type: ignore[arg-type]
    assert time.monotonic() - started < FAST, "the refusal waited for a timeout"
    message = str(info.value)
    assert message.startswith("permission denied: ") and "\n" not in message
    return info.value


async def test_an_analysts_append_fails_fast_with_one_line(analyst: eskit.Client, orders: str) -> None:
    store = await analyst.event_store(orders)
    error = await refused_fast(store.append("1", [Event("shipped")]))
    assert f"{orders}.1.shipped" in str(error)
    await refused_fast(store.append("2", [Event("created"), Event("item_added")]))  # an atomic batch too
    await refused_fast(store.append_many([(f"p{i}", [Event("created")], None) for i in range(5)]))  # pipelined
    assert len(await store.read("1")) == 2


async def test_an_analyst_reads_and_replays_what_the_writer_appended(
    analyst: eskit.Client, orders: str
) -> None:
    store = await analyst.event_store(orders)
    assert [e.type for e in await store.read("1")] == ["created", "item_added"]
    assert [e.data for e in [e async for e in store.replay()]] == [{"customer": "ada"}, {"sku": "A1"}]
    assert await store.last_position("1") == 2
    frames = pytest.importorskip("eskit.frames")  # analysis: DataFrames of events
    frame = await frames.to_dataframe(store)
    assert frame["type"].tolist() == ["created", "item_added"]


async def test_an_analyst_can_neither_delete_nor_create_a_store(analyst: eskit.Client, orders: str) -> None:
    await refused_fast(analyst.delete_store(orders))
    await refused_fast(analyst.event_store(unique("orders")))
    assert len(await (await analyst.event_store(orders)).read("1")) == 2


async def test_the_writer_appends_but_may_not_delete_the_history(server: EmbeddedServer, orders: str) -> None:
    async with await eskit.connect(server.url, user="writer", password=WRITER) as writer:
        store = await writer.event_store(orders)
        assert await store.append("9", [Event("created")], expected_position=0) > 2
        await refused_fast(writer.delete_store(orders))


@pytest.mark.parametrize(
    "credentials",
    [{"user": "analyst", "password": "wrong"}, {"user": "nobody", "password": ANALYST}, {}],
    ids=["wrong password", "unknown user", "no credentials"],
)
async def test_wrong_credentials_raise_authentication_error(
    server: EmbeddedServer, credentials: dict[str, str]
) -> None:
    with pytest.raises(eskit.AuthenticationError) as info:
        await asyncio.wait_for(eskit.connect(server.url, **credentials), 10)
    assert "\n" not in str(info.value) and server.url in str(info.value)


async def test_a_token_is_passed_through() -> None:
    with EmbeddedServer(extra_args=["--auth", "s3cr3t-token"]) as server:
        async with await eskit.connect(server.url, token="s3cr3t-token") as client:
            assert await (await client.event_store("tok")).append("1", [Event("created")]) == 1
        with pytest.raises(eskit.AuthenticationError):
            await asyncio.wait_for(eskit.connect(server.url, token="guess"), 10)


def nkey_user(seed_file: Path) -> str:
    """A fresh user nkey: its seed written to ``seed_file`` (for the client), its public key returned."""
    nkeys = pytest.importorskip("nkeys")
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    seed_file.write_bytes(seed)
    return str(nkeys.from_seed(bytearray(seed)).public_key.decode())


@pytest.fixture
def nkey_server(tmp_path: Path) -> Iterator[tuple[EmbeddedServer, Path]]:
    seed_file = tmp_path / "user.nk"
    public = nkey_user(seed_file)
    with EmbeddedServer(config=f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n') as server:
        yield server, seed_file


async def test_an_nkey_seed_is_passed_through(
    nkey_server: tuple[EmbeddedServer, Path], tmp_path: Path
) -> None:
    server, seed_file = nkey_server
    async with await eskit.connect(server.url, nkeys_seed=str(seed_file)) as client:
        assert await (await client.event_store("nk")).append("1", [Event("created")]) == 1
    other_seed = tmp_path / "stranger.nk"
    nkey_user(other_seed)  # a valid nkey the server does not know
    with pytest.raises(eskit.AuthenticationError):
        await asyncio.wait_for(eskit.connect(server.url, nkeys_seed=str(other_seed)), 10)


# -- consumers, limits, history ---------------------------------------------------------------------------


class Orders(Projection):
    """One row per order; only ``created`` and ``shipped`` are handled (``noted`` events are passed over)."""

    schema = "CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT NOT NULL)"

    @applies("created")
    def _created(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        db.execute("INSERT INTO orders VALUES (?, 'open')", (event.aggregate_id,))  # twice: IntegrityError

    @applies("shipped")
    def _shipped(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        db.execute("UPDATE orders SET status = 'shipped' WHERE id = ?", (event.aggregate_id,))


async def fill_orders(store: eskit.EventStore, orders: int, *, first: int = 0) -> int:
    """Orders ``o<first>``...: created, noted (a type the projection does not handle), and the even ones
    shipped; returns the last position."""
    last = 0
    for i in range(first, first + orders):
        events = [Event("created"), Event("noted", {"n": i})] + ([Event("shipped")] if i % 2 == 0 else [])
        last = await store.append(f"o{i}", events)
    return last


async def api(client: eskit.Client, call: str, body: object = None) -> dict[str, object]:
    """One JetStream API request through the client's wire (a refusal raises PermissionDeniedError)."""
    payload = b"" if body is None else json.dumps(body).encode()
    answer: dict[str, object] = json.loads((await client.wire.request(f"$JS.API.{call}", payload)).data)
    return answer


async def messages(client: eskit.Client, stream: str) -> int:
    info = await api(client, f"STREAM.INFO.{stream}")
    return int(info["state"]["messages"])  # type: ignore[index]


async def steal(thief: eskit.Client, stream: str, consumer: str, count: int) -> list[int]:
    """Pull up to ``count`` events from someone else's consumer and ack them (ack policy "all": the last
    ack settles them all); the positions taken."""
    inbox = thief.nc.new_inbox()
    sub = await thief.nc.subscribe(inbox)
    body = json.dumps({"batch": count, "no_wait": True}).encode()
    await thief.nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}", body, reply=inbox)
    taken = []
    for _ in range(count):  # bounded: at most `count` messages, each within 5 s
        msg = await sub.next_msg(timeout=5)
        if not msg.reply:  # a status: nothing (more) to take
            break
        taken.append(int(msg.reply.split(".")[5]))
        last = msg.reply
    if taken:
        await thief.nc.publish(last, b"+ACK")
    await thief.nc.flush()
    await sub.unsubscribe()
    return taken


async def test_an_analyst_cannot_create_a_durable_consumer_nor_run_a_projection_yet_reads_everything(
    analyst: eskit.Client, orders: str
) -> None:
    stream = orders.upper()
    config = {"durable_name": "thief", "ack_policy": "all", "filter_subject": f"{orders}.>"}
    body = {"stream_name": stream, "config": config}
    await refused_fast(api(analyst, f"CONSUMER.DURABLE.CREATE.{stream}.thief", body))
    named = {"stream_name": stream, "config": {"name": "thief", "ack_policy": "none"}}
    await refused_fast(api(analyst, f"CONSUMER.CREATE.{stream}.thief", named))  # the 2.9+ form
    await refused_fast(api(analyst, f"CONSUMER.CREATE.{stream}.thief.{orders}.>", named))  # with its filter
    # the ephemeral form: its body may name a durable, which the server then updates
    await refused_fast(api(analyst, f"CONSUMER.CREATE.{stream}", {"stream_name": stream, "config": {}}))
    view = Orders(await analyst.event_store(orders), name=unique("analysts"))
    await refused_fast(view.run_until_caught_up(timeout=5))
    await refused_fast(view.start())  # in the background: ends with the refusal, no retrying forever
    assert view.stats.error is not None and view.stats.error.startswith("PermissionDeniedError")
    with pytest.raises(PermissionDeniedError):
        await view.stop()  # the task's end, said again
    await view.close()
    # what the analyst is for still works: reads, replays, a DataFrame (bulk reads fall back to Direct Get)
    store = await analyst.event_store(orders)
    assert [e.type for e in await store.read("1")] == ["created", "item_added"]
    assert len([e async for e in store.replay()]) >= 2
    frames = pytest.importorskip("eskit.frames")
    assert len(await frames.to_dataframe(store)) >= 2


async def test_an_analysts_bulk_reads_are_refused_a_consumer_and_read_everything_by_direct_get(
    writer: eskit.Client, analyst: eskit.Client, admin: eskit.Client
) -> None:
    name = unique("big")
    await admin.event_store(name)  # an admin creates the store
    store = await writer.event_store(name)
    for start in range(0, 6000, 1000):  # more than a replay's first page reads before it asks for a consumer
        await store.append_many([(f"a{i}", [Event("created", {"i": i})], None) for i in range(start, start + 1000)])
    mine = await analyst.event_store(name)
    started = time.monotonic()
    assert [e.data["i"] async for e in mine.replay()] == list(range(6000))  # type: ignore[index]
    frames = pytest.importorskip("eskit.frames")
    assert len(await frames.to_dataframe(mine)) == 6000
    assert time.monotonic() - started < 30, "a refused consumer must not cost a timeout"
    consumers = await api(analyst, f"CONSUMER.NAMES.{name.upper()}")
    assert consumers["consumers"] == []  # the analyst left nothing behind
    assert await admin.delete_store(name)


async def test_an_analyst_can_neither_delete_nor_pull_from_nor_ack_a_projections_consumer(
    writer: eskit.Client, analyst: eskit.Client, admin: eskit.Client
) -> None:
    name = unique("shop")
    await admin.event_store(name)  # an admin creates the store
    store = await writer.event_store(name)
    await fill_orders(store, 2)
    view = Orders(store)
    assert await view.run_until_caught_up() == 3  # 2 created + 1 shipped, of 5 events
    last = await fill_orders(store, 6, first=2)  # 15 more events the analyst would like to take
    stream, consumer = name.upper(), "projection-Orders"
    await refused_fast(api(analyst, f"CONSUMER.DELETE.{stream}.{consumer}"))
    pull = json.dumps({"batch": 18, "no_wait": True}).encode()
    await refused_fast(analyst.wire.request(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}", pull))
    await refused_fast(analyst.wire.request(f"$JS.ACK.{stream}.{consumer}.1.13.13.0.0", b"+ACK"))
    assert await view.run_until_caught_up() == 9
    assert view.position == last == 20
    assert view.db.execute("SELECT count(*), sum(status = 'shipped') FROM orders").fetchone() == (8, 4)
    assert view.stats.parked == 0
    await view.close(delete_consumer=True)
    await api(writer, f"CONSUMER.INFO.{stream}.{consumer}")  # the writer's own consumer: gone, no error
    assert await admin.delete_store(name)


async def test_the_writer_may_neither_change_a_stores_limits_nor_purge_or_delete_its_events(
    writer: eskit.Client, admin: eskit.Client
) -> None:
    name = unique("ledger")
    await refused_fast(writer.event_store(name))  # the writer may not create a store
    store = await writer.event_store((await admin.event_store(name)).name)
    last = await fill_orders(store, 12)
    stream = name.upper()
    config = (await api(writer, f"STREAM.INFO.{stream}"))["config"]
    await refused_fast(api(writer, f"STREAM.UPDATE.{stream}", {**config, "max_msgs": 1}))  # type: ignore[dict-item]
    await refused_fast(api(writer, f"STREAM.PURGE.{stream}", {}))
    await refused_fast(api(writer, f"STREAM.MSG.DELETE.{stream}", {"seq": 1}))
    pause = {"pause_until": "2099-01-01T00:00:00Z"}  # a running projection would wait until then
    await refused_fast(api(writer, f"CONSUMER.PAUSE.{stream}.projection-Orders", pause))
    await refused_fast(api(writer, f"STREAM.CREATE.{stream}", {**config, "max_msgs": 1}))  # type: ignore[dict-item]
    await refused_fast(writer.delete_store(name))
    assert await messages(writer, stream) == last == 30
    view = Orders(store)  # and it still runs its projections
    assert await view.run_until_caught_up() == 18
    await view.close(delete_consumer=True)
    assert await admin.delete_store(name)


@pytest.mark.parametrize(
    ("kind", "dropping"),
    [("event", {"max_msgs": 3}), ("event", {"max_age": 3_600_000_000_000}), ("event", {"retention": "workqueue"}),
     ("event", {"allow_msg_ttl": True}), ("dcb", {"allow_msg_ttl": True}),
     ("dcb", {"max_msgs_per_subject": 1}), ("dcb", {"allow_rollup_hdrs": True,
     "deny_purge": False})],
)  # fmt: skip
async def test_a_store_created_beforehand_outside_eskit_with_settings_that_drop_events_is_refused_not_opened(
    writer: eskit.Client, admin: eskit.Client, kind: str, dropping: dict[str, object]
) -> None:
    name = unique("vault")
    model = eskit.streams.stream_config(name).as_dict()
    created = await api(admin, f"STREAM.CREATE.{name.upper()}", {**model, **dropping})  # before anyone opens it
    assert "error" not in created, created
    try:
        for client in (admin, writer):
            with pytest.raises(eskit.EventStoreError, match=f"{next(iter(dropping))}=.*allow_delete_history=True"):
                await (client.event_store(name) if kind == "event" else client.dcb_store(name, tag_keys=["k"]))
        if kind == "event":  # asked for: opened as it is
            await (await admin.event_store(name, allow_delete_history=True)).append("1", [Event("created")])
    finally:
        await api(admin, f"STREAM.DELETE.{name.upper()}")


async def test_a_store_keeps_its_history_even_against_the_admin_unless_created_to_allow_deletes(
    admin: eskit.Client,
) -> None:
    name, mutable = unique("books"), unique("scratch")
    store = await admin.event_store(name)
    await fill_orders(store, 2)
    stream = name.upper()
    refusals = [await api(admin, f"STREAM.PURGE.{stream}", {}),
                await api(admin, f"STREAM.MSG.DELETE.{stream}", {"seq": 1})]  # fmt: skip
    assert all("not permitted" in str(r.get("error")) for r in refusals), refusals
    assert await messages(admin, stream) == 5
    config = (await api(admin, f"STREAM.INFO.{stream}"))["config"]
    assert config["deny_delete"] and config["deny_purge"]  # type: ignore[index]
    dcb = await admin.dcb_store(unique("courses"), tag_keys=["course"])
    dcb_config = (await api(admin, f"STREAM.INFO.{dcb.stream}"))["config"]
    assert dcb_config["deny_delete"] and dcb_config["deny_purge"]  # type: ignore[index]
    scratch = await admin.event_store(mutable, allow_delete_history=True)
    await fill_orders(scratch, 2)
    assert (await api(admin, f"STREAM.PURGE.{mutable.upper()}", {})).get("success")
    assert await messages(admin, mutable.upper()) == 0
    for each in (name, mutable, dcb.name):  # deleting a whole store still works: cleanup
        assert await admin.delete_store(each)


async def test_a_projection_recovers_the_events_another_connection_took_from_its_consumer(
    writer: eskit.Client, admin: eskit.Client, server: EmbeddedServer
) -> None:
    name = unique("shop")
    await admin.event_store(name)  # an admin creates the store
    store = await writer.event_store(name)
    await fill_orders(store, 2)  # 5 events: o0 created, noted, shipped; o1 created, noted
    view = Orders(store, batch_size=4)
    assert await view.run_until_caught_up() == 3
    last = await fill_orders(store, 6, first=2)  # 15 more, 20 in all
    stream, consumer = name.upper(), "projection-Orders"
    async with await eskit.connect(server.url, user="writer", password=WRITER) as thief:
        assert await steal(thief, stream, consumer, 4) == [6, 7, 8, 9]  # o2 created..o3 created
        await view.step()  # delivered 10..13: the projection notices 6..9 are missing and reads them
        assert view.db.execute("SELECT count(*) FROM orders").fetchone() == (5,)  # o0..o4, none skipped
        taken: list[int] = []
        for _ in range(20):  # the rest, a few at a time (the consumer allows 8 unacknowledged)
            more = await steal(thief, stream, consumer, 3)
            if not more:
                break
            taken += more
        assert taken and taken[-1] == last  # the projection's consumer has nothing left to deliver
    await view.run_until_caught_up()  # the consumer says "all delivered and acked", beyond the read model
    assert view.position == last
    assert view.db.execute("SELECT count(*), sum(status = 'shipped') FROM orders").fetchone() == (8, 4)
    assert view.stats.parked == 0 and view.stats.recovered > 3  # the handled ones of 6..9, and of the tail
    await view.close(delete_consumer=True)
    assert await admin.delete_store(name)


def test_a_gap_is_positions_missing_from_the_deliveries_not_from_the_handled_types() -> None:
    from eskit.projections import missing_ranges

    assert missing_ranges(5, [6, 7, 8]) == []  # other types among them or not: every position came
    assert missing_ranges(5, [10, 11]) == [(6, 9)]
    assert missing_ranges(5, [6, 9, 7, 12]) == [(8, 8), (10, 11)]
    assert missing_ranges(5, [3, 4, 6, 7]) == []  # redeliveries at or below the position are no gap
    assert missing_ranges(5, [6, 6, 8]) == [(7, 7)]
    assert missing_ranges(5, []) == []


async def test_a_writer_can_neither_forge_an_analysts_read_replies_nor_the_analyst_read_everyones_replies(
    writer: eskit.Client, analyst: eskit.Client, admin: eskit.Client
) -> None:
    name = unique("ledger")
    store = await admin.event_store(name)
    await store.append("acct", [Event("deposited", {"amount": 100})])
    reading = await analyst.event_store(name)
    assert [e.data for e in await reading.read("acct")] == [{"amount": 100}]
    spied: list[str] = []

    async def spy(msg: object) -> None:
        spied.append(str(getattr(msg, "subject", "")))

    for thief in (analyst, writer):  # every reply to anyone, under one shared _INBOX.>
        await thief.nc.subscribe("_INBOX.>", cb=spy)
        await thief.nc.flush()
    await store.read("acct")
    for thief in (analyst, writer):
        await thief.nc.flush()
    assert spied == []

    prefix = analyst.wire._prefix  # the analyst's reply inbox; its request tokens count up (1, 2, ...)
    forged = {"Nats-Stream": name.upper(), "Nats-Subject": f"{name}.acct.deposited", "Nats-Sequence": "1",
              "Nats-Time-Stamp": "2026-01-01T00:00:00Z", "Nats-Num-Pending": "0",
              "Nats-Last-Sequence": "1"}  # fmt: skip
    done = asyncio.Event()

    async def forge() -> None:
        for _ in range(5_000):  # bounded: until the analyst has read
            if done.is_set():
                return
            for token in range(1, 64):
                await writer.nc.publish(f"{prefix}.{token:x}", b'{"amount": 1000000}', headers=forged)
            await asyncio.sleep(0)

    forger = asyncio.create_task(forge())
    try:
        reads = [[e.data for e in await reading.read("acct")] for _ in range(20)]
    finally:
        done.set()
        await forger
    assert reads == [[{"amount": 100}]] * 20
    await admin.delete_store(name)


@pytest.mark.parametrize("change", ["filter", "pause"])
async def test_a_projection_whose_consumer_the_writer_refiltered_or_paused_does_not_say_caught_up_missing_events(
    writer: eskit.Client, admin: eskit.Client, change: str
) -> None:
    name = unique("orders")
    await admin.event_store(name)  # an admin creates the store
    store = await writer.event_store(name)
    await fill_orders(store, 2)  # 5 events, 3 handled
    view = Orders(store)
    try:
        assert await view.run_until_caught_up() == 3
        stream, consumer = name.upper(), "projection-Orders"
        if change == "filter":  # an "update" of the durable consumer: nothing matches any more
            config = (await api(writer, f"CONSUMER.INFO.{stream}.{consumer}"))["config"]
            config = {**config, "filter_subject": f"{name}.nothing.>"}  # type: ignore[dict-item]
            body = {"stream_name": stream, "config": config}
            answer = await api(writer, f"CONSUMER.CREATE.{stream}.{consumer}", body)
        else:  # (the writer may not pause consumers: the admin did)
            answer = await api(admin, f"CONSUMER.PAUSE.{stream}.{consumer}", {"pause_until": "2099-01-01T00:00:00Z"})
        assert "error" not in answer, answer
        last = await fill_orders(store, 4, first=2)
        assert await view.run_until_caught_up(timeout=10) == 6
        assert view.position == last == 15
        assert view.db.execute("SELECT count(*), sum(status = 'shipped') FROM orders").fetchone() == (6, 3)
    finally:
        await view.close(delete_consumer=True)
        await admin.delete_store(name)


async def test_a_running_projection_whose_consumer_the_writer_refiltered_recovers_instead_of_stalling_at_lag_0(
    writer: eskit.Client, admin: eskit.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eskit.projections.projection, "IDLE_CHECK", 0.2)
    name = unique("orders")
    await admin.event_store(name)  # an admin creates the store
    store = await writer.event_store(name)
    view = Orders(store, max_wait=0.1)
    try:
        view.start()
        await view.wait_for(await fill_orders(store, 2), timeout=10)
        stream, consumer = name.upper(), "projection-Orders"
        config = (await api(writer, f"CONSUMER.INFO.{stream}.{consumer}"))["config"]
        config = {**config, "filter_subject": f"{name}.nothing.>"}  # type: ignore[dict-item]
        answer = await api(writer, f"CONSUMER.CREATE.{stream}.{consumer}", {"stream_name": stream, "config": config})
        assert "error" not in answer, answer
        last = await fill_orders(store, 4, first=2)
        await view.wait_for(last, timeout=10)  # stalled at 5 with lag 0 and no error before
        assert view.db.execute("SELECT count(*), sum(status = 'shipped') FROM orders").fetchone() == (6, 3)
    finally:
        await view.close(delete_consumer=True)
        await admin.delete_store(name)


async def test_the_writer_may_not_force_leader_elections_of_stores_or_projections(
    writer: eskit.Client, admin: eskit.Client
) -> None:
    name = unique("orders")
    await admin.event_store(name)  # an admin creates the store
    store = await writer.event_store(name)
    await fill_orders(store, 1)
    view = Orders(store)
    try:
        await view.run_until_caught_up()
        stream = name.upper()  # on a cluster, a stepdown a second keeps the store unavailable (elections)
        await refused_fast(api(writer, f"STREAM.LEADER.STEPDOWN.{stream}", {}))
        await refused_fast(api(writer, f"CONSUMER.LEADER.STEPDOWN.{stream}.projection-Orders", {}))
    finally:
        await view.close(delete_consumer=True)
        await admin.delete_store(name)


async def test_credentials_in_the_url_get_the_users_own_reply_inbox_too(server: EmbeddedServer, orders: str) -> None:
    host = server.url.split("://", 1)[1]
    async with await eskit.connect(f"nats://analyst:{ANALYST}@{host}") as analyst:  # no user=: from the URL
        assert [e.type for e in await (await analyst.event_store(orders)).read("1")][:2] == ["created", "item_added"]
    async with await eskit.connect(f"nats://writer:{WRITER}@{host}") as writer:
        assert await (await writer.event_store(orders)).append("u1", [Event("created")]) > 2


class Tally(eskit.Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.events = 0

    @applies("created")
    def _created(self, data: object) -> None:
        self.events += 1


async def test_an_analyst_loads_with_snapshots_the_writer_keeps_and_is_refused_a_new_bucket_at_once(
    writer: eskit.Client, analyst: eskit.Client, admin: eskit.Client
) -> None:
    kept, bare = unique("orders"), unique("orders")
    policy = eskit.SnapshotPolicy(every=2)
    await admin.event_store(kept, snapshots=policy)  # an admin creates the stores and the bucket
    for name in (kept, bare):
        await admin.event_store(name)
        await (await writer.event_store(name)).append("t1", [Event("created") for _ in range(3)])
    await (await writer.event_store(kept, snapshots=policy)).load(Tally, "t1")  # the bucket, and a snapshot
    try:
        started = time.monotonic()
        reading = await analyst.event_store(kept, snapshots=policy)  # was nats' TimeoutError after 5 s
        assert (await reading.load(Tally, "t1")).events == 3 and time.monotonic() - started < FAST
        await refused_fast(analyst.event_store(bare, snapshots=policy))  # may not create the bucket
    finally:
        for name in (kept, bare):
            await admin.delete_store(name)


async def test_an_analysts_dcb_subscription_is_refused_at_once_and_the_writers_follows(
    writer: eskit.Client, analyst: eskit.Client, admin: eskit.Client
) -> None:
    from eskit.dcb import Query, TaggedEvent

    name = unique("courses")
    await admin.dcb_store(name, tag_keys=("course",))
    courses = await writer.dcb_store(name)
    first = await courses.append([TaggedEvent("Enrolled", {}, ["course:c1"])])
    try:
        reading = await analyst.dcb_store(name)
        assert [e.position for e in await reading.read()] == [first]  # it reads
        await refused_fast(reading.subscribe(Query.all(), after=0))  # was nats' TimeoutError after 5 s
        async with await courses.subscribe(Query.all(), after=0) as following:
            assert (await asyncio.wait_for(anext(following), 5)).position == first
    finally:
        await admin.delete_store(name)


async def test_a_writer_may_not_create_a_stream_that_keeps_the_analysts_replies_so_they_stay_private(
    writer: eskit.Client, analyst: eskit.Client, admin: eskit.Client, orders: str
) -> None:
    spies = {"SPY_INBOX": "_INBOX_analyst.>", "SPY_ALL": "_INBOX.>", "SPY_API": "$JS.API.>", "SPY_ACK": "$JS.ACK.>"}
    for name, subject in spies.items():  # was created: the analyst's next read replies were stored in it
        body = {"name": name, "subjects": [subject], "storage": "memory", "no_ack": True}
        await refused_fast(api(writer, f"STREAM.CREATE.{name}", body))
    assert [e.type for e in await (await analyst.event_store(orders)).read("1")] == ["created", "item_added"]
    for name in spies:
        assert "error" in await api(admin, f"STREAM.INFO.{name}")  # no stream holds the replies
    await refused_fast(writer.event_store(unique("orders")))  # eskit's own create: one line, at once
    await refused_fast(writer.dcb_store(unique("courses"), tag_keys=["course"]))


def test_writer_creates_stores_true_gives_the_writer_stream_creation_back_and_says_so() -> None:
    strict = least_privilege_config(writer_password="w", analyst_password="a")
    trusting = least_privilege_config(writer_password="w", analyst_password="a", writer_creates_stores=True)
    assert "$JS.API.STREAM.CREATE.>" in strict and "$JS.API.STREAM.CREATE.>" not in trusting


@pytest.mark.fast_lane  # without it a replay reads by Direct Get only: there is no consumer to refilter
async def test_a_replay_whose_short_lived_consumer_another_writer_refilters_mid_read_still_returns_every_event(
    server: EmbeddedServer, writer: eskit.Client, admin: eskit.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eskit._bulkread, "BATCH", 100)
    monkeypatch.setattr(eskit._bulkread, "AHEAD", 1)
    name, events = unique("log"), 7000  # more than a first page + BULK_REPLAY: the rest through a consumer
    await admin.event_store(name)
    store = await writer.event_store(name)
    await store.append_many([(f"a{i % 3}", [Event("created", {"n": i})], None) for i in range(events)])
    positions: list[int] = []
    try:
        async with await eskit.connect(server.url, user="writer", password=WRITER) as other:
            async for event in store.replay():
                positions.append(event.position)
                if len(positions) == 2500:  # the consumer is reading: the other writer narrows its filter
                    names = (await api(other, f"CONSUMER.NAMES.{store.stream}"))["consumers"]
                    reading = next(n for n in names if n.startswith("eskit_read_"))  # type: ignore[union-attr]
                    config = (await api(other, f"CONSUMER.INFO.{store.stream}.{reading}"))["config"]
                    body = {"stream_name": store.stream, "config": {**config, "filter_subject": f"{name}.a0.>"}}  # type: ignore[dict-item]
                    assert "error" not in await api(other, f"CONSUMER.CREATE.{store.stream}.{reading}", body)
        assert positions == list(range(1, events + 1))  # was: two thirds of the rest silently missing
    finally:
        await admin.delete_store(name)


class Fragile(Projection):
    """Its handler fails on every ``created``: the event is parked after one attempt."""

    schema = "CREATE TABLE t (id TEXT)"

    @applies("created")
    def _created(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        raise RuntimeError("handler bug")


async def test_a_writers_first_parked_event_names_the_dead_letter_store_an_admin_creates_then_parks(
    writer: eskit.Client, admin: eskit.Client
) -> None:
    name = unique("orders")
    await admin.event_store(name)
    store = await writer.event_store(name)
    await store.append("1", [Event("created")])
    view = Fragile(store, max_attempts=1)
    try:
        error = await refused_fast(view.run_until_caught_up())
        assert f"admin.event_store('{name}_parked', allow_delete_history=True)" in str(error)
        await admin.event_store(f"{name}_parked", allow_delete_history=True)
        await view.run_until_caught_up()
        assert [p.position for p in await view.parked()] == [1]
    finally:
        await view.close(delete_consumer=True)
        await admin.delete_store(name)
        await admin.delete_store(f"{name}_parked")
