"""Stored messages that carry a ``Status`` header (as a server's status replies do) are events like any other.

Someone publishes an event with ``Status: 404`` (or 408, 204, 503, or ``100`` + ``Description: Idle
Heartbeat``, the headers of a server's status replies) into a store. A server status reply has a status
line (``NATS/1.0 404 No Messages``) and no ``Nats-Sequence``; a stored message has the header. Before the
fix, eskit told them apart by the ``Status`` key: reads stopped at such an event without an error (or every
read failed, for 503). Every read path is checked, with eskit's fast lane and with nats-py's ordinary path.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import unique

import eskit
from eskit import dcb_subscription
from eskit._nats import fastlane as _fastlane
from eskit._reader import READ_PAGE as PAGE
from eskit.dcb import Query, QueryItem, TaggedEvent
from eskit.events import encode_headers
from eskit.snapshots import SnapshotPolicy, bucket_name, key_for

STATUSES: dict[str, dict[str, str]] = {
    "404": {"Status": "404", "Description": "No Messages"},
    "408": {"Status": "408", "Description": "Request Timeout"},
    "204": {"Status": "204", "Description": "EOB", "Nats-Num-Pending": "0", "Nats-Last-Sequence": "0"},
    "503": {"Status": "503"},
    "100": {"Status": "100", "Description": "Idle Heartbeat"},  # and an empty payload: a heartbeat's
}
LANES = ["fast lane", "nats-py"]


@pytest.fixture(params=LANES)
async def hostile_client(
    request: pytest.FixtureRequest, nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[eskit.Client]:
    """A client of its own, with eskit's fast lane, or without (as with a nats-py whose internals differ)."""
    if request.param == "nats-py":
        monkeypatch.setattr(_fastlane, "available", lambda nc: False)
        monkeypatch.setattr(_fastlane, "route", lambda nc, sub, sink: False)
    async with await eskit.connect(nats_url) as c:
        yield c


def payload(status: str) -> bytes:
    return b"" if status == "100" else b'{"i": -1}'


async def publish_hostile(store: eskit.EventStore, aggregate_id: str, status: str) -> int:
    """An eskit event in every respect, published by someone else with a status reply's headers too."""
    headers = {**encode_headers(eskit.Event("a")), **STATUSES[status]}
    ack = await store.client.js.publish(f"{store.name}.{aggregate_id}.a", payload(status), headers=headers)
    return int(ack.seq)


