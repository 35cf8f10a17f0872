"""Given / when / then: test a command on an aggregate, or a DCB decision, without a server.

>>> from eskit import Event
>>> from eskit.examples import Order, OrderError
>>> given(Event("created", {"customer": "ada"})).when(Order, lambda o: o.add_item("A1", price=2.0)).then(
...     Event("item_added", {"sku": "A1", "qty": 1, "price": 2.0}))
<Order 'order-1' version=2 position=1>
>>> given().when(Order, lambda o: o.add_item("A1")).then(OrderError)
<Order 'order-1' version=0 position=0>

``given`` takes the history (events already stored), ``when`` the aggregate class and the command (a function
of the loaded aggregate), ``then`` the events the command must record — compared by type and data — or the
exception class it must raise. The same form checks a DCB decision (:class:`eskit.dcb.examples.Decision`):
``given(*tagged_events).when(decision).then(*tagged_events | DecisionError)``; the decision sees only the
given events its query matches, as it would in a store. A failed ``then`` raises ``AssertionError`` with a
one-line explanation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .dcb.query import SequencedEvent, TaggedEvent
from .events import Event, RecordedEvent

if TYPE_CHECKING:
    from .aggregate import Aggregate
    from .dcb.examples import Decision

__all__ = ["Given", "given"]

AnyEvent = Event | TaggedEvent


def _json(data: Any) -> Any:
    """Data as it comes back from the store (tuples become lists, keys strings)."""
    try:
        return json.loads(json.dumps(data))
    except (TypeError, ValueError):
        return data


def _describe(events: Sequence[tuple[Any, ...]]) -> str:
    if not events:
        return "no events"
    return "[" + ", ".join(" ".join(str(part) for part in e) for e in events) + "]"


def _flatten(events: tuple[AnyEvent | Iterable[AnyEvent], ...]) -> list[AnyEvent]:
    flat: list[AnyEvent] = []
    for e in events:
        if isinstance(e, Event | TaggedEvent):
            flat.append(e)
        else:
            flat.extend(e)
    return flat


def given(*events: AnyEvent | Iterable[AnyEvent]) -> Given:
    """The history: :class:`~eskit.Event` s for an aggregate, ``TaggedEvent`` s for a DCB decision."""
    return Given(_flatten(events))


class Given:
    """The history a command is tested on; :meth:`when` runs the command."""

    def __init__(self, events: list[AnyEvent]) -> None:
        self.events = events

    def when(
        self, target: type[Aggregate] | Decision, command: Callable[[Any], object] | None = None, *,
        id: str = "order-1",
    ) -> When:
        """Run ``command(aggregate)`` on ``target`` rebuilt from the history, or run the decision ``target``."""
        from .aggregate import Aggregate

        if isinstance(target, type) and issubclass(target, Aggregate):
            if command is None:
                raise TypeError("when(AggregateClass, command): say which command, e.g. lambda o: o.cancel('x')")
            return self._aggregate(target, command, id)
        if hasattr(target, "query") and hasattr(target, "decide"):
            return self._decision(target)
        raise TypeError(f"when() takes an Aggregate class and a command, or a Decision; got {target!r}")

    def _aggregate(self, cls: type[Aggregate], command: Callable[[Any], object], id: str) -> When:
        now = datetime.now(UTC)
        history = [
            RecordedEvent(position=i, subject=f"test.{id}.{e.type}", aggregate_id=id, type=e.type,
                          data=_json(e.data), id=f"given-{i}", timestamp=now)
            for i, e in enumerate(self.events, 1)
        ]
        aggregate = cls.from_events(id, history)
        try:
            command(aggregate)
        except Exception as exc:  # compared in then()
            return When(aggregate, [], exc)
        recorded = [(e.type, _json(e.data)) for e in aggregate.pending]
        return When(aggregate, recorded, None)

    def _decision(self, decision: Decision) -> When:
        seen = [
            SequencedEvent(i, e.type, _json(e.data), tuple(getattr(e, "tags", ())), f"given-{i}")
            for i, e in enumerate(self.events, 1)
            if decision.query.matches(e.type, getattr(e, "tags", ()))
        ]
        try:
            decided = decision.decide(seen)
        except Exception as exc:  # compared in then()
            return When(decision, [], exc, dcb=True)
        recorded = [(e.type, _json(e.data), sorted(e.tags)) for e in decided]
        return When(decision, recorded, None, dcb=True)


class When:
    """What the command did: the events it recorded, or the exception it raised."""

    def __init__(
        self, subject: Any, recorded: list[tuple[Any, ...]], error: Exception | None, *, dcb: bool = False
    ) -> None:
        self.subject, self.recorded, self.error, self.dcb = subject, recorded, error, dcb

    def then(self, *expected: AnyEvent | Iterable[AnyEvent] | type[BaseException], match: str = "") -> Any:
        """Assert the recorded events (type and data; tags for DCB) or the exception class (``match``: a part of
        its message). Returns the aggregate (or the decision) for further checks."""
        if len(expected) == 1 and isinstance(expected[0], type) and issubclass(expected[0], BaseException):
            return self._raised(expected[0], match)
        events = _flatten(expected)  # type: ignore[arg-type]
        if self.error is not None:
            self._unexpected(f"expected {_describe(self._expected(events))}")
        want = self._expected(events)
        if self.recorded != want:
            raise AssertionError(f"expected {_describe(want)}, got {_describe(self.recorded)}")
        return self.subject

    def _expected(self, events: list[AnyEvent]) -> list[tuple[Any, ...]]:
        if self.dcb:
            return [(e.type, _json(e.data), sorted(getattr(e, "tags", ()))) for e in events]
        return [(e.type, _json(e.data)) for e in events]

    def _raised(self, kind: type[BaseException], match: str) -> Any:
        if self.error is None:
            raise AssertionError(f"expected {kind.__name__}, but the command recorded {_describe(self.recorded)}")
        if not isinstance(self.error, kind):
            self._unexpected(f"expected {kind.__name__}")
        if match not in str(self.error):
            raise AssertionError(f"expected {kind.__name__} saying {match!r}, got: {self.error}")
        return self.subject

    def _unexpected(self, wanted: str) -> None:
        assert self.error is not None
        if isinstance(self.error, NotImplementedError | NameError):
            raise self.error  # a stub or a missing definition: eskit.course.check says so
        raise AssertionError(f"{wanted}, but the command raised {type(self.error).__name__}: {self.error}")
