# %% [markdown]
# # 04 · Projections
#
# **What you'll do:** keep a read model — the seed's `orders_view` — up to date from the stream, in the
# background, while you watch it on a live dashboard; make the server deliver events twice and see nothing
# counted twice; rebuild the read model while it keeps answering queries; feed it poison events and see them
# parked, inspected and replayed.
#
# **What you'll learn:**
# - why updating the read model *inside the command* (the seed's "synchronous projections" anti-pattern)
#   couples every writer to every reader;
# - how a projection stays **exactly once in effect** on an at-least-once consumer: the position (last stream
#   sequence applied) is stored in the same SQLite transaction as the changes, and the ack comes after commit;
# - blue/green rebuilds, lag, and dead letters.
#
# **What you need:** lessons 01–02, a little SQL. About 10 minutes.

# %%
import asyncio
import sqlite3
import uuid
from collections import Counter

import pandas as pd

import eskit
from eskit import applies

pd.set_option("display.max_colwidth", 100)

client = await eskit.connect()
name = eskit.course.unique("shop")  # lesson_shop + 8 hex digits: `python -m eskit clean` finds it
orders = await client.event_store(name)


async def place(order_id: str, customer: str, skus: list[str], *, ship: bool = True) -> int:
    events = [eskit.Event("created", {"customer": customer})]
    events += [eskit.Event("item_added", {"sku": sku, "qty": 1}) for sku in skus]
    events += [eskit.Event("shipped", {"tracking": f"TR-{order_id}"})] if ship else []
    return await orders.append(order_id, events, expected_position=0)


for i, customer in enumerate(["ada", "bob", "ada", "cy", "bob", "ada"], start=1):
    last = await place(f"o{i}", customer, ["A1", "B2", "C3"][: 1 + i % 3], ship=i % 2 == 1)
print("events in the stream:", last)

# %% [markdown]
# ## The anti-pattern: updating the read model in the command
#
# The seed warns against *synchronous projections*. Here is one: the command appends the event **and** writes
# the read model, in the writer's code path.

# %%
sync_db = sqlite3.connect(":memory:")
sync_db.execute("CREATE TABLE orders_view (id TEXT PRIMARY KEY, status TEXT)")


async def place_order_sync(order_id: str) -> int:
    position = await orders.append(order_id, [eskit.Event("created", {"customer": "zoe"})], expected_position=0)
    sync_db.execute("INSERT INTO orders_view VALUES (?, 'pending')", (order_id,))  # the reader's work
    return position


await place_order_sync("s1")
sync_db.execute("ALTER TABLE orders_view RENAME TO orders_view_v1")  # the reporting team migrates its view
try:
    await place_order_sync("s2")
except sqlite3.OperationalError as exc:
    print("the command failed:", exc)
print("... yet its event is stored:", [e.type for e in await orders.read("s2")])

# %% [markdown]
# The writer now fails because of a *reader's* table, after the fact was already recorded: the caller sees an
# error for an order that was placed, and the view misses it for good. Every writer waits for, and depends on,
# every read model — add a search index and a report, and a slow or broken one stalls order taking.
#
# The fix: the writer only appends. A **projection** follows the stream on its own, eventually consistent:
# it can lag, stop, be rebuilt or fail on an event without the writer noticing.

# %% [markdown]
# ## The seed's projection, and what it misses
#
# ```go
# cons, _ := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "order-projection", ...})
# for {
#     msgs, _ := cons.Fetch(100)                       // error dropped
#     for msg := range msgs.Messages() {
#         json.Unmarshal(msg.Data(), &event)             // error dropped: a bad event is applied as zeros
#         updateProjection(ctx, &event)                  // error dropped
#         msg.Ack()                                      // crash before this line: the event comes again
#     }
# }
# ```
#
# JetStream delivers **at least once**: a crash between `updateProjection` and `Ack` (or a lost ack) means the
# event is delivered again, and `items = items + 1` is applied twice. eskit's `Projection` stores the
# position *in the read model's own transaction* and skips what it has already applied; it applies a batch per
# transaction, acks after the commit, and parks events it cannot apply instead of dropping errors.
#
# A handler per event type, declared with `@applies` as on aggregates; a handler gets the SQLite connection
# (inside the batch's transaction: never commit in it) and the `RecordedEvent`:

