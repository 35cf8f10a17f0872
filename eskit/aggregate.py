"""Aggregates: state rebuilt by applying events in order; commands record new events.

One handler per event type, declared with :func:`applies`, so the event -> state mapping reads at a glance:

>>> class Order(Aggregate):
...     def __init__(self, id: str) -> None:
...         super().__init__(id)
...         self.status, self.items = "new", []
...
...     def add_item(self, sku: str) -> None:                  # a command: decide, then record
...         if self.status != "pending":
...             raise ValueError("items can only be added to a pending order")
...         self.record("item_added", {"sku": sku})
...
...     @applies("created")
...     def _created(self, data: dict) -> None:
...         self.status = "pending"
...
...     @applies("item_added")
...     def _item_added(self, data: dict) -> None:
...         self.items.append(data["sku"])
>>> order = await orders.load(Order, "123", up_to=None)    # doctest: +SKIP
>>> order.add_item("A1"); await orders.save(order)         # doctest: +SKIP

``version`` counts the events applied (pending ones included); ``position`` is the stream sequence of the
aggregate's last *stored* event (0 for a new aggregate): the two differ, because a stream sequence counts
every aggregate in the stream. State is snapshotted as JSON: by default every public attribute other than
``id``/``version``/``position``; override :meth:`Aggregate.snapshot` and :meth:`Aggregate.restore` for
anything JSON cannot hold (sets, dataclasses, datetimes). A snapshot or cached state is used only once the
event it was built up to is found at its position in the stream (see :mod:`eskit._marks`).
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import inspect
import json
import re
import time
import warnings
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from ._bysubject import by_subject, literal
from ._marks import Mark
from .errors import AggregateError, EventStoreError, UndecodableEventError, UnknownEventError, ValidationError
from .events import SCHEMA_VERSION, Event, Position, RecordedEvent, check_token, subject_parts
from .snapshots import SnapshotWarning, ignored

if TYPE_CHECKING:
    from ._nats.wire import StoredMsg
    from .snapshots import Snapshot
    from .store import EventStore
    from .upcasting import Upcasters

A = TypeVar("A", bound="Aggregate")
APPLY_CHUNK = 2000  # merged messages applied at a time
Handler = Callable[[Any, Any], None]
F = TypeVar("F", bound=Handler)

_RESERVED = frozenset({"id", "version", "position"})
_KEY_TOKEN = re.compile(r"[-_A-Za-z0-9]+")
_MISSING = object()
_MIGRATE_HINT = "repair or drop it in a copy of the store: eskit.migrate(source, target, transform)"


def applies(event_type: str) -> Callable[[F], F]:
    """Mark a method as the handler that applies events of ``event_type`` to the state.

    >>> @applies("shipped")
    ... def _shipped(self, data): self.status = "shipped"
    """

    def mark(method: F) -> F:
        method.__eskit_applies__ = event_type  # type: ignore[attr-defined]
        return method

    return mark


class Aggregate:
    """Base class of event-sourced aggregates (see the module docstring for a full example).

    Class options: ``on_unknown = "raise"`` (default) or ``"ignore"`` for event types without a handler;
    ``snapshot_schema``: bump it whenever the shape of :meth:`snapshot` changes, so old snapshots are
    ignored; ``snapshot_name``: the key prefix of its snapshots (default: the class's module and qualified
    name, so two classes named alike do not share snapshots; give two classes one name to share them).
    """

    on_unknown: ClassVar[Literal["raise", "ignore"]] = "raise"
    snapshot_schema: ClassVar[int] = 1
    snapshot_name: ClassVar[str] = ""
    _appliers: ClassVar[dict[str, str]] = {}

    def __init__(self, id: str) -> None:
        self.id = id
        self.version = 0
        self.position = 0
        self._pending: list[Event] = []
        self._mark: Mark | None = None  # the stored event at `position`, once known
        self._personal: dict[str, str] = {}  # subject id -> key id of personal fields applied (eskit.privacy)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        appliers = dict(cls._appliers)  # inherited handlers, overridable
        own: dict[str, str] = {}
        for name, member in vars(cls).items():
            event_type = getattr(member, "__eskit_applies__", None)
            if event_type is None:
                continue
            if event_type in own:
                raise TypeError(f"{cls.__name__}: {own[event_type]} and {name} both apply {event_type!r}")
            own[event_type] = appliers[event_type] = name
        cls._appliers = appliers
        if not cls.__dict__.get("snapshot_name"):
            cls.snapshot_name = _qualified_name(cls)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id!r} version={self.version} position={self.position}>"

    # -- commands ------------------------------------------------------------------------------------------

    def record(self, event_type: str, data: Mapping[str, Any] | None = None, **options: Any) -> Event:
        """Record a new event and apply it at once; :meth:`EventStore.save` appends it later.

        ``options`` are passed to :class:`Event` (``correlation_id``, ``metadata``, ...).
        """
        event = Event(event_type, dict(data or {}), **options)
        self._dispatch(event_type, event.data, where="a new event")
        self._pending.append(event)
        self.version += 1
        return event

    @property
    def pending(self) -> tuple[Event, ...]:
        """Events recorded since the aggregate was loaded or saved, not stored yet."""
        return tuple(self._pending)

    def mark_saved(self, position: int) -> None:
        """Called by ``save`` once the pending events are stored, the last at ``position``."""
        last_id = self._pending[-1].id if self._pending else None
        self._pending.clear()
        self.position, self._mark = position, Mark(position, last_id)

    # -- rebuilding ----------------------------------------------------------------------------------------

    @classmethod
    def from_events(cls: type[A], aggregate_id: str, events: Iterable[RecordedEvent]) -> A:
        """A fresh aggregate with ``events`` applied in order (a full replay, without a store)."""
        aggregate = cls(aggregate_id)
        aggregate.apply(events)
        return aggregate

    def apply(self, events: Iterable[RecordedEvent]) -> None:
        """Apply stored events in order, moving ``version`` and ``position`` along."""
        for event in events:
            if event.decode_error is not None:
                raise UndecodableEventError(
                    f"{type(self).__name__} {self.id!r}: the event at position {event.position} ({event.type!r}) "
                    f"cannot be decoded ({event.decode_error}); {_MIGRATE_HINT}"
                )
            self._dispatch(event.type, event.data, where=f"position {event.position}")
            self.version += 1
            self.position = event.position
            self._mark = Mark(event.position, event.id)

    def apply_stored(self, messages: Iterable[StoredMsg], upcasters: Upcasters | None = None) -> None:
        """:meth:`apply` for raw stored messages: the load path, without building RecordedEvents.
        ``upcasters``: old events are applied as their current version (see :mod:`eskit.upcasting`)."""
        if upcasters is not None and upcasters.types:
            self._apply_upcast(messages, upcasters)
            return
        m = None
        for m in messages:
            try:
                data = json.loads(m.data) if m.data else None
            except (ValueError, RecursionError) as exc:
                raise self._undecodable(m, exc) from exc
            self._dispatch(subject_parts(m.subject)[1], data, where=f"position {m.seq}")  # as read() has it
            self.version += 1
            self.position = m.seq
        if m is not None:
            self._mark = Mark.of(m)

    def _apply_upcast(self, messages: Iterable[StoredMsg], upcasters: Upcasters) -> None:
        m, types = None, upcasters.types
        for m in messages:
            try:
                data = json.loads(m.data) if m.data else None
            except (ValueError, RecursionError) as exc:
                raise self._undecodable(m, exc) from exc
            event_type = subject_parts(m.subject)[1]
            if event_type in types:
                version = _version(m.headers.get(SCHEMA_VERSION))
                event_type, _, data = upcasters.resolve(m.seq, m.subject, event_type, version, data)
            self._dispatch(event_type, data, where=f"position {m.seq}")
            self.version += 1
            self.position = m.seq
        if m is not None:
            self._mark = Mark.of(m)

    def _apply_revealed(self, messages: list[StoredMsg], datas: list[Any], upcasters: Upcasters | None) -> None:
        """:meth:`apply_stored` for messages whose data was decoded and revealed (:mod:`eskit.privacy`)."""
        from .privacy.personal import Undecodable

        types = upcasters.types if upcasters is not None else frozenset()
        for m, data in zip(messages, datas, strict=True):
            if isinstance(data, Undecodable):
                raise self._undecodable(m, data.error) from None
            event_type = subject_parts(m.subject)[1]
            if upcasters is not None and event_type in types:
                version = _version(m.headers.get(SCHEMA_VERSION))
                event_type, _, data = upcasters.resolve(m.seq, m.subject, event_type, version, data)
            self._dispatch(event_type, data, where=f"position {m.seq}")
            self.version += 1
            self.position = m.seq
        if messages:
            self._mark = Mark.of(messages[-1])

    def _undecodable(self, m: StoredMsg, exc: Exception) -> UndecodableEventError:
        return UndecodableEventError(
            f"{type(self).__name__} {self.id!r}: the event at position {m.seq} ({m.subject!r}) "
            f"cannot be decoded (payload is not JSON: {exc}); {_MIGRATE_HINT}"
        )

    def _dispatch(self, event_type: str, data: Any, *, where: str) -> None:
        name = self._appliers.get(event_type)
        if name is None:
            if self.on_unknown == "ignore":
                return
            raise UnknownEventError(
                f"{type(self).__name__} has no handler for event type {event_type!r} ({where}); add "
                f'@applies("{event_type}") to a method, or set on_unknown = "ignore"'
            )
        try:
            getattr(self, name)(data)
        except AggregateError:
            raise
        except Exception as exc:
            exc.add_note(f"while {type(self).__name__}.{name} applied {event_type!r} ({where}), {self.id!r}")
            raise

    # -- snapshots -----------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The state as a JSON-ready dict (default: every public attribute but id, version, position)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in _RESERVED}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Set the state from :meth:`snapshot`'s output, on an aggregate fresh from ``cls(id)``.

        Only plain public attributes are set: a key that names ``id``/``version``/``position``, a private
        attribute, a method, a property or a class setting is refused (ValidationError), never set.
        """
        for key, value in state.items():
            if not _plain_attribute(self, key):
                raise ValidationError(
                    f"{type(self).__name__}.restore: state key {key!r} is not a plain public attribute; "
                    "override restore() to read this state"
                )
            setattr(self, key, value)


