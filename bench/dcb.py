"""DCB benchmark: the decision cycle against the aggregate command cycle, and disjoint writers in parallel.

    .venv/bin/python bench/dcb.py            # ~15 s
    .venv/bin/python bench/dcb.py --quick

One embedded nats-server (or $NATS_URL) serves every measurement; each gets fresh stores, a warm-up, then
the median of several repetitions.

1. Cycle latency, sequential, one writer:
   - aggregate: ``store.read(id)`` + ``store.append(id, [event], expected_position=...)``;
   - Aggregate: the same through ``eskit.Aggregate`` (``orders.load(Order, id)``, a command, ``orders.save``);
   - DCB, one-filter boundary (claim a username): ``read(query)`` + ``append(events, condition)``;
   - DCB, two-item boundary in a one-event append (subscribe a student to a course): the two filters are
     merged into one broader server check.
2. Throughput of 4 disjoint writers (own connections, own boundaries) against 1, for both DCB decisions;
   internal retries (a merged filter moved under a writer, nothing matched, the append was re-sent) counted.
3. One contended boundary: 8 writers numbering invoices through ``execute``; the most read-decide-append
   rounds one invoice took (the worst wait, in rounds), and invoices per second.

``measure_scaling(quick)`` returns the figures of 2 and 3 as a dict (``bench/scale.py`` reports them).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import eskit
from eskit.dcb_examples import (
    COURSE_KEYS,
    USER_KEYS,
    Decision,
    create_invoice,
    define_course,
    execute,
    register_account,
    subscribe_student,
)
from eskit.examples import Order

TODAY = date(2025, 3, 1)
COURSES = 20


def tag() -> str:
    return uuid.uuid4().hex[:8]


async def cycle_once(store: eskit.dcb.DCBStore, decision: Decision) -> None:
    seen = await store.read(decision.query)
    await store.append(decision.decide(seen), eskit.dcb.AppendCondition(decision.query, seen.head))


async def timed(run: Callable[[], Awaitable[int]], reps: int) -> float:
    """Median seconds per operation of ``run`` (which returns how many operations it did)."""
    await run()  # warm-up
    per_op = []
    for _ in range(reps):
        start = time.perf_counter()
        n = await run()
        per_op.append((time.perf_counter() - start) / n)
    return statistics.median(per_op)


async def latency(client: eskit.Client, n: int, reps: int) -> dict[str, float]:
    orders = await client.event_store(f"bagg{tag()}")
    users = await client.dcb_store(f"busers{tag()}", tag_keys=USER_KEYS)
    courses = await client.dcb_store(f"bcourses{tag()}", tag_keys=COURSE_KEYS)

    async def aggregate() -> int:  # 10-event aggregates: histories of 0..9 events
        run = tag()
        for i in range(n):
            history = await orders.read(f"{run}-{i // 10}")
            position = history[-1].position if history else 0
            await orders.append(
                f"{run}-{i // 10}", [eskit.Event("item_added", {"i": i})], expected_position=position
            )
        return n

    async def aggregate_class() -> int:  # the same, through eskit.Aggregate: load, decide, save
        run = tag()
        for i in range(n):
            order = await orders.load(Order, f"{run}-o{i // 10}")
            if i % 10 == 0:
                order.create("ada")
            else:
                order.add_item(f"sku{i}")
            await orders.save(order)
        return n

    async def username() -> int:
        run = tag()
        for i in range(n):
            await cycle_once(users, register_account(f"{run}-{i}", today=TODAY))
        return n

    async def course() -> int:  # courses of 10 events: defined, then 9 subscriptions (all decisions)
        run = tag()
        for i in range(n):
            if i % 10 == 0:
                await cycle_once(courses, define_course(f"{run}-{i // 10}", 100))
            else:
                await cycle_once(courses, subscribe_student(f"{run}-{i}", f"{run}-{i // 10}"))
        return n

    result = {name: await timed(fn, reps) for name, fn in
              (("aggregate", aggregate), ("Aggregate", aggregate_class), ("dcb_username", username),
               ("dcb_course", course))}  # fmt: skip
    for name in (orders.name, users.name, courses.name):
        await client.delete_store(name)
    return result


async def throughput(url: str, writers: int, n: int, kind: str) -> tuple[float, int]:
    """Decisions per second of ``writers`` disjoint writers (own connections), and internal retries."""
    name = f"bthr{tag()}"
    async with await eskit.connect(url) as setup:
        await setup.dcb_store(name, tag_keys=COURSE_KEYS if kind == "course" else USER_KEYS)
        clients = [await eskit.connect(url) for _ in range(writers)]
        stores = [await c.dcb_store(name) for c in clients]
        for w, store in enumerate(stores):
            for c in range(COURSES if kind == "course" else 0):
                await execute(store, define_course(f"own{w}-{c}", 10**9))

        async def writer(w: int, store: eskit.dcb.DCBStore) -> None:
            for i in range(n):
                if kind == "course":
                    await cycle_once(store, subscribe_student(f"w{w}-{i}", f"own{w}-{i % COURSES}"))
                else:
                    await cycle_once(store, register_account(f"w{w}-{i}", today=TODAY))

        start = time.perf_counter()
        await asyncio.gather(*(writer(w, s) for w, s in enumerate(stores)))
        elapsed = time.perf_counter() - start
        retries = sum(s.retries for s in stores)
        for c in clients:
            await c.close()
        await setup.delete_store(name)
    return writers * n / elapsed, retries


async def contended(url: str, writers: int, n: int) -> tuple[int, float]:
    """``writers`` writers (own connections) number ``n`` invoices each on one boundary through ``execute``:
    the most rounds one invoice took, and invoices per second. Every number is checked unique and gapless."""
    name = f"binv{tag()}"
    async with await eskit.connect(url) as setup:
        await setup.dcb_store(name)
        clients = [await eskit.connect(url) for _ in range(writers)]
        stores = [await c.dcb_store(name) for c in clients]
        worst = 0

        async def writer(w: int, store: eskit.dcb.DCBStore) -> None:
            nonlocal worst
            for i in range(n):
                decision, rounds = create_invoice({"writer": w, "i": i}), 0

                def decide(
                    events: list[eskit.dcb.SequencedEvent], inner: Decision = decision
                ) -> list[eskit.dcb.TaggedEvent]:
                    nonlocal rounds
                    rounds += 1
                    return inner.decide(events)

                await execute(store, Decision(decision.query, decide, decision.last_only))
                worst = max(worst, rounds)

        start = time.perf_counter()
        await asyncio.gather(*(writer(w, s) for w, s in enumerate(stores)))
        elapsed = time.perf_counter() - start
        numbers = [e.data["invoiceNumber"] for e in await stores[0].read()]
        if numbers != list(range(1, writers * n + 1)):
            raise AssertionError(f"invoice numbers are not unique and gapless: {numbers[:20]}...")
        for c in clients:
            await c.close()
        await setup.delete_store(name)
    return worst, writers * n / elapsed


async def measure_scaling(quick: bool, url: str | None = None) -> dict[str, float]:
    """Issue 17's DCB figures in one run: 4 disjoint writers (course decisions) against 1, internal retries
    per decision, and the worst rounds of 8 writers numbering invoices on one boundary.

    >>> figures = asyncio.run(measure_scaling(quick=True))                       # doctest: +SKIP
    >>> sorted(figures)[:3]                                                      # doctest: +SKIP
    ['contended_invoices_per_s', 'contended_worst_rounds', 'course_1_writer_per_s']
    """
    per_writer, invoices = (100, 15) if quick else (400, 50)
    server = None if url or os.environ.get("NATS_URL") else eskit.EmbeddedServer().start()
    url = url or os.environ.get("NATS_URL") or server.url  # type: ignore[union-attr]
    try:
        figures: dict[str, float] = {}
        for kind in ("course", "username"):
            one, _ = await throughput(url, 1, per_writer, kind)
            four, retries = await throughput(url, 4, per_writer, kind)
            prefix = "dcb_disjoint" if kind == "course" else "username_disjoint"
            figures[f"{prefix}_scaling"] = four / one
            figures[f"{kind}_1_writer_per_s"], figures[f"{kind}_4_writers_per_s"] = one, four
            figures["retries_per_decision" if kind == "course" else "username_retries_per_decision"] = (
                retries / (4 * per_writer)
            )
        worst, rate = await contended(url, 8, invoices)
        figures["contended_worst_rounds"], figures["contended_invoices_per_s"] = worst, rate
        return figures
    finally:
        if server is not None:
            server.stop()


async def main(quick: bool) -> None:
    n, reps, per_writer = (50, 3, 100) if quick else (200, 5, 400)
    server = None if os.environ.get("NATS_URL") else eskit.EmbeddedServer().start()
    url = os.environ.get("NATS_URL") or server.url  # type: ignore[union-attr]
    try:
        async with await eskit.connect(url) as client:
            lat = await latency(client, n, reps)
        print(f"cycle latency (median of {reps} x {n} sequential cycles):")
        for name, seconds in lat.items():
            print(f"  {name:<13} {seconds * 1e6:8.0f} µs   {seconds / lat['aggregate']:.2f}x the aggregate")
        print(f"throughput, disjoint writers ({per_writer} decisions each, own connections):")
        for kind in ("username", "course"):
            one, _ = await throughput(url, 1, per_writer, kind)
            four, retries = await throughput(url, 4, per_writer, kind)
            print(
                f"  {kind:<9} 1 writer {one:7.0f}/s   4 writers {four:7.0f}/s   {four / one:.2f}x   "
                f"internal retries {retries} ({retries / (4 * per_writer):.2f} per decision), conflicts 0"
            )
        worst, rate = await contended(url, 8, 15 if quick else 50)
        print(f"one contended boundary, 8 writers numbering invoices: {rate:.0f}/s, worst {worst} rounds for one")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    asyncio.run(main(parser.parse_args().quick))
