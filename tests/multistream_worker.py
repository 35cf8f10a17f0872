"""A multi-stream projection in a process of its own, for the crash test (tests/test_multistream_crash.py).

    python tests/multistream_worker.py ORDERS PAYMENTS DB [--batch N] [--block-at POSITION --marker FILE [--unacked]]

Catches the ``Ledger`` projection up on the stores ``ORDERS`` and ``PAYMENTS`` (server at ``$NATS_URL``)
into the SQLite file ``DB``, then prints ``caught up at <orders position> <payments position>``. With
``--block-at``, the handler that applies the *payments* event at that position touches ``FILE`` and blocks
(mid-batch: the payments transaction open, earlier batches of both stores committed). With ``--unacked`` as
well, the orders store is caught up and the payments batch that reaches ``--block-at`` is committed but not
acknowledged, then the process blocks: killed between commit and ack.
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


async def fill(orders: eskit.EventStore, payments: eskit.EventStore, n: int) -> tuple[int, int]:
    """``n`` orders placed (then noted, a type nobody handles) and paid in two parts; the last positions."""
    ids = [f"o{i}" for i in range(n)]
    await orders.append_many([(i, [eskit.Event("placed", {"total": 10})], None) for i in ids])
    await orders.append_many([(i, [eskit.Event("noted")], None) for i in ids])
    paid = []
    for part in (4, 6):
        received = [(f"p-{i}-{part}", [eskit.Event("received", {"order": i, "amount": part})], None) for i in ids]
        paid += await payments.append_many(received)
    return await orders.last_position(), max(paid)


def rows(db: sqlite3.Connection) -> list[tuple[object, ...]]:
    return db.execute("SELECT * FROM ledger ORDER BY id").fetchall() + db.execute(
        "SELECT * FROM totals ORDER BY kind").fetchall()  # fmt: skip


class Ledger(eskit.MultiStreamProjection):
    """Sums and counts with increments, so that an event applied twice shows."""

    schema = """
        CREATE TABLE ledger (id TEXT PRIMARY KEY, total INTEGER NOT NULL DEFAULT 0, paid INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE totals (kind TEXT PRIMARY KEY, n INTEGER NOT NULL)
    """
    block_at: int | None = None
    marker: Path | None = None

    def _count(self, db: sqlite3.Connection, kind: str) -> None:
        db.execute("INSERT INTO totals VALUES (?, 1) ON CONFLICT (kind) DO UPDATE SET n = n + 1", (kind,))

    @applies("placed")
    def _placed(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        db.execute("INSERT INTO ledger (id, total) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET total = total + ?",
                   (event.aggregate_id, event.data["total"], event.data["total"]))  # fmt: skip
        self._count(db, "placed")

    @applies("received")
    def _received(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        db.execute("INSERT INTO ledger (id, paid) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET paid = paid + ?",
                   (event.data["order"], event.data["amount"], event.data["amount"]))  # fmt: skip
        self._count(db, "received")
        if self.block_at is not None and self.marker is not None and event.position == self.block_at:
            self.marker.touch()
            time.sleep(600)  # killed here, mid-transaction


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("orders")
    parser.add_argument("payments")
    parser.add_argument("db")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--block-at", type=int)
    parser.add_argument("--marker", type=Path)
    parser.add_argument("--unacked", action="store_true")
    args = parser.parse_args()
    async with await eskit.connect() as client:
        orders, payments = await client.event_store(args.orders), await client.event_store(args.payments)
        view = Ledger({"orders": orders, "payments": payments}, db=args.db, name="ledger", batch_size=args.batch)
        if args.unacked and args.block_at and args.marker:
            lane = view._lane("payments")
            await view._lane("orders").run_until_caught_up(timeout=30)
            for _ in range(10_000):  # bounded: each step moves the payments position by a batch
                if lane.position + args.batch >= args.block_at:
                    break
                await lane.step()
            await lane.step(ack=False)
            args.marker.touch()
            time.sleep(600)  # killed here: committed, not acknowledged
        view.block_at, view.marker = args.block_at, args.marker
        await view.run_until_caught_up(timeout=30)
        positions = view.positions
        print(f"caught up at {positions['orders']} {positions['payments']}", flush=True)
        await view.close()


if __name__ == "__main__":
    asyncio.run(main())
