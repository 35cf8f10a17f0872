"""Object-centric event logs (OCEL 2.0): a store's events with the objects they touch, out and back in.

>>> await eskit.to_ocel(courses, "courses.jsonocel")        # a DCB store: objects from tags   # doctest: +SKIP
OcelResult(path=PosixPath('courses.jsonocel'), events=9, objects=5, relations=14)
>>> await eskit.to_ocel(orders, "orders.sqlite")            # an event store: objects from aggregates  # doctest: +SKIP
>>> await eskit.import_ocel(courses_copy, "courses.jsonocel")                                   # doctest: +SKIP

**Export** (``to_ocel``; JSON for ``.json``/``.jsonocel``, SQLite for ``.sqlite``/``.sqlite3``/``.db``, both
in the OCEL 2.0 standard layout that pm4py's ``read_ocel2_json``/``read_ocel2_sqlite`` read):

- a DCB event's tag ``course:c1`` is object ``c1`` of type ``course``, related to the event with qualifier
  ``course`` (a tag without a ``:`` is an object of type ``tag``); an event store's aggregate ``order-7`` is
  object ``order-7`` of type ``<store name>``. An id used by objects of two types becomes ``type:id``;
- the event's type is the type (``%XX`` escapes undone), its id the stored event id (else ``<store>-<position>``),
  its time ``occurred_at`` if the writer set one (or ``ocel:time`` in its data), else when it was stored;
- the event data's keys are its attributes (nested values as JSON text; data that is not an object: ``data``).

**Import** (``import_ocel``, ``python -m eskit import FILE.jsonocel --dcb NAME``) appends each OCEL event
to a DCB store as a tagged event: tags ``<object type>:<object id>``, data = its attributes plus ``ocel:time``
(and ``ocel:qualifiers`` where a qualifier is not the object's type), id = the OCEL event id. Re-importing
adds nothing: events whose id the store holds are skipped. A new store gets as ``tag_keys`` the object types
no event relates to twice. Object attributes and object-to-object relations are not imported (a DCB store
has events only); the result says how many were left out.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._nats.wire import StoredMsg
from ..dcb.query import MAX_BATCH, RAW, TAGS, TaggedEvent
from ..dcb.store import DCBStore
from ..errors import EventLogError, ValidationError
from ..events import MSG_ID, OCCURRED_AT, parse_time, subject_parts
from ..store import EventStore
from .eventlog import decode_token, encode_token
from .ocel_sqlite import write_sqlite
from .samples import sample_ocel as sample_ocel  # eskit.ocel.sample_ocel, as before

if TYPE_CHECKING:
    from ..connection import Client
    from ..privacy import Privacy

TIME = "ocel:time"
QUALIFIERS = "ocel:qualifiers"
TAG_TYPE = "tag"
JSON_SUFFIXES = (".json", ".jsonocel")
SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
IMPORT_BATCH = 200  # events per atomic append


@dataclass(frozen=True, slots=True)
class OcelResult:
    """What an OCEL export wrote: events, objects and event-to-object relations."""

    path: Path
    events: int
    objects: int
    relations: int


@dataclass(frozen=True, slots=True)
class OcelImportResult:
    """What an OCEL import did: events in the file, appended, already stored; what it could not keep."""

    events: int
    appended: int
    already_stored: int
    object_attributes_skipped: int
    object_relations_skipped: int


@dataclass(slots=True)
class _Log:
    events: list[dict[str, Any]] = field(default_factory=list)
    objects: dict[tuple[str, str], None] = field(default_factory=dict)  # (type, id), in first-seen order


# -- export ------------------------------------------------------------------------------------------------


async def to_ocel(source: DCBStore | EventStore, path: str | Path, *, overwrite: bool = False) -> OcelResult:
    """Write the events of a DCB store (objects from tags) or an event store (objects from aggregates) as
    OCEL 2.0 to ``path`` (``.jsonocel``/``.json``: JSON; ``.sqlite``: SQLite); see the module doc.

    >>> await eskit.to_ocel(courses, "courses.jsonocel")                     # doctest: +SKIP
    """
    path = Path(path)
    kind = _kind(path)
    if path.exists() and not overwrite:
        raise ValidationError(f"{path} exists: pass overwrite=True to replace it, or give another path")
    log = await _collect(source)
    ids = _object_ids(log.objects)
    relations = 0
    for event in log.events:
        event["relationships"] = [
            {"objectId": ids[(t, o)], "qualifier": q} for t, o, q in dict.fromkeys(event.pop("objects"))
        ]
        relations += len(event["relationships"])
    objects = [{"id": ids[key], "type": key[0], "attributes": [], "relationships": []} for key in log.objects]
    document = {
        "objectTypes": [{"name": t, "attributes": []} for t in dict.fromkeys(t for t, _ in log.objects)],
        "eventTypes": _event_types(log.events),
        "objects": objects,
        "events": log.events,
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if kind == "json":
            tmp.write_text(json.dumps(document, ensure_ascii=False, default=str), encoding="utf-8")
        else:
            write_sqlite(tmp, document)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return OcelResult(path, len(log.events), len(objects), relations)


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in JSON_SUFFIXES:
        return "json"
    if suffix in SQLITE_SUFFIXES:
        return "sqlite"
    raise ValidationError(f"{path.name}: name it .jsonocel or .json (OCEL 2.0 JSON), or .sqlite (OCEL 2.0 SQLite)")


async def _collect(source: DCBStore | EventStore) -> _Log:
    log = _Log()
    dcb = source if isinstance(source, DCBStore) else None
    privacy = source.privacy if isinstance(source, EventStore) else None
    async for page in source.reader.pages(f"{source.name}.>", 0, None):
        messages = page.messages if privacy is None else await _revealed(privacy, page.messages)
        for m in messages:
            if dcb is not None and dcb.layout.is_carrier(m.subject):
                continue
            log.events.append(_event(source.name, m.seq, m.subject, m.headers, m.data, dcb is not None, log))
    seen: set[str] = set()
    for event in log.events:  # ids must be unique in OCEL
        if event["id"] in seen:
            event["id"] = f"{event['id']}-{event.pop('_position')}"
        else:
            event.pop("_position")
        seen.add(event["id"])
    return log


async def _revealed(privacy: Privacy, messages: list[StoredMsg]) -> list[StoredMsg]:
    """Messages of a store opened with ``privacy=``: personal fields decrypted, or FORGOTTEN (eskit.privacy)."""
    datas, _ = await privacy.revealed_messages(messages)
    declared = privacy.personal.fields
    return [
        StoredMsg(m.seq, m.subject, m.headers, json.dumps(d).encode())
        if isinstance(d, dict) and subject_parts(m.subject)[1] in declared
        else m
        for m, d in zip(messages, datas, strict=True)
    ]


def _event(
    store: str, position: int, subject: str, headers: Mapping[str, str], data: bytes, dcb: bool, log: _Log
) -> dict[str, Any]:
    if dcb:
        parts = subject.split(".")
        event_type = parts[1] if len(parts) > 1 else ""
        tags = json.loads(headers.get(TAGS, "[]"))
        objects = [_tag_object(str(tag)) for tag in tags]
    else:
        aggregate, event_type = subject_parts(subject)
        objects = [(store, decode_token(aggregate), store)]
    value: Any = None
    if headers.get(RAW):
        value = data.hex()
    elif data:
        try:
            value = json.loads(data)
        except ValueError:
            value = data.decode("utf-8", "replace")
    attributes = dict(value) if isinstance(value, dict) else ({} if value is None else {"data": value})
    when = attributes.pop(TIME, None) or headers.get(OCCURRED_AT) or headers.get("Nats-Time-Stamp")
    qualifiers = attributes.pop(QUALIFIERS, None)
    if isinstance(qualifiers, dict):
        objects = [(t, o, str(qualifiers.get(o, q))) for t, o, q in objects]
    for t, o, _ in objects:
        log.objects.setdefault((t, o), None)
    return {
        "id": headers.get(MSG_ID) or f"{store}-{position}",
        "_position": position,
        "type": decode_token(event_type),
        "time": _iso(when),
        "attributes": [{"name": k, "value": _scalar(v)} for k, v in attributes.items()],
        "objects": objects,
    }


def _tag_object(tag: str) -> tuple[str, str, str]:
    key, sep, value = tag.partition(":")
    if not sep or not key or not value:
        return (TAG_TYPE, tag, TAG_TYPE)
    return (key, value, key)


def _iso(value: Any) -> str:
    when = parse_time(str(value)) if value else None
    if when is None:
        when = datetime(1970, 1, 1, tzinfo=UTC)
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _object_ids(objects: Mapping[tuple[str, str], None]) -> dict[tuple[str, str], str]:
    """Object ids, unique across types: an id two types use becomes ``type:id``."""
    types: dict[str, set[str]] = {}
    for t, o in objects:
        types.setdefault(o, set()).add(t)
    return {(t, o): (o if len(types[o]) == 1 else f"{t}:{o}") for t, o in objects}


def _type_of(values: list[Any]) -> str:
    kinds = {type(v) for v in values if v is not None}
    if kinds and kinds <= {bool}:
        return "boolean"
    if kinds and kinds <= {int}:
        return "integer"
    if kinds and kinds <= {int, float}:
        return "float"
    return "string"


def _event_types(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    values: dict[str, dict[str, list[Any]]] = {}
    for e in events:
        names = values.setdefault(e["type"], {})
        for a in e["attributes"]:
            names.setdefault(a["name"], []).append(a["value"])
    for e in events:  # a value of a "string" attribute is a string
        kinds = {n: _type_of(v) for n, v in values[e["type"]].items()}
        for a in e["attributes"]:
            if kinds[a["name"]] == "string" and a["value"] is not None and not isinstance(a["value"], str):
                a["value"] = _scalar(a["value"]) if not isinstance(a["value"], bool | int | float) else str(a["value"])
    return [
        {"name": t, "attributes": [{"name": n, "type": _type_of(v)} for n, v in names.items()]}
        for t, names in values.items()
    ]


# -- import ------------------------------------------------------------------------------------------------


def read_ocel(path: str | Path) -> dict[str, Any]:
    """An OCEL 2.0 JSON file, checked: events with id, type, time; relations to declared objects."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EventLogError(f"{path}: not an OCEL 2.0 JSON file ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("events"), list) or not isinstance(doc.get("objects"), list):
        raise EventLogError(f"{path}: not an OCEL 2.0 JSON file (no 'events' and 'objects' lists)")
    types = {}
    for o in doc["objects"]:
        if not isinstance(o, dict) or not o.get("id") or not o.get("type"):
            raise EventLogError(f"{path}: object {o!r} has no id or type")
        types[str(o["id"])] = str(o["type"])
    for e in doc["events"]:
        if not isinstance(e, dict) or not e.get("id") or not e.get("type") or not e.get("time"):
            raise EventLogError(f"{path}: event {str(e)[:80]} has no id, type or time")
        if parse_time(str(e["time"]).replace("Z", "+00:00")) is None:
            raise EventLogError(f"{path}: event {e['id']!r} has time {e['time']!r}, not ISO 8601")
        for r in e.get("relationships") or []:
            if str(r.get("objectId")) not in types:
                raise EventLogError(
                    f"{path}: event {e['id']!r} relates to object {r.get('objectId')!r}, which is not in 'objects'"
                )
    return dict(doc)


