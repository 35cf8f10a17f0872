# %% [markdown]
# # 06 · Event-log analysis
#
# **What you'll do:** turn a stream of order events into a pandas DataFrame and ask it questions — what
# happens when, how long orders take, which paths they follow, where they drop out. Then import a real
# process-mining event log (CSV or XES) into a stream and analyse it the same way.
#
# **What you'll learn:**
# - an event store *is* an event log: every event has a case (its aggregate), an activity (its type) and a
#   time — the three columns process mining needs;
# - `eskit.to_dataframe` reads a whole stream in batches of 2,000 events through a short-lived consumer;
# - variants, directly-follows counts, durations and funnels in plain pandas;
# - importing a log idempotently: a second import adds nothing.
#
# **What you need:** lessons 00–02, some pandas. Optional: `pip install 'eskit[pm4py]'` for the last
# part. To analyse your own log, start JupyterLab with `ESKIT_EVENT_LOG=/path/to/log.csv` (or `.xes`).
# About 10 minutes.

# %%
import tempfile

import matplotlib.pyplot as plt
import pandas as pd

import eskit
from eskit.analysis import case_durations, directly_follows, events_per_type, funnel, variants
from eskit.samples import event_log_path, order_events

pd.set_option("display.width", 120)
client = await eskit.connect()

# %% [markdown]
# ## Part 1 · Order events
#
# 200 orders, generated with a fixed seed (so you see the numbers we see): created, one to four items,
# then paid and shipped (mostly delivered too), or cancelled.

# %%
orders = await client.event_store(eskit.course.unique("orders"))  # lesson_orders + 8 hex digits
await orders.append_many(order_events(200, seed=6), concurrency=16)
df = await eskit.to_dataframe(orders, progress=False)
print(len(df), "events in", df["aggregate_id"].nunique(), "orders")
first_order = df[df["aggregate_id"] == "order-0001"].sort_values("occurred_at", ignore_index=True)
first_order[["aggregate_id", "type", "occurred_at", "customer", "sku", "qty", "price"]]

# %% [markdown]
# One row per event. `occurred_at` is when it happened (set by the writer), `timestamp` when the server
# stored it; `position` is the stream sequence. The event data became columns (`sku`, `qty`, …), empty
# where an event type has no such field.
#
# ## What happens when

# %%
weekly = events_per_type(df, freq="W-MON")
weekly

# %%
# NBVAL_IGNORE_OUTPUT
LIFECYCLE = ["created", "item_added", "payment_received", "shipped", "delivered", "cancelled"]
by_week = weekly[[t for t in LIFECYCLE if t in weekly.columns]]
by_week.index = by_week.index.strftime("%d %b")  # the Monday each week starts on
ax = by_week.plot.bar(stacked=True, figsize=(8, 3.2), rot=0, width=0.8)
ax.set(title="Events per week, by type", xlabel="week starting (Monday)", ylabel="events")
ax.legend(title="event type", bbox_to_anchor=(1.01, 1), loc="upper left", frameon=False)  # beside, not over
plt.tight_layout()
plt.show()

# %% [markdown]
# ## How long orders take
#
# A *case* is one aggregate: its duration runs from its first event to its last.

# %%
durations = case_durations(df)
durations["duration"].describe()

# %%
# NBVAL_IGNORE_OUTPUT
ax = (durations["duration"].dt.total_seconds() / 86400).plot.hist(bins=20, figsize=(6, 3))
ax.set(title="How long orders take", xlabel="days from first to last event", ylabel="orders")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Exercise 6.1 · The typical delivered order
#
# `durations` has one row per order (its index is the order id). How long does a **delivered** order
# typically take? Set `median_days` to the **median** duration, in days, of the orders that have a
# `delivered` event. (`df["type"] == "delivered"` picks their events; `.dt.total_seconds() / 86400` or
# `pd.Timedelta(days=1)` turns durations into days.)

# %% [exercise]
median_days = ...  # your code here

# %% [solution]
delivered = df.loc[df["type"] == "delivered", "aggregate_id"].unique()
median_days = durations.loc[delivered, "duration"].median() / pd.Timedelta(days=1)

# %% [wrong] the mean, not the median
delivered = df.loc[df["type"] == "delivered", "aggregate_id"].unique()
median_days = durations.loc[delivered, "duration"].mean() / pd.Timedelta(days=1)

# %% [wrong] the median of every order, delivered or not
median_days = durations["duration"].median() / pd.Timedelta(days=1)


