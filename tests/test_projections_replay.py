"""A regression test for the store's multi-filter replay, which projections rebuild from."""

from __future__ import annotations

import asyncio

import eskit


async def test_a_replay_over_several_filters_is_a_consistent_cut_while_others_append(
    store: eskit.EventStore,
) -> None:
    async def write() -> None:
        for i in range(20):
            await store.append_many(
                [(f"w{i}-{j}", [eskit.Event("shipped" if j % 2 else "created")], 0) for j in range(50)]
            )

    await store.append("first", [eskit.Event("created"), eskit.Event("shipped")])
    writer = asyncio.ensure_future(write())
    cuts = 0
    try:
        while not writer.done() and cuts < 200:
            seen = [
                e.position
                async for e in store.replay(subjects=[f"{store.name}.*.created", f"{store.name}.*.shipped"])
            ]
            # every event up to the last one seen was seen: nothing of one filter is missing at the end
            assert seen == list(range(1, seen[-1] + 1))
            cuts += 1
    finally:
        await writer
    assert cuts > 0
