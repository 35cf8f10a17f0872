"""How pyeventsourcing's stored events and tracking records lie in an eskit store (subjects and headers).

>>> event_subject("bank_events", "5f0c5c4e-8c2a-4c1f-9d36-7b1f3c2a9e10", "bank:Account.Opened")
'bank_events.5f0c5c4e-8c2a-4c1f-9d36-7b1f3c2a9e10.bank:Account%2EOpened'
>>> tracking_subject("bank_events", "Accounts", 21)
'bank_events.%tracking=Accounts.processed.21'

A stored event is one message on ``<store>.<originator>.<topic>`` (exactly three tokens), its state the
payload as it is (compressed or encrypted by the library's mapper if configured), its version in a header.
The originator id is a UUID's text, or a ``str`` id made into one token by :func:`~eskit.events.encode_token`
(then a header says so, to hand back a ``str``); the topic is made into one token the same way
(``bank:Account.Opened`` -> ``bank:Account%2EOpened``; ``to_dataframe`` shows it decoded). A tracking record
is one message on ``<store>.%tracking=<application>.processed.<notification id>`` (four tokens: never an
event's subject; an encoded originator id has ``%`` only before two hex digits, never before ``t``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from uuid import UUID

from eventsourcing.persistence import DataError, Notification, StoredEvent, Tracking

from .._nats.wire import StoredMsg
from ..analysis.eventlog import decode_token, encode_token
from ..events import META_PREFIX, subject_parts

VERSION = META_PREFIX + "Originator-Version"  # eskit shows it as metadata "Originator-Version"
ID_TYPE = META_PREFIX + "Originator-Id-Type"  # "str" for str ids; absent for UUIDs (the common case)
TRACKING = "%tracking="
_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # str(UUID(...))

Message = tuple[str, bytes, dict[str, str]]


def originator_token(originator_id: UUID | str) -> str:
    """The subject token of an originator id: a UUID's text, or an encoded ``str``."""
    if isinstance(originator_id, UUID):
        return str(originator_id)
    if not isinstance(originator_id, str) or not originator_id:
        raise DataError(f"originator_id must be a UUID or a non-empty str, got {originator_id!r}")
    return encode_token(originator_id)


def tracking_token(application_name: str) -> str:
    """The aggregate token of an application's tracking records: ``%tracking=<application>``."""
    if not isinstance(application_name, str) or not application_name:
        raise DataError(f"application_name must be a non-empty str, got {application_name!r}")
    return TRACKING + encode_token(application_name)


def event_subject(store: str, originator: str, topic: str) -> str:
    """``<store>.<originator token>.<topic token>``."""
    return f"{store}.{originator}.{encode_token(topic)}"


def tracking_subject(store: str, application_name: str, notification_id: int) -> str:
    return f"{store}.{tracking_token(application_name)}.processed.{notification_id}"


def event_message(store: str, event: StoredEvent) -> Message:
    headers = {VERSION: str(event.originator_version)}
    if not isinstance(event.originator_id, UUID):
        headers[ID_TYPE] = "str"
    return event_subject(store, originator_token(event.originator_id), event.topic), event.state, headers


def tracking_message(store: str, tracking: Tracking) -> Message:
    name, notification_id = tracking.application_name, tracking.notification_id
    data = json.dumps({"application_name": name, "notification_id": notification_id}).encode()
    return tracking_subject(store, name, notification_id), data, {}


def is_event(msg: StoredMsg) -> bool:
    """True for a stored event a recorder wrote; False for a tracking record, or a message someone else
    appended to the store (no version header: readers pass over it)."""
    subject, headers = msg.subject, msg.headers
    version = headers.get(VERSION)
    if version is None or not (version.isascii() and version.isdigit() and len(version) <= 18) or (
        subject.count(".") != 2
    ):  # no version, or one no recorder writes ("abc", 5,000 digits): someone else's
        return False
    token = subject_parts(subject)[0]
    if headers.get(ID_TYPE) == "str":
        return not token.startswith(TRACKING)
    return _UUID_TEXT.fullmatch(token) is not None  # else notification() could not read the originator id


def version_of(headers: Mapping[str, str]) -> int:
    return int(headers[VERSION])


def tracked_id(subject: str) -> int:
    """The notification id of a tracking record's subject."""
    return int(subject.rsplit(".", 1)[1])


def notification(msg: StoredMsg) -> Notification:
    """A stored event message as the library's ``Notification`` (its id is the stream position)."""
    token, topic = subject_parts(msg.subject)
    originator: UUID | str = decode_token(token) if msg.headers.get(ID_TYPE) == "str" else UUID(token)
    return Notification(
        id=msg.seq,
        originator_id=originator,
        originator_version=version_of(msg.headers),
        topic=decode_token(topic),
        state=msg.data,
    )


def stored_event(msg: StoredMsg, originator_id: UUID | str) -> StoredEvent:
    return StoredEvent(
        originator_id=originator_id,
        originator_version=version_of(msg.headers),
        topic=decode_token(subject_parts(msg.subject)[1]),
        state=msg.data,
    )
