"""Twenty learners, one server: each learner's lessons stay in their namespace, and ``clean`` removes them.

Three learners (``ESKIT_LEARNER`` per notebook kernel) run lessons 01, 02 and 04 at the same time against the suite's
one server, each up to (not including) the cell that deletes the lesson's store. Then: every stream the lessons
made is in a learner's namespace, each learner's stores hold the same events (their own, none of another's),
``python -m eskit clean --namespace bob`` removes bob's and nothing else, and plain ``clean`` the rest: the
server's streams and KV buckets are as they were before.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import eskit
from eskit.clean import is_lesson_name
from eskit.cluster import EmbeddedCluster, cluster_at

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ("01_events_and_subjects", "02_rebuilding_state", "04_projections")
LAST_CELL = "await client.delete_store(name)"  # the lesson's clean-up: skipped, so the stores stay to be checked


async def run_lesson(lesson: str, learner: str, *, skip: str = LAST_CELL) -> list[str]:
    """Run ``lesson`` in a kernel of its own as ``learner`` (cells containing ``skip`` left out); return the
    errors its cells raised."""
    nb = nbformat.read(ROOT / "notebooks" / f"{lesson}.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    env = {**os.environ, "ESKIT_LEARNER": learner}
    errors: list[str] = []
    async with client.async_setup_kernel(env=env):
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or (skip and skip in cell.source):
                continue
            ran = await client.async_execute_cell(cell, index)
            errors += [f"{o['ename']}: {o['evalue']}" for o in ran.outputs if o["output_type"] == "error"]
    return errors


async def stream_names(client: eskit.Client) -> set[str]:
    return {info.config.name for info in await client.js.streams_info()}


def clean(url: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "ESKIT_LEARNER"}
    cmd = [sys.executable, "-m", "eskit", "clean", "--url", url, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def of(learner: str, streams: set[str]) -> set[str]:
    return {s for s in streams if s.lower().removeprefix("kv_snapshots_").startswith(f"{learner}_lesson_")}


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_three_learners_running_lessons_at_once_on_one_server_see_only_their_own_and_clean_removes_all(
    nats_url: str,
) -> None:
    tag = uuid.uuid4().hex[:4]
    learners = [f"alice-{tag}", f"bob-{tag}", f"carol-{tag}"]
    async with await eskit.connect(nats_url, namespace="") as plain:
        before = await stream_names(plain)
        runs = [run_lesson(lesson, learner) for learner in learners for lesson in LESSONS]
        results = await asyncio.gather(*runs)
        assert all(errors == [] for errors in results), f"a cell failed: {results}"

        made = await stream_names(plain) - before
        mine = {learner: of(learner, made) for learner in learners}
        outside = made - set().union(*mine.values())
        assert not outside, f"lessons made streams outside every learner's namespace: {outside}"
        histories: dict[str, list[list[tuple[str, str]]]] = {}
        for learner in learners:
            stores = sorted(s.lower() for s in mine[learner] if not s.startswith("KV_") and not s.endswith("_PARKED"))
            assert len(stores) == len(LESSONS), f"{learner}: {stores}"  # one store per lesson
            histories[learner] = []
            for name in stores:
                store = await plain.event_store(name)
                events = [e async for e in store.replay()]
                assert events and all(e.subject.startswith(f"{name}.") for e in events)
                histories[learner].append(sorted((e.aggregate_id, e.type) for e in events))  # races: any order
        alice, bob, carol = learners
        for learner in (bob, carol):  # the same lessons, the same events: none saw another's
            for mine_, theirs in zip(sorted(histories[alice]), sorted(histories[learner]), strict=True):
                extra, missing = Counter(theirs) - Counter(mine_), Counter(mine_) - Counter(theirs)
                assert not extra and not missing, f"{learner} has {extra} more, {missing} fewer than {alice}"

        assert f"only learner {bob}'s" in clean(nats_url, "--namespace", bob)

        left = await stream_names(plain)
        assert not mine[bob] & left and mine[alice] | mine[carol] <= left

        clean(nats_url)
        after = await stream_names(plain)
        assert after == {s for s in before if not is_lesson_name(s)}, f"left behind: {after - before}"


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_the_other_lessons_run_in_learner_namespaces_at_once_and_leave_nothing_behind(nats_url: str) -> None:
    tag = uuid.uuid4().hex[:4]
    others = ["00_setup_check", "03_snapshots", "05_dcb", "06_event_log_analysis", "08_events_that_change",
              "09_beyond_one_aggregate"]
    learners = [f"alice-{tag}", f"bob-{tag}", f"carol-{tag}"]
    async with await eskit.connect(nats_url, namespace="") as plain:
        before = await stream_names(plain)
        runs = [run_lesson(lesson, learners[i % 3], skip="") for i, lesson in enumerate(others)]  # all cells
        results = await asyncio.gather(*runs)
        assert all(errors == [] for errors in results), f"a cell failed: {dict(zip(others, results, strict=True))}"
        assert await stream_names(plain) == before  # each lesson deleted what it made


async def test_a_single_server_at_nats_url_is_not_a_room_cluster_so_lesson_07_starts_its_own(nats_url: str) -> None:
    assert await cluster_at(nats_url) is None
    assert await cluster_at("nats://127.0.0.1:1") is None  # nothing there: the lesson starts its own too


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_lesson_07_on_a_room_cluster_at_nats_url_uses_it_and_keeps_every_node_running() -> None:
    with EmbeddedCluster(3) as room:
        assert await cluster_at(room.url) == room.url
        nb = nbformat.read(ROOT / "notebooks" / "07_scaling_and_faults.ipynb", as_version=4)
        client = NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
        env = {**os.environ, "NATS_URL": room.url, "ESKIT_LEARNER": "dana"}
        async with client.async_setup_kernel(env=env):
            for index, cell in enumerate(nb.cells):
                if cell.cell_type == "code":
                    await client.async_execute_cell(cell, index)
        outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
        errors = [f"{o['ename']}: {o['evalue']}" for o in outputs if o["output_type"] == "error"]
        assert errors == [], errors
        text = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
        assert "using the cluster at NATS_URL, shared with the room" in text and "stepped down" in text
        assert "leader killed" not in text and "acknowledged but lost: 0" in text and "stored twice: 0" in text
        assert all(node.running for node in room.nodes)
        async with await eskit.connect(room.url, namespace="") as plain:
            assert not [s async for s in _lesson_streams(plain)], "lesson 07 left a store on the room's cluster"


async def _lesson_streams(client: eskit.Client) -> AsyncIterator[str]:
    for info in await client.js.streams_info():
        if is_lesson_name(info.config.name):
            yield info.config.name
