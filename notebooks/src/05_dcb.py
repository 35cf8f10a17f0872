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
from collections import Counter
from collections.abc import Sequence
from datetime import date

import eskit
from eskit.dcb import AppendCondition, Query, QueryItem, SequencedEvent, TaggedEvent
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
names = {kind: eskit.course.unique(kind) for kind in ("courses", "users", "invoices", "school", "case")}
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
# empty messages (skipped by every read) that pad the batch to one message per check. Trade-offs:

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
# ### Boundaries overlap — where they must, and only there
#
# Each decision reads its own slice of the store. Below: a small history of three courses, and five decisions
# someone might make next. A square marks an event inside that decision's boundary (its query matches it);
# shaded columns are read by more than one decision.

# %%
# NBVAL_IGNORE_OUTPUT
import matplotlib.pyplot as plt

history = [course_defined("c1", 2), course_defined("c2", 10), student_subscribed("s1", "c1"),
           student_subscribed("s2", "c2"), capacity_changed("c2", 12), student_subscribed("s1", "c2"),
           course_defined("c3", 5), student_subscribed("s3", "c3")]  # fmt: skip
next_decisions = {"s2 joins c1": subscribe_student("s2", "c1"), "s3 joins c1": subscribe_student("s3", "c1"),
                  "s1 joins c3": subscribe_student("s1", "c3"), "c2 capacity → 20": change_capacity("c2", 20),
                  "define c4": define_course("c4", 5)}  # fmt: skip
inside = {name: [d.query.matches(e.type, e.tags) for e in history] for name, d in next_decisions.items()}
short = {"CourseDefined": "defined", "CourseCapacityChanged": "capacity", "StudentSubscribedToCourse": "subscribed"}
columns = [f"{p}: {short[e.type]}\n{' '.join(t.split(':')[1] for t in e.tags)}" for p, e in enumerate(history, 1)]
fig, ax = plt.subplots(figsize=(9, 3.2))
for col in range(len(history)):
    if sum(marks[col] for marks in inside.values()) > 1:
        ax.axvspan(col - 0.45, col + 0.45, color="gold", alpha=0.3, lw=0)
for row, (name, marks) in enumerate(inside.items()):
    hits = [col for col, hit in enumerate(marks) if hit]
    ax.scatter(hits, [row] * len(hits), s=260, marker="s", color=plt.cm.tab10.colors[row], zorder=3)
ax.set_xticks(range(len(history)), columns, fontsize=8)
ax.set_yticks(range(len(inside)), list(inside))
ax.set(xlim=(-0.6, len(history) - 0.4), ylim=(len(inside) - 0.5, -0.5),
       title="Consistency boundaries: the events each decision reads (shaded: read by several)",
       xlabel="stored events (position: type, tags)", ylabel="decision")  # fmt: skip
plt.tight_layout()
plt.show()

# %% [markdown]
# Sharing what they *read* is harmless. Two decisions conflict only when one **appends** an event inside the
# other's boundary — then whichever appends second finds its boundary moved, and decides again:

# %%
appends = {  # what each decision would append, decided on the events in its boundary
    name: d.decide([e for e in history if d.query.matches(e.type, e.tags)]) for name, d in next_decisions.items()
}


def lands_in(a: str, b: str) -> bool:
    """Would a's new events fall inside b's boundary?"""
    return any(next_decisions[b].query.matches(e.type, e.tags) for e in appends[a])


for a, b in [(a, b) for a in next_decisions for b in next_decisions if a < b]:
    if lands_in(a, b) or lands_in(b, a):
        print(f"{a} ⟷ {b}: may conflict (one's new event lands in the other's boundary)")
print("every other pair: never waits for the other")

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
# ## pyeventsourcing on the same server
#
# [pyeventsourcing](https://eventsourcing.readthedocs.io) is the Python event-sourcing library most teams use.
# Its applications choose their storage by environment; `eskit.interop.eventsourcing` is a persistence module
# on JetStream (it passes the library's own recorder test suites). An application moves onto the lesson's
# server by setting two variables, and its events land in an ordinary eskit store (`<app>_events`), where
# `to_dataframe` and projections read them. The library's API is synchronous: no `await` on its side.

# %%
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import get_topic

from eskit.eventlog import encode_token
from eskit.interop.eventsourcing import store_prefix


class Dog(Aggregate):
    @event("Registered")
    def __init__(self, name: str) -> None:
        self.name, self.tricks = name, []

    @event("TrickAdded")
    def add_trick(self, trick: str) -> None:
        self.tricks.append(trick)


