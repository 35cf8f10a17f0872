"""Performance at scale (issue 17): ratios measured in one run, on the embedded server.

    .venv/bin/python bench/scale.py            # full run (a few minutes: builds a 1,000,000-event stream)
    .venv/bin/python bench/scale.py --quick    # small sizes (seconds), used by tests/test_bench_smoke.py
    .venv/bin/python bench/scale.py --json     # JSON on stdout (the table goes to stderr)

1. ``load_flatness``: the median ``load`` of a 10-event ``Order`` in a large stream (1,000,000 events of
   100,000 aggregates, their events interleaved as in real life: event k of every order, then event k+1 ...)
   divided by the same load in a small one (10,000 events of 1,000 aggregates). Loads alternate call by
   call, each on a random aggregate (cold blocks included). Goal: <= 1.5. Beside it, ``store.read(id)`` (one
   wildcard scan, what ``load`` did before it read by literal subjects) at both sizes.
2. ``cycle_vs_eventsourcing``: the uncached command cycle (load, add an item, save with its check) on a
   random aggregate of the large stream, divided by the ``eventsourcing`` library's cycle on SQLite
   ``:memory:`` holding as many aggregates (goal: <= 1.0); also against its SQLite file (WAL mode, its
   durable setting).
3. ``multi_event_append_ratio``: a new aggregate's 3-event append divided by a 1-event append, alternating
   (goal: <= 2.0); beside it, 3-event appends of many aggregates at once (``append_many``), and the server's
   part with plain nats-py: one message vs a 3-message atomic batch on an R1 file and an R1 memory stream
   (see docs/upstream_atomic_batch.md).
4. ``dcb_disjoint_scaling``: 4 writers on disjoint courses / 1 writer, internal retries per decision, and
   the most rounds one decision took among 8 writers on one contended boundary (invoice numbers). Taken from
   ``bench/dcb.py``'s ``measure_scaling`` when it has one, else measured here with its ``throughput``.
5. Peak RSS of this process and of nats-server.

Results also go to bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from aggregates import es_order_class, interleaved  # bench/aggregates.py: the eventsourcing Order, defined once
from report import emit, log  # bench/report.py (a script's folder is on sys.path)

import eskit
from eskit.examples import Order

RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"
GOALS = {"load_flatness": 1.5, "cycle_vs_eventsourcing": 1.0, "multi_event_append_ratio": 2.0,
         "dcb_disjoint_scaling": 2.5}  # fmt: skip
EVENTS_PER_AGGREGATE = 10


@dataclass(frozen=True)
class Sizes:
    large: int  # aggregates of 10 events in the large stream
    small: int  # aggregates of 10 events in the small stream
    loads: int  # timed loads per stream
    cycles: int  # timed command cycles per side
    appends: int  # timed appends per size
    dcb_per_writer: int  # decisions per writer (disjoint scaling)
    invoices: int  # invoices per writer on the contended boundary
    window: int  # appends in flight while building a stream


FULL = Sizes(large=100_000, small=1_000, loads=400, cycles=400, appends=200, dcb_per_writer=400, invoices=25,
             window=2048)  # fmt: skip
QUICK = Sizes(large=1_000, small=100, loads=40, cycles=40, appends=20, dcb_per_writer=20, invoices=3,
              window=512)  # fmt: skip


def ids_of(n: int) -> list[str]:
    return [f"o{i}" for i in range(n)]


def order_events(round_: int, i: int) -> list[eskit.Event]:
    if round_ == 0:
        return [eskit.Event("created", {"customer": f"c{i % 997}"})]
    return [eskit.Event("item_added", {"sku": f"sku-{round_}", "qty": 1, "price": 2.5})]


async def build(store: eskit.EventStore, aggregates: int, window: int) -> float:
    """``aggregates`` orders of 10 events, interleaved (round k: event k of every order); events per second.

    Pipelined single-event appends (``append_many``) with ``window`` in flight, each checked against the
    aggregate's previous position (as a real writer's would be)."""
    ids = ids_of(aggregates)
    positions = [0] * aggregates
    started = time.perf_counter()
    chunk = 20_000
    for round_ in range(EVENTS_PER_AGGREGATE):
        for lo in range(0, aggregates, chunk):
            part = range(lo, min(lo + chunk, aggregates))
            done = await store.append_many(
                [(ids[i], order_events(round_, i), positions[i]) for i in part], concurrency=window
            )
            for i, position in zip(part, done, strict=True):
                positions[i] = position
        log(f"  {store.name}: round {round_ + 1}/10 ({(round_ + 1) * aggregates:,} events)")
    return aggregates * EVENTS_PER_AGGREGATE / (time.perf_counter() - started)


Op = Callable[[int], Awaitable[None]]


def random_ids(n: int, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"o{rng.randrange(n)}" for _ in range(count)]


async def loads(large: eskit.EventStore, small: eskit.EventStore, s: Sizes) -> dict[str, float]:
    n, warmup = s.loads, max(s.loads // 10, 2)
    big_ids, small_ids = random_ids(s.large, n + warmup, 1), random_ids(s.small, n + warmup, 2)

    def loader(store: eskit.EventStore, ids: list[str]) -> Op:
        async def one(i: int) -> None:
            order = await store.load(Order, ids[i])
            assert order.version == EVENTS_PER_AGGREGATE, (ids[i], order.version)

        return one

    def reader(store: eskit.EventStore, ids: list[str]) -> Op:  # one wildcard scan (orders.<id>.>), as load did
        async def one(i: int) -> None:
            assert len(await store.read(ids[-1 - i])) == EVENTS_PER_AGGREGATE

        return one

    result = await interleaved({"large_s": loader(large, big_ids), "small_s": loader(small, small_ids)}, n, warmup)
    scans = {"wildcard_large_s": reader(large, big_ids), "wildcard_small_s": reader(small, small_ids)}
    wildcard = await interleaved(scans, max(n // 10, 5), 1)
    return result | wildcard | {
        "load_flatness": result["large_s"] / result["small_s"],
        "wildcard_flatness": wildcard["wildcard_large_s"] / wildcard["wildcard_small_s"],
    }


# -- command cycle against the eventsourcing library -----------------------------------------------------------


def es_setup(env: dict[str, str], aggregates: int, es_order: Any) -> tuple[Any, list[Any]]:
    """An eventsourcing Application holding ``aggregates`` orders of 10 events (saved 1,000 per transaction)."""
    from eventsourcing.application import Application

    app = Application(env=env)
    ids: list[Any] = []
    for lo in range(0, aggregates, 1000):
        batch = []
        for _ in range(lo, min(lo + 1000, aggregates)):
            order = es_order(customer="c")
            for k in range(EVENTS_PER_AGGREGATE - 1):
                order.add_item(f"sku-{k}", 1, 2.5)
            batch.append(order)
        app.save(*batch)
        ids += [o.id for o in batch]
    return app, ids


async def cycles(large: eskit.EventStore, s: Sizes, db_dir: str) -> dict[str, float]:
    es_order = es_order_class()
    log(f"  eventsourcing: {s.large:,} orders on SQLite :memory: and on a file (WAL) ...")
    memory, memory_ids = es_setup({"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": ":memory:"},
                                  s.large, es_order)  # fmt: skip
    file_app, file_ids = es_setup(
        {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": os.path.join(db_dir, "es.sqlite")},
        s.large,
        es_order,
    )
    rng = random.Random(3)
    n, warmup = s.cycles, max(s.cycles // 10, 2)
    picks = [rng.randrange(s.large) for _ in range(n + warmup)]

    async def eskit_cycle(i: int) -> None:
        order = await large.load(Order, f"o{picks[i]}")
        order.add_item("sku-x", qty=1, price=2.5)
        await large.save(order)

    def es_cycle(app: Any, ids: list[Any]) -> Op:
        async def one(i: int) -> None:
            order = app.repository.get(ids[picks[i]])
            order.add_item("sku-x", 1, 2.5)
            app.save(order)

        return one

    try:
        result = await interleaved(
            {"eskit_s": eskit_cycle, "eventsourcing_memory_s": es_cycle(memory, memory_ids),
             "eventsourcing_file_s": es_cycle(file_app, file_ids)},
            n, warmup,
        )  # fmt: skip
    finally:
        memory.close()
        file_app.close()
    return result | {
        "cycle_vs_eventsourcing": result["eskit_s"] / result["eventsourcing_memory_s"],
        "cycle_vs_eventsourcing_file": result["eskit_s"] / result["eventsourcing_file_s"],
    }


# -- multi-event append ----------------------------------------------------------------------------------------


async def appends(store: eskit.EventStore, s: Sizes) -> dict[str, float]:
    run = uuid.uuid4().hex[:6]

    def appender(k: int) -> Op:
        async def one(i: int) -> None:
            events = [eskit.Event("created", {"customer": "c"})] + [
                eskit.Event("item_added", {"sku": f"s{j}", "qty": 1, "price": 1.0}) for j in range(k - 1)
            ]
            await store.append(f"m{k}-{run}-{i}", events, expected_position=0)

        return one

    result = await interleaved({"one_event_s": appender(1), "three_events_s": appender(3)}, s.appends,
                               max(s.appends // 10, 2))  # fmt: skip
    many = [(f"p3-{run}-{i}", [eskit.Event("created", {"customer": "c"}), eskit.Event("item_added", {"i": 1}),
                               eskit.Event("item_added", {"i": 2})], 0) for i in range(s.appends)]  # fmt: skip
    started = time.perf_counter()
    await store.append_many(many)  # 3-event appends of many aggregates at once: their batches overlap
    result["three_events_pipelined_s"] = (time.perf_counter() - started) / len(many)
    return result | {"multi_event_append_ratio": result["three_events_s"] / result["one_event_s"]}


async def replicated_appends(s: Sizes) -> dict[str, float]:
    """The same appends on a 3-node cluster (loopback), where a store has 3 replicas and the server stages an
    atomic batch in memory: the correct alternative to the R1 file stream's floor."""
    from eskit.cluster import EmbeddedCluster

    with EmbeddedCluster(3) as cluster:
        async with await eskit.connect(cluster.url) as client:
            store = await client.event_store(f"bscr{uuid.uuid4().hex[:6]}")
            try:
                return await appends(store, s)
            finally:
                await client.delete_store(store.name)


