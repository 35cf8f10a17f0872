# %% [markdown]
# # 09 · Beyond one aggregate
#
# **What you'll do:** run an order → payment → shipping flow across three stores and a payment service on
# NATS request-reply, and watch a declined payment compensated; publish chosen events to another team on a
# public stream it may read and nothing else; forget a customer in an immutable log; build one read model
# from two stores; and close the books of an account that lives for years, measuring a load that stays flat
# as the years go by. You add a compensation, publish a new version of a public stream, forget a customer in
# every view, and choose what a new year carries forward (exercises 9.1-9.4).
#
# **What you'll learn:**
# - **process managers (sagas)**: a flow held by one component that reacts to events with commands; commands
#   over NATS next to events in JetStream; ids derived from the triggering event, so a repeat is one command
#   (exactly once in effect), and compensating steps when a later step fails;
# - **integration events**: a public stream the server fills by *sourcing* chosen types (no second write),
#   versioned by name, read by a partner user with read-only rights on it alone;
# - **crypto-shredding**: personal fields encrypted per data subject; forgetting erases the key, the events
#   stay, every read path shows a placeholder — and copies (read models) must forget too;
# - **multi-stream projections**: one read model, a position per store, handlers that commute across stores;
# - **closing the books**: a long-lived aggregate kept in periods, each opened by one event that carries the
#   state forward, written atomically with the closing of the last period.
#
# **What you need:** lessons 01–04 (aggregates, projections). About 45 minutes.

# %%
import json
import time
from dataclasses import dataclass

import matplotlib.pyplot as plt
import pandas as pd

import eskit
from eskit.periods import PeriodicAggregate, close_period, period_id

client = await eskit.connect()

# %% [markdown]
# ## A flow across stores: the process manager
#
# An order is placed; the payment service charges it; the warehouse ships it — or the payment is declined and
# the order is cancelled. No aggregate owns that flow: it spans three stores (`orders`, `payments`,
# `shipping`) and a service reached over NATS. Three ways to build it:
#
# - **choreography**: each part reacts to the others' events on its own. Nothing central — and the flow
#   exists only in your head;
# - **saga**: a long business transaction split into local steps, each with a **compensating** step that
#   undoes it when a later step fails (payment declined → cancel the order);
# - **process manager**: one component that *holds* the flow: it reacts to events and issues commands. It is
#   the usual way to run a saga, and the flow becomes one class you can read and test: `eskit.ProcessManager`.
#
# This run's stores and the payment service's subject get unique names (so your run and your neighbour's do
# not meet); the flow takes them as a `Shop`:

# %%
@dataclass(frozen=True)
class Shop:
    orders: str
    payments: str
    shipping: str
    charge: str  # the payment service's NATS subject

    @classmethod
    def unique(cls) -> "Shop":
        name = eskit.course.unique
        return cls(name("orders"), name("payments"), name("shipping"), name("pay") + ".charge")


shop = Shop.unique()
orders = await client.event_store(shop.orders)
payments = await client.event_store(shop.payments)
shipping = await client.event_store(shop.shipping)

# %% [markdown]
# ### Commands over NATS: the payment service
#
# Events live in JetStream; a **command** is a request to someone who may say no. The payment service is a
# NATS request-reply service (a NATS *micro* service): `eskit.command_service` answers each request with the
# decision of `charge` and stores that outcome as an event in `payments`, **once per command id** (a header
# of the request, `Eskit-Command-Id`): asked twice with one id, it answers the first outcome again and stores
# nothing new. We will see that below.

# %%
def charge(command: dict) -> eskit.Event:
    if command["amount"] > 100:
        return eskit.Event("declined", {"order": command["order"], "reason": "over the limit of 100"})
    return eskit.Event("captured", {"order": command["order"], "amount": command["amount"]})


payment_service = await eskit.command_service(client, shop.charge, store=shop.payments, decide=charge)
print("30 ->", charge({"order": "x", "amount": 30}).type, "| 500 ->", charge({"order": "x", "amount": 500}).type)

# %% [markdown]
# ### The process manager
#
# One handler per (store, event type), marked `@eskit.reacts_to(store, type)`. A handler only *decides*: it
# returns the commands to issue — `eskit.Request(subject, data)` (a NATS request) or
# `eskit.Append(store, aggregate_id, events)` — and the process manager issues them. (The class is made by
# a function of the `Shop`, so that the exercise's check can run the same flow on stores of its own.)

# %%
def checkout_for(shop: Shop) -> type[eskit.ProcessManager]:
    class Checkout(eskit.ProcessManager):
        @eskit.reacts_to(shop.orders, "placed")
        def _placed(self, event):
            return eskit.Request(shop.charge, {"order": event.aggregate_id, "amount": event.data["amount"]})

        @eskit.reacts_to(shop.payments, "captured")
        def _captured(self, event):
            order = event.data["order"]
            return eskit.Append(shop.shipping, order, [eskit.Event("requested", {"order": order})],
                                expected_position=0)

        @eskit.reacts_to(shop.payments, "declined")  # the compensation
        def _declined(self, event):
            reason = f"payment declined: {event.data['reason']}"
            return eskit.Append(shop.orders, event.data["order"], [eskit.Event("cancelled", {"reason": reason})])

    return Checkout


