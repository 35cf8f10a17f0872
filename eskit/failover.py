"""Appending through a leader election: retry the *same* events; never take your own write for a conflict.

>>> pos = await append_through_failover(orders, "123", [Event("paid")], expected_position=7)  # doctest: +SKIP

While a replicated stream elects a new leader (its old one died), an append times out
(:class:`~eskit.errors.StoreTimeoutError`) or finds nobody to answer
(:class:`~eskit.errors.StoreUnavailableError`).
Retrying with the same :class:`~eskit.events.Event` objects is safe: their ids travel as ``Nats-Msg-Id``, so
the server stores them once. If the first attempt did land, the retry gets a conflict or a duplicate; eskit
then looks for its own event ids. That look-up is a Direct Get, which any replica may answer, and a replica
can lag behind the leader — so here it first asks the leader (``$JS.API.STREAM.MSG.GET``, read-after-write
coherent) how far the aggregate goes, and waits until the read has caught up with that before deciding.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .errors import ConcurrencyError, DuplicateEventError, StoreTimeoutError, StoreUnavailableError
from .events import Event, stored_run

if TYPE_CHECKING:
    from .store import EventStore

TRANSIENT = (StoreTimeoutError, StoreUnavailableError)
PAUSE = 0.05  # seconds between attempts


async def append_through_failover(
    store: EventStore,
    aggregate_id: str,
    events: Sequence[Event],
    *,
    expected_position: int | None = None,
    within: float = 30.0,
) -> int:
    """``store.append(...)``, retried with the same events for up to ``within`` seconds of failover.

    A conflict on the first attempt is a real one (raised: reload and decide again); a conflict after a
    retry is checked against the leader, and returns the position where the earlier attempt stored them.
    """
    deadline = time.monotonic() + within
    retried = False
    while True:
        try:
            return await store.append(aggregate_id, events, expected_position=expected_position)
        except TRANSIENT:
            if time.monotonic() > deadline:
                raise
        except (ConcurrencyError, DuplicateEventError):
            if not retried:
                raise
            try:
                found = await stored_position(store, aggregate_id, events, after=expected_position or 0)
            except TRANSIENT:
                if time.monotonic() > deadline:
                    raise
                found = None  # the leader is still being elected: try the append again
            else:
                if found is None:
                    raise
                return found
        retried = True
        await asyncio.sleep(PAUSE)


async def stored_position(
    store: EventStore, aggregate_id: str, events: Sequence[Event], *, after: int = 0, within: float = 5.0
) -> int | None:
    """Position of the last of ``events`` if stored (contiguous, in order) after ``after``, else None.

    Read-after-write coherent: the read is repeated until it reaches the aggregate's last position on the
    stream's leader.
    """
    return stored_run(await store.read_reaching(aggregate_id, after=after, within=within), events)
