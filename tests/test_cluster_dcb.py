"""DCB decisions on a 3-node cluster: 16 writers, each on its own connection, enrol and unenrol students.

Rules (each decided on a ``read(query)`` and appended with ``AppendCondition(query, after=seen.head)``):
at most ``CAPACITY`` students per course, at most ``PER_STUDENT`` courses per student, no unenrolment of
someone who is not enrolled, no enrolment twice. A noise writer appends to another course meanwhile (it makes
followers lag). Direct Get reads are answered by *any* replica, and a
follower may lag the leader that checks the condition; eskit must never decide on such a view. And the
leader checks a condition only against the messages it has applied, not those still in their Raft proposal
(see the append lock in :mod:`eskit.dcb`). The whole history is replayed afterwards and every rule checked
at every position.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator

import pytest
from conftest import unique

import eskit
from eskit._nats.wire import TooManySubjectsError
from eskit.cluster import EmbeddedCluster
from eskit.dcb import AppendCondition, DCBStore, Query, QueryItem, SequencedEvent, TaggedEvent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

WRITERS, RUNS, DECISIONS = 16, 3, 60
COURSES, STUDENTS, CAPACITY, PER_STUDENT = 4, 12, 3, 2
NOISE_ROUNDS = 5_000  # a bound: the noise stops when the writers are done
TYPES = ["Enrolled", "Unenrolled"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(3) as c:
        yield c


def enrolment(events: list[SequencedEvent]) -> dict[tuple[str, str], bool]:
    """(student, course) -> enrolled now, from Enrolled/Unenrolled events in order."""
    state: dict[tuple[str, str], bool] = {}
    for e in events:
        state[(e.data["student"], e.data["course"])] = e.type == "Enrolled"
    return state


async def decide_once(store: DCBStore, student: str, course: str, rng: random.Random) -> str:
    """One read-decide-append; returns what happened (``conflict`` if the boundary moved)."""
    mine = [f"student:{student}", f"course:{course}"]
    if rng.random() < 0.45:  # unenrol: the boundary is this student in this course
        query = Query([QueryItem(TYPES, mine)])
        seen = await store.read(query)
        if not enrolment(list(seen)).get((student, course)):
            return "refused"
        event = TaggedEvent("Unenrolled", {"student": student, "course": course}, mine)
    else:  # enrol: the boundary is the course and the student
        query = Query([QueryItem(TYPES, [f"course:{course}"]), QueryItem(TYPES, [f"student:{student}"])])
        seen = await store.read(query)
        now = enrolment(list(seen))
        in_course = sum(1 for (_, c), on in now.items() if on and c == course)
        of_student = sum(1 for (s, _), on in now.items() if on and s == student)
        if now.get((student, course)) or in_course >= CAPACITY or of_student >= PER_STUDENT:
            return "refused"
        event = TaggedEvent("Enrolled", {"student": student, "course": course}, mine)
    try:
        await store.append([event], AppendCondition(query, after=seen.head))
    except eskit.AppendConditionError:
        return "conflict"
    return "appended"


async def writer(url: str, name: str, seed: int) -> Counter[str]:
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    async with await eskit.connect(url) as client:
        store = await client.dcb_store(name, tag_keys=("course", "student"))
        for _ in range(DECISIONS):
            student, course = f"s{rng.randrange(STUDENTS)}", f"c{rng.randrange(COURSES)}"
            outcomes[await decide_once(store, student, course, rng)] += 1
        outcomes["lagged reads"] = store.lagged
    return outcomes


async def noise(url: str, name: str, stop: asyncio.Event) -> int:
    """Other writers' traffic on the same stream (another course), so that followers lag behind."""
    appended = 0
    async with await eskit.connect(url) as client:
        store = await client.dcb_store(name)
        for _ in range(NOISE_ROUNDS):
            if stop.is_set():
                break
            batch = [TaggedEvent("Noise", {"n": appended + i}, ["course:other"]) for i in range(20)]
            await asyncio.gather(*(store.append([e]) for e in batch))
            appended += len(batch)
    return appended


def violations(history: list[SequencedEvent]) -> list[str]:
    """Every rule broken anywhere in the history, replayed in position order."""
    found = []
    enrolled: dict[tuple[str, str], bool] = defaultdict(bool)
    for e in history:
        key = (e.data["student"], e.data["course"])
        if e.type == "Enrolled" and enrolled[key]:
            found.append(f"{e.position}: {key} enrolled twice")
        if e.type == "Unenrolled" and not enrolled[key]:
            found.append(f"{e.position}: {key} unenrolled without being enrolled")
        enrolled[key] = e.type == "Enrolled"
        per_course = sum(1 for (_, c), on in enrolled.items() if on and c == key[1])
        per_student = sum(1 for (s, _), on in enrolled.items() if on and s == key[0])
        if per_course > CAPACITY:
            found.append(f"{e.position}: course {key[1]} has {per_course} students")
        if per_student > PER_STUDENT:
            found.append(f"{e.position}: student {key[0]} is in {per_student} courses")
    return found


