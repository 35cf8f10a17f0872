"""Process managers against a real server: the checkout flow (order -> payment service -> shipping) completes
once per order, compensates a declined payment, and stays exactly once in effect when commands are repeated.

Each test runs in a learner namespace of its own, so the flow's fixed store names (orders, payments,
shipping) and the service subject (payment.charge) are the test's alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from process_flows import drop, expected, outcomes, place, unique_namespace

import eskit
from eskit.process.examples import Checkout, charge

DOC = Path(__file__).resolve().parent.parent / "docs" / "process-managers.md"


@pytest.fixture
async def flow(nats_url: str) -> AsyncIterator[eskit.Client]:
    """A client in a namespace of its own; its stores are deleted after the test."""
    async with await eskit.connect(nats_url, namespace=unique_namespace()) as client:
        try:
            yield client
        finally:
            await drop(client)


@pytest.fixture
async def payments(flow: eskit.Client) -> AsyncIterator[eskit.CommandService]:
    service = await eskit.command_service(flow, "payment.charge", store="payments", decide=charge)
    yield service
    await service.stop()


async def test_placed_orders_are_charged_and_shipped_once_and_declined_ones_cancelled(
    flow: eskit.Client, payments: eskit.CommandService
) -> None:
    orders = await flow.event_store("orders")
    await place(orders, 9)
    checkout = Checkout(flow)
    try:
        handled = await checkout.run_until_caught_up(timeout=30)
    finally:
        await checkout.close(delete_consumers=True)
    assert await outcomes(flow) == expected(9)
    assert handled == 9 + 9  # every placed order, then every payment outcome
    assert checkout.stats.commands == 18 and checkout.stats.parked == 0
    assert payments.stats == eskit.process.ServiceStats(handled=9, duplicates=0, errors=0)


async def test_a_declined_payment_cancels_the_order_and_ships_nothing(
    flow: eskit.Client, payments: eskit.CommandService
) -> None:
    orders = await flow.event_store("orders")
    await orders.append("big", [eskit.Event("placed", {"amount": 900})], expected_position=0)
    checkout = Checkout(flow)
    await checkout.run_until_caught_up(timeout=30)
    await checkout.close(delete_consumers=True)
    history = await orders.read("big")
    assert [e.type for e in history] == ["placed", "cancelled"]
    assert history[1].data == {"reason": "payment declined: over the limit of 100"}
    assert await (await flow.event_store("shipping")).read("big") == []
    [payment] = [e async for e in (await flow.event_store("payments")).replay()]
    assert (payment.type, payment.data["order"]) == ("declined", "big")
    # one flow, one correlation id: the placed event's; each event names the one that caused it
    assert payment.correlation_id == history[0].id == history[1].correlation_id
    assert history[1].causation_id == payment.id and payment.causation_id == history[0].id


async def test_a_command_sent_twice_with_one_id_is_done_once_and_answered_with_the_first_outcome(
    flow: eskit.Client, payments: eskit.CommandService
) -> None:
    replies = []
    for amount in (10, 900):  # the repeat would be declined if it were decided again
        body = json.dumps({"order": "o1", "amount": amount}).encode()
        reply = await flow.nc.request(payments.subject, body, headers={"Eskit-Command-Id": "charge-o1"}, timeout=5)
        replies.append(json.loads(reply.data))
    assert [(r["type"], r["duplicate"]) for r in replies] == [("captured", False), ("captured", True)]
    assert replies[0]["position"] == replies[1]["position"]
    stored = await (await flow.event_store("payments")).read("charge-o1")
    assert [e.type for e in stored] == ["captured"]
    assert payments.stats == eskit.process.ServiceStats(handled=1, duplicates=1, errors=0)


async def test_a_request_without_a_command_id_gets_a_service_error_and_stores_nothing(
    flow: eskit.Client, payments: eskit.CommandService
) -> None:
    reply = await flow.nc.request(payments.subject, b'{"order": "o1", "amount": 1}', timeout=5)
    assert reply.headers is not None and reply.headers["Nats-Service-Error-Code"] == "400"
    assert "Eskit-Command-Id" in reply.headers["Nats-Service-Error"]
    assert await (await flow.event_store("payments")).last_position() == 0


async def test_a_process_manager_that_lost_its_positions_issues_every_command_again_and_nothing_is_stored_twice(
    flow: eskit.Client, payments: eskit.CommandService
) -> None:
    await place(await flow.event_store("orders"), 12)
    first = Checkout(flow)
    await first.run_until_caught_up(timeout=30)
    await first.close(delete_consumers=True)
    before = {name: await (await flow.event_store(name)).last_position() for name in ("orders", "payments", "shipping")}

    again = Checkout(flow)  # same name, a fresh ":memory:" db: from position 0, every command issued again
    await again.run_until_caught_up(timeout=30)
    await again.close(delete_consumers=True)
    after = {name: await (await flow.event_store(name)).last_position() for name in ("orders", "payments", "shipping")}
    assert after == before
    assert await outcomes(flow) == expected(12)
    assert again.stats.commands == first.stats.commands == 24
    assert payments.stats.duplicates == 12 and payments.stats.handled == 12


async def test_a_payment_service_that_is_down_parks_the_order_after_bounded_retries_and_replay_completes_it(
    flow: eskit.Client,
) -> None:
    orders = await flow.event_store("orders")
    await place(orders, 2)
    checkout = Checkout(flow, max_attempts=3, retry_delay=0.01)
    await checkout.run_until_caught_up(timeout=30)  # no service: no responders, at once, three times each
    parked = await checkout.parked()
    assert [(p.event.aggregate_id, p.attempts) for p in parked] == [("o0", 3), ("o1", 3)]
    assert "no service answers on" in parked[0].reason and "payment.charge" in parked[0].reason
    assert "Checkout._placed" in parked[0].reason
    assert checkout.stats.parked == 2 and checkout.stats.retried == 4
    assert checkout.positions["orders"] == await orders.last_position()  # the other flows went on

    service = await eskit.command_service(flow, "payment.charge", store="payments", decide=charge)
    try:
        assert await checkout.replay_parked() == 2
        await checkout.run_until_caught_up(timeout=30)  # the payment outcomes the replay caused
    finally:
        await checkout.close(delete_consumers=True)
        await service.stop()
    assert await checkout.parked() == []
    assert await outcomes(flow) == expected(2)


async def test_a_service_that_does_not_answer_in_time_is_retried_then_parked_with_the_timeout_as_reason(
    flow: eskit.Client,
) -> None:
    async def slow(msg: object) -> None:  # takes the request, never answers
        return None

    sub = await flow.nc.subscribe(f"{flow.namespace}.payment.charge", cb=slow)
    await place(await flow.event_store("orders"), 1)

    class Quick(Checkout):
        @eskit.reacts_to("orders", "placed")
        def _placed(self, event: eskit.RecordedEvent) -> eskit.Request:
            return eskit.Request("payment.charge", {"order": event.aggregate_id}, timeout=0.2)

    checkout = Quick(flow, max_attempts=2, retry_delay=0.01)
    try:
        await checkout.run_until_caught_up(timeout=30)
        [parked] = await checkout.parked()
    finally:
        await checkout.close(delete_consumers=True)
        await sub.unsubscribe()
    assert parked.attempts == 2 and "no reply within 0.2s" in parked.reason


async def test_a_handler_that_returns_something_else_than_commands_parks_its_event_with_a_readable_reason(
    flow: eskit.Client,
) -> None:
    class Wrong(eskit.ProcessManager):
        @eskit.reacts_to("orders", "placed")
        def _placed(self, event: eskit.RecordedEvent) -> object:
            return "charge it"

    await place(await flow.event_store("orders"), 1)
    wrong = Wrong(flow)
    try:
        await wrong.run_until_caught_up(timeout=30)
        [parked] = await wrong.parked()
    finally:
        await wrong.close(delete_consumers=True)
    assert parked.attempts == 1
    assert parked.reason == (
        "Wrong._placed: returned 'charge it'; return eskit.Append, eskit.Request, a list of them, or None"
    )


def test_a_process_manager_that_reacts_to_nothing_is_refused_with_the_fix() -> None:
    class Idle(eskit.ProcessManager):
        pass

    with pytest.raises(eskit.ProcessError, match=r'add methods marked @reacts_to\("orders", "placed"\)'):
        Idle(None)  # type: ignore[arg-type]


def test_reacts_to_refuses_a_store_or_type_that_is_not_one_subject_token() -> None:
    with pytest.raises(eskit.InvalidNameError, match="event type"):
        eskit.reacts_to("orders", "placed.twice")


async def test_the_walkthrough_in_the_docs_runs_and_ships_o1_and_cancels_o2(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = DOC.read_text().split("## Walk-through", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    namespace = unique_namespace()
    monkeypatch.setenv("ESKIT_LEARNER", namespace)  # the walk-through's connect() is in it
    monkeypatch.setenv("NATS_URL", nats_url)
    source = "async def walk():\n" + textwrap.indent("\n".join(blocks), "    ") + "\n    return locals()\n"
    scope: dict[str, object] = {}
    exec(compile(source, str(DOC), "exec"), scope)
    seen = await scope["walk"]()  # type: ignore[operator]
    client = seen["client"]
    try:
        assert [(e.aggregate_id, e.type) for e in await seen["shipping"].read("o1")] == [("o1", "requested")]
        assert [e.type for e in await seen["orders"].read("o2")] == ["placed", "cancelled"]
        assert seen["checkout"].stats.handled == 4 and list(seen["df"]["order"]) == ["o1", "o2"]
    finally:
        await drop(client)
        await client.close()
    assert os.environ["ESKIT_LEARNER"] == namespace


def test_a_command_id_derived_along_a_long_chain_of_steps_stays_one_short_subject_token() -> None:
    event_id = "x" * 32
    for _ in range(20):  # each step's event id is derived from the last step's command id
        event_id = eskit.process.command_id("Checkout", "orders", 1, event_id, 0) + "-0"
    assert len(event_id) < 100 and eskit.events.check_token(event_id, "id") == event_id
    assert eskit.process.command_id("c", "s", 1, "y" * 65, 0) == eskit.process.command_id("c", "s", 2, "y" * 65, 0)


async def test_a_process_manager_running_in_the_background_completes_flows_placed_while_it_runs(
    flow: eskit.Client, payments: eskit.CommandService
) -> None:
    checkout = Checkout(flow, max_wait=0.1)
    checkout.start()
    try:
        await place(await flow.event_store("orders"), 6)
        await checkout.run_until_caught_up(timeout=30)  # running: waits for the background task
        assert await outcomes(flow) == expected(6)
        await place(await flow.event_store("orders"), 3, first=6)
        assert await checkout.run_until_caught_up(timeout=30) == 6
        assert checkout.running and checkout.stats.error is None
    finally:
        await checkout.close(delete_consumers=True)
    assert not checkout.running
    assert await outcomes(flow) == expected(9)


async def test_a_command_the_service_refuses_is_parked_at_once_without_retries(flow: eskit.Client) -> None:
    def refuse(command: dict[str, object]) -> eskit.Event:
        raise eskit.DecisionError(f"order {command['order']} is on a blocked list")

    service = await eskit.command_service(flow, "payment.charge", store="payments", decide=refuse)
    await place(await flow.event_store("orders"), 1)
    checkout = Checkout(flow, retry_delay=0.01)
    try:
        await checkout.run_until_caught_up(timeout=30)
        [parked] = await checkout.parked()
    finally:
        await checkout.close(delete_consumers=True)
        await service.stop()
    assert parked.attempts == 1 and checkout.stats.retried == 0
    assert "answered 400 DecisionError: order o0 is on a blocked list" in parked.reason
    assert await (await flow.event_store("payments")).last_position() == 0


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (eskit.Append("no.such.store", "o0", [eskit.Event("x")]), "InvalidNameError: store name"),
        (eskit.Append("shipping", "o0", [{"type": "x"}]), "events must be eskit.Event objects, got {'type': 'x'}"),
        (eskit.Append("shipping", "o0", []), "events must be a non-empty list of eskit.Event"),
        (eskit.Request("payment charge"), "a service subject is tokens"),
        (eskit.Request("payment.charge", 5), "data takes a JSON object"),  # type: ignore[arg-type]
        (eskit.Append(None, "o0", [eskit.Event("x")]), "store name"),  # type: ignore[arg-type]
        (eskit.Append("shipping", 7, [eskit.Event("x")]), "aggregate id"),  # type: ignore[arg-type]
        (eskit.Append("shipping", "o0", [eskit.Event("x")], expected_position="0"), "expected_position"),  # type: ignore[arg-type]
        (eskit.Request("payment.charge", {"at": object()}), "request"),
        (eskit.Request("payment.charge", {}, timeout=-1), "timeout takes a number of seconds"),
        (eskit.Request("payment.charge", {}, timeout="2"), "timeout takes a number of seconds"),  # type: ignore[arg-type]
    ],
)
async def test_a_malformed_command_is_parked_at_once_with_a_readable_reason(
    flow: eskit.Client, command: eskit.process.Command, reason: str
) -> None:
    class Careless(eskit.ProcessManager):
        @eskit.reacts_to("orders", "placed")
        def _placed(self, event: eskit.RecordedEvent) -> eskit.process.Command:
            return command

    await place(await flow.event_store("orders"), 1)
    careless = Careless(flow, retry_delay=0.01)
    try:
        await careless.run_until_caught_up(timeout=30)
        [parked] = await careless.parked()
    finally:
        await careless.close(delete_consumers=True)
    assert parked.attempts == 1 and careless.stats.retried == 0
    assert parked.reason.startswith("Careless._placed: ") and reason in parked.reason
    assert "\n" not in parked.reason


async def test_two_copies_of_a_service_answering_one_command_at_once_store_one_outcome(flow: eskit.Client) -> None:
    copies = [await eskit.command_service(flow, "payment.charge", store="payments", decide=charge) for _ in range(2)]
    body = json.dumps({"order": "o1", "amount": 10}).encode()
    try:
        replies = await asyncio.gather(*(
            flow.nc.request(copies[0].subject, body, headers={"Eskit-Command-Id": "same"}, timeout=5)
            for _ in range(10)
        ))  # fmt: skip
    finally:
        for copy in copies:
            await copy.stop()
    answers = [json.loads(r.data) for r in replies]
    assert {(a["type"], a["position"]) for a in answers} == {("captured", answers[0]["position"])}
    assert sum(not a["duplicate"] for a in answers) == 1
    assert sum(c.stats.handled for c in copies) == 1 and sum(c.stats.duplicates for c in copies) == 9
    assert len(await (await flow.event_store("payments")).read("same")) == 1


async def test_a_repeated_command_is_not_decided_again_so_a_decide_with_a_side_effect_acts_once(
    flow: eskit.Client,
) -> None:
    calls: list[str] = []

    def charge_card(command: dict[str, object]) -> eskit.Event:  # the side effect: a card charged
        calls.append(str(command["order"]))
        return eskit.Event("captured", dict(command))

    service = await eskit.command_service(flow, "payment.charge", store="payments", decide=charge_card)
    body = json.dumps({"order": "o1", "amount": 10}).encode()
    try:
        sequential = []
        for _ in range(2):
            reply = await flow.nc.request(service.subject, body, headers={"Eskit-Command-Id": "c1"}, timeout=5)
            sequential.append(json.loads(reply.data))
        at_once = await asyncio.gather(*(
            flow.nc.request(service.subject, body, headers={"Eskit-Command-Id": "c2"}, timeout=5) for _ in range(10)
        ))  # fmt: skip
    finally:
        await service.stop()
    assert [r["duplicate"] for r in sequential] == [False, True]
    assert calls == ["o1", "o1"]  # once for c1, once for c2: repeats are answered from the store
    assert sum(not json.loads(r.data)["duplicate"] for r in at_once) == 1


async def test_a_credential_in_a_failing_handler_or_service_is_masked_in_the_parked_reason_and_the_reply(
    flow: eskit.Client,
) -> None:
    def leaky(command: dict[str, object]) -> eskit.Event:
        raise RuntimeError("the bank at https://shop:hunter2@bank.example/api refused")

    service = await eskit.command_service(flow, "payment.charge", store="payments", decide=leaky)

    class Leaky(eskit.ProcessManager):
        @eskit.reacts_to("orders", "placed")
        def _placed(self, event: eskit.RecordedEvent) -> eskit.process.Command:
            if event.aggregate_id == "o0":
                raise RuntimeError("cannot reach nats://writer:s3cret@db:4222")
            return eskit.Request("payment.charge", {"order": event.aggregate_id})

    await place(await flow.event_store("orders"), 2)
    leaking = Leaky(flow, retry_delay=0.01, max_attempts=1)
    try:
        reply = await flow.nc.request(service.subject, b"{}", headers={"Eskit-Command-Id": "c1"}, timeout=5)
        await leaking.run_until_caught_up(timeout=30)
        parked = await leaking.parked()
    finally:
        await leaking.close(delete_consumers=True)
        await service.stop()
    assert reply.headers is not None and "hunter2" not in reply.headers["Nats-Service-Error"]
    assert "https://shop:***@bank.example/api" in reply.headers["Nats-Service-Error"]
    assert len(parked) == 2
    reasons = " ".join(p.reason for p in parked)
    assert "s3cret" not in reasons and "hunter2" not in reasons and "nats://writer:***@db:4222" in reasons


async def test_a_process_manager_that_lost_its_positions_after_the_duplicate_window_cancels_no_order_twice(
    flow: eskit.Client, payments: eskit.CommandService
) -> None:
    orders = await flow.event_store("orders", duplicate_window=0.2)  # the cancellations: no expected_position
    await place(orders, 6)
    first = Checkout(flow)
    await first.run_until_caught_up(timeout=30)
    await first.close()
    probe = eskit.Event("probe")
    stored = await orders.append("probe", [probe])
    for _ in range(200):  # bounded: 10 s, until the window is over
        if await orders.append("probe", [probe]) != stored:
            break
        await asyncio.sleep(0.05)

    again = Checkout(flow)  # a restarted kernel: a fresh ":memory:" db, every event handled again
    await again.run_until_caught_up(timeout=30)
    await again.close(delete_consumers=True)
    assert await outcomes(flow) == expected(6)
    assert again.stats.checked > 0  # the consumer of the first run is there: its Appends are looked for


async def outlive_the_window(orders: eskit.EventStore) -> None:
    """Return once an event appended again with the same id is stored again: the duplicate window is over."""
    probe = eskit.Event("probe")
    stored = await orders.append("probe", [probe])
    for _ in range(200):  # bounded: 10 s, until the window is over
        if await orders.append("probe", [probe]) != stored:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the duplicate window of orders did not end within 10 s")


async def test_a_brand_new_process_manager_on_stored_events_reads_for_no_append_before_issuing_it(
    flow: eskit.Client, payments: eskit.CommandService
) -> None:
    await place(await flow.event_store("orders"), 12)
    checkout = Checkout(flow)  # no position file, and no consumer of an earlier run on the server
    try:
        await checkout.run_until_caught_up(timeout=30)
    finally:
        await checkout.close(delete_consumers=True)
    assert await outcomes(flow) == expected(12)
    assert expected(12)["cancelled"]  # there were Appends without expected_position: cancellations
    assert checkout.stats.checked == 0


async def test_a_process_manager_that_lost_its_positions_checks_its_appends_and_a_crash_while_repositioning_too(
    flow: eskit.Client, payments: eskit.CommandService
) -> None:
    orders = await flow.event_store("orders", duplicate_window=0.2)  # the cancellations: no expected_position
    await place(orders, 6)
    first = Checkout(flow)
    await first.run_until_caught_up(timeout=30)
    consumers = [feed._consumer for feed in first._feeds]
    await first.close()
    for consumer in consumers:  # killed between deleting its consumer and creating it again: only the marker
        await consumer._marker(create=True)  # type: ignore[attr-defined]
        assert await consumer.delete()
    await outlive_the_window(orders)

    again = Checkout(flow)  # a fresh ":memory:" db, and no consumer: the marker says an earlier run issued
    await again.run_until_caught_up(timeout=30)
    markers = [await c._exists(c.marker) for c in consumers]  # type: ignore[attr-defined]
    await again.close(delete_consumers=True)
    assert await outcomes(flow) == expected(6)
    assert again.stats.checked > 0
    assert markers == [False, False]  # gone once the consumers stand again


async def test_a_process_manager_given_a_store_with_personal_fields_sees_them_in_clear_also_in_a_replay(
    flow: eskit.Client,
) -> None:
    pytest.importorskip("cryptography")
    personal = eskit.Personal({"registered": ["email"]}, subject="customer", bucket="keys")
    customers = await flow.event_store("customers", privacy=personal)
    mailed: list[object] = []

    def welcome(command: dict[str, object]) -> eskit.Event:
        mailed.append(command["email"])
        return eskit.Event("sent", {"customer": command["customer"], "email": command["email"]})

    class Welcome(eskit.ProcessManager):
        @eskit.reacts_to("customers", "registered")
        def _registered(self, event: eskit.RecordedEvent) -> eskit.process.Command:
            data = {"customer": event.aggregate_id, "email": event.data["email"]}
            return eskit.Request("mail.welcome", data, timeout=1)

    for n in range(2):
        await customers.append(f"c{n}", [eskit.Event("registered", {"customer": f"c{n}", "email": f"c{n}@x.org"})])
    welcomer = Welcome(flow, stores={"customers": customers}, retry_delay=0.01, max_attempts=1)
    try:
        await welcomer.run_until_caught_up(timeout=30)  # no mail service yet: both parked
        assert len(await welcomer.parked()) == 2
        private = eskit.Personal({"sent": ["email"]}, subject="customer", bucket="keys")
        mails = await flow.event_store("mails", privacy=private)
        service = await eskit.command_service(flow, "mail.welcome", store=mails, decide=welcome)
        try:
            assert await welcomer.replay_parked() == 2
        finally:
            await service.stop()
        stored = await eskit.to_dataframe(await flow.event_store("mails"))  # opened plainly: what the stream holds
    finally:
        await welcomer.close(delete_consumers=True)
        for name in ("customers", "customers_parked", "mails"):
            await flow.delete_store(name)
        await flow.wire.request(f"$JS.API.STREAM.DELETE.KV_{flow.store_name('keys')}", b"")
    assert sorted(mailed) == ["c0@x.org", "c1@x.org"]
    assert len(stored) == 2 and all(str(e).startswith("eskit-pii:") for e in stored["email"])


def test_a_process_manager_refuses_stores_that_are_not_the_stores_of_those_names(flow: eskit.Client) -> None:
    with pytest.raises(eskit.ValidationError, match="stores maps a store name to the store opened under it"):
        Checkout(flow, stores={"orders": "orders"})  # type: ignore[dict-item]


async def test_a_second_manager_of_one_name_started_in_one_process_stops_the_first_instead_of_running_beside_it(
    flow: eskit.Client, payments: eskit.CommandService, tmp_path: Path
) -> None:
    orders = await flow.event_store("orders")
    await place(orders, 6)
    db = tmp_path / "checkout.db"
    first, second = Checkout(flow, db=db), Checkout(flow, db=db)  # a notebook cell run twice
    try:
        first.start()
        await first.run_until_caught_up(timeout=30)
        second.start()
        await place(orders, 6, first=6)
        await second.run_until_caught_up(timeout=30)
        assert not first.running and second.running
    finally:
        await first.close(delete_consumers=True)
        await second.close(delete_consumers=True)
    assert await outcomes(flow) == expected(12)
    assert payments.stats.duplicates == 0  # nothing was issued twice: no second instance beside the first


async def test_stopping_a_service_whose_decide_hangs_returns_after_a_bounded_wait(flow: eskit.Client) -> None:
    async def hang(command: dict[str, object]) -> eskit.Event:
        await asyncio.Event().wait()  # a payment provider that never answers
        raise AssertionError("unreachable")

    service = await eskit.command_service(flow, "payment.charge", store="payments", decide=hang)
    headers = {"Eskit-Command-Id": "c1"}
    asked = asyncio.ensure_future(flow.nc.request(service.subject, b"{}", headers=headers, timeout=30))
    for _ in range(200):  # bounded: 10 s, until the service is deciding
        if service._tasks:
            break
        await asyncio.sleep(0.05)
    assert service._tasks
    await asyncio.wait_for(service.stop(), 20)  # before: waited for ever
    asked.cancel()
    assert not service._tasks and await (await flow.event_store("payments")).last_position() == 0
