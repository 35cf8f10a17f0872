"""The README's ten lines as a script: `.venv/bin/python examples/quickstart.py`.

Uses NATS_URL if it is set, else starts an embedded nats-server for the run. The store it writes is removed
at the end, so the script can run again.
"""

from __future__ import annotations

import asyncio
import uuid

import eskit


async def main() -> None:
    async with await eskit.connect() as client:  # NATS_URL if set, else an embedded nats-server
        name = f"quickstart{uuid.uuid4().hex[:8]}"
        orders = await client.event_store(name)  # stream QUICKSTART..., subjects <name>.<id>.<type>
        try:
            pos = await orders.append("123", [eskit.Event("created", {"customer": "c1"})], expected_position=0)
            pos = await orders.append(
                "123",
                [eskit.Event("item_added", {"sku": "A1"}), eskit.Event("item_added", {"sku": "B2"})],
                expected_position=pos,
            )
            for event in await orders.read("123"):  # one round trip (batch Direct Get), no consumer
                print(event.position, event.aggregate_id, event.type, event.data)
        finally:
            await client.delete_store(name)


if __name__ == "__main__":
    asyncio.run(main())
