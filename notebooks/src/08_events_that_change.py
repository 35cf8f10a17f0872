# %% [markdown]
# # 08 · Events that change
#
# **What you'll do:** change an event's shape (v1 → v2) and watch a projection and an aggregate break on the
# old events; fix both with an **upcaster**, without touching a stored byte; compare a tolerant reader with
# strict versions; measure why the seed's `orders.v1.<id>.<type>` subjects lose updates; measure what
# too fine-grained events cost; and see that history cannot be edited — only corrected by a new event.
# You write an upcaster, a second step of a chain, the seed layout's concurrency filter and one event per
# decision (exercises 8.1-8.4).
#
# **What you'll learn:**
# - events are forever: the code that reads them changes, the stored events do not;
# - `eskit.Upcasters`: pure functions `data -> data`, one per version step, applied on every read
#   (`read`, `replay`, `load`, projections, `to_dataframe`, the widgets, the DCB store);
# - tolerant reader vs strict versions, and when a copy-and-transform migration (`eskit.migrate`) is the
#   better tool;
# - why the version belongs in a header, not in the subject;
# - one event per *decision*, not per field;
# - immutability: a store refuses deletes and purges; a wrong event is corrected by a compensating event.
#
# **What you need:** lessons 01-04. About 25 minutes.

# %%
import json
import statistics
import time
import uuid

import matplotlib.pyplot as plt
import pandas as pd

import eskit
from eskit import applies
from eskit.streams import stream_config

client = await eskit.connect()
run = uuid.uuid4().hex[:8]
shop = await client.event_store(f"shop{run}")  # opened without upcasters: it reads what is stored

# %% [markdown]
# ## Version 1, then version 2
#
# The shop has been writing `item_added` events like this for a year (**v1**: prices were all in euros):

# %%
def v1(sku: str, qty: int, price: float) -> eskit.Event:
    return eskit.Event("item_added", {"sku": sku, "qty": qty, "price": price})  # schema_version=1


def v2(sku: str, qty: int, price: float, currency: str) -> eskit.Event:
    return eskit.Event("item_added", {"sku": sku, "qty": qty, "price": price, "currency": currency},
                       schema_version=2)


async def first_year(store: eskit.EventStore) -> None:
    await store.append("o1", [eskit.Event("created"), v1("A1", 2, 9.50), v1("B2", 1, 19.99)])
    await store.append("o2", [eskit.Event("created"), v1("A1", 1, 9.50)])


await first_year(shop)
for e in await shop.read("o1"):
    print(e.position, e.type, f"v{e.schema_version}", e.data)

# %% [markdown]
# Now the shop sells in dollars too. **v2** adds a `currency`, the new code is deployed, and new orders are
# written as v2 (`Event(..., schema_version=2)` — the version travels in the `Eskit-Schema-Version` header):

# %%
async def after_the_change(store: eskit.EventStore) -> None:
    await store.append("o3", [eskit.Event("created"), v2("A1", 3, 10.00, "USD")])
    await store.append("o1", [v2("C3", 1, 5.00, "EUR")])


await after_the_change(shop)


class Order(eskit.Aggregate):
    """The new code: totals per currency."""

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.totals: dict[str, float] = {}

    @applies("created")
    def _created(self, data: dict) -> None:
        pass

    @applies("item_added")
    def _item_added(self, data: dict) -> None:
        currency = data["currency"]  # v2 code: every item has a currency
        self.totals[currency] = round(self.totals.get(currency, 0) + data["qty"] * data["price"], 2)


class Revenue(eskit.Projection):
    """The new read model: revenue per currency."""

    schema = "CREATE TABLE revenue (currency TEXT PRIMARY KEY, amount REAL)"

    @applies("item_added")
    def _item_added(self, db, event: eskit.RecordedEvent) -> None:
        db.execute("INSERT INTO revenue VALUES (?, ?) ON CONFLICT (currency) DO UPDATE SET amount = "
                   "round(amount + excluded.amount, 2)",
                   (event.data["currency"], event.data["qty"] * event.data["price"]))


