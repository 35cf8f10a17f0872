# %% [markdown]
# # 02 · Rebuilding state
#
# **What you'll do:** model the seed's order as an *aggregate*, rebuild it by replaying its events, look at it
# as of any past position or time, and let two writers race for the same order.
#
# **What you'll learn:**
# - commands *decide* (check rules on the current state) and *record* events; apply handlers only change state;
# - `version` (events applied) is not `position` (the stream sequence of the last event);
# - time travel: `load(..., up_to=position_or_time)`;
# - optimistic concurrency: `save` is checked against the position the order was loaded at, on **all** of the
#   order's subjects — and why the seed's check on one subject loses updates;
# - retrying a command safely, with a bound and jitter.
#
# **What you need:** lesson 01. About 15 minutes.

# %%
import inspect
import uuid

import ipywidgets as widgets

import eskit
from eskit.examples import Order, OrderError

client = await eskit.connect()
name = f"orders{uuid.uuid4().hex[:8]}"
orders = await client.event_store(name)


def show(text: object) -> str:
    return str(text).replace(name, "orders")


# %% [markdown]
# ## The Order aggregate
#
# The seed's `applyEvent` is one `switch` over event types. An `eskit.Aggregate` spells the same mapping as
# one method per event type, marked `@applies("<type>")`, so you see at a glance which event changes what.
# Commands (`create`, `add_item`, `pay`, `ship`) check the business rules and then `record` an event, which is
# applied at once and kept as *pending* until `save`. Here is the class (it ships as `eskit.examples.Order`):

# %%
print(inspect.getsource(Order))

# %% [markdown]
# ## Commands, pending events, save

# %%
order = Order("order-1")
order.create("ada")
order.add_item("A1", qty=2, price=4.5)
print("pending:", [e.type for e in order.pending], "| status:", order.status, "| total:", order.total)
await orders.save(order)  # one atomic append, expected position 0: "this order must not exist yet"
print("after save: pending", order.pending, "| version", order.version, "| position", order.position)

# %% [markdown]
# Another order gets events in between, then order-1 carries on. A refused command records nothing:

# %%
other = Order("order-2")
other.create("bob")
other.add_item("B1", qty=1, price=20.0)
await orders.save(other)

order.add_item("C3", qty=1, price=1.0)
order.pay(10.0)
await orders.save(order)
try:
    order.add_item("D4")
except OrderError as exc:
    print("refused:", exc)
order.ship("T-100")
await orders.save(order)
print("version", order.version, "| position", order.position)

# %% [markdown]
# `version` counts order-1's events (5); `position` is the stream sequence of its last event (7), because
# order-2's two events sit in the same stream. Concurrency checks use the **position**.
#
# ## Replay
#
# Loading is replaying: a fresh `Order`, then each stored event applied in order. Step by step:

# %%
history = await orders.read("order-1")
replayed = Order("order-1")
for event in history:
    replayed.apply([event])
    print(f"position {event.position}: {event.type:<17} -> status={replayed.status:<8} total={replayed.total}")
loaded = await orders.load(Order, "order-1")  # the same, in one call (one round trip)
print("load == replay:", loaded.snapshot() == replayed.snapshot())

# %% [markdown]
# ## Time travel: state as of a position, or a time
#
# `up_to` stops the replay at a position (inclusive) or at a moment (`datetime`): what did we know then?

# %%
then = await orders.load(Order, "order-1", up_to=history[2].position)
print(f"as of position {history[2].position}:", then.status, [i["sku"] for i in then.items], then.total)
at_time = await orders.load(Order, "order-1", up_to=history[2].timestamp)
print("as of the time that event was stored: same state?", at_time.snapshot() == then.snapshot())

# %% [markdown]
# Drag the slider to move through order-1's history (the states are loaded with `up_to` first; the widget
# only shows them).

# %%
# NBVAL_IGNORE_OUTPUT
states = {}
for event in history:
    states[event.position] = await orders.load(Order, "order-1", up_to=event.position)


def show_state(position: int) -> None:
    o = states[position]
    print(f"version {o.version}: status={o.status}, items={[i['sku'] for i in o.items]}, total={o.total}")


widgets.interact(show_state, position=widgets.SelectionSlider(options=list(states), description="position"));

# %% [markdown]
# ## Unknown event types fail loudly
#
# An event type the aggregate has no handler for is a bug or a newer writer: eskit stops and says which
# event, instead of silently building a wrong state. Set `on_unknown = "ignore"` where skipping is right
# (forward compatibility).

# %%
await orders.append("order-3", [eskit.Event("created", {"customer": "cy"}), eskit.Event("gift_wrapped", {})])
try:
    await orders.load(Order, "order-3")
except eskit.UnknownEventError as exc:
    print(exc)


class TolerantOrder(Order):
    on_unknown = "ignore"


print("tolerant:", (await orders.load(TolerantOrder, "order-3")).status)

# %% [markdown]
# ## Two writers, one order
#
# Alice and Bob load order-2 at the same time. Alice adds an item; Bob, looking at the old total, takes the
# payment. Whoever saves second was deciding on stale state, and `save` refuses it:

# %%
alice = await orders.load(Order, "order-2")
bob = await orders.load(Order, "order-2")
alice.add_item("A9", qty=1, price=5.0)
bob.pay(bob.total)  # 20.0: does not cover Alice's item
await orders.save(alice)
try:
    await orders.save(bob)
