"""Copy-and-transform migration: a new store written from an old one, event by event; the old one stays.

Upcasters (:mod:`eskit.upcasting`) change how one event is read, every time it is read. When that is not
enough, copy: split one event into several, merge or drop events, repair data that is wrong for good, or
stop paying for a long chain of upcasters on every read. ``transform`` gets each source event (upcast, if
the source store has upcasters) and returns the events to write for it: an :class:`~eskit.events.Event`, a
list of them, or ``None`` to drop it. They go to the same aggregate id in the target.

>>> def transform(event):                                                      # doctest: +SKIP
...     if event.type == "address_changed":        # one event per field change -> one per decision
...         return None
...     return Event(event.type, event.data, schema_version=event.schema_version)
>>> result = await eskit.migrate(orders, orders_v2, transform)                 # doctest: +SKIP
>>> result.read, result.written, result.dropped                                # doctest: +SKIP
(1000, 800, 200)

Idempotent and resumable: every written event carries the source position it came from (metadata
``migrated_from``, header ``Eskit-Meta-migrated_from``), and its id is derived from that position (so a
retry within the store's duplicate window is stored once). A migration that stopped half-way (a crash, a
Ctrl-C) is run again with the same arguments: it reads the last migrated position from the target's last
event and goes on after it, once it has checked that a migration of this source wrote that event (its id is
the one derived from the position it names, and the source holds that position): a ``migrated_from`` header
another writer appended is refused, not trusted. Switch readers to the target once it has caught up; writers last.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ValidationError
from .events import META_PREFIX, MSG_ID, Event, RecordedEvent

if TYPE_CHECKING:
    from .store import EventStore

Transform = Callable[[RecordedEvent], "Event | Sequence[Event] | None"]
MIGRATED_FROM = "migrated_from"  # metadata key: the source position an event was written for
_HEADER = META_PREFIX + MIGRATED_FROM
_NAMESPACE = uuid.UUID("6f1d9a52-7c1e-4c55-9a8e-3b8f0c7f5e11")
PIPELINE = 1000  # single-event appends sent before their acks are awaited
MAX_EVENTS_PER_SOURCE_EVENT = 1000  # one atomic batch (the server's limit): the ids a resume check tries


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """What one run of :func:`migrate` did."""

    resumed_after: int  # the source position it went on after (0: from the start)
    read: int  # source events read in this run
    written: int  # events appended to the target in this run
    dropped: int  # source events the transform returned nothing for
    last_source_position: int  # the last source position migrated (0: none)


def copy_event(event: RecordedEvent) -> Event:
    """The default transform: the event as read (type, data, version, times, ids, metadata).

    An event whose payload is not JSON is refused: pass a transform that repairs it (from ``event.raw``) or
    drops it (returns None).
    """
    if event.decode_error is not None:
        raise ValidationError(
            f"the event at position {event.position} ({event.subject}) is not JSON ({event.decode_error}); pass a "
            "transform that repairs it from event.raw, or returns None to drop it"
        )
    return Event(event.type, {} if event.data is None else event.data,
                 schema_version=event.schema_version, occurred_at=event.occurred_at or event.timestamp,
                 correlation_id=event.correlation_id, causation_id=event.causation_id,
                 metadata=dict(event.metadata))  # fmt: skip


def _check_stores(source: EventStore, target: EventStore) -> None:
    """One-line errors for a migration that would edit ``source`` or copy personal fields in plain text."""
    if source.stream == target.stream:
        raise ValidationError(f"migrate into a new store, not into {source.name!r} itself (events are never edited)")
    if source.privacy is not None and target.privacy is None:  # read decrypted: they would be stored in plain text
        raise ValidationError(
            f"{source.name!r} has personal fields (privacy=): open the target with privacy= too "
            f"(client.event_store({target.name!r}, privacy=...)), or they are copied in plain text, beyond eskit.forget"
        )


async def migrate(source: EventStore, target: EventStore, transform: Transform | None = None) -> MigrationResult:
    """Copy ``source`` into ``target`` through ``transform`` (default: :func:`copy_event`), resuming after
    the last source position already migrated (see the module docstring).

    >>> await eskit.migrate(orders, await client.event_store("orders_v2"), transform)   # doctest: +SKIP
    """
    _check_stores(source, target)
    transform = transform or copy_event
    resumed = await last_migrated(target, source)
    read = written = dropped = 0
    last = resumed
    singles: list[tuple[str, Sequence[Event], int | None]] = []

    async def flush() -> None:
        nonlocal written
        if singles:
            try:
                written += len(await target.append_many(singles))
            except ValidationError:  # checked before sending, so nothing was stored: store the events before
                good = _storable_prefix(target, singles)  # the one that cannot be, then name it
                written += len(await target.append_many(good)) if good else 0
                _cannot_store(target, *singles[len(good)][:2])
                raise
            finally:
                singles.clear()

    try:
        async for event in source.replay(after=resumed):
            read += 1
            out = transform(event)
            events = [] if out is None else [out] if isinstance(out, Event) else list(out)
            if not all(isinstance(e, Event) for e in events):
                raise ValidationError(
                    f"transform returned {out!r} for the event at position {event.position}; return an Event, a "
                    "list of Events, or None to drop it"
                )
            last = event.position
            if not events:
                dropped += 1
                continue
            stamped = [_stamped(e, source, event.position, i) for i, e in enumerate(events)]
            if len(stamped) == 1:
                singles.append((event.aggregate_id, stamped, None))
                if len(singles) >= PIPELINE:
                    await flush()
            else:  # an atomic batch, after everything before it: the target stays in source order
                await flush()
                try:
                    await target.append(event.aggregate_id, stamped)
                except ValidationError:  # checked before sending: nothing stored
                    _cannot_store(target, event.aggregate_id, stamped)
                    raise
                written += len(stamped)
    finally:  # what was transformed so far is stored (a transform that raised, a Ctrl-C): a rerun goes on
        await flush()
    return MigrationResult(resumed, read, written, dropped, last)


async def last_migrated(target: EventStore, source: EventStore | None = None) -> int:
    """The source position of the target's last event (0 if the target is empty); with ``source``, that
    claim is checked: the event's id is the one a migration of ``source`` gives that position, and the source
    holds an event there (a bare ``migrated_from`` header, which any writer can append, would make a rerun
    skip the source events up to the position it names).

    >>> await last_migrated(orders_v2, orders)                                  # doctest: +SKIP
    1000
    """
    reply = await target._wire.request(
        f"$JS.API.DIRECT.GET.{target.stream}", json.dumps({"last_by_subj": f"{target.name}.>"}).encode()
    )
    headers = reply.headers or {}
    if "Nats-Sequence" not in headers:
        return 0  # empty
    value = headers.get(_HEADER, "")
    if not value.isdigit():
        raise ValidationError(
            f"target {target.name!r} holds events that no migration wrote (its last, at position "
            f"{headers['Nats-Sequence']}, has no {MIGRATED_FROM} metadata); migrate into a new, empty store"
        )
    position = int(value)
    if source is not None and not await _written_by_migration(source, position, headers.get(MSG_ID, "")):
        raise ValidationError(
            f"target {target.name!r}'s last event (position {headers['Nats-Sequence']}) says it was migrated from "
            f"source position {position}, but no migration of {source.name!r} wrote it (its id or that source "
            "event does not match): someone else appended to the target; migrate into a new, empty store"
        )
    return position


async def _written_by_migration(source: EventStore, position: int, event_id: str) -> bool:
    """Whether ``event_id`` is the id :func:`_stamped` gives an event of source ``position``, which exists."""
    if not any(_stable_id(source, position, i) == event_id for i in range(MAX_EVENTS_PER_SOURCE_EVENT)):
        return False
    reply = await source._wire.request(f"$JS.API.DIRECT.GET.{source.stream}", json.dumps({"seq": position}).encode())
    return (reply.headers or {}).get("Nats-Sequence") == str(position)


def _storable_prefix(
    target: EventStore, appends: list[tuple[str, Sequence[Event], int | None]]
) -> list[tuple[str, Sequence[Event], int | None]]:
    """The appends before the first one ``target`` would refuse."""
    for i, (aggregate_id, events, _) in enumerate(appends):
        try:
            target._encode(aggregate_id, events, None)
        except ValidationError:
            return appends[:i]
    return appends


def _cannot_store(target: EventStore, aggregate_id: str, events: Sequence[Event]) -> None:
    """Raise a ValidationError naming the source position if ``target`` refuses ``events`` (e.g. someone
    else's message on ``orders.1.evil.created``: type ``evil.created``, which no subject token can hold)."""
    try:
        target._encode(aggregate_id, events, None)
    except ValidationError as exc:
        position = events[0].metadata.get(MIGRATED_FROM, "?")
        raise ValidationError(
            f"the event at source position {position} cannot be stored as it is ({exc}); pass a transform that "
            "repairs it or returns None to drop it"
        ) from exc


def _stamped(event: Event, source: EventStore, position: int, index: int) -> Event:
    """``event`` with an id derived from its source position, and that position in its metadata."""
    stable = _stable_id(source, position, index)
    return dataclasses.replace(event, id=stable, metadata={**event.metadata, MIGRATED_FROM: str(position)})


def _stable_id(source: EventStore, position: int, index: int) -> str:
    return uuid.uuid5(_NAMESPACE, f"{source.stream}/{position}/{index}").hex
