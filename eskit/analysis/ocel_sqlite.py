"""The OCEL 2.0 SQLite layout, written from an OCEL 2.0 JSON document (:func:`eskit.to_ocel` to ``.sqlite``).

>>> write_sqlite(Path("courses.sqlite"), document)                                 # doctest: +SKIP

Tables: ``event``, ``object``, ``event_object``, ``object_object``, the type maps, and one table per event
type and per object type (named from the type: letters, digits and ``_``, unique regardless of case).
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any


def _table(prefix: str, types: list[str]) -> dict[str, str]:
    """SQLite table names per type: letters, digits and ``_`` only, unique regardless of case."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for t in types:
        base = re.sub(r"[^A-Za-z0-9_]", "", t) or "Type"
        name, n = base, 2
        while name.casefold() in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name.casefold())
        out[t] = name
    return out


_SQL_TYPES = {"integer": "INTEGER", "float": "REAL", "boolean": "BOOLEAN", "string": "TEXT", "time": "TIMESTAMP"}


def write_sqlite(path: Path, doc: dict[str, Any]) -> None:
    """The OCEL 2.0 SQLite layout: event, object, event_object, object_object, the type maps, one table per
    event type and per object type."""
    db = sqlite3.connect(path)
    try:
        q = _quote
        db.execute("CREATE TABLE event (ocel_id TEXT PRIMARY KEY, ocel_type TEXT)")
        db.execute("CREATE TABLE object (ocel_id TEXT PRIMARY KEY, ocel_type TEXT)")
        db.execute("CREATE TABLE event_object (ocel_event_id TEXT, ocel_object_id TEXT, ocel_qualifier TEXT)")
        db.execute("CREATE TABLE object_object (ocel_source_id TEXT, ocel_target_id TEXT, ocel_qualifier TEXT)")
        db.execute("CREATE TABLE event_map_type (ocel_type TEXT, ocel_type_map TEXT)")
        db.execute("CREATE TABLE object_map_type (ocel_type TEXT, ocel_type_map TEXT)")
        event_tables = _table("event", [t["name"] for t in doc["eventTypes"]])
        object_tables = _table("object", [t["name"] for t in doc["objectTypes"]])
        db.executemany("INSERT INTO event_map_type VALUES (?, ?)", event_tables.items())
        db.executemany("INSERT INTO object_map_type VALUES (?, ?)", object_tables.items())
        for t in doc["eventTypes"]:
            columns = "".join(f", {q(a['name'])} {_SQL_TYPES[a['type']]}" for a in t["attributes"])
            db.execute(
                f"CREATE TABLE {q('event_' + event_tables[t['name']])} (ocel_id TEXT, ocel_time TIMESTAMP{columns})"
            )
        for t in doc["objectTypes"]:
            db.execute(
                f"CREATE TABLE {q('object_' + object_tables[t['name']])} "
                "(ocel_id TEXT, ocel_time TIMESTAMP, ocel_changed_field TEXT)"
            )
        db.executemany("INSERT INTO event VALUES (?, ?)", ((e["id"], e["type"]) for e in doc["events"]))
        db.executemany("INSERT INTO object VALUES (?, ?)", ((o["id"], o["type"]) for o in doc["objects"]))
        db.executemany(
            "INSERT INTO event_object VALUES (?, ?, ?)",
            ((e["id"], r["objectId"], r["qualifier"]) for e in doc["events"] for r in e["relationships"]),
        )
        for e in doc["events"]:
            names = ["ocel_id", "ocel_time", *(a["name"] for a in e["attributes"])]
            values = [e["id"], e["time"].replace("T", " ").replace("Z", ""), *(a["value"] for a in e["attributes"])]
            db.execute(
                f"INSERT INTO {q('event_' + event_tables[e['type']])} ({', '.join(map(q, names))}) "
                f"VALUES ({', '.join('?' * len(values))})",
                values,
            )
        for o in doc["objects"]:
            db.execute(
                f"INSERT INTO {q('object_' + object_tables[o['type']])} VALUES (?, ?, NULL)",
                (o["id"], "1970-01-01 00:00:00"),
            )
        db.commit()
    finally:
        db.close()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
