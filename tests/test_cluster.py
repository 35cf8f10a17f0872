"""A 3-node cluster on loopback: replicated streams, the CLI, what a stale Direct Get can and cannot do,
and which error a write gets when nobody answers for its stream.

Direct Get (how eskit reads) is answered by *any* replica of a stream, and a follower may not yet have
applied the latest write (no read-after-write guarantee; only ``$JS.API.STREAM.MSG.GET`` goes to the leader).
A stale read gives an old ``expected_position``; the leader checks it on append, so the worst a stale read
can cause is a conflict and a retry, never a lost update.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from conftest import unique

import eskit
from eskit import ConcurrencyError, Event
from eskit.cluster import EmbeddedCluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(3) as c:
        yield c


async def test_streams_on_a_three_node_cluster_get_three_replicas_unless_told_otherwise(
    cluster: EmbeddedCluster,
) -> None:
    async with await eskit.connect(cluster.url) as client:
        assert client.default_replicas == 3
        name, single = unique("orders"), unique("orders")
        try:
            await client.event_store(name)
            await client.event_store(single, replicas=1)
            info = await client.js.stream_info(name.upper())
            assert info.config.num_replicas == 3
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2
            assert (await client.js.stream_info(single.upper())).config.num_replicas == 1
        finally:
            await client.delete_store(name)
            await client.delete_store(single)


async def test_a_single_server_keeps_one_replica(client: eskit.Client) -> None:
    assert client.default_replicas == 1


def test_python_m_eskit_server_cluster_3_prints_a_url_of_a_three_node_cluster() -> None:
    cmd = [sys.executable, "-m", "eskit", "server", "--cluster", "3"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            read_url_and_connect(proc)
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0


def read_url_and_connect(proc: subprocess.Popen[str]) -> None:
    """Read the CLI's output up to its NATS_URL line, connect there and check the cluster."""
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(x.startswith("export NATS_URL=") for x in lines):
        lines.append(proc.stdout.readline())
        assert lines[-1], f"server exited early: {lines}"
    url = next(x for x in lines if x.startswith("export NATS_URL=")).split("=", 1)[1].strip()
    assert len(url.split(",")) == 3 and sum(x.startswith("node n") for x in lines) == 3

    async def replicas() -> int:
        async with await eskit.connect(url) as c:
            return c.default_replicas

    assert asyncio.run(replicas()) == 3


def test_cluster_option_refuses_a_store_dir_it_cannot_honour() -> None:
    from eskit.__main__ import main

    assert main(["server", "--cluster", "3", "--store-dir", "/tmp/x"]) == 1


async def test_a_stale_read_leads_to_a_conflict_and_a_retry_never_to_a_lost_update(
    cluster: EmbeddedCluster,
) -> None:
    async with await eskit.connect(cluster.url) as client:
        name = unique("counter")
        store = await client.event_store(name)
        try:
            first = await store.append("c", [Event("incremented", {"n": 1})], expected_position=0)
            second = await store.append("c", [Event("incremented", {"n": 2})], expected_position=first)
            stale = await store.read("c", up_to=first)  # what a replica that lags one write would answer
            with pytest.raises(ConcurrencyError) as conflict:
                await store.append(
                    "c", [Event("incremented", {"n": 2})], expected_position=stale[-1].position
                )
            assert conflict.value.expected == first and conflict.value.actual in (second, None)  # None: R3
            fresh = await store.read("c")
            await store.append("c", [Event("incremented", {"n": 3})], expected_position=fresh[-1].position)
            assert [e.data["n"] for e in await store.read("c")] == [1, 2, 3]
        finally:
            await client.delete_store(name)


async def increment(store: eskit.EventStore, aggregate_id: str, times: int) -> int:
    """Read (Direct Get on this connection's node), decide n+1, append checked; retry conflicts."""
    conflicts = 0
    for _ in range(times):
        for _attempt in range(200):
            history = await store.read(aggregate_id)
            last = history[-1] if history else None
            n = last.data["n"] + 1 if last else 1
            try:
                await store.append(
                    aggregate_id,
                    [Event("incremented", {"n": n})],
                    expected_position=last.position if last else 0,
                )
                break
            except ConcurrencyError:
                conflicts += 1
        else:
            raise AssertionError("no increment got through in 200 attempts")
    return conflicts


