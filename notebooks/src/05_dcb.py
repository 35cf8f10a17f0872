# %% [markdown]
# # 05 · Dynamic Consistency Boundaries
#
# **What you'll do:** enforce rules that span several "aggregates" — a course's capacity *and* a student's
# course limit, a globally unique username, gapless invoice numbers — with the Dynamic Consistency Boundary
# pattern ([dcb.events](https://dcb.events)) on one JetStream stream; run the spec's examples as
# given / when / then checks; then let writers race and watch the invariants hold, next to the seed's
# per-aggregate approach overbooking a course.
#
# **What you'll learn:**
# - events carry a *type* and *tags*; a *query* (items OR-ed; an item = any of its types + all of its tags)
#   is the consistency boundary of one decision;
# - a decision reads its query, decides, and appends with `AppendCondition(query, after=<head it read>)`:
#   the append fails if anything matching the query was stored after that position;
# - how eskit makes JetStream check that condition on the server, without a global lock, and what it costs.
#
# **What you need:** lessons 01–02. About 20 minutes.

# %%
import asyncio
import inspect
import uuid
from collections import Counter
from datetime import date

import eskit
from eskit.dcb import AppendCondition, Query, QueryItem, TaggedEvent
from eskit.dcb_examples import (
    Case,
    Decision,
    account_closed,
    account_registered,
    capacity_changed,
    change_capacity,
    check,
    course_defined,
    create_invoice,
    define_course,
    execute,
    invoice_created,
    register_account,
    student_subscribed,
    subscribe_per_aggregate,
    subscribe_student,
)

client = await eskit.connect()
run = uuid.uuid4().hex[:8]
names = {kind: f"{kind}{run}" for kind in ("courses", "users", "invoices", "school", "case")}
courses = await client.dcb_store(names["courses"], tag_keys=["course", "student"])
users = await client.dcb_store(names["users"], tag_keys=["username"])
invoices = await client.dcb_store(names["invoices"])


def show(text: object) -> str:
    """Hide this run's unique store names."""
    for kind, name in names.items():
        text = str(text).replace(name, kind)
    return str(text)


# %% [markdown]
# ## Why per-aggregate locking is not enough
#
# Lesson 02 locked one aggregate: "append only if order-1's last event is still at position 7". The seed's
# "DCB" section does the same (on the wrong subject, even). But *"a course takes at most N students"* and
# *"a student joins at most 5 courses"* are rules over **two** aggregates at once. Lock the student, and two
# students can both take the last seat; lock the course, and one student can join six courses in parallel.
# Make "course + its students" one aggregate, and every booking of a popular course queues behind one lock.
#
# DCB drops the fixed aggregate. Each decision names the events it depends on — a query — and the append is
# conditional on *that query* not having new matches.
#
# ## The API in four lines

# %%
q = Query([QueryItem(types=["CourseDefined"], tags=["course:c1"])])
seen = await courses.read(q)  # matching events, in order, and seen.head: the store's last position
print("events:", list(seen), "| head:", seen.head)
position = await courses.append([course_defined("c1", 2)], AppendCondition(q, after=seen.head))
print("CourseDefined stored at position", position)

# %% [markdown]
# Run the same decision again with the *old* `seen`: the condition now fails, because an event matching the
# query was stored after `seen.head`. The error is a `ConcurrencyError` (like lesson 02's), so the same retry
# helpers apply: read again, decide again.

# %%
try:
    await courses.append([course_defined("c1", 3)], AppendCondition(q, after=seen.head))
except eskit.AppendConditionError as exc:
    print(type(exc).__name__, "| is a ConcurrencyError:", isinstance(exc, eskit.ConcurrencyError))
    print(show(exc))

# %% [markdown]
# ## How JetStream checks the condition
#
# **Subjects.** Each event is stored **once**, on `<store>.<type>.<slot>...`, with one subject token per
# *declared tag key* (`tag_keys=["course", "student"]`, fixed when the store is created). The full tag list
# travels in a header; a tag value that is not a safe subject token is stored as a hash.

# %%
layout = courses.layout
event = student_subscribed("s1", "c1")
print(show(layout.subject(event)), "  tags:", event.tags)
for item in (QueryItem(["CourseDefined"], ["course:c1"]), QueryItem(["StudentSubscribedToCourse"], ["student:s1"]),
             QueryItem(["CourseDefined", "CourseCapacityChanged"], ["course:c1"])):  # fmt: skip
    print(f"{str(list(item.types)):<48} {str(list(item.tags)):<15} -> {show(layout.filter(item))}")