School = type("School", (Application,), {"name": eskit.course.unique("dogschool")})  # a fresh name per run
school = School(env={"PERSISTENCE_MODULE": "eskit.interop.eventsourcing", "NATS_URL": client.url})
fido = Dog("Fido")
fido.add_trick("roll over")
fido.add_trick("play dead")
school.save(fido)
print("the library reads it back:", school.repository.get(fido.id).tricks)

dogs = await client.event_store(f"{store_prefix(School.name)}_events")
frame = await eskit.to_dataframe(dogs)
frame[["position", "type", "meta:Originator-Version", "name", "trick"]]

# %% [markdown]
# A projection reads the same events. Event types are the library's topics, stored as subject tokens
# (`__main__:Dog.TrickAdded` becomes `__main__:Dog%2ETrickAdded`, since a `.` would split the subject):

# %%
class Tricks(eskit.Projection):
    schema = "CREATE TABLE tricks (dog TEXT, trick TEXT)"

    @eskit.applies(encode_token(get_topic(Dog.TrickAdded)))
    def _trick(self, db, event: eskit.RecordedEvent) -> None:
        db.execute("INSERT INTO tricks VALUES (?, ?)", (event.aggregate_id, event.data["trick"]))


tricks = Tricks(dogs)
await tricks.run_until_caught_up()
print(tricks.db.execute("SELECT trick FROM tricks ORDER BY rowid").fetchall())
await tricks.close(delete_consumer=True)
await client.delete_store(dogs.name)
school.close()

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
# ## Exercises
#
# Each exercise is a `Decision`: a query (its boundary) and a pure `decide(events)` that returns the events
# to append or raises `eskit.DecisionError`. Choose each boundary carefully: **the smallest one that still
# decides correctly**. Too small, and a concurrent writer slips past the rule; too big, and unrelated writers
# make the decision retry for nothing.

# %%
# Helpers for the checks below. Each check connects on its own and works on fresh stores it deletes after,
# so it can run again — also after the lesson's last cell has closed `client`.
import contextlib
from collections.abc import AsyncIterator

from eskit.dcb import DCBStore


def boundary(decision: Decision, *, needs: dict[str, TaggedEvent], spares: dict[str, TaggedEvent]) -> None:
    """The decision's query must match every event in `needs` and none in `spares`."""
    eskit.course.require(decision.query, "the decision has no query yet")
    for what, event in needs.items():
        if not decision.query.matches(event.type, event.tags):
            raise eskit.course.Wrong(f"your boundary misses {what}: the decision cannot see those events, and "
                                     "one stored meanwhile would not stop it")
    for what, event in spares.items():
        if decision.query.matches(event.type, event.tags):
            raise eskit.course.Wrong(f"your boundary is bigger than it needs to be: it holds {what}, so each "
                                     "of those would make this decision retry for nothing")


async def cases(tag_keys: list[str], *given_when_then: Case) -> None:
    """Run the cases, each on a fresh store; the first mismatch is the hint."""
    async with await eskit.connect() as own:
        await check(own, given_when_then, tag_keys=tag_keys, prefix=eskit.course.unique("case"))


@contextlib.asynccontextmanager
async def fresh_dcb_store(tag_keys: Sequence[str]) -> AsyncIterator[DCBStore]:
    """A DCB store for one run of a check, deleted after it, so the check can run again."""
    name = eskit.course.unique("check")
    async with await eskit.connect() as own:
        try:
            yield await own.dcb_store(name, tag_keys=tag_keys)
        finally:
            await own.delete_store(name)


# %% [markdown]
# ### Exercise 5.1 · Leave a course
#
# Students can leave. Write `unsubscribe_student(student_id, course_id)`: it appends
# `TaggedEvent("StudentUnsubscribedFromCourse", {"studentId": ..., "courseId": ...}, ["student:…", "course:…"])`
# if the student is currently subscribed to the course (they may have joined, left and joined again), else
# raises `eskit.DecisionError("Student is not subscribed to this course")`.

# %% [exercise]
def unsubscribe_student(student_id: str, course_id: str) -> Decision:
    tags = [f"student:{student_id}", f"course:{course_id}"]
    query = ...  # your code here: Query([QueryItem(types=[...], tags=[...])])

    def decide(events: Sequence[SequencedEvent]) -> list[TaggedEvent]:
        ...  # your code here: raise eskit.DecisionError(...) or return [TaggedEvent(...)]

    return Decision(query, decide)


