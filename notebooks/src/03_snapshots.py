# %% [markdown]
# # 03 · Snapshots
#
# **What you'll do:** measure how load time grows with history length, switch snapshots on, measure again,
# look inside a snapshot, and break snapshots on purpose (old schema, garbage) to see loading survive. You
# choose a snapshot policy, find stale snapshots, and make a state JSON cannot hold snapshottable (exercises
# 3.1-3.3).
#
# **What you'll learn:**
# - a snapshot is a cache of an aggregate's state *at a position*: load = latest snapshot + the events after it;
# - when eskit writes one (`SnapshotPolicy`: every N events replayed, and/or a load slower than a threshold);
# - why every snapshot carries a **schema version**, and what happens to an old or corrupt one (ignored, never
#   a crash);
# - how to check that snapshot + tail equals a full replay — the test that keeps snapshots honest;
# - how to make state JSON cannot hold snapshottable (`snapshot()` / `restore()`).
#
# **What you need:** lesson 02. About 20 minutes; the measurement takes a few seconds.

# %%
import statistics
import time
import uuid
import warnings

import matplotlib.pyplot as plt

import eskit
from eskit.examples import Account

client = await eskit.connect()
plain_name, snap_name = eskit.course.unique("plain"), eskit.course.unique("snap")
plain = await client.event_store(plain_name)  # no snapshots
snapped = await client.event_store(snap_name, snapshots=eskit.SnapshotPolicy(every=100))

# %% [markdown]
# ## Histories of growing length
#
# `Account` (from `eskit.examples`) keeps a balance and a count: its state has the same size whatever the
# history length. We give accounts histories of 10 to 3,000 deposits, the same in both stores
# (appended 1,000 events per atomic batch).

# %%
LENGTHS = [10, 100, 1000, 2000, 3000]


async def fill(store: eskit.EventStore, account_id: str, n: int) -> None:
    position = 0
    for start in range(0, n, 1000):
        batch = [eskit.Event("deposited", {"amount": 1}) for _ in range(min(1000, n - start))]
        position = await store.append(account_id, batch, expected_position=position)


for n in LENGTHS:
    await fill(plain, f"acc-{n}", n)
    await fill(snapped, f"acc-{n}", n)
print("stored:", [(await plain.load(Account, f"acc-{n}")).version for n in LENGTHS])

# %% [markdown]
# The first load in the snapshot store replays everything and — when it replayed at least `every=100`
# events — writes a snapshot. Then a few more deposits arrive, so later loads read snapshot + a short tail:

# %%
for n in LENGTHS:
    await snapped.load(Account, f"acc-{n}")  # writes the snapshot (if n >= 100)
    await eskit.run_command(snapped, Account, f"acc-{n}", lambda a: a.deposit(1))
    await plain.append(f"acc-{n}", [eskit.Event("deposited", {"amount": 1})])
for n in LENGTHS:
    snapshot = await snapped.snapshots.get(Account, f"acc-{n}")
    print(f"acc-{n}: snapshot at version", snapshot.version if snapshot else "-")

# %% [markdown]
# ## Load time vs history length, measured now
#
# Each point is the median of 3 loads on this machine (so your numbers differ from run to run).