# %%
class OrdersView(eskit.Projection):
    schema = """CREATE TABLE orders_view (id TEXT PRIMARY KEY, customer TEXT, status TEXT,
                                          items INTEGER NOT NULL DEFAULT 0, created_at TEXT, tracking TEXT)"""

    @applies("created")
    def _created(self, db: sqlite3.Connection, event: eskit.RecordedEvent) -> None:
        db.execute("INSERT INTO orders_view (id, customer, status, created_at) VALUES (?, ?, 'pending', ?)",
                   (event.aggregate_id, event.data["customer"], event.timestamp.isoformat()))

    @applies("item_added")
    def _item_added(self, db: sqlite3.Connection, event: eskit.RecordedEvent) -> None:
        db.execute("UPDATE orders_view SET items = items + ? WHERE id = ?", (event.data["qty"], event.aggregate_id))

    @applies("shipped")
    def _shipped(self, db: sqlite3.Connection, event: eskit.RecordedEvent) -> None:
        changed = db.execute("UPDATE orders_view SET status = 'shipped', tracking = ? WHERE id = ?",
                             (event.data["tracking"], event.aggregate_id)).rowcount
        if changed == 0:
            raise LookupError(f"order {event.aggregate_id} is not in the view")


view = OrdersView(orders, name="orders_view", ack_wait=1.0)  # db=":memory:" by default; or a file path
print("delivered:", await view.run_until_caught_up(), "| position:", view.position)

# %% [markdown]
# The consumer is durable (`projection-orders_view`); one ack after each committed batch settles the whole
# batch (ack policy *all*). It reads the whole store with one filter and hands on only the event types the
# class handles — per-type filters would make nats-server search its subject index for every event, which
# slows down as the number of orders grows — and the position moves past the other events too.
# The read model is plain SQLite: query it with pandas (the synchronous writer's `s1` and `s2` are there —
# the projection does not care how the events got into the stream).

# %%
QUERY = "SELECT id, customer, status, items, tracking FROM orders_view ORDER BY id"
pd.read_sql_query(QUERY, view.db)

# %% [markdown]
# ## Running in the background, with a live dashboard
#
# `view.start()` runs the projection as a task on the notebook's event loop: it applies events as they are
# stored (a caught-up projection is woken by the next event, not by a timer) until `await view.stop()`.

# %%
# NBVAL_IGNORE_OUTPUT
view.start()
board = eskit.dashboard(view)
board

# %% [markdown]
# Place a few orders and watch the dashboard above. `wait_for(position)` waits until the read model has
# applied the event at that position — *read your own writes*, when you need to.

# %%
for i in range(7, 10):
    last = await place(f"o{i}", "cy", ["A1", "B2"])
await view.wait_for(last)
print("position:", view.position, "| lag:", view.lag, "| applied so far:", view.stats.applied)

# %% [markdown]
# ## A redelivery does not count twice
#
# We stop the background task and play the crash the seed cannot survive: `step(ack=False)` fetches a batch,
# applies it and **commits**, but does not ack — as if the process died right after the commit. After
# `ack_wait` (1 s here) the server delivers those events again.

# %%
await view.stop()
await place("o10", "dee", ["A1", "B2", "C3"])
before = view.stats
totals = "SELECT count(*) AS orders, sum(items) AS items FROM orders_view"
delivered = await view.step(ack=False)
print("delivered and committed, not acked:", delivered)
pd.read_sql_query(totals, view.db)

# %%
await view.run_until_caught_up()  # waits for the redelivery
after = view.stats
print("redelivered:", after.redelivered - before.redelivered, "| skipped:", after.skipped - before.skipped,
      "| applied again:", after.applied - before.applied - delivered)
pd.read_sql_query(totals, view.db)

# %% [markdown]
# Same totals: the five redelivered events were at or below the stored position, so they were acknowledged
# without being applied. The same check protects a restart after `kill -9` mid-batch (the open transaction
# is rolled back, the consumer is repositioned at the stored position): the test suite does exactly that.

# %% [markdown]
# ### Exercise 4.1 · A `created` that arrives twice
#
# The projection above skips a redelivered event by its position. Code without that guard — the seed's
# loop, a consumer written by hand, a script that replays the stream into a second table — applies it again.
# The seed's `INSERT` then either adds a second row for the order (a table without a primary key) or fails,
# and the seed drops that error, together with every real one.
#
# Write `apply_created(db, event)` for the table
# `orders_view (id TEXT PRIMARY KEY, customer TEXT, status TEXT, items INTEGER NOT NULL DEFAULT 0)`: the
# first delivery inserts the order as `pending`; **the same event delivered again changes nothing** — no
# error, still one row, and what later events wrote into the row (items, status) stays.