# %% [check]
def check_median() -> None:
    eskit.course.require(median_days, "set median_days")
    days = durations["duration"] / pd.Timedelta(days=1)
    delivered = days[days.index.isin(df.loc[df["type"] == "delivered", "aggregate_id"])]
    answer = float(median_days)

    def near(value: float) -> bool:
        return abs(answer - value) < 0.01

    if near(delivered.mean()) and not near(delivered.median()):
        raise eskit.course.Wrong(f"{answer:.2f} is the mean; the median is the middle value (half take longer)")
    if near(days.median()) and not near(delivered.median()):
        raise eskit.course.Wrong(f"{answer:.2f} is the median of all {len(days)} orders: keep only the "
                                 f"{len(delivered)} delivered ones")
    assert near(delivered.median()), f"{answer:.2f} days is not the median duration of the delivered orders"


await eskit.course.check(check_median, ok="that is the median of the delivered orders: half of them take longer")

# %% [markdown]
# ## Which paths orders follow: variants
#
# A *variant* is a distinct sequence of event types. Items added a different number of times make
# different variants — real logs have long tails of them.

# %%
variants(df).head(6)

# %% [markdown]
# ## What follows what: the directly-follows graph
#
# How often type B comes right after type A in the same order, and the mean time between them. This is the
# graph process-mining tools draw.

# %%
follows = directly_follows(df)
follows

# %%
# NBVAL_IGNORE_OUTPUT
matrix = follows.pivot(index="source", columns="target", values="count")
types = [t for t in LIFECYCLE if t in set(matrix.index) | set(matrix.columns)]  # same order on both axes
matrix = matrix.reindex(index=types, columns=types).fillna(0).astype(int)
fig, ax = plt.subplots(figsize=(6.5, 5))
image = ax.imshow(matrix, cmap="Blues")
for row, source in enumerate(types):
    for col, target in enumerate(types):
        if count := matrix.loc[source, target]:
            dark = count > matrix.max().max() / 2
            ax.text(col, row, count, ha="center", va="center", color="white" if dark else "black")
ax.set_xticks(range(len(types)), types, rotation=30, ha="right")
ax.set_yticks(range(len(types)), types)
ax.set(title="Directly follows: the column's type right after the row's", xlabel="next event", ylabel="event")
fig.colorbar(image, ax=ax, label="times, over all orders")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Where orders drop out: a funnel
#
# How many orders reach each step, in order.

# %%
steps = funnel(df, ["created", "payment_received", "shipped", "delivered"])
steps

# %%
# NBVAL_IGNORE_OUTPUT
ax = steps.plot.barh(x="step", y="cases", legend=False, figsize=(6, 2.5))
ax.invert_yaxis()  # the first step on top
ax.set(title="Order funnel", xlabel="orders reaching the step", ylabel="step")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Exercise 6.2 · From paid to delivered
#
# Of the orders that were **paid** (`payment_received`), what share was **delivered**? Set
# `paid_to_delivered` to a fraction between 0 and 1 — from `steps` above, or by counting in `df`.

# %% [exercise]
paid_to_delivered = ...  # your code here

# %% [solution]
cases_at = steps.set_index("step")["cases"]
paid_to_delivered = cases_at["delivered"] / cases_at["payment_received"]

# %% [wrong] the share of all orders, read off the funnel
paid_to_delivered = steps.set_index("step").loc["delivered", "share"]


# %% [check]
def check_conversion() -> None:
    eskit.course.require(paid_to_delivered, "set paid_to_delivered")
    orders_with = {t: set(df.loc[df["type"] == t, "aggregate_id"]) for t in ("payment_received", "delivered")}
    paid, delivered = orders_with["payment_received"], orders_with["payment_received"] & orders_with["delivered"]
    answer, total = float(paid_to_delivered), df["aggregate_id"].nunique()
    if abs(answer - len(delivered) / total) < 1e-3:
        raise eskit.course.Wrong(f"{answer:.3f} is the share of all {total} orders: divide by the {len(paid)} "
                                 "paid ones instead")
    assert abs(answer - len(delivered) / len(paid)) < 1e-3, (
        f"{answer:.3f} is not the share of paid orders that were delivered")


await eskit.course.check(check_conversion, ok="that is the share of the paid orders that were delivered")

