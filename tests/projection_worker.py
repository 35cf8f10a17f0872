"""A projection in a process of its own, for the crash test (tests/test_projections_crash.py).

    python tests/projection_worker.py STORE DB [--batch N] [--block-at POSITION --marker FILE [--unacked]]

Catches the ``Totals`` projection up on store ``STORE`` (server at ``$NATS_URL``) into the SQLite file
``DB``, then prints ``caught up at <position>``. With ``--block-at``, the handler that applies the event at
that position touches ``FILE`` and blocks: the parent kills the process there, mid-batch (the transaction
open, earlier batches committed and acknowledged). With ``--unacked`` as well, the batch that reaches
``--block-at`` is committed but not acknowledged, and the process blocks there: killed between commit and ack.

Also the helpers the projection tests share: ``fill`` a store with orders, the ``rows`` of a read model.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import time
from pathlib import Path

import eskit
from eskit.aggregate import applies
from eskit.events import RecordedEvent
from eskit.projections import Projection


async def fill(store: eskit.EventStore, orders: int, *, first: int = 0) -> int:
    """``orders`` orders of 5 events each (created, 3 x item_added, shipped); returns the last position.

    One event per append, in rounds (all created, then all first items, ...): single appends are fast.
    """
    ids = [f"o{i}" for i in range(first, first + orders)]
    rounds = [lambda i: eskit.Event("created", {"customer": f"c{i}"})]
    rounds += [lambda i, q=q: eskit.Event("item_added", {"qty": q}) for q in (1, 2, 3)]
    rounds += [lambda i: eskit.Event("shipped", {"tracking": f"T{i[1:]}"})]
    last = 0
    for make in rounds:
        last = max(last, *await store.append_many([(i, [make(i)], None) for i in ids]))
    return last


def rows(db: sqlite3.Connection) -> list[tuple[object, ...]]:
    return db.execute("SELECT * FROM orders ORDER BY id").fetchall() + db.execute(
        "SELECT * FROM totals ORDER BY kind").fetchall()  # fmt: skip


class Totals(Projection):
    """Counts with increments, so that an event applied twice shows."""

    schema = """
        CREATE TABLE orders (id TEXT PRIMARY KEY, items INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL);
        CREATE TABLE totals (kind TEXT PRIMARY KEY, n INTEGER NOT NULL)
    """
    block_at: int | None = None
    marker: Path | None = None

    def _count(self, db: sqlite3.Connection, kind: str) -> None:
        db.execute("INSERT INTO totals VALUES (?, 1) ON CONFLICT (kind) DO UPDATE SET n = n + 1", (kind,))
        if self.block_at is not None and self.marker is not None and self._at == self.block_at:
            self.marker.touch()
            time.sleep(600)  # killed here, mid-transaction

    @applies("created")
    def _created(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        self._at = event.position
        db.execute("INSERT INTO orders (id, status) VALUES (?, 'pending')", (event.aggregate_id,))
        self._count(db, "created")

    @applies("item_added")
    def _item_added(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        self._at = event.position
        db.execute(
            "UPDATE orders SET items = items + ? WHERE id = ?", (event.data["qty"], event.aggregate_id)
        )
        self._count(db, "item_added")

    @applies("shipped")
    def _shipped(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        self._at = event.position
        db.execute("UPDATE orders SET status = 'shipped' WHERE id = ?", (event.aggregate_id,))
        self._count(db, "shipped")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("db")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--block-at", type=int)
    parser.add_argument("--marker", type=Path)
    parser.add_argument("--unacked", action="store_true")
    args = parser.parse_args()
    async with await eskit.connect() as client:
        store = await client.event_store(args.store)
        view = Totals(store, db=args.db, name="totals", batch_size=args.batch)
        if args.unacked and args.block_at and args.marker:
            while view.position + args.batch < args.block_at:
                await view.step()
            await view.step(ack=False)
            args.marker.touch()
            time.sleep(600)  # killed here: committed, not acknowledged
        view.block_at, view.marker = args.block_at, args.marker
        await view.run_until_caught_up(timeout=30)
        print(f"caught up at {view.position}", flush=True)
        await view.close()


if __name__ == "__main__":
    asyncio.run(main())
