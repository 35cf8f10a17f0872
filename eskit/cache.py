"""An in-memory cache of loaded aggregates: a load of a cached aggregate costs one indexed lookup.

>>> orders = await client.event_store("orders", cache=AggregateCache(maxsize=10_000))   # doctest: +SKIP
>>> order = await orders.load(Order, "123")    # first time: replayed, then cached
>>> order = await orders.load(Order, "123")    # then: its last position checked, only newer events read

Why it pays: reading one aggregate from a busy stream makes the server scan every message between the
aggregate's events (JetStream indexes subjects per block, not per message), while the aggregate's *last*
position comes from a per-subject index. A cached aggregate whose last position has not moved is current.

Why it is safe: the cache only ever saves work. A state cached at position P is used only if the stream
says the aggregate's last event is still at P and is the very event the state was built up to (its id and
store time: a stream deleted and recreated starts its positions again), or after the events after P are
applied, read in a scan that starts at P and checks that event the same way; and ``save`` checks
``expected_position`` on the server anyway, so even a stale answer (a lagging replica) can only cause a
:class:`~eskit.errors.ConcurrencyError` and a retry, never a lost update. State is kept as a deep copy of
:meth:`Aggregate.snapshot` and restored with :meth:`Aggregate.restore`, so callers never share objects.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import ValidationError

if TYPE_CHECKING:
    from ._marks import Mark
    from .aggregate import Aggregate

A = TypeVar("A", bound="Aggregate")


@dataclass(frozen=True, slots=True)
class _Entry:
    version: int
    position: int
    state: dict[str, Any]
    mark: Mark | None  # the stored event at `position`
    personal: dict[str, str] = dataclasses.field(default_factory=dict)  # keys it was built with (eskit.privacy)


class AggregateCache:
    """The most recently used ``maxsize`` aggregates' states, per class and id (least recently used out)."""

    def __init__(self, maxsize: int = 10_000) -> None:
        if type(maxsize) is not int or maxsize < 1:
            raise ValidationError(f"an AggregateCache needs maxsize >= 1 (an int), got {maxsize!r}")
        self.maxsize = maxsize
        self._entries: OrderedDict[tuple[type, str], _Entry] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, cls: type[A], aggregate_id: str) -> A | None:
        """A fresh ``cls`` instance in the cached state, or None."""
        entry = self._entries.get((cls, aggregate_id))
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end((cls, aggregate_id))
        self.hits += 1
        aggregate = cls(aggregate_id)
        aggregate.restore(copy.deepcopy(entry.state))
        aggregate.version, aggregate.position, aggregate._mark = entry.version, entry.position, entry.mark
        if entry.personal:
            aggregate._personal = dict(entry.personal)
        return aggregate

    def put(self, aggregate: Aggregate) -> None:
        """Remember the aggregate's saved state (pending events are not part of it)."""
        if aggregate.pending:
            return
        key = (type(aggregate), aggregate.id)
        state = copy.deepcopy(aggregate.snapshot())
        personal = dict(getattr(aggregate, "_personal", None) or {})
        self._entries[key] = _Entry(aggregate.version, aggregate.position, state, aggregate._mark, personal)
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)

    def learn(self, aggregate: Aggregate) -> None:
        """Record the stored event at the cached position (its store time, known after the first lookup),
        keeping the cached state as it is: no second copy of it."""
        key = (type(aggregate), aggregate.id)
        entry = self._entries.get(key)
        if entry is not None and entry.position == aggregate.position:
            self._entries[key] = dataclasses.replace(entry, mark=aggregate._mark)

    def discard(self, cls: type, aggregate_id: str) -> None:
        self._entries.pop((cls, aggregate_id), None)

    def clear(self) -> None:
        """Forget everything (the store was deleted: positions in a new stream mean other events)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
