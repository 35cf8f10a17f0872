"""pyeventsourcing on NATS JetStream: its recorders and persistence module, backed by eskit stores.

>>> app = Application(env={"PERSISTENCE_MODULE": "eskit.interop.eventsourcing",
...                        "NATS_URL": "nats://127.0.0.1:4222"})                  # doctest: +SKIP
>>> recorder = NatsDCBRecorder("courses", tag_keys=["course", "student"])         # doctest: +SKIP

``NatsAggregateRecorder``, ``NatsApplicationRecorder``, ``NatsTrackingRecorder`` and ``NatsProcessRecorder``
(each ``(name, url=...)``) implement the library's recorder interfaces on one eskit store (one stream) each;
``Factory`` is the library's ``InfrastructureFactory``; ``NatsDCBRecorder`` its ``DCBRecorder``. All pass the
library's own contract tests, unchanged (``tests/test_eventsourcing_conformance.py``,
``tests/test_dcb_conformance.py``). How the library's records map onto JetStream:

- **Stores.** The factory opens ``<app>_events`` (application and process recorders), ``<app>_<purpose>``
  (aggregate recorders, e.g. ``<app>_snapshots``) and ``<app>_tracking`` (a tracking recorder alone), where
  ``<app>`` is the application's name in lower case, other characters than ``a-z 0-9 - _`` made ``_``
  (``stored`` when the environment has no name). ``CREATE_TABLE=n``: the streams are used, not created.
- **Stored events.** One message on ``<store>.<originator id>.<topic>``; state as payload (the library's
  mapper compresses and encrypts it: ``COMPRESSOR_TOPIC``, ``CIPHER_TOPIC``, ``CIPHER_KEY``);
  ``originator_version`` in the header ``Eskit-Meta-Originator-Version`` (eskit shows it as metadata).
  Topics and ``str`` originator ids become one subject token through ``eskit.events.encode_token``
  (``%2E`` for ``.``); ``to_dataframe`` shows them decoded.
- **Versions and conflicts.** An insert is one message, or one atomic batch (all or nothing). The first
  message of each originator carries ``Nats-Expected-Last-Subject-Sequence`` with
  ``-Subject: <store>.<originator>.>``: the position of the originator's last event as the recorder knows it
  (from its reads and writes; 0 for one it has not seen). A rejected check stores nothing; the recorder asks
  the leader for the originator's last event and raises ``IntegrityError`` if that holds the inserted
  version or a later one, else sends again (at most 5 times). So each originator's versions must grow in
  insertion order: inserting a version below the last recorded one is refused even if it is free.
- **Notification ids** are stream positions. A failed check or batch stores nothing and uses no position,
  and a batch's messages get consecutive positions at its commit, so an application recorder's ids have no
  gaps and a reader never sees a later id before an earlier one. ``max_notification_id`` asks the leader
  for the last message on ``<store>.*.*`` (events only). ``select_notifications`` reads the store with batch
  Direct Get (``start``, ``stop``, ``limit``; ``topics`` filtered as it reads); ``subscribe`` is an ordered
  consumer from ``gt + 1``: it catches up, then stays live, at most ``NatsSubscription.max_queued``
  notifications ahead of its reader (then flow control holds the rest on the server).
- **Tracking.** One message per record on ``<store>.%tracking=<application>.processed.<notification id>``,
  checked like an originator (ids must grow per upstream application: ``IntegrityError`` otherwise). The
  process recorder puts it in the same atomic batch as the events it caused, so both are stored or neither.
  Tracking records take positions too: a process recorder's notification ids skip them (ids still grow,
  and a skipped id never appears later). ``max_tracking_id`` is the last record's id; ``wait`` polls it.
- **Clusters.** Reads are Direct Gets, answered by any replica; a recorder's reads go on until they hold
  what it wrote (read your writes), and conflicts are judged against the leader.

eventsourcing is synchronous; eskit is async. Each recorder (or a factory's recorders together) runs one
event loop in a portal thread (:class:`~eskit.interop._portal.Portal`) and calls the async store through it:
no method body is written twice. A failed append condition is the library's ``IntegrityError``; other store
failures are its ``OperationalError`` (the eskit error as the cause).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from eventsourcing.dcb.api import (
    DCBAppendCondition,
    DCBEvent,
    DCBQuery,
    DCBReadResponse,
    DCBRecorder,
    DCBSequencedEvent,
    DCBSubscription,
)
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    IntegrityError,
    ProcessRecorder,
    ProgrammingError,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic, strtobool

from ..connection import Client
from ..dcb.store import AppendCondition, DCBStore, Query, QueryItem, SequencedEvent, Subscription, TaggedEvent
from ..errors import AppendConditionError
from ._base import NatsRecorder
from ._portal import Portal
from ._recorders import (
    NatsAggregateRecorder,
    NatsApplicationRecorder,
    NatsProcessRecorder,
    NatsSubscription,
    NatsTrackingRecorder,
)

__all__ = [
    "Factory",
    "NatsAggregateRecorder",
    "NatsApplicationRecorder",
    "NatsDCBRecorder",
    "NatsProcessRecorder",
    "NatsSubscription",
    "NatsTrackingRecorder",
    "store_prefix",
]

T = TypeVar("T")


class NatsDCBRecorder(DCBRecorder):
    """A ``DCBRecorder`` on the DCB store ``name`` at ``url`` (else ``$NATS_URL``, else an embedded one)."""

    def __init__(self, name: str, *, url: str | None = None, tag_keys: Sequence[str] | None = None) -> None:
        self.name = name
        self._portal = Portal(url)
        self.client: Client = self._portal.client
        try:
            self.store: DCBStore = self.call(self.client.dcb_store, name, tag_keys=tag_keys)
        except BaseException:
            self._portal.close()
            raise

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run an async eskit call on the recorder's event loop and wait for its result."""
        return self._portal.call(func, *args, **kwargs)

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
        finally:
            self._portal.close()


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


