# %% [markdown]
# # 07 · Scaling and faults
#
# **What you'll do:** start a 3-node NATS cluster on this machine, create a replicated store, kill the node
# that leads it (SIGKILL, in the middle of a stream of writes), watch the writes go on once a new leader is
# elected, and count that nothing acknowledged was lost or doubled. Then log in as a read-only *analyst* and
# try to append.
#
# **What you'll learn:**
# - replicas and leaders: a stream with `replicas=3` keeps every event on three servers; one of them, the
#   *leader*, orders the writes (Raft), and a majority must store an event before it is acknowledged;
# - what an append meets while a new leader is elected (`StoreTimeoutError`, `StoreUnavailableError` —
#   `append_through_failover` retries them for you, so you will not see them here) and why retrying with the
#   **same** `Event` objects is safe;
# - the Direct Get caveat: any replica answers reads, and a replica may lag — a stale read can cause a
#   conflict and a retry, never a lost update;
# - least privilege: a writer account that may append, an analyst account that may only read.
#
# **What you need:** lessons 00–02. About 2 minutes; the cluster takes a few seconds to start. This notebook
# starts its own servers and stops them at the end — unless `NATS_URL` is a cluster of three or more nodes (a
# workshop room's `docker compose --profile cluster`): then it uses that one, shared with the room, and
# kills no node (the next cell says which it is).

# %%
import asyncio
import time

import eskit
from eskit.cluster import EmbeddedCluster, cluster_at, step_down, wait_replicas_current
from eskit.failover import append_through_failover

room = await cluster_at()  # NATS_URL, if it is a cluster of 3 or more nodes (a workshop room's); else None
if room is None:
    cluster = EmbeddedCluster(3).start()  # three nats-server processes on 127.0.0.1, routed, JetStream on each
    client = await eskit.connect(cluster.url)  # all three URLs: the client fails over between them
    print("nodes running:", sum(node.running for node in cluster.nodes))
else:  # the room's cluster: shared with everyone, so nobody kills its nodes; a leader steps down instead
    cluster, client = None, await eskit.connect(room)
    print("using the cluster at NATS_URL, shared with the room:", (await client.server_info()).cluster)
print("replicas a new store gets here:", client.default_replicas)

# %% [markdown]
# ## A replicated store
#
# On a cluster `client.event_store(...)` creates the stream with `replicas=3` (on a single server: 1; pass
# `replicas=` to choose). The stream has a leader and two followers. Which node leads is decided by an
# election, so it differs from run to run — we never print it.

# %%
name = eskit.course.unique("payments")
payments = await client.event_store(name)
info = await client.js.stream_info(payments.stream)
print("replicas:", info.config.num_replicas, "| followers:", len(info.cluster.replicas))

# %% [markdown]
# ## Writes that survive a leader's death
#
# 20 accounts, 30 deposits each, written concurrently, each append checked against the account's last
# position. Every event is created once, with its id, *before* the first attempt. `append_through_failover`
# retries a timed-out or unanswered append with those same events: the server drops an id it already
# stored, and if the first attempt had landed, eskit finds its own ids and returns their position. We record
# every acknowledgement: event id → position.

# %%
ACCOUNTS, DEPOSITS, KILL_AT = 20, 30, 200
acked: dict[str, int] = {}
ack_times: list[float] = []
enough_acked = asyncio.Event()  # set by the writers once KILL_AT deposits are acknowledged


async def deposit_all(account: str) -> None:
    position = 0
    for n in range(DEPOSITS):
        event = eskit.Event("deposited", {"n": n, "amount": 10})
        position = await append_through_failover(payments, account, [event], expected_position=position)
        acked[event.id] = position
        ack_times.append(time.monotonic())
        if len(acked) >= KILL_AT:
            enough_acked.set()

# %% [markdown]
# The next cell starts the writers, waits until 200 deposits are acknowledged, and then SIGKILLs the stream's
# leader — no clean shutdown, as in a power cut. Starting the writes and killing the leader happen in **one**
# cell, so the kill always lands in the middle of the writes, whether you run the lesson with Run All or
# step through it at your own pace. The writers go on in the background while you read.

