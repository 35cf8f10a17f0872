# %% [markdown]
# # 00 · Setup check
#
# **What you'll do:** check, in a minute, everything the later lessons need: a NATS server with JetStream,
# an event appended and read back, a widget, a plot, a 3-node cluster started and stopped, and the versions.
# The last cell shows one green banner when all is well, or one line per missing piece with what to do.
#
# **What you'll learn:** where eskit finds its server — `NATS_URL` if it is set (JupyterLab started with
# `python -m eskit lab` sets it for you; a workshop's `docker compose up -d` server is `nats://localhost:4222`),
# otherwise an *embedded* nats-server that eskit starts on `127.0.0.1` for this notebook alone.
#
# **What you need:** nothing else. Run the cells from top to bottom (Shift-Enter), or Run All. About 2 minutes.

# %%
import importlib.metadata
import io
import platform
import uuid

from IPython.display import HTML, display

import eskit

missing: list[str] = []  # one line per missing piece, shown at the end


def need(ok: object, what: str) -> None:
    """Note `what` (the missing piece and what to do) unless `ok`."""
    if not ok:
        missing.append(what)


client = await eskit.connect()
info = await client.server_info()
server_version = tuple(int(part) for part in info.version.split(".")[:2])
need(info.jetstream, "JetStream is off on the server at NATS_URL: start nats-server with -js")
need(server_version >= (2, 12), f"nats-server {info.version} is too old: lessons need 2.12+ (atomic batches)")
print("JetStream enabled:", info.jetstream)
print("server is 2.12 or newer (atomic batches):", server_version >= (2, 12))

# %% [markdown]
# ## A store of your own
#
# An *event store* is one JetStream stream. `client.event_store("orders")` creates the stream `ORDERS`
# holding subjects `orders.>`. Each notebook run uses a uniquely named store, so runs never collide; we delete
# it at the end.

# %%
name = eskit.course.unique("setup")  # lesson_setup + 8 hex digits: `python -m eskit clean` finds it
store = await client.event_store(name)
print(store.stream == name.upper())

# %% [markdown]
# ## Append one event, read it back
#
# `expected_position=0` says "this aggregate must not exist yet": the server checks it atomically.

# %%
position = await store.append("order-1", [eskit.Event("created", {"customer": "ada"})], expected_position=0)
[event] = await store.read("order-1")
need(event.data == {"customer": "ada"} and event.position == position, "an event read back differs from the one appended")
print(event.type, event.data, "stored at position", event.position == position)

# %% [markdown]
# ## A widget
#
# Lessons 02, 04 and 06 have sliders and live dashboards (ipywidgets). You should see a slider below. If you
# see a line of text like `IntSlider(value=3, ...)` instead, your Jupyter has no widget support: install
# `jupyterlab_widgets` (it comes with `pip install -e ".[lab]"`) and reload the page.

# %%
# NBVAL_IGNORE_OUTPUT
try:
    import ipywidgets as widgets

    widget_version = importlib.metadata.version("ipywidgets")
    need(int(widget_version.split(".")[0]) >= 8, f"ipywidgets {widget_version} is too old: pip install 'ipywidgets>=8'")
    try:
        importlib.metadata.version("jupyterlab_widgets")
    except importlib.metadata.PackageNotFoundError:
        need(False, "the widget extension is missing: pip install jupyterlab_widgets, then reload the page")
    slider = widgets.IntSlider(value=3, min=0, max=10, description="drag me")
    display(slider)
except ImportError:
    need(False, "ipywidgets is not installed: pip install ipywidgets")

# %% [markdown]
# ## A plot
#
# Lessons 01, 03, 05, 06 and 07 draw charts with matplotlib. You should see a small bar chart below.

# %%
try:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 2))
    ax.bar(["created", "item_added", "shipped"], [3, 5, 2])
    ax.set_title("A plot renders")
    ax.set_xlabel("event type")
    ax.set_ylabel("events")
    png = io.BytesIO()
    fig.savefig(png, format="png")
    need(png.tell() > 1000, "matplotlib drew an empty image: check its backend (MPLBACKEND)")
    plt.show()
except ImportError:
    need(False, "matplotlib is not installed: pip install matplotlib")

# %% [markdown]
# ## A 3-node cluster
#
# Lesson 07 starts three nats-servers on `127.0.0.1`, forming one JetStream cluster, and kills one. Here we
# start one, store an event on a replicated stream (3 copies), and stop it again (a few seconds).

# %%
try:
    cluster = eskit.EmbeddedCluster(3).start()
    try:
        async with await eskit.connect(cluster.url) as on_cluster:
            replicated = await on_cluster.event_store(f"cluster_{uuid.uuid4().hex[:8]}")
            await replicated.append("order-1", [eskit.Event("created", {"customer": "ada"})])
            replicas = (await on_cluster.js.stream_info(replicated.stream)).config.num_replicas
            await on_cluster.delete_store(replicated.name)
        need(replicas == 3, f"the cluster's store has {replicas} replicas, not 3")
        print("nodes running:", sum(node.running for node in cluster.nodes), "| replicas of a store:", replicas)
    finally:
        cluster.stop()
    need(not any(node.running for node in cluster.nodes), "a cluster node is still running after stop()")
    print("stopped: all nodes down")
except Exception as exc:
    need(False, f"a 3-node cluster did not start ({type(exc).__name__}: {exc}); lesson 07 needs it")

# %% [markdown]
# ## Versions
#
# Worth including when you ask for help.

# %%
# NBVAL_IGNORE_OUTPUT
print("Python     ", platform.python_version())
print("eskit      ", eskit.__version__)
print("nats-py    ", importlib.metadata.version("nats-py"))
print("nats-server", info.version)
need(tuple(map(int, platform.python_version_tuple()[:2])) >= (3, 11), "Python 3.11 or newer is needed")

# %% [markdown]
# ## All set?

# %%
await client.delete_store(name)
await client.close()
if missing:
    lines = "".join(f"<li>{line}</li>" for line in missing)
    display(HTML(f'<p style="color:#b00;font-weight:bold">✗ missing:</p><ul style="color:#b00">{lines}</ul>'))
else:
    display(HTML('<p style="color:green;font-weight:bold">✅ all set — continue with 01_events_and_subjects</p>'))

# %% [markdown]
# ## Summary
#
# - eskit talks to the server at `NATS_URL`, or starts an embedded one for the notebook.
# - You appended an event and read it back; widgets and plots render; a 3-node cluster starts and stops.
#
# **Next:** `01_events_and_subjects.ipynb` — events, subjects and stream configuration.
