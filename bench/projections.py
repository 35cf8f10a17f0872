"""Projection catch-up: a fresh projection over 100,000 events into SQLite, next to a bare consumer.

    .venv/bin/python bench/projections.py            # 100,000 events, 3 runs each (< ~60 s)
    .venv/bin/python bench/projections.py --quick    # 10,000 events
    .venv/bin/python bench/projections.py --json     # the JSON on stdout (the table goes to stderr)

One embedded nats-server, one stream filled with atomic batches of 1,000 events (100 orders: created,
998 x item_added, shipped). Measured in the same run, each on a fresh durable consumer:

1. baseline: a bare nats-py pull consumer (its own plain nats-py connection, explicit ack, fetch 1,000 at a
   time) that only counts;
2. eskit: a fresh ``Projection`` (orders_view: an INSERT or UPDATE per event) caught up with
   ``run_until_caught_up()``, into a SQLite file and into ``:memory:``: decoding, one transaction per batch
   with the position, acks after the commit.

Each is run once as a warm-up, then ``--reps`` times; the median is reported. Goal: 30,000 events/s. The
client's CPU time is reported too (events per CPU-second of this process: its ceiling on an idle machine),
and the load average and a speed reference (one tiny ``json.loads``): on a shared machine, wall-clock rates
follow the load.
Results also go to bench/results/projections.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import timeit
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
from nats.js.api import AckPolicy, ConsumerConfig

import eskit
from eskit import RecordedEvent, applies

RESULTS = Path(__file__).resolve().parent / "results" / "projections.json"
GOAL = 30_000.0
PER_ORDER = 1000


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


class OrdersView(eskit.Projection):
    """The seed's orders_view, with an item count."""

    schema = """CREATE TABLE orders_view (id TEXT PRIMARY KEY, status TEXT, items INTEGER NOT NULL DEFAULT 0,
                                          created_at TEXT, tracking TEXT)"""

    @applies("created")
    def _created(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        db.execute(
            "INSERT INTO orders_view (id, status, created_at) VALUES (?, 'pending', ?)",
            (event.aggregate_id, event.timestamp.isoformat()),
        )

    @applies("item_added")
    def _item_added(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        db.execute(
            "UPDATE orders_view SET items = items + ? WHERE id = ?", (event.data["qty"], event.aggregate_id)
        )

    @applies("shipped")
    def _shipped(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        db.execute(
            "UPDATE orders_view SET status = 'shipped', tracking = ? WHERE id = ?",
            (event.data["tracking"], event.aggregate_id),
        )


async def fill(store: eskit.EventStore, n: int) -> None:
    def order(i: int) -> list[eskit.Event]:
        items = [eskit.Event("item_added", {"sku": f"sku-{j % 97}", "qty": 1}) for j in range(PER_ORDER - 2)]
        return [
            eskit.Event("created", {"customer": f"c{i}"}),
            *items,
            eskit.Event("shipped", {"tracking": f"T{i}"}),
        ]

    await store.append_many([(f"o{i}", order(i), 0) for i in range(n // PER_ORDER)], concurrency=4)


async def bare_consumer(nc: nats.aio.client.Client, store: eskit.EventStore, n: int) -> float:
    """A pull consumer on a plain nats-py connection that only counts (and acks, like the projection)."""
    js = nc.jetstream()
    durable = f"bare-{uuid.uuid4().hex[:8]}"
    config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=2000)
    sub = await js.pull_subscribe(f"{store.name}.>", durable=durable, stream=store.stream, config=config)
    count = 0
    started = time.perf_counter()
    while count < n:
        for msg in await sub.fetch(1000, timeout=5):
            count += 1
            await msg.ack()
    elapsed = time.perf_counter() - started
    await sub.unsubscribe()
    await js.delete_consumer(store.stream, durable)
    return elapsed


async def projection(store: eskit.EventStore, n: int, db: str) -> float:
    name = f"bench{uuid.uuid4().hex[:8]}"
    view = OrdersView(store, db=db, name=name)
    started = time.perf_counter()
    delivered = await view.run_until_caught_up(timeout=300)
    elapsed = time.perf_counter() - started
    assert delivered == n and view.stats.applied == n, (delivered, view.stats)
    items = view.db.execute("SELECT sum(items), count(*) FROM orders_view").fetchone()
    assert items == (n - 2 * (n // PER_ORDER), n // PER_ORDER), items
    await view.close(delete_consumer=True)
    return elapsed


async def measure(label: str, run: Callable[[], Awaitable[float]], n: int, reps: int) -> tuple[float, float]:
    """Median events/s (wall clock), and events per second of this process's CPU time (its ceiling)."""
    await run()  # warm-up
    times, cpu = [], []
    for _ in range(reps):
        started = time.process_time()
        times.append(await run())
        cpu.append(time.process_time() - started)
    rate, ceiling = n / statistics.median(times), n / statistics.median(cpu)
    runs = ", ".join(f"{t:.2f}s" for t in times)
    log(f"  {label:<40} {rate:>9,.0f} events/s  (client CPU: {ceiling:>7,.0f} events/s; runs: {runs})")
    return rate, ceiling


def machine_speed() -> float:
    """Microseconds for one ``json.loads`` of a tiny object: 1-2 on an idle core."""
    return min(timeit.repeat(lambda: json.loads(b'{"a":1}'), number=20_000, repeat=5)) / 20_000 * 1e6


async def main(n: int, reps: int) -> dict[str, object]:
    speed = machine_speed()
    log(f"machine speed: json.loads of a tiny object takes {speed:.1f} us (1-2 us on an idle core)")
    with eskit.EmbeddedServer() as server, tempfile.TemporaryDirectory() as tmp:
        nc = await nats.connect(server.url)
        async with await eskit.connect(server.url) as client:
            store = await client.event_store(f"benchproj{uuid.uuid4().hex[:8]}")
            started = time.perf_counter()
            await fill(store, n)
            log(
                f"filled {n:,} events in {time.perf_counter() - started:.1f}s (atomic batches of {PER_ORDER})"
            )
            files = iter(range(1000))

            def file_db() -> str:
                return os.path.join(tmp, f"view{next(files)}.db")

            bare = await measure(
                "bare nats-py consumer, count + ack", lambda: bare_consumer(nc, store, n), n, reps
            )
            on_file = await measure(
                "eskit Projection -> SQLite file", lambda: projection(store, n, file_db()), n, reps
            )
            in_memory = await measure(
                "eskit Projection -> SQLite :memory:", lambda: projection(store, n, ":memory:"), n, reps
            )
            await client.delete_store(store.name)
        await nc.close()
    result = {
        "events": n, "reps": reps, "python": platform.python_version(), "cpus": os.cpu_count(),
        "bare_consumer_per_s": round(bare[0]), "projection_file_per_s": round(on_file[0]),
        "projection_memory_per_s": round(in_memory[0]), "file_vs_bare": round(on_file[0] / bare[0], 2),
        "client_cpu_ceiling_per_s": {
            "bare": round(bare[1]), "file": round(on_file[1]), "memory": round(in_memory[1])},
        "load_average": os.getloadavg()[0], "json_loads_us": round(speed, 2),
        "goal_per_s": GOAL, "goal_met": on_file[0] >= GOAL,
    }  # fmt: skip
    log(
        f"projection into a SQLite file: {on_file[0] / bare[0]:.2f}x the bare consumer; goal {GOAL:,.0f}/s "
        f"{'met' if on_file[0] >= GOAL else 'NOT met'} "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 events")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    args = parser.parse_args()
    out = asyncio.run(main(10_000 if args.quick else 100_000, args.reps))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    if args.json:
        print(json.dumps(out, indent=2))
