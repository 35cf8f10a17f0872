# %% [markdown]
# # 02 · Rebuilding state
#
# **What you'll do:** model the seed's order as an *aggregate*, rebuild it by replaying its events, look at it
# as of any past position or time, and let two writers race for the same order. You write a command and its
# handler yourself (cancel an order), find when an order's state changed, and write a safe retry. Then you
# measure the seed's way: a consumer per load, a writer killed between two publishes, a retry that never ends.
#
# **What you'll learn:**
# - commands *decide* (check rules on the current state) and *record* events; apply handlers only change state;
# - `version` (events applied) is not `position` (the stream sequence of the last event);
# - time travel: `load(..., up_to=position_or_time)`;
# - optimistic concurrency: `save` is checked against the position the order was loaded at, on **all** of the
#   order's subjects — and why the seed's check on one subject loses updates;
# - retrying a command safely, with a bound and jitter;
# - testing a command without a server: `given(events).when(command).then(events or error)`.
#
# **What you need:** lesson 01. About 25 minutes.

# %%
import asyncio
import inspect
import json
import statistics
import sys
import time
import uuid

import ipywidgets as widgets
import nats

import eskit
from eskit.examples import Order, OrderError
from eskit.testing import given

client = await eskit.connect()
name = eskit.course.unique("orders")
orders = await client.event_store(name)


def show(text: object) -> str:
    return str(text).replace(name, "orders")


# %% [markdown]
# ## The Order aggregate
#
# The seed's `applyEvent` is one `switch` over event types. An `eskit.Aggregate` spells the same mapping as
# one method per event type, marked `@applies("<type>")`, so you see at a glance which event changes what.
# Commands (`create`, `add_item`, `pay`, `ship`) check the business rules and then `record` an event, which is
# applied at once and kept as *pending* until `save`. One rule the seed leaves implicit is spelled out: a
# payment must cover the order's total. Here is the class (it ships as `eskit.examples.Order`):

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
# ## Your turn
#
# Each exercise has a cell to fill in (a stub) and a check cell below it that prints one line: `✗` and a hint
# while it is not right yet, `✓` when it is. Run the check as often as you like.
#
# ### Exercise 2.1 · Cancel an order
#
# Customers change their minds. Give the order a command `cancel(reason)` and its apply handler:
# - only a **pending** order can be cancelled (not a new, paid, shipped or already cancelled one): otherwise
#   raise `OrderError` and record nothing;
# - it records the event `cancelled` with the data `{"reason": reason}`;
# - applying `cancelled` sets the status to `"cancelled"` (so `add_item` refuses a cancelled order by itself).
#
# The check tests your command without a server, *given* a history, *when* a command runs, *then* these
# events (or this error): `given(created).when(CancellableOrder, lambda o: o.cancel("x")).then(cancelled)`.

# %% [exercise]
class CancellableOrder(Order):
    def cancel(self, reason: str) -> None:
        raise NotImplementedError("write cancel: check the status, then self.record(...)")

    @eskit.applies("cancelled")
    def _cancelled(self, data: dict) -> None:
        ...  # your code here


# %% [solution]
class CancellableOrder(Order):
    def cancel(self, reason: str) -> None:
        if self.status != "pending":
            raise OrderError(f"order {self.id} is {self.status}: only pending orders can be cancelled")
        self.record("cancelled", {"reason": reason})

    @eskit.applies("cancelled")
    def _cancelled(self, data: dict) -> None:
        self.status = "cancelled"


# %% [wrong] the handler does not change the status
class CancellableOrder(Order):
    def cancel(self, reason: str) -> None:
        if self.status != "pending":
            raise OrderError(f"order {self.id} is {self.status}: only pending orders can be cancelled")
        self.record("cancelled", {"reason": reason})

    @eskit.applies("cancelled")
    def _cancelled(self, data: dict) -> None:
        pass


# %% [wrong] no rule: a paid order can be cancelled
class CancellableOrder(Order):
    def cancel(self, reason: str) -> None:
        self.record("cancelled", {"reason": reason})

    @eskit.applies("cancelled")
    def _cancelled(self, data: dict) -> None:
        self.status = "cancelled"


