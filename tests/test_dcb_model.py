"""The DCB store against an independent model: pyeventsourcing's in-memory DCB recorder.

Random appends (with random conditions) and random reads must give the same outcomes on both: same
accepted/refused decisions, same events read back, in the same order. Odd tag values included.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from conftest import unique
from eventsourcing.dcb.api import DCBAppendCondition, DCBEvent, DCBQuery, DCBQueryItem
from eventsourcing.dcb.popo import InMemoryDCBRecorder
from eventsourcing.persistence import IntegrityError
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import eskit
from eskit.dcb import AppendCondition, DCBStore, Query, QueryItem, TaggedEvent

TYPES = ["A", "B", "C"]
COURSES, STUDENTS, OTHER = ["course:c1", "course:a.b *>"], ["student:s1", "student:"], ["x", "y:z", "x y"]
EXAMPLES = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

event_tags = st.tuples(
    st.lists(st.sampled_from(COURSES), max_size=1),
    st.lists(st.sampled_from(STUDENTS), max_size=1),
    st.lists(st.sampled_from(OTHER), max_size=2, unique=True),
).map(lambda parts: [t for part in parts for t in part])
events = st.lists(
    st.builds(TaggedEvent, st.sampled_from(TYPES), st.just({}), event_tags), min_size=1, max_size=3
)
items = st.builds(
    QueryItem,
    st.lists(st.sampled_from(TYPES), max_size=2, unique=True),
    st.lists(st.sampled_from(COURSES + STUDENTS + OTHER), max_size=2, unique=True),
)
queries = st.lists(items, max_size=3).map(Query)


@dataclass
class Model:
    recorder: InMemoryDCBRecorder = field(default_factory=InMemoryDCBRecorder)
    positions: list[int] = field(default_factory=list)  # our position of the model's n-th event

    def after(self, position: int | None) -> int | None:
        return None if position is None else bisect_right(self.positions, position)


def dcb(query: Query) -> DCBQuery:
    return DCBQuery([DCBQueryItem(list(i.types), list(i.tags)) for i in query.items])


@pytest.fixture
async def store(client: eskit.Client) -> AsyncIterator[DCBStore]:
    name = unique("model")
    yield await client.dcb_store(name, tag_keys=["course", "student"])
    await client.delete_store(name)


@pytest.fixture
def model() -> Model:
    return Model()


@given(
    new=events, condition=queries, back=st.integers(0, 5) | st.none(), read=queries, skip=st.integers(0, 8)
)
@EXAMPLES
async def test_appends_and_reads_agree_with_pyeventsourcings_in_memory_recorder(
    store: DCBStore,
    model: Model,
    new: list[TaggedEvent],
    condition: Query,
    back: int | None,
    read: Query,
    skip: int,
) -> None:
    head = model.positions[-1] if model.positions else 0
    after = None if back is None else max(0, head - back)
    try:
        position = await store.append(new, AppendCondition(condition, after))
    except eskit.AppendConditionError:
        position = None
    try:
        model.recorder.append([DCBEvent(e.type, b"", list(e.tags)) for e in new],
                              DCBAppendCondition(dcb(condition), model.after(after)))  # fmt: skip
    except IntegrityError:
        assert position is None, f"stored at {position}, but the model refused: {condition} after {after}"
    else:
        assert position is not None, f"refused, but the model accepted: {condition} after {after}"
        model.positions += range(position - len(new) + 1, position + 1)

    event("refused" if position is None else "stored")
    since = model.positions[skip - 1] if 0 < skip <= len(model.positions) else 0
    ours = [(e.type, e.tags) for e in await store.read(read, after=since)]
    theirs = [
        (e.event.type, tuple(e.event.tags)) for e in model.recorder.read(dcb(read), after=model.after(since))
    ]
    assert ours == theirs