_BASE_MEMBERS = frozenset(vars(Aggregate))


def _plain_attribute(aggregate: Aggregate, key: object) -> bool:
    """Whether ``key`` may be set by :meth:`Aggregate.restore`: a public instance attribute, not a method,
    property, class setting or one of ``id``/``version``/``position``."""
    if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
        return False
    if key in _RESERVED or key in _BASE_MEMBERS:
        return False
    if key in vars(aggregate):
        return True
    member = inspect.getattr_static(type(aggregate), key, _MISSING)
    return not (callable(member) or hasattr(type(member), "__get__"))


def _version(value: str | None) -> int:
    """A schema version header; missing or garbled: 1 (as :func:`eskit.events.decode` reads it)."""
    try:
        return int(value) if value is not None else 1
    except ValueError:
        return 1


def _qualified_name(cls: type) -> str:
    """The class's module and qualified name as one KV key token (dots become '-'; other characters that a
    token cannot hold become '_', with a hash of the full name so such names stay apart)."""
    full = f"{cls.__module__}.{cls.__qualname__}"
    token = full.replace(".", "-")
    if _KEY_TOKEN.fullmatch(token):
        return token
    return re.sub(r"[^-_A-Za-z0-9]", "_", token) + "-" + hashlib.sha256(full.encode()).hexdigest()[:8]


