"""`python -m eskit clean`: the lessons' leftovers go, by name prefix; everything else stays."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from nats.js.api import ConsumerConfig

import eskit
from eskit.clean import LESSON_PREFIX, clean, is_lesson_name

REPO = Path(__file__).resolve().parent.parent


def run_clean(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "eskit", "clean", "--url", url, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO, env=dict(os.environ))


async def streams(client: eskit.Client) -> set[str]:
    return {info.config.name for info in await client.js.streams_info()}


async def consumers(client: eskit.Client, stream: str) -> set[str]:
    return {info.name for info in await client.js.consumers_info(stream)}


async def test_clean_removes_the_lessons_stores_buckets_and_consumers_and_leaves_every_other_name_alone(
    client: eskit.Client,
) -> None:
    tag = uuid.uuid4().hex[:8]
    lesson = await client.event_store(f"{LESSON_PREFIX}orders{tag}", snapshots=eskit.SnapshotPolicy(every=1))
    await lesson.append("o1", [eskit.Event("created"), eskit.Event("paid")])
    await client.js.add_consumer(lesson.stream, ConsumerConfig(durable_name="projection-orders_view"))
    parked = await client.event_store(f"{LESSON_PREFIX}orders{tag}_parked")  # a projection's dead letters
    mine = await client.event_store(f"orders{tag}", snapshots=eskit.SnapshotPolicy(every=1))
    lookalike = await client.event_store(f"lessons{tag}")  # not the prefix: 'lessons', no underscore
    await client.js.add_consumer(mine.stream, ConsumerConfig(durable_name=f"{LESSON_PREFIX}check{tag}"))
    await client.js.add_consumer(mine.stream, ConsumerConfig(durable_name=f"projection-{LESSON_PREFIX}v{tag}"))
    await client.js.add_consumer(mine.stream, ConsumerConfig(durable_name=f"keep{tag}"))
    ours = {lesson.stream, parked.stream, f"KV_snapshots_{LESSON_PREFIX}orders{tag}"}
    theirs = {mine.stream, lookalike.stream, f"KV_snapshots_orders{tag}"}
    try:
        dry = run_clean(client.url, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        store_line = f"would remove store {LESSON_PREFIX}orders{tag} (stream {lesson.stream}: 2 events, 1 consumer)"
        assert store_line in dry.stdout
        assert f"would remove KV bucket snapshots_{LESSON_PREFIX}orders{tag}" in dry.stdout
        assert f"would remove consumer {LESSON_PREFIX}check{tag} on stream {mine.stream}" in dry.stdout
        assert "dry run: nothing was removed" in dry.stdout
        assert ours | theirs <= await streams(client)
        assert len(await consumers(client, mine.stream)) == 3

        done = run_clean(client.url)
        assert done.returncode == 0, done.stderr
        assert f"removed dead letters {LESSON_PREFIX}orders{tag}_parked" in done.stdout
        assert f"removed consumer projection-{LESSON_PREFIX}v{tag} on stream {mine.stream}" in done.stdout
        left = await streams(client)
        assert not ours & left, f"still there: {ours & left}"
        assert theirs <= left, f"removed though not the lessons': {theirs - left}"
        assert await consumers(client, mine.stream) == {f"keep{tag}"}
        assert not any(is_lesson_name(s) for s in left)

        again = run_clean(client.url)
        assert "nothing to remove" in again.stdout
    finally:
        for name in (lesson.name, parked.name, mine.name, lookalike.name):
            await client.delete_store(name)


@pytest.mark.parametrize(
    "name",
    ["ORDERS", "LESSONS", "LESSON", "KV_snapshots_orders", "KV_lessons", "projection-orders_view", "my_lesson_x",
     "OBJ_files", "KV_lesson"],
)
def test_clean_never_takes_a_name_that_only_resembles_a_lesson_name(name: str) -> None:
    assert not is_lesson_name(name)


async def test_clean_refuses_an_empty_prefix_that_would_match_every_stream(client: eskit.Client) -> None:
    with pytest.raises(ValueError, match="non-empty prefix"):
        await clean(client, prefix="_", dry_run=True)


def test_clean_without_a_server_says_in_one_line_how_to_name_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from eskit.__main__ import main

    monkeypatch.delenv("NATS_URL", raising=False)
    assert main(["clean", "--dry-run"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("eskit: error: no server to clean: pass --url or set NATS_URL") and "\n" not in err


async def test_clean_with_a_namespace_removes_only_that_learners_lesson_leftovers_and_plain_clean_every_learners(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    alice, bob = f"alice{tag}", f"bob{tag}"
    async with await eskit.connect(nats_url, namespace="") as plain:
        made: dict[str, set[str]] = {}
        for learner in (alice, bob):
            async with await eskit.connect(nats_url, namespace=learner) as c:
                lesson = await c.event_store(f"{LESSON_PREFIX}orders{tag}", snapshots=eskit.SnapshotPolicy(every=1))
                await lesson.append("o1", [eskit.Event("created")])
                parked = await c.event_store(f"{lesson.name}_parked")
                notes = await c.event_store("notes")  # the learner's own, not a lesson's: clean keeps it
                made[learner] = {lesson.stream, parked.stream, f"KV_snapshots_{lesson.name}", notes.stream}
        try:
            only_bob = run_clean(nats_url, "--namespace", bob)
            assert only_bob.returncode == 0, only_bob.stderr
            assert f"only learner {bob}'s" in only_bob.stdout
            left = await streams(plain)
            assert made[alice] <= left
            assert left & made[bob] == {f"{bob}_NOTES".upper()}

            monkeypatch.setenv("ESKIT_LEARNER", bob)  # a learner's own `clean` in the lab: theirs only, by default
            assert "nothing to remove" in run_clean(nats_url).stdout
            assert made[alice] <= await streams(plain)
            monkeypatch.delenv("ESKIT_LEARNER")

            everyone = run_clean(nats_url)
            assert everyone.returncode == 0, everyone.stderr
            left = await streams(plain)
            assert left & (made[alice] | made[bob]) == {f"{alice}_NOTES".upper(), f"{bob}_NOTES".upper()}
        finally:
            for learner in (alice, bob):
                await plain.delete_store(f"{learner}_notes")
                with contextlib.suppress(Exception):
                    await plain.delete_store(f"{learner}_{LESSON_PREFIX}orders{tag}")
                    await plain.delete_store(f"{learner}_{LESSON_PREFIX}orders{tag}_parked")


def test_a_learner_namespaces_lesson_names_are_lesson_names_and_a_lookalike_is_not() -> None:
    assert is_lesson_name("KV_snapshots_alice_lesson_orders1a2b3c4d")
    assert is_lesson_name("BOB-2_LESSON_SHOP1A2B3C4D_PARKED") and is_lesson_name("projection-bob_lesson_v1a2b3c4d")
    assert is_lesson_name("ALICE_LESSON_ORDERS1A2B3C4D", namespace="alice")
    assert not is_lesson_name("ALICE_LESSON_ORDERS1A2B3C4D", namespace="bob")
    assert not is_lesson_name("ALICE_ORDERS", namespace="alice")
    assert not is_lesson_name("team_lesson_plans") and not is_lesson_name("ALICE_NOTES")
