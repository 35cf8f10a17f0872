"""Crypto-shredding's price: replay, to_dataframe and load of events with two encrypted personal fields.

    .venv/bin/python bench/privacy.py            # 100,000 events, 3 runs each (< ~2 min)
    .venv/bin/python bench/privacy.py --quick    # 10,000 events
    .venv/bin/python bench/privacy.py --json     # the JSON on stdout (the table goes to stderr)

One embedded nats-server, two streams with the same 100,000 events (1,000 customers x 100
``profile_updated`` events of ``{"customer", "email", "name", "plan", "n"}``): one written without privacy
(plain text), one written through a store opened with ``privacy=Personal({"profile_updated": ["email",
"name"]}, subject="customer")`` (email and name encrypted, 1,000 keys). In the same run, alternating, each
read is timed ``--reps`` times after a warm-up (keys cached) and the median kept:

1. ``store.replay()``: every event, its email touched;
2. ``eskit.to_dataframe(store)``;
3. ``store.load(Customer, id)`` of one 100-event customer, 200 times.

Also: the first replay on a new connection (every key read once: 1,000 subjects), the fill time with and
without encryption, and the plain stream opened with a declaration of another type (the check only).
Reported: events/s and the ratio plain/encrypted, by wall clock and by this process's CPU time.
Results also go to bench/results/privacy.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from report import emit, log  # bench/report.py (a script's folder is on sys.path)

import eskit
from eskit import Aggregate, Event, applies

RESULTS = Path(__file__).resolve().parent / "results" / "privacy.json"
PER_CUSTOMER = 100
LOADS = 200


class Customer(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.email, self.updates = "", 0

    @applies("profile_updated")
    def _updated(self, data: dict[str, Any]) -> None:
        self.email, self.updates = data["email"], self.updates + 1


def customer_events(i: int) -> list[Event]:
    cid = f"c{i}"
    return [
        Event("profile_updated", {"customer": cid, "email": f"{cid}.{n}@example.com", "name": f"Name {i}",
                                  "plan": "pro", "n": n})
        for n in range(PER_CUSTOMER)
    ]  # fmt: skip


async def replay(store: eskit.EventStore, n: int) -> None:
    count = 0
    async for event in store.replay():
        event.data["email"]
        count += 1
    assert count == n, count


async def frame(store: eskit.EventStore, n: int) -> None:
    df = await eskit.to_dataframe(store, progress=False)
    assert len(df) == n and not df["email"].iloc[-1].startswith("eskit-pii")


async def loads(store: eskit.EventStore, customers: int) -> None:
    for k in range(LOADS):
        customer = await store.load(Customer, f"c{k * 7 % customers}")
        assert customer.updates == PER_CUSTOMER and "@" in customer.email


async def timed(work: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """Wall-clock and this process's CPU seconds (the server is another process)."""
    started, cpu = time.perf_counter(), time.process_time()
    await work()
    return time.perf_counter() - started, time.process_time() - cpu


async def pair(
    name: str, plain: Callable[[], Awaitable[None]], sealed: Callable[[], Awaitable[None]], n: int, reps: int
) -> dict[str, float]:
    await plain()
    await sealed()  # warm-up: every key cached
    without, with_ = [], []
    for _ in range(reps):  # alternating: a load change hits both alike
        without.append(await timed(plain))
        with_.append(await timed(sealed))
    a, b = statistics.median(w for w, _ in without), statistics.median(w for w, _ in with_)
    cpu_a, cpu_b = statistics.median(c for _, c in without), statistics.median(c for _, c in with_)
    ratio, cpu_ratio = a / b, cpu_a / cpu_b
    log(f"{name:<14} plain {n / a:>10,.0f} ev/s   encrypted {n / b:>10,.0f} ev/s   ratio {ratio:.2f} "
        f"(client CPU: {cpu_ratio:.2f})")  # fmt: skip
    return {"plain_per_s": round(n / a), "encrypted_per_s": round(n / b), "ratio": round(ratio, 3),
            "cpu_ratio": round(cpu_ratio, 3)}  # fmt: skip


async def main(n: int, reps: int) -> dict[str, object]:
    customers = n // PER_CUSTOMER
    bucket = f"benchkeys{uuid.uuid4().hex[:8]}"
    personal = eskit.Personal({"profile_updated": ["email", "name"]}, subject="customer", bucket=bucket)
    other = eskit.Personal({"registered": ["email"]}, subject="customer", bucket=bucket)
    with eskit.EmbeddedServer() as server:
        async with await eskit.connect(server.url) as client:
            plain_name, sealed_name = f"benchplain{uuid.uuid4().hex[:8]}", f"benchpii{uuid.uuid4().hex[:8]}"
            plain = await client.event_store(plain_name)
            sealed = await client.event_store(sealed_name, privacy=personal)
            appends = [(f"c{i}", customer_events(i), None) for i in range(customers)]
            fill = {}
            for label, store in (("plain", plain), ("encrypted", sealed)):
                started = time.perf_counter()
                await store.append_many(appends)
                fill[label] = round(time.perf_counter() - started, 3)
            log(f"filled {n:,} events: plain {fill['plain']:.1f}s, encrypted {fill['encrypted']:.1f}s "
                f"({customers:,} keys made)")  # fmt: skip
            async with await eskit.connect(server.url) as fresh:  # no key cached: each is read once
                cold_store = await fresh.event_store(sealed_name, privacy=personal)
                cold, _ = await timed(lambda: replay(cold_store, n))
            log(f"first replay on a new connection (reads {customers:,} keys): {n / cold:,.0f} ev/s")
            checked = await client.event_store(plain_name, privacy=other)
            replayed = await pair("replay", lambda: replay(plain, n), lambda: replay(sealed, n), n, reps)
            framed = await pair("to_dataframe", lambda: frame(plain, n), lambda: frame(sealed, n), n, reps)
            loaded = await pair("load", lambda: loads(plain, customers), lambda: loads(sealed, customers),
                                LOADS * PER_CUSTOMER, reps)  # fmt: skip
            undeclared = await pair("check only", lambda: replay(plain, n), lambda: replay(checked, n), n, reps)
            await client.delete_store(plain_name)
            await client.delete_store(sealed_name)
            await client.wire.request(f"$JS.API.STREAM.DELETE.KV_{bucket}", b"")
    return {
        "events": n, "customers": customers, "personal_fields": 2, "reps": reps,
        "python": platform.python_version(), "cpus": os.cpu_count(), "fill_seconds": fill,
        "first_replay_per_s": round(n / cold), "replay": replayed, "to_dataframe": framed, "load": loaded,
        "undeclared_type_check": undeclared, "load_average": os.getloadavg()[0],
    }  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 events")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    args = parser.parse_args()
    out = asyncio.run(main(10_000 if args.quick else 100_000, args.reps))
    text = (f"privacy: replay ratio {out['replay']['ratio']}, to_dataframe {out['to_dataframe']['ratio']}, "  # type: ignore[index]
            f"load {out['load']['ratio']} (plain/encrypted; load average {out['load_average']:.1f})")  # type: ignore[index]  # fmt: skip
    emit(out, text, out=RESULTS, as_json=args.json)
