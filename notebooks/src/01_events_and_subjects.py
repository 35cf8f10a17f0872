# %% [markdown]
# # 01 · Events and subjects
#
# **What you'll do:** store the history of a few orders as events in a JetStream stream, read them back by
# order and by event type, attach metadata, and retry a publish safely.
#
# **What you'll learn:**
# - the core idea of event sourcing: store *what happened*, derive the current state from it;
# - how the stream is configured for events, and why;
# - how subjects (`orders.<id>.<event-type>`) let you read one aggregate or one event type without scanning;
# - why a message id must be fixed when the event is created — measured: a retried publish with the
#   seed's time-based id stores a duplicate, eskit's stable id does not.
#
# **What you need:** `00_setup_check` green. About 10 minutes.

# %% [markdown]
# ## Store what happened, not the current state
#
# A table row says `Order 123: status=shipped, items=[...]` — and forgets how it got there. An event store
# keeps the facts, in order: `created`, `item_added`, `payment_received`, `shipped`. The current state is a
# *function of the history*; so is every other view you will ever want (lesson 02 rebuilds state from it).
#
# Each event is immutable: you append, you never update or delete.

# %%
import json
import time
import uuid

import eskit

client = await eskit.connect()
name = f"orders{uuid.uuid4().hex[:8]}"  # a store of our own for this run (never printed)
orders = await client.event_store(name)


def show(text: str) -> str:
    """Print subjects with the generic store name `orders` instead of this run's unique one."""
    return text.replace(name, "orders")


# %% [markdown]
# ## The stream behind the store
#
# `client.event_store("orders")` creates (or updates) the stream `ORDERS` holding the subjects `orders.>`.
# The seed's settings — file storage, *limits* retention, keep forever, no per-subject cap — plus three that
# correctness and speed need: `allow_direct` (read an aggregate in one round trip), `allow_atomic`
# (multi-event appends are all-or-nothing) and a `duplicate_window` for message-id deduplication.

# %%
config = (await client.js.stream_info(orders.stream)).config
print("subjects:            ", [show(s) for s in config.subjects])
print("storage:             ", config.storage)
print("retention:           ", config.retention)
print("max_age (0 = forever):", config.max_age)
print("max_msgs_per_subject:", config.max_msgs_per_subject)
print("allow_direct:        ", config.allow_direct)
print("allow_atomic:        ", config.allow_atomic)
print("duplicate_window:    ", config.duplicate_window, "seconds")

# %% [markdown]
# ## Subjects: `<aggregate>.<id>.<event-type>`
#
# Every event is stored on a subject that names its aggregate, its id and its type. Let us record three orders.

# %%
E = eskit.Event
await orders.append("order-1", [E("created", {"customer": "ada"}), E("item_added", {"sku": "A1", "qty": 2})])
await orders.append("order-2", [E("created", {"customer": "bob"})])
await orders.append("order-1", [E("payment_received", {"amount": 9.0}), E("shipped", {"tracking": "T-1"})])
await orders.append("order-3", [E("created", {"customer": "cy"}), E("shipped", {"tracking": "T-3"})])

async for event in orders.replay():
    print(event.position, show(event.subject))

# %% [markdown]
# Positions are the stream's sequence numbers: they count **every** event in the stream, so one order's
# events have gaps between them (order-1 sits at 1, 2, 4, 5).
#
# Subject wildcards give you the two reads event sourcing needs, without scanning everything:
#
# | filter | reads |
# |---|---|
# | `orders.order-1.>` | one aggregate (everything that happened to order-1) |
# | `orders.*.shipped` | one event type, across all orders |
# | `orders.>` | the whole store |

# %%
print("order-1:", [e.type for e in await orders.read("order-1")])
shipped = [e async for e in orders.replay(subjects=[f"{name}.*.shipped"])]
print("shipped:", [(e.aggregate_id, e.data["tracking"]) for e in shipped])

# %% [markdown]
# Ids and event types become subject tokens, so they may not contain `.`, `*`, `>` or whitespace: eskit
# refuses them *before* anything is sent.

# %%
try:
    await orders.append("order.4", [E("created", {})])
except eskit.InvalidNameError as exc:
    print(type(exc).__name__, "-", exc)

# %% [markdown]
# ## Metadata
#
# Who did it, in reply to what, and when did it happen in the real world? eskit carries that in message
# headers, next to the data: the event id (`Nats-Msg-Id`), a schema version, `occurred_at`, a correlation
# and a causation id, and free-form string metadata.

# %%
paid = E("payment_received", {"amount": 12.5}, correlation_id="checkout-77", metadata={"user": "ada"})
await orders.append("order-2", [E("item_added", {"sku": "B2", "qty": 1}), paid])
stored = (await orders.read("order-2"))[-1]
print("type:          ", stored.type, stored.data)
print("same event id: ", stored.id == paid.id)
print("correlation:   ", stored.correlation_id)
print("metadata:      ", dict(stored.metadata))
print("schema version:", stored.schema_version)

