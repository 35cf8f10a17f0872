# %% [markdown]
# # 01 · Events and subjects
#
# **What you'll do:** store the history of a few orders as events in a JetStream stream, read them back by
# order and by event type, attach metadata, and retry a publish safely. You write three small functions
# yourself (exercises 1.1-1.3): read one order, read one event type, and append only if nothing changed.
#
# **What you'll learn:**
# - the core idea of event sourcing: store *what happened*, derive the current state from it;
# - how the stream is configured for events, and why;
# - how subjects (`orders.<id>.<event-type>`) let the server send you one aggregate or one event type, and
#   what finding them costs the server;
# - why a message id must be fixed when the event is created — measured: a retried publish with the
#   seed's time-based id stores a duplicate, eskit's stable id does not.
#
# **What you need:** `00_setup_check` green. About 20 minutes.

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

import matplotlib.pyplot as plt

import eskit

client = await eskit.connect()
name = eskit.course.unique("orders")  # a store of our own for this run (never printed)
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
item = {"sku": "A1", "qty": 2, "price": 4.5}
await orders.append("order-1", [E("created", {"customer": "ada"}), E("item_added", item)])
await orders.append("order-2", [E("created", {"customer": "bob"})])
await orders.append("order-1", [E("payment_received", {"amount": 9.0}), E("shipped", {"tracking": "T-1"})])
await orders.append("order-3", [E("created", {"customer": "cy"}), E("shipped", {"tracking": "T-3"})])

async for event in orders.replay():
    print(event.position, show(event.subject))

# %% [markdown]
# Positions are the stream's sequence numbers: they count **every** event in the stream, so one order's
# events have gaps between them (order-1 sits at 1, 2, 4, 5):

# %%
events = [e async for e in orders.replay()]
ids = sorted({e.aggregate_id for e in events})
fig, ax = plt.subplots(figsize=(6, 2.2))
for row, order_id in enumerate(ids):
    mine = [e for e in events if e.aggregate_id == order_id]
    ax.plot([e.position for e in mine], [row] * len(mine), "o-", lw=1)
    for e in mine:
        ax.annotate(e.type, (e.position, row), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=7)
ax.set_yticks(range(len(ids)), ids)
ax.set_ylim(-0.6, len(ids) - 0.2)
ax.set_xticks([e.position for e in events])
ax.set_xlabel("position in the stream (stream sequence)")
ax.set_ylabel("aggregate")
ax.set_title("One stream, three orders: each order's positions have gaps")
plt.show()

# %% [markdown]
# Subject filters give you the two reads event sourcing needs. The server applies the filter and sends only
# the matching events:
#
# | filter | reads |
# |---|---|
# | `orders.order-1.>` | one aggregate (everything that happened to order-1) |
# | `orders.*.shipped` | one event type, across all orders |
# | `orders.>` | the whole store |
#
# Only the matches travel, but the server still has to *find* them. For one aggregate it looks through the
# stream between that order's first and last event. For one type across all orders, the wildcard in the
# middle makes it search its subject index for each next match, so a consumer that follows `orders.*.shipped`
# slows down as the number of orders grows (the README's benchmark measures it: with 2,000 orders, far slower
# than reading the whole store; lesson 04's read models read the whole store for this reason). Filters save
# you the transfer and the decoding, not the server's search.

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
# ## Your turn
#
# Each exercise has a cell to fill in (it starts as a stub: `...`) and a check cell below it that prints one
# line: `✗` and a hint while it is not right yet, `✓` when it is. Checks run your code on a small store of
# their own (filled by `fill` below), so run them as often as you like.

# %%
async def fill(store: eskit.EventStore) -> None:
    """Three orders, their events interleaved in the stream."""

    def item(sku: str, qty: int, price: float) -> eskit.Event:
        return E("item_added", {"sku": sku, "qty": qty, "price": price})

    await store.append("o-1", [E("created", {"customer": "ada"}), item("A", 2, 4.5)])
    await store.append("o-2", [E("created", {"customer": "bob"}), item("B", 1, 20.0)])
    await store.append("o-1", [item("C", 3, 1.0), E("shipped", {"tracking": "T-1"})])
    await store.append("o-3", [E("created", {"customer": "cy"}), E("shipped", {"tracking": "T-3"})])


def whole_store_reads(spy: eskit.course.Spy, wanted: list[str]) -> int:
    """How many reads asked the server for more than `wanted`."""
    replays = [args[0] if args else kwargs.get("subjects") for args, kwargs in spy.called("replay")]
    return sum(1 for subjects in replays if subjects != wanted)


# %% [markdown]
# ### Exercise 1.1 · Read one order
#
# Write `order_total(store, order_id)`: the sum of `qty * price` over the order's `item_added` events. Read
# only that order (`store.read(order_id)` asks the server for `<store>.<order_id>.>`), not the whole store.

# %% [exercise]
async def order_total(store: eskit.EventStore, order_id: str) -> float:
    ...  # your code here


# %% [solution]
async def order_total(store: eskit.EventStore, order_id: str) -> float:
    return sum(e.data["qty"] * e.data["price"] for e in await store.read(order_id) if e.type == "item_added")


# %% [wrong] forgets the quantity
async def order_total(store: eskit.EventStore, order_id: str) -> float:
    return sum(e.data["price"] for e in await store.read(order_id) if e.type == "item_added")


# %% [wrong] reads the whole store and keeps one order's events
async def order_total(store: eskit.EventStore, order_id: str) -> float:
    history = [e async for e in store.replay() if e.aggregate_id == order_id]
    return sum(e.data["qty"] * e.data["price"] for e in history if e.type == "item_added")


