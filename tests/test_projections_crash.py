"""A projection process killed with SIGKILL, restarted: its read model ends identical to a clean rebuild."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
from projection_worker import Totals, fill, rows

import eskit

WORKER = Path(__file__).with_name("projection_worker.py")
BATCH, BLOCK_AT = 300, 1000  # the kill lands in the 4th batch (positions 901-1200)


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
    assert marker.exists(), f"the worker never reached position {BLOCK_AT}: {await proc.stderr.read()!r}"  # type: ignore[union-attr]


@pytest.mark.parametrize("where", ["mid-batch", "between-commit-and-ack"])
async def test_a_projection_killed_and_restarted_ends_identical_to_a_clean_rebuild(
    store: eskit.EventStore, tmp_path: Path, where: str
) -> None:
    last = await fill(store, 300)  # 1,500 events
    db, marker = tmp_path / "totals.db", tmp_path / "blocked"
    extra = ["--unacked"] if where == "between-commit-and-ack" else []
    proc = await worker(store.name, str(db), "--block-at", str(BLOCK_AT), "--marker", str(marker), *extra)
    try:
        await wait_for(marker, proc)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
    with sqlite3.connect(db) as crashed:
        [(committed,)] = crashed.execute("SELECT position FROM eskit_positions").fetchall()
    if where == "mid-batch":
        assert committed == 900  # three batches committed; the fourth died with its transaction open
    else:
        assert committed >= BLOCK_AT  # committed, and none of it acknowledged

    restarted = await worker(store.name, str(db))
    out, err = await asyncio.wait_for(restarted.communicate(), 60)
    assert restarted.returncode == 0, err.decode()
    assert out.decode().strip() == f"caught up at {last}"

    clean = Totals(store, name="clean")
    await clean.run_until_caught_up()
    with sqlite3.connect(db) as recovered:
        assert rows(recovered) == rows(clean.db)
    assert dict(clean.db.execute("SELECT kind, n FROM totals").fetchall()) == {
        "created": 300, "item_added": 900, "shipped": 300}  # fmt: skip
    await clean.close()