async def test_writers_reading_from_different_replicas_never_lose_an_increment(
    cluster: EmbeddedCluster,
) -> None:
    clients = [await eskit.connect(node.url) for node in cluster.nodes]  # one client per node
    name = unique("counter")
    try:
        stores = [await c.event_store(name) for c in clients]
        conflicts = await asyncio.gather(*(increment(s, "c", 20) for s in stores))
        cluster.wait_in_sync(name.upper())
        history = await stores[0].read("c")
        assert [e.data["n"] for e in history] == list(range(1, 61)), "an increment was lost or doubled"
        print(f"conflicts (retried) per writer: {conflicts}")
    finally:
        await clients[0].delete_store(name)
        for c in clients:
            await c.close()


async def test_a_store_that_does_not_exist_raises_stream_not_found(client: eskit.Client) -> None:
    name = unique("gone")
    store = await client.event_store(name)
    await client.delete_store(name)
    with pytest.raises(eskit.StreamNotFoundError, match="create the store first"):
        await store.append("1", [Event("created")])
    with pytest.raises(eskit.StreamNotFoundError):
        await store.read("1")


async def test_a_write_to_a_stream_whose_only_replica_is_down_raises_a_retryable_unavailable_error(
    cluster: EmbeddedCluster,
) -> None:
    async with await eskit.connect(cluster.url) as client:
        name = unique("orders")
        store = await client.event_store(name, replicas=1)
        holder = cluster.stream_leader(store.stream)
        other = next(n for n in cluster.nodes if n is not holder)
        cluster.kill(holder)
        try:
            async with await eskit.connect(other.url) as elsewhere:
                lost = eskit.EventStore(elsewhere, name, store.stream)
                with pytest.raises((eskit.StoreUnavailableError, eskit.StoreTimeoutError)) as info:
                    await lost.append("1", [Event("created")])
                assert not isinstance(info.value, eskit.StreamNotFoundError)
                assert "\n" not in str(info.value)
        finally:
            cluster.start_node(holder)
            cluster.wait_healthy()
            await asyncio.to_thread(cluster.wait_stream_leader, store.stream)
            await client.delete_store(name)


class Tally(eskit.Aggregate):
    """A counter whose every increment records the value it decided on: a lost update shows as a repeat."""

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.n = 0

    def increment(self) -> None:
        self.record("incremented", {"n": self.n + 1})

    @eskit.applies("incremented")
    def _incremented(self, data: dict[str, int]) -> None:
        self.n = data["n"]


async def tally(url: str, name: str, times: int) -> int:
    """``run_command`` ``times`` times on one node's connection, with a cache and snapshots; the retries."""
    async with await eskit.connect(url) as client:
        store = await client.event_store(
            name, cache=eskit.AggregateCache(), snapshots=eskit.SnapshotPolicy(every=3)
        )
        retries = 0
        for _ in range(times):
            for _attempt in range(100):
                try:
                    await eskit.run_command(store, Tally, "t", Tally.increment, attempts=1)
                    break
                except ConcurrencyError:
                    retries += 1
            else:
                raise AssertionError("no increment got through in 100 attempts")
        return retries


async def test_cached_and_snapshotted_aggregates_decide_on_lagging_replicas_without_losing_an_update(
    cluster: EmbeddedCluster,
) -> None:
    name = unique("tally")
    urls = [node.url for node in cluster.nodes] * 2  # two writers per node: their reads are that node's replica
    async with await eskit.connect(cluster.url) as client:
        try:
            await client.event_store(name)
            retries = await asyncio.gather(*(tally(url, name, 15) for url in urls))
            store = await client.event_store(name)
            cluster.wait_in_sync(store.stream)
            assert [e.data["n"] for e in await store.read("t")] == list(range(1, 15 * len(urls) + 1))
            assert (await store.load(Tally, "t")).n == 15 * len(urls)
            print(f"\nconflicts retried per writer: {retries}")
        finally:
            await client.delete_store(name)
