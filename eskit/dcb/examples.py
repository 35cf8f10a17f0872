"""The three examples of dcb.events as decisions: read a boundary, decide on it, append on that boundary.

>>> await execute(courses, define_course("c1", capacity=10))                  # doctest: +SKIP
>>> await execute(courses, subscribe_student("s1", "c1"))                     # doctest: +SKIP
>>> await execute(users, register_account("ada", today=date(2025, 3, 1)))     # doctest: +SKIP
>>> await execute(invoices, create_invoice({"amount": 12}))                   # doctest: +SKIP

A :class:`Decision` is a query (its consistency boundary) and a pure function from the events it matches to
the events to append, or a :class:`~eskit.errors.DecisionError` in the rule's own words. :func:`execute`
reads, decides and appends with ``AppendCondition(query, after=<what it read>)``; when the boundary moved
meanwhile it decides again on fresh events, and a writer that keeps losing queues (:mod:`eskit.dcb.turns`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from ..errors import DecisionError
from ..events import Event
from .store import AppendCondition, DCBStore, Query, QueryItem, SequencedEvent, TaggedEvent
from .turns import take_turns

if TYPE_CHECKING:
    from ..connection import Client
    from ..store import EventStore

COURSE_KEYS, USER_KEYS, INVOICE_KEYS = ("course", "student"), ("username",), ()
MAX_COURSES = 5  # per student
RETENTION_DAYS = 3  # a released username stays claimed this long

Decide = Callable[[Sequence[SequencedEvent]], list[TaggedEvent]]


@dataclass(frozen=True)
class Decision:
    """A consistency boundary and the rule that decides on it (``last_only``: only its last event)."""

    query: Query
    decide: Decide
    last_only: bool = False


async def execute(
    store: DCBStore, decision: Decision, *, between: Callable[[], Awaitable[object]] | None = None
) -> int:
    """Read the boundary, decide, append on the condition that the boundary did not move; retry if it did.

    ``between`` runs once between the first read and its append (a demo hook: line writers up for a race).
    """
    hooks = [between] if between else []

    async def attempt() -> int:
        if decision.last_only:
            last = await store.last(decision.query)
            seen: Sequence[SequencedEvent] = [last] if last else []
            after = last.position if last else 0
        else:
            seen = result = await store.read(decision.query)
            after = result.head or 0
        events = decision.decide(seen)
        if hooks:
            await hooks.pop()()
        return await store.append(events, AppendCondition(decision.query, after))

    return await take_turns(store, decision.query, attempt, attempts=100)


# -- course subscriptions --


def course_defined(course_id: str, capacity: int) -> TaggedEvent:
    return TaggedEvent(
        "CourseDefined", {"courseId": course_id, "capacity": capacity}, [f"course:{course_id}"]
    )


def capacity_changed(course_id: str, capacity: int) -> TaggedEvent:
    data = {"courseId": course_id, "newCapacity": capacity}
    return TaggedEvent("CourseCapacityChanged", data, [f"course:{course_id}"])


def student_subscribed(student_id: str, course_id: str) -> TaggedEvent:
    data = {"studentId": student_id, "courseId": course_id}
    return TaggedEvent("StudentSubscribedToCourse", data, [f"student:{student_id}", f"course:{course_id}"])


def _course(course_id: str) -> QueryItem:
    types = ["CourseDefined", "CourseCapacityChanged", "StudentSubscribedToCourse"]
    return QueryItem(types, [f"course:{course_id}"])


def _capacity(events: Sequence[SequencedEvent]) -> int | None:
    """The course's capacity, None if it was never defined."""
    capacity = None
    for e in events:
        if e.type in ("CourseDefined", "CourseCapacityChanged"):
            capacity = e.data.get("capacity", e.data.get("newCapacity"))
    return capacity


def define_course(course_id: str, capacity: int) -> Decision:
    def decide(events: Sequence[SequencedEvent]) -> list[TaggedEvent]:
        if _capacity(events) is not None:
            raise DecisionError(f'Course with id "{course_id}" already exists')
        return [course_defined(course_id, capacity)]

    return Decision(Query([QueryItem(["CourseDefined"], [f"course:{course_id}"])]), decide)


def change_capacity(course_id: str, capacity: int) -> Decision:
    def decide(events: Sequence[SequencedEvent]) -> list[TaggedEvent]:
        current = _capacity(events)
        if current is None:
            raise DecisionError(f'Course "{course_id}" does not exist')
        if current == capacity:
            raise DecisionError(f"New capacity {capacity} is the same as the current capacity")
        return [capacity_changed(course_id, capacity)]

    return Decision(Query([_course(course_id)]), decide)


