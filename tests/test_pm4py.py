"""pm4py (an optional extra, AGPL-3.0) reads what eskit exports: `python3 dev.py test` installs it, so CI runs
these; a plain install without the extra skips them (except in CI, where a missing pm4py is a failure)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import unique

import eskit
from eskit.analysis import directly_follows
from eskit.samples import write_sample_log

try:
    import pm4py
except ImportError:  # pragma: no cover - depends on the install
    if os.environ.get("CI"):
        raise
    pytest.skip("pm4py is not installed (pip install 'eskit[pm4py]')", allow_module_level=True)


@pytest.fixture
async def log(client: eskit.Client, tmp_path: Path) -> AsyncIterator[eskit.EventStore]:
    name = unique("pm4py")
    store = await client.event_store(name)
    await eskit.import_log(store, write_sample_log(tmp_path / "log.csv", cases=60), progress=False)
    yield store
    await client.delete_store(name)


async def test_pm4py_finds_the_same_directly_follows_graph_as_eskit_on_the_sample_log(log: eskit.EventStore) -> None:
    df = await eskit.to_dataframe(log, names="pm4py")
    dfg, starts, ends = pm4py.discover_dfg(df)
    ours = {(r.source, r.target): r.count for r in directly_follows(df).itertuples()}
    assert dict(dfg) == ours and len(ours) > 5
    first = df.sort_values("time:timestamp", kind="stable").groupby("case:concept:name")["concept:name"].first()
    assert dict(starts) == first.value_counts().to_dict()
    assert sum(ends.values()) == df["case:concept:name"].nunique()


async def test_pm4py_discovers_a_process_model_from_the_frame(log: eskit.EventStore) -> None:
    df = await eskit.to_dataframe(log, names="pm4py")
    net, initial, final = pm4py.discover_petri_net_inductive(df)
    fitness = pm4py.fitness_token_based_replay(df, net, initial, final)
    assert fitness["log_fitness"] == pytest.approx(1.0)


@pytest.fixture
async def courses(client: eskit.Client) -> AsyncIterator[eskit.dcb.DCBStore]:
    """Lesson 05's courses: two courses, three students, four subscriptions."""
    from eskit.dcb_examples import define_course, execute, subscribe_student

    name = unique("courses")
    store = await client.dcb_store(name, tag_keys=["course", "student"])
    await execute(store, define_course("c1", capacity=3))
    await execute(store, define_course("c2", capacity=2))
    for student, course in [("s1", "c1"), ("s2", "c1"), ("s1", "c2"), ("s3", "c2")]:
        await execute(store, subscribe_student(student, course))
    yield store
    await client.delete_store(name)


@pytest.mark.parametrize("suffix", [".jsonocel", ".sqlite"])
async def test_pm4py_reads_the_ocel_export_of_a_dcb_store(
    courses: eskit.dcb.DCBStore, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"courses{suffix}"
    await eskit.to_ocel(courses, path)
    ocel = pm4py.read_ocel2_json(str(path)) if suffix == ".jsonocel" else pm4py.read_ocel2_sqlite(str(path))
    assert len(ocel.events) == 6 and len(ocel.relations) == 10
    assert dict(ocel.objects.groupby("ocel:type").size()) == {"course": 2, "student": 3}
    subscribed = ocel.relations[ocel.relations["ocel:activity"] == "StudentSubscribedToCourse"]
    assert sorted(subscribed.groupby("ocel:qualifier").size().items()) == [("course", 4), ("student", 4)]
    assert sorted(ocel.events["capacity"].dropna().astype(int)) == [2, 3]
    dfg = pm4py.discover_ocdfg(ocel)
    assert "course" in dfg["object_types"] and dfg["edges"]


async def test_pm4py_reads_the_sample_ocel_file_the_import_takes(tmp_path: Path) -> None:
    from eskit.ocel import sample_ocel

    ocel = pm4py.read_ocel2_json(str(sample_ocel(tmp_path / "orders.jsonocel", orders=4)))
    assert set(ocel.objects["ocel:type"]) == {"order", "item", "customer"}
    assert set(ocel.relations["ocel:qualifier"]) >= {"placed by", "item", "order"}
