"""OCEL 2.0: a DCB store's tags become objects (export checked against the standard's shape and, where
installed, by pm4py); an OCEL file the project generates imports into a DCB store, idempotently."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from conftest import unique

import eskit
from eskit.dcb import DCBStore, Query, QueryItem, TaggedEvent
from eskit.dcb_examples import define_course, execute, subscribe_student
from eskit.ocel import read_ocel, sample_ocel

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
async def courses(client: eskit.Client) -> AsyncIterator[DCBStore]:
    """Lesson 05's courses: two courses, three students, four subscriptions."""
    name = unique("courses")
    store = await client.dcb_store(name, tag_keys=["course", "student"])
    await execute(store, define_course("c1", capacity=3))
    await execute(store, define_course("c2", capacity=2))
    for student, course in [("s1", "c1"), ("s2", "c1"), ("s1", "c2"), ("s3", "c2")]:
        await execute(store, subscribe_student(student, course))
    yield store
    await client.delete_store(name)


def check_ocel_json(doc: dict[str, object]) -> None:
    """The OCEL 2.0 JSON shape: typed attributes declared per type, ids unique, relations to known objects."""
    assert set(doc) >= {"objectTypes", "eventTypes", "objects", "events"}
    event_types = {t["name"]: {a["name"]: a["type"] for a in t["attributes"]} for t in doc["eventTypes"]}  # type: ignore[attr-defined, index]
    object_types = {t["name"] for t in doc["objectTypes"]}  # type: ignore[attr-defined, index]
    objects = {o["id"]: o["type"] for o in doc["objects"]}  # type: ignore[attr-defined, index]
    assert len(objects) == len(doc["objects"]) and set(objects.values()) <= object_types  # type: ignore[arg-type]
    ids = [e["id"] for e in doc["events"]]  # type: ignore[attr-defined, index]
    assert len(set(ids)) == len(ids)
    python = {"string": str, "integer": int, "float": (int, float), "boolean": bool}
    for e in doc["events"]:  # type: ignore[attr-defined]
        assert e["type"] in event_types and datetime.fromisoformat(e["time"]).tzinfo is not None
        for a in e["attributes"]:
            assert isinstance(a["value"], python[event_types[e["type"]][a["name"]]]), (e, a)
        for r in e["relationships"]:
            assert r["objectId"] in objects and r["qualifier"]


async def test_ocel_export_of_a_dcb_store_turns_tags_into_objects(courses: DCBStore, tmp_path: Path) -> None:
    result = await eskit.to_ocel(courses, tmp_path / "courses.jsonocel")
    doc = json.loads((tmp_path / "courses.jsonocel").read_text())
    check_ocel_json(doc)
    assert (result.events, result.objects, result.relations) == (6, 5, 10)
    assert {(o["id"], o["type"]) for o in doc["objects"]} == {
        ("c1", "course"), ("c2", "course"), ("s1", "student"), ("s2", "student"), ("s3", "student")
    }  # fmt: skip
    subscribed = [e for e in doc["events"] if e["type"] == "StudentSubscribedToCourse"]
    assert {tuple(sorted((r["qualifier"], r["objectId"]) for r in e["relationships"])) for e in subscribed} == {
        (("course", "c1"), ("student", "s1")), (("course", "c1"), ("student", "s2")),
        (("course", "c2"), ("student", "s1")), (("course", "c2"), ("student", "s3")),
    }  # fmt: skip
    defined = next(t for t in doc["eventTypes"] if t["name"] == "CourseDefined")
    assert {"name": "capacity", "type": "integer"} in defined["attributes"]
    with pytest.raises(eskit.ValidationError, match="exists: pass overwrite=True"):
        await eskit.to_ocel(courses, tmp_path / "courses.jsonocel")
    with pytest.raises(eskit.ValidationError, match=r"name it \.jsonocel"):
        await eskit.to_ocel(courses, tmp_path / "courses.csv")


async def test_ocel_sqlite_export_has_the_standard_tables(courses: DCBStore, tmp_path: Path) -> None:
    await eskit.to_ocel(courses, tmp_path / "courses.sqlite")
    db = sqlite3.connect(tmp_path / "courses.sqlite")
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"event", "object", "event_object", "object_object", "event_map_type", "object_map_type"} <= tables
    assert {"event_CourseDefined", "event_StudentSubscribedToCourse", "object_course", "object_student"} <= tables
    assert db.execute("SELECT count(*) FROM event_object").fetchone() == (10,)
    assert db.execute("SELECT capacity FROM event_CourseDefined ORDER BY capacity").fetchall() == [(2,), (3,)]
    db.close()


