# %% [markdown]
# # 00 · Setup check
#
# **What you'll do:** connect to a real NATS server with JetStream, append one event and read it back.
#
# **What you'll learn:** where eskit finds its server — `NATS_URL` if it is set (JupyterLab started with
# `python -m eskit lab` sets it for you; a workshop's `docker compose up -d` server is `nats://localhost:4222`),
# otherwise an *embedded* nats-server that eskit starts on `127.0.0.1` for this notebook alone.
#
# **What you need:** nothing else. Run the cells from top to bottom (Shift-Enter).

# %%
import uuid

import eskit

client = await eskit.connect()
info = await client.server_info()
print("JetStream enabled:", info.jetstream)
print("server is 2.12 or newer (atomic batches):", tuple(map(int, info.version.split(".")[:2])) >= (2, 12))
print(f"largest event payload: {info.max_payload:,} bytes")

# %% [markdown]
# ## A store of your own
#
# An *event store* is one JetStream stream. `client.event_store("orders")` creates the stream `ORDERS`
# holding subjects `orders.>`. Each notebook run uses a uniquely named store, so runs never collide; we delete
# it at the end.

# %%
name = f"setup_{uuid.uuid4().hex[:8]}"
store = await client.event_store(name)
print(store.stream == name.upper())

# %% [markdown]
# ## Append one event, read it back
#
# `expected_position=0` says "this aggregate must not exist yet": the server checks it atomically.

# %%
position = await store.append("order-1", [eskit.Event("created", {"customer": "ada"})], expected_position=0)
[event] = await store.read("order-1")
print(event.type, event.data, "stored at position", event.position == position)

# %% [markdown]
# ## All set?

# %%
from IPython.display import HTML, display

ok = info.jetstream and event.data == {"customer": "ada"}
assert ok, "something is off: see the messages above"
display(HTML('<p style="color:green;font-weight:bold">✅ all set — continue with 01_events_and_subjects</p>'))

# %%
await client.delete_store(name)
await client.close()

# %% [markdown]
# **Next:** `01_events_and_subjects.ipynb` — events, subjects and stream configuration.
