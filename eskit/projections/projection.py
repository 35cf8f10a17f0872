"""Projections: read models kept up to date from the stream, exactly once in effect, rebuildable, observable.

One handler per event type, declared with :func:`~eskit.aggregate.applies` (as on aggregates); a handler gets
the SQLite connection and the :class:`~eskit.events.RecordedEvent`:

>>> class OrdersView(Projection):
...     schema = "CREATE TABLE orders_view (id TEXT PRIMARY KEY, status TEXT, tracking TEXT)"
...
...     @applies("created")
...     def _created(self, db, event):
...         db.execute("INSERT INTO orders_view (id, status) VALUES (?, 'pending')", (event.aggregate_id,))
...
...     @applies("shipped")
...     def _shipped(self, db, event):
...         db.execute("UPDATE orders_view SET status = 'shipped', tracking = ? WHERE id = ?",
...                    (event.data["tracking"], event.aggregate_id))
>>> view = OrdersView(orders, db="orders_view.db")       # or ":memory:" (the default)   # doctest: +SKIP
>>> await view.run_until_caught_up()                     # a script or a test            # doctest: +SKIP
>>> view.start(); ...; await view.stop()                 # a notebook: in the background # doctest: +SKIP
>>> pandas.read_sql("SELECT * FROM orders_view", view.db)                               # doctest: +SKIP

How it stays exactly once in effect: a durable pull consumer (``projection-<name>``) delivers the store's
events in batches; each batch is applied in **one SQLite transaction that also stores the position**
(the last stream sequence applied), and acknowledged only after the commit (one ack settles the batch: ack
policy "all"). The consumer reads the whole store with one filter and hands on only the handled types
(per-type filters cost nats-server a search of its subject index per event, which grows with the number of
aggregates: see :mod:`eskit.projections.consumer`); the position moves past the other events too, so ``wait_for``
works for any appended event, and ``lag`` counts all events not yet delivered. An event at or below the
position (a redelivery, or a replay after a crash between commit and ack) is skipped. On start the consumer is
recreated at the read model's position, so a crash never lets newer events overtake unacknowledged ones.
While catching up, the next batch is fetched while the current one is applied. Run one instance per name:
a second one would reposition the same consumer under the first.

Gaps it did not cause: the consumer delivers every position of the store in order, so a batch that skips
positions after the read model's (someone else with the right pulled and acked them from this consumer, or
changed its filter), or a consumer that says it delivered beyond the read model when nothing is pending
(:meth:`Projection.run_until_caught_up` asks; a running projection notices at its next delivery), means
events this projection never saw. It reads the missing positions itself with Direct Get and applies them in
order with the batch (``stats.recovered`` counts them); positions that hold nothing (events deleted from a
store that allows it) are passed over. A consumer whose filter someone else changed (so nothing more matches
and nothing is pending) or that someone paused is recreated at the read model's position when
:meth:`Projection.run_until_caught_up` asks the server for its progress, or a running one has been idle for
``IDLE_CHECK`` seconds.

With upcasters on the store (``client.event_store(name, upcasters=...)``, :mod:`eskit.upcasting`) handlers get
the upcast events; an event whose upcaster raises is parked at once, like an undecodable one.

A handler that keeps raising (``max_attempts``) or an undecodable event is parked in the dead-letter stream
(:mod:`eskit.projections.deadletter`) and the projection goes on. :meth:`Projection.rebuild` builds a new read
model from position 0 beside the live one and switches to it when it has caught up (blue/green).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import sqlite3
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import nats

from ..aggregate import applies
from ..errors import EskitError, PermissionDeniedError, ProjectionError, ValidationError
from ..events import RecordedEvent, check_token
from .applying import Applier, Counts, ProjectionStats, appliers_of
from .consumer import Batch, Progress, PullConsumer, missing_events, missing_ranges
from .deadletter import DeadLetters, ParkedEvent
from .readmodel import ReadModel

IDLE_CHECK = 5.0  # seconds: how often an idle running projection asks whether its consumer was changed

if TYPE_CHECKING:
    from ..store import EventStore

__all__ = ["Projection", "ProjectionStats", "applies"]


class Projection:
    """Base class of projections (see the module docstring for a full example).

    Class attributes: ``schema`` (SQL that creates the read model's tables), ``name`` (default: the class
    name; the consumer is ``projection-<name>``). Both can be given per instance too.
    """

    name: str = ""
    schema: ClassVar[str] = ""
    _appliers: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._appliers = appliers_of(cls, cls._appliers)

    def __init__(
        self, store: EventStore, *, db: str | os.PathLike[str] = ":memory:", name: str | None = None,
        schema: str | None = None, batch_size: int = 1000, max_wait: float = 0.5, max_attempts: int = 3,
        retry_delay: float = 0.05, ack_wait: float = 30.0,
    ) -> None:  # fmt: skip
        self.name = check_token(name or type(self).name or type(self).__name__, "projection name")
        if not self._appliers:
            raise ProjectionError(
                f'{type(self).__name__} handles no event type; add methods marked @applies("created")'
            )
        if not isinstance(db, str | os.PathLike) or not db:  # db=5 made a database file named '5'
            raise ValidationError(f"db takes a file path or ':memory:', got {db!r}")
        numbers: list[tuple[str, object, int, tuple[type, ...]]] = [
            ("batch_size", batch_size, 1, (int,)), ("max_attempts", max_attempts, 1, (int,)),
            ("max_wait", max_wait, 0, (int, float)), ("retry_delay", retry_delay, 0, (int, float)),
            ("ack_wait", ack_wait, 0, (int, float)),
        ]  # fmt: skip
        for what, value, low, kinds in numbers:
            if type(value) not in kinds or not low <= value < 10**9:  # type: ignore[operator]  # a str failed later
                raise ValidationError(f"{what} takes a number from {low}, got {value!r}")
        self.store = store
        self.batch_size, self.max_wait = batch_size, max_wait
        handlers = {t: (f"{type(self).__name__}.{a}", getattr(self, a)) for t, a in self._appliers.items()}
        self._model = ReadModel(db, self.name, schema if schema is not None else type(self).schema)
        types = frozenset(handlers) if store.upcasters is None else store.upcasters.sources(handlers)  # renamed too
        self._consumer = PullConsumer(store.client, store.stream, f"projection-{self.name}", [f"{store.name}.>"],
                                      max_ack_pending=2 * batch_size, ack_wait=ack_wait,
                                      types=types)  # fmt: skip
        self.dead_letters = DeadLetters(store.client, store.name)
        self._applier = Applier(self.name, handlers, self.dead_letters, max_attempts=max_attempts,
                                retry_delay=retry_delay)  # fmt: skip
        self._counts = Counts()
        self._lag: int | None = None
        self._ready = False  # the consumer is positioned at the read model's position
        self._prefetch: Awaitable[Batch] | None = None  # the next batch, asked for while applying one
        self._lock = asyncio.Lock()  # one batch at a time; a rebuild's switch waits for it
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._error: str | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} position={self.position} lag={self._lag}>"

    # -- reading -------------------------------------------------------------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        """The live read model, for queries: ``pandas.read_sql(sql, view.db)``. Ask for it at each query:
        after a rebuild it is another connection."""
        return self._model.db

    @property
    def position(self) -> int:
        return self._model.position

    @property
    def lag(self) -> int | None:
        """Events not yet delivered to this projection, as the server last said (updated with every batch)."""
        return self._lag

    @property
    def stats(self) -> ProjectionStats:
        c = self._counts
        return ProjectionStats(self.name, self.position, self._lag, c.applied, c.skipped, c.parked,
                               c.redelivered, self.running, self._error, c.recovered)  # fmt: skip

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def wait_for(self, position: int, *, timeout: float = 10.0) -> None:
        """Wait until the read model has reached ``position`` (e.g. the one ``append`` returned)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.position < position:
            if loop.time() > deadline or not self.running:
                state = "running" if self.running else "not running: start() it"
                raise ProjectionError(
                    f"projection {self.name} is at {self.position}, not {position} ({state})"
                )
            await asyncio.sleep(0.01)

    async def fetch_lag(self) -> int:
        """Ask the server: events not yet delivered plus delivered but not acknowledged (not applied yet)."""
        await self._consumer.flush()
        pending, unacked = await self._consumer.info()
        self._lag = pending
        return pending + unacked

    # -- running -------------------------------------------------------------------------------------------

    async def step(self, *, wait: float = 0.0, ack: bool = True) -> int:
        """Fetch one batch (waiting up to ``wait`` s for the first event), apply it in one transaction that
        also stores the position, commit, then ack. Returns how many events of handled types it held.

        ``ack=False`` leaves the batch unacknowledged, as if the process died between commit and ack: the
        server redelivers it after ``ack_wait``, and the projection skips it.
        """
        return len((await self._step(wait=wait, ack=ack)).events)

    async def _step(self, *, wait: float, ack: bool) -> Batch:
        async with self._lock:
            if not self._ready:
                self._drop_prefetch()
                await self._consumer.create(after=self._model.position)
                self._ready = True
            settled = False
            try:
                prefetched, self._prefetch = self._prefetch, None
                batch = await (prefetched or await self._consumer.request(self.batch_size, wait=wait))
                if batch.delivered == self.batch_size:  # catching up: the server prepares the next batch
                    self._prefetch = await self._consumer.request(self.batch_size, wait=0)  # as we apply this
                if batch.pending is not None or not batch.delivered:
                    self._lag = batch.pending or 0  # set before the position moves: wait_for() sees both
                self._counts.redelivered += batch.redelivered
                events = batch.events
                gaps = missing_ranges(self._model.position, batch.positions)
                if gaps:  # positions someone else took from this consumer: read them ourselves
                    events = await self._with_missing(events, gaps)
                if self.store.privacy is not None:  # personal fields decrypted, or FORGOTTEN (eskit.privacy)
                    await self.store.privacy.reveal_events(events)
                if self.store.upcasters is not None:  # an upcaster that raises: the event is parked
                    events = self.store.upcasters._apply_fresh(events, strict=False)
                await self._applier.apply(self._model, events, self._counts, through=batch.last_position)
                if ack:
                    await self._consumer.ack(batch)
                settled = True
            finally:
                if not settled:  # delivered but not acknowledged: reposition before fetching again
                    self._ready = False
            return batch

    async def _with_missing(self, events: list[RecordedEvent], gaps: list[tuple[int, int]]) -> list[RecordedEvent]:
        """``events`` with the handled events stored in the ``gaps`` (first, last), read by Direct Get, all in
        stream order. Positions that hold nothing (deleted events) are passed over."""
        merged = {e.position: e for e in events}
        for event in await missing_events(self.store.reader, gaps, merged, self._applier.handlers):
            merged[event.position] = event
            self._counts.recovered += 1
        return [merged[p] for p in sorted(merged)]

    async def _recover_tail(self, progress: Progress) -> bool:
        """Nothing pending, nothing unacknowledged, yet the consumer delivered beyond the read model: apply
        the events up to there (they went to someone else). True if there was such a tail."""
        position = self._model.position
        if progress.pending or progress.unacked or progress.delivered <= position:
            return False
        async with self._lock:
            events = await self._with_missing([], [(position + 1, progress.delivered)])
            await self._applier.apply(self._model, events, self._counts, through=progress.delivered)
        return True

    def _drop_prefetch(self) -> None:
        if inspect.iscoroutine(self._prefetch):
            self._prefetch.close()  # never applied nor acked: gone when the consumer is recreated
        self._prefetch = None

    async def run_until_caught_up(self, *, timeout: float = 60.0) -> int:
        """Apply everything stored so far (and wait for pending redeliveries); return how many events of
        handled types were delivered."""
        delivered = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            batch = await self._step(wait=0.0, ack=True)
            delivered += len(batch.events)
            if batch.delivered and self._lag:
                continue  # more is waiting
            await self._consumer.flush()  # the acks reach the server before we ask it
            progress = await self._consumer.progress()
            pending, unacked = progress.pending, progress.unacked
            self._lag = pending
            if progress.changed:  # someone else changed the consumer (filter, pause): it would miss events
                self._ready = False  # recreated at the read model's position by the next step
                continue
            if await self._recover_tail(progress):
                continue  # and ask again: more may have come meanwhile
            if pending == 0 and unacked == 0:
                return delivered
            if not batch.delivered and unacked:  # only redeliveries are due (after ack_wait): wait for them
                wait = min(self.max_wait, max(0.01, deadline - loop.time()))
                delivered += len((await self._step(wait=wait, ack=True)).events)
        raise ProjectionError(
            f"projection {self.name} did not catch up within {timeout:.0f}s (lag {self._lag})"
        )

    async def run(self) -> None:
        """Apply events as they arrive until :meth:`stop`; server hiccups are retried, not fatal; an account
        that may not run projections (:class:`~eskit.errors.PermissionDeniedError`) ends it."""
        self._stopping, self._error = False, None
        loop = asyncio.get_running_loop()
        checked = loop.time()
        while not self._stopping:
            try:
                if not await self.step(wait=self.max_wait) and loop.time() - checked >= IDLE_CHECK:
                    checked = loop.time()  # idle: is it idle because someone refiltered or paused the consumer?
                    if (await self._consumer.progress()).changed:
                        self._ready = False  # recreated at the read model's position by the next step
            except PermissionDeniedError as exc:  # no retry will grant the permission
                self._error = f"{type(exc).__name__}: {exc}"
                raise
            except (EskitError, OSError, TimeoutError, sqlite3.OperationalError, nats.errors.Error) as exc:
                # a server hiccup (restart, leader election, no responders) or a locked database: retry
                self._error = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(min(1.0, self.max_wait))
            except Exception as exc:
                self._error = f"{type(exc).__name__}: {exc}"
                raise

    def start(self) -> asyncio.Task[None]:
        """Run in the background (e.g. in a notebook); :meth:`stop` ends it."""
        if self.running:
            raise ProjectionError(f"projection {self.name} is already running; stop it first")
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"projection-{self.name}")
        return self._task

    async def stop(self) -> None:
        """Stop the background task after its current batch (at most ``max_wait`` s for an idle one)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        try:
            await asyncio.wait_for(asyncio.shield(task), self.max_wait + 10.0)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self, *, delete_consumer: bool = False) -> None:
        """Stop, close the read model, and (if asked) delete the durable consumer on the server."""
        await self.stop()
        self._drop_prefetch()
        await self._consumer.close()
        if delete_consumer:
            await self._consumer.delete()
        self._model.close()

    # -- rebuilding and dead letters -----------------------------------------------------------------------

    async def rebuild(self) -> int:
        """Build a new read model from position 0 beside the live one, then switch to it (blue/green).

        The live model keeps serving (and the background task keeps applying) until the switch; the switch
        happens between two batches. Parked copies of events the new model applied fine are removed.
        Returns the number of events the new model applied.
        """
        new = self._model.sibling()
        counts = Counts()
        try:
            await self._replay_into(new, counts)
            async with self._lock:
                await self._replay_into(new, counts)  # what was appended meanwhile
                cutoff = new.position  # events after it are the live run's: their dead letters are theirs
                self._model.replace(new)
        except BaseException:
            new.close()
            if not new.in_memory:
                Path(new.path).unlink(missing_ok=True)
            raise
        for parked in await self.parked():
            if parked.position <= cutoff and parked.position not in counts.parked_positions:
                await self.dead_letters.remove(parked)
        return counts.applied

    async def _replay_into(self, model: ReadModel, counts: Counts) -> None:
        batch: list[RecordedEvent] = []
        seen, last = 0, 0
        replay = self.store._replay_store(model.position, None, strict=False)  # the whole store: see _consumer
        async for event in replay:
            seen, last = seen + 1, event.position
            if event.type in self._applier.handlers:
                batch.append(event)
            if seen >= self.batch_size:
                await self._applier.apply(model, batch, counts, through=last)
                batch, seen = [], 0
        if seen:
            await self._applier.apply(model, batch, counts, through=last)

    async def parked(self) -> list[ParkedEvent]:
        """The events this projection parked, oldest first."""
        return await self.dead_letters.list(self.name)

    async def replay_parked(self) -> int:
        """Apply the parked events again (after fixing the handler); those that succeed are unparked.

        They are applied now, out of their original order: handlers should tolerate that (e.g. upserts).
        Returns how many were applied.
        """
        applied = 0
        async with self._lock:
            upcasters = self.store.upcasters
            for parked in await self.parked():
                event = parked.event
                if self.store.privacy is not None:  # a dead letter keeps the ciphertext
                    event = await self.store.privacy.reveal_parked(event)
                event = event if upcasters is None else upcasters._apply_fresh([event], strict=False)[0]
                done, error = self._model.run([event], self._applier.handle)
                if error is None:
                    await self.dead_letters.remove(parked)
                    applied += done
        self._counts.applied += applied
        return applied

