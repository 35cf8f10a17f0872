"""append_through_failover on a single server: what it returns, and that a first conflict stays a conflict.

The retry path itself (timeouts and elections) is exercised by tests/test_fault.py on a real cluster.
"""

from __future__ import annotations

import pytest

import eskit
from eskit import ConcurrencyError, Event
from eskit.failover import append_through_failover, stored_position


async def test_it_appends_like_append_when_nothing_fails(store: eskit.EventStore) -> None:
    first = await append_through_failover(store, "1", [Event("created")], expected_position=0)
    assert await append_through_failover(store, "1", [Event("paid")], expected_position=first) == first + 1


async def test_a_conflict_on_the_first_attempt_is_a_real_one_and_is_raised(store: eskit.EventStore) -> None:
    await store.append("1", [Event("created")], expected_position=0)
    with pytest.raises(ConcurrencyError):
        await append_through_failover(store, "1", [Event("created")], expected_position=0)


async def test_stored_position_finds_stored_events_and_only_those(store: eskit.EventStore) -> None:
    pair = [Event("created"), Event("paid")]
    position = await store.append("1", pair)
    await store.append("1", [Event("shipped")])
    assert await stored_position(store, "1", pair) == position
    assert await stored_position(store, "1", pair, after=position) is None
    assert await stored_position(store, "1", [Event("created")]) is None
    assert await stored_position(store, "never-written", pair) is None