# %% [markdown]
# So a query item becomes a **subject filter** the server understands — exact when the item names one type
# and only declared tag keys, otherwise a superset (reads re-check every event precisely).
#
# **The condition.** NATS checks *"the last message on filter F is still at position L"* atomically when a
# message carries `Nats-Expected-Last-Subject-Sequence: L` and `Nats-Expected-Last-Subject-Sequence-Subject: F`.
# One such check fits on each message of an **atomic batch**, and all of them are evaluated against the
# stream as it was before the batch. eskit turns "nothing matching Q after A" into one check per filter of Q,
# with L the last position on F (known from the read, else one Direct Get). Disjoint decisions touch
# disjoint filters, so they never wait for each other: no global lock.
#
# **More filters than events.** "Subscribe s1 to c1" appends *one* event but its query has *two* items
# (the course's events, the student's subscriptions). eskit first **merges** the filters into one broader
# filter: one message, fast — but a writer elsewhere in the merged filter moves its last position. Then the
# append is rejected, eskit re-reads only what arrived in between, and if none of it matches the query it
# sends the append again. After repeated rejections it switches to **exact** checks on *check carriers*:
# empty, self-expiring messages (`Nats-TTL: 1s`) that pad the batch to one message per check. Trade-offs:

# %%
merged = layout.check_filters(subscribe_student("s1", "c1").query, 1)
exact = layout.check_filters(subscribe_student("s1", "c1").query, 16)
print("merged:", show(merged), "| exact:", show(exact))

# %% [markdown]
# | | merged (first) | exact, on check carriers (after rejections) |
# |---|---|---|
# | messages | the events only | + one short-lived carrier per extra check: positions get gaps (the spec allows them) |
# | speed | one plain publish when there is one event | an atomic batch: on one file-backed server its commit syncs to disk |
# | disjoint writers | may reject each other: re-read + re-send, internally | never touch each other's filters |
#
# Either way a writer on a disjoint boundary **never sees an error**; the stress test in
# `tests/test_dcb_stress.py` (8 writers × 200 decisions) checks exactly that, and `bench/dcb.py` measures it.
#
# ## Example 1 — course subscriptions
#
# Each decision is a `Decision(query, decide)`: the boundary, and a pure function from the events it matches
# to the events to append (or a `DecisionError` in the rule's words). `execute(store, decision)` reads,
# decides and appends with the condition, and decides again if the boundary moved. The subscription rule:

# %%
print(inspect.getsource(subscribe_student))

# %% [markdown]
# The spec's test cases, run as checks: each case gets a fresh store, its *given* events, its *when*
# decision, and must produce exactly its *then* event or error (a mismatch raises `AssertionError`).

# %%
course_cases = [
    Case("define course with existing id", [course_defined("c1", 10)], define_course("c1", 15),
         'Course with id "c1" already exists'),
    Case("define course with new id", [], define_course("c1", 15), course_defined("c1", 15)),
    Case("change capacity of a non-existing course", [], change_capacity("c0", 15), 'Course "c0" does not exist'),
    Case("change capacity to a new value", [course_defined("c1", 12)], change_capacity("c1", 15),
         capacity_changed("c1", 15)),
    Case("subscribe to a non-existing course", [], subscribe_student("s1", "c0"), 'Course "c0" does not exist'),
    Case("subscribe to a fully booked course", [course_defined("c1", 3), *(student_subscribed(s, "c1") for s in
         ("s2", "s3", "s4"))], subscribe_student("s1", "c1"), 'Course "c1" is already fully booked'),
    Case("subscribe to the same course twice", [course_defined("c1", 10), student_subscribed("s1", "c1")],
         subscribe_student("s1", "c1"), "Student already subscribed to this course"),
    Case("subscribe to a sixth course", [*(course_defined(f"c{i}", 10) for i in range(1, 7)),
         *(student_subscribed("s1", f"c{i}") for i in range(1, 6))], subscribe_student("s1", "c6"),
         "Student already subscribed to 5 courses"),
    Case("subscribe successfully", [course_defined("c1", 10)], subscribe_student("s1", "c1"),
         student_subscribed("s1", "c1")),
]  # fmt: skip
for verdict in await check(client, course_cases, tag_keys=["course", "student"], prefix=names["case"]):
    print(verdict)

# %% [markdown]
# ## Example 2 — unique usernames, with a retention period
#
# A username is claimed by `AccountRegistered` and released by `AccountClosed` — but only after a retention
# period (3 days here), so nobody can grab a name the moment its owner leaves. Events carry the day they
# happened; the decision is given today's date.