# %% [markdown]
# ## Deduplication: a retry must not store the event twice
#
# A publish can time out *after* the server stored the event (the ack got lost). The client cannot tell, so
# it publishes again. JetStream drops a message whose `Nats-Msg-Id` it has seen within the duplicate window —
# **if the id is the same**. The seed builds its id from the clock:
#
# ```go
# msgID := fmt.Sprintf("%s-%s-%d", orderID, eventType, time.Now().UnixNano())
# ```
#
# so every attempt gets a new id. Below: the same "payment" published twice, as a retry would, first the seed's
# way, then eskit's (the `Event` object — and its id — is created once and reused).

# %%
async def stored_messages() -> int:
    return (await client.js.stream_info(orders.stream)).state.messages


async def seed_publish(order_id: str, event_type: str, data: dict) -> None:
    msg_id = f"{order_id}-{event_type}-{time.time_ns()}"  # the seed's id: differs on every call
    subject = f"{name}.{order_id}.{event_type}"
    await client.js.publish(subject, json.dumps(data).encode(), headers={"Nats-Msg-Id": msg_id})


before = await stored_messages()
for attempt in range(2):  # the first ack "got lost": publish again
    await seed_publish("order-9", "payment_received", {"amount": 99.0})
seed_stored = await stored_messages() - before

before = await stored_messages()
payment = E("payment_received", {"amount": 99.0})  # id fixed here, once
positions = []
for attempt in range(2):
    positions.append(await orders.append("order-10", [payment]))
eskit_stored = await stored_messages() - before

print(f"seed:  2 attempts -> {seed_stored} messages stored (a double payment)")
print(f"eskit: 2 attempts -> {eskit_stored} message stored")
print("eskit: both attempts returned the same position:", positions[0] == positions[1])

# %% [markdown]
# The second `append` did not fail either: it found its own event already stored and returned the same
# position, so a retry loop can simply try again. (Dedup covers retries within `duplicate_window`; a *new*
# decision needs a new `Event` object.)

# %% [markdown]
# ## Summary
#
# - An event store keeps immutable facts in order; state is derived from them.
# - One stream per aggregate type (`ORDERS`: `orders.>`), file storage, kept forever, direct get and atomic
#   batches on, a duplicate window for message ids.
# - Subjects `orders.<id>.<type>` let you read one order (`orders.<id>.>`) or one event type
#   (`orders.*.<type>`) without scanning the rest.
# - Positions are stream sequences: they count every event in the stream, not one order's.
# - Metadata rides in headers; the event id is fixed when the event is created, so retries are harmless —
#   the seed's clock-based id stored the payment twice.

# %% [markdown]
# ## Exercise
#
# Write `shipped_orders(store)`: the set of ids of orders that have shipped. Read **only** `shipped` events,
# using a subject filter (`store.replay(subjects=[...])`; the store's name is `store.name`).

# %% [exercise]
async def shipped_orders(store: eskit.EventStore) -> set[str]:
    ...  # your code here


# %% [solution]
async def shipped_orders(store: eskit.EventStore) -> set[str]:
    return {e.aggregate_id async for e in store.replay(subjects=[f"{store.name}.*.shipped"])}


# %% [wrong] a full scan, filtered in Python
async def shipped_orders(store: eskit.EventStore) -> set[str]:
    return {e.aggregate_id async for e in store.replay() if e.type == "shipped"}


# %% [check]
class Spy:
    """The store, noting which subjects each replay asked the server for."""

    def __init__(self, store: eskit.EventStore) -> None:
        self.store, self.name, self.asked = store, store.name, []

    def replay(self, subjects=None, **options):
        self.asked.append(subjects)
        return self.store.replay(subjects=subjects, **options)

    def __getattr__(self, attribute):
        return getattr(self.store, attribute)


async def check_shipped_orders() -> None:
    expected = {e.aggregate_id async for e in orders.replay() if e.type == "shipped"}
    spy = Spy(orders)
    answer = await shipped_orders(spy)
    eskit.course.require(answer, "shipped_orders returns nothing yet")
    assert set(answer) == expected, f"expected the orders {sorted(expected)}, got {sorted(answer)}"
    wanted = [f"{orders.name}.*.shipped"]
    assert spy.asked and all(asked == wanted for asked in spy.asked), (
        "right answer, but you read events other than `shipped`: ask the server for "
        "subjects=[f\"{store.name}.*.shipped\"] only")


await eskit.course.check(check_shipped_orders, ok="shipped orders read through one subject filter")

# %%
await client.delete_store(name)
await client.close()

# %% [markdown]
# **Next:** `02_rebuilding_state.ipynb` — the Order aggregate: replay, state as of any position, and
# optimistic concurrency with two writers.
