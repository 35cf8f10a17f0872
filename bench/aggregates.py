"""Aggregate benchmarks: ratios measured in one run, on one machine.

    .venv/bin/python bench/aggregates.py            # full run (~1 min)
    .venv/bin/python bench/aggregates.py --quick    # smaller run
    .venv/bin/python bench/aggregates.py --json     # JSON on stdout (the table goes to stderr)

1. Command cycle (load, decide, save with a concurrency check), one at a time, round-robin over aggregates
   that start with 10 events: eskit on an embedded nats-server vs the ``eventsourcing`` library
   (``Application`` + ``Aggregate``) on in-process SQLite (``:memory:``). The two alternate cycle by cycle and
   the median cycle is compared (goal: eskit <= 1.0x). CPU time per cycle is shown too (eskit's includes
   the nats-server process).
2. Load with snapshots (store opened with ``SnapshotPolicy(every=100)``): an aggregate of 10,000 events whose
   snapshot was taken 5 events before its end, vs a 10-event aggregate (no snapshot yet) in the same store,
   alternating load by load (goal: <= 1.5x). Also shown: the 10-event load from a store without snapshots
   (one round trip fewer), the 10,000-event load without a snapshot, and a snapshot holding 10,000 items
   (then state size, not history length, is what costs).
Results also go to bench/results/aggregates.json.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import platform
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from report import emit, log  # bench/report.py (a script's folder is on sys.path)

import eskit
from eskit import Aggregate, SnapshotPolicy
from eskit.examples import Account, Order

RESULTS = Path(__file__).resolve().parent / "results" / "aggregates.json"
CYCLE_GOAL = 1.0
SNAPSHOT_GOAL = 1.5


@dataclass(frozen=True)
class Sizes:
    aggregates: int  # aggregates in the command-cycle run
    cycles: int  # command cycles per rep
    history: int  # events in the long history
    loads: int  # loads per rep in the snapshot run
    reps: int
    others: int  # other aggregates (10 events each) in the interleaved snapshot layout


# Cycles go round-robin over the aggregates: histories grow from 10 to ~10 + (reps + 1.2) * cycles / aggr.
FULL = Sizes(aggregates=600, cycles=1000, history=10_000, loads=300, reps=5, others=1000)
QUICK = Sizes(aggregates=100, cycles=200, history=2_000, loads=100, reps=3, others=200)



Op = Callable[[int], Awaitable[None]]


async def interleaved(ops: dict[str, Op], n: int, warmup: int) -> dict[str, float]:
    """Run the ops in turn (a(i), b(i), a(i+1), ...) and return each one's median wall time per call.

    Alternating call by call, and taking medians of single calls, keeps a busy machine's bursts from
    favouring either side."""
    times: dict[str, list[float]] = {k: [] for k in ops}
    for i in range(warmup + n):
        for key, op in ops.items():
            started = time.perf_counter()
            await op(i)
            if i >= warmup:
                times[key].append(time.perf_counter() - started)
    return {k: statistics.median(v) for k, v in times.items()}


# -- 1. command cycle ----------------------------------------------------------------------------------------


async def eskit_setup(
    client: eskit.Client, s: Sizes, policy: SnapshotPolicy | None = None, cache: eskit.AggregateCache | None = None
) -> tuple[eskit.EventStore, Callable[[int], Awaitable[None]]]:
    store = await client.event_store(f"bcycle{uuid.uuid4().hex[:8]}", snapshots=policy, cache=cache)
    ids = [f"o{i}" for i in range(s.aggregates)]
    for oid in ids:
        order = Order(oid)
        order.create("c")
        for k in range(9):
            order.add_item(f"sku-{k}", qty=1, price=2.5)
        await store.save(order)

    async def cycle(i: int) -> None:
        order = await store.load(Order, ids[i % len(ids)])
        order.add_item("sku-x", qty=1, price=2.5)
        await store.save(order)

    return store, cycle


@functools.cache
def es_order_class() -> Any:
    """The Order of the eventsourcing library, defined once (it registers classes by topic)."""
    from eventsourcing.domain import Aggregate as ESAggregate
    from eventsourcing.domain import event

    class ESOrder(ESAggregate):
        @event("Created")
        def __init__(self, customer: str) -> None:
            self.customer = customer
            self.status = "pending"
            self.items: list[dict[str, Any]] = []
            self.total = 0.0

        @event("ItemAdded")
        def add_item(self, sku: str, qty: int, price: float) -> None:
            if self.status != "pending":
                raise ValueError("not pending")
            self.items.append({"sku": sku, "qty": qty, "price": price})
            self.total = round(self.total + qty * price, 2)

    return ESOrder


def eventsourcing_setup(s: Sizes, cache: int = 0) -> tuple[Any, Callable[[int], None]]:
    from eventsourcing.application import Application

    ESOrder = es_order_class()
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": ":memory:"}
    if cache:
        env["AGGREGATE_CACHE_MAXSIZE"] = str(cache)
    app = Application(env=env)
    ids = []
    for _ in range(s.aggregates):
        order = ESOrder(customer="c")
        for k in range(9):
            order.add_item(f"sku-{k}", 1, 2.5)
        app.save(order)
        ids.append(order.id)

    def cycle(i: int) -> None:
        order = app.repository.get(ids[i % len(ids)])
        order.add_item("sku-x", 1, 2.5)
        app.save(order)

    return app, cycle


def server_cpu(server: eskit.EmbeddedServer) -> float:
    """CPU seconds the nats-server process has used (user + system), from /proc; 0 where there is none."""
    proc = getattr(server, "_proc", None)
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split() if proc else []
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else 0.0


async def command_cycles(client: eskit.Client, server: eskit.EmbeddedServer, s: Sizes) -> dict[str, float]:
    """Median wall time per cycle, eskit and eventsourcing alternating cycle by cycle; then CPU time per
    cycle over a block of each (eskit: this process + nats-server; eventsourcing: this process)."""
    store, eskit_cycle = await eskit_setup(client, s)
    snap_store, snap_cycle = await eskit_setup(client, s, SnapshotPolicy(every=5))
    cached_store, cached_cycle = await eskit_setup(client, s, cache=eskit.AggregateCache(s.aggregates))
    app, es_cycle = eventsourcing_setup(s)
    cached_app, es_cached_cycle = eventsourcing_setup(s, cache=s.aggregates)

    async def es(i: int) -> None:
        es_cycle(i)

    async def es_cached(i: int) -> None:
        es_cached_cycle(i)

    try:
        ops = {"eskit_s": eskit_cycle, "eventsourcing_s": es, "eskit_snapshots_s": snap_cycle,
               "eskit_cached_s": cached_cycle, "eventsourcing_cached_s": es_cached}  # fmt: skip
        result = await interleaved(ops, s.cycles * s.reps, s.cycles // 5)
        offset = s.cycles * (s.reps + 1)
        cpu, srv = time.process_time(), server_cpu(server)
        for i in range(s.cycles):
            await eskit_cycle(offset + i)
        result["eskit_server_cpu_s"] = (server_cpu(server) - srv) / s.cycles
        result["eskit_cpu_s"] = (time.process_time() - cpu) / s.cycles + result["eskit_server_cpu_s"]
        cpu = time.process_time()
        for i in range(s.cycles):
            es_cycle(offset + i)
        result["eventsourcing_cpu_s"] = (time.process_time() - cpu) / s.cycles
    finally:
        app.close()
        cached_app.close()
        for st in (store, snap_store, cached_store):
            await client.delete_store(st.name)
    result["ratio"] = result["eskit_s"] / result["eventsourcing_s"]
    result["cached_ratio"] = result["eskit_cached_s"] / result["eventsourcing_s"]
    result["cached_vs_cached_ratio"] = result["eskit_cached_s"] / result["eventsourcing_cached_s"]
    result["snapshots_ratio"] = result["eskit_snapshots_s"] / result["eventsourcing_s"]
    result["cpu_ratio"] = result["eskit_cpu_s"] / result["eventsourcing_cpu_s"]
    return result


# -- 2. load with a snapshot ---------------------------------------------------------------------------------


async def fill(store: eskit.EventStore, aggregate_id: str, events: list[eskit.Event]) -> None:
    position = 0
    for start in range(0, len(events), 1000):
        position = await store.append(aggregate_id, events[start : start + 1000], expected_position=position)


def deposits(n: int) -> list[eskit.Event]:
    return [eskit.Event("deposited", {"amount": 1}) for _ in range(n)]


def loader(target: eskit.EventStore, cls: type[Aggregate], oid: str, version: int) -> Op:
    async def one(_: int) -> None:
        assert (await target.load(cls, oid)).version == version

    return one


async def contiguous_layout(client: eskit.Client, s: Sizes) -> dict[str, float]:
    """Each aggregate's events stored together: history length is the only difference."""
    policies = {"snap": SnapshotPolicy(every=100), "plain": None, "big": SnapshotPolicy()}
    stores = [
        await client.event_store(f"b{k}{uuid.uuid4().hex[:8]}", snapshots=p) for k, p in policies.items()
    ]
    store, plain, big = stores
    try:
        history = deposits(s.history)
        await fill(store, "long", history[:-5])
        await store.load(Account, "long")  # takes the snapshot, 5 events before the end
        await store.append("long", history[-5:])
        await fill(plain, "long", history)
        for target in (store, plain):
            await fill(target, "short", deposits(10))
        items = [
            eskit.Event("item_added", {"sku": f"s{i}", "qty": 1, "price": 1.0}) for i in range(s.history)
        ]
        await fill(big, "big", [eskit.Event("created", {"customer": "c"}), *items])
        await big.load(Order, "big")
        n = s.loads * s.reps
        result = await interleaved(
            {"short_snapshots_on": loader(store, Account, "short", 10),
             "long_with_snapshot": loader(store, Account, "long", s.history),
             "short_snapshots_off": loader(plain, Account, "short", 10)},
            n, n // 10,
        )  # fmt: skip
        result |= await interleaved(
            {"long_big_state_with_snapshot": loader(big, Order, "big", s.history + 1)}, 20, 2
        )
        result |= await interleaved(
            {"long_without_snapshot": loader(plain, Account, "long", s.history)}, 5, 1
        )
        return result
    finally:
        for target in stores:
            await client.delete_store(target.name)


