"""A multi-stream projection process killed with SIGKILL, restarted: each store's position survived, no
event was applied twice, and the read model ends identical to a clean run."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import unique
from multistream_worker import Ledger, fill, rows

import eskit

WORKER = Path(__file__).with_name("multistream_worker.py")
BATCH, ORDERS = 100, 200  # payments: positions 1-400; the kill lands in its 4th batch


async def worker(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), *args, "--batch", str(BATCH), env=dict(os.environ),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def wait_for(marker: Path, proc: asyncio.subprocess.Process) -> None:
    for _ in range(600):  # bounded: 30 s
        if marker.exists() or proc.returncode is not None:
            break
        await asyncio.sleep(0.05)
    assert marker.exists(), f"the worker never blocked: {await proc.stderr.read()!r}"  # type: ignore[union-attr]


@pytest.fixture
async def payments(client: eskit.Client) -> AsyncIterator[eskit.EventStore]:
    name = unique("payments")
    yield await client.event_store(name)
    await client.delete_store(name)


@pytest.mark.parametrize("where", ["mid-batch", "between-commit-and-ack"])
async def test_a_multi_stream_projection_killed_and_restarted_keeps_each_stores_position_and_applies_nothing_twice(
    store: eskit.EventStore, payments: eskit.EventStore, tmp_path: Path, where: str
) -> None:
    last_order, last_payment = await fill(store, payments, ORDERS)
    block_at = 350
    db, marker = tmp_path / "ledger.db", tmp_path / "blocked"
    extra = ["--unacked"] if where == "between-commit-and-ack" else []
    proc = await worker(store.name, payments.name, str(db), "--block-at", str(block_at), "--marker", str(marker),
                        *extra)  # fmt: skip
    try:
        await wait_for(marker, proc)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
    with sqlite3.connect(db) as crashed:
        committed = dict(crashed.execute("SELECT name, position FROM eskit_positions").fetchall())
    paid_at = committed[f"ledger:{payments.name}"]
    if where == "mid-batch":
        assert paid_at == 300  # three payments batches committed; the fourth died with its transaction open
    else:
        assert paid_at >= block_at and committed[f"ledger:{store.name}"] == last_order  # committed, not acked

    restarted = await worker(store.name, payments.name, str(db))
    out, err = await asyncio.wait_for(restarted.communicate(), 60)
    assert restarted.returncode == 0, err.decode()
    assert out.decode().strip() == f"caught up at {last_order} {last_payment}"

    clean = Ledger({"orders": store, "payments": payments}, name="clean")
    await clean.run_until_caught_up()
    with sqlite3.connect(db) as recovered:
        assert rows(recovered) == rows(clean.db)
    assert dict(clean.db.execute("SELECT kind, n FROM totals").fetchall()) == {"placed": ORDERS, "received": 2 * ORDERS}
    assert clean.db.execute("SELECT DISTINCT total, paid FROM ledger").fetchall() == [(10, 10)]
    await clean.close(delete_consumer=True)
