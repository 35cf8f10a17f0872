"""The seed's event-sourcing pattern (shared/seed/event-sourcing-pattern.md, Go), transcribed to nats-py.

These are the baselines eskit is measured against; they copy the seed's behaviour, flaws included:

- ``load_order``: an ephemeral consumer filtered on ``orders.<id>.>`` (DeliverAll, AckNone) per load,
  ``Fetch(100, FetchMaxWait(100ms))`` in a loop until the fetch fails, then the consumer is deleted.
  nats-py's ``fetch(100, timeout=0.1)`` raises ``TimeoutError`` when a fetch finds nothing, and the loop stops
  there, as the seed intends. This baseline is the kind reading of the seed: in nats.go's ``jetstream``
  package a fetch that expires is not an error (``Fetch`` returns no error and ``MessageBatch.Error()`` is nil
  after a 408), so the Go loop as written never ends; and Go's ``Fetch`` holds every request open for the
  full 100 ms unless the batch fills, where nats-py first asks with ``no_wait`` and returns found messages at
  once. Here a load pays one 100 ms wait (the empty fetch that ends it) plus consumer create and delete.
- ``publish_event``: one ``await js.publish(...)`` at a time, ``Nats-Msg-Id`` = ``<id>-<type>-<UnixNano>``
  (a message id that differs on every retry, so it dedups nothing), and a JSON envelope with the type, the
  order id, a timestamp and the data.
"""

from __future__ import annotations

import contextlib
import json
import time
from datetime import UTC, datetime
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext


def order_event(order_id: str, event_type: str, data: Any) -> bytes:
    """The seed's ``OrderEvent`` envelope as JSON: type, order_id, timestamp, data."""
    return json.dumps(
        {"type": event_type, "order_id": order_id, "timestamp": datetime.now(UTC).isoformat(), "data": data}
    ).encode()


async def publish_event(js: JetStreamContext, prefix: str, order_id: str, event_type: str, data: Any) -> None:
    """The seed's ``publishEvent``: one synchronous JetStream publish with a time-based message id."""
    subject = f"{prefix}.{order_id}.{event_type}"
    msg_id = f"{order_id}-{event_type}-{time.time_ns()}"
    await js.publish(subject, order_event(order_id, event_type, data), headers={"Nats-Msg-Id": msg_id})


def apply_event(order: dict[str, Any], event: dict[str, Any]) -> None:
    """The seed's ``applyEvent`` (enough of it to touch every event)."""
    kind = event.get("type")
    if kind == "created":
        order["status"] = "pending"
    elif kind == "item_added":
        order.setdefault("items", []).append(event.get("data"))
    elif kind == "payment_received":
        order["status"] = "paid"
    elif kind == "shipped":
        order["status"] = "shipped"
    order["events"] = order.get("events", 0) + 1


async def load_order(js: JetStreamContext, stream: str, prefix: str, order_id: str) -> dict[str, Any]:
    """The seed's ``loadOrder``: consumer per load, fetch until the fetch fails, delete the consumer."""
    order: dict[str, Any] = {"id": order_id}
    config = ConsumerConfig(
        filter_subject=f"{prefix}.{order_id}.>",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.NONE,
    )
    sub = await js.pull_subscribe(f"{prefix}.{order_id}.>", stream=stream, config=config)
    try:
        while True:
            try:
                msgs = await sub.fetch(100, timeout=0.1)
            except (nats.errors.TimeoutError, TimeoutError):
                break
            for msg in msgs:
                event = json.loads(msg.data)
                if "type" not in event:  # an eskit-written event: the payload is the data only
                    event = {"type": msg.subject.rsplit(".", 1)[-1], "data": event}
                apply_event(order, event)
    finally:  # defer stream.DeleteConsumer(...)
        with contextlib.suppress(Exception):
            await js.delete_consumer(stream, sub._consumer)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return order
