"""Closing the books: a long-lived aggregate kept in periods, so a load reads one period, not its whole life.

An account lives for years; replaying every deposit since it was opened makes each load slower than the last.
Accountants close the books at the end of a period and carry the balance forward: the next period opens
with one summary event, and the old period is never read again to decide anything. Here each period is an
aggregate of its own (``acc-1_2025``), so a load reads only the current period's events:

>>> class Account(PeriodicAggregate):
...     def __init__(self, id: str) -> None:
...         super().__init__(id)
...         self.balance = 0
...
...     @applies("deposited")
...     def _deposited(self, data: dict) -> None:
...         self.balance += data["amount"]
>>> period_id("acc-1", "2025")
'acc-1_2025'
>>> account = await store.load(Account, period_id("acc-1", "2025"))           # doctest: +SKIP
>>> await close_period(store, Account, "acc-1", "2025", "2026")            # doctest: +SKIP
>>> (await store.load(Account, period_id("acc-1", "2026"))).balance        # doctest: +SKIP

:func:`close_period` appends ``period_closed`` to the old period and ``period_opened`` (what
:meth:`PeriodicAggregate.carried_forward` returns) to the new one in ONE atomic batch, each checked against
the position it was read at: both are stored or neither; a deposit that slips into the old period after it
was read makes the close fail (reload and close again) instead of being left behind; and once closed, the old
period refuses new events (:class:`~eskit.errors.DecisionError`). Closing again into the same next period is
a no-op that returns where it was closed (a retried close is one close).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .._nats.codes import CONFLICT
from .._nats.wire import ApiError, parse_ack
from ..aggregate import Aggregate, applies
from ..errors import ConcurrencyError, DecisionError, EventStoreError, ValidationError
from ..events import Event
from ..store import MAX_BATCH

if TYPE_CHECKING:
    from ..store import EventStore

__all__ = ["CLOSED", "OPENED", "PeriodicAggregate", "append_together", "close_period", "period_id"]

OPENED, CLOSED = "period_opened", "period_closed"
SEPARATOR = "_"
_PERIOD = re.compile(r"[-A-Za-z0-9]{1,64}")
_BOOKKEEPING = frozenset({"period", "closed_into"})

P = TypeVar("P", bound="PeriodicAggregate")


def period_id(aggregate_id: str, period: str) -> str:
    """The id of ``aggregate_id``'s aggregate for ``period`` (letters, digits and '-', e.g. ``2025-q1``).

    >>> period_id("acc-1", "2025-q1")
    'acc-1_2025-q1'
    """
    if not isinstance(period, str) or not _PERIOD.fullmatch(period):
        raise ValidationError(f"period {period!r}: use letters, digits and '-' only, e.g. '2025' or '2025-q1'")
    return f"{aggregate_id}{SEPARATOR}{period}"


class PeriodicAggregate(Aggregate):
    """An aggregate kept in periods: each period opens with what the last one carried forward.

    ``period`` is the period's name once it was opened by :func:`close_period` (``""`` for the first
    period); ``closed_into`` names the next period once this one is closed, and then :meth:`record` refuses
    new events. By default the whole state (:meth:`Aggregate.snapshot`) is carried forward; override
    :meth:`carried_forward` and :meth:`open_with` to carry less (a balance, not every transaction).
    """

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.period = ""
        self.closed_into: str | None = None

    def carried_forward(self) -> dict[str, Any]:
        """What the next period opens with (JSON-ready); default: the public state but the bookkeeping."""
        return {k: v for k, v in self.snapshot().items() if k not in _BOOKKEEPING}

    def open_with(self, carried: Mapping[str, Any]) -> None:
        """Set the state from what the previous period carried forward; default: :meth:`Aggregate.restore`."""
        self.restore(carried)

    def record(self, event_type: str, data: Mapping[str, Any] | None = None, **options: Any) -> Event:
        """:meth:`Aggregate.record`, refused once the period is closed (write to the next period)."""
        if self.closed_into is not None:
            raise DecisionError(
                f"{type(self).__name__} {self.id!r} is closed (carried forward into period {self.closed_into!r}): "
                "load that period and record there"
            )
        return super().record(event_type, data, **options)

    @applies(OPENED)
    def _period_opened(self, data: dict[str, Any]) -> None:
        self.period = data["period"]
        self.open_with(data["carried"])

    @applies(CLOSED)
    def _period_closed(self, data: dict[str, Any]) -> None:
        self.closed_into = data["next"]


async def close_period(store: EventStore, cls: type[P], aggregate_id: str, period: str, next_period: str) -> int:
    """Close ``period`` of ``aggregate_id`` and open ``next_period`` with what it carries forward, atomically.

    Returns the position of the ``period_opened`` event. Raises :class:`~eskit.errors.ConcurrencyError` if
    either period moved while the close was decided (nothing is stored: load and close again), and
    :class:`~eskit.errors.DecisionError` if the period was already closed into another period.

    >>> await close_period(store, Account, "acc-1", "2025", "2026")       # doctest: +SKIP
    """
    if not (isinstance(cls, type) and issubclass(cls, PeriodicAggregate)):
        raise ValidationError(f"close_period takes a PeriodicAggregate subclass (e.g. Account), got {cls!r}")
    old_id, new_id = period_id(aggregate_id, period), period_id(aggregate_id, next_period)
    if period == next_period:
        raise ValidationError(f"close_period: the next period must differ from {period!r}")
    old = await store.load(cls, old_id)
    if old.closed_into == next_period:  # closed already (a retried close): where the next period opened
        return await _opening_position(store, new_id, old_id)
    if old.closed_into is not None:
        raise DecisionError(f"{cls.__name__} {old_id!r} is already closed into period {old.closed_into!r}")
    carried = old.carried_forward()
    closed = Event(CLOSED, {"next": next_period, "carried": carried})
    opened = Event(OPENED, {"period": next_period, "previous": period, "carried": carried})
    return await append_together(store, [(old_id, [closed], old.position), (new_id, [opened], 0)])


async def _opening_position(store: EventStore, new_id: str, old_id: str) -> int:
    for event in await store.read(new_id):
        if event.type == OPENED:
            return event.position
    raise EventStoreError(f"{store.name}/{old_id} is closed but {new_id} has no {OPENED} event")  # pragma: no cover


async def append_together(store: EventStore, appends: Sequence[tuple[str, Sequence[Event], int | None]]) -> int:
    """Append to several aggregates of one store in ONE atomic batch, each checked at its expected position.

    All the events are stored or none; returns the position of the last one. A conflict raises
    :class:`~eskit.errors.ConcurrencyError` for the first aggregate found moved (nothing was stored).
    Sending the same ``Event`` objects again (a retry whose first attempt landed) returns where they are.

    >>> await append_together(store, [("acc-1_2025", [closed], 41), ("acc-1_2026", [opened], 0)])  # doctest: +SKIP
    """
    appends = _checked(appends)
    messages = [m for aggregate_id, events, expected in appends for m in store._encode(aggregate_id, events, expected)]
    if len(messages) > MAX_BATCH:
        raise ValidationError(
            f"{len(messages)} events in one append; the server's atomic batch holds at most {MAX_BATCH}"
        )
    reply = await (store._wire.request(*messages[0]) if len(messages) == 1 else store._wire.publish_batch(messages))
    ack = parse_ack(reply)
    if not isinstance(ack, ApiError):
        return int(ack["seq"])
    last_id, last_events, last_expected = appends[-1]
    landed = await store._find_stored(last_id, last_events, after=last_expected or 0, reach=None)
    if landed is not None:  # our own earlier attempt: it was stored whole (atomic), so the first part too
        return landed
    for aggregate_id, _, expected in appends:
        if expected is not None and (actual := await store.last_position(aggregate_id)) != expected:
            raise ConcurrencyError(store.name, aggregate_id, expected=expected, actual=actual)
    if ack.err_code in CONFLICT:  # moved, and moved back? (a stream recreated): still a conflict
        first_id, _, first_expected = appends[0]
        raise ConcurrencyError(store.name, first_id, expected=first_expected or 0, actual=None)
    raise EventStoreError(f"append to {store.name} ({', '.join(a for a, _, _ in appends)}) failed: {ack.description}")


def _checked(appends: object) -> list[tuple[str, Sequence[Event], int | None]]:
    """The appends as a list of (aggregate id, events, expected position), each aggregate once; else one line."""
    shown = "e.g. [('acc-1_2025', [closed], 41), ('acc-1_2026', [opened], 0)]"
    if isinstance(appends, str | bytes) or not isinstance(appends, Sequence) or not appends:
        raise ValidationError(
            f"append_together takes a non-empty list of (aggregate_id, [events], expected_position), {shown}"
        )
    if any(not isinstance(a, tuple | list) or len(a) != 3 for a in appends):
        raise ValidationError(f"append_together takes (aggregate_id, [events], expected_position) tuples, {shown}")
    ids = [a[0] for a in appends]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise ValidationError(
            f"append_together: {twice} appear more than once; give each aggregate's events in one entry"
        )
    return [(a[0], a[1], a[2]) for a in appends]
