"""The stream leader is SIGKILLed mid-write on a 3-node cluster and restarted: nothing acknowledged is lost.

A writer appends 5,000 events to 50 aggregates (100 each, concurrency-checked, with stable event ids); when
a request times out or finds nobody to answer (leader election), it retries the *same* events. Afterwards:
every event is stored exactly once, each aggregate's events are in order, and every acknowledged event is
at the position its ack named. The write pause (the longest gap between two acks) is reported, not asserted:
it is mostly Raft's election timeout (a follower waits a random 4-9 s for a lost leader before campaigning).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest
from conftest import unique

import eskit
from eskit import Event
from eskit.cluster import EmbeddedCluster
from eskit.failover import append_through_failover

pytestmark = pytest.mark.slow

AGGREGATES, PER_AGGREGATE = 50, 100
TOTAL = AGGREGATES * PER_AGGREGATE
KILL_AT, RESTART_AFTER = 1_500, 1_000  # acks before the kill; acks after the election before the restart


@dataclass
class Log:
    acks: dict[str, int] = field(default_factory=dict)  # event id -> position the writer was told
    times: list[float] = field(default_factory=list)

    def ack(self, event_id: str, position: int) -> None:
        assert event_id not in self.acks, f"{event_id} acknowledged twice"
        self.acks[event_id] = position
        self.times.append(time.monotonic())


async def write_aggregate(store: eskit.EventStore, aggregate: str, log: Log) -> None:
    last = 0
    for n in range(PER_AGGREGATE):
        event = Event("step", {"n": n}, id=f"{aggregate}-{n}")  # a stable id: every retry reuses it
        last = await append_through_failover(store, aggregate, [event], expected_position=last, within=60)
        log.ack(event.id, last)


async def kill_and_restart_the_leader(cluster: EmbeddedCluster, stream: str, log: Log) -> tuple[float, float]:
    """SIGKILL the stream leader after KILL_AT acks, restart it once writes went on; return both times."""
    await wait_for_acks(log, KILL_AT)
    leader = await asyncio.to_thread(cluster.wait_stream_leader, stream)
    await asyncio.to_thread(cluster.kill, leader)
    killed = time.monotonic()
    await wait_for_acks(log, len(log.acks) + RESTART_AFTER)
    await asyncio.to_thread(cluster.start_node, leader)
    return killed, time.monotonic()


async def wait_for_acks(log: Log, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(log.acks) < min(count, TOTAL):
        assert time.monotonic() < deadline, f"only {len(log.acks)} of {count} acks after {timeout:.0f}s"
        await asyncio.sleep(0.01)


async def test_killing_the_stream_leader_mid_write_loses_and_duplicates_nothing() -> None:
    log = Log()
    with EmbeddedCluster(3) as cluster:
        async with await eskit.connect(cluster.url) as client:
            name = unique("fault")
            store = await client.event_store(name)
            assert client.default_replicas == 3
            await asyncio.to_thread(cluster.wait_stream_leader, store.stream)
            chaos = asyncio.create_task(kill_and_restart_the_leader(cluster, store.stream, log))
            await asyncio.wait_for(
                asyncio.gather(*(write_aggregate(store, f"a{i}", log) for i in range(AGGREGATES))), 120
            )
            killed, restarted = await asyncio.wait_for(chaos, 60)
            last = await asyncio.to_thread(cluster.wait_in_sync, store.stream, 30)
            stored = [e async for e in store.replay()]

    ids = [e.id for e in stored]
    lost = set(log.acks) - set(ids)
    duplicates = len(ids) - len(set(ids))
    pause = max(b - a for a, b in zip(log.times, log.times[1:], strict=False))
    print(
        f"\nfault: {len(log.acks)} acked, {len(stored)} stored (last seq {last}), lost {len(lost)}, "
        f"duplicates {duplicates}, "
        f"write pause {pause:.2f}s (longest gap between acks; old leader up {restarted - killed:.1f}s later)"
    )
    assert len(log.acks) == TOTAL
    assert not lost, f"acknowledged but not stored: {sorted(lost)[:5]}"
    assert duplicates == 0
    assert len(stored) == last == TOTAL
    assert {e.id: e.position for e in stored} == log.acks, "an ack named another position than the stored one"
    for i in range(AGGREGATES):
        steps = [e.data["n"] for e in stored if e.aggregate_id == f"a{i}"]
        assert steps == list(range(PER_AGGREGATE)), f"a{i} out of order or incomplete"