# %% [solution]
def unsubscribe_student(student_id: str, course_id: str) -> Decision:
    tags = [f"student:{student_id}", f"course:{course_id}"]
    query = Query([QueryItem(["StudentSubscribedToCourse", "StudentUnsubscribedFromCourse"], tags)])

    def decide(events: Sequence[SequencedEvent]) -> list[TaggedEvent]:
        subscribed = sum(1 if e.type == "StudentSubscribedToCourse" else -1 for e in events) > 0
        if not subscribed:
            raise eskit.DecisionError("Student is not subscribed to this course")
        data = {"studentId": student_id, "courseId": course_id}
        return [TaggedEvent("StudentUnsubscribedFromCourse", data, tags)]

    return Decision(query, decide)


# %% [wrong] the boundary holds the joins but not the leaves
def unsubscribe_student(student_id: str, course_id: str) -> Decision:
    tags = [f"student:{student_id}", f"course:{course_id}"]
    query = Query([QueryItem(["StudentSubscribedToCourse"], tags)])

    def decide(events: Sequence[SequencedEvent]) -> list[TaggedEvent]:
        if not events:
            raise eskit.DecisionError("Student is not subscribed to this course")
        return [TaggedEvent("StudentUnsubscribedFromCourse", {"studentId": student_id, "courseId": course_id}, tags)]

    return Decision(query, decide)


# %% [wrong] the boundary is everything the student did, in any course
def unsubscribe_student(student_id: str, course_id: str) -> Decision:
    tags = [f"student:{student_id}", f"course:{course_id}"]
    query = Query([QueryItem(["StudentSubscribedToCourse", "StudentUnsubscribedFromCourse"], tags[:1])])

    def decide(events: Sequence[SequencedEvent]) -> list[TaggedEvent]:
        mine = [e for e in events if tags[1] in e.tags]
        if sum(1 if e.type == "StudentSubscribedToCourse" else -1 for e in mine) <= 0:
            raise eskit.DecisionError("Student is not subscribed to this course")
        return [TaggedEvent("StudentUnsubscribedFromCourse", {"studentId": student_id, "courseId": course_id}, tags)]

    return Decision(query, decide)


# %% [wrong] the right boundary, but the event carries only the student's tag
def unsubscribe_student(student_id: str, course_id: str) -> Decision:
    tags = [f"student:{student_id}", f"course:{course_id}"]
    query = Query([QueryItem(["StudentSubscribedToCourse", "StudentUnsubscribedFromCourse"], tags)])

    def decide(events: Sequence[SequencedEvent]) -> list[TaggedEvent]:
        if sum(1 if e.type == "StudentSubscribedToCourse" else -1 for e in events) <= 0:
            raise eskit.DecisionError("Student is not subscribed to this course")
        data = {"studentId": student_id, "courseId": course_id}
        return [TaggedEvent("StudentUnsubscribedFromCourse", data, tags[:1])]

    return Decision(query, decide)


# %% [check]
async def check_leave() -> None:
    joined, left = student_subscribed("s1", "c1"), TaggedEvent(
        "StudentUnsubscribedFromCourse", {"studentId": "s1", "courseId": "c1"}, ["student:s1", "course:c1"])
    eskit.course.require(unsubscribe_student("s1", "c1").decide([joined]), "decide returns nothing yet")
    boundary(unsubscribe_student("s1", "c1"),
             needs={"s1 joining c1": joined, "s1 leaving c1": left},
             spares={"the course's definition": course_defined("c1", 5),
                     "other students joining c1": student_subscribed("s2", "c1"),
                     "s1 joining other courses": student_subscribed("s1", "c2")})  # fmt: skip
    await cases(["course", "student"],
        Case("leave a course", [course_defined("c1", 5), joined], unsubscribe_student("s1", "c1"), left),
        Case("leave a course never joined", [course_defined("c1", 5), student_subscribed("s1", "c2")],
             unsubscribe_student("s1", "c1"), "Student is not subscribed to this course"),
        Case("leave twice", [course_defined("c1", 5), joined, left], unsubscribe_student("s1", "c1"),
             "Student is not subscribed to this course"),
        Case("leave after rejoining", [joined, left, student_subscribed("s1", "c1")], unsubscribe_student("s1", "c1"),
             left),
    )  # fmt: skip
    async with fresh_dcb_store(["course", "student"]) as store:  # the next decision must find your event
        await store.append([course_defined("c1", 5), joined])
        await execute(store, unsubscribe_student("s1", "c1"))
        try:
            await execute(store, unsubscribe_student("s1", "c1"))
        except eskit.DecisionError:
            return
        raise eskit.course.Wrong("a second unsubscribe was accepted: does your event carry both tags?")