# %% [check]
created = eskit.Event("created", {"customer": "ada"})
item = eskit.Event("item_added", {"sku": "A1", "qty": 1, "price": 5.0})
paid = eskit.Event("payment_received", {"amount": 5.0})
cancelled = eskit.Event("cancelled", {"reason": "changed mind"})
cases = {
    "cancel a pending order": lambda: given(created, item).when(CancellableOrder, lambda o: o.cancel("changed mind"))
    .then(cancelled),
    "cancel a paid order": lambda: given(created, item, paid).when(CancellableOrder, lambda o: o.cancel("late"))
    .then(OrderError),
    "cancel an order that was never created": lambda: given().when(CancellableOrder, lambda o: o.cancel("?"))
    .then(OrderError),
    "cancel twice (does your handler set the status?)": lambda: given(created, cancelled)
    .when(CancellableOrder, lambda o: o.cancel("again")).then(OrderError),
    "add an item to a cancelled order": lambda: given(created, cancelled)
    .when(CancellableOrder, lambda o: o.add_item("B2")).then(OrderError),
}  # fmt: skip


async def check_cancel() -> None:
    for case, run in cases.items():
        try:
            run()
        except AssertionError as exc:
            raise eskit.course.Wrong(f"{case}: {exc}") from None
    async with eskit.course.scratch(client, "cancel") as store:  # and through a real store
        order = CancellableOrder("order-1")
        order.create("ada")
        order.cancel("changed mind")
        await store.save(order)
        loaded = await store.load(CancellableOrder, "order-1")
        assert loaded.status == "cancelled", f"saved and loaded again, the order is {loaded.status}"


await eskit.course.check(check_cancel, ok="only pending orders cancel, and a cancelled order takes no items")

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
# ### Exercise 2.2 · When did it happen?
#
# A customer asks when their order was paid. Write `first_position_with_status(store, order_id, status)`:
# the position of the event after which the order **first** had `status`, or `None` if it never did. Use
# `load(..., up_to=...)` (or replay the events yourself).

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


# %% [wrong] the last position with that status, not the first
async def first_position_with_status(store: eskit.EventStore, order_id: str, status: str) -> int | None:
    found = None
    for event in await store.read(order_id):
        if (await store.load(Order, order_id, up_to=event.position)).status == status:
            found = event.position
    return found


# %% [check]
async def check_first_position() -> None:
    async with eskit.course.scratch(client, "status") as store:  # its own history: works after Run All too
        for order_id, event in [
            ("order-1", eskit.Event("created", {"customer": "ada"})),
            ("order-2", eskit.Event("created", {"customer": "bob"})),
            ("order-1", eskit.Event("item_added", {"sku": "A1", "qty": 1, "price": 5.0})),
            ("order-2", eskit.Event("item_added", {"sku": "B1", "qty": 1, "price": 9.0})),
            ("order-1", eskit.Event("payment_received", {"amount": 5.0})),
            ("order-1", eskit.Event("shipped", {"tracking": "T-1"})),
        ]:
            await store.append(order_id, [event])
        by_type = {e.type: e.position for e in await store.read("order-1")}
        for status, event_type in [("pending", "created"), ("paid", "payment_received"), ("shipped", "shipped")]:
            got = await first_position_with_status(store, "order-1", status)
            assert got == by_type[event_type], (
                f"order-1 became {status} with its {event_type} event at position {by_type[event_type]}, you said {got}")
        got = await first_position_with_status(store, "order-2", "shipped")
        assert got is None, f"order-2 never shipped, so the answer is None, you said {got}"


await eskit.course.check(check_first_position, ok="you can find when an order's state changed")

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
# Alice and Bob load order-2 at the same time (one item, total 20.0). Alice adds an item (total 25.0); Bob,
# looking at the total he loaded, takes a payment of 20.0. Whoever saves second was deciding on stale state,
# and `save` refuses it:

# %%
alice = await orders.load(Order, "order-2")
bob = await orders.load(Order, "order-2")
alice.add_item("A9", qty=1, price=5.0)
bob.pay(bob.total)  # 20.0: covers the order Bob loaded, not Alice's item
await orders.save(alice)
try:
    await orders.save(bob)
except eskit.ConcurrencyError as exc:
    print(show(exc))

# %% [markdown]
# The fix is not "save anyway" but **reload, decide again, save** — bounded, with a random growing pause
# between attempts so colliding writers spread out. (The seed retries by calling itself at once, forever.)
# `eskit.run_command` does exactly that. Deciding again is the point: on the fresh order, Bob's 20.0 no longer
# covers the total, and the rule says so; a payment decided on the fresh order goes through:

# %%
try:
    await eskit.run_command(orders, Order, "order-2", lambda o: o.pay(20.0), attempts=5)
except OrderError as exc:
    print("Bob's 20.0, decided again:", exc)