# %% [markdown]
# ## Part 2 · A real event log
#
# Process-mining logs come as CSV (columns `case:concept:name`, `concept:name`, `time:timestamp`, …) or
# XES (XML). `eskit.import_log` turns one into events: **case → aggregate, activity → event type, the log's
# timestamp → `occurred_at`, every other attribute → data**. Case ids and activity names are free text
# ("Check documents"), so they are escaped into subject tokens (`Check%20documents`) and the analysis gives
# the original names back.
#
# If `ESKIT_EVENT_LOG` names a file we import that; otherwise a sample claims log the kit generates.

# %%
folder = tempfile.TemporaryDirectory()
path = event_log_path(folder.name)
log = await client.event_store(eskit.course.unique("log"))
result = await eskit.import_log(log, path, progress=False)
print(f"{result.cases} cases, {result.events} events, {result.appended} appended")

# %% [markdown]
# Importing again adds nothing: every event id comes from the row's content and its place in the case,
# and the import first reads which events each case already has. That holds long after the stream's
# 2-minute duplicate window.

# %%
again = await eskit.import_log(log, path, progress=False)
print(f"appended {again.appended}; {again.cases_already_stored} cases were already stored")

# %% [markdown]
# `names="pm4py"` gives the columns their process-mining names, so the frame goes straight into pm4py.

# %%
log_df = await eskit.to_dataframe(log, names="pm4py", progress=False)
log_variants = variants(log_df)
log_variants.head(4)

# %%
directly_follows(log_df).head(8)

# %%
funnel(log_df, log_variants["variant"][0])  # the steps of the most common path

# %% [markdown]
# ### With pm4py (optional)
#
# pm4py is an optional extra (`pip install 'eskit[pm4py]'`; note its licence is AGPL-3.0). Without it,
# this cell just says so.

# %%
# NBVAL_IGNORE_OUTPUT
try:
    import pm4py
except ImportError:
    pm4py = None
    print("pm4py is not installed: skipped (pip install 'eskit[pm4py]')")
if pm4py is not None:
    dfg, starts, ends = pm4py.discover_dfg(log_df)
    print(len(dfg), "directly-follows edges; start activities:", dict(starts))

# %% [markdown]
# ## Browse the stream
#
# `eskit.widgets.EventBrowser` pages through events with filters (aggregate, type, time range);
# `StreamOverview` counts them by type. Try typing an order id like `order-0007` and pressing *load*.

# %%
# NBVAL_IGNORE_OUTPUT
from eskit.widgets import EventBrowser, StreamOverview

browser = EventBrowser(orders, page_size=10)
await browser.refresh()
browser

# %%
overview = StreamOverview(log)
await overview.refresh()
overview.summary[["events"]]

# %% [markdown]
# ## Beyond one DataFrame: Parquet, DuckDB and object-centric logs
#
# `to_dataframe` holds every event in memory (about 600 MiB for a million events). A year of a busy shop
# is a hundred times that. `eskit.to_parquet(store, folder)` streams the same columns to Parquet files
# instead, 100,000 events at a time, so memory stays bounded however big the store; DuckDB (or Polars,
# Spark, Dask: the files are plain Parquet) then answers questions in SQL without loading everything.
# Both need the `analysis` extra (`pip install 'eskit[analysis]'`); without it these cells say so.

# %%
# NBVAL_IGNORE_OUTPUT
try:
    import duckdb
    import pyarrow  # noqa: F401
except ImportError:
    duckdb = None
    print("pyarrow/duckdb are not installed: skipped (pip install 'eskit[analysis]')")
if duckdb is not None:
    exported = await eskit.to_parquet(orders, f"{folder.name}/orders", progress=False)
    print(f"{exported.events} events in {exported.files} file(s), positions {exported.after + 1}..{exported.last_position}")

# %% [markdown]
# The variants, durations and funnel from Part 1, in SQL over the export (`read_parquet` takes a glob;
# the folder is a *dataset*: more files join it later). Each answer is checked against the pandas one.

# %%
# NBVAL_IGNORE_OUTPUT
if duckdb is not None:
    orders_pq = f"read_parquet('{folder.name}/orders/**/*.parquet')"
    sql_variants = duckdb.sql(f"""
        SELECT variant, count(*) AS cases FROM (
            SELECT string_agg(type, ' → ' ORDER BY occurred_at, position) AS variant
            FROM {orders_pq} GROUP BY aggregate_id)
        GROUP BY variant ORDER BY cases DESC, variant""").df()
    assert dict(zip(sql_variants["variant"], sql_variants["cases"])) == {
        " → ".join(v): n for v, n in zip(variants(df)["variant"], variants(df)["cases"])
    }
    print(sql_variants.head(4).to_string(index=False))