Checkout = checkout_for(shop)
checkout = Checkout(client)
await orders.append("o1", [eskit.Event("placed", {"amount": 30})], expected_position=0)
await orders.append("o2", [eskit.Event("placed", {"amount": 500})], expected_position=0)
await checkout.run_until_caught_up()
for order in ("o1", "o2"):
    print(order, "| orders:", [e.type for e in await orders.read(order)],
          "| shipping:", [e.type for e in await shipping.read(order)])
stats = checkout.stats
print(f"handled {stats.handled} events, issued {stats.commands} commands, parked {stats.parked}")

# %% [markdown]
# o1 was charged and a shipment requested; o2 was declined and **compensated**: its order cancelled. Every
# event of one flow carries the same correlation id (the id of the `placed` event that began it), so one flow
# can be followed across the three stores (the payment's aggregate is named by the command id):

# %%
frames = pd.concat([await eskit.to_dataframe(store) for store in (orders, payments, shipping)])
started_by = frames[frames.type == "placed"].set_index("event_id").aggregate_id  # a flow's id -> its order
frames["flow of order"] = frames.correlation_id.fillna(frames.event_id).map(started_by)
frames["store"] = frames.subject.str.extract(r"lesson_([a-z]+)[0-9a-f]{8}\.", expand=False)
frames.sort_values(["flow of order", "timestamp"])[["flow of order", "store", "type"]].reset_index(drop=True)

# %% [markdown]
# **Exactly once in effect.** The process manager reads each store with a durable subscriber and stores its
# position after the batch's commands were issued, like a projection (lesson 04). Killed in between, it
# handles those events again — and issues the same commands **with the same ids**, derived from the event that
# triggered them: an `Append` is deduplicated by its event ids (for ever with `expected_position=0`), a
# `Request` by its `Eskit-Command-Id`, which the payment service answers once. eskit's tests SIGKILL it
# mid-flow and check every flow completes once (`tests/test_process_crash.py`); `docs/process-managers.md` has the
# whole table of what could go wrong and what prevents it. Handlers must decide from the event alone (no
# clock, no random), or a repeat would be another command.
#
# Play the restarted process manager by hand: send o1's charge again, with the command id it was sent with
# (the payment event's aggregate id):

# %%
[o1_payment] = [e async for e in payments.replay() if e.data["order"] == "o1"]
reply = await client.nc.request(payment_service.subject, json.dumps({"order": "o1", "amount": 30}).encode(),
                                headers={"Eskit-Command-Id": o1_payment.aggregate_id})
answer = json.loads(reply.data)
print(f"o1's charge again: {answer['type']}, duplicate: {answer['duplicate']}")
print("payment events for o1:", len([e async for e in payments.replay() if e.data["order"] == "o1"]))

# %% [markdown]
# ### Your turn
#
# Each exercise has a cell to fill in (a stub) and a check cell below it that prints one line: `✗` and a hint
# while it is not right yet, `✓` when it is. Checks use stores of their own: run them as often as you like.
#
# ### Exercise 9.1 · Refund when the warehouse cannot ship
#
# Sometimes the warehouse answers a shipment request with `out_of_stock` (an event in the shipping store,
# `{"order": ...}`). The order was paid, so two steps must be undone: append `refund_due` (`{"order": ...}`)
# to the payments store, on the aggregate `refund-<order>`, and `cancelled` (`{"reason": "out of stock"}`) to
# the order. Write the handler: return both commands (a list). The check runs the whole flow on stores of its
# own.

# %% [exercise]
def with_refunds(shop: Shop) -> type[eskit.ProcessManager]:
    class CheckoutWithRefunds(checkout_for(shop)):
        @eskit.reacts_to(shop.shipping, "out_of_stock")
        def _out_of_stock(self, event):
            ...  # your code here: return [eskit.Append(...), eskit.Append(...)]

    return CheckoutWithRefunds


# %% [solution]
def with_refunds(shop: Shop) -> type[eskit.ProcessManager]:
    class CheckoutWithRefunds(checkout_for(shop)):
        @eskit.reacts_to(shop.shipping, "out_of_stock")
        def _out_of_stock(self, event):
            order = event.data["order"]
            return [
                eskit.Append(shop.payments, f"refund-{order}", [eskit.Event("refund_due", {"order": order})],
                             expected_position=0),
                eskit.Append(shop.orders, order, [eskit.Event("cancelled", {"reason": "out of stock"})]),
            ]

    return CheckoutWithRefunds


# %% [wrong] cancels the order but keeps the money
def with_refunds(shop: Shop) -> type[eskit.ProcessManager]:
    class CheckoutWithRefunds(checkout_for(shop)):
        @eskit.reacts_to(shop.shipping, "out_of_stock")
        def _out_of_stock(self, event):
            return eskit.Append(shop.orders, event.data["order"], [eskit.Event("cancelled", {"reason": "out of stock"})])

    return CheckoutWithRefunds


