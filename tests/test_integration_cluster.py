"""Integration events on a 3-node cluster: the public stream is replicated like its source and the server's
copy keeps every public event once, in order, while appends go on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import unique

import eskit
from eskit import Event
from eskit.cluster import EmbeddedCluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(3) as c:
        yield c


async def test_a_public_stream_on_a_cluster_has_three_replicas_and_every_public_event_once_in_order(
    cluster: EmbeddedCluster,
) -> None:
    async with await eskit.connect(cluster.url) as client:
        orders = await client.event_store(unique("orders"))
        public = await client.publish_integration(orders, f"{orders.name}-public", types=["placed"])
        try:
            info = await client.js.stream_info(public.stream)
            assert info.config.num_replicas == 3
            for start in range(0, 300, 100):  # appended while the server copies
                await orders.append_many([(f"o{i}", [Event("placed", {"n": i}), Event("noted")], None)
                                          for i in range(start, start + 100)])  # fmt: skip
            await public.wait_for(timeout=30)
            seen = [e.data["n"] async for e in public.store.replay()]
            assert seen == list(range(300))
        finally:
            await public.delete()
            await client.delete_store(orders.name)