# %%
# NBVAL_IGNORE_OUTPUT
if duckdb is not None:
    sql_durations = duckdb.sql(f"""
        SELECT aggregate_id, (epoch_ns(max(occurred_at)) - epoch_ns(min(occurred_at))) / 86400e9 AS days
        FROM {orders_pq} GROUP BY aggregate_id""").df()  # times keep their nanoseconds: epoch_ns
    assert abs(sql_durations["days"].sum() - durations["duration"].dt.total_seconds().sum() / 86400) < 1e-6
    sql_funnel = duckdb.sql(f"""
        SELECT type AS step, count(DISTINCT aggregate_id) AS cases FROM {orders_pq}
        WHERE type IN ('created', 'payment_received', 'shipped', 'delivered') GROUP BY type
        ORDER BY cases DESC""").df()
    print(sql_funnel.to_string(index=False))

# %% [markdown]
# **Straight from the store, no files:** `eskit.to_arrow(store)` gives a `pyarrow.RecordBatchReader`, and
# DuckDB queries a reader that is in scope by its variable name. **Nightly exports** append only what is
# new: `after="last"` reads the position the folder's last export recorded and writes the events stored
# since as new files (each written under a temporary name and renamed, so a crash never leaves half a file).

# %%
# NBVAL_IGNORE_OUTPUT
if duckdb is not None:
    reader = await eskit.to_arrow(orders, progress=False)
    print(duckdb.sql("SELECT type, count(*) AS events FROM reader GROUP BY type ORDER BY events DESC").df())
    await orders.append_many(order_events(210, seed=6)[200:], concurrency=8)  # 10 more orders arrive
    nightly = await eskit.to_parquet(orders, f"{folder.name}/orders", after="last", progress=False)
    total = duckdb.sql(f"SELECT count(*) FROM {orders_pq}").fetchall()[0][0]
    print(f"appended {nightly.events} events after position {nightly.after}; the export holds {total}")
    assert total == len(await eskit.to_dataframe(orders, progress=False))

# %% [markdown]
# How they compare on a million events (`python bench/export.py`; each in its own process, so the peak
# memory is its own; one run on a busy 2-core machine, about 190 MiB of it is Python, pandas and pyarrow):
#
# | a million events | time | peak memory |
# |---|---|---|
# | `to_dataframe` | 19.9 s | 538 MiB |
# | `to_parquet` | 18.9 s | 239 MiB |
# | variants: `to_dataframe` + pandas | 17.5 s | 571 MiB |
# | variants: DuckDB over the Parquet export | 0.4 s | 315 MiB |
#
# The export's memory stays put as the store grows (243 MiB for three million events); the DataFrame's grows.
#
# ### Object-centric event logs (OCEL 2.0)
#
# A case id assumes each event belongs to one thing. A DCB event (lesson 05) often belongs to several: a
# subscription touches a course *and* a student. OCEL 2.0 is the process-mining format for exactly that:
# events, objects, and which objects each event involves. `eskit.to_ocel(store, path)` writes one from a
# DCB store (tag `course:c1` → object `c1` of type `course`) or from an event store (one object per
# aggregate), as JSON (`.jsonocel`) or SQLite (`.sqlite`).

# %%
from eskit.dcb_examples import define_course, execute, subscribe_student

school = await client.dcb_store(eskit.course.unique("school"), tag_keys=["course", "student"])
for course, seats in [("c1", 3), ("c2", 2)]:
    await execute(school, define_course(course, capacity=seats))
for student, course in [("s1", "c1"), ("s2", "c1"), ("s1", "c2"), ("s3", "c2")]:
    await execute(school, subscribe_student(student, course))
ocel = await eskit.to_ocel(school, f"{folder.name}/school.jsonocel")
print(f"{ocel.events} events, {ocel.objects} objects, {ocel.relations} event-object relations")

# %% [markdown]
# pm4py reads it (`pm4py.read_ocel2_json`) and discovers an *object-centric* directly-follows graph: one
# graph per object type, drawn together (drawing needs Graphviz; without it the edges are printed).

# %%
# NBVAL_IGNORE_OUTPUT
if pm4py is not None:
    school_log = pm4py.read_ocel2_json(f"{folder.name}/school.jsonocel")
    ocdfg = pm4py.discover_ocdfg(school_log)
    try:
        pm4py.view_ocdfg(ocdfg)
    except Exception:  # no Graphviz binary: the edges per object type instead
        for object_type, edges in ocdfg["edges"]["event_couples"].items():
            print(object_type, sorted(edges))

