"""Deterministic sample data for the lessons: order events, and a small event log in the XES/pm4py layout.

>>> appends = order_events(100, seed=6)          # [(aggregate id, [Event, ...], 0), ...] for append_many
>>> path = write_sample_log("sample.csv", cases=200, seed=6)                    # doctest: +SKIP
>>> path = event_log_path(tmp_dir)     # $ESKIT_EVENT_LOG if set, else the sample  # doctest: +SKIP

Same seed, same data: times start at a fixed date, so lessons print the same numbers on every run.
"""

from __future__ import annotations

import csv
import json
import os
import random
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..errors import EventLogError
from ..events import Event
from .eventlog import ACTIVITY, CASE, TIMESTAMP

START = datetime(2024, 3, 4, 8, 0, tzinfo=UTC)
ENV = "ESKIT_EVENT_LOG"


def order_events(orders: int, *, seed: int = 6) -> list[tuple[str, list[Event], int]]:
    """``orders`` order histories: created, item_added x1-4, then paid+shipped(+delivered) or cancelled."""
    rng = random.Random(seed)
    out = []
    for n in range(orders):
        at = START + timedelta(hours=rng.randrange(0, 24 * 28))
        events: list[tuple[str, dict[str, object]]] = [("created", {"customer": f"c{rng.randrange(40)}"})]
        events += [
            (
                "item_added",
                {
                    "sku": f"sku-{rng.randrange(30)}",
                    "qty": rng.randint(1, 3),
                    "price": rng.choice([4.5, 9.99, 19.0]),
                },
            )
            for _ in range(rng.randint(1, 4))
        ]
        roll = rng.random()
        if roll < 0.15:
            events.append(("cancelled", {"reason": rng.choice(["changed mind", "too slow"])}))
        else:
            events += [("payment_received", {"method": rng.choice(["card", "invoice"])}), ("shipped", {})]
            if roll < 0.85:
                events.append(("delivered", {}))
        stamped = []
        for kind, data in events:
            at += timedelta(minutes=rng.randint(5, 60 * (30 if kind in ("shipped", "delivered") else 2)))
            stamped.append(Event(kind, data, occurred_at=at))
        out.append((f"order-{n + 1:04d}", stamped, 0))
    return out


_PROCESS = [
    "Submit claim",
    "Check documents",
    "Request more info",
    "Assess damage",
    "Approve payment",
    "Reject claim",
    "Pay out",
    "Notify customer",
]


def sample_rows(cases: int, *, seed: int) -> list[dict[str, str]]:
    """Rows of a claims-handling log: activity names with spaces, case ids like ``claim 2024.001``."""
    rng = random.Random(seed)
    rows = []
    for n in range(cases):
        case = f"claim 2024.{n + 1:03d}"
        at = START + timedelta(hours=rng.randrange(0, 24 * 60))
        steps = ["Submit claim", "Check documents"]
        steps += ["Request more info", "Check documents"] * (rng.random() < 0.3)
        steps += ["Assess damage", "Approve payment", "Pay out"] if rng.random() < 0.75 else ["Reject claim"]
        steps.append("Notify customer")
        channel = rng.choice(["web", "phone", "agent"])
        for step in steps:
            at += timedelta(minutes=rng.randint(10, 60 * 48))
            rows.append(
                {
                    CASE: case,
                    ACTIVITY: step,
                    TIMESTAMP: at.isoformat(sep=" "),
                    "org:resource": f"clerk {rng.randrange(1, 6)}",
                    "case:channel": channel,
                }
            )
    return rows


def write_sample_log(path: str | Path, *, cases: int = 200, seed: int = 6) -> Path:
    """Write the sample claims log as a CSV with pm4py column names; returns the path."""
    path = Path(path)
    rows = sample_rows(cases, seed=seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def event_log_path(folder: str | Path, *, env: str = ENV) -> Path:
    """The log a lesson analyses: the file in ``$ESKIT_EVENT_LOG``, else the sample written to ``folder``."""
    given = os.environ.get(env)
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise EventLogError(f"${env} names {path}, which is not a file; fix the path or unset {env}")
        return path
    return write_sample_log(Path(folder) / "sample_claims.csv")


def sample_ocel(path: str | Path, *, orders: int = 5, seed: int = 6) -> Path:
    """A small OCEL 2.0 JSON file: orders with items and a customer (each event touches several objects).

    >>> path = sample_ocel(tmp / "orders.jsonocel")                                # doctest: +SKIP
    """
    rng = random.Random(seed)
    start = datetime(2024, 3, 4, 8, 0, tzinfo=UTC)
    objects: dict[str, str] = {}
    events: list[dict[str, Any]] = []

    def event(kind: str, minutes: int, related: list[tuple[str, str]], **attributes: Any) -> None:
        at = start.timestamp() + minutes * 60
        events.append(
            {
                "id": f"e{len(events) + 1}",
                "type": kind,
                "time": datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z"),
                "attributes": [{"name": k, "value": v} for k, v in attributes.items()],
                "relationships": [{"objectId": o, "qualifier": q} for o, q in related],
            }
        )

    for n in range(1, orders + 1):
        order, customer = f"o{n}", f"cust{rng.randrange(1, 4)}"
        items = [f"i{n}-{k}" for k in range(1, rng.randint(2, 3) + 1)]
        objects.update({order: "order", customer: "customer", **dict.fromkeys(items, "item")})
        t = n * 90
        event(
            "place order",
            t,
            [(order, "order"), (customer, "placed by"), *((i, "item") for i in items)],
            total=len(items) * 9.5,
        )
        for k, item in enumerate(items):
            event("pick item", t + 30 + k * 10, [(item, "item"), (order, "order")])
        event(
            "send package",
            t + 80,
            [(order, "order"), *((i, "item") for i in items)],
            carrier=rng.choice(["DHL", "UPS"]),
        )
    return _write_json(
        Path(path),
        {
            "objectTypes": [{"name": t, "attributes": []} for t in ("order", "item", "customer")],
            "eventTypes": [
                {"name": "place order", "attributes": [{"name": "total", "type": "float"}]},
                {"name": "pick item", "attributes": []},
                {"name": "send package", "attributes": [{"name": "carrier", "type": "string"}]},
            ],
            "objects": [{"id": o, "type": t, "attributes": [], "relationships": []} for o, t in objects.items()],
            "events": events,
        },
    )


def _write_json(path: Path, doc: dict[str, Any]) -> Path:
    with tempfile.NamedTemporaryFile("w", dir=path.parent or ".", delete=False, suffix=".tmp", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
    os.replace(f.name, path)
    return path