except eskit.ConcurrencyError as exc:
    print(show(exc))

# %% [markdown]
# The fix is not "save anyway" but **reload, decide again, save** — bounded, with a random growing pause
# between attempts so colliding writers spread out. (The seed retries by calling itself at once, forever.)
# `eskit.run_command` does exactly that:

# %%
await eskit.run_command(orders, Order, "order-2", lambda o: o.pay(o.total), attempts=5)
final = await orders.load(Order, "order-2")
print(final.status, "| paid for items:", [i["sku"] for i in final.items], "| total:", final.total)

# %% [markdown]
# ## The seed's check loses updates
#
# The seed publishes with `WithExpectLastSubjectSequence(lastSeq)` on the subject of the event it writes,
# `orders.<id>.item_added`, where `lastSeq` is the order's last sequence. The server then checks only the last
# `item_added` — another writer's `payment_received` slips in unnoticed. Replay it on order-4: the order was
# read while pending; meanwhile it is paid; then the stale writer adds an item, the seed's way:

# %%
import json

four = Order("order-4")
four.create("dee")
four.add_item("A1", qty=1, price=10.0)
await orders.save(four)
last_seq = four.position  # what the stale writer read: its last event, an item_added

await eskit.run_command(orders, Order, "order-4", lambda o: o.pay(o.total))  # meanwhile: paid

seed_headers = {"Nats-Expected-Last-Subject-Sequence": str(last_seq)}  # checks orders.order-4.item_added only
payload = json.dumps({"sku": "Z9", "qty": 1, "price": 99.0}).encode()
await client.js.publish(f"{name}.order-4.item_added", payload, headers=seed_headers)
print("seed's check: accepted ->", [e.type for e in await orders.read("order-4")])
damaged = await orders.load(Order, "order-4")
print(f"order-4 is {damaged.status}, total {damaged.total}, but only 10.0 was paid: a lost update")

# %% [markdown]
# eskit's check names the subject filter of the **whole** order, so any event since the read is a conflict
# (nats-server 2.11+):

# %%
five = Order("order-5")
five.create("eve")
five.add_item("A1", qty=1, price=10.0)
await orders.save(five)
last_seq = five.position
await eskit.run_command(orders, Order, "order-5", lambda o: o.pay(o.total))

correct_headers = {
    "Nats-Expected-Last-Subject-Sequence": str(last_seq),
    "Nats-Expected-Last-Subject-Sequence-Subject": f"{name}.order-5.>",
}
try:
    await client.js.publish(f"{name}.order-5.item_added", payload, headers=correct_headers)
except Exception as exc:
    print("whole-order check: rejected, err_code", exc.err_code)
print("order-5:", [e.type for e in await orders.read("order-5")])

# %% [markdown]
# The seed's check also fails the other way: when the order's last event is *not* an `item_added`, the last
# `item_added` is at an older sequence, so a perfectly fresh writer is refused — and the seed retries forever.
# `orders.save(order)` sends the correct pair of headers for you (`expected_position=order.position`).
#
# ## Summary
#
# - An aggregate = state + apply handlers (one per event type) + commands that check rules and record events.
# - Loading replays the order's events in one round trip; `up_to` gives the state as of a position or time.
# - `version` counts the aggregate's events; `position` is a stream sequence, used for concurrency checks.
# - `save` appends pending events atomically, only if nothing was appended to the order since it was loaded;
#   the loser reloads and decides again (`eskit.run_command`: bounded retries with jitter).
# - The seed's single-subject check accepted an item after payment; the whole-order check refuses it.

# %% [markdown]
# ## Exercise
#
# Write `first_position_with_status(store, order_id, status)`: the position of the event after which the
# order first had `status`, or `None` if it never did. Use `load(..., up_to=...)` (or replay yourself).

# %% [exercise]
async def first_position_with_status(store: eskit.EventStore, order_id: str, status: str) -> int | None:
    raise NotImplementedError("write first_position_with_status")


# %% [solution]
async def first_position_with_status(store: eskit.EventStore, order_id: str, status: str) -> int | None:
    for event in await store.read(order_id):
        if (await store.load(Order, order_id, up_to=event.position)).status == status:
            return event.position
    return None


# %% [wrong] the version (events applied), not the position
async def first_position_with_status(store: eskit.EventStore, order_id: str, status: str) -> int | None:
    for event in await store.read(order_id):
        order = await store.load(Order, order_id, up_to=event.position)
        if order.status == status:
            return order.version
    return None


# %% [check]
async def check_first_position() -> None:
    by_type = {e.type: e.position for e in await orders.read("order-1")}
    for status, event_type in [("pending", "created"), ("paid", "payment_received"), ("shipped", "shipped")]:
        got = await first_position_with_status(orders, "order-1", status)
        assert got == by_type[event_type], (
            f"order-1 became {status} with its {event_type} event at position {by_type[event_type]}, you said {got}")
    got = await first_position_with_status(orders, "order-2", "shipped")
    assert got is None, f"order-2 never shipped, so the answer is None, you said {got}"


await eskit.course.check(check_first_position, ok="you can find when an order's state changed")

# %%
await client.delete_store(name)
await client.close()

# %% [markdown]
# **Next:** `03_snapshots.ipynb` — when histories get long: snapshots, and how load time stays flat.