# %% [check]
async def check_order_total() -> None:
    async with eskit.course.scratch(client, "total") as store:
        await fill(store)
        spy = eskit.course.Spy(store)
        total = await order_total(spy, "o-1")
        eskit.course.require(total, "order_total returns nothing yet")
        assert total == 12.0, f"o-1 has 2 x 4.5 and 3 x 1.0 = 12.0, you said {total}"
        assert whole_store_reads(spy, [f"{store.name}.o-1.>"]) == 0, (
            "right total, but you read other orders' events too: read only this order (store.read(order_id))")
        assert await order_total(store, "o-3") == 0, "o-3 has no items: its total is 0"


await eskit.course.check(check_order_total, ok="one order read, its total right")

# %% [markdown]
# ### Exercise 1.2 · Read one event type
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
async def check_shipped_orders() -> None:
    async with eskit.course.scratch(client, "shipped") as store:
        await fill(store)
        spy = eskit.course.Spy(store)
        answer = await shipped_orders(spy)
        eskit.course.require(answer, "shipped_orders returns nothing yet")
        assert set(answer) == {"o-1", "o-3"}, f"o-1 and o-3 have shipped, you said {sorted(answer)}"
        wanted = [f"{store.name}.*.shipped"]
        assert spy.called("replay") and whole_store_reads(spy, wanted) == 0, (
            "right answer, but you read events other than `shipped`: ask the server for "
            "subjects=[f\"{store.name}.*.shipped\"] only")


await eskit.course.check(check_shipped_orders, ok="shipped orders read through one subject filter")

# %% [markdown]
# ### Exercise 1.3 · Append only if nothing changed
#
# Write `pay(store, order_id, amount)`: read the order, then append one event `payment_received`
# `{"amount": amount}` with the `expected_position` that makes the server refuse the append if anything was
# appended to the order since you read it — the **position** of its last event. Return the position `append`
# returns. (Lesson 00 used `expected_position=0`: "this order must not exist yet".)

# %% [exercise]
async def pay(store: eskit.EventStore, order_id: str, amount: float) -> int:
    ...  # your code here


# %% [solution]
async def pay(store: eskit.EventStore, order_id: str, amount: float) -> int:
    history = await store.read(order_id)
    payment = E("payment_received", {"amount": amount})
    return await store.append(order_id, [payment], expected_position=history[-1].position)


# %% [wrong] counts the order's events instead of taking the last position
async def pay(store: eskit.EventStore, order_id: str, amount: float) -> int:
    history = await store.read(order_id)
    return await store.append(order_id, [E("payment_received", {"amount": amount})], expected_position=len(history))


# %% [wrong] no expected position at all
async def pay(store: eskit.EventStore, order_id: str, amount: float) -> int:
    await store.read(order_id)
    return await store.append(order_id, [E("payment_received", {"amount": amount})])


# %% [check]
class Busy(eskit.course.Spy):
    """The store, and a colleague who adds an item to the order just after each of your reads."""

    async def read(self, *args, **kwargs):
        history = await self.target.read(*args, **kwargs)
        await self.target.append("o-2", [E("item_added", {"sku": "Z", "qty": 1, "price": 5.0})])
        return history


async def check_pay() -> None:
    async with eskit.course.scratch(client, "pay") as store:
        await fill(store)
        last = (await store.read("o-2"))[-1].position
        try:
            position = await pay(store, "o-2", 20.0)
        except eskit.ConcurrencyError:
            raise eskit.course.Wrong(
                f"the store refused your append: o-2 has 2 events, its last at position {last}; "
                "expected_position is that position, not a count of events") from None
        eskit.course.require(position, "pay returns nothing yet (return the position append gives you)")
        stored = await store.read("o-2")
        assert [e.type for e in stored] == ["created", "item_added", "payment_received"], (
            f"o-2 should end with one payment_received, it holds {[e.type for e in stored]}")
        assert position == stored[-1].position, f"return the position append returns ({stored[-1].position})"
        try:
            await pay(Busy(store), "o-2", 20.0)
        except eskit.ConcurrencyError:
            return
        raise eskit.course.Wrong("a colleague added an item between your read and your append, and your payment "
                                 "was stored anyway: pass expected_position so the server refuses it")


await eskit.course.check(check_pay, ok="your append is refused when the order changed after your read")

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
# position, so a retry loop can simply try again. (The id alone covers retries within `duplicate_window`,
# 2 minutes by default: a later retry without `expected_position` stores a second copy. With
# `expected_position` a retry is safe forever. A *new* decision needs a new `Event` object.)

# %% [markdown]
# ## Summary
#
# - An event store keeps immutable facts in order; state is derived from them.
# - One stream per aggregate type (`ORDERS`: `orders.>`), file storage, kept forever, direct get and atomic
#   batches on, a duplicate window for message ids.
# - Subjects `orders.<id>.<type>` let the server send you one order (`orders.<id>.>`) or one event type
#   (`orders.*.<type>`) and nothing else; the server still searches for them, and a wildcard type filter
#   gets slower as the number of orders grows.
# - Positions are stream sequences: they count every event in the stream, not one order's.
# - Metadata rides in headers; the event id is fixed when the event is created, so retries are harmless —
#   the seed's clock-based id stored the payment twice.

# %%
await client.delete_store(name)
await client.close()

# %% [markdown]
# **Next:** `02_rebuilding_state.ipynb` — the Order aggregate: replay, state as of any position, and
# optimistic concurrency with two writers.