# %% [wrong] expects the order not to exist
def with_refunds(shop: Shop) -> type[eskit.ProcessManager]:
    class CheckoutWithRefunds(checkout_for(shop)):
        @eskit.reacts_to(shop.shipping, "out_of_stock")
        def _out_of_stock(self, event):
            order = event.data["order"]
            return [
                eskit.Append(shop.payments, f"refund-{order}", [eskit.Event("refund_due", {"order": order})],
                             expected_position=0),
                eskit.Append(shop.orders, order, [eskit.Event("cancelled", {"reason": "out of stock"})],
                             expected_position=0),
            ]

    return CheckoutWithRefunds


# %% [check]
async def check_refunds() -> None:
    async with (eskit.course.scratch(client, "orders") as trial_orders,
                eskit.course.scratch(trial_orders.client, "payments") as trial_payments,
                eskit.course.scratch(trial_orders.client, "shipping") as trial_shipping):
        live = trial_orders.client  # the lesson's client, or a new one if its last cell closed it
        trial = Shop(trial_orders.name, trial_payments.name, trial_shipping.name, eskit.course.unique("pay") + ".charge")
        service = await eskit.command_service(live, trial.charge, store=trial.payments, decide=charge)
        manager = with_refunds(trial)(live, max_attempts=1)
        try:
            await refund_flow(manager, trial_orders, trial_payments, trial_shipping)
        finally:
            await manager.close(delete_consumers=True)
            await service.stop()
            for name in (trial.orders, trial.payments, trial.shipping):
                await live.delete_store(f"{name}_parked")


async def refund_flow(manager, trial_orders, trial_payments, trial_shipping) -> None:
    """Two orders through the flow, then the warehouse reports o1 out of stock."""
    await trial_orders.append("o1", [eskit.Event("placed", {"amount": 30})], expected_position=0)
    await trial_orders.append("o2", [eskit.Event("placed", {"amount": 40})], expected_position=0)
    await manager.run_until_caught_up()
    await trial_shipping.append("o1", [eskit.Event("out_of_stock", {"order": "o1"})])  # the warehouse
    await manager.run_until_caught_up()
    await manager.run_until_caught_up()  # again: nothing more may happen
    parked = await manager.parked()
    if parked and "expected position 0" in parked[0].reason:
        raise eskit.course.Wrong("the compensation was parked: a conflict, expected_position=0 says the order "
                                 "must not exist yet (it does): no expected position on the order")
    assert not parked, f"the compensation was parked: {parked[0].reason[:120]}"
    o1 = [e.type for e in await trial_orders.read("o1")]
    refunds = await trial_payments.read("refund-o1")
    if o1 == ["placed"] and not refunds:
        raise eskit.course.Wrong("not done yet: _out_of_stock returns no commands (return two eskit.Append)")
    assert o1 == ["placed", "cancelled"], f"order o1 should be placed then cancelled, it is {o1}"
    assert [e.type for e in refunds] == ["refund_due"], (
        "o1 is cancelled but its payment is kept: append refund_due to the payments store (aggregate refund-o1)")
    assert refunds[0].data == {"order": "o1"}, f"refund_due should carry {{'order': 'o1'}}, not {refunds[0].data}"
    assert [e.type for e in await trial_orders.read("o2")] == ["placed"], "o2 was shipped: leave it alone"


await eskit.course.check(check_refunds, ok="out of stock: the order is cancelled and its payment refunded, once")

# %% [markdown]
# ## Events for other teams: integration events
#
# The shipping team wants to know about orders. Giving them the private `orders` store would make every
# internal event and field of ours a contract we can never change. Instead we publish a curated **public
# stream** of the few types other teams may rely on — *integration events* — and keep the rest private.
#
# `client.publish_integration` does it **without a second write**: the public store is a JetStream stream
# that *sources* the private one through one subject filter and transform per public type
# (`orders.*.placed` → `orders_public.{{wildcard(1)}}.placed`); the server copies, no code of ours runs, and
# the public stream has no subjects of its own, so nobody can publish into it. Say the fraud check writes an
# internal event into the order:

# %%
await orders.append("o1", [eskit.Event("fraud_checked", {"score": 0.1})])
public = await client.publish_integration(orders, eskit.course.unique("orders_public"), types=["placed", "cancelled"])
await public.wait_for()  # the server copied what orders holds so far (a bounded wait)
print("private:", [(e.aggregate_id, e.type) async for e in orders.replay()])
print("public: ", [(e.aggregate_id, e.type) async for e in public.store.replay()])

# %% [markdown]
# The copies are whole events — same id, data, correlation id — at positions of the public store's own. Two
# things to know:
#
# - JetStream filters **subjects, never fields**: a public type is published with all its fields. To publish
#   a *shape* (no e-mail address, renamed fields), `eskit.Republisher` is a projection that appends a curated
#   event per private one to a store of its own (a second write, a transactional outbox, derived ids:
#   `docs/integration.md` compares the two);
# - the types of a public stream are **fixed** at creation: nats-server identifies a source by its filters,
#   and a changed source starts over and copies every event again. A wider contract is a new version beside
#   the old one, and partners move when they are ready — which is how public contracts evolve anyway.
#
# ### The partner reads the public stream, and nothing else
#
# The shipping team connects as its own user, allowed to read the public stream (stream info, Direct Get, its
# own consumers) and nothing more. `eskit.auth.least_privilege_config` writes the server's users (lesson 07);
# this cell starts a server of its own with an admin (who creates the stores), a writer (who appends) and the
# partner (a second or so):