await eskit.run_command(orders, Order, "order-2", lambda o: o.pay(o.total), attempts=5)
final = await orders.load(Order, "order-2")
print(final.status, "| paid for items:", [i["sku"] for i in final.items], "| total:", final.total)

# %% [markdown]
# ### Exercise 2.3 · A safe retry
#
# Write `add_item_safely(store, order_id, sku, price)`: add one item (`qty=1`) to the order and save it, and
# when another writer got there first (`eskit.ConcurrencyError`), load the order again, decide again and save
# again — at most 5 attempts, then let the error out. Return the position `save` returns.
# (`eskit.run_command` is allowed; so is your own loop.)

# %% [exercise]
async def add_item_safely(store: eskit.EventStore, order_id: str, sku: str, price: float) -> int:
    raise NotImplementedError("write add_item_safely")


# %% [solution]
async def add_item_safely(store: eskit.EventStore, order_id: str, sku: str, price: float) -> int:
    return await eskit.run_command(store, Order, order_id, lambda o: o.add_item(sku, price=price), attempts=5)


# %% [wrong] no retry
async def add_item_safely(store: eskit.EventStore, order_id: str, sku: str, price: float) -> int:
    order = await store.load(Order, order_id)
    order.add_item(sku, price=price)
    return await store.save(order)


# %% [wrong] retries the save of the same stale order
async def add_item_safely(store: eskit.EventStore, order_id: str, sku: str, price: float) -> int:
    order = await store.load(Order, order_id)
    order.add_item(sku, price=price)
    for attempt in range(5):
        try:
            return await store.save(order)
        except eskit.ConcurrencyError:
            if attempt == 4:
                raise
            await asyncio.sleep(0.01 * 2**attempt)


# %% [check]
class Crowded(eskit.course.Spy):
    """The store, and a colleague who adds an item to the order right after each of your first `busy` loads."""

    def __init__(self, store: eskit.EventStore, busy: int) -> None:
        super().__init__(store)
        self.busy, self.loads = busy, 0

    async def load(self, cls, aggregate_id, **options):
        self.loads += 1
        if self.loads > 20:
            raise eskit.course.Wrong("more than 20 attempts while the order kept changing: bound your retries")
        order = await self.target.load(cls, aggregate_id, **options)
        if self.loads <= self.busy:
            await self.target.append(aggregate_id, [eskit.Event("item_added", {"sku": "X", "qty": 1, "price": 1.0})])
        return order


async def check_retry() -> None:
    async with eskit.course.scratch(client, "retry") as store:
        new = Order("order-1")
        new.create("ada")
        await store.save(new)
        crowded = Crowded(store, busy=1)
        try:
            position = await add_item_safely(crowded, "order-1", "A1", 2.0)
        except eskit.ConcurrencyError:
            if crowded.loads == 1 and len(crowded.called("save")) > 1:
                raise eskit.course.Wrong("you saved the same stale order again: load it again before each attempt, "
                                         "so the command decides on the fresh order") from None
            raise eskit.course.Wrong("a colleague added an item between your load and your save, and you gave up: "
                                     "on ConcurrencyError load again, decide again, save again") from None
        eskit.course.require(position, "add_item_safely returns nothing yet (return the position save gives you)")
        skus = [i["sku"] for i in (await store.load(Order, "order-1")).items]
        assert sorted(skus) == ["A1", "X"], f"expected your A1 once and the colleague's X, the order holds {skus}"
        endless = Crowded(store, busy=1000)  # the order changes after every load: you must give up
        try:
            await add_item_safely(endless, "order-1", "B2", 2.0)
        except eskit.ConcurrencyError:
            assert endless.loads <= 5, f"you tried {endless.loads} times: at most 5 attempts"
            return
        raise eskit.course.Wrong("the order changed after every load, yet your save went through")


await eskit.course.check(check_retry, ok="you decide again on fresh state, and give up after a few attempts")

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
# `orders.save(order)` sends the correct pair of headers for you (`expected_position=order.position`).
#
# ## The seed's retry never ends
#
# The seed's check also fails the other way: when the order's last event is *not* an `item_added`, the last
# `item_added` is at an older sequence (or there is none), so a perfectly fresh writer is refused. The seed
# answers every error by calling itself again, at once, with no limit. Its first item for a new order, counted
# (we stop at 50 attempts; the seed does not stop):

# %%
six = Order("order-6")
six.create("fay")
await orders.save(six)