async def test_ocel_export_of_an_event_store_makes_each_aggregate_an_object(
    store: eskit.EventStore, tmp_path: Path
) -> None:
    history = [eskit.Event("created", {"lines": [1, 2]}), eskit.Event("paid", {})]
    await store.append("order-1", history, expected_position=0)
    await eskit.to_ocel(store, tmp_path / "orders.json")
    doc = json.loads((tmp_path / "orders.json").read_text())
    check_ocel_json(doc)
    assert doc["objects"] == [{"id": "order-1", "type": store.name, "attributes": [], "relationships": []}]
    assert doc["events"][0]["attributes"] == [{"name": "lines", "value": "[1, 2]"}]


async def test_an_ocel_file_imports_into_a_dcb_store_once_and_exports_back_the_same_log(
    client: eskit.Client, nats_url: str, tmp_path: Path
) -> None:
    source = read_ocel(sample_ocel(tmp_path / "orders.jsonocel", orders=4))
    name = unique("ocel")
    env = {**os.environ, "NATS_URL": nats_url, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "eskit", "import", str(tmp_path / "orders.jsonocel"), "--dcb", name]
    try:
        first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        assert f"appended {len(source['events'])} " in first.stdout
        again = await eskit.import_ocel(client, tmp_path / "orders.jsonocel", name=name)
        assert (again.appended, again.already_stored) == (0, len(source["events"]))
        store = await client.dcb_store(name)
        assert store.layout.tag_keys == ("customer", "order")  # items: several per event, so not a subject slot
        placed = await store.read(Query([QueryItem(types=["place%20order"], tags=["customer:cust1"])]))
        assert placed and all("customer:cust1" in e.tags for e in placed)

        await eskit.to_ocel(store, tmp_path / "back.jsonocel")
        back = json.loads((tmp_path / "back.jsonocel").read_text())
        check_ocel_json(back)

        def relations(doc: dict[str, list[dict[str, object]]]) -> set[tuple[object, ...]]:
            return {
                (e["id"], e["type"], datetime.fromisoformat(str(e["time"])), r["objectId"], r["qualifier"])  # type: ignore[index]
                for e in doc["events"] for r in e["relationships"]  # type: ignore[attr-defined]
            }  # fmt: skip

        assert relations(back) == relations(source)
        assert sorted((o["id"], o["type"]) for o in back["objects"]) == sorted(
            (o["id"], o["type"]) for o in source["objects"]
        )
    finally:
        await client.delete_store(name)


async def test_a_malformed_ocel_file_is_one_line_of_error_and_nothing_is_stored(
    client: eskit.Client, nats_url: str, tmp_path: Path
) -> None:
    bad, name = tmp_path / "bad.jsonocel", unique("bad")
    event = {"id": "e1", "type": "x", "time": "2024-01-01T00:00:00Z", "relationships": [{"objectId": "o9"}]}
    bad.write_text(json.dumps({"objects": [], "events": [event]}))
    env = {**os.environ, "NATS_URL": nats_url, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "eskit", "import", str(bad), "--dcb", name],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert await client.delete_store(name) is False  # never created
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"eskit: error: {bad}: event 'e1' relates to object 'o9', which is not in 'objects'"
    ]


async def test_a_dcb_event_with_raw_bytes_and_untyped_tags_still_exports(client: eskit.Client, tmp_path: Path) -> None:
    name = unique("rawocel")
    store = await client.dcb_store(name)
    try:
        await store.append([TaggedEvent("Blob", b"\x00\x01", ["vip", "course:c1"]), TaggedEvent("Note", 7, [])])
        await eskit.to_ocel(store, tmp_path / "raw.jsonocel")
        doc = json.loads((tmp_path / "raw.jsonocel").read_text())
        check_ocel_json(doc)
        assert [a for e in doc["events"] for a in e["attributes"]] == [
            {"name": "data", "value": "0001"}, {"name": "data", "value": 7}
        ]  # fmt: skip
        assert {(o["id"], o["type"]) for o in doc["objects"]} == {("vip", "tag"), ("c1", "course")}
    finally:
        await client.delete_store(name)
