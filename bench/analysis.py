"""Benchmark: a whole stream into a DataFrame vs a bare nats-py ordered consumer that only counts.

    .venv/bin/python bench/analysis.py                    # 200,000 events, 3 reps, median (~1-2 min)
    .venv/bin/python bench/analysis.py --events 20000     # quicker
    .venv/bin/python bench/analysis.py --events 1000000 --reps 1   # the 1M-event memory check

One embedded nats-server and one stream serve both; the stream is filled with ``store.append_many``
(single-event appends spread over 2,000 aggregates, eskit's headers, small JSON data). Then, interleaved:
(a) ``eskit.to_dataframe(store)``: every event decoded into a DataFrame (data flattened, timestamps
parsed); (b) ``js.subscribe(f"{name}.>", ordered_consumer=True, cb=count)``: a push ordered consumer whose
callback only counts, timed from subscribe to the last message. Goal: (a) at least as fast as (b).
Also shown: (c) ``async for event in store.replay()`` (a RecordedEvent per event) against (b).
Peak memory (max RSS) is printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
import uuid
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import eskit

GOAL = 1.0
TYPES = ("created", "item_added", "item_added", "payment_received", "shipped")


async def fill(store: eskit.EventStore, n: int) -> None:
    step = 20_000
    for start in range(0, n, step):
        appends = [
            (
                f"o{i % 2000}",
                [
                    eskit.Event(
                        TYPES[i % len(TYPES)], {"sku": f"sku-{i % 97}", "qty": 1 + i % 5, "price": 9.99}
                    )
                ],
                None,
            )
            for i in range(start, min(n, start + step))
        ]
        await store.append_many(appends)


async def eskit_frame(store: eskit.EventStore, n: int) -> float:
    t0 = time.perf_counter()
    df = await eskit.to_dataframe(store, progress=False)
    elapsed = time.perf_counter() - t0
    assert len(df) == n and df["position"].is_monotonic_increasing, len(df)
    return elapsed


async def eskit_replay(store: eskit.EventStore, n: int) -> float:
    t0 = time.perf_counter()
    count = 0
    async for _ in store.replay():
        count += 1
    elapsed = time.perf_counter() - t0
    assert count == n, count
    return elapsed


async def ordered_count(nc: nats.aio.client.Client, subject: str, n: int) -> float:
    js = nc.jetstream()
    done = asyncio.Event()
    count = 0

    async def cb(msg: object) -> None:
        nonlocal count
        count += 1
        if count >= n:
            done.set()

    t0 = time.perf_counter()
    sub = await js.subscribe(subject, ordered_consumer=True, cb=cb)
    await asyncio.wait_for(done.wait(), timeout=600)
    elapsed = time.perf_counter() - t0
    await sub.unsubscribe()
    assert count == n, count
    return elapsed


async def main(n: int, reps: int) -> None:
    with eskit.EmbeddedServer() as server:
        async with await eskit.connect(server.url) as client:
            nc = await nats.connect(server.url)
            name = f"bench{uuid.uuid4().hex[:6]}"
            store = await client.event_store(name)
            try:
                t0 = time.perf_counter()
                await fill(store, n)
                print(f"filled {n:,} events in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
                await eskit_frame(store, n)  # warm-up
                await ordered_count(nc, f"{name}.>", n)
                runs: dict[str, list[float]] = {"eskit": [], "ordered": [], "replay": []}
                for rep in range(reps):
                    runs["eskit"].append(n / await eskit_frame(store, n))
                    runs["ordered"].append(n / await ordered_count(nc, f"{name}.>", n))
                    runs["replay"].append(n / await eskit_replay(store, n))
                    print(
                        f"  rep {rep + 1}: to_dataframe {runs['eskit'][-1]:,.0f}/s, "
                        f"ordered consumer {runs['ordered'][-1]:,.0f}/s, replay {runs['replay'][-1]:,.0f}/s",
                        file=sys.stderr,
                    )
            finally:
                await client.delete_store(name)
                await nc.close()
    eskit_rate, ordered_rate = statistics.median(runs["eskit"]), statistics.median(runs["ordered"])
    ratio = eskit_rate / ordered_rate
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"replay {n:,} events ({reps} reps, median)")
    print(f"  eskit.to_dataframe                  {eskit_rate:>12,.0f} events/s")
    print(f"  nats-py ordered consumer (counting) {ordered_rate:>12,.0f} events/s")
    print(f"  ratio {ratio:.2f}x   goal >= {GOAL:.1f}x: {'ok' if ratio >= GOAL else 'BELOW GOAL'}")
    replay_rate = statistics.median(runs["replay"])
    print(f"  eskit store.replay() (RecordedEvents) {replay_rate:>12,.0f} events/s ({replay_rate / ordered_rate:.2f}x)")
    print(f"  peak memory (max RSS of this process) {rss:,.0f} MiB")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="20,000 events, 3 reps: seconds, for a smoke test")
    args = p.parse_args()
    asyncio.run(main(20_000 if args.quick else args.events, args.reps))
