"""pyeventsourcing on NATS beyond the library's contract: what the mapping onto JetStream promises.

The contract itself: tests/test_eventsourcing_conformance.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from conftest import unique
from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.cipher import AESCipher
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import DataError, IntegrityError, OperationalError, StoredEvent, Tracking
from eventsourcing.system import ProcessApplication, SingleThreadedRunner, System

import eskit
from eskit.interop.eventsourcing import NatsApplicationRecorder, NatsProcessRecorder, NatsSubscription

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def recorder(nats_url: str) -> Iterator[NatsProcessRecorder]:
    r = NatsProcessRecorder(unique("esinterop"), url=nats_url)
    yield r
    r.close(delete_store=True)


def stored(originator: UUID | str, version: int, topic: str = "shop:Order.Created") -> StoredEvent:
    return StoredEvent(originator_id=originator, originator_version=version, topic=topic, state=b'{"n":1}')


def test_the_example_application_runs_on_nats_and_eskit_reads_what_it_wrote(nats_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "eventsourcing_app.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "NATS_URL": nats_url, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "{'name': 'Fido', 'tricks': ['roll over', 'play dead'], 'version': 3}" in proc.stdout
    rows = [line.split() for line in proc.stdout.splitlines() if "__main__:Dog." in line]
    assert [(r[0], r[2], r[3]) for r in rows] == [
        ("1", "__main__:Dog.Registered", "1"),
        ("2", "__main__:Dog.TrickAdded", "2"),
        ("3", "__main__:Dog.TrickAdded", "3"),
    ]


def test_str_ids_and_dotted_topics_come_back_as_they_went_in(recorder: NatsProcessRecorder) -> None:
    ids: list[UUID | str] = ["order 7.b/%2E", uuid4(), str(uuid4())]
    for originator in ids:
        recorder.insert_events([stored(originator, 1, "shop.orders:Order.Created")])
    notifications = recorder.select_notifications(None, 10)
    assert [n.originator_id for n in notifications] == ids
    assert [type(n.originator_id) for n in notifications] == [str, UUID, str]
    assert {n.topic for n in notifications} == {"shop.orders:Order.Created"}
    assert recorder.select_events("order 7.b/%2E")[0].originator_id == "order 7.b/%2E"
    assert recorder.select_notifications(None, 10, topics=["shop.orders:Order.Created"]) == notifications


def test_a_version_below_the_last_recorded_one_is_refused_even_when_it_is_free(
    recorder: NatsProcessRecorder,
) -> None:
    originator = uuid4()
    recorder.insert_events([stored(originator, 5)])
    with pytest.raises(IntegrityError, match="version 5 is recorded; version 3 is not after it"):
        recorder.insert_events([stored(originator, 3)])
    assert [e.originator_version for e in recorder.select_events(originator)] == [5]


def test_a_recorder_that_knew_an_older_last_event_is_judged_against_the_leader(
    recorder: NatsProcessRecorder, nats_url: str
) -> None:
    other = NatsApplicationRecorder(recorder.name, url=nats_url)  # another process, same store
    try:
        originator = uuid4()
        recorder.insert_events([stored(originator, 1)])
        assert [e.originator_version for e in other.select_events(originator)] == [1]
        recorder.insert_events([stored(originator, 2)])
        with pytest.raises(IntegrityError):  # other still knows version 1 at position 1; 2 is taken
            other.insert_events([stored(originator, 2)])
        assert other.insert_events([stored(originator, 3)]) == [3]
        assert [e.originator_version for e in recorder.select_events(originator)] == [1, 2, 3]
    finally:
        other.close()


def test_events_and_their_tracking_record_are_stored_together_or_not_at_all(recorder: NatsProcessRecorder) -> None:
    first, second = uuid4(), uuid4()
    assert recorder.insert_events([stored(first, 1)], tracking=Tracking("upstream", 4)) == [1]
    with pytest.raises(IntegrityError):  # tracking id 4 again: the event for `second` is not stored either
        recorder.insert_events([stored(second, 1)], tracking=Tracking("upstream", 4))
    assert recorder.select_events(second) == []
    assert recorder.max_tracking_id("upstream") == 4
    with pytest.raises(IntegrityError):  # version 1 of `first` again: tracking id 5 is not stored either
        recorder.insert_events([stored(first, 1)], tracking=Tracking("upstream", 5))
    assert recorder.max_tracking_id("upstream") == 4


def test_max_notification_id_and_notifications_skip_tracking_records(recorder: NatsProcessRecorder) -> None:
    recorder.insert_events([stored(uuid4(), 1)], tracking=Tracking("upstream", 1))  # positions 1 (event), 2
    assert recorder.max_notification_id() == 1
    recorder.insert_events([], tracking=Tracking("upstream", 2))  # position 3
    assert recorder.max_notification_id() == 1
    assert recorder.insert_events([stored(uuid4(), 1)]) == [4]
    assert [n.id for n in recorder.select_notifications(None, 10)] == [1, 4]
    assert [n.id for n in recorder.select_notifications(2, 1)] == [4]


class Account(Aggregate):
    @event("Opened")
    def __init__(self, owner: str) -> None:
        self.owner = owner


class Bank(Application[UUID]):
    pass


def test_an_application_with_compression_and_encryption_stores_opaque_states_and_reads_them_back(
    nats_url: str,
) -> None:
    env = {
        "PERSISTENCE_MODULE": "eskit.interop.eventsourcing", "NATS_URL": nats_url,
        "COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor", "CIPHER_KEY": AESCipher.create_key(16),
    }  # fmt: skip
    bank = Bank(env=env)
    try:
        account = Account("alice")
        bank.save(account)
        assert bank.repository.get(account.id).owner == "alice"
        (state,) = [n.state for n in bank.recorder.select_notifications(None, 10)]  # type: ignore[attr-defined]
        assert b"alice" not in state
    finally:
        bank.factory.portal.call(bank.factory.portal.client.delete_store, "bank_events")  # type: ignore[attr-defined]
        bank.close()


def test_the_stores_an_application_writes_are_ordinary_eskit_stores(nats_url: str) -> None:
    async def frame() -> list[str]:
        async with await eskit.connect(nats_url) as client:
            store = await client.event_store("bank_events")
            try:
                return list((await eskit.to_dataframe(store))["type"])
            finally:
                await client.delete_store("bank_events")

    bank = Bank(env={"PERSISTENCE_MODULE": "eskit.interop.eventsourcing", "NATS_URL": nats_url})
    try:
        bank.save(Account("bob"))
    finally:
        bank.close()
    assert asyncio.run(frame()) == [f"{__name__}:Account.Opened"]


class Opened(Aggregate):
    @event("Opened")
    def __init__(self, owner: str) -> None:
        self.owner = owner


class Tally(Aggregate):
    @event("Counted")
    def __init__(self, account_id: UUID) -> None:
        self.account_id = account_id


class Branch(Application[UUID]):
    pass


class Tallies(ProcessApplication[UUID]):
    def policy(self, domain_event: Any, processing_event: ProcessingEvent[UUID]) -> None:
        if isinstance(domain_event, Opened.Opened):  # type: ignore[attr-defined]
            processing_event.collect_events(Tally(domain_event.originator_id))


def test_a_process_application_follows_a_leader_on_nats_with_tracking_and_snapshots(nats_url: str) -> None:
    env = {"PERSISTENCE_MODULE": "eskit.interop.eventsourcing", "NATS_URL": nats_url, "IS_SNAPSHOTTING_ENABLED": "y"}
    runner: SingleThreadedRunner[UUID] = SingleThreadedRunner(System(pipes=[[Branch, Tallies]]), env=env)
    runner.start()
    try:
        branch, tallies = runner.get(Branch), runner.get(Tallies)
        ids = []
        for owner in ("ann", "bob", "cy"):
            account = Opened(owner)
            branch.save(account)
            ids.append(account.id)
        assert tallies.recorder.max_tracking_id("Branch") == branch.recorder.max_notification_id() == 3
        tallied = [n.originator_version for n in tallies.recorder.select_notifications(None, 10)]
        assert tallied == [1, 1, 1]
        assert [n.id for n in tallies.recorder.select_notifications(None, 10)] == [1, 3, 5]  # 2, 4, 6: tracking
        branch.take_snapshot(ids[0])
        (snapshot,) = branch.snapshots.get(ids[0])  # type: ignore[union-attr]
        assert snapshot.originator_version == 1 and branch.repository.get(ids[0]).owner == "ann"
    finally:
        runner.stop()
        asyncio.run(drop(nats_url, "branch_events", "branch_snapshots", "tallies_events", "tallies_snapshots"))


async def drop(url: str, *names: str) -> None:
    async with await eskit.connect(url) as client:
        for name in names:
            await client.delete_store(name)


def test_an_insert_bigger_than_one_atomic_batch_is_refused_before_anything_is_sent(
    recorder: NatsProcessRecorder,
) -> None:
    originator = uuid4()
    with pytest.raises(DataError, match=r"1001 records in one insert .* at most 1000"):
        recorder.insert_events([stored(originator, v) for v in range(1, 1001)], tracking=Tracking("up", 1))
    assert recorder.max_notification_id() is None and recorder.max_tracking_id("up") is None


def test_with_create_table_off_a_missing_store_is_an_operational_error_that_says_so(nats_url: str) -> None:
    recorder = NatsApplicationRecorder(unique("esmissing"), url=nats_url, create=False)
    try:
        with pytest.raises(OperationalError, match="no stream listens on"):
            recorder.insert_events([stored(uuid4(), 1)])
    finally:
        recorder.close()


def test_a_subscription_catching_up_holds_at_most_max_queued_notifications_in_memory(
    recorder: NatsProcessRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(6):
        recorder.insert_events([stored(uuid4(), 1) for _ in range(50)])
    monkeypatch.setattr(NatsSubscription, "max_queued", 20)
    most, ids = 0, []
    with recorder.subscribe(gt=0) as subscription:
        for notification in subscription:
            most = max(most, subscription._queue.qsize())
            ids.append(notification.id)
            if len(ids) == 300:
                break
    assert ids == list(range(1, 301))
    assert most <= 20


def test_racing_writers_on_two_connections_never_store_one_version_twice(
    recorder: NatsProcessRecorder, nats_url: str
) -> None:
    other = NatsApplicationRecorder(recorder.name, url=nats_url)
    originator: UUID = uuid4()
    wins: list[tuple[NatsApplicationRecorder, int, int]] = []

    def writer(r: NatsApplicationRecorder, n: int) -> None:
        for _ in range(200):  # bounded: each writer wins n times or gives up
            if sum(1 for w in wins if w[0] is r and w[1] == n) >= 5:
                return
            last = r.select_events(originator, desc=True, limit=1)
            version = last[0].originator_version + 1 if last else 1
            try:
                r.insert_events([stored(originator, version)])
                wins.append((r, n, version))
            except IntegrityError:
                continue  # another writer took this version: read again

    try:
        with ThreadPoolExecutor(4) as pool:
            jobs = [pool.submit(writer, r, n) for n, r in enumerate([recorder, other, recorder, other])]
        for job in jobs:
            job.result()  # a writer's unexpected error fails the test
        versions = [e.originator_version for e in recorder.select_events(originator)]
        assert sorted(w[2] for w in wins) == versions == list(range(1, 21))
    finally:
        other.close()


def test_readers_pass_over_messages_someone_else_appended_to_a_recorders_store(
    recorder: NatsProcessRecorder,
) -> None:
    originator = uuid4()
    recorder.insert_events([stored(originator, 1)])

    async def append_by_hand() -> None:
        async with await eskit.connect(os.environ["NATS_URL"]) as client:
            store = await client.event_store(recorder.name)
            await store.append(str(originator), [eskit.Event("note", {"by": "hand"})])

    asyncio.run(append_by_hand())
    assert [n.id for n in recorder.select_notifications(None, 10)] == [1]
    assert [e.originator_version for e in recorder.select_events(originator)] == [1]
    with pytest.raises(OperationalError, match="was not written by a recorder"):
        recorder.insert_events([stored(originator, 2)])


def test_readers_pass_over_messages_with_a_version_or_originator_no_recorder_writes_instead_of_raising(
    recorder: NatsProcessRecorder,
) -> None:
    originator = uuid4()
    recorder.insert_events([stored(originator, 1)])
    version = "Eskit-Meta-Originator-Version"
    hostile = [(str(originator), {version: "abc"}), (str(originator), {version: "9" * 5000}),
               (str(originator), {version: "²"}), ("not-a-uuid", {version: "2"})]  # fmt: skip

    async def publish_by_hand() -> None:
        async with await eskit.connect(os.environ["NATS_URL"]) as client:
            for token, headers in hostile:  # as someone else's publisher would
                await client.js.publish(f"{recorder.name}.{token}.shop:Order%2ECreated", b"{}", headers=headers)

    asyncio.run(publish_by_hand())
    recorder.insert_events([stored(uuid4(), 1)])
    assert [n.id for n in recorder.select_notifications(None, 10)] == [1, 6]  # raised ValueError before
    assert [e.originator_version for e in recorder.select_events(originator)] == [1]
    with recorder.subscribe(gt=None) as following:
        assert [next(following).id for _ in range(2)] == [1, 6]