# %%
from eskit.auth import least_privilege_config

config = least_privilege_config(
    admin_password="adm-secret", writer_password="w-secret", analyst_password="a-secret",
    partners=[eskit.Partner("shipping", password="s-secret", stores=["orders_public"])],
)
secured = eskit.EmbeddedServer(config=config).start()
try:
    admin = await eskit.connect(secured.url, user="admin", password="adm-secret", namespace="")
    await admin.publish_integration(await admin.event_store("orders"), "orders_public", types=["placed"])
    await admin.close()  # an admin creates the stores; the writer fills them

    writer = await eskit.connect(secured.url, user="writer", password="w-secret", namespace="")
    private = await writer.event_store("orders")
    await private.append("o7", [eskit.Event("placed", {"amount": 99}), eskit.Event("fraud_checked", {"score": 0.9})])
    shared = await writer.publish_integration(private, "orders_public", types=["placed"])
    await shared.wait_for()

    partner = await eskit.connect(secured.url, user="shipping", password="s-secret", namespace="")
    readable = await partner.public_store("orders_public")
    print("the partner reads:", [(e.aggregate_id, e.type) for e in await readable.read("o7")])
    try:
        await partner.event_store("orders")  # the private store
    except eskit.PermissionDeniedError as exc:
        print("the private store:", type(exc).__name__)
    await partner.close()
    await writer.close()
finally:
    secured.stop()

# %% [markdown]
# ### Exercise 9.2 · Publish one more type: a new version
#
# The billing team reads `v1`, a public stream of `placed` only, and now needs `cancelled` too. Write
# `publish_v2(client, orders, v1)`: it returns the public stream of the next version, which publishes what
# `v1` publishes **and** `cancelled`, with the history of both, while `v1` stays in place for the partners
# still reading it. (What happens when you ask `v1`'s name for other types? Try it.) `v1.name`, `v1.types`
# and `client.publish_integration` are all you need.

# %% [exercise]
async def publish_v2(client: eskit.Client, orders: eskit.EventStore, v1: eskit.IntegrationStream) -> eskit.IntegrationStream:
    ...  # your code here: return the new version's public stream


# %% [solution]
async def publish_v2(client: eskit.Client, orders: eskit.EventStore, v1: eskit.IntegrationStream) -> eskit.IntegrationStream:
    return await client.publish_integration(orders, f"{v1.name}_v2", types=[*v1.types, "cancelled"])


# %% [wrong] widens v1 in place
async def publish_v2(client: eskit.Client, orders: eskit.EventStore, v1: eskit.IntegrationStream) -> eskit.IntegrationStream:
    return await client.publish_integration(orders, v1.name, types=[*v1.types, "cancelled"])


# %% [wrong] replaces v1 under its name
async def publish_v2(client: eskit.Client, orders: eskit.EventStore, v1: eskit.IntegrationStream) -> eskit.IntegrationStream:
    await v1.delete()
    return await client.publish_integration(orders, v1.name, types=[*v1.types, "cancelled"])


# %% [wrong] the new version drops placed
async def publish_v2(client: eskit.Client, orders: eskit.EventStore, v1: eskit.IntegrationStream) -> eskit.IntegrationStream:
    return await client.publish_integration(orders, f"{v1.name}_v2", types=["cancelled"])


# %% [check]
async def check_v2() -> None:
    async with eskit.course.scratch(client, "private") as store:
        await store.append("o1", [eskit.Event("placed", {"amount": 30}), eskit.Event("fraud_checked", {"score": 0.1})])
        await store.append("o2", [eskit.Event("placed", {"amount": 500}), eskit.Event("cancelled", {"reason": "x"})])
        v1 = await store.client.publish_integration(store, eskit.course.unique("pub"), types=["placed"])
        v2 = None
        try:
            await v1.wait_for()
            try:
                v2 = await publish_v2(store.client, store, v1)
            except eskit.EventStoreError:
                raise eskit.course.Wrong(f"{v1.name!r} refused other types: a public stream's types are fixed; "
                                         "publish the new version under a new name") from None
            eskit.course.require(v2, "publish_v2 returns nothing yet")
            try:
                await store.client.js.stream_info(v1.stream)
            except Exception:
                raise eskit.course.Wrong("v1 was deleted: the partners still reading it lost their stream; "
                                         "publish v2 beside it") from None
            assert v2.name != v1.name, "v1 was replaced: the partners still reading it lost it; publish v2 beside it"
            await v2.wait_for()
            seen = [(e.aggregate_id, e.type) async for e in v2.store.replay()]
            assert ("o1", "placed") in seen, "v2 does not publish placed: partners moving from v1 still need it"
            assert ("o2", "cancelled") in seen, f"v2 does not publish cancelled: it holds {seen}"
            assert all(t != "fraud_checked" for _, t in seen), "fraud_checked is internal: keep it private"
            assert [e.type for e in await v1.store.read("o2")] == ["placed"], "v1 should still publish placed only"
        finally:
            for version in (v2, v1):
                if isinstance(version, eskit.IntegrationStream):
                    await version.delete()


await eskit.course.check(check_v2, ok="v2 publishes placed and cancelled with their history; v1 stays for its partners")

