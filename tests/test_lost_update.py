"""The seed's optimistic concurrency check, next to eskit's, in the same scenarios against the real server.

The seed publishes ``orders.<id>.<type>`` with ``Nats-Expected-Last-Subject-Sequence: lastSeq``, where
``lastSeq`` is the last sequence of a replay of ``orders.<id>.>``. The server then compares ``lastSeq`` with
the last message on the *one subject being written*, not with the aggregate's last event:

- lost update: if the aggregate's last event, as the writer read it, has the type being written, a concurrent
  event of another type slips in unnoticed and the stale decision is stored;
- false conflict: if the aggregate's last event has another type, the check fails although nobody else wrote.

eskit checks ``expected_position`` against the last message on ``orders.<id>.>`` (all types).
"""

from __future__ import annotations

import json
import time
from typing import Literal

import nats
import pytest

import eskit
from eskit import Event

Strategy = Literal["seed", "eskit"]
Outcome = Literal["accepted", "rejected"]
WRONG_LAST_SEQUENCE = 10071


async def replay_last_seq(store: eskit.EventStore, order_id: str) -> int:
    """What both writers do first: replay ``orders.<id>.>`` and keep the last sequence."""
    return (await store.read(order_id))[-1].position


async def seed_append(store: eskit.EventStore, order_id: str, event_type: str, last_seq: int) -> None:
    """The seed's publish: raw nats-py, expected last sequence on the event's own subject only."""
    payload = json.dumps({"type": event_type, "order_id": order_id, "data": {}}).encode()
    await store.client.js.publish(
        f"{store.name}.{order_id}.{event_type}",
        payload,
        stream=store.stream,
        headers={
            "Nats-Msg-Id": f"{order_id}-{event_type}-{time.time_ns()}",
            "Nats-Expected-Last-Subject-Sequence": str(last_seq),
        },
    )


async def write(
    strategy: Strategy, store: eskit.EventStore, order_id: str, event_type: str, seen: int
) -> Outcome:
    """Append one event decided on state as of position ``seen``; say whether the check let it through."""
    try:
        if strategy == "seed":
            await seed_append(store, order_id, event_type, seen)
        else:
            await store.append(order_id, [Event(event_type)], expected_position=seen)
    except nats.js.errors.APIError as exc:
        assert exc.err_code == WRONG_LAST_SEQUENCE, exc
        return "rejected"
    except eskit.ConcurrencyError as exc:
        assert exc.expected == seen
        return "rejected"
    return "accepted"


async def types(store: eskit.EventStore, order_id: str) -> list[str]:
    return [e.type for e in await store.read(order_id)]


@pytest.mark.parametrize(("strategy", "outcome"), [("seed", "accepted"), ("eskit", "rejected")])
async def test_a_stale_write_after_a_concurrent_write_of_another_type_is_lost_by_the_seed_only(
    store: eskit.EventStore, strategy: Strategy, outcome: Outcome
) -> None:
    await store.append("o1", [Event("created"), Event("item_added")])
    seen_by_a = await replay_last_seq(store, "o1")  # A: the order is open, its last event is item_added
    await store.append("o1", [Event("cancelled")], expected_position=seen_by_a)  # B cancels meanwhile
    assert await write(strategy, store, "o1", "item_added", seen_by_a) == outcome  # A adds an item
    after = {"accepted": ["item_added"], "rejected": []}[outcome]
    assert await types(store, "o1") == ["created", "item_added", "cancelled", *after]


@pytest.mark.parametrize(("strategy", "outcome"), [("seed", "rejected"), ("eskit", "rejected")])
async def test_a_stale_write_after_a_concurrent_write_of_the_same_type_is_rejected_by_both(
    store: eskit.EventStore, strategy: Strategy, outcome: Outcome
) -> None:
    await store.append("o1", [Event("created"), Event("item_added")])
    seen_by_a = await replay_last_seq(store, "o1")
    await store.append("o1", [Event("item_added")], expected_position=seen_by_a)
    assert await write(strategy, store, "o1", "item_added", seen_by_a) == outcome
    assert await types(store, "o1") == ["created", "item_added", "item_added"]


@pytest.mark.parametrize(("strategy", "outcome"), [("seed", "rejected"), ("eskit", "accepted")])
async def test_a_fresh_write_after_an_event_of_another_type_is_falsely_rejected_by_the_seed_only(
    store: eskit.EventStore, strategy: Strategy, outcome: Outcome
) -> None:
    await store.append("o1", [Event("created")])
    seen = await replay_last_seq(store, "o1")  # nobody else writes: this state is current
    assert await write(strategy, store, "o1", "item_added", seen) == outcome
    assert await store.last_position("o1") == (seen + 1 if outcome == "accepted" else seen)


async def test_the_seed_retrying_a_false_conflict_never_succeeds(store: eskit.EventStore) -> None:
    """The seed's answer to a conflict is reload and retry: for a false conflict, every retry fails again."""
    await store.append("o1", [Event("created")])
    outcomes = [
        await write("seed", store, "o1", "item_added", await replay_last_seq(store, "o1")) for _ in range(5)
    ]
    assert outcomes == ["rejected"] * 5
    assert await types(store, "o1") == ["created"]
