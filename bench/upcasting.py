"""Upcasting's price: replay and to_dataframe of a store where half the events need one upcaster step.

    .venv/bin/python bench/upcasting.py            # 200,000 events, 3 runs each (< ~60 s)
    .venv/bin/python bench/upcasting.py --quick    # 20,000 events
    .venv/bin/python bench/upcasting.py --json     # the JSON on stdout (the table goes to stderr)

One embedded nats-server, one stream filled with atomic batches of 1,000 events (200 orders of
``item_added``; even ones stored as version 1 without a currency, odd ones as version 2 with one). The same
stream is opened twice: without upcasters, and with one upcaster (v1 -> v2: add the currency). In the same
run, alternating, each read is timed ``--reps`` times after a warm-up and the median kept:

1. ``store.replay()``: every event as a RecordedEvent, its data touched (``event.data["currency"]`` or
   ``.get``);
2. ``eskit.to_dataframe(store)``: one row per event.

Reported: events/s of each, and the ratio with/without upcasters (goal: at least 0.8), by wall clock and by
this process's CPU time (steadier on a shared machine: the server is another process).
Results also go to bench/results/upcasting.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import eskit
from eskit import Event

RESULTS = Path(__file__).resolve().parent / "results" / "upcasting.json"
GOAL = 0.8
PER_ORDER = 1000


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def upcasters() -> eskit.Upcasters:
    ups = eskit.Upcasters()

    @ups.register("item_added", from_version=1)
    def add_currency(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "currency": "EUR"}

    return ups


def order_events(i: int) -> list[Event]:
    if i % 2 == 0:
        return [Event("item_added", {"sku": f"S{n % 50}", "qty": 1 + n % 3}) for n in range(PER_ORDER)]
    return [
        Event("item_added", {"sku": f"S{n % 50}", "qty": 1 + n % 3, "currency": "USD"}, schema_version=2)
        for n in range(PER_ORDER)
    ]


async def replay(store: eskit.EventStore, n: int) -> None:
    count = 0
    async for event in store.replay():
        event.data.get("currency")
        count += 1
    assert count == n, count


async def frame(store: eskit.EventStore, n: int) -> None:
    df = await eskit.to_dataframe(store, progress=False)
    assert len(df) == n


async def timed(work: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """Wall-clock and this process's CPU seconds (the server is another process)."""
    started, cpu = time.perf_counter(), time.process_time()
    await work()
    return time.perf_counter() - started, time.process_time() - cpu


async def pair(
    name: str, plain: Callable[[], Awaitable[None]], upcast: Callable[[], Awaitable[None]], n: int, reps: int
) -> dict[str, float]:
    await plain()
    await upcast()  # warm-up
    without, with_ = [], []
    for _ in range(reps):  # alternating: a load change hits both alike
        without.append(await timed(plain))
        with_.append(await timed(upcast))
    a, b = statistics.median(w for w, _ in without), statistics.median(w for w, _ in with_)
    cpu_a, cpu_b = statistics.median(c for _, c in without), statistics.median(c for _, c in with_)
    ratio, cpu_ratio = a / b, cpu_a / cpu_b
    log(f"{name:<14} without upcasters {n / a:>10,.0f} ev/s   with {n / b:>10,.0f} ev/s   ratio {ratio:.2f} "
        f"(client CPU: {cpu_ratio:.2f})")  # fmt: skip
    return {"without_per_s": round(n / a), "with_per_s": round(n / b), "ratio": round(ratio, 3),
            "cpu_ratio": round(cpu_ratio, 3)}  # fmt: skip


async def main(n: int, reps: int) -> dict[str, object]:
    orders = n // PER_ORDER
    with eskit.EmbeddedServer() as server:
        async with await eskit.connect(server.url) as client:
            name = f"benchup{uuid.uuid4().hex[:8]}"
            plain = await client.event_store(name)
            upcast = await client.event_store(name, upcasters=upcasters())
            started = time.perf_counter()
            await plain.append_many([(f"o{i}", order_events(i), None) for i in range(orders)])
            log(f"filled {n:,} events in {time.perf_counter() - started:.1f}s (half v1, half v2)")
            sample = [e async for e in upcast.replay(up_to=2 * PER_ORDER)]
            assert {e.schema_version for e in sample} == {2} and sample[0].data["currency"] == "EUR"
            replayed = await pair("replay", lambda: replay(plain, n), lambda: replay(upcast, n), n, reps)
            framed = await pair("to_dataframe", lambda: frame(plain, n), lambda: frame(upcast, n), n, reps)
            await client.delete_store(name)
    worst = min(replayed["ratio"], framed["ratio"])
    result = {
        "events": n, "upcast_events": n // 2, "reps": reps, "python": platform.python_version(),
        "cpus": os.cpu_count(), "replay": replayed, "to_dataframe": framed, "goal_ratio": GOAL,
        "goal_met": worst >= GOAL, "load_average": os.getloadavg()[0],
    }  # fmt: skip
    log(f"worst ratio {worst:.2f} (goal {GOAL}: {'met' if worst >= GOAL else 'NOT met'}; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")  # fmt: skip
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 events")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    args = parser.parse_args()
    out = asyncio.run(main(20_000 if args.quick else 200_000, args.reps))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    if args.json:
        print(json.dumps(out, indent=2))