# %% [markdown]
# ## Forgetting a person: crypto-shredding
#
# A store never changes what it stored; yet a customer may ask to be forgotten (GDPR, article 17). Deleting
# their events would break the history (positions, other aggregates' decisions, audits). **Crypto-shredding**
# keeps the events and makes the personal parts unreadable: the fields you declare personal are stored
# encrypted (AES-256-GCM, from the `cryptography` library) with **one key per data subject**, kept in a KV
# bucket; forgetting the subject erases its key. The events stay byte for byte; what the key encrypted can no
# longer be read by anyone, and every read path shows `eskit.FORGOTTEN` in its place.
#
# Declare, per event type, which fields are personal and which field names their subject (the subject id stays
# in plain text, so use a pseudonymous id like `c1`, never the e-mail address):

# %%
keys = eskit.course.unique("keys")  # this run's key bucket (the default is personal_keys)
personal = eskit.Personal({"registered": ["email", "name"]}, subject="customer", bucket=keys)
customers_name = eskit.course.unique("customers")
customers = await client.event_store(customers_name, privacy=personal)


async def register(store: eskit.EventStore, customer: str, email: str, name: str) -> None:
    await store.append(customer, [eskit.Event("registered", {"customer": customer, "email": email, "name": name})])


await register(customers, "c1", "ann@example.com", "Ann")
await register(customers, "c2", "bob@example.com", "Bob")
print("read:", (await customers.read("c1"))[0].data)
raw = await client.event_store(customers_name)  # the same store, opened without the keys: what is stored
print("stored:", (await raw.read("c1"))[0].data["email"][:12] + "…  (key id, nonce, ciphertext, tag)")

# %% [markdown]
# A read model built from the store gets the decrypted fields, and keeps a **copy** of them:

# %%
class CustomersView(eskit.Projection):
    schema = "CREATE TABLE customers (id TEXT PRIMARY KEY, email TEXT, name TEXT)"

    @eskit.applies("registered")
    def _registered(self, db, event):
        db.execute("INSERT OR REPLACE INTO customers VALUES (?, ?, ?)",
                   (event.data["customer"], event.data["email"], event.data["name"]))

    @eskit.applies("forgotten")  # a customer was forgotten: forget the copy too
    def _forgotten(self, db, event):
        db.execute("UPDATE customers SET email = ?, name = ? WHERE id = ?",
                   (eskit.FORGOTTEN, eskit.FORGOTTEN, event.data["customer"]))


customers_view = CustomersView(customers, name=eskit.course.unique("customers_view"))
await customers_view.run_until_caught_up()
pd.read_sql("SELECT * FROM customers ORDER BY id", customers_view.db)

# %% [markdown]
# Now c1 asks to be forgotten. `eskit.forget` erases c1's key (the server overwrites the key's bytes, and
# purges its history in the bucket). Every read of the store shows the placeholder, the events are unchanged:

# %%
print("c1 had a key:", await eskit.forget(customers, "c1"))
print("read:", (await customers.read("c1"))[0].data)
print("the event is still there, at the same position:", [e.position for e in await raw.read("c1")])
(await eskit.to_dataframe(customers))[["aggregate_id", "email", "name"]]

# %% [markdown]
# But the read model copied c1's e-mail while the key existed, and still has it:

# %%
pd.read_sql("SELECT * FROM customers ORDER BY id", customers_view.db)

# %% [markdown]
# Crypto-shredding reaches the store and everything that reads it **from now on**; copies made before — read
# models, exports, DataFrames, backups of the key bucket, another team's database — hold plain text
# (`docs/privacy.md` lists what it does not reach). A read model forgets in one of two ways: **rebuild** it
# (blue/green, lesson 04: the rebuild reads `<forgotten>`), or record the forgetting as an event that its
# handlers act on — `CustomersView` above handles `forgotten`. A rebuild:

# %%
await customers_view.rebuild()
pd.read_sql("SELECT * FROM customers ORDER BY id", customers_view.db)

# %% [markdown]
# ### Exercise 9.3 · Forget a customer, in every view
#
# Rebuilding every read model for each request does not scale. Write `forget_customer(store, customer)` so
# that, once the read models have caught up, **no view** shows the customer's e-mail or name: not `read`, not
# `load`, not `to_dataframe`, not `CustomersView` — while the other customers stay as they are. (What does
# `CustomersView` react to?)

# %% [exercise]
async def forget_customer(store: eskit.EventStore, customer: str) -> None:
    ...  # your code here


# %% [solution]
async def forget_customer(store: eskit.EventStore, customer: str) -> None:
    await eskit.forget(store, customer)
    await store.append(customer, [eskit.Event("forgotten", {"customer": customer})])


# %% [wrong] erases the key only
async def forget_customer(store: eskit.EventStore, customer: str) -> None:
    await eskit.forget(store, customer)


# %% [wrong] tells the read models only
async def forget_customer(store: eskit.EventStore, customer: str) -> None:
    await store.append(customer, [eskit.Event("forgotten", {"customer": customer})])


# %% [check]
class Customer(eskit.Aggregate):
    on_unknown = "ignore"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.email = self.name = ""

    @eskit.applies("registered")
    def _registered(self, data: dict) -> None:
        self.email, self.name = data["email"], data["name"]


