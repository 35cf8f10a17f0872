"""8 writers x 200 decisions over the three DCB examples: invariants hold, disjoint writers never conflict.

Each writer has its own connection. Contended decisions (shared courses, popular usernames, invoices) go
through ``execute``, which decides again when the boundary moved; disjoint decisions (a writer's own course,
own usernames) are tried exactly once, so a conflict error there would surface and fail the test.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import date

import pytest
from conftest import unique

import eskit
from eskit.dcb import AppendCondition, DCBStore, Query, QueryItem
from eskit.dcb_examples import (
    COURSE_KEYS,
    USER_KEYS,
    Decision,
    create_invoice,
    define_course,
    execute,
    register_account,
    subscribe_student,
)

WRITERS, DECISIONS, SHARED_COURSES, CAPACITY, POPULAR_NAMES = 8, 200, 4, 10, 20
TODAY = date(2025, 3, 1)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def once(store: DCBStore, decision: Decision) -> int:
    """One read-decide-append, no retry: a conflict error propagates."""
    seen = await store.read(decision.query)
    return await store.append(decision.decide(seen), AppendCondition(decision.query, seen.head))


async def writer(url: str, names: tuple[str, str, str], w: int) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    async with await eskit.connect(url) as client:
        courses, users, invoices = [await client.dcb_store(n) for n in names]
        await execute(courses, define_course(f"own{w}", DECISIONS))
        for i in range(DECISIONS):
            kind = ("shared", "own-course", "popular", "own-name", "invoice")[i % 5]
            try:
                if kind == "shared":
                    await execute(courses, subscribe_student(f"w{w}-{i}", f"shared{i % SHARED_COURSES}"))
                elif kind == "own-course":
                    await once(courses, subscribe_student(f"w{w}-{i}", f"own{w}"))
                elif kind == "popular":
                    await execute(users, register_account(f"popular{i // 5 % POPULAR_NAMES}", today=TODAY))
                elif kind == "own-name":
                    await once(users, register_account(f"w{w}-name{i}", today=TODAY))
                else:
                    await execute(invoices, create_invoice({"writer": w, "i": i}))
                outcomes[f"{kind} ok"] += 1
            except eskit.DecisionError:
                outcomes[f"{kind} refused"] += 1
    return outcomes


@pytest.fixture
async def stores(client: eskit.Client) -> AsyncIterator[tuple[DCBStore, DCBStore, DCBStore]]:
    names = unique("courses"), unique("users"), unique("invoices")
    made = (
        await client.dcb_store(names[0], tag_keys=COURSE_KEYS),
        await client.dcb_store(names[1], tag_keys=USER_KEYS),
        await client.dcb_store(names[2]),
    )
    for c in range(SHARED_COURSES):
        await execute(made[0], define_course(f"shared{c}", CAPACITY))
    yield made
    for name in names:
        await client.delete_store(name)


async def test_concurrent_writers_keep_every_invariant_and_disjoint_ones_never_conflict(
    stores: tuple[DCBStore, DCBStore, DCBStore], nats_url: str
) -> None:
    courses, users, invoices = stores
    names = (courses.name, users.name, invoices.name)
    results = await asyncio.gather(*(writer(nats_url, names, w) for w in range(WRITERS)))
    total = sum(results, Counter[str]())
    per_kind = DECISIONS // 5 * WRITERS
    assert total["own-course ok"] == total["own-name ok"] == total["invoice ok"] == per_kind, total

    subscriptions = await courses.read(Query([QueryItem(["StudentSubscribedToCourse"])]))
    per_course = Counter(e.data["courseId"] for e in subscriptions)
    assert all(per_course[f"shared{c}"] == CAPACITY for c in range(SHARED_COURSES)), per_course
    assert total["shared ok"] == CAPACITY * SHARED_COURSES
    assert max(Counter(e.data["studentId"] for e in subscriptions).values()) <= 5

    claims = Counter(e.data["username"] for e in await users.read(Query([QueryItem(["AccountRegistered"])])))
    assert set(claims.values()) == {1} and total["popular ok"] == POPULAR_NAMES, claims

    numbers = [e.data["invoiceNumber"] for e in await invoices.read()]
    assert numbers == list(range(1, per_kind + 1))


async def test_four_writers_on_disjoint_courses_no_longer_resend_about_two_appends_per_decision(
    client: eskit.Client, nats_url: str
) -> None:
    """A one-event decision over a course and a student is checked on their merged filter (every event), so
    disjoint writers move it under each other; re-sent at once they collided again in step (~2 re-sends per
    decision, and after 8 a slow staged batch). A doubling random pause spreads them out."""
    name, per_writer = unique("disjoint"), 60
    await client.dcb_store(name, tag_keys=COURSE_KEYS)
    clients = [await eskit.connect(nats_url) for _ in range(4)]
    try:
        stores = [await c.dcb_store(name) for c in clients]
        for w, store in enumerate(stores):
            await once(store, define_course(f"own{w}", per_writer))

        async def decide(w: int, store: DCBStore) -> None:
            for i in range(per_writer):
                await once(store, subscribe_student(f"w{w}-{i}", f"own{w}"))  # a conflict error would fail

        await asyncio.gather(*(decide(w, s) for w, s in enumerate(stores)))
        retries = sum(s.retries for s in stores) / (4 * per_writer)
        assert retries < 1.5, f"{retries:.2f} internal re-sends per decision"
    finally:
        for c in clients:
            await c.close()
        await client.delete_store(name)