async def seed_add_item(order_id: str, item: dict) -> None:
    last_seq = (await orders.read(order_id))[-1].position  # reloaded on every attempt, as the seed does
    headers = {
        "Nats-Expected-Last-Subject-Sequence": str(last_seq),  # compared with the last orders.<id>.item_added
        "Nats-Msg-Id": f"{order_id}-item_added-{time.time_ns()}",
    }
    await client.js.publish(f"{name}.{order_id}.item_added", json.dumps(item).encode(), headers=headers)


LIMIT = 50
refused = 0
for attempt in range(LIMIT):  # the seed: `return s.AddItem(ctx, orderID, item)` on every error, forever
    try:
        await seed_add_item("order-6", {"sku": "A1", "qty": 1, "price": 3.0})
        break
    except nats.js.errors.APIError as exc:
        refused += 1
        reason = exc.description
print(f"refused {refused} of {LIMIT} attempts ({reason}); order-6 items:", (await orders.load(Order, "order-6")).items)
await eskit.run_command(orders, Order, "order-6", lambda o: o.add_item("A1", price=3.0))
print("eskit, one attempt:", [i["sku"] for i in (await orders.load(Order, "order-6")).items])

# %% [markdown]
# ## The seed's load: a consumer per load
#
# The seed loads an order by creating a consumer filtered on `orders.<id>.>`, fetching until a fetch comes back
# empty (a 100 ms wait), and deleting the consumer. eskit asks for the order's events with Direct Get, in one
# round trip (how, in the next section). The seed's `loadOrder`, transcribed, against `orders.load`, on order-1
# (5 events), measured now:

# %%
# NBVAL_IGNORE_OUTPUT
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy


async def seed_load(order_id: str) -> list:
    """The seed's loadOrder: create a consumer, fetch until a fetch times out, delete the consumer."""
    subject = f"{name}.{order_id}.>"
    config = ConsumerConfig(filter_subject=subject, deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE)
    sub = await client.js.pull_subscribe(subject, stream=orders.stream, config=config)
    messages = []
    try:
        while True:
            try:
                messages += await sub.fetch(100, timeout=0.1)
            except (nats.errors.TimeoutError, TimeoutError):
                break
    finally:  # defer stream.DeleteConsumer(...)
        await client.js.delete_consumer(orders.stream, sub._consumer)
        await sub.unsubscribe()
    return messages