async def batch_floor(client: eskit.Client, s: Sizes) -> dict[str, float]:
    """The server's part, with plain nats-py: one message vs a 3-message atomic batch, on an R1 file stream
    and on an R1 memory stream (nats-server stages an R1 file stream's batch in a file store of its own)."""
    nc = client.nc
    run = uuid.uuid4().hex[:6]
    streams = {"file": f"BFF{run}", "memory": f"BFM{run}"}
    for kind, name in streams.items():
        config = {"name": name, "subjects": [f"{name.lower()}.>"], "storage": kind, "allow_atomic": True}
        await nc.request(f"$JS.API.STREAM.CREATE.{name}", json.dumps(config).encode(), timeout=5)
    payload = b'{"sku": "s", "qty": 1, "price": 1.0}'

    def one(name: str) -> Op:
        async def op(i: int) -> None:
            await nc.request(f"{name.lower()}.a{i}", payload, timeout=5, headers={"Nats-Msg-Id": uuid.uuid4().hex})

        return op

    def three(name: str) -> Op:
        async def op(i: int) -> None:
            batch = uuid.uuid4().hex
            for n in (1, 2):
                headers = {"Nats-Msg-Id": uuid.uuid4().hex, "Nats-Batch-Id": batch, "Nats-Batch-Sequence": str(n)}
                await nc.publish(f"{name.lower()}.b{i}", payload, headers=headers)
            headers = {"Nats-Msg-Id": uuid.uuid4().hex, "Nats-Batch-Id": batch, "Nats-Batch-Sequence": "3",
                       "Nats-Batch-Commit": "1"}  # fmt: skip
            reply = await nc.request(f"{name.lower()}.b{i}", payload, timeout=5, headers=headers)
            assert b'"error"' not in reply.data, reply.data

        return op

    try:
        ways = (("one", one), ("three", three))
        ops = {f"{k}_{kind}_s": fn(name) for kind, name in streams.items() for k, fn in ways}
        result = await interleaved(ops, s.appends, max(s.appends // 10, 2))
    finally:
        for name in streams.values():
            await nc.request(f"$JS.API.STREAM.DELETE.{name}", b"", timeout=5)
    return result | {
        "file_ratio": result["three_file_s"] / result["one_file_s"],
        "memory_ratio": result["three_memory_s"] / result["one_memory_s"],
    }


# -- DCB -------------------------------------------------------------------------------------------------------


async def contended(url: str, writers: int, invoices: int) -> dict[str, Any]:
    """``writers`` writers (own connections) number invoices on one boundary (the last InvoiceCreated); the
    most read-decide-append rounds in a row any writer lost, and whether the numbers are unique and gapless."""
    from eskit.dcb.examples import INVOICE_KEYS, create_invoice

    name = f"bscinv{uuid.uuid4().hex[:8]}"
    async with await eskit.connect(url) as setup:
        await setup.dcb_store(name, tag_keys=INVOICE_KEYS)
        clients = [await eskit.connect(url) for _ in range(writers)]
        worst, made = 0, 0
        try:
            stores = [await c.dcb_store(name) for c in clients]

            async def writer(store: Any) -> None:
                nonlocal worst, made
                for _ in range(invoices):
                    decision = create_invoice({"by": id(store)})
                    for lost in range(200):  # bounded: a writer that loses 200 rounds gives up
                        last = await store.last(decision.query)
                        condition = eskit.dcb.AppendCondition(decision.query, last.position if last else 0)
                        try:
                            await store.append(decision.decide([last] if last else []), condition)
                        except eskit.ConcurrencyError:
                            worst = max(worst, lost + 1)
                            continue
                        made += 1
                        break

            await asyncio.gather(*(writer(st) for st in stores))
            numbers = sorted(e.data["invoiceNumber"] for e in await stores[0].read())
        finally:
            for c in clients:
                await c.close()
            await setup.delete_store(name)
    return {"writers": writers, "invoices_asked": writers * invoices, "invoices_made": made,
            "worst_rounds_lost_in_a_row": worst, "gapless": numbers == list(range(1, len(numbers) + 1))}  # fmt: skip


async def dcb_figures(url: str, s: Sizes, quick: bool) -> dict[str, Any]:
    """``dcb_disjoint_scaling``, ``retries_per_decision`` and ``contended_worst_rounds`` (the most rounds one
    invoice took among 8 writers on one boundary), from ``bench/dcb.py``'s ``measure_scaling`` when it has one."""
    import dcb  # bench/dcb.py

    measure = getattr(dcb, "measure_scaling", None)
    if measure is not None:  # the dcbscale helper's measurement
        figures: dict[str, Any] = dict(await measure(quick, url=url))
        return figures | {"source": "bench/dcb.py measure_scaling"}
    n = s.dcb_per_writer
    one, _ = await dcb.throughput(url, 1, n, "course")
    four, retries = await dcb.throughput(url, 4, n, "course")
    worst = await contended(url, 8, s.invoices)
    return {
        "source": "bench/scale.py with bench/dcb.py throughput (bench/dcb.py has no measure_scaling)",
        "course_1_writer_per_s": one, "course_4_writers_per_s": four, "dcb_disjoint_scaling": four / one,
        "retries_per_decision": retries / (4 * n), "contended_worst_rounds": worst["worst_rounds_lost_in_a_row"] + 1,
        "contended": worst,
    }  # fmt: skip


# -- memory ----------------------------------------------------------------------------------------------------


def peak_rss_mib(pid: int | None = None) -> float:
    """Peak resident memory (VmHWM) of ``pid`` (this process if None) in MiB."""
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# -- report ----------------------------------------------------------------------------------------------------


def table(r: dict[str, Any]) -> str:
    us, f = 1e6, r["figures"]
    ok = lambda name, good: "ok" if good else "MISSED"  # noqa: E731
    lo, cy, ap, d = r["load"], r["cycle"], r["append"], r["dcb"]
    return "\n".join([
        f"stream sizes: {r['meta']['large_events']:,} events ({r['meta']['sizes']['large']:,} aggregates) vs "
        f"{r['meta']['small_events']:,}; built at {r['build_events_per_s']:,.0f} events/s",
        f"load of a 10-event Order: large {lo['large_s'] * us:8.0f} us, small {lo['small_s'] * us:8.0f} us   "
        f"load_flatness {f['load_flatness']:.2f} (goal <= 1.5) {ok(0, f['load_flatness'] <= 1.5)}",
        f"  one wildcard scan (store.read, as load read before): large {lo['wildcard_large_s'] * us:8.0f} us, "
        f"small {lo['wildcard_small_s'] * us:8.0f} us ({lo['wildcard_flatness']:.1f}x)",
        f"command cycle on the large stream: eskit {cy['eskit_s'] * us:.0f} us, eventsourcing :memory: "
        f"{cy['eventsourcing_memory_s'] * us:.0f} us, file (WAL) {cy['eventsourcing_file_s'] * us:.0f} us",
        f"  cycle_vs_eventsourcing {f['cycle_vs_eventsourcing']:.2f} (goal <= 1.0) "
        f"{ok(0, f['cycle_vs_eventsourcing'] <= 1.0)}; vs the file {f['cycle_vs_eventsourcing_file']:.2f}",
        f"append: 1 event {ap['one_event_s'] * us:.0f} us, 3 events {ap['three_events_s'] * us:.0f} us   "
        f"multi_event_append_ratio {f['multi_event_append_ratio']:.2f} (goal <= 2.0) "
        f"{ok(0, f['multi_event_append_ratio'] <= 2.0)}; 3-event appends of many aggregates at once "
        f"{ap['three_events_pipelined_s'] * us:.0f} us each",
        f"  raw nats-py: R1 file stream 1 msg {ap['raw']['one_file_s'] * us:.0f} us, 3-msg atomic batch "
        f"{ap['raw']['three_file_s'] * us:.0f} us ({ap['raw']['file_ratio']:.1f}x); R1 memory stream "
        f"{ap['raw']['one_memory_s'] * us:.0f} / {ap['raw']['three_memory_s'] * us:.0f} us "
        f"({ap['raw']['memory_ratio']:.1f}x)",
        *([f"  3-node cluster (3 replicas): 1 event {ap['replicated']['one_event_s'] * us:.0f} us, 3 events "
           f"{ap['replicated']['three_events_s'] * us:.0f} us ({ap['replicated']['multi_event_append_ratio']:.2f}x)"]
          if "replicated" in ap else []),
        f"DCB: 4 disjoint writers / 1 = {f['dcb_disjoint_scaling']:.2f} (goal >= 2.5) "
        f"{ok(0, f['dcb_disjoint_scaling'] >= 2.5)}, {d.get('retries_per_decision', float('nan')):.2f} retries "
        f"per decision; 8 writers on one boundary: worst {d.get('contended_worst_rounds')} rounds for one decision",
        f"peak RSS: bench {f['peak_rss_mib']:.0f} MiB, nats-server {f['server_peak_rss_mib']:.0f} MiB",
    ])  # fmt: skip


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--skip-dcb", action="store_true", help="leave the DCB figures out")
    parser.add_argument("--cluster", action="store_true", help="also time appends on a 3-node cluster (full: always)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    s = QUICK if args.quick else FULL
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as db_dir, eskit.EmbeddedServer() as server:
        pid = getattr(getattr(server, "_proc", None), "pid", None)
        async with await eskit.connect(server.url) as client:
            info = await client.server_info()
            run = uuid.uuid4().hex[:6]
            large = await client.event_store(f"bscl{run}")
            small = await client.event_store(f"bscs{run}")
            try:
                log(f"building {s.large * 10:,} + {s.small * 10:,} events ...")
                rate = await build(large, s.large, s.window)
                await build(small, s.small, s.window)
                log("loads ...")
                load = await loads(large, small, s)
                log("command cycles ...")
                cycle = await cycles(large, s, db_dir)
                log("appends ...")
                append = await appends(large, s)
                append["raw"] = await batch_floor(client, s)
            finally:
                await client.delete_store(large.name)
                await client.delete_store(small.name)
        if args.cluster or not args.quick:
            log("appends on a 3-node cluster ...")
            append["replicated"] = await replicated_appends(s)
        dcb_result: dict[str, Any] = {"dcb_disjoint_scaling": 0.0, "retries_per_decision": 0.0, "skipped": True}
        if not args.skip_dcb:
            log("DCB ...")
            dcb_result = await dcb_figures(server.url, s, args.quick)
        server_rss = peak_rss_mib(pid) if pid else 0.0
    result = {
        "meta": {
            "quick": args.quick, "sizes": s.__dict__, "large_events": s.large * 10, "small_events": s.small * 10,
            "server_version": info.version, "eventsourcing": metadata.version("eventsourcing"),
            "nats_py": metadata.version("nats-py"), "python": platform.python_version(), "cpus": os.cpu_count(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "figures": {
            "load_flatness": load["load_flatness"],
            "cycle_vs_eventsourcing": cycle["cycle_vs_eventsourcing"],
            "cycle_vs_eventsourcing_file": cycle["cycle_vs_eventsourcing_file"],
            "multi_event_append_ratio": append["multi_event_append_ratio"],
            "dcb_disjoint_scaling": dcb_result["dcb_disjoint_scaling"],
            "peak_rss_mib": peak_rss_mib(),
            "server_peak_rss_mib": server_rss,
        },
        "goals": GOALS,
        "build_events_per_s": rate,
        "load": load,
        "cycle": cycle,
        "append": append,
        "dcb": dcb_result,
        "elapsed_s": time.perf_counter() - started,
    }  # fmt: skip
    emit(result, table(result), out=args.out, as_json=args.json)
    return result


if __name__ == "__main__":
    sys.exit(0 if asyncio.run(main()) else 1)
