"""pyeventsourcing's own Application on eskit's persistence module vs on its SQLite module, in one run.

    .venv/bin/python bench/eventsourcing_interop.py            # full run (~1 min)
    .venv/bin/python bench/eventsourcing_interop.py --quick    # smaller run (tests/test_bench_smoke.py)
    .venv/bin/python bench/eventsourcing_interop.py --json     # JSON on stdout (the table goes to stderr)

The same ``Application`` and ``Aggregate`` (an order of 10 events to start with) on three persistence
modules: ``eskit.interop.eventsourcing`` on an embedded nats-server (file storage), ``eventsourcing.sqlite``
on ``:memory:`` and on a file. Operations alternate call by call and the median call is compared:

1. cycle: ``repository.get``, add an item, ``save`` (one event: one message, checked);
2. get: ``repository.get`` alone;
3. create: ``save`` of a new order with its first 3 events (on NATS one atomic batch).

Results also go to bench/results/eventsourcing_interop.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from report import emit, log  # bench/report.py (a script's folder is on sys.path)

import eskit
from eskit.server import server_version

RESULTS = Path(__file__).resolve().parent / "results" / "eventsourcing_interop.json"


@dataclass(frozen=True)
class Sizes:
    aggregates: int  # orders of 10 events each, visited round-robin
    calls: int  # timed calls per operation and module
    creates: int  # timed creates per module


FULL = Sizes(aggregates=300, calls=1000, creates=200)
QUICK = Sizes(aggregates=30, calls=100, creates=20)


class Order(Aggregate):
    @event("Created")
    def __init__(self, customer: str) -> None:
        self.customer = customer
        self.items: list[dict[str, Any]] = []

    @event("ItemAdded")
    def add_item(self, sku: str, qty: int, price: float) -> None:
        self.items.append({"sku": sku, "qty": qty, "price": price})


class Shop(Application[UUID]):
    pass


def setup(env: dict[str, str], s: Sizes) -> tuple[Shop, dict[str, Callable[[int], None]]]:
    """An application with ``s.aggregates`` orders of 10 events, and its timed operations."""
    app = Shop(env=env)
    ids = []
    for _ in range(s.aggregates):
        order = Order("c")
        for k in range(9):
            order.add_item(f"sku-{k}", 1, 2.5)
        app.save(order)
        ids.append(order.id)

    def cycle(i: int) -> None:
        order: Order = app.repository.get(ids[i % len(ids)])
        order.add_item("sku-x", 1, 2.5)
        app.save(order)

    def get(i: int) -> None:
        app.repository.get(ids[i % len(ids)])

    def create(i: int) -> None:
        order = Order("new")
        order.add_item("a", 1, 1.0)
        order.add_item("b", 1, 1.0)
        app.save(order)

    return app, {"cycle": cycle, "get": get, "create": create}


def interleaved(ops: dict[str, Callable[[int], None]], n: int) -> dict[str, float]:
    """Median wall time per call, the modules alternating call by call (after a warm-up of n // 5)."""
    times: dict[str, list[float]] = {k: [] for k in ops}
    warmup = max(n // 5, 1)
    for i in range(warmup + n):
        for key, op in ops.items():
            started = time.perf_counter()
            op(i)
            if i >= warmup:
                times[key].append(time.perf_counter() - started)
    return {k: statistics.median(v) for k, v in times.items()}


def measure(url: str, db: str, s: Sizes) -> dict[str, dict[str, float]]:
    envs = {
        "nats": {"PERSISTENCE_MODULE": "eskit.interop.eventsourcing", "NATS_URL": url},
        "sqlite_memory": {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": ":memory:"},
        "sqlite_file": {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": db},
    }
    apps, ops = {}, {}
    try:
        for who, env in envs.items():
            log(f"setup: {s.aggregates} orders of 10 events on {who} ...")
            apps[who], ops[who] = setup(env, s)
        result = {}
        for op, n in (("cycle", s.calls), ("get", s.calls), ("create", s.creates)):
            log(f"{op} ...")
            medians = interleaved({who: ops[who][op] for who in envs}, n)
            result[op] = medians | {
                "ratio_vs_sqlite_memory": medians["nats"] / medians["sqlite_memory"],
                "ratio_vs_sqlite_file": medians["nats"] / medians["sqlite_file"],
            }
        return result
    finally:
        for app in apps.values():
            app.close()


def table(r: dict[str, Any]) -> str:
    us = 1e6
    lines = ["pyeventsourcing Application, median per call:   NATS (eskit)   SQLite :memory:   SQLite file"]
    for op, label in (("cycle", "get + add + save (1 event)"), ("get", "get (10+ events)"),
                      ("create", "save a new order (3 events)")):  # fmt: skip
        m = r[op]
        lines.append(
            f"  {label:<30} {m['nats'] * us:9.0f} us {m['sqlite_memory'] * us:12.0f} us "
            f"{m['sqlite_file'] * us:12.0f} us"
            f"   NATS/SQLite: {m['ratio_vs_sqlite_memory']:.2f}x (:memory:), {m['ratio_vs_sqlite_file']:.2f}x (file)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    s = QUICK if args.quick else FULL
    started = time.perf_counter()
    with eskit.EmbeddedServer() as server, tempfile.TemporaryDirectory() as tmp:
        ops = measure(server.url, str(Path(tmp) / "shop.db"), s)
        version = server_version()
    result = {
        "meta": {
            "quick": args.quick,
            "sizes": s.__dict__,
            "server_version": version,
            "eventsourcing": metadata.version("eventsourcing"),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        **ops,
        "elapsed_s": time.perf_counter() - started,
    }
    emit(result, table(result), out=RESULTS, as_json=args.json)
    return result


if __name__ == "__main__":
    main()
