"""Helpers the process manager tests, its crash worker and its benchmark share: place orders, count outcomes.

client = await eskit.connect(namespace=unique_namespace())   # the stores orders/payments/shipping of one test
last = await place(orders, 10)                               # o0..o9; every third amount is declined
await outcomes(client) == expected(10)
"""

from __future__ import annotations

import uuid
from collections import Counter

import eskit

STORES = ("orders", "payments", "shipping")


def unique_namespace() -> str:
    return f"pm{uuid.uuid4().hex[:10]}"


def amount(i: int) -> int:
    """Order ``o<i>``'s amount: every third one over the payment service's limit (declined)."""
    return 500 if i % 3 == 2 else 10 + i % 50


async def place(orders: eskit.EventStore, n: int, *, first: int = 0) -> int:
    """Orders ``o<first>`` .. ``o<first+n-1>``, each ``placed`` once; returns the last position."""
    placed = [(f"o{i}", [eskit.Event("placed", {"amount": amount(i)})], 0) for i in range(first, first + n)]
    return max(await orders.append_many(placed))


def expected(n: int, *, first: int = 0) -> dict[str, Counter[str]]:
    """What every flow ends with, once: per store, how many events of each type per order."""
    declined = {f"o{i}" for i in range(first, first + n) if amount(i) > 100}
    captured = {f"o{i}" for i in range(first, first + n)} - declined
    return {
        "payments": Counter({**{f"{o}/captured": 1 for o in captured}, **{f"{o}/declined": 1 for o in declined}}),
        "shipping": Counter({f"{o}/requested": 1 for o in captured}),
        "cancelled": Counter({f"{o}/cancelled": 1 for o in declined}),
    }


async def outcomes(client: eskit.Client) -> dict[str, Counter[str]]:
    """Per store, how many events of each type per order were stored (payments name their order in data)."""
    seen: dict[str, Counter[str]] = {"payments": Counter(), "shipping": Counter(), "cancelled": Counter()}
    async for e in (await client.event_store("payments")).replay():
        seen["payments"][f"{e.data['order']}/{e.type}"] += 1
    async for e in (await client.event_store("shipping")).replay():
        seen["shipping"][f"{e.aggregate_id}/{e.type}"] += 1
    async for e in (await client.event_store("orders")).replay():
        if e.type == "cancelled":
            seen["cancelled"][f"{e.aggregate_id}/{e.type}"] += 1
    return seen


async def drop(client: eskit.Client) -> None:
    """Delete the test's stores and their dead-letter streams."""
    for name in STORES:
        await client.delete_store(name)
        await client.delete_store(f"{name}_parked")