async def load(store: EventStore, cls: type[A], aggregate_id: str, *, up_to: Position = None) -> A:
    """The aggregate rebuilt from its snapshot (if enabled and usable) plus the events after it.

    ``up_to`` (a position or a datetime) gives the state as of that moment; no snapshot is written then.
    """
    if up_to is None and store.cache is not None:
        if store.privacy is not None:  # missed forgets (idle, a reconnect) drop the cached aggregates first
            await store.privacy.ring.fresh()
        cached = await _from_cache(store, cls, aggregate_id)
        if cached is not None:
            return cached
    if isinstance(up_to, datetime):  # times need every event's timestamp: the full decode
        aggregate = await _restored(store, cls, aggregate_id, up_to)
        aggregate.apply(await store.read(aggregate_id, after=aggregate.position, up_to=up_to))
        return aggregate
    started = time.perf_counter()
    snapshots = store.snapshots
    lookup = await snapshots.find(cls, aggregate_id) if snapshots is not None else None
    aggregate = _start(cls, aggregate_id, lookup.snapshot if lookup else None, up_to)
    check_token(aggregate_id, "aggregate id")
    restored = aggregate.position > 0
    replayed, last = await _replay(store, aggregate, up_to)
    if replayed < 0 and snapshots is not None and lookup is not None and lookup.snapshot is not None:
        await snapshots.ignore(cls, lookup.snapshot)  # the event at its position is another one, or none
        aggregate, restored = cls(aggregate_id), False
        replayed, last = await _replay(store, aggregate, up_to)
    if lookup is not None and lookup.snapshot is not None and not restored and lookup.snapshot.fits(up_to):
        lookup = ignored(lookup)  # not proven, or restore() refused it: the next write replaces it
    if snapshots is not None and lookup is not None and up_to is None and last is not None:
        await snapshots.maybe_save(aggregate, lookup, replayed, last, time.perf_counter() - started)
    if store.cache is not None and up_to is None:
        store.cache.put(aggregate)
    return aggregate


