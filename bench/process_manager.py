"""Process manager throughput: checkout flows per second through ``eskit.ProcessManager`` vs a hand-written loop.

    .venv/bin/python bench/process_manager.py            # 2,000 flows, 5 runs each
    .venv/bin/python bench/process_manager.py --quick    # 500 flows, 1 run each
    .venv/bin/python bench/process_manager.py --json     # the JSON on stdout (the table goes to stderr)

One embedded nats-server. A flow is the checkout of :mod:`eskit.process.examples`: an order ``placed`` in
store ``orders`` -> a charge request to the payment service (``eskit.command_service`` on its own
connection, storing ``captured`` or ``declined`` in ``payments``; every third order declined) -> a shipment
``requested`` in ``shipping`` (captured, ``expected_position=0``) or the order ``cancelled`` (declined).
Each run gets fresh stores (a learner namespace of its own) with the orders already placed; the clock runs
from the start until every flow has ended, and every run is checked afterwards (one outcome per order).

1. process manager: ``Checkout(client).run_until_caught_up()``: a durable subscriber on ``orders`` and one on
   ``payments``, positions in a SQLite file, the in-flight mark, command ids, acks; it learns the payment's
   outcome from the ``payments`` store;
2. hand-written loop: replay ``orders``, and for each ``placed`` event send the same request (same header)
   and make the same append from the reply; no positions, no subscriber, nothing survives a crash.

Both handle up to 64 flows at once (the manager's default ``concurrency``; the loop with 64 workers).
The manager's time includes its start (the SQLite file, its consumers). Both are run once as a warm-up, then
``--reps`` times, alternated; the medians are reported, and the CPU time of this process (the manager or
the loop, and the payment service): on a shared machine, wall-clock rates follow the load. Goal: the process manager at
least 0.5x the loop. Results also go to bench/results/process_manager.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import eskit
from eskit.process.commands import COMMAND_ID
from eskit.process.examples import Checkout, charge

RESULTS = Path(__file__).resolve().parent / "results" / "process_manager.json"
GOAL = 0.5
CONCURRENCY = 64
STORES = ("orders", "payments", "shipping")


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def amount(i: int) -> int:
    return 500 if i % 3 == 2 else 10 + i % 50  # every third over the payment service's limit: declined


class Run:
    """Fresh stores in a namespace of their own, the orders placed, the payment service started."""

    def __init__(self, url: str, flows: int) -> None:
        self.url, self.flows, self.namespace = url, flows, f"bench{uuid.uuid4().hex[:8]}"

    async def __aenter__(self) -> Run:
        self.client = await eskit.connect(self.url, namespace=self.namespace)
        self.service_client = await eskit.connect(self.url, namespace=self.namespace)
        self.service = await eskit.command_service(self.service_client, "payment.charge", store="payments",
                                                   decide=charge)  # fmt: skip
        self.orders = await self.client.event_store("orders")
        self.shipping = await self.client.event_store("shipping")
        await self.client.event_store("payments")
        placed = [(f"o{i}", [eskit.Event("placed", {"amount": amount(i)})], 0) for i in range(self.flows)]
        await self.orders.append_many(placed)
        return self

    async def check(self) -> None:
        """Every flow ended once: one payment per order, a shipment or a cancellation per order."""
        shipped = [e async for e in self.shipping.replay()]
        cancelled = [e async for e in self.orders.replay() if e.type == "cancelled"]
        declined = sum(amount(i) > 100 for i in range(self.flows))
        assert (len(shipped), len(cancelled)) == (self.flows - declined, declined), (len(shipped), len(cancelled))
        assert self.service.stats.handled == self.flows and self.service.stats.duplicates == 0, self.service.stats

    async def __aexit__(self, *exc: object) -> None:
        await self.service.stop()
        for name in STORES:
            await self.client.delete_store(name)
        await self.client.close()
        await self.service_client.close()


async def process_manager(run: Run, db: str) -> float:
    checkout = Checkout(run.client, db=db, concurrency=CONCURRENCY)
    started = time.perf_counter()
    handled = await checkout.run_until_caught_up(timeout=600)
    elapsed = time.perf_counter() - started
    assert handled == 2 * run.flows and checkout.stats.parked == 0, checkout.stats
    await checkout.close(delete_consumers=True)
    return elapsed


async def hand_written(run: Run) -> float:
    """The same requests and appends, written out: replay the orders, request, append from the reply."""
    nc, subject = run.client.nc, f"{run.namespace}.payment.charge"

    async def flow(event: eskit.RecordedEvent) -> None:
        order, cid = event.aggregate_id, f"loop-{event.id}-0"
        body = json.dumps({"order": order, "amount": event.data["amount"]}).encode()
        reply = json.loads((await nc.request(subject, body, timeout=5, headers={COMMAND_ID: cid})).data)
        if reply["type"] == "captured":
            requested = eskit.Event("requested", {"order": order}, id=f"{cid}-s")
            await run.shipping.append(order, [requested], expected_position=0)
        else:
            reason = f"payment declined: {reply['data']['reason']}"
            await run.orders.append(order, [eskit.Event("cancelled", {"reason": reason}, id=f"{cid}-c")])

    async def worker(todo: Iterator[eskit.RecordedEvent]) -> None:
        for event in todo:
            await flow(event)

    started = time.perf_counter()
    placed = iter([e async for e in run.orders.replay() if e.type == "placed"])
    await asyncio.gather(*(worker(placed) for _ in range(CONCURRENCY)))  # CONCURRENCY flows at a time
    return time.perf_counter() - started


async def one(url: str, flows: int, once: Callable[[Run], Awaitable[float]]) -> tuple[float, float]:
    """(seconds, CPU seconds of this process: the manager or loop, and the payment service) of one run."""
    async with Run(url, flows) as run:
        cpu = time.process_time()
        elapsed = await once(run)
        cpu = time.process_time() - cpu
        await run.check()
    return elapsed, cpu


def report(label: str, flows: int, runs: list[tuple[float, float]]) -> tuple[float, float]:
    """Median flows/s, and median flows per CPU-second of this process (its ceiling on an idle machine)."""
    rate = flows / statistics.median(t for t, _ in runs)
    ceiling = flows / statistics.median(c for _, c in runs)
    log(f"  {label:<36} {rate:>8,.0f} flows/s  (client CPU: {ceiling:>6,.0f} flows/s; "
        f"runs: {', '.join(f'{t:.2f}s' for t, _ in runs)})")  # fmt: skip
    return rate, ceiling


async def main(flows: int, reps: int) -> dict[str, object]:
    with eskit.EmbeddedServer() as server, tempfile.TemporaryDirectory() as tmp:
        files = iter(range(1000))

        def pm(run: Run) -> Awaitable[float]:
            return process_manager(run, os.path.join(tmp, f"checkout{next(files)}.db"))

        log(f"{flows:,} checkout flows (order -> payment service -> shipping or cancel), {reps} runs each")
        loops, managed = [], []
        for rep in range(reps + 1):  # alternated, so that a busy moment of the machine hits both
            loop_run, pm_run = await one(server.url, flows, hand_written), await one(server.url, flows, pm)
            if rep:  # the first is a warm-up
                loops.append(loop_run)
                managed.append(pm_run)
        loop, loop_cpu = report("hand-written loop", flows, loops)
        manager, manager_cpu = report("eskit ProcessManager (SQLite file)", flows, managed)
    ratio = manager / loop
    met = "met" if ratio >= GOAL else "NOT met"
    log(f"process manager: {ratio:.2f}x the hand-written loop (CPU: {manager_cpu / loop_cpu:.2f}x); goal {GOAL}x "
        f"{met} (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")  # fmt: skip
    return {
        "flows": flows, "reps": reps, "concurrency": CONCURRENCY, "python": platform.python_version(),
        "cpus": os.cpu_count(), "loop_flows_per_s": round(loop), "process_manager_flows_per_s": round(manager),
        "ratio": round(ratio, 2), "goal": GOAL, "goal_met": ratio >= GOAL,
        "client_cpu_ceiling_flows_per_s": {"loop": round(loop_cpu), "process_manager": round(manager_cpu)},
        "cpu_ratio": round(manager_cpu / loop_cpu, 2), "load_average": os.getloadavg()[0],
    }  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 flows, 1 run each")
    parser.add_argument("--reps", type=int)
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    args = parser.parse_args()
    reps = args.reps or (1 if args.quick else 5)
    out = asyncio.run(main(500 if args.quick else 2000, reps))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    if args.json:
        print(json.dumps(out, indent=2))
