"""Dead letters: events a projection could not apply, parked with the reason, so the projection goes on.

A poison event (undecodable data, or a handler that keeps raising) is copied to the store's dead-letter
stream, ``<STORE>_PARKED`` (subjects ``<store>_parked.<projection>.<position>``), with its original subject,
position, headers and bytes, the reason and the number of attempts. Nothing is lost: the event also stays in
its own stream; the copy says *who* could not apply it and *why*. An upcast event (:mod:`eskit.upcasting`)
whose handler raised is parked as the projection saw it: its upcast data and version.

>>> parked = await view.parked()                       # doctest: +SKIP
>>> parked[0].position, parked[0].reason               # doctest: +SKIP
(7, "OrdersView._shipped raised KeyError: 'tracking'")
>>> await view.replay_parked()                         # after fixing the handler    # doctest: +SKIP
1
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .._nats.jsapi import guarded
from .._nats.wire import ApiError, parse_ack
from .._reader import Reader
from .._redact import redact
from ..errors import EventStoreError, PermissionDeniedError, StreamNotFoundError
from ..events import MSG_ID, Event, RecordedEvent, decode, encode_data, encode_headers, parse_time

if TYPE_CHECKING:
    from ..connection import Client

PREFIX = "Eskit-Parked-"
MAX_REASON = 2000


@dataclass(frozen=True, slots=True)
class ParkedEvent:
    """An event a projection parked: the event as it was stored, and why it was parked."""

    projection: str
    position: int
    reason: str
    attempts: int
    parked_at: datetime
    event: RecordedEvent
    parked_seq: int  # its sequence in the dead-letter stream

    @property
    def type(self) -> str:
        return self.event.type


class DeadLetters:
    """The dead-letter stream of one event store (see the module docstring)."""

    def __init__(self, client: Client, store: str) -> None:
        self.client = client
        self.name = f"{store}_parked"
        self.stream = self.name.upper()
        self.reader = Reader(client, self.stream, self.name)
        self._ready = False

    def __repr__(self) -> str:
        return f"<DeadLetters {self.stream}>"

    async def park(self, projection: str, event: RecordedEvent, *, reason: str, attempts: int) -> bool:
        """Copy ``event`` to the dead-letter stream; False if this projection had parked it already."""
        if not self._ready:
            # created the first time; not immutable: a parked copy is removed once it was replayed
            try:
                await self.client.event_store(self.name, allow_delete_history=True)
            except PermissionDeniedError as exc:  # a writer under eskit.auth may not create streams
                raise PermissionDeniedError(
                    f"{exc}; an admin creates the dead-letter store once: "
                    f"await admin.event_store({self.name!r}, allow_delete_history=True)"
                ) from exc
            self._ready = True
        subject = f"{self.name}.{projection}.{event.position}"
        if await self._exists(subject):
            return False
        headers = _original_headers(event)
        headers.update({
            MSG_ID: f"{projection}.{event.position}.{uuid.uuid4().hex}",  # unique: a re-park after remove() stores
            PREFIX + "Projection": projection, PREFIX + "Position": str(event.position),
            PREFIX + "Subject": event.subject, PREFIX + "Timestamp": event.timestamp.isoformat(),
            PREFIX + "Reason": redact(" ".join(_scrubbed(reason, event).split()))[:MAX_REASON] or "unknown",
            PREFIX + "Attempts": str(attempts),
        })  # fmt: skip
        ack = parse_ack(await self.client.wire.request(subject, _payload(event), headers))
        if isinstance(ack, ApiError):
            raise EventStoreError(
                f"parking position {event.position} in {self.stream} failed: {ack.description}"
            )
        return True

    async def _exists(self, subject: str) -> bool:
        return await self.reader.last(subject) is not None

    async def list(self, projection: str | None = None) -> list[ParkedEvent]:
        """The parked events (of one projection, or of all), oldest first; [] if none were ever parked."""
        filter_subject = f"{self.name}.{projection}.>" if projection else f"{self.name}.>"
        parked = []
        try:
            async for page in self.reader.pages(filter_subject, 0, None):
                parked += [_parked(m.seq, m.headers, m.data) for m in page.messages]
        except StreamNotFoundError:
            return []
        return parked

    async def remove(self, parked: ParkedEvent) -> None:
        """Delete one parked copy (after it was replayed successfully); the original stays in its stream."""
        await guarded(f"remove parked event {parked.parked_seq} from {self.stream}",
                      self.client.js.delete_msg(self.stream, parked.parked_seq))

    async def delete(self) -> bool:
        """Delete the whole dead-letter stream (e.g. when the store itself is deleted)."""
        self._ready = False
        return await self.client.delete_store(self.name)


PERSONAL_MARK = b'"eskit-pii:1:'  # an encrypted personal field (eskit.privacy)
FORGOTTEN = "<forgotten>"  # eskit.privacy.FORGOTTEN (not imported: the projections do not depend on privacy)


def _payload(event: RecordedEvent) -> bytes:
    """The stored bytes; for an event an upcaster changed, its upcast data (it goes with its upcast version).
    An event with encrypted personal fields keeps its stored bytes: a parked copy never holds them decrypted."""
    if event.decode_error is not None or not event.raw or PERSONAL_MARK in event.raw:
        return event.raw
    try:
        unchanged = json.loads(event.raw) == event.data
    except (ValueError, RecursionError):
        unchanged = True
    return event.raw if unchanged else encode_data(Event(event.type, event.data))


def _scrubbed(reason: str, event: RecordedEvent) -> str:
    """``reason`` without the personal values ``event`` holds decrypted: a handler's error often quotes the value
    it choked on, and the parked copy would keep it in plain text, beyond ``eskit.forget``.

    >>> from types import SimpleNamespace as S
    >>> _scrubbed("bad 'ann@x.org'", S(raw=b'{"email": "eskit-pii:1:ab:cd"}', data={"email": "ann@x.org"}))
    "bad '<forgotten>'"
    """
    if not event.raw or PERSONAL_MARK not in event.raw or not isinstance(event.data, dict):
        return reason
    try:
        stored = json.loads(event.raw)
    except (ValueError, RecursionError):
        return reason
    if not isinstance(stored, dict):
        return reason
    for name, value in stored.items():
        if isinstance(value, str) and value.startswith(PERSONAL_MARK[1:].decode()) and name in event.data:
            plain = event.data[name]
            for shown in (plain,) if isinstance(plain, str) else dict.fromkeys((repr(plain), str(plain))):
                if shown and shown != FORGOTTEN:
                    reason = reason.replace(shown, FORGOTTEN)
    return reason


def _original_headers(event: RecordedEvent) -> dict[str, str]:
    """The event's own headers, rebuilt from the recorded event; its id travels as Eskit-Parked-Event-Id."""
    original = Event(
        event.type, id=event.id or "", schema_version=event.schema_version,
        occurred_at=event.occurred_at or event.timestamp, correlation_id=event.correlation_id,
        causation_id=event.causation_id, metadata=event.metadata,
    )  # fmt: skip
    headers = encode_headers(original)
    headers[PREFIX + "Event-Id"] = headers.pop(MSG_ID)
    return headers


def _parked(seq: int, headers: Mapping[str, str], raw: bytes) -> ParkedEvent:
    h = dict(headers)
    original = {k: v for k, v in h.items() if not k.startswith(PREFIX) and not k.startswith("Nats-")}
    if h.get(PREFIX + "Event-Id"):
        original[MSG_ID] = h[PREFIX + "Event-Id"]
    position = int(h[PREFIX + "Position"])
    epoch = datetime.fromtimestamp(0, UTC)
    event = decode(position, h[PREFIX + "Subject"], original, raw)
    event = replace(event, timestamp=parse_time(h.get(PREFIX + "Timestamp")) or epoch)
    return ParkedEvent(
        projection=h[PREFIX + "Projection"], position=position, reason=h.get(PREFIX + "Reason", ""),
        attempts=int(h.get(PREFIX + "Attempts", "1")),
        parked_at=parse_time(h.get("Nats-Time-Stamp")) or epoch,
        event=event, parked_seq=seq,
    )  # fmt: skip