# %%
leader = cluster.stream_leader(payments.stream) if cluster else None
writers = asyncio.gather(*(deposit_all(f"acct-{i}") for i in range(ACCOUNTS)))
await asyncio.wait_for(enough_acked.wait(), 60)
if cluster:
    cluster.kill(leader)
    print("leader killed; nodes running:", sum(node.running for node in cluster.nodes))
else:  # on the room's cluster: the leader steps down, and the other replicas elect a new one, as after a kill
    print("leader", await step_down(client, payments.stream), "stepped down (the room's nodes all keep running)")
killed_at = time.monotonic()
acked_before_kill = len(acked)
print(f"killed with at least {KILL_AT} of {ACCOUNTS * DEPOSITS} deposits acknowledged; the rest are on their way")

# %% [markdown]
# The two survivors still form a majority (2 of 3): they elect a new leader, and the writers' retries get
# through. We wait for all writers to finish (if you took your time, they already have), then bring the dead
# node back: it rejoins as itself and catches up from the new leader. (On the room's cluster the leader only
# stepped down — the same election, no node stopped — so there is nothing to bring back.)

# %%
await asyncio.wait_for(writers, 120)
print("acknowledged:", len(acked), "of", ACCOUNTS * DEPOSITS)
print("appends acknowledged after the kill:", len(acked) > acked_before_kill)
if cluster:
    cluster.start_node(leader)
    last = cluster.wait_in_sync(payments.stream)  # all three replicas hold the same events
    print("nodes running:", sum(node.running for node in cluster.nodes), "| replicas in sync up to", last)
else:
    print("replicas in sync up to", await wait_replicas_current(client, payments.stream))

# %% [markdown]
# How long did writes pause? The longest gap between two acknowledgements spans the election: a follower
# waits a random 4–9 s without hearing from its leader before it campaigns (nats-server's Raft election
# timeout), so expect a few seconds. It varies from run to run:

# %%
# NBVAL_IGNORE_OUTPUT
pause = max(later - earlier for earlier, later in zip(ack_times, ack_times[1:]))
print(f"longest pause between two acknowledgements: {pause:.1f}s")

# %% [markdown]
# The same, as a picture: every acknowledgement, counted up over time. The line climbs while the leader
# lives, stays flat while the survivors elect a new one, and climbs again.

# %%
# NBVAL_IGNORE_OUTPUT
import matplotlib.pyplot as plt

t0 = min(ack_times)
seconds = [t - t0 for t in sorted(ack_times)]
fig, ax = plt.subplots(figsize=(8, 3.2))
ax.step(seconds, range(1, len(seconds) + 1), where="post", label="acknowledged appends")
ax.axvline(killed_at - t0, color="red", linestyle="--", label="leader killed (SIGKILL)")
gap = max(range(1, len(seconds)), key=lambda i: seconds[i] - seconds[i - 1])
ax.axvspan(seconds[gap - 1], seconds[gap], color="orange", alpha=0.2, label=f"no acks for {pause:.1f} s")
ax.set(title="Acknowledged writes through a leader failover", xlabel="seconds since the first acknowledgement",
       ylabel="acknowledged (cumulative)")
ax.legend(loc="upper left", frameon=False)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Count: lost, doubled, out of order?
#
# *Acknowledged* is a promise: each acknowledged event must be stored, exactly once, at the position its ack
# named — and each account's deposits in the order they were made.

# %%
stored = [e async for e in payments.replay()]
stored_ids = [e.id for e in stored]
print("stored events:", len(stored))
print("acknowledged but lost:", len(set(acked) - set(stored_ids)))
print("stored twice:", len(stored_ids) - len(set(stored_ids)))
print("every ack names the stored position:", all(acked[e.id] == e.position for e in stored))
in_order = all(
    [e.data["n"] for e in stored if e.aggregate_id == f"acct-{i}"] == list(range(DEPOSITS)) for i in range(ACCOUNTS)
)
print("each account's deposits in order:", in_order)