async def interleaved_layout(client: eskit.Client, s: Sizes) -> dict[str, float]:
    """As in real life: after the snapshot, the long aggregate's tail and the short aggregate's 10 events are
    spread among ``others`` x 10 events of other aggregates. The server scans that span for both."""
    store = await client.event_store(f"bmix{uuid.uuid4().hex[:8]}", snapshots=SnapshotPolicy(every=100))
    try:
        await fill(store, "long", deposits(s.history - 5))
        await store.load(Account, "long")
        ids = ["short"] + [f"other{i}" for i in range(s.others)]
        for round_ in range(10):
            appends = [(oid, deposits(1), None) for oid in ids]
            if round_ < 5:
                appends.insert(len(appends) // 2, ("long", deposits(1), None))
            await store.append_many(appends)
        n = s.loads * s.reps
        return await interleaved(
            {"short_interleaved": loader(store, Account, "short", 10),
             "long_with_snapshot_interleaved": loader(store, Account, "long", s.history)},
            n, n // 10,
        )  # fmt: skip
    finally:
        await client.delete_store(store.name)


# -- report -------------------------------------------------------------------------------------------------


def table(r: dict[str, Any]) -> str:
    c, sn, h = r["cycle"], r["snapshot"], f"{r['history']:,}"
    us = 1e6
    ok = lambda good: "ok" if good else "MISSED"  # noqa: E731
    return "\n".join([
        "command cycle (load, decide, save), one at a time, median:",
        f"  eventsourcing on SQLite :memory:          {c['eventsourcing_s'] * us:8.0f} us",
        f"  eskit on nats-server                      {c['eskit_s'] * us:8.0f} us  "
        f"{c['ratio']:.2f}x (goal <= {CYCLE_GOAL}x) {ok(c['ratio'] <= CYCLE_GOAL)}",
        f"  eskit, SnapshotPolicy(every=5)            {c['eskit_snapshots_s'] * us:8.0f} us  "
        f"{c['snapshots_ratio']:.2f}x",
        f"  eskit, AggregateCache                     {c['eskit_cached_s'] * us:8.0f} us  "
        f"{c['cached_ratio']:.2f}x (goal <= {CYCLE_GOAL}x) {ok(c['cached_ratio'] <= CYCLE_GOAL)}",
        f"  eventsourcing, AGGREGATE_CACHE_MAXSIZE    {c['eventsourcing_cached_s'] * us:8.0f} us  "
        f"(eskit cached / this = {c['cached_vs_cached_ratio']:.2f}x)",
        f"  CPU per cycle: eskit {c['eskit_cpu_s'] * us:.0f} us, of which nats-server "
        f"{c['eskit_server_cpu_s'] * us:.0f} us; eventsourcing {c['eventsourcing_cpu_s'] * us:.0f} us",
        "load of an Account, snapshots every 100 events, median:",
        "  each aggregate's events stored together:",
        f"    10 events (no snapshot yet)             {sn['short_snapshots_on'] * us:8.0f} us",
        f"    {h} events + snapshot (tail 5)       {sn['long_with_snapshot'] * us:8.0f} us  "
        f"{r['ratio_vs_short']:.2f}x (goal <= {SNAPSHOT_GOAL}x) {ok(r['ratio_vs_short'] <= SNAPSHOT_GOAL)}",
        f"    10 events, store without snapshots      {sn['short_snapshots_off'] * us:8.0f} us  "
        f"(long+snapshot / this = {r['ratio_vs_plain_short']:.2f}x)",
        f"    {h} events, no snapshot              {sn['long_without_snapshot'] * us:8.0f} us  "
        f"({r['speedup']:.0f}x the snapshot load)",
        f"    {h} items in the snapshot (Order)    {sn['long_big_state_with_snapshot'] * us:8.0f} us",
        f"  spread among {r['meta']['sizes']['others'] * 10:,} events of other aggregates:",
        f"    10 events                               {sn['short_interleaved'] * us:8.0f} us",
        f"    {h} events + snapshot (tail 5)       {sn['long_with_snapshot_interleaved'] * us:8.0f} us  "
        f"{r['ratio_interleaved']:.2f}x",
    ])  # fmt: skip


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    s = QUICK if args.quick else FULL
    started = time.perf_counter()
    with eskit.EmbeddedServer() as server:
        async with await eskit.connect(server.url) as client:
            info = await client.server_info()
            log("command cycle: eskit and eventsourcing ...")
            cycle = await command_cycles(client, server, s)
            log("snapshot loads ...")
            snap = await contiguous_layout(client, s)
            log("snapshot loads, interleaved ...")
            snap |= await interleaved_layout(client, s)
    result = {
        "meta": {
            "quick": args.quick,
            "sizes": s.__dict__,
            "server_version": info.version,
            "eventsourcing": metadata.version("eventsourcing"),
            "nats_py": metadata.version("nats-py"),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "cycle": cycle,
        "snapshot": snap,
        "history": s.history,
        "ratio_vs_short": snap["long_with_snapshot"] / snap["short_snapshots_on"],
        "ratio_vs_plain_short": snap["long_with_snapshot"] / snap["short_snapshots_off"],
        "ratio_interleaved": snap["long_with_snapshot_interleaved"] / snap["short_interleaved"],
        "speedup": snap["long_without_snapshot"] / snap["long_with_snapshot"],
        "elapsed_s": time.perf_counter() - started,
    }
    emit(result, table(result), out=RESULTS, as_json=args.json)
    return result


if __name__ == "__main__":
    asyncio.run(main())