class Tally(eskit.Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.seen: list[Any] = []

    @eskit.applies("a")
    def _a(self, data: Any) -> None:
        self.seen.append((data or {}).get("i"))


class Rows(eskit.Projection):
    schema = "CREATE TABLE seen (position INTEGER PRIMARY KEY)"

    @eskit.applies("a")
    def _a(self, db: Any, event: eskit.RecordedEvent) -> None:
        db.execute("INSERT INTO seen VALUES (?)", (event.position,))


async def fill(store: eskit.EventStore, status: str) -> tuple[list[int], list[int]]:
    """Over a page of events with three hostile ones in the middle (in a first Direct Get page, in what a
    consumer reads, near the end); every position, and those of aggregate ``a1`` (a hostile one last)."""
    positions: list[int] = []
    mine: list[int] = []
    for count in (1000, 1100, 150):
        appends = [(f"o{i % 50}" if i % 100 else "a1", [eskit.Event("a", {"i": i})], None) for i in range(count)]
        stored = await store.append_many(appends)
        positions += stored
        mine += [p for p, (agg, _, _) in zip(stored, appends, strict=True) if agg == "a1"]
        hostile = await publish_hostile(store, "a1", status)
        positions.append(hostile)
        mine.append(hostile)
    tail = await store.append_many([(f"o{i}", [eskit.Event("a", {"i": i})], None) for i in range(50)])
    return positions + tail, mine


@pytest.mark.parametrize("status", STATUSES)
async def test_a_stored_status_header_in_the_middle_of_a_store_truncates_no_read(
    hostile_client: eskit.Client, status: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eskit._reader, "BULK", 10)  # a replay past its first page reads by consumer
    store = await hostile_client.event_store(unique("status"))
    view = Rows(store, batch_size=500)
    try:
        everything, mine = await fill(store, status)
        assert everything == list(range(1, len(everything) + 1)) and len(everything) > PAGE + 100

        replayed = [e async for e in store.replay()]
        assert [e.position for e in replayed] == everything
        hostile = next(e for e in replayed if e.position == mine[-1])
        assert (hostile.type, hostile.raw, hostile.decode_error) == ("a", payload(status), None)
        filtered = [e.position async for e in store.replay(subjects=[f"{store.name}.a1.>", f"{store.name}.o1.>"])]
        assert set(mine) <= set(filtered) and filtered == sorted(filtered)

        assert [e.position for e in await store.read("a1")] == mine
        tally = await store.load(Tally, "a1")
        assert (tally.version, tally.position) == (len(mine), mine[-1])
        assert tally.seen.count(-1) == (0 if status == "100" else 3)  # the hostile ones' data (100: none)
        assert await store.last_position("a1") == mine[-1]  # the last event on a1 is a hostile one
        tally.record("a", {"i": 7})
        assert await store.save(tally) > everything[-1]  # loaded where it is: no ConcurrencyError

        df = await eskit.to_dataframe(store)
        assert df["position"].tolist() == [*everything, tally.position]
        near_end = await eskit.to_dataframe(store, after=mine[-1] - 5)  # Direct Get pages
        assert near_end["position"].tolist() == list(range(mine[-1] - 4, tally.position + 1))
        by_filter = await eskit.to_dataframe(store, subjects=[f"{store.name}.a1.>"])
        assert by_filter["position"].tolist() == [*mine, tally.position]

        assert await view.run_until_caught_up() == len(everything) + 1
        assert await view.rebuild() == len(everything) + 1
        seen = [p for (p,) in view.db.execute("SELECT position FROM seen ORDER BY position")]
        assert seen == [*everything, tally.position]
    finally:
        await view.close(delete_consumer=True)
        await hostile_client.delete_store(store.name)
        await hostile_client.delete_store(f"{store.name}_parked")


@pytest.mark.parametrize("status", STATUSES)
async def test_a_stored_status_header_hides_no_event_from_a_dcb_read_or_its_head(
    hostile_client: eskit.Client, status: str
) -> None:
    name = unique("course")
    courses = await hostile_client.dcb_store(name, tag_keys=("course", "student"))
    js = hostile_client.js
    enrolled = Query([QueryItem(types=["Enrolled"], tags=["course:c1"])])

    async def enrol(s: str) -> int:
        return await courses.append([TaggedEvent("Enrolled", {"s": s}, ["course:c1", f"student:{s}"])])

    async def enrol_hostile(s: str) -> int:  # a copy of s1's enrolment (its tags), other data
        headers = {**(original.headers or {}), **STATUSES[status], "Nats-Msg-Id": uuid.uuid4().hex}
        data = b"" if status == "100" else json.dumps({"s": s}).encode()  # 100: empty, as a heartbeat is
        ack = await js.publish(original.subject, data, headers=headers)
        return int(ack.seq)

    try:
        positions = [await enrol("s1"), await enrol("s2")]
        original = await js.get_msg(courses.stream, positions[0])
        positions += [await enrol_hostile("s3"), await enrol("s5"), await enrol_hostile("s4")]  # in the middle, last
        seen = await courses.read(enrolled)
        assert seen.head == positions[-1]
        assert [e.position for e in seen] == sorted(positions)
        expected = [
            {"s": s} if s in ("s1", "s2", "s5") or status != "100" else None for s in ("s1", "s2", "s3", "s5", "s4")
        ]
        assert [e.data for e in seen] == expected
        last = await courses.last(enrolled)
        assert last is not None and last.position == positions[-1]
        async with await courses.subscribe(enrolled, after=0) as following:  # nats-py's ordered consumer took
            followed = [(await asyncio.wait_for(anext(following), 5)).position for _ in positions]  # 100 for a
        assert followed == sorted(positions)  # heartbeat, dropped it and recreated itself at it, again and again
    finally:
        await hostile_client.delete_store(name)


async def test_a_dcb_subscription_goes_on_after_its_consumer_vanished(
    client: eskit.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dcb_subscription, "HEARTBEAT", 0.2)
    name = unique("course")
    courses = await client.dcb_store(name, tag_keys=("course", "student"))
    enrolled = Query([QueryItem(types=["Enrolled"], tags=["course:c1"])])
    try:
        first = await courses.append([TaggedEvent("Enrolled", {"s": "s1"}, ["course:c1", "student:s1"])])
        async with await courses.subscribe(enrolled, after=0) as following:
            assert (await asyncio.wait_for(anext(following), 5)).position == first
            await client.js.delete_consumer(courses.stream, following._consumer)  # as a server restart would
            second = await courses.append([TaggedEvent("Enrolled", {"s": "s2"}, ["course:c1", "student:s2"])])
            assert (await asyncio.wait_for(anext(following), 5)).position == second  # heartbeats stopped: reopened
    finally:
        await client.delete_store(name)


@pytest.mark.parametrize("status", ["404", "503"])  # the statuses a KV read answers with
async def test_a_snapshot_stored_with_a_status_header_is_still_found(hostile_client: eskit.Client, status: str) -> None:
    name = unique("snap")
    store = await hostile_client.event_store(name, snapshots=SnapshotPolicy(every=5))
    try:
        await store.append("a1", [eskit.Event("a", {"i": i}) for i in range(10)])
        await store.load(Tally, "a1")  # writes a snapshot at position 10
        bucket = bucket_name(name)
        key = f"$KV.{bucket}.{key_for(Tally, 'a1')}"
        stored = await hostile_client.js.get_last_msg(f"KV_{bucket}", key)
        revision = (await hostile_client.js.publish(key, stored.data, headers=STATUSES[status])).seq
        assert store.snapshots is not None
        lookup = await store.snapshots.find(Tally, "a1")
        assert lookup.revision == revision and lookup.snapshot is not None and lookup.snapshot.position == 10
        tally = await store.load(Tally, "a1")
        assert (tally.version, tally.position, tally.seen) == (10, 10, list(range(10)))
    finally:
        await hostile_client.delete_store(name)
