"""Applying events to a read model: exactly once in effect, poison events parked.

A batch is applied in one transaction that also moves the position; events at or below the position are
skipped. An event whose handler raises is retried alone (``max_attempts`` in all, with a short pause between);
then it, or an undecodable event at once, is parked in the dead-letter stream and the position moves past it.

>>> applier = Applier("v", {"created": ("View._created", handler)}, dead_letters)  # doctest: +SKIP
>>> await applier.apply(model, events, Counts())                                  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import UndecodableEventError
from ..events import RecordedEvent, check_token
from .deadletter import DeadLetters
from .readmodel import ReadModel

Handler = Callable[[sqlite3.Connection, RecordedEvent], None]



def appliers_of(cls: type, inherited: dict[str, str]) -> dict[str, str]:
    """``inherited`` and the methods ``cls`` itself marks with ``@eskit.applies(type)``: event type -> method name.

    >>> class Counts:
    ...     @applies("created")
    ...     def on_created(self, event): ...
    >>> appliers_of(Counts, {})                                     # doctest: +SKIP
    {'created': 'on_created'}
    """
    appliers = dict(inherited)
    for attr, member in vars(cls).items():
        event_type = getattr(member, "__eskit_applies__", None)
        if event_type is not None:
            appliers[check_token(event_type, "event type")] = attr
    return appliers

@dataclass(frozen=True, slots=True)
class ProjectionStats:
    """What a projection has done in this process, and how far behind the stream it is."""

    name: str
    position: int  # stream sequence of the last event applied (stored in the read model)
    lag: int | None  # events not yet delivered, as last reported by the server (None: not asked yet)
    applied: int  # events whose handler ran and was committed
    skipped: int  # events delivered again at or below the position (redeliveries): not applied twice
    parked: int  # poison events moved to the dead-letter stream
    redelivered: int  # events the server delivered more than once
    running: bool
    error: str | None  # the last error of the background task, if any
    recovered: int = 0  # events read by Direct Get because their positions went to someone else (a gap)

    @property
    def processed(self) -> int:
        return self.applied + self.skipped + self.parked


@dataclass(slots=True)
class Counts:
    """What an applier did (for the live model, or for one rebuild)."""

    applied: int = 0
    skipped: int = 0
    parked: int = 0
    redelivered: int = 0
    recovered: int = 0
    parked_positions: set[int] = field(default_factory=set)


class Applier:
    """Applies events with one handler per event type (see the module docstring)."""

    def __init__(
        self, projection: str, handlers: dict[str, tuple[str, Handler]], dead_letters: DeadLetters, *,
        max_attempts: int = 3, retry_delay: float = 0.05,
    ) -> None:  # fmt: skip
        self.projection = projection
        self.handlers = {event_type: handler for event_type, (_, handler) in handlers.items()}
        self.names = {event_type: name for event_type, (name, _) in handlers.items()}
        self.dead_letters = dead_letters
        self.max_attempts, self.retry_delay = max(1, max_attempts), retry_delay

    async def apply(self, model: ReadModel, events: list[RecordedEvent], counts: Counts, *, through: int = 0) -> None:
        """Apply ``events`` (in order) to ``model``, skipping those at or below its position; then move the
        position to ``through`` if that is further (events of other types were passed over up to there)."""
        todo = [e for e in events if e.position > model.position]
        counts.skipped += len(events) - len(todo)
        while todo:
            done, error = model.run(todo, self.handle)
            counts.applied += done
            if error is None:
                break
            await self._retry_or_park(model, todo[done], error, counts)
            todo = todo[done + 1 :]
        if through > model.position:
            model.advance(through)

    def handle(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        """Run the event's handler (none: nothing to do); an undecodable event raises."""
        handler = self.handlers.get(event.type)
        if handler is None:
            return
        if event.decode_error is not None:
            raise UndecodableEventError(f"undecodable event: {event.decode_error}")
        handler(db, event)

    async def _retry_or_park(
        self, model: ReadModel, event: RecordedEvent, error: Exception, counts: Counts
    ) -> None:
        attempts = 1
        while not isinstance(error, UndecodableEventError) and attempts < self.max_attempts:
            await asyncio.sleep(self.retry_delay * attempts)
            attempts += 1
            done, maybe = model.run([event], self.handle)
            if maybe is None:
                counts.applied += done
                return
            error = maybe
        undecodable = isinstance(error, UndecodableEventError)
        reason = (
            str(error) if undecodable else f"{self.names[event.type]} raised {type(error).__name__}: {error}"
        )
        await self.dead_letters.park(self.projection, event, reason=reason, attempts=attempts)
        model.advance(event.position)
        counts.parked += 1
        counts.parked_positions.add(event.position)
