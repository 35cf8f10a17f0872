"""Integration events and multi-stream projections: what the public stream and the republisher cost.

    .venv/bin/python bench/integration.py            # 40,000 private events (< ~60 s)
    .venv/bin/python bench/integration.py --quick    # 8,000
    .venv/bin/python bench/integration.py --json     # the JSON on stdout (the table goes to stderr)

One embedded nats-server; a private store of orders (placed, item_added, paid, shipped: half of them public
types), and a payments store (one ``received`` per order). Measured in one run:

1. sourcing: the server's copy of a full store into a new public stream (public events/s), and the lag of
   one append until its copy is readable in the public stream (median and p95 over 200 appends);
2. republishing: a ``Republisher`` (a curated shape of the public types) caught up from 0, next to a plain
   ``Projection`` with the same handlers that writes rows instead (the second write's price);
3. multi-stream: a ``MultiStreamProjection`` over orders + payments caught up from 0, next to a
   ``Projection`` over orders alone (events/s over every event delivered).

Results also go to bench/results/integration.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import time
import uuid
from pathlib import Path

import eskit
from eskit import Event, RecordedEvent, applies

RESULTS = Path(__file__).resolve().parent / "results" / "integration.json"


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


class Curated(eskit.Republisher):
    @applies("placed")
    def _placed(self, event: RecordedEvent) -> Event:
        return Event("placed", {"total": event.data["total"]})

    @applies("shipped")
    def _shipped(self, event: RecordedEvent) -> Event:
        return Event("shipped", {})


class Rows(eskit.Projection):
    schema = "CREATE TABLE public (id TEXT, type TEXT, data TEXT)"

    @applies("placed")
    def _placed(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        db.execute("INSERT INTO public VALUES (?, 'placed', ?)", (event.aggregate_id, json.dumps(event.data)))

    @applies("shipped")
    def _shipped(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        db.execute("INSERT INTO public VALUES (?, 'shipped', '{}')", (event.aggregate_id,))


class Ledger(eskit.MultiStreamProjection):
    schema = "CREATE TABLE ledger (id TEXT PRIMARY KEY, total INTEGER NOT NULL DEFAULT 0, paid INTEGER DEFAULT 0)"

    @applies("placed")
    def _placed(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        db.execute("INSERT INTO ledger (id, total) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET total = excluded.total",
                   (event.aggregate_id, event.data["total"]))  # fmt: skip

    @applies("received")
    def _received(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        db.execute("INSERT INTO ledger (id, paid) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET paid = paid + ?",
                   (event.data["order"], event.data["amount"], event.data["amount"]))  # fmt: skip


class OrdersOnly(eskit.Projection):
    schema = Ledger.schema
    _placed = Ledger._placed


async def fill(orders: eskit.EventStore, payments: eskit.EventStore, n: int) -> None:
    ids = [f"o{i}" for i in range(n // 4)]
    for make in (lambda i: Event("placed", {"total": 10, "email": f"{i}@example.com"}),
                 lambda i: Event("item_added", {"sku": "A1"}), lambda i: Event("paid", {"card": "4242"}),
                 lambda i: Event("shipped", {"carrier": "DHL"})):  # fmt: skip
        await orders.append_many([(i, [make(i)], None) for i in ids])
    await payments.append_many([(f"p{i}", [Event("received", {"order": i, "amount": 10})], None) for i in ids])


async def timed(run: object) -> float:
    started = time.perf_counter()
    await run  # type: ignore[misc]
    return time.perf_counter() - started


async def main(n: int) -> dict[str, object]:
    tag = uuid.uuid4().hex[:8]
    with eskit.EmbeddedServer() as server:
        async with await eskit.connect(server.url) as client:
            orders, payments = await client.event_store(f"orders{tag}"), await client.event_store(f"payments{tag}")
            await fill(orders, payments, n)
            public_n = n // 2
            log(f"filled {n:,} order events ({public_n:,} of public types) and {n // 4:,} payments")

            started = time.perf_counter()
            public = await client.publish_integration(orders, f"orders{tag}-public", types=["placed", "shipped"])
            await public.wait_for(timeout=120)
            copy_rate = public_n / (time.perf_counter() - started)
            log(f"  sourcing: the server copied {public_n:,} public events at {copy_rate:,.0f} events/s")

            lags = []
            for i in range(200):
                position = await orders.append(f"lag{i}", [Event("placed", {"total": 1})])
                appended = time.perf_counter()
                for _ in range(100_000):  # bounded: a copy takes milliseconds
                    if await public.source_position() >= position:
                        break
                    await asyncio.sleep(0.0002)
                lags.append((time.perf_counter() - appended) * 1000)
            lags.sort()
            lag_median, lag_p95 = statistics.median(lags), lags[int(len(lags) * 0.95)]
            log(f"  sourcing: append -> readable in the public stream: median {lag_median:.2f} ms, "
                f"p95 {lag_p95:.2f} ms")

            target = await client.event_store(f"curated{tag}")
            republisher = Curated(orders, target, name=f"curated{tag}")
            republish_s = await timed(republisher.run_until_caught_up(timeout=300))
            rows = Rows(orders, name=f"rows{tag}")
            rows_s = await timed(rows.run_until_caught_up(timeout=300))
            delivered = public_n + 200
            log(f"  republisher: {delivered / republish_s:,.0f} public events/s; the same handlers writing rows: "
                f"{delivered / rows_s:,.0f}/s ({rows_s / republish_s:.2f}x)")  # fmt: skip
            assert len([e async for e in target.replay()]) == delivered

            ledger = Ledger({"orders": orders, "payments": payments}, name=f"ledger{tag}")
            multi_s = await timed(ledger.run_until_caught_up(timeout=300))
            single = OrdersOnly(orders, name=f"single{tag}")
            single_s = await timed(single.run_until_caught_up(timeout=300))
            multi_events, single_events = n + 200 + n // 4, n + 200
            log(f"  multi-stream: {multi_events / multi_s:,.0f} events/s over two stores; one store alone: "
                f"{single_events / single_s:,.0f}/s")  # fmt: skip
            for view in (republisher, rows, ledger, single):
                await view.close(delete_consumer=True)
            await public.delete()
            for store in (orders, payments, target):
                await client.delete_store(store.name)
    return {
        "events": n, "public_events": public_n, "source_copy_per_s": round(copy_rate),
        "source_lag_ms": {"median": round(lag_median, 2), "p95": round(lag_p95, 2)},
        "republisher_per_s": round(delivered / republish_s), "rows_projection_per_s": round(delivered / rows_s),
        "multi_stream_per_s": round(multi_events / multi_s), "single_store_per_s": round(single_events / single_s),
        "load_average": os.getloadavg()[0], "cpus": os.cpu_count(),
    }  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8,000 events")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    args = parser.parse_args()
    out = asyncio.run(main(8_000 if args.quick else 40_000))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    if args.json:
        print(json.dumps(out, indent=2))