# %%
# NBVAL_IGNORE_OUTPUT
async def load_ms(store: eskit.EventStore, account_id: str, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await store.load(Account, account_id)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


without = [await load_ms(plain, f"acc-{n}") for n in LENGTHS]
with_snapshots = [await load_ms(snapped, f"acc-{n}") for n in LENGTHS]
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(LENGTHS, without, "o-", label="full replay")
ax.plot(LENGTHS, with_snapshots, "s-", label="snapshot + tail")
ax.set_xlabel("events in the account's history")
ax.set_ylabel("load time (ms, median of 3)")
ax.set_title("Loading an aggregate")
ax.legend()
plt.show()
print(f"3,000 events: full replay {without[-1]:.1f} ms, snapshot + tail {with_snapshots[-1]:.1f} ms")

# %% [markdown]
# Full replay grows linearly: every event is read, decoded and applied. With a snapshot, a load is two round
# trips — the snapshot (a KV get) and the tail (one batch Direct Get) — whatever the history length.
# Snapshots cost little here because `Account`'s state is small; a state that grows with the history (every item
# ever added) makes the snapshot itself grow.
#
# ## Your turn
#
# Each exercise has a cell to fill in (a stub) and a check cell below it that prints one line: `✗` and a hint
# while it is not right yet, `✓` when it is. Checks use small stores of their own: run them as often as you like.
#
# ### Exercise 3.1 · Choose a snapshot policy
#
# A busy account gets about 10 deposits between two loads. A snapshot costs a KV write, so you want one on at
# most every 5th load; and once the account has a snapshot, no load should replay more than 200 events after it.
# Set `policy` to an `eskit.SnapshotPolicy(every=...)` that meets both. (A load that replays at least `every`
# events writes a new snapshot.) The check replays 40 rounds of "10 deposits, one load" on a 1,000-event account.

# %% [exercise]
policy = ...  # your code here: eskit.SnapshotPolicy(every=...)

# %% [solution]
policy = eskit.SnapshotPolicy(every=100)

# %% [wrong] snapshots too often
policy = eskit.SnapshotPolicy(every=10)

# %% [wrong] snapshots too rarely
policy = eskit.SnapshotPolicy(every=1000)

# %% [check]
async def check_policy() -> None:
    eskit.course.require(policy, "set policy = eskit.SnapshotPolicy(every=...)")
    async with eskit.course.scratch(client, "policy", snapshots=policy) as store:
        await fill(store, "acc-1", 1000)
        await store.load(Account, "acc-1")
        rounds, written, longest = 40, 0, 0
        for _ in range(rounds):
            await store.append("acc-1", [eskit.Event("deposited", {"amount": 1}) for _ in range(10)])
            before = await store.snapshots.get(Account, "acc-1")
            account = await store.load(Account, "acc-1")
            after = await store.snapshots.get(Account, "acc-1")
            longest = max(longest, account.version - (before.version if before else 0))
            written += (after.version if after else 0) != (before.version if before else 0)
        assert longest <= 200, f"a load replayed {longest} events after the snapshot (at most 200): snapshot more often"
        assert written <= rounds // 5, (
            f"a snapshot was written on {written} of {rounds} loads (at most {rounds // 5}): snapshot less often")


await eskit.course.check(check_policy, ok="short tails, and a snapshot on at most every 5th load")

# %% [markdown]
# ## Inside a snapshot
#
# Snapshots live in a JetStream KV bucket next to the stream (`snapshots_<store>`), one key per aggregate.
# Each carries the aggregate's **schema version**, its version and position, and its state as JSON:

# %%
snapshot = await snapped.snapshots.get(Account, "acc-3000")
print("schema:", snapshot.schema, "| version:", snapshot.version, "| state:", snapshot.state)
account = await snapped.load(Account, "acc-3000")
print("loaded: version", account.version, "= snapshot", snapshot.version, "+ tail",
      account.version - snapshot.version)

# %% [markdown]
# Writes are *revision-checked*: eskit updates the key only if it still holds the revision it read, and never
# replaces a snapshot with one at an earlier position (two loads racing cannot move a snapshot backwards).
#
# ## Is snapshot + tail the same as a full replay?
#
# A snapshot is a cache, so it must never change the answer. `snapshots.check` compares the two; eskit's own
# tests run it on randomly generated histories.

# %%
for n in LENGTHS[1:]:
    check = await snapped.snapshots.check(Account, f"acc-{n}")
    print(f"acc-{n}:", "same state" if check.ok else f"DIFFERENT: {check.differences}")

# %% [markdown]
# ## When the state's shape changes: schema versions
#
# Say `Account` gains a field. Old snapshots lack it: restoring them would build a wrong state. Bump
# `snapshot_schema`, and old snapshots are ignored — with a warning — the account is replayed in full, and a
# snapshot of the new schema replaces the old one.

# %%
class AccountV2(Account):
    snapshot_schema = 2
    snapshot_name = Account.snapshot_name  # the same snapshots as Account

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.largest = 0

    @eskit.applies("deposited")
    def _deposited(self, data: dict) -> None:
        super()._deposited(data)
        self.largest = max(self.largest, data["amount"])


with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    v2 = await snapped.load(AccountV2, "acc-1000")
print("warned:", [str(w.message) for w in caught])
print("state:", v2.balance, v2.largest, "| new snapshot schema:", (await snapped.snapshots.get(AccountV2, "acc-1000")).schema)

