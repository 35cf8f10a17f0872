"""Dynamic Consistency Boundary (dcb.events): events with a type and tags, read by query, appended on a condition.

>>> courses = await client.dcb_store("courses", tag_keys=("course", "student"))      # doctest: +SKIP
>>> seen = await courses.read(Query([QueryItem(types=["CourseDefined"], tags=["course:c1"])]))  # doctest: +SKIP

The store (:mod:`.store`), queries and the subject layout (:mod:`.query`), opening a store
(:mod:`.setup`), live subscriptions (:mod:`.subscription`) and the course-booking examples of lesson 05
(:mod:`.examples`).
"""

from __future__ import annotations

from .query import Layout
from .store import (
    MAX_CARRIERS,
    AppendCondition,
    AppendConditionError,
    DCBStore,
    Query,
    QueryItem,
    ReadResult,
    SequencedEvent,
    Subscription,
    TaggedEvent,
)

__all__ = [
    "MAX_CARRIERS",
    "AppendCondition",
    "AppendConditionError",
    "DCBStore",
    "Layout",
    "Query",
    "QueryItem",
    "ReadResult",
    "SequencedEvent",
    "Subscription",
    "TaggedEvent",
]
