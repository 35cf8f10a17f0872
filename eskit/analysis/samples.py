"""Deterministic sample data for the lessons: order events, and a small event log in the XES/pm4py layout.

>>> appends = order_events(100, seed=6)          # [(aggregate id, [Event, ...], 0), ...] for append_many
>>> path = write_sample_log("sample.csv", cases=200, seed=6)                    # doctest: +SKIP
>>> path = event_log_path(tmp_dir)     # $ESKIT_EVENT_LOG if set, else the sample  # doctest: +SKIP

Same seed, same data: times start at a fixed date, so lessons print the same numbers on every run.
"""

from __future__ import annotations

import csv
import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
