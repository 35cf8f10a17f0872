"""A projection fed by several stores: one read model, one position per store, exactly once in effect.

>>> class Fulfilment(MultiStreamProjection):
...     schema = "CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT, paid INTEGER NOT NULL DEFAULT 0)"
...
...     @applies("placed")                      # from the orders store
...     def _placed(self, db, event):
...         db.execute("INSERT INTO orders (id, status) VALUES (?, 'placed') "
...                    "ON CONFLICT (id) DO UPDATE SET status = 'placed'", (event.aggregate_id,))
...
...     @applies("received")                    # from the payments store
...     def _received(self, db, event):
...         db.execute("INSERT INTO orders (id, paid) VALUES (?, ?) "
...                    "ON CONFLICT (id) DO UPDATE SET paid = paid + excluded.paid",
...                    (event.data["order"], event.data["amount"]))
>>> view = Fulfilment({"orders": orders, "payments": payments}, db="fulfilment.db")   # doctest: +SKIP
>>> await view.run_until_caught_up()         # or view.start() ... await view.stop()    # doctest: +SKIP
>>> view.positions                                                                     # doctest: +SKIP
{'orders': 1200, 'payments': 310}

How it works: the machinery of :class:`~eskit.projections.Projection`, once per store. Each store gets a
*lane*: a durable consumer (``projection-<name>`` on that store's stream), batches applied in one SQLite
transaction that also moves **that store's position** (a row ``<name>:<store>`` in the positions table),
acknowledged after the commit. All lanes write to the same database, so a view joins what the stores say.
After a crash each lane restarts at its own committed position: no event applied twice, none lost, per
store. Dead letters, upcasters, gap recovery and lag work per store as for a single-store projection.
:meth:`MultiStreamProjection.rebuild` builds a new database from position 0 of every store beside the live
one and switches to it when all lanes have caught up (blue/green), in one step.

What a handler may assume, and what not:

- it sees the events of **one store in that store's order** (positions only grow), each applied once;
- it does **not** see a global order across stores: a payment may arrive before the order it pays, and
  two runs (or a rebuild) may interleave the stores differently. Write handlers that commute across stores:
  upserts (``INSERT ... ON CONFLICT``), counters, "set if newer"; never "the order must exist already";
- ``event.position`` is a position in *its* store; which store: :meth:`MultiStreamProjection.store_of`
  (the label you gave, e.g. ``"payments"``), and ``event.subject`` starts with the store's name;
- a handler for a type handles that type from every store that has it; tell them apart with ``store_of``.

Lanes share one SQLite connection in one asyncio loop; a batch's transaction runs without awaiting, so two
lanes never interleave inside a transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ProjectionError, ValidationError
from ..events import RecordedEvent, check_token
from .applying import Counts, ProjectionStats, appliers_of
from .deadletter import ParkedEvent
from .projection import Projection
from .readmodel import ReadModel

if TYPE_CHECKING:
    from ..store import EventStore

__all__ = ["MultiStreamProjection"]


class _Lane(Projection):
    """One store's part of a :class:`MultiStreamProjection`: a projection on a lane of the shared model."""

    def __init__(self, parent: MultiStreamProjection, store: EventStore, **options: Any) -> None:
        self._parent = parent
        super().__init__(store, name=parent.name, schema="", **options)  # its own model: an empty placeholder
        self._model.close()
        self._model = parent._model.lane(f"{self.name}:{store.name}")  # a part of the parent's database

    def __getattr__(self, attr: str) -> Any:  # the handlers (only they) are the parent's methods
        parent = self.__dict__.get("_parent")
        if parent is not None and attr in type(parent)._appliers.values():
            return getattr(parent, attr)
        raise AttributeError(attr)