# %% [markdown]
# ## The Direct Get caveat
#
# eskit reads with *Direct Get*, which every replica answers — reads scale with the replicas and keep working
# during an election. The price: a follower may answer before it has applied your latest write. Direct Get is
# not read-after-write coherent (only `$JS.API.STREAM.MSG.GET`, answered by the leader, is).
#
# Is that dangerous? A stale read gives you an old `expected_position`. The *leader* checks it on append, so
# the append fails with a `ConcurrencyError`; you reload and decide again. A stale read can cost a retry,
# never a lost update. Here is what a replica one write behind would have answered:

# %%
history = await payments.read("acct-0")
stale = history[:-1]  # as a lagging replica would answer
try:
    await payments.append("acct-0", [eskit.Event("withdrawn", {"amount": 5})], expected_position=stale[-1].position)
except eskit.ConcurrencyError:
    print("decided on a stale read -> ConcurrencyError: reload and decide again")
fresh = await payments.read("acct-0")
position = await payments.append("acct-0", [eskit.Event("withdrawn", {"amount": 5})], expected_position=fresh[-1].position)
print("after reloading, the append is accepted:", position > fresh[-1].position)

# %% [markdown]
# ### Exercise 7.1 · A retry policy
#
# `append_through_failover` is a retry policy. Write one of your own, for any append:
# `retry_transient(attempt, *, attempts=5, base_delay=0.01)`, where `attempt` is a zero-argument async
# function (one append). Retry it while it raises `eskit.StoreTimeoutError` or `eskit.StoreUnavailableError`
# (faults that pass, like an election), waiting `base_delay * 2**n` seconds before try `n + 2` (a growing
# pause: hammering servers in the middle of an election only slows it). After `attempts` tries, raise the last
# error. Any other error — a `ConcurrencyError` above all — is raised at once: a conflict is an answer, not a
# fault; the same append would fail again. Return what `attempt()` returned.

# %% [exercise]
async def retry_transient(attempt, *, attempts: int = 5, base_delay: float = 0.01):
    ...  # your code here


# %% [solution]
async def retry_transient(attempt, *, attempts: int = 5, base_delay: float = 0.01):
    for n in range(attempts):
        try:
            return await attempt()
        except (eskit.StoreTimeoutError, eskit.StoreUnavailableError):
            if n == attempts - 1:
                raise
            await asyncio.sleep(base_delay * 2**n)


# %% [wrong] retries every error, conflicts too
async def retry_transient(attempt, *, attempts: int = 5, base_delay: float = 0.01):
    for n in range(attempts):
        try:
            return await attempt()
        except eskit.EskitError:
            if n == attempts - 1:
                raise
            await asyncio.sleep(base_delay * 2**n)


# %% [wrong] retries at once, without a pause
async def retry_transient(attempt, *, attempts: int = 5, base_delay: float = 0.01):
    for n in range(attempts):
        try:
            return await attempt()
        except (eskit.StoreTimeoutError, eskit.StoreUnavailableError):
            if n == attempts - 1:
                raise


# %% [check]
def flaky(*errors: Exception):
    """An append that raises `errors` one by one, then returns 42; `calls` records when it was called."""
    calls: list[float] = []

    async def attempt() -> int:
        calls.append(time.monotonic())
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return 42

    return attempt, calls


