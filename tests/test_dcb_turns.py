"""Taking turns on a contended DCB boundary (eskit.dcb.turns): bounded rounds, tickets invisible to readers."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import unique

import eskit
from eskit.dcb import DCBStore, Query, QueryItem, SequencedEvent, TaggedEvent
from eskit.dcb.examples import Decision, create_invoice, execute

WRITERS, INVOICES = 8, 100
TICKET_AFTER = 6  # eskit.dcb.turns.TICKET_AFTER (not imported: these tests also run on the code before it)


async def numbering(url: str, name: str, w: int) -> int:
    """One writer numbering ``INVOICES`` invoices; the most rounds one of them took."""
    worst = 0
    async with await eskit.connect(url) as client:
        store = await client.dcb_store(name)
        for i in range(INVOICES):
            decision, rounds = create_invoice({"writer": w, "i": i}), 0

            def decide(events: list[SequencedEvent], inner: Decision = decision) -> list[TaggedEvent]:
                nonlocal rounds
                rounds += 1
                return inner.decide(events)

            await execute(store, Decision(decision.query, decide, last_only=True))
            worst = max(worst, rounds)
    return worst


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_a_writer_among_eight_numbering_invoices_no_longer_loses_a_dozen_rounds_in_a_row(
    client: eskit.Client, nats_url: str
) -> None:
    name = unique("invoices")
    invoices = await client.dcb_store(name)
    worst = await asyncio.gather(*(numbering(nats_url, name, w) for w in range(WRITERS)))
    numbers = [e.data["invoiceNumber"] for e in await invoices.read()]
    await client.delete_store(name)
    assert numbers == list(range(1, WRITERS * INVOICES + 1))  # safe: unique and gapless
    # live: a ticket after TICKET_AFTER lost rounds; then each other writer wins at most once before it
    assert max(worst) <= TICKET_AFTER + WRITERS, worst


async def test_a_queue_ticket_is_neither_read_nor_followed_as_an_event(client: eskit.Client) -> None:
    store = await client.dcb_store(unique("tickets"), tag_keys=["course"])
    try:
        await execute(store, create_invoice({}))
        await client.wire.request(f"{store.layout.carrier}.b0.w0", b"waiting")  # position 2
        after = await store.append([TaggedEvent("CourseDefined", {}, ["course:c1"])])
        events = await store.read()
        assert [e.type for e in events] == ["InvoiceCreated", "CourseDefined"] and events.head == after
        assert [e.type for e in await store.read(Query([QueryItem(["CourseDefined"])]))] == ["CourseDefined"]
        async with await store.subscribe(after=0) as followed:
            seen = [await asyncio.wait_for(anext(followed), 10) for _ in range(2)]
        assert [e.position for e in seen] == [1, 3]
    finally:
        await client.delete_store(store.name)


async def test_a_decision_nobody_contends_sends_no_ticket(client: eskit.Client) -> None:
    store = await client.dcb_store(unique("calm"))
    try:
        positions = [await execute(store, create_invoice({"i": i})) for i in range(5)]
        assert positions == [1, 2, 3, 4, 5] and await store.head() == 5
    finally:
        await client.delete_store(store.name)


async def test_a_ticket_left_by_a_dead_writer_holds_the_others_back_only_until_it_expires(
    client: eskit.Client,
) -> None:
    from eskit.dcb import turns as dcb_turns

    store: DCBStore = await client.dcb_store(unique("dead"))
    try:
        decision = create_invoice({})
        queue = f"{store.layout.carrier}.{dcb_turns._boundary(store, decision.query)}"
        await client.wire.request(f"{queue}.dead", dcb_turns.WAITING)  # never marked done: it grows old
        writer = dcb_turns._writers.setdefault(store, dcb_turns._Writer())
        writer.lost_at[dcb_turns._boundary(store, decision.query)] = time.monotonic()  # it lost a round lately
        start = time.monotonic()
        assert await execute(store, decision) == 2  # waited for the dead writer's ticket, then went
        assert 0.5 <= time.monotonic() - start <= dcb_turns.TURN_WAIT + 1.0
        assert [e.data["invoiceNumber"] for e in await store.read()] == [1]
    finally:
        await client.delete_store(store.name)


@pytest.mark.parametrize("attempts", [0, "3", 2.5])
async def test_take_turns_refuses_a_count_of_rounds_that_is_not_one_or_more_with_an_eskit_error(
    client: eskit.Client, attempts: object
) -> None:
    from eskit.dcb.turns import take_turns

    store = await client.dcb_store(unique("rounds"))
    try:
        with pytest.raises(eskit.ValidationError, match="attempts takes a number of rounds"):
            await take_turns(store, Query([QueryItem(["X"])]), lambda: asyncio.sleep(0), attempts=attempts)  # type: ignore[arg-type]
        assert await store.head() == 0
    finally:
        await client.delete_store(store.name)


async def test_a_decision_stored_just_before_the_connection_closes_is_returned_not_turned_into_an_error(
    client: eskit.Client, nats_url: str
) -> None:
    from eskit.dcb import turns as dcb_turns

    name = unique("closing")
    rounds = 0
    try:
        own = await eskit.connect(nats_url)
        store = await own.dcb_store(name)

        async def attempt() -> int:  # loses until it holds a ticket, then stores and the connection goes
            nonlocal rounds
            rounds += 1
            if rounds <= dcb_turns.TICKET_AFTER:
                raise eskit.ConcurrencyError(name, "boundary", expected=0, actual=1)
            position = await store.append([TaggedEvent("InvoiceCreated", {"invoiceNumber": 1})])
            await own.nc.close()
            return position

        assert await dcb_turns.take_turns(store, Query([QueryItem(["InvoiceCreated"])]), attempt) == 2
        assert rounds == dcb_turns.TICKET_AFTER + 1
        assert [e.type for e in await (await client.dcb_store(name)).read()] == ["InvoiceCreated"]
    finally:
        await client.delete_store(name)


async def test_a_long_lived_store_forgets_the_boundaries_it_lost_on_long_ago_instead_of_growing_for_ever(
    client: eskit.Client,
) -> None:
    from eskit.dcb import turns as dcb_turns

    store = await client.dcb_store(unique("forgets"))
    try:
        writer = dcb_turns._writers.setdefault(store, dcb_turns._Writer())
        writer.lost_at.update({f"old{i}": time.monotonic() - 60 for i in range(5000)})  # lost on, a minute ago
        lost = 0

        async def attempt() -> int:
            nonlocal lost
            lost += 1
            if lost == 1:
                raise eskit.ConcurrencyError(store.name, "boundary", expected=0, actual=1)
            return await store.append([TaggedEvent("InvoiceCreated", {"invoiceNumber": 1})])

        assert await dcb_turns.take_turns(store, Query([QueryItem(["InvoiceCreated"])]), attempt) == 1
        assert len(writer.lost_at) <= 1024  # the boundary just lost on, not the 5,000 cold ones
    finally:
        await client.delete_store(store.name)


async def test_a_dead_writers_ticket_stops_holding_back_a_writer_whose_clock_is_behind_the_servers(
    client: eskit.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eskit.dcb import turns as dcb_turns

    class Behind:  # this machine's wall clock a minute behind the server's (monotonic time is its own)
        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def time() -> float:
            return time.time() - 60

    monkeypatch.setattr(dcb_turns, "time", Behind)
    store: DCBStore = await client.dcb_store(unique("skew"))
    try:
        decision = create_invoice({})
        boundary = dcb_turns._boundary(store, decision.query)
        await client.wire.request(f"{store.layout.carrier}.{boundary}.dead", dcb_turns.WAITING)  # never done
        writer = dcb_turns._writers.setdefault(store, dcb_turns._Writer())
        took = []
        for _ in range(3):
            writer.lost_at[boundary] = time.monotonic()  # it lost a round lately: it looks at the queue
            start = time.monotonic()
            await execute(store, create_invoice({}))
            took.append(time.monotonic() - start)
        # the dead ticket holds it back once (until it is TICKET_SECONDS old by this machine's own count)
        assert sum(took[1:]) < dcb_turns.TICKET_SECONDS, took
        assert [e.data["invoiceNumber"] for e in await store.read()] == [1, 2, 3]
    finally:
        await client.delete_store(store.name)