def subscribe_student(student_id: str, course_id: str) -> Decision:
    course, student = f"course:{course_id}", f"student:{student_id}"

    def decide(events: Sequence[SequencedEvent]) -> list[TaggedEvent]:
        capacity = _capacity([e for e in events if course in e.tags])
        subscriptions = [e for e in events if e.type == "StudentSubscribedToCourse"]
        if capacity is None:
            raise DecisionError(f'Course "{course_id}" does not exist')
        if sum(course in e.tags for e in subscriptions) >= capacity:
            raise DecisionError(f'Course "{course_id}" is already fully booked')
        if any(course in e.tags and student in e.tags for e in subscriptions):
            raise DecisionError("Student already subscribed to this course")
        if sum(student in e.tags for e in subscriptions) >= MAX_COURSES:
            raise DecisionError(f"Student already subscribed to {MAX_COURSES} courses")
        return [student_subscribed(student_id, course_id)]

    query = Query([_course(course_id), QueryItem(["StudentSubscribedToCourse"], [student])])
    return Decision(query, decide)


async def subscribe_per_aggregate(
    school: EventStore,
    student_id: str,
    course_id: str,
    *,
    between: Callable[[], Awaitable[object]] | None = None,
) -> int:
    """The seed's way: lock the *student* aggregate only; the course's bookings are counted, not locked."""
    course = await school.read(f"course-{course_id}")
    if not course:
        raise DecisionError(f'Course "{course_id}" does not exist')
    bookings = school.replay(subjects=[f"{school.name}.*.subscribed"])
    booked = [e async for e in bookings if e.data["courseId"] == course_id]
    if len(booked) >= course[-1].data["capacity"]:
        raise DecisionError(f'Course "{course_id}" is already fully booked')
    history = await school.read(student_id)
    if between:
        await between()
    expected = history[-1].position if history else 0
    return await school.append(
        student_id, [Event("subscribed", {"courseId": course_id})], expected_position=expected
    )


# -- unique usernames, released after a retention period --


def account_registered(username: str, on: date) -> TaggedEvent:
    return TaggedEvent(
        "AccountRegistered", {"username": username, "on": on.isoformat()}, [f"username:{username}"]
    )


def account_closed(username: str, on: date) -> TaggedEvent:
    return TaggedEvent(
        "AccountClosed", {"username": username, "on": on.isoformat()}, [f"username:{username}"]
    )


def register_account(username: str, *, today: date) -> Decision:
    def decide(events: Sequence[SequencedEvent]) -> list[TaggedEvent]:
        claimed = False
        for e in events:
            if e.type == "AccountRegistered":
                claimed = True
            elif e.type == "AccountClosed":  # released, but only after the retention period
                claimed = (today - date.fromisoformat(e.data["on"])).days <= RETENTION_DAYS
        if claimed:
            raise DecisionError(f'Username "{username}" is claimed')
        return [account_registered(username, today)]

    return Decision(
        Query([QueryItem(["AccountRegistered", "AccountClosed"], [f"username:{username}"])]), decide
    )


# -- invoice numbers without gaps --


def invoice_created(number: int, data: Mapping[str, Any]) -> TaggedEvent:
    return TaggedEvent(
        "InvoiceCreated", {"invoiceNumber": number, "invoiceData": dict(data)}, [f"invoice:{number}"]
    )


def create_invoice(data: Mapping[str, Any]) -> Decision:
    """Only the last ``InvoiceCreated`` is read: its number + 1 is the next one."""

    def decide(events: Sequence[SequencedEvent]) -> list[TaggedEvent]:
        number = events[-1].data["invoiceNumber"] + 1 if events else 1
        return [invoice_created(number, data)]

    return Decision(Query([QueryItem(["InvoiceCreated"])]), decide, last_only=True)


# -- given / when / then --


@dataclass(frozen=True)
class Case:
    """Given these events, when this decision runs, then this event is appended (or this error is raised)."""

    description: str
    given: Sequence[TaggedEvent]
    when: Decision
    then: TaggedEvent | str


async def check(client: Client, cases: Sequence[Case], *, tag_keys: Sequence[str], prefix: str) -> list[str]:
    """Run each case on a fresh store named ``<prefix><n>`` (deleted after); one verdict line per case."""
    verdicts = []
    for n, case in enumerate(cases):
        name = f"{prefix}{n}"
        store = await client.dcb_store(name, tag_keys=tag_keys)
        try:
            verdicts.append(await _check(store, case))
        finally:
            await client.delete_store(name)
    return verdicts


async def _check(store: DCBStore, case: Case) -> str:
    if case.given:
        await store.append(list(case.given))
    try:
        await execute(store, case.when)
        last = (await store.read())[-1]
        outcome = f"{last.type} {json.dumps(last.data, sort_keys=True)}"
    except DecisionError as exc:
        outcome = f"error: {exc}"
    then = case.then
    expected = (
        f"error: {then}" if isinstance(then, str) else f"{then.type} {json.dumps(then.data, sort_keys=True)}"
    )
    if outcome != expected:
        raise AssertionError(f"{case.description}: expected {expected}, got {outcome}")
    return f"✓ {case.description} → {outcome}"
