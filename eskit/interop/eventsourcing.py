"""pyeventsourcing's DCB recorder, backed by an eskit DCB store on NATS JetStream.

>>> from eskit.interop.eventsourcing import NatsDCBRecorder
>>> from eventsourcing.dcb.api import DCBEvent
>>> recorder = NatsDCBRecorder("courses", tag_keys=["course", "student"])            # doctest: +SKIP
>>> recorder.append([DCBEvent("CourseDefined", b'{"capacity": 10}', ["course:c1"])])  # doctest: +SKIP
1
>>> recorder.close()                                                                 # doctest: +SKIP

eventsourcing is synchronous; eskit is async. The recorder runs one event loop in a portal thread
(``anyio.from_thread.start_blocking_portal``) and calls the async store through it: no method body is
written twice. A failed append condition is raised as eventsourcing's ``IntegrityError``. The recorder passes
pyeventsourcing's own contract tests (``DCBRecorderTestCase``), see ``tests/test_dcb_conformance.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from functools import partial
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal
from eventsourcing.dcb.api import (
    DCBAppendCondition,
    DCBEvent,
    DCBQuery,
    DCBReadResponse,
    DCBRecorder,
    DCBSequencedEvent,
    DCBSubscription,
)
from eventsourcing.persistence import IntegrityError, ProgrammingError

from ..connection import Client, connect
from ..dcb import AppendCondition, DCBStore, Query, QueryItem, SequencedEvent, Subscription, TaggedEvent
from ..errors import AppendConditionError

T = TypeVar("T")


class NatsDCBRecorder(DCBRecorder):
    """A ``DCBRecorder`` on the DCB store ``name`` at ``url`` (else ``$NATS_URL``, else an embedded one)."""

    def __init__(self, name: str, *, url: str | None = None, tag_keys: Sequence[str] | None = None) -> None:
        self.name = name
        self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        try:
            self.client: Client = self._portal.call(partial(connect, url))
            self.store: DCBStore = self.call(self.client.dcb_store, name, tag_keys=tag_keys)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run an async eskit call on the recorder's event loop and wait for its result."""
        return self._portal.call(partial(func, *args, **kwargs))

    def read(
        self, query: DCBQuery | None = None, *, after: int | None = None, limit: int | None = None
    ) -> DCBReadResponse:
        result = self.call(self.store.read, _query(query), after=after, limit=limit)
        return ReadResponse([_sequenced(e) for e in result], result.head)

    def append(self, events: Sequence[DCBEvent], condition: DCBAppendCondition | None = None) -> int:
        if not events:
            raise ProgrammingError("append needs at least one event")
        tagged = [TaggedEvent(e.type, e.data, e.tags) for e in events]
        cond = None
        if condition is not None:
            cond = AppendCondition(_query(condition.fail_if_events_match) or Query(), condition.after)
        try:
            position: int = self.call(self.store.append, tagged, cond)
        except AppendConditionError as exc:
            raise IntegrityError(str(exc)) from exc
        return position

    def subscribe(self, query: DCBQuery | None = None, *, after: int | None = None) -> NatsDCBSubscription:
        return NatsDCBSubscription(self, query=query, after=after)

    def close(self, *, delete_store: bool = False) -> None:
        """Disconnect (deleting the store first if asked) and stop the portal thread."""
        try:
            if delete_store:
                self.call(self.client.delete_store, self.name)
            self.call(self.client.close)
        finally:
            self._portal_cm.__exit__(None, None, None)


class NatsDCBSubscription(DCBSubscription[NatsDCBRecorder]):
    """Blocks in ``next()`` until a matching event is stored; ``stop()`` or leaving ``with`` ends it."""

    def __init__(
        self, recorder: NatsDCBRecorder, query: DCBQuery | None = None, after: int | None = None
    ) -> None:
        super().__init__(recorder, query=query, after=after)
        self._events: Subscription = recorder.call(recorder.store.subscribe, _query(query), after=after)

    def __next__(self) -> DCBSequencedEvent:
        if self._has_been_stopped:
            raise StopIteration
        try:
            event: SequencedEvent = self._recorder.call(self._events.__anext__)
        except StopAsyncIteration:
            raise StopIteration from None
        self._last_position = event.position
        return _sequenced(event)

    def stop(self) -> None:
        if not self._has_been_stopped:
            super().stop()
            self._recorder.call(self._events.close)


class ReadResponse(DCBReadResponse):
    """Events already read, and the head position of the read."""

    def __init__(self, events: list[DCBSequencedEvent], head: int | None) -> None:
        self._events = iter(events)
        self._head = head

    @property
    def head(self) -> int | None:
        return self._head

    def __next__(self) -> DCBSequencedEvent:
        return next(self._events)


def _query(query: DCBQuery | None) -> Query | None:
    if query is None:
        return None
    return Query([QueryItem(types=list(i.types), tags=list(i.tags)) for i in query.items])


def _sequenced(event: SequencedEvent) -> DCBSequencedEvent:
    data = event.data if isinstance(event.data, bytes) else json.dumps(event.data).encode()  # JSON events
    return DCBSequencedEvent(DCBEvent(event.type, data, list(event.tags)), event.position)