# %% [exercise]
def apply_created(db: sqlite3.Connection, event: eskit.RecordedEvent) -> None:
    # the seed's insert (with this table's columns), which fails when the event comes again:
    #   INSERT INTO orders_view (id, customer, status) VALUES (?, ?, 'pending')
    ...  # your code here


# %% [solution]
def apply_created(db: sqlite3.Connection, event: eskit.RecordedEvent) -> None:
    db.execute("INSERT INTO orders_view (id, customer, status) VALUES (?, ?, 'pending') ON CONFLICT (id) DO NOTHING",
               (event.aggregate_id, event.data["customer"]))


# %% [wrong] the seed's insert, unchanged
def apply_created(db: sqlite3.Connection, event: eskit.RecordedEvent) -> None:
    db.execute("INSERT INTO orders_view (id, customer, status) VALUES (?, ?, 'pending')",
               (event.aggregate_id, event.data["customer"]))


# %% [wrong] INSERT OR REPLACE: no error, but the row starts over
def apply_created(db: sqlite3.Connection, event: eskit.RecordedEvent) -> None:
    db.execute("INSERT OR REPLACE INTO orders_view (id, customer, status) VALUES (?, ?, 'pending')",
               (event.aggregate_id, event.data["customer"]))


# %% [check]
async def check_created() -> None:
    async with await eskit.connect() as own, eskit.course.scratch(own, "created") as store:  # fresh, then deleted
        await store.append("o1", [eskit.Event("created", {"customer": "ada"})])
        (created,) = await store.read("o1")
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE orders_view (id TEXT PRIMARY KEY, customer TEXT, status TEXT, "
               "items INTEGER NOT NULL DEFAULT 0)")
    rows = "SELECT id, customer, status, items FROM orders_view"
    apply_created(db, created)
    if not db.execute(rows).fetchall():
        raise eskit.course.Wrong("not done yet: after the first delivery the table is still empty")
    first = db.execute(rows).fetchall()
    expected = [("o1", "ada", "pending", 0)]
    assert first == expected, f"after one delivery expected {expected}, got {first}"
    db.execute("UPDATE orders_view SET items = 2, status = 'paid' WHERE id = 'o1'")  # what later events did
    try:
        apply_created(db, created)  # the same event, delivered again
    except sqlite3.IntegrityError as exc:
        raise eskit.course.Wrong(f"the second delivery failed ({exc}): a repeat must change nothing") from None
    again = db.execute(rows).fetchall()
    if again != [("o1", "ada", "paid", 2)]:
        raise eskit.course.Wrong(f"the second delivery turned the paid order with 2 items into {again}: "
                                 "leave an existing row as it is instead of writing it anew")


await eskit.course.check(check_created, ok="a redelivered `created` changes nothing")

# %% [markdown]
# ### Exercise 4.2 · An `item_added` that arrives twice
#
# A repeated insert can be ignored. A counter cannot: `items = items + qty` run twice counts twice. The
# projection's remedy — remember the last position applied, skip anything at or below it — works per row
# too. Write `apply_item_added(db, event)` for the table
# `orders_pos (id TEXT PRIMARY KEY, items INTEGER NOT NULL, position INTEGER NOT NULL)` (each order's row
# exists, with the position of its `created` event): add the event's `qty` to the order's `items` **and**
# move the row's `position` to `event.position` — unless the row is already at or past that position.
# One `UPDATE` does it.

# %% [exercise]
def apply_item_added(db: sqlite3.Connection, event: eskit.RecordedEvent) -> None:
    ...  # your code here


# %% [solution]
def apply_item_added(db: sqlite3.Connection, event: eskit.RecordedEvent) -> None:
    db.execute("UPDATE orders_pos SET items = items + ?, position = ? WHERE id = ? AND position < ?",
               (event.data["qty"], event.position, event.aggregate_id, event.position))


# %% [wrong] a plain counter, as in the seed
def apply_item_added(db: sqlite3.Connection, event: eskit.RecordedEvent) -> None:
    db.execute("UPDATE orders_pos SET items = items + ? WHERE id = ?", (event.data["qty"], event.aggregate_id))