print("o3 (only v2 events):", (await shop.load(Order, "o3")).totals)
try:
    await shop.load(Order, "o1")
except KeyError as exc:
    print("o1 (v1 events):", type(exc).__name__, exc, "— the aggregate cannot be loaded")

# %% [markdown]
# The projection does no better: every v1 event makes its handler raise, so the event is retried, then
# **parked** (lesson 04) — the read model quietly misses most of the revenue:

# %%
revenue = Revenue(shop, name=f"revenue{run}", retry_delay=0.01)
await revenue.run_until_caught_up()
print("read model:", revenue.db.execute("SELECT currency, amount FROM revenue ORDER BY currency").fetchall())
print("parked:", [(p.position, p.reason[:60]) for p in await revenue.parked()])
await revenue.close(delete_consumer=True)
_ = await client.delete_store(f"{shop.name}_parked")

# %% [markdown]
# ## Upcasting: old events read as the new version
#
# The stored events are facts; they stay as they are. What changes is how they are *read*. An **upcaster** is
# a pure function from one version's data to the next; eskit applies it on every read path of a store opened
# with it, and `RecordedEvent.schema_version` says the version *after* upcasting:
#
# ```python
# upcasters = eskit.Upcasters()
#
# @upcasters.register("item_added", from_version=1)     # turns v1 data into v2 data
# def add_currency(data: dict) -> dict:
#     return ...
#
# orders = await client.event_store("orders", upcasters=upcasters)
# ```

# %% [markdown]
# ### Exercise 8.1 · An upcaster for v1 → v2
#
# Write `add_currency`: it gets the data of a v1 `item_added` event (`{"sku", "qty", "price"}`) and returns
# the v2 data (the same, plus `"currency"`; every v1 price was in euros). Return a new dict. The check opens the
# shop's stream with your upcasters, loads `Order` "o1" and runs `Revenue` — both must work, and the stored
# events must be unchanged.

# %% [exercise]
upcasters = eskit.Upcasters()


@upcasters.register("item_added", from_version=1)
def add_currency(data: dict) -> dict:
    ...  # your code here: return the v2 data

# %% [solution]
upcasters = eskit.Upcasters()


@upcasters.register("item_added", from_version=1)
def add_currency(data: dict) -> dict:
    return {**data, "currency": "EUR"}

# %% [wrong] changes the dict but returns nothing
upcasters = eskit.Upcasters()


@upcasters.register("item_added", from_version=1)
def add_currency(data: dict) -> dict:
    data["currency"] = "EUR"

# %% [wrong] v1 prices read as dollars
upcasters = eskit.Upcasters()


@upcasters.register("item_added", from_version=1)
def add_currency(data: dict) -> dict:
    return {**data, "currency": "USD"}

# %% [wrong] registered for the wrong version
upcasters = eskit.Upcasters()


@upcasters.register("item_added", from_version=2)
def add_currency(data: dict) -> dict:
    return {**data, "currency": "EUR"}

# %% [check]
async def check_add_currency() -> None:
    probe = {"sku": "A1", "qty": 2, "price": 9.5}
    out = add_currency(probe)
    if out is None and "currency" in probe:
        raise eskit.course.Wrong("add_currency changed the dict it got but returned None: return the v2 data")
    eskit.course.require(out, "add_currency returns the v2 data")
    if out.get("currency") != "EUR":
        raise eskit.course.Wrong(f"a v1 event came out with currency {out.get('currency')!r}: v1 prices were all in euros")
    async with eskit.course.scratch(client, "shop") as plain:
        await first_year(plain)
        await after_the_change(plain)
        upcast = await client.event_store(plain.name, upcasters=upcasters)
        try:
            order = await upcast.load(Order, "o1")
        except KeyError:
            raise eskit.course.Wrong("v1 events still reach the handlers without a currency: is the upcaster "
                                     "registered for the version the events are stored as?") from None
        assert order.totals == {"EUR": 43.99}, f"o1's totals are {order.totals}, expected {{'EUR': 43.99}}"
        view = Revenue(upcast, name=eskit.course.unique("revenue"), retry_delay=0.01)
        try:
            await view.run_until_caught_up()
            rows = dict(view.db.execute("SELECT currency, amount FROM revenue").fetchall())
            assert not await view.parked(), "the projection still parks events"
        finally:
            await view.close(delete_consumer=True)
            await client.delete_store(f"{plain.name}_parked")
        assert rows == {"EUR": 53.49, "USD": 30.0}, f"revenue {rows}, expected EUR 53.49 and USD 30.0"
        stored = (await plain.read("o1"))[1]
        assert (stored.schema_version, "currency" in stored.data) == (1, False), "a stored event changed"