# %% [markdown]
# ### Stale snapshots
#
# A schema bump covers a change you *know* about. Now suppose a handler had a bug — say it counted every deposit
# twice — and snapshots were written while it ran. You fix the handler, but not `snapshot_schema`: the old
# snapshots still hold the buggy balance, load trusts them, and only accounts without a snapshot come out right.
# Such a snapshot is *stale*: snapshot + tail no longer equals a full replay, and `snapshots.check` finds it.

# %%
class BuggyAccount(Account):
    snapshot_name = Account.snapshot_name  # writes Account's snapshots

    @eskit.applies("deposited")
    def _deposited(self, data: dict) -> None:
        self.balance += 2 * data["amount"]  # the bug
        self.deposits += 1


await fill(snapped, "acc-bug", 200)
await snapped.load(BuggyAccount, "acc-bug")  # a snapshot of the wrong balance
fixed = await snapped.load(Account, "acc-bug")  # the fixed code, the stale snapshot
print("balance after 200 deposits of 1:", fixed.balance)
print("check:", await snapped.snapshots.check(Account, "acc-bug"))

# %% [markdown]
# ### Exercise 3.2 · Find the stale snapshots
#
# Write `stale_snapshots(store, ids)`: the set of account ids whose snapshot disagrees with a full replay
# (`Account`). An account without any snapshot is not stale: it is simply replayed in full. (Look at what
# `store.snapshots.check(Account, id)` returns.)

# %% [exercise]
async def stale_snapshots(store: eskit.EventStore, ids: list[str]) -> set[str]:
    ...  # your code here


# %% [solution]
async def stale_snapshots(store: eskit.EventStore, ids: list[str]) -> set[str]:
    stale = set()
    for account_id in ids:
        result = await store.snapshots.check(Account, account_id)
        if result.snapshot_position is not None and not result.ok:
            stale.add(account_id)
    return stale


# %% [wrong] every account whose check is not ok, with or without a snapshot
async def stale_snapshots(store: eskit.EventStore, ids: list[str]) -> set[str]:
    return {i for i in ids if not (await store.snapshots.check(Account, i)).ok}


# %% [wrong] a snapshot behind the stream is taken for a stale one
async def stale_snapshots(store: eskit.EventStore, ids: list[str]) -> set[str]:
    stale = set()
    for account_id in ids:
        snapshot = await store.snapshots.get(Account, account_id)
        if snapshot is not None and snapshot.version != len(await store.read(account_id)):
            stale.add(account_id)
    return stale


# %% [check]
async def check_stale() -> None:
    async with eskit.course.scratch(client, "stale", snapshots=eskit.SnapshotPolicy(every=100)) as store:
        writers = {"acc-1": Account, "acc-2": BuggyAccount, "acc-3": Account, "acc-4": BuggyAccount}
        for account_id, writer in writers.items():
            await fill(store, account_id, 120)
            await store.load(writer, account_id)  # the snapshot, right or wrong
            await store.append(account_id, [eskit.Event("deposited", {"amount": 1}) for _ in range(3)])  # a tail
        await fill(store, "acc-5", 20)  # too short for a snapshot
        ids = ["acc-1", "acc-2", "acc-3", "acc-4", "acc-5"]
        found = await stale_snapshots(store, ids)
        eskit.course.require(found, "stale_snapshots returns nothing yet")
        hints = {
            "acc-5": "acc-5 has no snapshot at all, so it is not stale (check(...).snapshot_position is None)",
            "acc-1": "acc-1's snapshot is right, it just has a tail of newer events: compare states, not versions",
        }
        for account_id, hint in hints.items():
            assert account_id not in found, hint
        assert set(found) == {"acc-2", "acc-4"}, f"acc-2 and acc-4 have stale snapshots, you found {sorted(found)}"


await eskit.course.check(check_stale, ok="stale snapshots found; missing ones and tails are not stale")

# %% [markdown]
# When you fix a handler, bump `snapshot_schema` too: every snapshot written by the old code is then ignored and
# rewritten. `snapshots.check` over a sample of aggregates, after a deploy, is the test that catches a
# forgotten bump.

# %% [markdown]
# ## A corrupt snapshot is ignored, never a crash

# %%
from eskit.snapshots import key_for