# %% [wrong] the guard, but the position is never moved
def apply_item_added(db: sqlite3.Connection, event: eskit.RecordedEvent) -> None:
    db.execute("UPDATE orders_pos SET items = items + ? WHERE id = ? AND position < ?",
               (event.data["qty"], event.aggregate_id, event.position))


# %% [check]
async def check_item_added() -> None:
    async with await eskit.connect() as own, eskit.course.scratch(own, "items") as store:
        await store.append("o1", [eskit.Event("created", {"customer": "ada"}), eskit.Event("item_added", {"qty": 1})])
        await store.append("o2", [eskit.Event("created", {"customer": "bob"}), eskit.Event("item_added", {"qty": 5})])
        await store.append("o1", [eskit.Event("item_added", {"qty": 2})])
        events = [e async for e in store.replay()]
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE orders_pos (id TEXT PRIMARY KEY, items INTEGER NOT NULL, position INTEGER NOT NULL)")
    db.executemany("INSERT INTO orders_pos VALUES (?, 0, ?)",
                   [(e.aggregate_id, e.position) for e in events if e.type == "created"])
    items = [e for e in events if e.type == "item_added"]
    apply_item_added(db, items[0])
    if db.execute("SELECT items FROM orders_pos WHERE id = 'o1'").fetchone()[0] == 0:
        raise eskit.course.Wrong("not done yet: the order's items did not change after an item_added")
    for event in [*items[1:], *items, items[-1]]:  # the rest, then everything again (a redelivery after a crash)
        apply_item_added(db, event)
    got = dict(db.execute("SELECT id, items FROM orders_pos").fetchall())
    positions = dict(db.execute("SELECT id, position FROM orders_pos").fetchall())
    if got != {"o1": 3, "o2": 5}:
        fix = ("the rows' positions never moved: store event.position with the change, then skip events at or "
               "below it" if positions["o1"] < items[-1].position else "skip events at or below the row's position")
        raise eskit.course.Wrong(f"redelivered events were counted again (the view says {got}, the stream "
                                 f"{{'o1': 3, 'o2': 5}}): {fix}")
    assert positions["o1"] == items[-1].position, f"o1's position should be {items[-1].position}, not {positions['o1']}"


await eskit.course.check(check_item_added, ok="redelivered item_added events count once")

# %% [markdown]
# ## Rebuild without downtime (blue/green)
#
# Changed a handler, or suspect the read model? `rebuild()` builds a **new** read model from position 0
# beside the live one (for a file: `<path>.rebuild`), while the live one keeps serving and the background
# task keeps applying new events; when the new one has caught up, it switches between two batches. Let's
# query continuously while it rebuilds:

# %%
view.start()
answers: list[int] = []
rebuilding = asyncio.ensure_future(view.rebuild())
while not rebuilding.done():
    answers.append(view.db.execute("SELECT count(*) FROM orders_view").fetchone()[0])
    await asyncio.sleep(0)
print("events applied by the new model:", rebuilding.result())
print(f"queries answered during the rebuild: {len(answers)}", "| none failed; the counts they saw:",
      sorted(set(answers)))

# %% [markdown]
# ## Poison events are parked, not dropped
#
# Two kinds of events a projection cannot apply: bytes that are not JSON (someone published into the stream
# by hand), and an event its handler rejects — here, `shipped` for an order the view has never seen. The
# handler is retried (`max_attempts=3`); then the event is **parked** in the dead-letter stream
# `<STORE>_PARKED`, with the reason and its original position, and the projection goes on.

# %%
await client.js.publish(f"{name}.o11.created", b"{not json")
await orders.append("ghost", [eskit.Event("shipped", {"tracking": "TR-ghost"})])
last = await place("o12", "eve", ["B2"])
await view.wait_for(last)
parked = await view.parked()
pd.DataFrame([(p.position, p.type, p.event.aggregate_id, p.attempts, p.reason) for p in parked],
             columns=["position", "type", "aggregate", "attempts", "reason"])

# %% [markdown]
# Nothing is lost: each parked copy has the event's original subject, headers and bytes
# (`parked[0].event.raw`), and the original is still in the stream. Once the cause is fixed — here, the missing
# `created` event arrives — `replay_parked()` applies the parked events again and unparks those that succeed.
# (They are applied out of their original order: write handlers that tolerate it.) The undecodable one stays
# parked until someone repairs it.

# %%
await view.wait_for(await orders.append("ghost", [eskit.Event("created", {"customer": "eve"})]))
print("replayed:", await view.replay_parked())
print("still parked:", [(p.position, p.type) for p in await view.parked()], "| bytes:", parked[0].event.raw)
pd.read_sql_query("SELECT id, customer, status, items, tracking FROM orders_view WHERE id = 'ghost'", view.db)

