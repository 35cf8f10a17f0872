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
import uuid

import matplotlib.pyplot as plt
import pandas as pd

import eskit
from eskit.analysis import case_durations, directly_follows, events_per_type, funnel, variants
from eskit.samples import event_log_path, order_events

pd.set_option("display.width", 120)
client = await eskit.connect()
suffix = uuid.uuid4().hex[:8]

# %% [markdown]
# ## Part 1 · Order events
#
# 200 orders, generated with a fixed seed (so you see the numbers we see): created, one to four items,
# then paid and shipped (mostly delivered too), or cancelled.

# %%
orders = await client.event_store(f"orders_{suffix}")
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
weekly.plot.bar(stacked=True, figsize=(8, 3), title="events per week")
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
(durations["duration"].dt.total_seconds() / 86400).plot.hist(bins=20, figsize=(6, 3), title="order duration (days)")
plt.show()

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
matrix = follows.pivot(index="source", columns="target", values="count").fillna(0)
fig, ax = plt.subplots(figsize=(5, 4))
ax.imshow(matrix, cmap="Blues")
ax.set_xticks(range(len(matrix.columns)), matrix.columns, rotation=45, ha="right")
ax.set_yticks(range(len(matrix.index)), matrix.index)
ax.set_title("directly follows (count)")
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
steps.plot.barh(x="step", y="cases", legend=False, figsize=(6, 2.5), title="order funnel").invert_yaxis()
plt.show()

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
log = await client.event_store(f"log_{suffix}")
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
        SELECT aggregate_id, max(occurred_at) - min(occurred_at) AS duration
        FROM {orders_pq} GROUP BY aggregate_id""").df()
    assert sql_durations["duration"].sum() == durations["duration"].sum()
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
# How they compare on a million events (`bench/export.py`, each in its own process, on a 2-core machine):
# `to_parquet` runs at about the speed of `to_dataframe` with a bounded peak memory, and DuckDB counts the
# variants over the export in a fraction of the time and memory pandas needs over the DataFrame. Run the
# benchmark to see your machine's figures.
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

school = await client.dcb_store(f"school_{suffix}", tag_keys=["course", "student"])
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
from eskit.ocel import sample_ocel

sample = sample_ocel(f"{folder.name}/orders.jsonocel", orders=5)
imported = await eskit.import_ocel(client, sample, name=f"shop_{suffix}")
again = await eskit.import_ocel(client, sample, name=f"shop_{suffix}")
print(f"appended {imported.appended} events, then {again.appended}")
shop = await client.dcb_store(f"shop_{suffix}")
for e in await shop.read(Query([QueryItem(tags=["customer:cust1"])])):
    print(e.position, e.type, e.tags)

# %%
await client.delete_store(school.name)
await client.delete_store(shop.name)

# %% [markdown]
# ## Summary
#
# - An event store is an event log: aggregate = case, event type = activity, `occurred_at` = time.
# - `eskit.to_dataframe(store)` reads it into pandas, fast; `names="pm4py"` for process-mining tools.
# - `eskit.analysis`: `events_per_type`, `case_durations`, `variants`, `directly_follows`, `funnel`.
# - `eskit.import_log(store, "log.csv" or "log.xes")` (or `python -m eskit import FILE --stream NAME`)
#   brings real logs in, idempotently; a malformed file is refused whole, naming the line or element.
#
# ## Exercise
#
# *Rework* is when a case repeats an activity (a claim whose documents are checked twice). Write
# `rework_cases(frame)`: the number of cases in which some activity occurs more than once.

# %% [exercise]
def rework_cases(frame: pd.DataFrame) -> int:
    ...  # your code here


# %% [solution]
def rework_cases(frame: pd.DataFrame) -> int:
    counts = frame.groupby(["case:concept:name", "concept:name"]).size()
    return int((counts > 1).groupby(level=0).any().sum())


# %% [wrong] counts the repeated (case, activity) pairs, not the cases
def rework_cases(frame: pd.DataFrame) -> int:
    counts = frame.groupby(["case:concept:name", "concept:name"]).size()
    return int((counts > 1).sum())


# %% [check]
def check_rework() -> None:
    expected = sum(n for v, n in zip(log_variants["variant"], log_variants["cases"]) if len(set(v)) < len(v))
    got = rework_cases(log_df)
    eskit.course.require(got, "rework_cases returns nothing yet")
    assert got == expected, f"expected {expected} cases with rework, got {got}"
    # case a repeats two activities, case b one activity three times, case c none: 2 cases with rework
    tiny = pd.DataFrame({"case:concept:name": list("aaaabbbcc"), "concept:name": list("xxyyzzzxy")})
    got = rework_cases(tiny)
    assert got == 2, f"on a log where case a repeats two activities and b one, 2 cases have rework; you said {got}"


await eskit.course.check(check_rework, ok="rework counted per case")

# %%
await client.delete_store(orders.name)
await client.delete_store(log.name)
folder.cleanup()
await client.close()

# %% [markdown]
# **Next:** `07_scaling_and_faults.ipynb` — a 3-node cluster, a node killed mid-write.