def store_prefix(application_name: str) -> str:
    """The store name prefix of an application: its name in lower case, other than ``a-z 0-9 - _`` as ``_``.

    >>> store_prefix("BankAccounts")
    'bankaccounts'
    """
    return re.sub(r"[^a-z0-9_-]", "_", application_name.lower()) or "stored"


R = TypeVar("R", bound=NatsRecorder)


class Factory(InfrastructureFactory[NatsTrackingRecorder]):
    """The library's persistence module on NATS: ``PERSISTENCE_MODULE=eskit.interop.eventsourcing``.

    ``NATS_URL`` (or ``<APP>_NATS_URL``) names the server; unset, an embedded one is started and stopped with
    the factory. One connection serves all the recorders a factory makes; it is opened with the first of them
    (the library also makes factories only for their mappers, and does not close those).

    >>> factory = Factory({"NATS_URL": "nats://127.0.0.1:4222"})          # doctest: +SKIP
    >>> recorder = factory.application_recorder()                        # doctest: +SKIP
    """

    NATS_URL = "NATS_URL"
    CREATE_TABLE = "CREATE_TABLE"

    aggregate_recorder_class = NatsAggregateRecorder
    application_recorder_class = NatsApplicationRecorder
    tracking_recorder_class = NatsTrackingRecorder
    process_recorder_class = NatsProcessRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        self._portal: Portal | None = None
        self.prefix = store_prefix(self.env.name) if self.env.name else "stored"

    @property
    def portal(self) -> Portal:
        """The factory's connection, opened on first use."""
        if self._portal is None:
            self._portal = Portal(self.env.get(self.NATS_URL) or None)
        return self._portal

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        return self._recorder(self.aggregate_recorder_class, f"{self.prefix}_{purpose}")

    def application_recorder(self) -> ApplicationRecorder:
        cls = self._topic(self.APPLICATION_RECORDER_TOPIC, self.application_recorder_class)
        return self._recorder(cls, f"{self.prefix}_events")

    def tracking_recorder(
        self, tracking_recorder_class: type[NatsTrackingRecorder] | None = None
    ) -> NatsTrackingRecorder:
        cls = tracking_recorder_class or self._topic(self.TRACKING_RECORDER_TOPIC, self.tracking_recorder_class)
        return self._recorder(cls, f"{self.prefix}_tracking")

    def process_recorder(self) -> ProcessRecorder:
        cls = self._topic(self.PROCESS_RECORDER_TOPIC, self.process_recorder_class)
        return self._recorder(cls, f"{self.prefix}_events")

    def _topic(self, key: str, default: type[R]) -> type[R]:
        topic = self.env.get(key)
        cls: type[R] = resolve_topic(topic) if topic else default
        if not (isinstance(cls, type) and issubclass(cls, default)):
            raise ProgrammingError(f"{key}={topic!r} is not a subclass of {default.__name__}")
        return cls

    def _recorder(self, cls: type[R], name: str) -> R:
        create = bool(strtobool(self.env.get(self.CREATE_TABLE) or "yes"))
        return cls(name, portal=self.portal, create=create)

    def close(self) -> None:
        if self._portal is not None:
            self._portal.close()