await eskit.course.check(check_leave, ok="s1 leaves c1 once, and only if subscribed; the boundary is s1 in c1")

# %% [markdown]
# ### Exercise 5.2 · Lower a course's capacity
#
# Write `reduce_capacity(course_id, capacity)`: it appends `capacity_changed(course_id, capacity)`, unless
# the course does not exist (`'Course "c1" does not exist'`) or more students are subscribed than the new
# capacity allows (`'Course "c1" has 3 students: capacity 2 is too small'`). (Ignore leaving, from 5.1.)
# The check also races it: while it decides, a third student joins — the right boundary makes it decide again.

# %% [exercise]
def reduce_capacity(course_id: str, capacity: int) -> Decision:
    query = ...  # your code here

    def decide(events: Sequence[SequencedEvent]) -> list[TaggedEvent]:
        ...  # your code here

    return Decision(query, decide)


# %% [solution]
def reduce_capacity(course_id: str, capacity: int) -> Decision:
    query = Query([QueryItem(["CourseDefined", "StudentSubscribedToCourse"], [f"course:{course_id}"])])

    def decide(events: Sequence[SequencedEvent]) -> list[TaggedEvent]:
        if not any(e.type == "CourseDefined" for e in events):
            raise eskit.DecisionError(f'Course "{course_id}" does not exist')
        students = sum(e.type == "StudentSubscribedToCourse" for e in events)
        if students > capacity:
            raise eskit.DecisionError(f'Course "{course_id}" has {students} students: capacity {capacity} is too small')
        return [capacity_changed(course_id, capacity)]

    return Decision(query, decide)


# %% [wrong] the boundary is the course's definition and capacity only
def reduce_capacity(course_id: str, capacity: int) -> Decision:
    query = Query([QueryItem(["CourseDefined", "CourseCapacityChanged"], [f"course:{course_id}"])])

    def decide(events: Sequence[SequencedEvent]) -> list[TaggedEvent]:
        if not events:
            raise eskit.DecisionError(f'Course "{course_id}" does not exist')
        return [capacity_changed(course_id, capacity)]

    return Decision(query, decide)


# %% [wrong] the right types, but every course's
def reduce_capacity(course_id: str, capacity: int) -> Decision:
    query = Query([QueryItem(["CourseDefined", "StudentSubscribedToCourse"])])

    def decide(events: Sequence[SequencedEvent]) -> list[TaggedEvent]:
        mine = [e for e in events if f"course:{course_id}" in e.tags]
        if not any(e.type == "CourseDefined" for e in mine):
            raise eskit.DecisionError(f'Course "{course_id}" does not exist')
        students = sum(e.type == "StudentSubscribedToCourse" for e in mine)
        if students > capacity:
            raise eskit.DecisionError(f'Course "{course_id}" has {students} students: capacity {capacity} is too small')
        return [capacity_changed(course_id, capacity)]

    return Decision(query, decide)


# %% [check]
async def check_capacity() -> None:
    full = [course_defined("c1", 5), student_subscribed("s1", "c1"), student_subscribed("s2", "c1")]
    eskit.course.require(reduce_capacity("c1", 3).decide(full), "decide returns nothing yet")
    boundary(reduce_capacity("c1", 3),
             needs={"the course's definition": course_defined("c1", 5),
                    "the students joining c1": student_subscribed("s9", "c1")},
             spares={"other courses": course_defined("c2", 5),
                     "students joining other courses": student_subscribed("s1", "c2")})  # fmt: skip
    await cases(["course", "student"],
        Case("lower a course that does not exist", [], reduce_capacity("c1", 3), 'Course "c1" does not exist'),
        Case("lower below the bookings", [*full, student_subscribed("s3", "c1")], reduce_capacity("c1", 2),
             'Course "c1" has 3 students: capacity 2 is too small'),
        Case("lower to the bookings", full, reduce_capacity("c1", 2), capacity_changed("c1", 2)),
        Case("other courses do not count", [*full, student_subscribed("s3", "c2")], reduce_capacity("c1", 2),
             capacity_changed("c1", 2)),
    )  # fmt: skip
    async with fresh_dcb_store(["course", "student"]) as store:  # s3 joins between the read and the append
        await store.append(full)
        try:
            await execute(store, reduce_capacity("c1", 2),
                          between=lambda: store.append([student_subscribed("s3", "c1")]))
        except eskit.DecisionError:
            return
        raise eskit.course.Wrong("s3 joined while the capacity was lowered to 2, and both were accepted: "
                                 "3 students in 2 seats")