@pytest.mark.parametrize("run", range(RUNS))
async def test_sixteen_writers_on_a_cluster_never_break_a_dcb_invariant_though_replicas_lag(
    cluster: EmbeddedCluster, run: int
) -> None:
    name = unique("enrol")
    async with await eskit.connect(cluster.url) as client:
        store = await client.dcb_store(name, tag_keys=("course", "student"))
        try:
            started, stop = time.monotonic(), asyncio.Event()
            noisy = asyncio.create_task(noise(cluster.url, name, stop))
            results = await asyncio.gather(*(writer(cluster.url, name, run * 100 + w) for w in range(WRITERS)))
            stop.set()
            await noisy
            total = sum(results, Counter[str]())
            await asyncio.to_thread(cluster.wait_in_sync, store.stream, 30)
            history = [e for e in await store.read() if e.type != "Noise"]
            print(f"\nrun {run}: {dict(total)} in {time.monotonic() - started:.1f}s, {len(history)} events")
            assert sum(total.values()) - total["lagged reads"] == WRITERS * DECISIONS
            assert total["appended"] == len(history) > 0
            assert violations(history) == []
        finally:
            await client.delete_store(name)


async def test_two_conditional_appends_in_flight_together_with_overlapping_but_different_filters_never_both_land(
    cluster: EmbeddedCluster,
) -> None:
    """The leader checks a wildcard filter against the messages it has *applied*: one still in its Raft
    proposal is invisible to a check spelled differently (it only blocks a check on the same string).

    Two writers decide at once to enrol a student in a course, one on (course OR student) and one on the course
    alone: their filters overlap (both hold the enrolment) but differ. Sent at once, both used to land in
    some rounds. Exactly one may, every time.
    """
    name, rounds, broken = unique("inflight"), 40, list[str]()
    async with await eskit.connect(cluster.url) as client:
        wide = await client.dcb_store(name, tag_keys=("course", "student"))
        narrow = await client.dcb_store(name)  # another writer: its own view of the filters' last positions
        try:
            assert wide.replicas == 3
            for r in range(rounds):
                course, student = f"c{r}", f"student:s{r % 2}"
                enrol = [f"course:{course}", student]
                both = Query([QueryItem(TYPES, [f"course:{course}"]), QueryItem(TYPES, [student])])
                alone = Query([QueryItem(TYPES, [f"course:{course}"])])
                seen_both, seen_alone = await asyncio.gather(wide.read(both), narrow.read(alone))
                outcomes = await asyncio.gather(
                    wide.append([TaggedEvent("Enrolled", {"w": 1}, enrol)], AppendCondition(both, seen_both.head)),
                    narrow.append([TaggedEvent("Enrolled", {"w": 2}, enrol)], AppendCondition(alone, seen_alone.head)),
                    return_exceptions=True,
                )
                landed = sum(isinstance(o, int) for o in outcomes)
                refused = sum(isinstance(o, eskit.AppendConditionError) for o in outcomes)
                if (landed, refused) != (1, 1):
                    broken.append(f"round {r}: {outcomes}")
            assert broken == [], f"{len(broken)} of {rounds} rounds"
            await asyncio.to_thread(cluster.wait_in_sync, wide.stream, 30)
            assert len(await wide.read(Query([QueryItem(["Enrolled"])]))) == rounds
        finally:
            await client.delete_store(name)


async def test_a_condition_check_aimed_at_a_position_that_vanished_asks_the_leader_instead_of_waiting(
    cluster: EmbeddedCluster,
) -> None:
    """A store deleted and created again: positions this DCBStore remembers no longer exist anywhere."""
    name, query = unique("gone"), Query([QueryItem(TYPES, ["course:c1"])])
    async with await eskit.connect(cluster.url) as client:
        store = await client.dcb_store(name, tag_keys=("course", "student"))
        try:
            for student in ("s1", "s2", "s3"):
                await store.append([TaggedEvent("Enrolled", {}, ["course:c1", f"student:{student}"])])
            assert (await store.read(query)).head == 3  # remembers position 3 on the course's filter
            await client.delete_store(name)
            await client.dcb_store(name, tag_keys=("course", "student"))
            await store.append([TaggedEvent("Enrolled", {}, ["course:c2", "student:s1"])])
            started = time.monotonic()
            enrol = TaggedEvent("Enrolled", {}, ["course:c1", "student:s1"])
            position = await store.append([enrol], AppendCondition(query, after=0))
            assert time.monotonic() - started < 2, "waited for the replicas to reach a position that is gone"
            assert [e.position for e in await store.read(query)] == [position]
        finally:
            await client.delete_store(name)


async def test_a_replicated_read_whose_filters_span_more_than_1024_subjects_proves_its_head_through_the_leader(
    client: eskit.Client,
) -> None:
    """One server, but the store treated as replicated: the proof runs, and its fallback gives the same read."""
    name, query = unique("wide"), Query([QueryItem(TYPES, ["course:c1"])])
    plain = await client.dcb_store(name, tag_keys=("course", "student"))
    try:
        for chunk in range(0, 1100, 100):  # 1,100 students: 1,100 subjects on the course's filter
            await asyncio.gather(*(
                plain.append([TaggedEvent("Enrolled", {"n": n}, ["course:c1", f"student:s{n}"])])
                for n in range(chunk, chunk + 100)
            ))  # fmt: skip
        await plain.append([TaggedEvent("Enrolled", {}, ["course:c2", "student:s1"])])
        with pytest.raises(TooManySubjectsError):  # the server answers multi_last for at most 1,024 subjects
            await client.wire.direct_last_per_subject(plain.stream, plain.layout.filters(query), start=1, up_to=1101)
        proven = DCBStore(client, plain.layout, plain.stream, replicas=3)
        expected, seen = await plain.read(query), await proven.read(query)
        assert [e.position for e in seen] == [e.position for e in expected] and len(seen) == 1100
        assert seen.head == expected.head == 1101
        narrow = Query([QueryItem(TYPES, ["course:c1", "student:s7"])])
        assert [e.position for e in await proven.read(narrow)] == [e.position for e in await plain.read(narrow)]
        assert proven.lagged == 0
    finally:
        await client.delete_store(name)