async def _replay(store: EventStore, aggregate: Aggregate, up_to: int | None) -> tuple[int, StoredMsg | None]:
    """Apply the events after the aggregate's position; return how many, and the last one.

    An aggregate restored from a snapshot or a cache (position > 0) must first prove it: the scan starts AT
    its position, and the message there must be the event it was built up to (:class:`Mark`), else nothing
    is applied and the count is -1. The proof rides on the read the load does anyway: no round trip more.
    """
    prefix = f"{store.name}.{aggregate.id}."
    mark = aggregate._mark if aggregate.position > 0 else None
    if aggregate.position > 0 and mark is None:
        return -1, None
    replayed, last = 0, None
    after = aggregate.position - 1 if mark is not None else 0
    types, seen = aggregate._appliers, store._types_seen
    groups = None  # a small stream (see eskit._bysubject.literal): one wildcard scan
    if literal(store.reader, after):
        groups = await by_subject(store.reader, aggregate.id, types, seen, after=after, up_to=up_to)
    async with contextlib.aclosing(_pages_of(store, prefix, after, up_to, groups)) as pages:
        async for messages in pages:
            if mark is not None:
                if not messages or not mark.matches(messages[0], prefix):
                    return -1, None
                messages, mark = messages[1:], None
            if store.privacy is None:
                aggregate.apply_stored(messages, store.upcasters)
            else:  # personal fields decrypted first (or FORGOTTEN): see eskit.privacy
                datas, used = await store.privacy.revealed_messages(messages)
                aggregate._apply_revealed(messages, datas, store.upcasters)
                if used:  # a snapshot of this state is sealed with these keys: forgetting one forgets it
                    aggregate._personal = {**getattr(aggregate, "_personal", {}), **used}
            replayed, last = replayed + len(messages), messages[-1] if messages else last
    return (-1, None) if mark is not None else (replayed, last)


