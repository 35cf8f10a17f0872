"""DCB store: queries as subject filters, append conditions checked by the server, the spec's examples."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date

import pytest
from conftest import unique

import eskit
from eskit.dcb import MAX_CARRIERS, AppendCondition, DCBStore, Query, QueryItem, TaggedEvent
from eskit.dcb_examples import (
    COURSE_KEYS,
    Case,
    account_closed,
    account_registered,
    check,
    course_defined,
    create_invoice,
    define_course,
    execute,
    invoice_created,
    register_account,
    student_subscribed,
    subscribe_student,
)
from eskit.dcb_query import Layout

COURSES = Layout("courses", ("course", "student"))


def subscribed(student: str, course: str) -> TaggedEvent:
    return TaggedEvent("Subscribed", {}, [f"course:{course}", f"student:{student}"])


def boundary(student: str, course: str) -> Query:
    return Query(
        [
            QueryItem(["Defined", "Subscribed"], [f"course:{course}"]),
            QueryItem(["Subscribed"], [f"student:{student}"]),
        ]
    )


@pytest.fixture
async def courses(client: eskit.Client) -> AsyncIterator[DCBStore]:
    name = unique("courses")
    yield await client.dcb_store(name, tag_keys=["course", "student"])
    await client.delete_store(name)


@pytest.fixture
async def untagged(client: eskit.Client) -> AsyncIterator[DCBStore]:
    name = unique("dcb")
    yield await client.dcb_store(name)
    await client.delete_store(name)


# -- queries and subjects (no server) --


def test_a_query_item_matches_any_of_its_types_and_all_of_its_tags() -> None:
    item = QueryItem(["A", "B"], ["x", "y"])
    assert item.matches("B", ["y", "x", "z"])
    assert not item.matches("C", ["x", "y"])
    assert not item.matches("A", ["x"])
    assert QueryItem(tags=["x"]).matches("anything", ["x"])


def test_an_empty_query_matches_every_event_and_items_are_ored() -> None:
    assert Query().matches("A", [])
    query = Query([QueryItem(["A"]), QueryItem(tags=["t"])])
    assert query.matches("A", []) and query.matches("B", ["t"]) and not query.matches("B", [])


def test_each_declared_tag_key_has_its_own_subject_token() -> None:
    assert COURSES.subject(subscribed("s1", "c1")) == "courses.Subscribed.c1.s1"
    assert COURSES.subject(TaggedEvent("Defined", {}, ["course:c1", "note"])) == "courses.Defined.c1._"
    assert COURSES.filter(QueryItem(["Subscribed"], ["student:s1"])) == "courses.Subscribed.*.s1"
    assert COURSES.filter(QueryItem(["A", "B"], ["course:c1", "other"])) == "courses.*.c1.*"


def test_tag_values_that_are_not_subject_tokens_are_hashed_not_rejected() -> None:
    subject = COURSES.subject(TaggedEvent("Defined", {}, ["course:a.b *>c d"]))
    token = subject.split(".")[2]
    assert token.startswith("~") and len(subject.split(".")) == 4
    assert COURSES.filter(QueryItem(tags=["course:a.b *>c d"])).split(".")[2] == token


def test_bad_tags_and_types_are_rejected_with_a_clear_message() -> None:
    with pytest.raises(eskit.ValidationError, match="two 'course:' tags"):
        COURSES.subject(TaggedEvent("Moved", {}, ["course:c1", "course:c2"]))
    with pytest.raises(eskit.ValidationError, match="control character"):
        COURSES.subject(TaggedEvent("Defined", {}, ["course:c1\n"]))
    with pytest.raises(eskit.InvalidNameError, match="event type"):
        COURSES.subject(TaggedEvent("bad.type", {}, []))
    with pytest.raises(eskit.ValidationError, match="lists"):
        QueryItem("Defined")
    with pytest.raises(eskit.ValidationError, match="tags takes a list"):
        TaggedEvent("Defined", {}, "course:c1")


def test_filters_merge_into_their_narrowest_common_filter_when_events_are_fewer() -> None:
    query = boundary("s1", "c1")
    assert COURSES.check_filters(query, 2) == ["courses.*.c1.*", "courses.Subscribed.*.s1"]
    assert COURSES.check_filters(query, 1) == ["courses.*.*.*"]
    assert COURSES.check_filters(Query(), 3) == ["courses.>"]


# -- reading and appending --


async def test_read_returns_matching_events_in_order_and_the_store_head(courses: DCBStore) -> None:
    await courses.append([TaggedEvent("Defined", {"capacity": 2}, ["course:c1"])])
    await courses.append([subscribed("s1", "c1"), subscribed("s2", "c2")])
    seen = await courses.read(boundary("s1", "c1"))
    assert [(e.position, e.type) for e in seen] == [(1, "Defined"), (2, "Subscribed")]
    assert seen.head == 3
    assert [e.position for e in await courses.read(after=1, limit=1)] == [2]
    assert (await courses.read(Query([QueryItem(tags=["student:s2"])]))).head == 3


async def test_append_fails_when_a_matching_event_arrived_after_the_read(courses: DCBStore) -> None:
    seen = await courses.read(boundary("s1", "c1"))
    await courses.append([subscribed("s9", "c1")])
    with pytest.raises(eskit.ConcurrencyError, match="position 1") as failure:
        await courses.append([subscribed("s1", "c1")], AppendCondition(boundary("s1", "c1"), seen.head))
    assert isinstance(failure.value, eskit.AppendConditionError)
    assert len(await courses.read()) == 1


async def test_a_one_event_append_over_two_items_merges_their_filters_first(courses: DCBStore) -> None:
    seen = await courses.read(boundary("s1", "c1"))
    await courses.append([subscribed("s2", "c2")])  # inside courses.*.*.*, outside the boundary
    position = await courses.append(
        [subscribed("s1", "c1")], AppendCondition(boundary("s1", "c1"), seen.head)
    )
    assert position == 2 and courses.retries == 0


async def test_exact_checks_ride_on_check_carriers_that_reads_skip(
    courses: DCBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eskit.dcb.store, "MERGED_ATTEMPTS", 0)
    seen = await courses.read(boundary("s1", "c1"))
    await courses.append([subscribed("s2", "c2")])
    position = await courses.append(
        [subscribed("s1", "c1")], AppendCondition(boundary("s1", "c1"), seen.head)
    )
    assert position == 3  # a check carrier took position 2
    assert [e.position for e in await courses.read()] == [1, 3]
    assert (await courses.last(Query())).position == 3  # type: ignore[union-attr]
    with pytest.raises(eskit.AppendConditionError):  # the second item's check is live too
        await courses.append([subscribed("s1", "c9")], AppendCondition(boundary("s1", "c9"), seen.head))


async def test_a_writers_nats_ttl_header_cannot_make_a_dcb_event_expire(
    client: eskit.Client, courses: DCBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eskit.dcb.store, "MERGED_ATTEMPTS", 0)  # exact checks: carriers need no TTL either
    seen = await courses.read(boundary("s1", "c1"))
    await courses.append([subscribed("s1", "c1")], AppendCondition(boundary("s1", "c1"), seen.head))
    subject = courses.layout.subject(subscribed("s2", "c2"))
    reply = await client.wire.request(subject, b"{}", {"Nats-TTL": "1s"})  # was stored, gone a second later
    assert b"error" in reply.data and b"TTL" in reply.data.upper()
    info = await client.wire.request(f"$JS.API.STREAM.INFO.{courses.stream}", b"")
    assert b'"allow_msg_ttl":true' not in info.data.replace(b" ", b"")
    assert [e.type for e in await courses.read()] == ["Subscribed"]


async def test_past_the_carrier_limit_filters_merge_and_unrelated_events_in_them_are_let_through(
    courses: DCBStore,
) -> None:
    wide = Query([QueryItem(["Subscribed"], [f"student:s{i}"]) for i in range(MAX_CARRIERS + 2)])
    seen = await courses.read(wide)
    await courses.append([subscribed("x", "c2")])  # inside the merged filter, outside the query
    assert (
        await courses.append([subscribed("s1", "c1")], AppendCondition(wide, seen.head)) == 2
    )  # no carriers
    await courses.append([subscribed("s3", "c2")])
    with pytest.raises(eskit.AppendConditionError, match="position 3"):
        await courses.append([subscribed("s1", "c1")], AppendCondition(wide, 2))


async def test_a_stale_guess_from_another_client_is_corrected_without_a_false_conflict(
    courses: DCBStore, nats_url: str
) -> None:
    async with await eskit.connect(nats_url) as other:
        elsewhere = await other.dcb_store(courses.name)
        seen = await courses.read(Query([QueryItem(tags=["course:c1"])]))
        await elsewhere.append([subscribed("s1", "c2"), subscribed("s2", "c2")])
        condition = AppendCondition(Query([QueryItem(tags=["course:c1"])]), seen.head)
        assert await courses.append([subscribed("s3", "c1")], condition) == 3


async def test_a_match_found_when_re_reading_a_superset_filter_fails_the_append(untagged: DCBStore) -> None:
    query = Query([QueryItem(tags=["t1"])])  # no tag keys declared: the filter is the whole store
    seen = await untagged.read(query)
    await untagged.append([TaggedEvent("A", {}, ["t2"]), TaggedEvent("B", {}, ["t1", "t3"])])
    with pytest.raises(eskit.AppendConditionError, match="position 2"):
        await untagged.append([TaggedEvent("C", {}, ["t1"])], AppendCondition(query, seen.head))


async def test_a_condition_ignores_matches_at_or_before_after(untagged: DCBStore) -> None:
    await untagged.append([TaggedEvent("A", {}, ["t1"])])
    assert await untagged.append([TaggedEvent("A", {}, ["t1"])], AppendCondition(Query(), after=1)) == 2
    with pytest.raises(eskit.AppendConditionError):
        await untagged.append(
            [TaggedEvent("A", {}, ["t1"])], AppendCondition(Query([QueryItem(["A"])]), after=1)
        )


async def test_a_two_event_append_checks_both_filters_and_is_all_or_nothing(courses: DCBStore) -> None:
    seen = await courses.read(boundary("s1", "c1"))
    await courses.append([subscribed("s1", "c7")])  # matches the student item only: the second check
    events = [TaggedEvent("Defined", {}, ["course:c1"]), subscribed("s1", "c1")]
    with pytest.raises(eskit.AppendConditionError):
        await courses.append(events, AppendCondition(boundary("s1", "c1"), seen.head))
    assert len(await courses.read()) == 1


async def test_odd_tags_and_bytes_data_round_trip_unchanged(courses: DCBStore) -> None:
    tags = ["course:a.b *>c", "zebra", "student:ünï code", "x:y:z"]
    await courses.append([TaggedEvent("Raw", b"\x00\xffbytes", tags)])
    [event] = await courses.read(Query([QueryItem(tags=["course:a.b *>c", "x:y:z"])]))
    assert event.tags == tuple(tags) and event.data == b"\x00\xffbytes"


async def test_tag_keys_are_fixed_when_the_store_is_created(client: eskit.Client, courses: DCBStore) -> None:
    with pytest.raises(eskit.ValidationError, match="was created with tag_keys"):
        await client.dcb_store(courses.name, tag_keys=["student"])
    assert (await client.dcb_store(courses.name)).layout.tag_keys == ("course", "student")
    with pytest.raises(eskit.ValidationError, match="takes a list of keys"):
        await client.dcb_store(unique("dcb"), tag_keys="course")


async def test_last_returns_the_latest_matching_event(courses: DCBStore) -> None:
    assert await courses.last(Query([QueryItem(["Subscribed"], ["course:c1"])])) is None
    await courses.append([subscribed("s1", "c1"), subscribed("s2", "c1"), subscribed("s3", "c2")])
    last = await courses.last(Query([QueryItem(["Subscribed"], ["course:c1"])]))
    assert last is not None and last.position == 2
    last = await courses.last(Query([QueryItem(["Subscribed", "Defined"], ["course:c1"])]))
    assert last is not None and last.position == 2


async def test_a_subscription_delivers_stored_then_new_matching_events(courses: DCBStore) -> None:
    await courses.append([subscribed("s1", "c1"), subscribed("s1", "c2")])
    async with await courses.subscribe(Query([QueryItem(tags=["course:c1"])]), after=0) as events:
        first = await asyncio.wait_for(anext(events), 5)
        await courses.append([subscribed("s2", "c2"), subscribed("s2", "c1")])
        second = await asyncio.wait_for(anext(events), 5)
    assert (first.position, second.position) == (1, 4)


async def test_the_spec_examples_pass_their_given_when_then_cases(client: eskit.Client) -> None:
    day = date(2025, 3, 10)
    full = [course_defined("c1", 1), student_subscribed("s2", "c1")]
    cases = [
        Case(
            "define",
            [course_defined("c1", 10)],
            define_course("c1", 15),
            'Course with id "c1" already exists',
        ),
        Case("full course", full, subscribe_student("s1", "c1"), 'Course "c1" is already fully booked'),
        Case("subscribe", full[:1], subscribe_student("s1", "c1"), student_subscribed("s1", "c1")),
    ]
    assert len(await check(client, cases, tag_keys=COURSE_KEYS, prefix=unique("case"))) == 3
    closed = [account_registered("u1", date(2025, 3, 1)), account_closed("u1", date(2025, 3, 7))]
    retention = Case("retention", closed, register_account("u1", today=day), 'Username "u1" is claimed')
    assert await check(client, [retention], tag_keys=["username"], prefix=unique("case"))
    invoices = [
        Case("second", [invoice_created(1, {})], create_invoice({"a": 1}), invoice_created(2, {"a": 1}))
    ]
    assert await check(client, invoices, tag_keys=[], prefix=unique("case"))


async def test_a_wrong_expectation_in_a_case_is_reported(client: eskit.Client) -> None:
    case = Case("wrong", [], define_course("c1", 5), "some error")
    with pytest.raises(AssertionError, match="expected error: some error, got CourseDefined"):
        await check(client, [case], tag_keys=COURSE_KEYS, prefix=unique("case"))


async def test_execute_decides_again_when_the_boundary_moved(courses: DCBStore) -> None:
    await execute(courses, define_course("c1", 2))
    barrier = asyncio.Barrier(3)
    results = await asyncio.gather(
        *(execute(courses, subscribe_student(f"s{i}", "c1"), between=barrier.wait) for i in range(3)),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["DecisionError", "int", "int"]