async def median_ms(load, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await load()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


seed_ms = await median_ms(lambda: seed_load("order-1"))
eskit_ms = await median_ms(lambda: orders.load(Order, "order-1"))
print(f"seed  (consumer per load): {seed_ms:6.1f} ms per load, {len(await seed_load('order-1'))} events")
print(f"eskit (one Direct Get):    {eskit_ms:6.1f} ms per load, version {(await orders.load(Order, 'order-1')).version}")
print(f"the seed's load is {seed_ms / eskit_ms:.0f}x slower here")

# %% [markdown]
# Most of the seed's time is the empty fetch that ends its loop (it waits 100 ms for events that will not
# come); the rest is creating and deleting a consumer on the server for every load — a write to the stream's
# metadata, replicated on a cluster.
#
# ## How JetStream finds an aggregate's events
#
# A stream is stored in blocks of a few megabytes. The server indexes subjects per stream (each subject's count
# and its first and last *block*) and per block (each subject's first and last position in it), never per
# message. Asked for the next message on a **literal** subject such as `orders.order-1.created`, it looks it up
# in each block's index and stops after the subject's last block. Asked for the next message on a **wildcard**
# such as `orders.order-1.>`, it cannot use the stream's index once it holds many subjects, and it tests every
# message of every block from the order's first event to the end of the stream. So `orders.load` asks for the
# order's subjects and their last positions (`multi_last`, answered from the index) and, in the same round trip,
# reads each event type the `Order` class handles on its literal subject; `orders.read(id)` reads by wildcard.
# Measured here, on the first of 5,000 orders whose events are interleaved (50,000 events):

# %%
# NBVAL_IGNORE_OUTPUT
crowd = [f"crowd-{i}" for i in range(5000)]
for round_ in range(10):  # event k of every order, then event k+1: as in a busy shop
    kind = "created" if round_ == 0 else "item_added"
    data = {"customer": "c"} if round_ == 0 else {"sku": "A1", "qty": 1, "price": 1.0}
    await orders.append_many([(order_id, [eskit.Event(kind, data)], None) for order_id in crowd])
times: dict[str, list[float]] = {"wildcard": [], "literal": []}
for _ in range(21):  # taking turns, so a busy moment of the machine hits both alike
    for way, read in (("wildcard", lambda: orders.read("crowd-0")), ("literal", lambda: orders.load(Order, "crowd-0"))):
        started = time.perf_counter()
        await read()
        times[way].append((time.perf_counter() - started) * 1000)
wildcard_ms, literal_ms = statistics.median(times["wildcard"]), statistics.median(times["literal"])
print(f"orders.read('crowd-0'), one wildcard scan:       {wildcard_ms:6.2f} ms")
print(f"orders.load(Order, 'crowd-0'), literal subjects: {literal_ms:6.2f} ms (and it applies the events)")

# %% [markdown]
# The wildcard's cost grows with the stream; the literal reads' with the order. At 1,000,000 events of
# 100,000 orders (`bench/scale.py`) a wildcard read of a 10-event order takes ~150-250 ms, the literal reads
# ~1 ms. The price: a few requests per load instead of one (a little slower in a tiny stream), and the class
# must name its event types (`@applies`), which it does anyway. The subjects stay `orders.<id>.<type>`, so
# `orders.*.shipped` still works (see `docs/jetstream.md`).
#
# ## A writer killed between two publishes
#
# The seed publishes an order's events one at a time. A process that dies in between — a deploy, an OOM kill,
# a crash — leaves half an order behind. Here is a real writer, a separate Python process publishing a checkout
# the seed's way (one publish per event; eskit's payload, so `Order` can load it), killed (SIGKILL) right after
# its second publish:

# %%
WRITER = """
import asyncio, json, sys, time
import nats

async def main(url, prefix, order_id):
    nc = await nats.connect(url)
    js = nc.jetstream()
    checkout = [("created", {"customer": "gus"}), ("item_added", {"sku": "A1", "qty": 1, "price": 7.0}),
                ("item_added", {"sku": "B2", "qty": 1, "price": 3.0}), ("payment_received", {"amount": 10.0})]
    for event_type, data in checkout:
        msg_id = f"{order_id}-{event_type}-{time.time_ns()}"
        await js.publish(f"{prefix}.{order_id}.{event_type}", json.dumps(data).encode(), headers={"Nats-Msg-Id": msg_id})
        print("published", event_type, flush=True)
        sys.stdin.readline()  # the handler's other work between two publishes (here: until we say go)

asyncio.run(main(*sys.argv[1:]))
"""
PIPE = asyncio.subprocess.PIPE
writer = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, client.url, name, "order-7", stdin=PIPE, stdout=PIPE)
said = []
while len(said) < 2:  # let it publish two events (each line bounded: 30 s)
    line = await asyncio.wait_for(writer.stdout.readline(), timeout=30)
    if not line:
        break
    said.append(line.decode().strip())
    if len(said) < 2:
        writer.stdin.write(b"go\n")
writer.kill()  # SIGKILL, between the second and the third publish
print("the writer said:", said, "| exit code:", await writer.wait())
half = await orders.load(Order, "order-7")
print(f"order-7: {half.status}, items {[i['sku'] for i in half.items]}, total {half.total} -- half an order")

# %% [markdown]
# The customer checked out two items and paid; the store says one item, unpaid, forever — no writer is left to
# finish it, and nothing marks it as broken. `orders.save(order)` (and `append` with several events) sends all
# of a command's events as **one atomic batch**: the server stores all of them or none, whenever the writer dies.
#
# ## Summary
#
# - An aggregate = state + apply handlers (one per event type) + commands that check rules and record events.
# - Loading replays the order's events in one round trip; `up_to` gives the state as of a position or time.
# - The server indexes subjects per block: `load` reads literal subjects (`orders.<id>.<type>`), which it
#   finds fast in any stream; a wildcard read walks the stream from the order's first event to its end.
# - `version` counts the aggregate's events; `position` is a stream sequence, used for concurrency checks.
# - `save` appends pending events atomically, only if nothing was appended to the order since it was loaded;
#   the loser reloads and decides again (`eskit.run_command`: bounded retries with jitter).
# - The seed's single-subject check accepted an item after payment; the whole-order check refuses it.
# - The seed, measured: its retry on that check refused a fresh writer 50 times in a row (and would go on);
#   its load creates and deletes a consumer and waits for an empty fetch, many times slower than one Direct
#   Get; its one-by-one publishes leave half an order when the writer dies; an atomic batch cannot.
# - `eskit.testing.given(...).when(...).then(...)` tests commands without a server.

# %%
await client.delete_store(name)
await client.close()

# %% [markdown]
# **Next:** `03_snapshots.ipynb` — when histories get long: snapshots, and how load time stays flat.
