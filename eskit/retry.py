"""Command handlers that retry on a concurrency conflict: reload, decide again, bounded, with jitter.

>>> await run_command(orders, Order, "123", lambda order: order.add_item("A1"))     # doctest: +SKIP
812

The seed retries by calling itself again at once, forever: under contention every writer hammers the
server in lock-step, and a check that can never pass (its false conflict) never ends. Here each attempt
reloads the aggregate, runs the decision again on fresh state, and waits a random, growing delay
("full jitter") before the next; after ``attempts`` tries the last :class:`ConcurrencyError` is raised.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import ConcurrencyError

if TYPE_CHECKING:
    from .aggregate import Aggregate
    from .store import EventStore

T = TypeVar("T")
A = TypeVar("A", bound="Aggregate")


async def retry_on_conflict(
    attempt: Callable[[], Awaitable[T]],
    *,
    attempts: int = 5,
    base_delay: float = 0.005,
    max_delay: float = 0.25,
) -> T:
    """Run ``attempt()`` until it does not raise :class:`ConcurrencyError`, at most ``attempts`` times.

    ``attempt`` must do the whole cycle (load, decide, save), so each try decides on fresh state.

    >>> async def add_item():
    ...     order = await orders.load(Order, "123")
    ...     order.add_item("A1")
    ...     return await orders.save(order)
    >>> await retry_on_conflict(add_item, attempts=5)                              # doctest: +SKIP
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    for n in range(attempts):
        try:
            return await attempt()
        except ConcurrencyError as exc:
            if n == attempts - 1:
                exc.add_note(f"gave up after {attempts} attempts: allow more, or reduce contention on it")
                raise
        await asyncio.sleep(random.uniform(0, min(max_delay, base_delay * 2**n)))
    raise AssertionError("unreachable")


async def run_command(
    store: EventStore, cls: type[A], aggregate_id: str, decide: Callable[[A], Any], *, attempts: int = 5
) -> int:
    """Load ``cls`` ``aggregate_id``, call ``decide(aggregate)`` (a command), save; retry on conflicts.

    Returns the position of the last stored event (the aggregate's position if nothing was recorded).
    """

    async def attempt() -> int:
        aggregate = await store.load(cls, aggregate_id)
        decide(aggregate)
        return await store.save(aggregate)

    return await retry_on_conflict(attempt, attempts=attempts)