# %% [markdown]
# ## Summary
#
# - Writers only append; projections follow the stream on their own (no synchronous projections).
# - Exactly once *in effect*: position and changes in one transaction, ack after commit, skip what is at or
#   below the position; on start the consumer is repositioned at the read model's position.
# - Batches in one transaction, the next batch fetched while this one is applied; `run()`/`start()` for the
#   background, `run_until_caught_up()` for scripts and tests; `lag` and `stats` at any time.
# - `rebuild()`: blue/green, no window where queries fail. Poison events: parked with reason and position,
#   inspected with `parked()`, replayed with `replay_parked()`.

# %% [markdown]
# ### Exercise 4.3 · Orders per customer
#
# Write `CustomersView`: a projection with the table `customers (customer TEXT PRIMARY KEY, orders INTEGER)`
# counting the orders each customer created. One handler; an upsert (`INSERT ... ON CONFLICT ... DO UPDATE`).
# The check runs it on a fresh store of five orders by three customers.

# %% [exercise]
class CustomersView(eskit.Projection):
    schema = "CREATE TABLE customers (customer TEXT PRIMARY KEY, orders INTEGER NOT NULL)"

    @applies("created")
    def _created(self, db: sqlite3.Connection, event: eskit.RecordedEvent) -> None:
        ...  # your code here


# %% [solution]
class CustomersView(eskit.Projection):
    schema = "CREATE TABLE customers (customer TEXT PRIMARY KEY, orders INTEGER NOT NULL)"

    @applies("created")
    def _created(self, db: sqlite3.Connection, event: eskit.RecordedEvent) -> None:
        db.execute("INSERT INTO customers VALUES (?, 1) ON CONFLICT (customer) DO UPDATE SET orders = orders + 1",
                   (event.data["customer"],))


# %% [wrong] INSERT OR REPLACE: every order starts the count again
class CustomersView(eskit.Projection):
    schema = "CREATE TABLE customers (customer TEXT PRIMARY KEY, orders INTEGER NOT NULL)"

    @applies("created")
    def _created(self, db: sqlite3.Connection, event: eskit.RecordedEvent) -> None:
        db.execute("INSERT OR REPLACE INTO customers VALUES (?, 1)", (event.data["customer"],))


# %% [check]
async def check_customers() -> None:
    async with await eskit.connect() as own, eskit.course.scratch(own, "customers") as store:
        for i, customer in enumerate(["ada", "bob", "ada", "cy", "ada"]):
            await store.append(f"o{i}", [eskit.Event("created", {"customer": customer}),
                                         eskit.Event("item_added", {"sku": "A1", "qty": 1})])
        view = CustomersView(store, name=eskit.course.unique("customers"))
        try:
            await view.run_until_caught_up()
            got = dict(view.db.execute("SELECT customer, orders FROM customers").fetchall())
        finally:
            await view.close(delete_consumer=True)
    expected = {"ada": 3, "bob": 1, "cy": 1}
    if not got:
        raise eskit.course.Wrong("not done yet: the customers table is empty after the projection ran")
    if got.get("ada") == 1:
        raise eskit.course.Wrong(f"ada created 3 orders, your view says 1 ({got}): count up when the customer "
                                 "is already there instead of writing the row anew")
    assert got == expected, f"expected {expected}, got {got}"


await eskit.course.check(check_customers, ok="orders per customer: ada 3, bob 1, cy 1")

# %% [markdown]
# ## When you are done
#
# Run All has run the cell below too, and on purpose it cleaned nothing up: the projection keeps running and
# the dashboard above keeps refreshing, so you can scroll back, place more orders and watch them arrive.
# Press **I'm done: clean up** when you have finished: it stops the dashboard and the projections, deletes
# this lesson's store (and its dead letters) and closes the connection. Restarting the kernel stops
# everything too, but leaves the store on the server.

# %%
# NBVAL_IGNORE_OUTPUT
from eskit.widgets import when_done


async def clean_up() -> None:
    board.stop()
    await view.close(delete_consumer=True)
    await view.dead_letters.delete()
    await client.delete_store(name)
    await client.close()


await when_done(clean_up)

# %% [markdown]
# **Next:** `05_dcb.ipynb` — consistency boundaries that span aggregates (DCB).
