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
