"""The subscribers of a process manager: one per store it reacts to, on the projections' machinery.

A :class:`Feed` is a :class:`~eskit.projections.Projection` whose read model holds only its position (and
the in-flight mark), and whose applier (:class:`Issuer`) issues commands instead of writing rows: for each
batch it notes how far it is about to go, has the manager issue the batch's commands, parks the events whose
commands failed, then moves the position (the projection acknowledges the batch after that). A new position
file (``":memory:"`` after a restart, a deleted file) knows nothing of the runs before it: everything stored
when it first issues counts as possibly issued (one read per ``Append`` without ``expected_position``),
unless the server holds no trace of an earlier run either. The trace is the feed's durable consumer: a run
issues nothing before it has created it, and repositioning it (delete, then create) is bracketed by a marker
consumer (``eskit-moving-<consumer>``), so a crash between the two leaves the marker. Deleting the consumers
(``close(delete_consumers=True)``, by hand) forgets the runs before: a later run with a new file issues their
commands again, and an ``Append`` without ``expected_position`` is then dropped only within the window.

>>> feed = Feed(manager, "orders", orders, frozenset({"placed"}))   # doctest: +SKIP
>>> await feed.run_until_caught_up()                                # doctest: +SKIP
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any

from ..errors import ProjectionError
from ..events import RecordedEvent
from ..projections.applying import Applier, Counts, Handler
from ..projections.consumer import PullConsumer
from ..projections.projection import Projection
from ..projections.readmodel import ReadModel

if TYPE_CHECKING:
    from ..store import EventStore
    from .manager import ProcessManager

IN_FLIGHT = "eskit_process_in_flight"  # per subscriber: the last position whose commands may have been issued
SCHEMA = f"CREATE TABLE IF NOT EXISTS {IN_FLIGHT} (name TEXT PRIMARY KEY, position INTEGER NOT NULL)"


class Feed(Projection):
    """The events of one store a process manager reacts to: a projection whose "read model" is only its
    position (and the in-flight mark), and whose applier issues commands."""

    def __init__(self, manager: ProcessManager, source: str, store: EventStore, types: frozenset[str]) -> None:
        self._appliers = dict.fromkeys(types, "_nothing")  # type: ignore[misc]  # per instance, not per class
        super().__init__(
            store, db=manager.db_path, name=f"{manager.name}-{source}", schema=SCHEMA,
            batch_size=manager.batch_size, max_wait=manager.max_wait, max_attempts=manager.max_attempts,
            retry_delay=manager.retry_delay, ack_wait=manager.ack_wait,
        )  # fmt: skip
        self.source = source
        # WAL (set by the manager's _open): a commit writes the log and waits for no fsync; a killed process
        # loses nothing (a power cut may: then commands come again, with the same ids)
        self._model.db.execute(SCHEMA)  # a file another subscriber of the manager created first
        self._applier = issuer = Issuer(manager, self)
        old = self._consumer
        self._consumer = TracedConsumer(
            issuer, self._model, old.client, old.stream, old.durable, old.filters,
            max_ack_pending=old.max_ack_pending, ack_wait=old.ack_wait, types=old.types,
        )  # fmt: skip

    def _nothing(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        """Commands are issued by the applier (:class:`Issuer`), not inside the transaction."""


class Issuer(Applier):
    """Issues a batch's commands, then moves the position past it (the projection's applier, for commands)."""

    def __init__(self, manager: ProcessManager, feed: Feed) -> None:
        reactions = manager._reactions[feed.source]
        handlers: dict[str, tuple[str, Handler]] = {
            t: (f"{type(manager).__name__}.{m}", feed._nothing) for t, m in reactions.items()
        }
        super().__init__(feed.name, handlers, feed.dead_letters, max_attempts=manager.max_attempts,
                         retry_delay=manager.retry_delay)  # fmt: skip
        self.manager, self.feed = manager, feed

    async def apply(self, model: ReadModel, events: list[RecordedEvent], counts: Counts, *, through: int = 0) -> None:
        """Issue the commands of the events after the position (noting first how far: a crash before the
        position is stored leaves them marked as possibly issued), park those that failed, move the position."""
        todo = [e for e in events if e.position > model.position]
        counts.skipped += len(events) - len(todo)
        if todo:
            suspect = self._in_flight(model)
            if suspect is None:  # a new position file: a run that lost its file may have issued all stored so far
                suspect = max(await self.feed.store.last_position(), todo[-1].position)
                self._mark(model, suspect)
            self._mark(model, todo[-1].position)
            failed = await self.manager._handle_batch(self.feed.source, todo, suspect)
            for event, reason, attempts in failed:
                await self.dead_letters.park(self.projection, event, reason=reason, attempts=attempts)
                counts.parked += 1
                counts.parked_positions.add(event.position)
            counts.applied += len(todo) - len(failed)
            through = max(through, todo[-1].position)
        if through > model.position:
            model.advance(through)

    def first_run(self, model: ReadModel) -> None:
        """Called with a new position file when the server holds no trace of an earlier run: nothing stored
        can have been issued, so no ``Append`` needs a check (its in-flight mark starts at 0)."""
        if model.position == 0 and self._in_flight(model) is None:
            self._mark(model, 0)

    def _in_flight(self, model: ReadModel) -> int | None:
        """The last position whose commands may have been issued; None in a new position file."""
        row = model.db.execute(f"SELECT position FROM {IN_FLIGHT} WHERE name = ?", (self.projection,)).fetchone()
        return int(row[0]) if row else None

    def _mark(self, model: ReadModel, position: int) -> None:
        model.db.execute(
            f"INSERT INTO {IN_FLIGHT} (name, position) VALUES (?, ?) ON CONFLICT (name) "
            "DO UPDATE SET position = max(position, excluded.position)", (self.projection, position),
        )  # fmt: skip


class TracedConsumer(PullConsumer):
    """The feed's durable consumer, whose existence is the trace of earlier runs: before it is (re)created, a
    new position file learns whether there were any; a reposition keeps the trace through a crash.

    >>> await feed._consumer.create(after=0)  # doctest: +SKIP
    """

    def __init__(self, issuer: Issuer, model: ReadModel, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.issuer, self.model = issuer, model
        self.marker = f"eskit-moving-{self.durable}"

    async def create(self, *, after: int) -> None:
        fresh = self.model.position == 0 and self.issuer._in_flight(self.model) is None
        existed = await self._exists(self.durable)
        marked = not existed and await self._exists(self.marker)  # a crash while repositioning
        if fresh and not existed and not marked:
            self.issuer.first_run(self.model)  # before the consumer exists: no run could have issued
        if existed:  # the trace outlives a crash between the delete and the create
            await self._marker(create=True)
        await super().create(after=after)
        if existed or marked:
            await self._marker(create=False)

    async def _exists(self, durable: str) -> bool:
        reply = await self._api(f"CONSUMER.INFO.{self.stream}.{durable}", b"")
        error = reply.get("error")
        if error is None:
            return True
        if error.get("code") == 404:
            return False
        raise ProjectionError(f"cannot look up consumer {durable} on {self.stream}: {error.get('description')}")

    async def _marker(self, *, create: bool) -> None:
        if not create:
            await self._api(f"CONSUMER.DELETE.{self.stream}.{self.marker}", b"")
            return
        config = {"durable_name": self.marker, "ack_policy": "none", "deliver_policy": "new",
                  "filter_subject": self.filters[0]}  # fmt: skip
        body = json.dumps({"stream_name": self.stream, "config": config}).encode()
        reply = await self._api(f"CONSUMER.DURABLE.CREATE.{self.stream}.{self.marker}", body)
        if "error" in reply:
            raise ProjectionError(
                f"cannot create consumer {self.marker} on {self.stream}: {reply['error'].get('description')}"
            )