async def check_forget() -> None:
    bucket = eskit.course.unique("keys")
    declared = eskit.Personal({"registered": ["email", "name"]}, subject="customer", bucket=bucket)
    async with eskit.course.scratch(client, "forget", privacy=declared) as store:
        view = CustomersView(store, name=eskit.course.unique("view"))
        try:
            await register(store, "c1", "ann@example.com", "Ann")
            await register(store, "c2", "bob@example.com", "Bob")
            await view.run_until_caught_up()
            await forget_customer(store, "c1")
            await view.run_until_caught_up()
            shown = {
                "read": (await store.read("c1"))[0].data["email"],
                "load": (await store.load(Customer, "c1")).email,
                "to_dataframe": (await eskit.to_dataframe(store)).query("type == 'registered'").email.iloc[0],
                "CustomersView": view.db.execute("SELECT email FROM customers WHERE id = 'c1'").fetchone()[0],
            }
            leaks = [where for where, email in shown.items() if email != eskit.FORGOTTEN]
            if len(leaks) == len(shown):
                raise eskit.course.Wrong("not done yet: every view still shows c1's e-mail")
            assert leaks != ["CustomersView"], (
                "the store forgets c1, but CustomersView still shows ann@example.com: tell the read model too "
                "(what does it react to?)")
            assert not leaks, f"{', '.join(leaks)} still show(s) c1's e-mail: erase c1's key (eskit.forget)"
            bob = view.db.execute("SELECT email FROM customers WHERE id = 'c2'").fetchone()[0]
            assert bob == "bob@example.com" and (await store.read("c2"))[0].data["name"] == "Bob", "c2 was forgotten too"
        finally:
            await view.close(delete_consumer=True)
            await store.client.js.delete_key_value(store.privacy.ring.bucket)
            await store.client.delete_store(f"{store.name}_parked")


await eskit.course.check(check_forget, ok="c1 is forgotten in the store, the aggregate, the DataFrame and the read model")

# %% [markdown]
# ## One view from two stores: a multi-stream projection
#
# Customer service wants one table of orders with what was paid: the orders live in one store, the payments
# in another. `eskit.MultiStreamProjection` is a projection over several stores: one read model, and **one
# position per store**, each stored in the same SQLite transaction as the changes it made (exactly once in
# effect per store, as in lesson 04). Handlers are declared as usual; `self.store_of(event)` names the store
# an event came from.

# %%
class OrdersAndPayments(eskit.MultiStreamProjection):
    schema = "CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT, paid INTEGER NOT NULL DEFAULT 0)"

    @eskit.applies("placed")
    def _placed(self, db, event):
        db.execute("INSERT INTO orders (id, status) VALUES (?, 'placed') "
                   "ON CONFLICT (id) DO UPDATE SET status = coalesce(status, 'placed')", (event.aggregate_id,))

    @eskit.applies("cancelled")
    def _cancelled(self, db, event):
        db.execute("INSERT INTO orders (id, status) VALUES (?, 'cancelled') "
                   "ON CONFLICT (id) DO UPDATE SET status = 'cancelled'", (event.aggregate_id,))

    @eskit.applies("captured")
    def _captured(self, db, event):
        db.execute("INSERT INTO orders (id, paid) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET paid = paid + excluded.paid",
                   (event.data["order"], event.data["amount"]))


overview = OrdersAndPayments({"orders": orders, "payments": payments}, name=eskit.course.unique("overview"))
await overview.run_until_caught_up()
print("positions:", overview.positions)
pd.read_sql("SELECT * FROM orders ORDER BY id", overview.db)

# %% [markdown]
# What a handler may assume: the events of **one** store arrive in that store's order, each once. What it may
# **not** assume: an order *across* stores. A payment can be applied before the order it pays (each store is
# read by a consumer of its own), and a rebuild may interleave the stores differently than the live run.
# So the handlers above commute: upserts and sums, never "the order row must exist already" (`placed` fills in
# a row a payment created first, and never overwrites a cancellation). Run this lesson twice and the two
# stores may interleave differently: the table comes out the same. And positions of two stores do not compare:
# position 3 in `payments` says nothing about position 3 in `orders`. A rebuild (blue/green) reads every store
# from the start and gives the same table:

# %%
await overview.rebuild()
print("positions:", overview.positions)
pd.read_sql("SELECT * FROM orders ORDER BY id", overview.db)

# %% [markdown]
# ## Closing the books
#
# A bank account lives for decades. Replaying every deposit since it was opened makes each load slower than
# the last, and most of that history no longer decides anything: nobody checks a withdrawal in 2025 against a
# deposit of 2016, only against the balance. Accountants solved this long ago: at the end of a period they
# *close the books* and carry the balance forward, and the next period opens with that one figure.
#
# In the event store, each period is an aggregate of its own — `acc-1_2025` — whose first event,
# `period_opened`, carries the state forward. A load of the current period reads that event and this year's
# events, never the years before. `eskit.periods` gives the base class and the close:

