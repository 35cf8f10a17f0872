"""Upcasting: old events read as the current version, on every read path; the stored bytes never change.

An upcaster is a pure function from one version's data to the next version's. Register one per step, per
event type; a read applies the chain (v1 -> v2 -> v3) in order, and ``RecordedEvent.schema_version`` is the
version after upcasting. An event newer than any registered step passes through untouched.

>>> upcasters = Upcasters()
>>> @upcasters.register("item_added", from_version=1)      # v1 had no currency
... def add_currency(data: dict) -> dict:
...     return {**data, "currency": "EUR"}
>>> upcasters.rename("ItemAdded", "item_added")             # an old type name, read as the new one
>>> upcasters.resolve(7, "orders.1.ItemAdded", "ItemAdded", 1, {"sku": "A1"})
('item_added', 2, {'sku': 'A1', 'currency': 'EUR'})

Open a store with them: ``await client.event_store("orders", upcasters=upcasters)`` (or
``client.dcb_store(..., upcasters=upcasters)``): ``read``, ``replay``, ``load``, projections,
``to_dataframe`` and the widgets then see the upcast events. A store opened without them reads the
original events. An upcaster that raises gives :class:`~eskit.errors.UpcastError` naming the event
(position, type, version); a projection parks that event instead (see :mod:`eskit.projections.deadletter`).

Aggregates loaded through upcasters are built from the upcast events: when you change what an upcaster
returns, bump the aggregate's ``snapshot_schema`` so snapshots built before are not trusted (lesson 03). In a
DCB store, queries select events by their stored type and tags; upcasting changes what a read returns, not
what it matches.

Upcasters change one event into one event. Splitting one event into several, merging several into one, or
fixing wrong data for good are jobs for a copy-and-transform migration into a new store (:mod:`eskit.migrate`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from .errors import UpcastError, ValidationError
from .events import RecordedEvent, check_token

Upcaster = Callable[[Any], Any]
F = TypeVar("F", bound=Upcaster)

MAX_RENAMES = 64  # a chain of renames longer than this is refused when registered
_set_type = RecordedEvent.__dict__["type"].__set__  # fresh events are upcast in place (see _apply_fresh)
_set_data = RecordedEvent.__dict__["data"].__set__
_set_version = RecordedEvent.__dict__["schema_version"].__set__


class Upcasters:
    """Upcasters by event type and version, and renamed event types (see the module docstring)."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Upcaster] = {}
        self._renames: dict[str, str] = {}
        self.types: frozenset[str] = frozenset()  # stored types some rule applies to
        self._plans: dict[str, dict[int, _Plan | None]] = {}  # stored type -> version -> what a read does

    def __repr__(self) -> str:
        steps = ", ".join(f"{t} v{v}->v{v + 1}" for t, v in sorted(self._steps))
        renames = ", ".join(f"{a}->{b}" for a, b in self._renames.items())
        return f"<Upcasters steps=[{steps}] renames=[{renames}]>"

    def __len__(self) -> int:
        return len(self._steps) + len(self._renames)

    def register(self, event_type: str, *, from_version: int = 1) -> Callable[[F], F]:
        """Register the function turning ``event_type``'s data of ``from_version`` into ``from_version + 1``.

        >>> ups = Upcasters()
        >>> @ups.register("created", from_version=1)
        ... def split_name(data): return {**data, "first": data["name"].split()[0]}
        """
        check_token(event_type, "event type")
        if type(from_version) is not int or from_version < 1:
            raise ValidationError(f"from_version must be an int >= 1 (the version it reads), got {from_version!r}")

        def add(function: F) -> F:
            if not callable(function):
                raise ValidationError(f"register({event_type!r}) decorates a function data -> data")
            key = (event_type, from_version)
            if key in self._steps:
                raise ValidationError(
                    f"{event_type!r} v{from_version} already has an upcaster "
                    f"({_name(self._steps[key])}); one function per step"
                )
            self._steps[key] = function
            self._changed()
            return function

        return add

    def rename(self, old: str, new: str) -> None:
        """Read events stored as type ``old`` as type ``new`` (their version steps are ``new``'s).

        >>> ups = Upcasters(); ups.rename("ItemAdded", "item_added")
        """
        check_token(old, "old event type")
        check_token(new, "new event type")
        if old == new or old in self._renames:
            raise ValidationError(f"{old!r} is already renamed (to {self._renames.get(old, old)!r})")
        target, hops = new, 0
        while target in self._renames and hops <= MAX_RENAMES:
            target, hops = self._renames[target], hops + 1
        if target == old or hops > MAX_RENAMES:
            raise ValidationError(f"renaming {old!r} to {new!r} makes a cycle of renames; rename each type once")
        self._renames[old] = new
        self._changed()

    def _changed(self) -> None:
        self.types = frozenset({*self._renames, *(t for t, _ in self._steps)})
        self._plans = {t: {} for t in self.types}

    def _plan(self, event_type: str, version: int) -> _Plan | None:
        """What reading ``event_type`` stored as ``version`` takes: the type and version it ends as, and the
        steps in order (None: nothing to do). Worked out once per (type, version)."""
        renamed, steps = self._renamed(event_type), []
        final = version
        while (step := self._steps.get((renamed, final))) is not None:
            steps.append(step)
            final += 1
        plan = None if renamed == event_type and not steps else (renamed, final, tuple(steps))
        self._plans[event_type][version] = plan
        return plan

    def sources(self, types: Iterable[str]) -> frozenset[str]:
        """``types`` and every stored type renamed (directly or not) into one of them."""
        wanted = set(types)
        grew = True
        while grew:
            more = {old for old, new in self._renames.items() if new in wanted}
            grew = not more <= wanted
            wanted |= more
        return frozenset(wanted)

    # -- applying ------------------------------------------------------------------------------------------

    def resolve(self, position: int, subject: str, event_type: str, version: int, data: Any) -> tuple[str, int, Any]:
        """The type, version and data after renames and every registered step; raises UpcastError."""
        hops = 0
        while event_type in self._renames and hops <= MAX_RENAMES:
            event_type, hops = self._renames[event_type], hops + 1
        steps = self._steps
        step = steps.get((event_type, version))
        while step is not None:
            try:
                upcast = step(data)
            except Exception as exc:
                raise UpcastError(_name(step), position=position, subject=subject, event_type=event_type,
                                  version=version, cause=f"{type(exc).__name__}: {exc}") from exc  # fmt: skip
            if upcast is None:
                raise UpcastError(_name(step), position=position, subject=subject, event_type=event_type,
                                  version=version, cause="it returned None (return the new data)")  # fmt: skip
            data, version = upcast, version + 1
            step = steps.get((event_type, version))
        return event_type, version, data

    def upcast(self, event: RecordedEvent) -> RecordedEvent:
        """One event as the current version (a new object; ``event`` is unchanged)."""
        if event.decode_error is not None or event.type not in self.types:
            return event
        t, v, d = self.resolve(event.position, event.subject, event.type, event.schema_version, event.data)
        return dataclasses.replace(event, type=t, schema_version=v, data=d)

    def _apply_fresh(self, events: list[RecordedEvent], *, strict: bool = True) -> list[RecordedEvent]:
        """Upcast events just decoded (nobody else holds them: changed in place). ``strict=False``: an event
        whose upcaster raises comes back with its renamed type, its stored data and version, and the error
        in ``decode_error`` (a projection parks it)."""
        plans = self._plans
        if not plans:
            return events
        for i, event in enumerate(events):
            by_version = plans.get(event.type)
            if by_version is None:
                continue
            version = event.schema_version
            plan = by_version[version] if version in by_version else self._plan(event.type, version)
            if plan is None or event.decode_error is not None:
                continue
            try:
                data = _run(plan[2], event.data)
            except Exception:  # again, step by step, for the error that names the step and the event
                try:
                    self.resolve(event.position, event.subject, event.type, version, event.data)
                except UpcastError as exc:
                    if strict:
                        raise
                    events[i] = dataclasses.replace(event, type=plan[0], decode_error=str(exc))
                    continue
                raise  # it failed once and not again: not a pure function
            _set_data(event, data)
            _set_version(event, plan[1])
            if plan[0] is not event.type:
                _set_type(event, plan[0])
        return events

    def _renamed(self, event_type: str) -> str:
        hops = 0
        while event_type in self._renames and hops <= MAX_RENAMES:
            event_type, hops = self._renames[event_type], hops + 1
        return event_type

    def _apply_columns(
        self, positions: Sequence[int], subjects: Sequence[str], types: list[str], versions: Any, data: list[Any]
    ) -> tuple[list[str], Any]:
        """Upcast column lists in place (``types``, ``data``); returns the types and the version column
        (a new list if a version changed, else ``versions`` as given)."""
        plans = self._plans
        todo = [i for i, t in enumerate(types) if t in plans] if plans else []
        if not todo:
            return types, versions
        out = list(map(int, versions))
        for i in todo:
            event_type, version, data_i = types[i], out[i], data[i]
            by_version = plans[event_type]
            plan = by_version[version] if version in by_version else self._plan(event_type, version)
            if plan is None or data_i is None:  # nothing to do, or not JSON (or empty)
                continue
            try:
                data_i = _run(plan[2], data_i)
            except Exception:  # again, step by step, for the error that names the step and the event
                self.resolve(int(positions[i]), subjects[i], event_type, version, data[i])
                raise
            types[i], out[i], data[i] = plan[0], plan[1], data_i
        return types, out


_Plan = tuple[str, int, tuple[Upcaster, ...]]


def _name(function: Upcaster) -> str:
    return getattr(function, "__qualname__", None) or getattr(function, "__name__", None) or repr(function)


def _run(steps: Sequence[Callable[[Any], Any]], data: Any) -> Any:
    """The data after every step of a plan; a step that returns None is an error (ValueError)."""
    for step in steps:
        data = step(data)
        if data is None:
            raise ValueError
    return data
