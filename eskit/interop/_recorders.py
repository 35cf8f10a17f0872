"""pyeventsourcing's aggregate, application, tracking and process recorders on one eskit store each.

>>> recorder = NatsApplicationRecorder("bank_events", url="nats://127.0.0.1:4222")   # doctest: +SKIP
>>> recorder.insert_events([StoredEvent(uuid4(), 1, "bank:Account.Opened", b"{}")])  # doctest: +SKIP
[1]

Every public method is a one-line call of its async twin (:mod:`eskit.interop._base`) through the
recorder's :class:`~eskit.interop._portal.Portal`.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    Notification,
    ProcessRecorder,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)

from .._nats.wire import StoredMsg
from ..analysis.eventlog import encode_token
from ..events import subject_parts
from ._base import NatsRecorder
from ._layout import is_event, notification


class NatsAggregateRecorder(NatsRecorder, AggregateRecorder):
    """Stored events per originator, each insert atomic and checked (an ``IntegrityError``, nothing written)."""

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        self._call(self._insert, stored_events)
        return None

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        result: list[StoredEvent] = self._call(self._select, originator_id, gt, lte, desc, limit)
        return result


class NatsApplicationRecorder(NatsAggregateRecorder, ApplicationRecorder):
    """Stored events and the application sequence: notification ids are stream positions."""

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        ids: list[int] = self._call(self._insert, stored_events)
        return ids

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        result: list[Notification] = self._call(self._notifications, start, limit, stop, topics, inclusive_of_start)
        return result

    def max_notification_id(self) -> int | None:
        result: int | None = self._call(self._max_notification_id)
        return result

    def subscribe(self, gt: int | None = None, topics: Sequence[str] = ()) -> NatsSubscription:
        return NatsSubscription(self, gt=gt, topics=topics)


class NatsTrackingRecorder(NatsRecorder, TrackingRecorder):
    """Tracking records, one sequence per upstream application: ids must grow (else ``IntegrityError``)."""

    def insert_tracking(self, tracking: Tracking) -> None:
        self._call(self._insert, (), tracking)

    def max_tracking_id(self, application_name: str) -> int | None:
        result: int | None = self._call(self._max_tracking_id, application_name)
        return result


class NatsProcessRecorder(NatsTrackingRecorder, NatsApplicationRecorder, ProcessRecorder):
    """Events and the tracking record of the notification that caused them, in one atomic batch."""

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        ids: list[int] = self._call(self._insert, stored_events, kwargs.get("tracking"))
        return ids


class NatsSubscription(Subscription[NatsApplicationRecorder]):
    """Notifications after ``gt`` (on ``topics``), then new ones as they are stored, from an ordered consumer.

    At most ``max_queued`` notifications wait for the iterator: then the consumer's callback waits too, so the
    server's flow control holds the rest back (a long catch-up is not read into memory ahead of its reader).
    """

    max_queued = 1000

    def __init__(self, recorder: NatsApplicationRecorder, gt: int | None = None, topics: Sequence[str] = ()) -> None:
        super().__init__(recorder, gt=gt, topics=topics)
        self._wanted = {encode_token(t) for t in topics}
        self._queue: queue.Queue[Notification | None] = queue.Queue()
        self._room = asyncio.Event()  # set while the queue has room; waited on, on the portal's loop
        self._room.set()
        self._sub = recorder._call(recorder._follow, gt or 0, self._deliver)

    async def _deliver(self, msg: StoredMsg) -> None:  # on the portal's event loop
        if is_event(msg) and (not self._wanted or subject_parts(msg.subject)[1] in self._wanted):
            self._queue.put(notification(msg))
            if self._queue.qsize() >= self.max_queued and not self._has_been_stopped:
                self._room.clear()
                await self._room.wait()  # set by __next__ (or stop) from the reader's thread

    def __next__(self) -> Notification:
        item = None if self._has_been_stopped else self._queue.get()
        if item is None or self._has_been_stopped:
            raise StopIteration
        if not self._room.is_set() and self._queue.qsize() <= self.max_queued // 2:
            self._recorder.portal.soon(self._room.set)
        self._last_notification_id = item.id
        return item

    def stop(self) -> None:
        if self._has_been_stopped:
            return
        super().stop()
        self._queue.put(None)  # wakes a blocked __next__
        with contextlib.suppress(Exception):  # the recorder may be closed already
            self._recorder.portal.soon(self._room.set)
            self._recorder.portal.call(self._sub.unsubscribe)