# %%
class Account(PeriodicAggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.balance = 0

    def withdraw(self, amount: int) -> None:
        if amount > self.balance:
            raise eskit.DecisionError(f"{self.id}: {amount} is more than the balance {self.balance}")
        self.record("withdrawn", {"amount": amount})

    @eskit.applies("deposited")
    def _deposited(self, data: dict) -> None:
        self.balance += data["amount"]

    @eskit.applies("withdrawn")
    def _withdrawn(self, data: dict) -> None:
        self.balance -= data["amount"]


def deposits(n: int, amount: int = 1) -> list[eskit.Event]:
    return [eskit.Event("deposited", {"amount": amount}) for _ in range(n)]


books_name = eskit.course.unique("books")
books = await client.event_store(books_name)
await books.append(period_id("acc-1", "2024"), deposits(3, 100))
opened_at = await close_period(books, Account, "acc-1", "2024", "2025")
for event in await books.read(period_id("acc-1", "2024")) + await books.read(period_id("acc-1", "2025")):
    print(event.aggregate_id, event.type, event.data)

# %% [markdown]
# `close_period` loads 2024, asks it what to carry forward (`carried_forward()`: by default its whole public
# state; override it to carry less), and appends **two events to two aggregates in one atomic batch**:
# `period_closed` on 2024 and `period_opened` on 2025. Each is checked against the position it was read at,
# so both are stored or neither:
#
# - a deposit that reaches 2024 after the close read it makes the close fail (`ConcurrencyError`: load and
#   close again) — it can never be left behind in a closed year;
# - a 2025 that already has events (someone opened it another way) fails the close too;
# - closing again into 2025 (a retry) is one close; closing 2024 into another period is refused.
#
# Once closed, a period refuses new events (and a writer that loaded it *before* the close gets a
# `ConcurrencyError` when it saves): money moves in the current period only.

# %%
late = await books.load(Account, period_id("acc-1", "2024"))
try:
    late.withdraw(50)
except eskit.DecisionError as exc:
    print("refused:", exc)
current = await books.load(Account, period_id("acc-1", "2025"))
current.withdraw(50)
await books.save(current)
print(current.id, "balance", current.balance, "| events in this period:", current.version)

# %% [markdown]
# ### Load time as the years go by
#
# Two accounts get the same 200 deposits a year for ten years. `acc-whole` keeps everything in one aggregate;
# `acc-books` closes its books every year. After each year we load each account as it is now (the fastest of
# 3 loads, the one least disturbed by whatever else runs on this machine; your numbers differ from run to run):

# %%
# NBVAL_IGNORE_OUTPUT
PER_YEAR, YEARS = 200, list(range(2016, 2026))


async def load_ms(aggregate_id: str, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await books.load(Account, aggregate_id)
        times.append((time.perf_counter() - started) * 1000)
    return min(times)


whole, by_period = [], []
for year in YEARS:
    await books.append("acc-whole", deposits(PER_YEAR))
    await books.append(period_id("acc-books", str(year)), deposits(PER_YEAR))
    whole.append(await load_ms("acc-whole"))
    by_period.append(await load_ms(period_id("acc-books", str(year))))
    await close_period(books, Account, "acc-books", str(year), str(year + 1))

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(range(1, len(YEARS) + 1), whole, "o-", label="one aggregate, whole history")
ax.plot(range(1, len(YEARS) + 1), by_period, "s-", label="books closed yearly: current period")
ax.set_xlabel(f"years of history ({PER_YEAR} deposits a year)")
ax.set_ylabel("load time (ms, fastest of 3)")
ax.set_title("Loading a long-lived account")
ax.set_ylim(bottom=0)
ax.legend()
plt.show()
print(f"after {len(YEARS)} years: whole history {whole[-1]:.1f} ms, current period {by_period[-1]:.1f} ms")

# %% [markdown]
# Both accounts hold the same money; only the amount of history a load must read differs:

# %%
kept_whole = await books.load(Account, "acc-whole")
kept_by_period = await books.load(Account, period_id("acc-books", str(YEARS[-1] + 1)))
print("balance:", kept_whole.balance, "and", kept_by_period.balance)
print("events read by a load:", kept_whole.version, "and", kept_by_period.version)

# %% [markdown]
# The load of the whole history grows year after year; the current period's stays where it was in the first
# year. A snapshot (lesson 03) flattens the load too — so why close the books? Because the period is a
# **business** fact, not a cache: the closing balance is a figure auditors sign, each year's stream stays short
# enough to read, analyse, archive or move to cheaper storage on its own, and the rules of a closed year
# (nothing more may be booked) are enforced by the aggregate itself. A snapshot is invisible to the domain; a
# closed period is part of it. The price: a question over many years ("every deposit since 2016") reads many
# aggregates — one subject filter over every period, or a projection:

# %%
history = [e async for e in books.replay(subjects=[f"{books.name}.*.deposited"])
           if e.aggregate_id.startswith("acc-books_")]
print(len(history), "deposits in", len({e.aggregate_id for e in history}), "periods:",
      sorted({e.aggregate_id for e in history})[:2], "...")

# %% [markdown]
# ### Exercise 9.4 · Carry forward what the next year needs
#
# `Savings` keeps a balance, an interest rate (set by a `rate_set` event) and this period's `statement`
# (every movement, for the yearly statement). Carrying its whole state forward — the default — would copy the
# statement into the next year's opening event, and every year's opening would be bigger than the last.
# Write `carried_forward()` and `open_with(carried)` in `YearlySavings` so that a new year opens with the
# balance and the rate it needs to decide, and an empty statement.

# %%
class Savings(PeriodicAggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.balance = 0
        self.rate = 0.0
        self.statement: list[int] = []

    @eskit.applies("deposited")
    def _deposited(self, data: dict) -> None:
        self.balance += data["amount"]
        self.statement.append(data["amount"])

    @eskit.applies("rate_set")
    def _rate_set(self, data: dict) -> None:
        self.rate = data["rate"]


# %% [exercise]
class YearlySavings(Savings):
    def carried_forward(self) -> dict:
        ...  # your code here: what the next year needs from this one

    def open_with(self, carried: dict) -> None:
        ...  # your code here: set the state from what carried_forward() returned


# %% [solution]
class YearlySavings(Savings):
    def carried_forward(self) -> dict:
        return {"balance": self.balance, "rate": self.rate}

    def open_with(self, carried: dict) -> None:
        self.balance, self.rate = carried["balance"], carried["rate"]


# %% [wrong] only the balance is carried
class YearlySavings(Savings):
    def carried_forward(self) -> dict:
        return {"balance": self.balance}

    def open_with(self, carried: dict) -> None:
        self.balance = carried["balance"]


# %% [wrong] the whole state is carried, statement included
class YearlySavings(Savings):
    def carried_forward(self) -> dict:
        return {"balance": self.balance, "rate": self.rate, "statement": self.statement}

    def open_with(self, carried: dict) -> None:
        self.balance, self.rate, self.statement = carried["balance"], carried["rate"], carried["statement"]


# %% [check]
async def check_carry() -> None:
    eskit.course.require(YearlySavings("s").carried_forward(), "carried_forward returns nothing yet")
    async with eskit.course.scratch(client, "carry") as store:
        await store.append(period_id("s-1", "2024"), [eskit.Event("rate_set", {"rate": 0.02}), *deposits(5, 10)])
        await close_period(store, YearlySavings, "s-1", "2024", "2025")
        await store.append(period_id("s-1", "2025"), deposits(2, 1))
        await close_period(store, YearlySavings, "s-1", "2025", "2026")
        year = await store.load(YearlySavings, period_id("s-1", "2026"))
        opening = (await store.read(period_id("s-1", "2026")))[0]
    assert year.balance == 52, f"2026 opens with a balance of {year.balance}, expected 52 (50 in 2024, 2 in 2025)"
    assert year.rate == 0.02, f"the rate set in 2024 is {year.rate} in 2026: carry every figure a later year decides with"
    assert year.statement == [], (
        f"2026 opens with a statement of {len(year.statement)} movements from earlier years: carry the balance, "
        "not the history (each year's statement starts empty)")
    assert "statement" not in opening.data["carried"], "the opening event still carries the statement"


await eskit.course.check(check_carry, ok="each year opens with the balance and the rate, and an empty statement")

# %% [markdown]
# ## Summary
#
# - A **process manager** holds a flow across stores and services: `@eskit.reacts_to(store, type)` handlers
#   return `eskit.Request` / `eskit.Append` commands; positions are stored after the commands were issued and
#   command ids derive from the triggering event, so a restart repeats commands the receivers drop (exactly
#   once in effect). A failed step is undone by a **compensating** command. `eskit.command_service` puts a
#   decision behind NATS request-reply and acts once per command id.
# - **Integration events**: `client.publish_integration(store, name, types=[...])` makes a public stream the
#   server fills by sourcing chosen types (whole events, no second write, types fixed: a wider contract is a
#   new version beside the old); `eskit.Republisher` publishes curated shapes; `eskit.Partner` users read the
#   public stream and are refused the private store.
# - **Crypto-shredding**: `client.event_store(name, privacy=eskit.Personal({...}, subject="customer"))`
#   encrypts the declared fields per subject; `eskit.forget` erases the key; every read path shows
#   `eskit.FORGOTTEN`. Copies made before (read models, exports) forget by a rebuild or a `forgotten` event.
# - A **multi-stream projection** keeps one read model and a position per store; write handlers that commute
#   across stores (there is no order between them).
# - **Closing the books** keeps a long-lived aggregate short: one aggregate per period (`period_id("acc-1",
#   "2025")`), opened by a `period_opened` event that carries the state forward. `close_period(store, cls, id,
#   period, next_period)` appends the closing and the opening to two aggregates in one atomic batch, each
#   concurrency-checked; a closed period refuses new events. The load of the current period stays flat as the
#   years go by; carry forward what later periods decide with, not the history.

# %%
await checkout.close(delete_consumers=True)
await payment_service.stop()
for name in (shop.orders, shop.payments, shop.shipping):
    await client.delete_store(name)
    await client.delete_store(f"{name}_parked")
await customers_view.close(delete_consumer=True)
await overview.close(delete_consumer=True)
await public.delete()
await client.js.delete_key_value(customers.privacy.ring.bucket)
for name in (customers_name, f"{customers_name}_parked", books_name):
    await client.delete_store(name)
await client.close()

# %% [markdown]
# **Next:** that is the end of the course. `docs/process-managers.md`, `docs/integration.md`,
# `docs/privacy.md` and `docs/closing-the-books.md` go deeper into this lesson's parts; `docs/workshop.md` lists further reading for every
# lesson.