# %%
print(inspect.getsource(register_account))
day = date(2025, 3, 10)
username_cases = [
    Case("register a claimed username", [account_registered("u1", date(2025, 3, 1))],
         register_account("u1", today=day), 'Username "u1" is claimed'),
    Case("register an unused username", [], register_account("u1", today=day), account_registered("u1", day)),
    Case("register the name of an account closed 3 days ago",
         [account_registered("u1", date(2025, 3, 1)), account_closed("u1", date(2025, 3, 7))],
         register_account("u1", today=day), 'Username "u1" is claimed'),
    Case("register the name of an account closed 4 days ago",
         [account_registered("u1", date(2025, 3, 1)), account_closed("u1", date(2025, 3, 6))],
         register_account("u1", today=day), account_registered("u1", day)),
]  # fmt: skip
for verdict in await check(client, username_cases, tag_keys=["username"], prefix=names["case"]):
    print(verdict)

# %% [markdown]
# ## Example 3 — invoice numbers without gaps
#
# The boundary is every `InvoiceCreated`, but the decision needs only the **last** one: `Decision(...,
# last_only=True)` makes `execute` call `store.last(query)` (one Direct Get) and append with
# `after=<its position>`. Two concurrent invoices cannot get the same number, and none is skipped.

# %%
print(inspect.getsource(create_invoice))
invoice_cases = [
    Case("create the first invoice", [], create_invoice({"foo": "bar"}), invoice_created(1, {"foo": "bar"})),
    Case("create the second invoice", [invoice_created(1, {"foo": "bar"})], create_invoice({"bar": "baz"}),
         invoice_created(2, {"bar": "baz"})),
]  # fmt: skip
for verdict in await check(client, invoice_cases, tag_keys=[], prefix=names["case"]):
    print(verdict)

# %% [markdown]
# ## The race
#
# Twenty students want the last five seats of a course, all at the same moment: every request reads the
# state first, and only then do they all append (`between=barrier.wait` lines them up — a worst case that
# real traffic hits by chance).
#
# **The seed's way**, as in its DCB section: lock the *student's* aggregate (here even with the correct
# whole-aggregate check from lesson 02), and count the course's bookings without a lock:

# %%
school = await client.event_store(names["school"])
await school.append("course-c1", [eskit.Event("defined", {"capacity": 5})], expected_position=0)
barrier = asyncio.Barrier(20)
results = await asyncio.gather(
    *(subscribe_per_aggregate(school, f"s{i}", "c1", between=barrier.wait) for i in range(20)),
    return_exceptions=True,
)
booked = len([e async for e in school.replay(subjects=[f"{school.name}.*.subscribed"])])
print("appends accepted:", sum(isinstance(r, int) for r in results), "| seats: 5 | booked:", booked)
print("capacity invariant holds:", booked <= 5)

# %% [markdown]
# Every student's own aggregate was untouched, so every lock passed: 20 bookings for 5 seats. **With DCB**
# the boundary is the course's events *and* the student's subscriptions, so the first append moves the
# boundary of all the others; they decide again on fresh events and are refused:

# %%
await execute(courses, define_course("race", 5))
barrier = asyncio.Barrier(20)
results = await asyncio.gather(
    *(execute(courses, subscribe_student(f"s{i}", "race"), between=barrier.wait) for i in range(20)),
    return_exceptions=True,
)
print(Counter("subscribed" if isinstance(r, int) else f"refused: {r}" for r in results))
booked = await courses.read(Query([QueryItem(["StudentSubscribedToCourse"], ["course:race"])]))
print("booked:", len(booked), "| capacity invariant holds:", len(booked) <= 5)

# %% [markdown]
# The same with usernames and invoices: ten writers claim `ada` at once, ten create an invoice at once.

# %%
claims = await asyncio.gather(
    *(execute(users, register_account("ada", today=day)) for _ in range(10)), return_exceptions=True
)
print("ada claimed", sum(isinstance(r, int) for r in claims), "time(s);", Counter(str(r) for r in claims
      if not isinstance(r, int)))  # fmt: skip
await asyncio.gather(*(execute(invoices, create_invoice({"writer": w})) for w in range(10)))
numbers = [e.data["invoiceNumber"] for e in await invoices.read()]
print("invoice numbers:", numbers, "| unique and gapless:", numbers == list(range(1, 11)))