def _tagged(doc: dict[str, Any]) -> list[TaggedEvent]:
    types = {str(o["id"]): str(o["type"]) for o in doc["objects"]}
    events = sorted(doc["events"], key=lambda e: (parse_time(str(e["time"]).replace("Z", "+00:00")), str(e["id"])))
    out = []
    for e in events:
        data: dict[str, Any] = {str(a["name"]): a.get("value") for a in e.get("attributes") or []}
        data[TIME] = str(e["time"])
        tags, qualifiers = [], {}
        for r in e.get("relationships") or []:
            oid = str(r["objectId"])
            tags.append(f"{types[oid]}:{oid}")
            if r.get("qualifier") and r["qualifier"] != types[oid]:
                qualifiers[oid] = str(r["qualifier"])
        if qualifiers:
            data[QUALIFIERS] = qualifiers
        try:
            out.append(TaggedEvent(encode_token(str(e["type"])), data, list(dict.fromkeys(tags)), id=str(e["id"])))
        except EventLogError as exc:
            raise EventLogError(f"event {e['id']!r}: {exc}") from exc
    return out


def single_keys(events: list[TaggedEvent]) -> tuple[str, ...]:
    """Object types no event relates to twice: they can be subject slots (``tag_keys``) of a DCB store."""
    seen: dict[str, bool] = {}
    for e in events:
        keys = [t.partition(":")[0] for t in e.tags]
        for k in keys:
            seen[k] = seen.get(k, True) and keys.count(k) == 1
    return tuple(sorted(k for k, once in seen.items() if once and re.fullmatch(r"[A-Za-z0-9_-]+", k)))


