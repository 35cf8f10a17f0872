"""Least privilege: a writer that may append, an analyst that may only read; credentials passed through.

Every refusal is one line, fast (the server's -ERR fails the waiting request), never a 5 s timeout.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from conftest import unique

import eskit
from eskit import EmbeddedServer, Event, PermissionDeniedError
from eskit.auth import least_privilege_config

WRITER, ANALYST = "w-secret", "a-secret"
FAST = 2.0  # seconds: well under the wire's 5 s request timeout


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedServer]:
    with EmbeddedServer(config=least_privilege_config(writer_password=WRITER, analyst_password=ANALYST)) as s:
        yield s


@pytest.fixture(scope="module")
async def orders(server: EmbeddedServer) -> AsyncIterator[str]:
    """A store the writer filled: aggregate "1" with two events."""
    name = unique("orders")
    async with await eskit.connect(server.url, user="writer", password=WRITER) as writer:
        store = await writer.event_store(name)
        first = await store.append("1", [Event("created", {"customer": "ada"})], expected_position=0)
        await store.append("1", [Event("item_added", {"sku": "A1"})], expected_position=first)
    return name


@pytest.fixture
async def analyst(server: EmbeddedServer) -> AsyncIterator[eskit.Client]:
    async with await eskit.connect(server.url, user="analyst", password=ANALYST) as client:
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