await eskit.course.check(check_capacity, ok="the capacity never drops below the bookings, even in a race")

# %% [markdown]
# ### Exercise 5.3 · Invoice numbers per year
#
# Now invoice numbers restart every year: 2025 has 1, 2, 3, …, and the first invoice of 2026 is 1 again.
# Write `create_yearly_invoice(year, data)`: it appends `yearly_invoice(year, number, data)` (below) with the
# next number of that year. Like `create_invoice` above, read only what you need: with
# `Decision(query, decide, last_only=True)`, `execute` hands `decide` only the **last** event matching the query.

# %%
def yearly_invoice(year: int, number: int, data: dict) -> TaggedEvent:
    return TaggedEvent("InvoiceCreated", {"year": year, "invoiceNumber": number, "invoiceData": data},
                       [f"year:{year}"])


# %% [exercise]
def create_yearly_invoice(year: int, data: dict) -> Decision:
    query = ...  # your code here

    def decide(events: Sequence[SequencedEvent]) -> list[TaggedEvent]:
        ...  # your code here

    return Decision(query, decide, last_only=True)


# %% [solution]
def create_yearly_invoice(year: int, data: dict) -> Decision:
    query = Query([QueryItem(["InvoiceCreated"], [f"year:{year}"])])

    def decide(events: Sequence[SequencedEvent]) -> list[TaggedEvent]:
        number = events[-1].data["invoiceNumber"] + 1 if events else 1
        return [yearly_invoice(year, number, data)]

    return Decision(query, decide, last_only=True)


# %% [wrong] the boundary is every invoice, of every year
def create_yearly_invoice(year: int, data: dict) -> Decision:
    query = Query([QueryItem(["InvoiceCreated"])])

    def decide(events: Sequence[SequencedEvent]) -> list[TaggedEvent]:
        number = events[-1].data["invoiceNumber"] + 1 if events else 1
        return [yearly_invoice(year, number, data)]

    return Decision(query, decide, last_only=True)


# %% [wrong] counts the events it was given (with last_only, at most one)
def create_yearly_invoice(year: int, data: dict) -> Decision:
    query = Query([QueryItem(["InvoiceCreated"], [f"year:{year}"])])

    def decide(events: Sequence[SequencedEvent]) -> list[TaggedEvent]:
        return [yearly_invoice(year, len(events) + 1, data)]

    return Decision(query, decide, last_only=True)


# %% [check]
async def check_yearly() -> None:
    eskit.course.require(create_yearly_invoice(2025, {}).query, "the decision has no query yet")
    eskit.course.require(create_yearly_invoice(2025, {}).decide([]), "decide returns nothing yet")
    y25 = [yearly_invoice(2025, n, {}) for n in (1, 2)]
    await cases(["year"],
        Case("the first invoice ever", [], create_yearly_invoice(2025, {}), yearly_invoice(2025, 1, {})),
        Case("the third invoice of 2025 (after 1 and 2)", y25, create_yearly_invoice(2025, {}), yearly_invoice(2025, 3, {})),
        Case("the first invoice of 2026 (2025's do not count)", y25, create_yearly_invoice(2026, {}),
             yearly_invoice(2026, 1, {})),
        Case("2025 goes on after 2026 began", [*y25, yearly_invoice(2026, 1, {})], create_yearly_invoice(2025, {}),
             yearly_invoice(2025, 3, {})),
    )  # fmt: skip
    async with fresh_dcb_store(["year"]) as store:  # ten at once: still 1..10, no number twice
        await asyncio.gather(*(execute(store, create_yearly_invoice(2027, {"n": n})) for n in range(10)))
        numbers = sorted(e.data["invoiceNumber"] for e in await store.read())
    assert numbers == list(range(1, 11)), f"ten concurrent invoices of 2027 got the numbers {numbers}"


await eskit.course.check(check_yearly, ok="numbers restart each year, gapless, even when ten arrive at once")

# %%
for name in names.values():
    await client.delete_store(name)
await client.close()

# %% [markdown]
# **Next:** `06_event_log_analysis.ipynb` — the event store as an event log: pandas, variants, funnels and a
# real process-mining log.
