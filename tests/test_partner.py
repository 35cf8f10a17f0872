"""A partner (another team's user) reads the public stream and runs its own projection on it, and is refused
everything on the private store: reads, Direct Get, stream info, consumers, appends. Each refusal is one line
and fast (the server's -ERR), never a 5 s timeout. A real server with users (auth.least_privilege_config)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from conftest import unique

import eskit
from eskit import EmbeddedServer, Event, Partner, PermissionDeniedError, applies
from eskit.auth import inbox_prefix, least_privilege_config, partner_permissions
from eskit.events import RecordedEvent
from eskit.store import EventStore

WRITER, ANALYST, ADMIN, PARTNER = "w-secret", "a-secret", "adm-secret", "p-secret"
FAST = 2.0  # seconds: well under the wire's 5 s request timeout
PRIVATE = unique("orders")
PUBLIC = f"{PRIVATE}-public"


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedServer]:
    config = least_privilege_config(
        writer_password=WRITER, analyst_password=ANALYST, admin_password=ADMIN,
        partners=[Partner("shipping", password=PARTNER, stores=(PUBLIC,)),
                  Partner("auditor", password=PARTNER, stores=(PUBLIC,), consumers=False)],
    )  # fmt: skip
    with EmbeddedServer(config=config) as s:
        yield s


@pytest.fixture(scope="module")
async def published(server: EmbeddedServer) -> AsyncIterator[None]:
    """The writer's private store (orders 1 and 2, with personal and internal events) and its public stream."""
    async with await eskit.connect(server.url, user="admin", password=ADMIN, namespace="") as admin:
        await admin.publish_integration(await admin.event_store(PRIVATE), PUBLIC, types=["placed", "shipped"])
        await admin.event_store(f"{PUBLIC}_parked", allow_delete_history=True)  # the partners' dead letters
    async with await eskit.connect(server.url, user="writer", password=WRITER, namespace="") as writer:
        store = await writer.event_store(PRIVATE)  # an admin created the stores: the writer opens them
        await store.append("1", [Event("placed", {"total": 5, "email": "ada@example.com"}), Event("fraud_checked")])
        await store.append("2", [Event("placed", {"total": 7})])
        await store.append("1", [Event("shipped", {"carrier": "DHL"})])
        public = await writer.publish_integration(store, PUBLIC, types=["placed", "shipped"])
        await public.wait_for()
    yield None


@pytest.fixture
async def partner(server: EmbeddedServer, published: None) -> AsyncIterator[eskit.Client]:
    async with await eskit.connect(server.url, user="shipping", password=PARTNER, namespace="") as client:
        yield client


async def refused_fast(call: object) -> PermissionDeniedError:
    started = time.monotonic()
    with pytest.raises(PermissionDeniedError) as info:
        await asyncio.wait_for(call, 10)  # type: ignore[arg-type]
    assert time.monotonic() - started < FAST, "the refusal waited for a timeout"
    message = str(info.value)
    assert message.startswith("permission denied: ") and "\n" not in message and PARTNER not in message
    return info.value