async def check_retry() -> None:
    Wrong = eskit.course.Wrong
    timeout, unavailable = eskit.StoreTimeoutError("no answer in time"), eskit.StoreUnavailableError("no leader")
    attempt, calls = flaky(timeout, unavailable)
    result = await asyncio.wait_for(retry_transient(attempt, attempts=5, base_delay=0.02), 10)
    eskit.course.require(result, "retry_transient returns nothing (return what attempt() returned)")
    assert (result, len(calls)) == (42, 3), f"after a timeout and an unavailable store, the third try returns 42; "\
        f"got {result!r} after {len(calls)} tries"
    gaps = [later - earlier for earlier, later in zip(calls, calls[1:])]
    if gaps[0] < 0.02 * 0.9 or gaps[1] < 0.04 * 0.9:
        raise Wrong(f"the pauses between tries were {gaps[0]:.3f} s and {gaps[1]:.3f} s; with base_delay=0.02 "
                    "wait 0.02 s, then 0.04 s (base_delay * 2**n)")
    attempt, calls = flaky(eskit.ConcurrencyError("payments", "acct-0", expected=3, actual=4))
    try:
        await asyncio.wait_for(retry_transient(attempt, base_delay=0.001), 10)
    except eskit.ConcurrencyError:
        pass
    if len(calls) > 1:
        raise Wrong("a ConcurrencyError was retried: someone else wrote first, so the same append fails again "
                    "(or, worse, lands on a decision made on old state): raise it at once")
    attempt, calls = flaky(*[unavailable] * 10)
    try:
        await asyncio.wait_for(retry_transient(attempt, attempts=3, base_delay=0.001), 10)
    except eskit.StoreUnavailableError:
        assert len(calls) == 3, f"with attempts=3 try 3 times, not {len(calls)}"
    except TimeoutError:
        raise Wrong("still retrying after 10 s: give up after `attempts` tries") from None
    else:
        raise Wrong("gave up silently: after the last try, raise its error so the caller knows")


await eskit.course.check(check_retry, ok="transient faults retried with growing pauses; conflicts raised at once")

# %% [markdown]
# ### Exercise 7.2 · Decide again after a stale read
#
# Write `withdraw(store, account, amount, history)`. `history` is the account's events as you read them —
# perhaps from a replica one write behind. The balance is the sum of the `deposited` amounts minus the
# `withdrawn` ones. If it covers `amount`, append `eskit.Event("withdrawn", {"amount": amount})` **on the
# position you read** and return the new position; if not, raise `eskit.DecisionError("insufficient funds")`.
# When the append raises `ConcurrencyError`, your read was stale: read again (`await store.read(account)`)
# and decide again — at most 5 times. (The check uses a store of its own on `NATS_URL`.)

# %% [exercise]
async def withdraw(store: eskit.EventStore, account: str, amount: int, history: list[eskit.RecordedEvent]) -> int:
    ...  # your code here


# %% [solution]
async def withdraw(store: eskit.EventStore, account: str, amount: int, history: list[eskit.RecordedEvent]) -> int:
    for _ in range(5):
        balance = sum(e.data["amount"] if e.type == "deposited" else -e.data["amount"] for e in history)
        if balance < amount:
            raise eskit.DecisionError("insufficient funds")
        read_up_to = history[-1].position if history else 0
        try:
            return await store.append(account, [eskit.Event("withdrawn", {"amount": amount})],
                                      expected_position=read_up_to)
        except eskit.ConcurrencyError:  # the read was stale: read again, decide again
            history = await store.read(account)
    raise eskit.DecisionError("the account keeps changing: try again later")


# %% [wrong] decides on the read, appends without its position
async def withdraw(store: eskit.EventStore, account: str, amount: int, history: list[eskit.RecordedEvent]) -> int:
    balance = sum(e.data["amount"] if e.type == "deposited" else -e.data["amount"] for e in history)
    if balance < amount:
        raise eskit.DecisionError("insufficient funds")
    return await store.append(account, [eskit.Event("withdrawn", {"amount": amount})])


# %% [wrong] on a conflict, appends again without deciding again
async def withdraw(store: eskit.EventStore, account: str, amount: int, history: list[eskit.RecordedEvent]) -> int:
    balance = sum(e.data["amount"] if e.type == "deposited" else -e.data["amount"] for e in history)
    if balance < amount:
        raise eskit.DecisionError("insufficient funds")
    event = eskit.Event("withdrawn", {"amount": amount})
    try:
        return await store.append(account, [event], expected_position=history[-1].position if history else 0)
    except eskit.ConcurrencyError:
        fresh = await store.read(account)
        return await store.append(account, [event], expected_position=fresh[-1].position)


