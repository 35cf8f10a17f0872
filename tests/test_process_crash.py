"""A process manager SIGKILLed after issuing a command and before storing its position, restarted: every
flow completes exactly once (no payment charged twice, no shipment or cancellation missing or doubled).

The payment service runs in the test's process and survives the kill; the process manager runs in
tests/process_worker.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from process_flows import drop, expected, outcomes, place, unique_namespace

import eskit
from eskit.process.examples import charge

WORKER = Path(__file__).with_name("process_worker.py")
ORDERS, BATCH = 60, 20


@pytest.fixture
async def flow(nats_url: str) -> AsyncIterator[eskit.Client]:
    async with await eskit.connect(nats_url, namespace=unique_namespace()) as client:
        try:
            yield client
        finally:
            await drop(client)


async def worker(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), *args, "--batch", str(BATCH), env=dict(os.environ),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def blocked_at(marker: Path, proc: asyncio.subprocess.Process) -> dict[str, object]:
    for _ in range(600):  # bounded: 30 s
        if marker.exists() or proc.returncode is not None:
            break
        await asyncio.sleep(0.05)
    assert marker.exists(), f"the worker never blocked: {await proc.stderr.read()!r}"  # type: ignore[union-attr]
    found: dict[str, object] = json.loads(marker.read_text())
    return found


def stored_positions(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as crashed:
        return dict(crashed.execute("SELECT name, position FROM eskit_positions").fetchall())


async def wait_out_the_duplicate_window(store: eskit.EventStore) -> None:
    """Until the store no longer drops a repeated event id (its window is over): then only the in-flight
    mark can recognise a repeated append."""
    probe = eskit.Event("probe")
    first = await store.append("probe", [probe])
    for _ in range(200):  # bounded: 10 s
        if await store.append("probe", [probe]) != first:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the duplicate window never ended")


@pytest.mark.parametrize("block", ["request:25", "shipping:7", "cancel:4"])
async def test_a_process_manager_killed_after_issuing_a_command_and_restarted_completes_every_flow_once(
    flow: eskit.Client, tmp_path: Path, block: str
) -> None:
    # a short duplicate window: a repeated cancellation is caught by the in-flight mark, not by Nats-Msg-Id
    orders = await flow.event_store("orders", duplicate_window=0.2)
    await place(orders, ORDERS)
    service = await eskit.command_service(flow, "payment.charge", store="payments", decide=charge)
    db, marker = tmp_path / "checkout.db", tmp_path / "blocked"
    try:
        proc = await worker(flow.namespace, str(db), "--block-after", block, "--marker", str(marker))
        try:
            where = await blocked_at(marker, proc)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
            await proc.wait()
        positions = stored_positions(db)
        # the command was issued; the position of the event that caused it was not stored
        assert positions.get(f"Checkout-{where['store']}", 0) < int(where["position"])  # type: ignore[call-overload]
        if block.startswith("cancel"):
            await wait_out_the_duplicate_window(orders)

        restarted = await worker(flow.namespace, str(db))
        out, err = await asyncio.wait_for(restarted.communicate(), 90)
        assert restarted.returncode == 0, err.decode()[-3000:]
        assert out.decode().startswith("caught up")
    finally:
        await service.stop()
    assert await outcomes(flow) == expected(ORDERS)
    if block.startswith("request"):
        assert service.stats.duplicates >= 1  # the charge issued before the kill came again, and was answered
    assert service.stats.handled == ORDERS