class Shipments(eskit.Projection):
    schema = "CREATE TABLE shipments (id TEXT PRIMARY KEY, carrier TEXT)"

    @applies("placed")
    def _placed(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        db.execute("INSERT INTO shipments (id) VALUES (?)", (event.aggregate_id,))

    @applies("shipped")
    def _shipped(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        db.execute("UPDATE shipments SET carrier = ? WHERE id = ?", (event.data["carrier"], event.aggregate_id))


async def test_the_partner_reads_the_public_stream_and_runs_its_own_projection_on_it(partner: eskit.Client) -> None:
    public = await partner.public_store(PUBLIC)
    assert [(e.type, e.data) for e in await public.read("1")] == [
        ("placed", {"total": 5, "email": "ada@example.com"}), ("shipped", {"carrier": "DHL"})]  # fmt: skip
    assert [e.type async for e in public.replay()] == ["placed", "placed", "shipped"]  # no fraud_checked
    assert await public.last_position() == 3
    view = Shipments(public, name=unique("shipping"))
    try:
        assert await view.run_until_caught_up(timeout=10) == 3
        assert view.db.execute("SELECT * FROM shipments ORDER BY id").fetchall() == [("1", "DHL"), ("2", None)]
    finally:
        await view.close(delete_consumer=True)


async def test_the_partner_is_refused_the_private_store_read_direct_get_consumer_and_stream_info(
    partner: eskit.Client,
) -> None:
    stream = PRIVATE.upper()
    await refused_fast(partner.event_store(PRIVATE))  # opening it asks for its stream info
    private = EventStore(partner, PRIVATE, stream)  # as if it had opened it anyway
    await refused_fast(private.read("1"))  # Direct Get
    await refused_fast(private.last_position())  # stream info
    await refused_fast(private.last_position("1"))  # Direct Get, last by subject
    await refused_fast(partner.wire.request(f"$JS.API.STREAM.INFO.{stream}", b""))
    await refused_fast(partner.wire.request(f"$JS.API.DIRECT.GET.{stream}", json.dumps({"seq": 1}).encode()))
    await refused_fast(partner.wire.request(f"$JS.API.STREAM.MSG.GET.{stream}", json.dumps({"seq": 1}).encode()))
    config = {"stream_name": stream, "config": {"durable_name": "spy", "ack_policy": "all"}}
    body = json.dumps(config).encode()
    await refused_fast(partner.wire.request(f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.spy", body))
    await refused_fast(partner.wire.request(f"$JS.API.CONSUMER.CREATE.{stream}", body))
    await refused_fast(partner.wire.request(f"$JS.API.CONSUMER.CREATE.{stream}.spy", body))
    view = Shipments(private, name=unique("spy"))
    await refused_fast(view.run_until_caught_up(timeout=5))
    await view.close()

    async def replay() -> list[RecordedEvent]:
        return [e async for e in private.replay()]

    await refused_fast(replay())  # a bulk read: its consumer refused, and the Direct Get fallback too
    await refused_fast(private.append("1", [Event("placed")]))  # and never a write


async def test_the_partner_can_neither_write_nor_change_nor_delete_the_public_stream(partner: eskit.Client) -> None:
    public = await partner.public_store(PUBLIC)
    stream = PUBLIC.upper()
    await refused_fast(public.append("9", [Event("placed")]))  # no event subject at all
    await refused_fast(partner.wire.request(f"$JS.API.STREAM.DELETE.{stream}", b""))
    await refused_fast(partner.wire.request(f"$JS.API.STREAM.UPDATE.{stream}", b"{}"))
    await refused_fast(partner.wire.request(f"$JS.API.STREAM.PURGE.{stream}", b""))
    await refused_fast(partner.event_store(unique("mine")))  # nor create a store of its own
    assert len([e async for e in public.replay()]) == 3


async def test_a_partner_cannot_read_the_private_store_through_a_stream_of_its_own_that_mirrors_or_sources_it(
    server: EmbeddedServer, partner: eskit.Client
) -> None:
    """It could create its dead-letter stream (``<public>_parked``) with any configuration, and the server does
    not check the creator's rights on a mirror's or source's stream: a mirror of the private store read it all,
    private types included."""
    parked = f"{PUBLIC}_parked".upper()
    try:
        for how in ({"mirror": {"name": PRIVATE.upper()}}, {"sources": [{"name": PRIVATE.upper()}]}):
            body = json.dumps({"name": parked, "allow_direct": True, **how}).encode()
            await refused_fast(partner.wire.request(f"$JS.API.STREAM.CREATE.{parked}", body))
            await refused_fast(partner.wire.request(f"$JS.API.STREAM.UPDATE.{parked}", body))
        public = await partner.public_store(PUBLIC)
        assert {e.type async for e in public.replay()} == {"placed", "shipped"}
    finally:  # on the code before the fix the partner's mirror replaced the dead letters: the owner makes them again
        async with await eskit.connect(server.url, user="admin", password=ADMIN, namespace="") as admin:
            info = json.loads((await admin.wire.request(f"$JS.API.STREAM.INFO.{parked}", b"")).data)
            if "mirror" in info.get("config", {}) or "sources" in info.get("config", {}):
                await admin.wire.request(f"$JS.API.STREAM.DELETE.{parked}", b"")
                await admin.event_store(f"{PUBLIC}_parked", allow_delete_history=True)


async def test_a_partner_without_consumers_reads_by_direct_get_and_is_refused_a_projection(
    server: EmbeddedServer, published: None
) -> None:
    async with await eskit.connect(server.url, user="auditor", password=PARTNER, namespace="") as auditor:
        public = await auditor.public_store(PUBLIC)
        assert [e.type async for e in public.replay()] == ["placed", "placed", "shipped"]  # by Direct Get
        view = Shipments(public, name=unique("auditor"))
        await refused_fast(view.run_until_caught_up(timeout=5))
        await view.close()


async def test_an_analyst_may_not_publish_integration_events(server: EmbeddedServer, published: None) -> None:
    async with await eskit.connect(server.url, user="analyst", password=ANALYST, namespace="") as analyst:
        private = await analyst.event_store(PRIVATE)
        await refused_fast(analyst.publish_integration(private, unique("leak"), types=["placed"]))


class Fussy(Shipments):
    fail = True

    @applies("shipped")
    def _shipped(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        if self.fail:
            raise ValueError("unknown carrier")
        super()._shipped(db, event)


async def test_the_partners_projection_parks_what_it_cannot_apply_in_its_own_dead_letters_and_replays_it(
    partner: eskit.Client,
) -> None:
    public = await partner.public_store(PUBLIC)
    view = Fussy(public, name=unique("fussy"), max_attempts=1)
    try:
        await view.run_until_caught_up(timeout=10)
        assert [(p.position, p.type) for p in await view.parked()] == [(3, "shipped")]
        view.fail = False
        assert await view.replay_parked() == 1 and await view.parked() == []
        assert view.db.execute("SELECT * FROM shipments ORDER BY id").fetchall() == [("1", "DHL"), ("2", None)]
    finally:
        await view.close(delete_consumer=True)


def test_partner_permissions_allow_only_its_public_streams_and_the_writer_may_not_forge_its_replies() -> None:
    rules = partner_permissions(["orders-public"], user="shipping")
    allowed = rules["publish"]["allow"]
    assert all("ORDERS-PUBLIC" in s or s in ("$JS.API.INFO", "orders-public_parked.>") for s in allowed)
    assert rules["subscribe"]["allow"] == [inbox_prefix("shipping") + ".>"]
    config = least_privilege_config(writer_password="w", analyst_password="a",
                                    partners=[Partner("shipping", password="p-secret", stores=("orders-public",))])
    users = json.loads(config.split("users = ", 1)[1].rsplit("}", 1)[0])
    writer = next(u for u in users if u["user"] == "writer")
    assert "_INBOX_shipping.>" in writer["permissions"]["publish"]["deny"]
    assert "p-secret" not in repr(Partner("shipping", password="p-secret", stores=("orders-public",)))
    with pytest.raises(eskit.ValidationError):
        partner_permissions("orders-public", user="shipping")
    with pytest.raises(eskit.ValidationError):
        Partner("shipping", password="p", stores="orders-public")  # type: ignore[arg-type]
    assert Partner("shipping", password="p", stores=["orders-public"]).stores == ("orders-public",)  # type: ignore[arg-type]


async def test_a_partner_may_not_create_a_stream_that_keeps_the_analysts_replies(partner: eskit.Client) -> None:
    body = {"name": f"{PUBLIC}_PARKED".upper(), "subjects": ["_INBOX_analyst.>"], "storage": "memory", "no_ack": True}
    await refused_fast(partner.wire.request(f"$JS.API.STREAM.CREATE.{body['name']}", json.dumps(body).encode()))


def test_a_partner_user_name_with_a_dot_is_refused_its_replies_would_be_readable_by_another_user() -> None:
    """``Partner("shipping.eu")`` replied on ``_INBOX_shipping.eu.*``, inside user ``shipping``'s
    ``_INBOX_shipping.>``: one partner read the other's replies."""
    with pytest.raises(eskit.ValidationError, match="partner user") as info:
        Partner("shipping.eu", password="p", stores=("orders-public",))
    assert "\n" not in str(info.value)
    with pytest.raises(eskit.ValidationError, match="partner user"):
        partner_permissions(["orders-public"], user="shipping.>")