# %% [markdown]
# And back: `python -m eskit import orders.jsonocel --dcb NAME` (or `eskit.import_ocel`) appends an OCEL
# 2.0 file to a DCB store, each object as a tag, the OCEL time in the data. Importing again adds nothing.

# %%
from eskit.dcb import Query, QueryItem
from eskit.eventlog import decode_token
from eskit.ocel import sample_ocel

sample = sample_ocel(f"{folder.name}/orders.jsonocel", orders=5)
shop_name = eskit.course.unique("shop")
imported = await eskit.import_ocel(client, sample, name=shop_name)
again = await eskit.import_ocel(client, sample, name=shop_name)
print(f"appended {imported.appended} events, then {again.appended}")
shop = await client.dcb_store(shop_name)
for e in await shop.read(Query([QueryItem(tags=["customer:cust1"])])):  # what customer cust1 did
    print(e.position, decode_token(e.type), e.tags)  # types are stored as subject tokens ("place%20order")

# %%
for dcb_store in (school, shop):
    await client.delete_store(dcb_store.name)

# %% [markdown]
# ## Summary
#
# - An event store is an event log: aggregate = case, event type = activity, `occurred_at` = time.
# - `eskit.to_dataframe(store)` reads it into pandas, fast; `names="pm4py"` for process-mining tools.
# - `eskit.analysis`: `events_per_type`, `case_durations`, `variants`, `directly_follows`, `funnel`.
# - `eskit.import_log(store, "log.csv" or "log.xes")` (or `python -m eskit import FILE --stream NAME`)
#   brings real logs in, idempotently; a malformed file is refused whole, naming the line or element.

# %% [markdown]
# ### Exercise 6.3 · Rework
#
# *Rework* is when a case repeats an activity (a claim whose documents are checked twice). Write
# `rework_cases(frame)`: the number of **cases** in which some activity occurs more than once. `frame` has
# pm4py's column names, like `log_df`. The check runs it on `log_df` and on a small frame of its own.

# %% [exercise]
def rework_cases(frame: pd.DataFrame) -> int:
    ...  # your code here


# %% [solution]
def rework_cases(frame: pd.DataFrame) -> int:
    counts = frame.groupby(["case:concept:name", "concept:name"]).size()
    return int((counts > 1).groupby(level=0).any().sum())


# %% [wrong] counts repeated activities, not cases
def rework_cases(frame: pd.DataFrame) -> int:
    counts = frame.groupby(["case:concept:name", "concept:name"]).size()
    return int((counts > 1).sum())


# %% [check]
def check_rework() -> None:
    eskit.course.require(rework_cases(log_df), "rework_cases returns nothing yet")
    rows = [("a", "check"), ("a", "fix"), ("a", "check"), ("a", "fix"), ("b", "check"), ("b", "fix"),
            ("c", "check"), ("c", "check")]  # fmt: skip
    small = pd.DataFrame(rows, columns=["case:concept:name", "concept:name"])
    small["time:timestamp"] = pd.date_range("2025-01-01", periods=len(rows), freq="h", tz="UTC")
    got = rework_cases(small)
    if got == 3:
        raise eskit.course.Wrong("case a repeats two activities and was counted twice (3 instead of 2): count "
                                 "cases, not repeated activities")
    assert got == 2, f"cases a and c repeat an activity, b does not: expected 2, got {got}"
    expected = sum(n for v, n in zip(log_variants["variant"], log_variants["cases"]) if len(set(v)) < len(v))
    assert rework_cases(log_df) == expected, f"on log_df: expected {expected}, got {rework_cases(log_df)}"


await eskit.course.check(check_rework, ok="rework counted per case")

# %% [markdown]
# ## When you are done
#
# Run All has run the cell below too, and on purpose it cleaned nothing up: the event browser above keeps
# working, so go back and explore. Press **I'm done: clean up** when you have finished: it deletes this
# lesson's two stores and the log files and closes the connection. Restarting the kernel closes the
# connection too, but leaves the stores on the server.

# %%
# NBVAL_IGNORE_OUTPUT
from eskit.widgets import when_done


async def clean_up() -> None:
    await client.delete_store(orders.name)
    await client.delete_store(log.name)
    folder.cleanup()
    await client.close()


await when_done(clean_up)

# %% [markdown]
# **Next:** `07_scaling_and_faults.ipynb` — a 3-node cluster, a node killed mid-write.