# %% [markdown]
# ## Summary
#
# - A DCB event has a type and tags; a query (items OR-ed; any of an item's types, all of its tags) is the
#   consistency boundary of one decision — chosen per decision, not fixed per aggregate.
# - Decide in three steps: `seen = await store.read(query)`, check the rules on `seen`, then
#   `store.append(events, AppendCondition(query, after=seen.head))`; on `AppendConditionError`, decide again.
# - On JetStream each event is stored once, on a subject with one token per declared tag key; the condition
#   becomes server-side "last message on this filter" checks, one per message of an atomic batch.
# - A one-event decision over several filters merges them first (fast; disjoint writers may retry
#   internally) and then uses exact checks on expiring check carriers (gaps in positions, a slower batch).
# - Per-aggregate locking cannot protect a rule over two aggregates: the seed's approach overbooked the course.
#
# ## Exercise
#
# Students can leave a course. Write `unsubscribe_student(student_id, course_id)`, a `Decision` that appends
# `TaggedEvent("StudentUnsubscribedFromCourse", {"studentId": ..., "courseId": ...}, ["student:…",
# "course:…"])` if the student is currently subscribed to the course, else raises
# `eskit.DecisionError("Student is not subscribed to this course")`. Choose its query carefully: what is the
# smallest boundary that still decides correctly?

# %% [exercise]
def unsubscribe_student(student_id: str, course_id: str):
    ...  # your code here: return Decision(query, decide)


# %% [solution]
def unsubscribe_student(student_id: str, course_id: str):
    tags = [f"student:{student_id}", f"course:{course_id}"]
    query = Query([QueryItem(["StudentSubscribedToCourse", "StudentUnsubscribedFromCourse"], tags)])

    def decide(events):
        subscribed = sum(1 if e.type == "StudentSubscribedToCourse" else -1 for e in events) > 0
        if not subscribed:
            raise eskit.DecisionError("Student is not subscribed to this course")
        data = {"studentId": student_id, "courseId": course_id}
        return [TaggedEvent("StudentUnsubscribedFromCourse", data, tags)]

    return Decision(query, decide)


# %% [wrong] the event carries only the student's tag
def unsubscribe_student(student_id: str, course_id: str):
    tags = [f"student:{student_id}", f"course:{course_id}"]
    query = Query([QueryItem(["StudentSubscribedToCourse", "StudentUnsubscribedFromCourse"], tags)])

    def decide(events):
        subscribed = sum(1 if e.type == "StudentSubscribedToCourse" else -1 for e in events) > 0
        if not subscribed:
            raise eskit.DecisionError("Student is not subscribed to this course")
        data = {"studentId": student_id, "courseId": course_id}
        return [TaggedEvent("StudentUnsubscribedFromCourse", data, [f"student:{student_id}"])]

    return Decision(query, decide)


# %% [check]
async def check_unsubscribe() -> None:
    eskit.course.require(unsubscribe_student("s1", "c1"), "unsubscribe_student returns no Decision yet")
    left_data = {"studentId": "s1", "courseId": "c1"}
    left = TaggedEvent("StudentUnsubscribedFromCourse", left_data, ["student:s1", "course:c1"])
    exercise = [
        Case("leave a course", [course_defined("c1", 5), student_subscribed("s1", "c1")],
             unsubscribe_student("s1", "c1"), left),
        Case("leave a course never joined", [course_defined("c1", 5), student_subscribed("s1", "c2")],
             unsubscribe_student("s1", "c1"), "Student is not subscribed to this course"),
        Case("leave twice", [course_defined("c1", 5), student_subscribed("s1", "c1"), left],
             unsubscribe_student("s1", "c1"), "Student is not subscribed to this course"),
        Case("leave after rejoining", [student_subscribed("s1", "c1"), left, student_subscribed("s1", "c1")],
             unsubscribe_student("s1", "c1"), left),
    ]  # fmt: skip
    await check(client, exercise, tag_keys=["course", "student"], prefix=eskit.course.unique("case"))
    # ... and the event it appends must be found by the next decision: its tags matter too
    case_name = eskit.course.unique("case")
    store = await client.dcb_store(case_name, tag_keys=["course", "student"])
    try:
        await store.append([course_defined("c1", 5), student_subscribed("s1", "c1")])
        await execute(store, unsubscribe_student("s1", "c1"))
        try:
            await execute(store, unsubscribe_student("s1", "c1"))
        except eskit.DecisionError:
            return
        raise AssertionError("a second unsubscribe was accepted: does your event carry both the student and course tag?")
    finally:
        await client.delete_store(case_name)


await eskit.course.check(check_unsubscribe, ok="students leave courses they joined, once")

# %%
for name in names.values():
    await client.delete_store(name)
await client.close()

# %% [markdown]
# **Next:** `06_event_log_analysis.ipynb` — the event store as an event log: pandas, variants, funnels and a
# real process-mining log.