async def import_ocel(store: DCBStore | Client, path: str | Path, *, name: str | None = None) -> OcelImportResult:
    """Append the events of an OCEL 2.0 JSON file to a DCB store; see the module doc. Given a client and
    ``name``, the store is opened (created with ``tag_keys`` = the object types no event relates to twice).

    >>> await eskit.import_ocel(client, "orders.jsonocel", name="orders_ocel")     # doctest: +SKIP
    """
    doc = read_ocel(path)
    events = _tagged(doc)
    if not isinstance(store, DCBStore):
        if not name:
            raise ValidationError("import_ocel(client, path, name='store'): name the DCB store to import into")
        store = await store.dcb_store(name, tag_keys=None if await _exists(store, name) else single_keys(events))
    stored = {e.id for e in await store.read()}
    todo = [e for e in events if e.id not in stored]
    for i in range(0, len(todo), min(IMPORT_BATCH, MAX_BATCH)):
        await store.append(todo[i : i + IMPORT_BATCH])
    attributes = sum(len(o.get("attributes") or []) for o in doc["objects"])
    o2o = sum(len(o.get("relationships") or []) for o in doc["objects"])
    return OcelImportResult(len(events), len(todo), len(events) - len(todo), attributes, o2o)


async def _exists(client: Client, name: str) -> bool:
    from ..streams import stream_name

    stream = stream_name(client.store_name(name))  # in a learner namespace: <learner>_<name>
    reply = json.loads((await client.wire.request(f"$JS.API.STREAM.INFO.{stream}", b"")).data)
    return "error" not in reply