kv = await client.js.key_value(snapped.snapshots.bucket)
await kv.put(key_for(Account, "acc-2000"), b"\x00 not json")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    account = await snapped.load(Account, "acc-2000")
print("warned:", [str(w.message).split(" (")[0] for w in caught])
replacement = await snapped.snapshots.get(Account, "acc-2000")
print("balance:", account.balance, "| replaced by a snapshot at version", replacement.version)
print("snapshot + tail == full replay:", (await snapped.snapshots.check(Account, "acc-2000")).ok)

# %% [markdown]
# ### Exercise 3.3 · A state JSON cannot hold
#
# `Tags` keeps a `set`, which JSON cannot hold, so writing its snapshot fails:

# %%
class Tags(eskit.Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.tags: set[str] = set()

    @eskit.applies("tagged")
    def _tagged(self, data: dict) -> None:
        self.tags.add(data["tag"])


await snapped.append("post-1", [eskit.Event("tagged", {"tag": f"t{i % 30}"}) for i in range(150)])
try:
    await snapped.load(Tags, "post-1")
except eskit.EncodeError as exc:
    print(type(exc).__name__, "-", str(exc).split(" (")[0])

# %% [markdown]
# Write `SnapshottableTags(Tags)` with `snapshot()` (state → JSON-ready dict) and `restore(state)` (the
# reverse), so that a loaded aggregate still holds a `set`.

# %% [exercise]
class SnapshottableTags(Tags):
    snapshot_name = "Tags"

    def snapshot(self) -> dict:
        raise NotImplementedError("write snapshot() and restore()")

    def restore(self, state: dict) -> None:
        raise NotImplementedError("write snapshot() and restore()")


# %% [solution]
class SnapshottableTags(Tags):
    snapshot_name = "Tags"

    def snapshot(self) -> dict:
        return {"tags": sorted(self.tags)}

    def restore(self, state: dict) -> None:
        self.tags = set(state["tags"])


# %% [wrong] restore keeps the list
class SnapshottableTags(Tags):
    snapshot_name = "Tags"

    def snapshot(self) -> dict:
        return {"tags": sorted(self.tags)}

    def restore(self, state: dict) -> None:
        self.tags = state["tags"]


# %% [check]
async def check_tags() -> None:
    async with eskit.course.scratch(client, "tags", snapshots=eskit.SnapshotPolicy(every=100)) as store:
        await store.append("post-1", [eskit.Event("tagged", {"tag": f"t{i % 30}"}) for i in range(150)])
        await store.load(SnapshottableTags, "post-1")  # writes the snapshot
        await store.append("post-1", [eskit.Event("tagged", {"tag": "new"})])
        try:
            tags = await store.load(SnapshottableTags, "post-1")  # snapshot + tail
        except AttributeError as exc:
            raise eskit.course.Wrong(f"loading snapshot + tail failed ({exc}): restore() must give back a set") from None
        snapshot = await store.snapshots.get(SnapshottableTags, "post-1")
        assert snapshot is not None and snapshot.version == 150, "no snapshot was written: does snapshot() return a dict?"
        assert isinstance(tags.tags, set), f"after a load from the snapshot, tags is a {type(tags.tags).__name__}, not a set"
        assert len(tags.tags) == 31, f"expected 31 tags, got {len(tags.tags)}"
        assert (await store.snapshots.check(SnapshottableTags, "post-1")).ok, "snapshot + tail != full replay"


await eskit.course.check(check_tags, ok="your snapshot holds a set, and snapshot + tail == full replay")

# %% [markdown]
# ## Summary
#
# - Full replay costs time proportional to the history; snapshot + tail stays flat.
# - `client.event_store(name, snapshots=eskit.SnapshotPolicy(every=100, slower_than=None))` turns them on:
#   a load that replayed `every` events (or took longer than `slower_than` seconds) writes one.
# - Snapshots are a cache: they carry a schema version and a position; an old-schema or undecodable snapshot
#   is ignored with a `SnapshotWarning` and replaced; an older one never overwrites a newer one.
# - `snapshots.check(cls, id)` proves snapshot + tail == full replay, and finds stale snapshots (written by
#   code that has changed since, without a schema bump).
# - Choose `every` from your load pattern: it bounds the tail a load replays, and sets how often you pay a write.
# - Default state = the aggregate's public attributes as JSON; override `snapshot()` / `restore()` for
#   anything else.

# %%
await client.delete_store(plain_name)
await client.delete_store(snap_name)  # its snapshot bucket too
await client.close()

# %% [markdown]
# **Next:** `04_projections.ipynb` — read models built from the stream.