# %% [check]
def balance_of(events: list[eskit.RecordedEvent]) -> int:
    return sum(e.data["amount"] if e.type == "deposited" else -e.data["amount"] for e in events)


async def check_withdraw() -> None:
    Wrong = eskit.course.Wrong
    async with await eskit.connect() as own, eskit.course.scratch(own, "withdraw") as store:
        deposit = {"amount": 10}
        await store.append("a1", [eskit.Event("deposited", deposit)])  # a fresh read: 10 in the account
        fresh = await store.read("a1")
        position = await withdraw(store, "a1", 4, fresh)
        eskit.course.require(position, "withdraw returns nothing yet (return the position append returned)")
        assert balance_of(await store.read("a1")) == 6, "10 deposited, 4 withdrawn: the balance should be 6"
        try:
            await withdraw(store, "a1", 20, await store.read("a1"))
            raise Wrong("20 was withdrawn from an account holding 6: refuse with eskit.DecisionError")
        except eskit.DecisionError:
            pass
        await store.append("a2", [eskit.Event("deposited", deposit)])
        stale = await store.read("a2")  # ... then a deposit lands that this read does not show
        await store.append("a2", [eskit.Event("deposited", deposit)])
        try:
            await withdraw(store, "a2", 5, stale)
        except eskit.ConcurrencyError:
            raise Wrong("a ConcurrencyError escaped: the read was stale (normal, with replicas): read again and "
                        "decide again") from None
        assert balance_of(await store.read("a2")) == 15, "20 deposited, 5 withdrawn: the balance should be 15"
        await store.append("a3", [eskit.Event("deposited", deposit)])
        stale = await store.read("a3")  # ... then someone withdraws everything
        await store.append("a3", [eskit.Event("withdrawn", deposit)])
        try:
            await withdraw(store, "a3", 5, stale)
        except eskit.DecisionError:
            pass
        if (balance := balance_of(await store.read("a3"))) < 0:
            raise Wrong(f"the account went to {balance}: the withdrawal was decided on a stale read (balance 10). "
                        "Append on the position you read, and after a conflict decide again on a fresh read")


await eskit.course.check(check_withdraw, ok="stale reads cost a retry, never an overdraft")

# %%
await client.delete_store(name)
await client.close()
if cluster:
    cluster.stop()
    print("nodes running:", sum(node.running for node in cluster.nodes))

# %% [markdown]
# ## Least privilege: an admin, a writer and an analyst
#
# Not every program should be able to write history. `eskit.auth.least_privilege_config` writes a server
# configuration with three users: **admin** creates (and may delete) stores, **writer** may append (but not
# create or delete streams: a stream of its own could keep other users' replies), **analyst** may read,
# replay and analyse, and nothing else. The embedded server takes it as `config=`; in Docker, `docker compose
# --profile auth up -d` runs the same accounts.

# %%
from eskit.auth import least_privilege_config

config = least_privilege_config(writer_password="w-secret", analyst_password="a-secret", admin_password="adm-secret")
server = eskit.EmbeddedServer(config=config).start()

admin = await eskit.connect(server.url, user="admin", password="adm-secret")
await admin.event_store("ledger")  # the admin creates the store
await admin.close()

writer = await eskit.connect(server.url, user="writer", password="w-secret")
ledger = await writer.event_store("ledger")
await ledger.append("acct-1", [eskit.Event("opened"), eskit.Event("deposited", {"amount": 10})], expected_position=0)

analyst = await eskit.connect(server.url, user="analyst", password="a-secret")
ledger_for_analyst = await analyst.event_store("ledger")  # the stream exists: opening it needs no rights
print("analyst reads:", [e.type for e in await ledger_for_analyst.read("acct-1")])
print("analyst replays:", len([e async for e in ledger_for_analyst.replay()]), "events")