await eskit.course.check(check_add_currency, ok="the aggregate and the projection read v1 events as v2; nothing stored changed")

# %% [markdown]
# With the upcaster, every read path sees v2. The same stream opened without it still reads what is stored:

# %%
upcast_shop = await client.event_store(shop.name, upcasters=eskit.Upcasters())
upcast_shop.upcasters.register("item_added", from_version=1)(lambda data: {**data, "currency": "EUR"})
stored, read = (await shop.read("o1"))[1], (await upcast_shop.read("o1"))[1]
print("stored:", f"v{stored.schema_version}", stored.data, stored.raw)
print("read:  ", f"v{read.schema_version}", read.data, read.raw)
print((await eskit.to_dataframe(upcast_shop))[["position", "type", "schema_version", "sku", "currency"]]
      .to_string(index=False))

# %% [markdown]
# An upcaster that raises is not skipped silently: a read fails with one line naming the event (position,
# type, version), and a projection parks the event (its handler never sees it) and goes on — fix the
# upcaster, then `replay_parked()`.

# %%
broken = eskit.Upcasters()
broken.register("item_added", from_version=1)(lambda data: {**data, "currency": data["currency_code"]})
try:
    await (await client.event_store(shop.name, upcasters=broken)).read("o1")
except eskit.UpcastError as exc:
    print(type(exc).__name__, "—", str(exc).replace(shop.name, "shop"))  # the store's name varies per run

# %% [markdown]
# ## Tolerant reader or strict versions?
#
# A **tolerant reader** needs no versions at all: every handler reads what it needs and defaults the rest,
# `data.get("currency", "EUR")`. It is the right choice for *additive* changes that readers may ignore. But its
# defaults are scattered over every reader (aggregate, projections, analysis notebooks), and it cannot tell an
# old event from a broken new one. Here a v2 writer with a typo (`"curency"`) goes unnoticed by the tolerant
# reader, while the strict reader (v2 requires a currency; old events are upcast) refuses it loudly:

