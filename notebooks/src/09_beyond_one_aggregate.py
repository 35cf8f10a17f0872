# %% [markdown]
# # 09 · Beyond one aggregate
#
# **What you'll do:** close the books of an account that lives for years, and measure a load that stays
# flat however many years came before.
#
# **What you'll learn:**
# - closing the books: a long-lived aggregate kept in **periods**, each opened by one summary event that
#   carries the closing balance forward, written atomically with the closing of the last period;
#
# **What you need:** lessons 01–04. About 35 minutes.

# %%
import time

import matplotlib.pyplot as plt

import eskit
from eskit.periods import PeriodicAggregate, close_period, period_id

client = await eskit.connect()
books_name = eskit.course.unique("books")
books = await client.event_store(books_name)

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
# Two accounts get the same 300 deposits a year for ten years. `acc-whole` keeps everything in one aggregate;
# `acc-books` closes its books every year. After each year we load each account as it is now (the fastest of
# 5 loads, the one least disturbed by whatever else runs on this machine; your numbers differ from run to run):

# %%
# NBVAL_IGNORE_OUTPUT
PER_YEAR, YEARS = 300, list(range(2016, 2026))


async def load_ms(aggregate_id: str, repeat: int = 5) -> float:
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
ax.set_ylabel("load time (ms, fastest of 5)")
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
# aggregates (`books.replay(subjects=[f"{books.name}.*.deposited"])`, or a projection).

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
# - **Closing the books** keeps a long-lived aggregate short: one aggregate per period (`period_id("acc-1",
#   "2025")`), opened by a `period_opened` event that carries the state forward. `close_period(store, cls, id,
#   period, next_period)` appends the closing and the opening to two aggregates in one atomic batch, each
#   concurrency-checked; a closed period refuses new events. The load of the current period stays flat as the
#   years go by; carry forward what later periods decide with, not the history.

# %%
await client.delete_store(books_name)
await client.close()

# %% [markdown]
# **Next:** that is the end of the course. `docs/workshop.md` lists further reading for every lesson.