# %% [markdown]
# The analyst tries to append. The server refuses, and eskit turns the refusal into one line at once — not a
# five-second timeout:

# %%
try:
    await ledger_for_analyst.append("acct-1", [eskit.Event("withdrawn", {"amount": 1_000_000})])
except eskit.PermissionDeniedError as exc:
    print(exc)

try:
    await eskit.connect(server.url, user="analyst", password="guess")
except eskit.AuthenticationError as exc:
    print(type(exc).__name__, "- wrong credentials are refused at connect")

# %% [markdown]
# ### Refused: taking a projection's events, cutting the history
#
# A projection keeps its place in a *durable consumer* on the server (`projection-<name>`). Whoever may pull
# from that consumer and acknowledge could take events away from it: the projection would skip them and
# still report "caught up". So the analyst may create, pull from, acknowledge or delete **no** consumer at
# all — its replays and DataFrames read with Direct Get instead. The writer runs its own projection:

# %%
import json


class Balances(eskit.Projection):
    schema = "CREATE TABLE balances (account TEXT PRIMARY KEY, amount INTEGER NOT NULL)"

    @eskit.applies("deposited")
    def _deposited(self, db, event):
        db.execute("INSERT INTO balances VALUES (?, ?) ON CONFLICT (account) DO UPDATE SET amount = amount + ?",
                   (event.aggregate_id, event.data["amount"], event.data["amount"]))


balances = Balances(ledger)  # the writer's store: its consumer is projection-Balances
await balances.run_until_caught_up()

stream, consumer = ledger.stream, "projection-Balances"
attempts = {
    "pull its events": (f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}", b'{"batch": 10, "no_wait": true}'),
    "ack them": (f"$JS.ACK.{stream}.{consumer}.1.1.1.0.0", b"+ACK"),
    "delete it": (f"$JS.API.CONSUMER.DELETE.{stream}.{consumer}", b""),
}
for attempt, (subject, payload) in attempts.items():
    try:
        await analyst.wire.request(subject, payload)  # the raw JetStream API, as a thief would use it
    except eskit.PermissionDeniedError as exc:
        print(f"analyst, {attempt}: {exc}")

# %% [markdown]
# The writer appends, but may not shorten the history: not by a new limit (a `STREAM.UPDATE` with
# `max_msgs: 1` would keep one event), not by a purge. And the store itself refuses deletes of single events
# and purges — eskit creates stores with `deny_delete` and `deny_purge` unless you ask for
# `allow_delete_history=True`, and the server never turns them off again.

# %%
info = json.loads((await writer.wire.request(f"$JS.API.STREAM.INFO.{stream}", b"")).data)
cuts = {
    "keep only 1 event": (f"$JS.API.STREAM.UPDATE.{stream}", {**info["config"], "max_msgs": 1}),
    "purge": (f"$JS.API.STREAM.PURGE.{stream}", {}),
}
for attempt, (subject, body) in cuts.items():
    try:
        await writer.wire.request(subject, json.dumps(body).encode())
    except eskit.PermissionDeniedError as exc:
        print(f"writer, {attempt}: {exc}")

print("deny_delete:", info["config"]["deny_delete"], "· deny_purge:", info["config"]["deny_purge"])
print("events still stored:", len(await ledger.read("acct-1")))
print("balances:", balances.db.execute("SELECT * FROM balances").fetchall())
await balances.close(delete_consumer=True)

# %%
await analyst.close()
await writer.close()
server.stop()

# %% [markdown]
# ## Summary
#
# - On a cluster, stores are replicated (R3): an event is acknowledged once a majority stores it.
# - Killing the leader pauses writes for the election (seconds); appends then go on. Retrying with the
#   **same** events (stable ids) stores each exactly once — `append_through_failover` does it for you.
# - Reads use Direct Get on any replica: fast and available, not read-after-write coherent. A stale read
#   costs a `ConcurrencyError` and a retry, never a lost update.
# - Least privilege: give analysis code an account that cannot append; its attempts fail fast, in one line.
#
# ## One more exercise
#
# ### Exercise 7.3 · The audit
#
# The proof that a fault lost nothing is a count. Write `audit(acked, stored)` where `acked` maps event ids to
# the positions their acks named and `stored` is the replayed list of events. Return a dict with `lost`
# (acknowledged ids not stored), `duplicated` (ids stored more than once) and `moved` (stored ids whose
# position differs from their ack) — each a count. Events nobody acknowledged are none of these.