# %%
def tolerant_total(events: list[eskit.RecordedEvent]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for e in events:
        if e.type == "item_added":
            currency = e.data.get("currency", "EUR")
            totals[currency] = round(totals.get(currency, 0) + e.data["qty"] * e.data["price"], 2)
    return totals


await shop.append("o4", [eskit.Event("created"), eskit.Event("item_added", {"sku": "D4", "qty": 1, "price": 50.0,
                                                                           "curency": "USD"}, schema_version=2)])
print("tolerant reader, o4:", tolerant_total(await upcast_shop.read("o4")), "← 50 dollars counted as euros")
try:
    await upcast_shop.load(Order, "o4")
except KeyError as exc:
    print("strict reader, o4: KeyError", exc, "← the broken v2 event is found at once")

# %% [markdown]
# | | tolerant reader | strict versions + upcasters |
# |---|---|---|
# | where the change lives | in every reader (`.get(..., default)`) | in one place: the upcaster |
# | an old event | read with defaults | upcast to the current version |
# | a broken new event | read with defaults — silently wrong | fails loudly (or is parked) |
# | good for | additive, optional fields | any change of meaning, renamed or restructured fields |
#
# Upcasters chain: v1 → v2 → v3, each step a function of its own, applied in order. A renamed event type is
# one line: `upcasters.rename("ItemAdded", "item_added")`.

# %% [markdown]
# ### Exercise 8.2 · A chain: v2 → v3
#
# Version 3 stores money as integer cents: `unit_price_cents` replaces `price` (a v3 event has no `price`).
# Write `to_cents` (v2 data → v3 data). The check registers the reference `add_currency` (v1 → v2) and your
# `to_cents` (v2 → v3), and reads a v1, a v2 and a v3 event: all three must come out as v3, with the right cents.

# %% [exercise]
def to_cents(data: dict) -> dict:
    ...  # your code here: return the v3 data

# %% [solution]
def to_cents(data: dict) -> dict:
    v3 = {key: value for key, value in data.items() if key != "price"}
    return {**v3, "unit_price_cents": round(data["price"] * 100)}

# %% [wrong] float cents truncated
def to_cents(data: dict) -> dict:
    v3 = {key: value for key, value in data.items() if key != "price"}
    return {**v3, "unit_price_cents": int(data["price"] * 100)}

# %% [wrong] keeps the old field
def to_cents(data: dict) -> dict:
    return {**data, "unit_price_cents": round(data["price"] * 100)}

# %% [check]
async def check_to_cents() -> None:
    eskit.course.require(to_cents({"sku": "A1", "qty": 1, "price": 1.0, "currency": "EUR"}), "to_cents returns the v3 data")
    chain = eskit.Upcasters()
    chain.register("item_added", from_version=1)(lambda data: {**data, "currency": "EUR"})
    chain.register("item_added", from_version=2)(to_cents)
    async with eskit.course.scratch(client, "cents") as store:
        await store.append("o1", [v1("B2", 1, 19.99), v2("C3", 2, 0.29, "USD"),
                                  eskit.Event("item_added", {"sku": "D4", "qty": 1, "unit_price_cents": 500,
                                                             "currency": "EUR"}, schema_version=3)])
        events = await (await client.event_store(store.name, upcasters=chain)).read("o1")
    assert [e.schema_version for e in events] == [3, 3, 3], f"versions after upcasting: {[e.schema_version for e in events]}"
    if any("price" in e.data for e in events):
        raise eskit.course.Wrong("a v3 event has no 'price' any more: drop it, or a tolerant reader keeps reading it")
    cents = [e.data["unit_price_cents"] for e in events]
    if cents != [1999, 29, 500]:
        raise eskit.course.Wrong(f"cents {cents}, expected [1999, 29, 500]: 19.99 * 100 is a float just under 1999 "
                                 "— round() it, do not cut it with int()")
    assert all(type(c) is int for c in cents), "cents must be ints"


await eskit.course.check(check_to_cents, ok="v1, v2 and v3 all read as v3, exactly to the cent")

# %% [markdown]
# ## The seed's `orders.v1.<id>.<type>`: the version in the subject
#
# The seed puts the version into the subject. That looks tidy, but the subject is what JetStream's
# optimistic concurrency check and every read filter work on. A v1 writer checks "nothing new on
# `orders.v1.<id>.>` since I read": a v2 writer's event lands on `orders.v2.<id>.>` and escapes that check.
# We replay the seed's layout on a raw stream (as the seed's code does it) and the same story on an eskit store
# (version in a header, one subject space per aggregate): the v1 writer reads an order, a v2 writer cancels it,
# then the v1 writer ships it.

# %%
SEED = f"seed{run}"
await client.js.add_stream(stream_config(SEED))  # subjects seed....>, stream SEED...


async def seed_last(filter_subject: str) -> int:
    try:
        return (await client.js.get_last_msg(SEED.upper(), filter_subject)).seq
    except Exception:  # nothing on that filter yet
        return 0


async def seed_append(order_id: str, version: str, event_type: str, expected: int, filter_subject: str) -> int:
    """The seed's append: checked against the last event on `filter_subject`."""
    headers = {"Nats-Expected-Last-Subject-Sequence": str(expected),
               "Nats-Expected-Last-Subject-Sequence-Subject": filter_subject}
    ack = await client.js.publish(f"{SEED}.{version}.{order_id}.{event_type}", b"{}", headers=headers)
    return ack.seq


async def seed_story(order_id: str) -> str:
    await seed_append(order_id, "v1", "created", 0, f"{SEED}.v1.{order_id}.>")
    read_at = await seed_last(f"{SEED}.v1.{order_id}.>")  # the v1 writer reads the order
    v2_at = await seed_last(f"{SEED}.v2.{order_id}.>")  # a v2 writer reads, and cancels it
    await seed_append(order_id, "v2", "cancelled", v2_at, f"{SEED}.v2.{order_id}.>")
    try:  # the v1 writer ships what it read: a pending order
        await seed_append(order_id, "v1", "shipped", read_at, f"{SEED}.v1.{order_id}.>")
        return "lost update"
    except Exception:
        return "conflict caught"


eskit_orders = await client.event_store(f"orders{run}")


async def eskit_story(order_id: str) -> str:
    read_at = await eskit_orders.append(order_id, [eskit.Event("created")], expected_position=0)
    await eskit_orders.append(order_id, [eskit.Event("cancelled", schema_version=2)], expected_position=read_at)
    try:
        await eskit_orders.append(order_id, [eskit.Event("shipped")], expected_position=read_at)
        return "lost update"
    except eskit.ConcurrencyError:
        return "conflict caught"


seed_outcomes = [await seed_story(f"o{i}") for i in range(20)]
eskit_outcomes = [await eskit_story(f"o{i}") for i in range(20)]
print("seed layout :", pd.Series(seed_outcomes).value_counts().to_dict())
print("eskit layout:", pd.Series(eskit_outcomes).value_counts().to_dict())

# %% [markdown]
# Twenty cancelled orders shipped. And every read of one order now needs **two filters** (`v1` and `v2`, a
# third after the next version) or a wildcard in the middle of the subject. Measured: reading one order, the
# seed's two filters against eskit's one:

# %%
# NBVAL_IGNORE_OUTPUT
seed_store = eskit.EventStore(client, SEED, SEED.upper())  # eskit's reads over the seed's stream


async def ms(read, repeat: int = 30) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await read()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def read_seed_order() -> list[eskit.RecordedEvent]:
    return [e async for e in seed_store.replay(subjects=[f"{SEED}.v1.o7.>", f"{SEED}.v2.o7.>"])]


two = await ms(read_seed_order)
one = await ms(lambda: eskit_orders.read("o7"))
print("events of o7:", len(await read_seed_order()), "(seed)", len(await eskit_orders.read("o7")), "(eskit)")
print(f"one order: seed layout, two filters {two:.2f} ms; eskit, one filter {one:.2f} ms")

# %% [markdown]
# ### Exercise 8.3 · Close the seed's hole
#
# Keep the seed's subjects, but make the v1 writer's check cover **every version** of the order — and nothing
# else. Write `expected_filter(order_id)`: the value of `Nats-Expected-Last-Subject-Sequence-Subject` for an
# append to that order (subjects are `f"{SEED}.<version>.<order id>.<type>"`). The check replays the story
# (a v2 writer cancels between the v1 writer's read and write) and also writes to another order in between.

# %% [exercise]
def expected_filter(order_id: str) -> str:
    ...  # your code here

# %% [solution]
def expected_filter(order_id: str) -> str:
    return f"{SEED}.*.{order_id}.>"

# %% [wrong] the seed's own filter
def expected_filter(order_id: str) -> str:
    return f"{SEED}.v1.{order_id}.>"

# %% [wrong] the whole store
def expected_filter(order_id: str) -> str:
    return f"{SEED}.>"

# %% [check]
async def check_expected_filter() -> None:
    order, other = eskit.course.unique("x"), eskit.course.unique("y")
    eskit.course.require(expected_filter(order), "expected_filter returns a subject filter")
    await seed_append(order, "v1", "created", 0, f"{SEED}.v1.{order}.>")
    read_at = await seed_last(expected_filter(order))
    await seed_append(other, "v2", "created", 0, f"{SEED}.v2.{other}.>")  # another order moves on
    try:
        await seed_append(order, "v1", "item_added", read_at, expected_filter(order))
    except Exception:
        raise eskit.course.Wrong("a write to ANOTHER order made this append fail: your filter covers more "
                                 "than this order") from None
    read_at = await seed_last(expected_filter(order))
    await seed_append(order, "v2", "cancelled", read_at, expected_filter(order))  # a v2 writer cancels
    try:
        await seed_append(order, "v1", "shipped", read_at, expected_filter(order))
    except Exception:
        return
    raise eskit.course.Wrong("the v2 writer's 'cancelled' slipped past the v1 writer's check: a lost update")


await eskit.course.check(check_expected_filter, ok="every version of this order is checked, and no other order")

# %% [markdown]
# It works — with a wildcard in the middle of every check and read, which nats-server answers by searching its
# subject index (lesson 01). eskit keeps one subject space per aggregate (`orders.<id>.<type>`) and the version
# in the `Eskit-Schema-Version` header: a version bump changes no subject, no filter, no concurrency check.
#
# ## Too fine-grained events
#
# Another anti-pattern of the seed's list: one event per field change. A checkout that records
# `street_set`, `city_set`, `zip_set` and one `item_quantity_incremented` per unit, against one `checked_out`
# event holding the decision. The same 200 checkouts, both ways:

# %%
CARTS = [{"items": {f"S{(i + k) % 40}": 1 + (i + k) % 4 for k in range(3)},
          "address": {"street": f"{i} Main St", "city": ["Ghent", "Lyon", "Porto", "Turku"][i % 7 % 4],
                      "zip": f"9{i:03d}"}} for i in range(200)]


def fine_grained(cart: dict) -> list[eskit.Event]:
    events = [eskit.Event(f"{field}_set", {"value": value}) for field, value in cart["address"].items()]
    for sku, qty in cart["items"].items():
        events += [eskit.Event("item_quantity_incremented", {"sku": sku}) for _ in range(qty)]
    return events + [eskit.Event("checkout_confirmed")]


def one_decision(cart: dict) -> list[eskit.Event]:
    return [eskit.Event("checked_out", {"items": cart["items"], "address": cart["address"]})]


class Checkout(eskit.Aggregate):
    on_unknown = "ignore"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.items: dict[str, int] = {}
        self.address: dict[str, str] = {}
        self.done = False

    @applies("checked_out")
    def _checked_out(self, data: dict) -> None:
        self.items, self.address, self.done = dict(data["items"]), dict(data["address"]), True

    @applies("item_quantity_incremented")
    def _incremented(self, data: dict) -> None:
        self.items[data["sku"]] = self.items.get(data["sku"], 0) + 1

    @applies("checkout_confirmed")
    def _confirmed(self, data: dict) -> None:
        self.done = True

    @applies("street_set")
    def _street_set(self, data: dict) -> None:
        self.address["street"] = data["value"]

    @applies("city_set")
    def _city_set(self, data: dict) -> None:
        self.address["city"] = data["value"]

    @applies("zip_set")
    def _zip_set(self, data: dict) -> None:
        self.address["zip"] = data["value"]


fine = await client.event_store(f"fine{run}")
coarse = await client.event_store(f"coarse{run}")
await fine.append_many([(f"c{i}", fine_grained(cart), 0) for i, cart in enumerate(CARTS)])
await coarse.append_many([(f"c{i}", one_decision(cart), 0) for i, cart in enumerate(CARTS)])
same = all([(await fine.load(Checkout, f"c{i}")).items == (await coarse.load(Checkout, f"c{i}")).items
           for i in range(200)])
print("same state both ways:", same)

# %%
# NBVAL_IGNORE_OUTPUT
fine_df, coarse_df = await eskit.to_dataframe(fine), await eskit.to_dataframe(coarse)
per_order = {"per field": len(fine_df) / len(CARTS), "per decision": len(coarse_df) / len(CARTS)}
load_ms = {"per field": await ms(lambda: fine.load(Checkout, "c7")),
           "per decision": await ms(lambda: coarse.load(Checkout, "c7"))}
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
left.bar(list(per_order), list(per_order.values()), color=["tab:red", "tab:green"])
left.set_title("Events per checkout")
left.set_xlabel("event design")
left.set_ylabel("events per order")
right.bar(list(load_ms), list(load_ms.values()), color=["tab:red", "tab:green"])
right.set_title("Load time of one checkout (median of 30)")
right.set_xlabel("event design")
right.set_ylabel("milliseconds")
fig.tight_layout()
plt.show()
print("events per order:", per_order, "| load ms:", {k: round(v, 2) for k, v in load_ms.items()})

# %% [markdown]
# And readability: the question "which cities do our checkouts go to?" is one column of the coarse log;
# in the fine-grained log the address has to be put back together from three kinds of events first — and
# the log's most frequent "activity" is incrementing a quantity:

# %%
print(fine_df["type"].value_counts().to_string())
print()
print(coarse_df["address.city"].value_counts().to_string())

# %% [markdown]
# ### Exercise 8.4 · One event per decision
#
# A customer checks out: write `checkout(cart)`, returning the list of events for that decision —
# a cart looks like `CARTS[0]` (`{"items": {sku: qty}, "address": {...}}`). The event should carry what was
# decided (items, address) and the total from `PRICES` (a price per sku), rounded to cents, so no reader has to
# recompute it with today's prices.

# %%
PRICES = {f"S{n}": round(1 + n * 0.25, 2) for n in range(40)}
print(CARTS[0], "| total:", round(sum(PRICES[s] * q for s, q in CARTS[0]["items"].items()), 2))

# %% [exercise]
def checkout(cart: dict) -> list[eskit.Event]:
    ...  # your code here

# %% [solution]
def checkout(cart: dict) -> list[eskit.Event]:
    total = round(sum(PRICES[sku] * qty for sku, qty in cart["items"].items()), 2)
    return [eskit.Event("checked_out", {"items": cart["items"], "address": cart["address"], "total": total})]

# %% [wrong] one event per field
def checkout(cart: dict) -> list[eskit.Event]:
    events = [eskit.Event(f"{field}_set", {"value": value}) for field, value in cart["address"].items()]
    events += [eskit.Event("item_set", {"sku": sku, "qty": qty}) for sku, qty in cart["items"].items()]
    return events

# %% [wrong] the total left to the readers
def checkout(cart: dict) -> list[eskit.Event]:
    return [eskit.Event("checked_out", {"items": cart["items"], "address": cart["address"]})]

# %% [check]
def check_checkout() -> None:
    events = checkout(CARTS[3])
    eskit.course.require(events, "checkout returns a list of events")
    if len(events) != 1:
        raise eskit.course.Wrong(f"{len(events)} events for one decision: put what was decided into one event")
    data = dict(events[0].data)
    assert data.get("items") == CARTS[3]["items"] and data.get("address") == CARTS[3]["address"], (
        "the event should carry the items and the address that were decided")
    expected = round(sum(PRICES[s] * q for s, q in CARTS[3]["items"].items()), 2)
    if "total" not in data:
        raise eskit.course.Wrong("no total: every reader would recompute it, with whatever prices hold then")
    assert data["total"] == expected, f"total {data['total']}, expected {expected}"


await eskit.course.check(check_checkout, ok="one event holds the whole decision, total included")

# %% [markdown]
# ## History is immutable: correct it, do not edit it
#
# eskit creates its stores with JetStream's `deny_delete` and `deny_purge` (unless you open one with
# `allow_delete_history=True`): the *server* refuses to delete an event or purge the stream, whoever asks.
# Here is that configuration on a stream of its own, and the server's answers:

# %%
config = stream_config(f"ledger{run}")
config.deny_delete, config.deny_purge = True, True
await client.js.add_stream(config)
ledger = eskit.EventStore(client, f"ledger{run}", str(config.name))
wrong_at = await ledger.append("o9", [eskit.Event("item_added", {"sku": "A1", "qty": 1, "price": 95.0})])
for attempt, call in [("delete the wrong event", lambda: client.js.delete_msg(config.name, wrong_at)),
                      ("purge the stream", lambda: client.js.purge_stream(config.name))]:
    try:
        await call()
        print(attempt, "→ done (!)")
    except Exception as exc:
        print(attempt, "→ refused:", getattr(exc, "description", exc))

# %% [markdown]
# The price should have been 9.50. The fix is a new fact: a **compensating event** that says what was wrong
# and what is right. Every reader that handles it comes to the right state, and the history still shows what
# happened and when — which is what auditors, analysts and your future self need:

# %%
await ledger.append("o9", [eskit.Event("price_corrected", {"sku": "A1", "from": 95.0, "to": 9.5,
                                                            "reason": "typo at entry"}, causation_id=str(wrong_at))])


def ledger_total(events: list[eskit.RecordedEvent]) -> float:
    total = 0.0
    for e in events:
        if e.type == "item_added":
            total += e.data["qty"] * e.data["price"]
        elif e.type == "price_corrected":
            total += e.data["to"] - e.data["from"]
    return round(total, 2)


history = await ledger.read("o9")
for e in history:
    print(e.position, e.type, e.data)
print("total:", ledger_total(history))

# %% [markdown]
# ## When a pure function is not enough: copy and transform
#
# Upcasters turn one event into one event, on every read. When the change is bigger — split one event into
# several, merge or drop events, repair data for good, or retire a long chain of upcasters — copy the store into
# a new one through a transform, check the copy, switch readers, then writers. `eskit.migrate(source, target,
# transform)` does it idempotently and resumably: each copied event carries its source position, so a run that
# stopped half-way goes on where it stopped, and a second run writes nothing.

# %%
def to_v2(event: eskit.RecordedEvent) -> eskit.Event | None:
    if event.type == "created":
        return eskit.Event("created")
    return eskit.Event(event.type, event.data, schema_version=event.schema_version)


v2_shop = await client.event_store(f"shopv2{run}")
first = await eskit.migrate(upcast_shop, v2_shop, to_v2)  # the source read through its upcasters
again = await eskit.migrate(upcast_shop, v2_shop, to_v2)
print("first run:", first)
print("second run:", again)
print("types and versions in the copy:", sorted({(e.type, e.schema_version) async for e in v2_shop.replay()}))

# %% [markdown]
# ## Summary
#
# - Stored events never change; the code reading them does. Write new shapes with `Event(..., schema_version=N)`.
# - `eskit.Upcasters()`: `@upcasters.register(type, from_version=N)` (data → data, chains apply in order),
#   `upcasters.rename(old, new)`; open the store with `upcasters=` and every read path sees the current
#   version. A failing upcaster names the event; a projection parks it.
# - Tolerant readers suit additive, optional fields; a change of meaning deserves a version and an upcaster.
# - The version belongs in a header: in the subject it splits each aggregate into one subject space per
#   version, so concurrency checks miss writes (lost updates) and reads need a filter per version.
# - One event per decision: fewer events, faster loads, and a log analysts can read.
# - History is immutable (`deny_delete`, `deny_purge`): correct a wrong event with a compensating event.
# - Bigger changes: `eskit.migrate(source, target, transform)`, into a new store, idempotent and resumable.

# %%
for name in (shop.name, eskit_orders.name, fine.name, coarse.name, v2_shop.name, f"{shop.name}_parked"):
    await client.delete_store(name)
await client.js.delete_stream(SEED.upper())
await client.js.delete_stream(config.name)
await client.close()

# %% [markdown]
# **Next:** back to `04_projections.ipynb` with versioned events in mind, or `06_event_log_analysis.ipynb`
# to analyse a log of decisions.