async def _pages_of(
    store: EventStore, prefix: str, after: int, up_to: int | None, groups: list[list[StoredMsg]] | None
) -> AsyncGenerator[list[StoredMsg], None]:
    """The messages of ``groups`` merged in position order (see :mod:`eskit._bysubject`), or, when it
    is None, pages of a wildcard scan of ``prefix>``."""
    if groups is not None:
        merged = groups[0] if len(groups) == 1 else list(heapq.merge(*groups, key=lambda m: m.seq))
        for start in range(0, len(merged), APPLY_CHUNK):
            yield merged[start : start + APPLY_CHUNK]
        return
    async with contextlib.aclosing(store.reader.pages(prefix + ">", after, up_to)) as pages:
        async for page in pages:
            yield page.messages if up_to is None else [m for m in page.messages if m.seq <= up_to]


async def _from_cache(store: EventStore, cls: type[A], aggregate_id: str) -> A | None:
    """The cached aggregate, brought up to date: one indexed lookup, plus a read only if it moved on.

    The lookup returns the aggregate's last stored event: if it is at the cached position it must be the
    event the cached state was built up to (else the stream was recreated: start over).
    """
    assert store.cache is not None
    aggregate = store.cache.get(cls, aggregate_id)
    if aggregate is None:
        return None
    last = await store.reader.last(f"{store.name}.{aggregate_id}.>")
    last_position, mark = (last.seq if last is not None else 0), aggregate._mark
    if last_position == aggregate.position and last is not None:
        if mark is None or not mark.matches(last, f"{store.name}.{aggregate_id}."):
            last_position = -1  # the same position, another event: the stream was recreated
        elif mark.stored_at is None:  # cached by save(): learn the event's store time for the next check
            aggregate._mark = Mark.of(last)
            store.cache.learn(aggregate)
    if last_position < aggregate.position:  # the stream was recreated or purged since: start over
        store.cache.discard(cls, aggregate_id)
        return None
    if last_position > aggregate.position:
        replayed, _ = await _replay(store, aggregate, None)
        if replayed < 0:
            store.cache.discard(cls, aggregate_id)
            return None
        store.cache.put(aggregate)
    return aggregate


async def _restored(store: EventStore, cls: type[A], aggregate_id: str, up_to: Position) -> A:
    snapshot = await store.snapshots.get(cls, aggregate_id) if store.snapshots is not None else None
    return _start(cls, aggregate_id, snapshot, up_to)


def _start(cls: type[A], aggregate_id: str, snapshot: Snapshot | None, up_to: Position) -> A:
    """A fresh aggregate, restored from ``snapshot`` when it is usable for ``up_to``."""
    aggregate = cls(aggregate_id)
    if snapshot is None or not snapshot.fits(up_to):
        return aggregate
    try:
        snapshot.restore_into(aggregate)
        if aggregate.id != aggregate_id:
            raise ValidationError(f"it changed the id to {aggregate.id!r}")
    except Exception as exc:  # a restore() hook that cannot read this state: replay instead
        message = f"{cls.__name__} {aggregate_id!r}: restore() failed on the snapshot ({exc!r}); replaying"
        warnings.warn(message, SnapshotWarning, stacklevel=3)
        return cls(aggregate_id)
    return aggregate


async def save(store: EventStore, aggregate: Aggregate) -> int:
    """Append the pending events atomically, checked against the position the aggregate was loaded at."""
    pending = aggregate.pending
    if not pending:
        return aggregate.position
    personal = getattr(aggregate, "_personal", None)
    if store.privacy is not None and personal:  # no round trip unless a key is unknown here (or the ring idled)
        ring = store.privacy.ring
        await ring.learn(personal.items())
        if any(ring.cipher(s, kid) is None for s, kid in personal.items()):  # its state holds forgotten fields
            raise EventStoreError(
                f"{aggregate!r} was loaded before a data subject of it was forgotten, and its state still holds "
                "that subject's personal fields: load it again (they read as forgotten then) and retry the command"
            )
    position = await store.append(aggregate.id, pending, expected_position=aggregate.position)
    if store.privacy is not None:  # the state holds these subjects' personal fields now
        used = store.privacy.keys_of(pending)
        if used:
            aggregate._personal = {**getattr(aggregate, "_personal", {}), **used}
    aggregate.mark_saved(position)
    if store.cache is not None:
        store.cache.put(aggregate)
    return position