class MultiStreamProjection:
    """Base class of read models fed by several stores (see the module docstring for an example).

    ``MultiStreamProjection(stores, db=..., name=...)``: ``stores`` is a mapping of labels to event stores
    (``{"orders": orders, "payments": payments}``) or a list of stores (labelled by their names). The other
    options are :class:`~eskit.projections.Projection`'s and apply to every store.
    """

    name: str = ""
    schema: ClassVar[str] = ""
    _appliers: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._appliers = appliers_of(cls, cls._appliers)

    def __init__(
        self, stores: Mapping[str, EventStore] | Sequence[EventStore], *, db: str | os.PathLike[str] = ":memory:",
        name: str | None = None, schema: str | None = None, **options: Any,
    ) -> None:  # fmt: skip
        from ..store import EventStore

        self.name = check_token(name or type(self).name or type(self).__name__, "projection name")
        if isinstance(stores, Mapping):
            labelled = dict(stores)
        elif isinstance(stores, Sequence) and not isinstance(stores, str):
            labelled = {getattr(s, "name", repr(s)): s for s in stores}
        else:
            labelled = {}
        if not labelled or any(not isinstance(s, EventStore) for s in labelled.values()):
            raise ValidationError(
                f'{type(self).__name__} takes the stores to read, e.g. {{"orders": orders, "payments": payments}}, '
                f"got {stores!r}"
            )
        if len({s.stream for s in labelled.values()}) != len(labelled):
            raise ValidationError(f"{type(self).__name__}: each store once, got {list(labelled)}")
        if not self._appliers:
            raise ProjectionError(
                f'{type(self).__name__} handles no event type; add methods marked @applies("placed")'
            )
        if not isinstance(db, str | os.PathLike) or not db:
            raise ValidationError(f"db takes a file path or ':memory:', got {db!r}")
        self._model = ReadModel(db, self.name, schema if schema is not None else type(self).schema)
        self._labels = {s.name: label for label, s in labelled.items()}
        lane = type(type(self).__name__, (_Lane,), {"_appliers": dict(self._appliers)})
        try:
            self._lanes: dict[str, _Lane] = {label: lane(self, s, **options) for label, s in labelled.items()}
        except BaseException:
            self._model.close()
            raise

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} positions={self.positions} lag={self.lag}>"

    # -- reading -------------------------------------------------------------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        """The live read model, for queries (ask for it at each query: a rebuild switches it)."""
        return self._model.db

    @property
    def stores(self) -> dict[str, EventStore]:
        return {label: lane.store for label, lane in self._lanes.items()}

    @property
    def positions(self) -> dict[str, int]:
        """The position reached in each store, by label: ``{"orders": 1200, "payments": 310}``."""
        return {label: lane.position for label, lane in self._lanes.items()}

    @property
    def lag(self) -> int | None:
        """Events not yet delivered, summed over the stores (None until every store has been asked)."""
        lags = [lane.lag for lane in self._lanes.values()]
        return None if any(lag is None for lag in lags) else sum(lag or 0 for lag in lags)

    @property
    def stats(self) -> dict[str, ProjectionStats]:
        """Per store (by label): what was applied, skipped, parked, the lag, the last error."""
        return {label: lane.stats for label, lane in self._lanes.items()}

    @property
    def running(self) -> bool:
        return any(lane.running for lane in self._lanes.values())

    def store_of(self, event: RecordedEvent) -> str:
        """The label of the store ``event`` came from (in a handler: ``if self.store_of(event) == "payments"``)."""
        return self._labels.get(event.subject.split(".", 1)[0], "")

    def _lane(self, store: str | EventStore) -> _Lane:
        label = store if isinstance(store, str) else self._labels.get(getattr(store, "name", ""), "")
        if label not in self._lanes:
            raise ValidationError(f"{self.name} reads {list(self._lanes)}, not {store!r}")
        return self._lanes[label]

    async def wait_for(self, store: str | EventStore, position: int, *, timeout: float = 10.0) -> None:
        """Wait until the read model has applied ``store``'s events up to ``position`` (what its ``append``
        returned): ``await view.wait_for("payments", pos)``."""
        await self._lane(store).wait_for(position, timeout=timeout)

    async def fetch_lag(self) -> int:
        """Ask the server: events not yet applied, summed over the stores."""
        return sum([await lane.fetch_lag() for lane in self._lanes.values()])

    # -- running -------------------------------------------------------------------------------------------

    async def step(self, *, wait: float = 0.0, ack: bool = True) -> int:
        """One batch from each store (see :meth:`Projection.step`); returns the handled events they held."""
        return sum([await lane.step(wait=wait, ack=ack) for lane in self._lanes.values()])

    async def run_until_caught_up(self, *, timeout: float = 60.0) -> int:
        """Apply everything stored so far in every store; return how many handled events were delivered."""
        done = await asyncio.gather(*(lane.run_until_caught_up(timeout=timeout) for lane in self._lanes.values()),
                                    return_exceptions=True)  # every lane has stopped before an error is raised
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
        return sum(d for d in done if isinstance(d, int))

    def start(self) -> list[asyncio.Task[None]]:
        """Run every store's lane in the background; :meth:`stop` ends them."""
        if self.running:
            raise ProjectionError(f"projection {self.name} is already running; stop it first")
        return [lane.start() for lane in self._lanes.values()]

    async def stop(self) -> None:
        await asyncio.gather(*(lane.stop() for lane in self._lanes.values()))

    async def close(self, *, delete_consumer: bool = False) -> None:
        """Stop, close the read model, and (if asked) delete the durable consumers on the servers."""
        try:
            for lane in self._lanes.values():
                await lane.close(delete_consumer=delete_consumer)
        finally:
            self._model.close()

    # -- rebuilding and dead letters -----------------------------------------------------------------------

    async def rebuild(self) -> int:
        """Build a new read model from position 0 of every store beside the live one, then switch to it when
        every store has caught up, in one step (blue/green). Returns the number of events applied."""
        new = self._model.sibling()
        lanes = {label: new.lane(lane._model.key) for label, lane in self._lanes.items()}
        counts = {label: Counts() for label in self._lanes}
        cutoffs: dict[str, int] = {}
        try:
            for label, lane in self._lanes.items():
                await lane._replay_into(lanes[label], counts[label])
            async with contextlib.AsyncExitStack() as held:  # the switch waits for every lane's batch
                for lane in self._lanes.values():
                    await held.enter_async_context(lane._lock)
                for label, lane in self._lanes.items():
                    await lane._replay_into(lanes[label], counts[label])  # what was appended meanwhile
                    cutoffs[label] = lanes[label].position
                self._model.replace(new)
                for lane in self._lanes.values():
                    lane._model.follow(self._model)
        except BaseException:
            new.close()
            if not new.in_memory:
                Path(new.path).unlink(missing_ok=True)
            raise
        for label, lane in self._lanes.items():
            for parked in await lane.parked():
                if parked.position <= cutoffs[label] and parked.position not in counts[label].parked_positions:
                    await lane.dead_letters.remove(parked)
        return sum(c.applied for c in counts.values())

    async def parked(self) -> dict[str, list[ParkedEvent]]:
        """The events this projection parked, per store (by label), oldest first."""
        return {label: await lane.parked() for label, lane in self._lanes.items()}

    async def replay_parked(self) -> int:
        """Apply the parked events again (after fixing the handler); see :meth:`Projection.replay_parked`."""
        return sum([await lane.replay_parked() for lane in self._lanes.values()])