# %% [exercise]
def audit(acked: dict[str, int], stored: list[eskit.RecordedEvent]) -> dict[str, int]:
    ...  # your code here


# %% [solution]
from collections import Counter


def audit(acked: dict[str, int], stored: list[eskit.RecordedEvent]) -> dict[str, int]:
    counts = Counter(e.id for e in stored)
    return {
        "lost": len(set(acked) - set(counts)),
        "duplicated": sum(1 for n in counts.values() if n > 1),
        "moved": sum(1 for e in stored if e.id in acked and acked[e.id] != e.position),
    }


# %% [wrong] lost as a difference of counts
def audit(acked: dict[str, int], stored: list[eskit.RecordedEvent]) -> dict[str, int]:
    ids = [e.id for e in stored]
    return {
        "lost": len(acked) - len(set(ids)),
        "duplicated": sum(1 for i in set(ids) if ids.count(i) > 1),
        "moved": sum(1 for e in stored if e.id in acked and acked[e.id] != e.position),
    }


# %% [wrong] "duplicated" counts the extra copies, not the ids
def audit(acked: dict[str, int], stored: list[eskit.RecordedEvent]) -> dict[str, int]:
    ids = [e.id for e in stored]
    return {
        "lost": len(set(acked) - set(ids)),
        "duplicated": len(ids) - len(set(ids)),
        "moved": sum(1 for e in stored if e.id in acked and acked[e.id] != e.position),
    }


# %% [check]
from datetime import UTC, datetime


def recorded(event_id: str, position: int) -> eskit.RecordedEvent:
    return eskit.RecordedEvent(
        position=position, subject="p.a.t", aggregate_id="a", type="t", data={}, id=event_id,
        timestamp=datetime.now(UTC),
    )


def check_audit() -> None:
    eskit.course.require(audit({}, []), "audit returns nothing yet")
    clean = {"lost": 0, "duplicated": 0, "moved": 0}
    cases = [
        ("nothing wrong", {"x": 1, "y": 2}, [recorded("x", 1), recorded("y", 2)], clean),
        ("y acknowledged, never stored", {"x": 1, "y": 2}, [recorded("x", 1)], {**clean, "lost": 1}),
        ("x stored at the position its ack named, and again later", {"x": 1}, [recorded("x", 1), recorded("x", 3)],
         {**clean, "duplicated": 1, "moved": 1}),
        ("x stored three times: one id duplicated", {"x": 1}, [recorded("x", 1), recorded("x", 3), recorded("x", 4)],
         {**clean, "duplicated": 1, "moved": 2}),
        ("x stored at 2, its ack said 1", {"x": 1}, [recorded("x", 2)], {**clean, "moved": 1}),
        ("z stored, nobody acknowledged it", {"x": 1}, [recorded("x", 1), recorded("z", 2)], clean),
    ]  # fmt: skip
    for what, acks, events, expected in cases:
        got = audit(acks, events)
        assert got == expected, f"{what}: expected {expected}, got {got}"
    assert audit(acked, stored) == clean, f"on the run above: {audit(acked, stored)}, the counts above said {clean}"


await eskit.course.check(check_audit, ok="the audit counts right, and the fault lost nothing")

# %% [markdown]
# **That is the series.** You have stored, replayed, snapshotted, projected and analysed events, enforced
# rules across aggregates with DCB, and watched a cluster lose its leader without losing an event. From here:
# measure the seed's way against eskit's on your machine (`python -m eskit bench`), or open your own event
# log in lesson 06 (`ESKIT_EVENT_LOG=/path/to/log.csv python -m eskit lab`).
