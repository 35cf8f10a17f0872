"""Marks: which stored event a state was built up to, so a cached or snapshotted state can prove it still
belongs to the stream it is used with.

>>> mark = Mark(12, "9f1c...", "2026-12-01T14:49:36.123456789Z")
>>> mark.matches(StoredMsg(12, "accounts.a1.deposited", {"Nats-Msg-Id": "9f1c...",
...     "Nats-Time-Stamp": "2026-12-01T14:49:36.123456789Z"}, b"{}"), "accounts.a1.")
True

A stream deleted and recreated starts its sequence at 1 again, so a position alone proves nothing: the event
at that position must be the same one, with the same id (``Nats-Msg-Id``) and, where it is known, the same
store time (``Nats-Time-Stamp``, nanoseconds: it tells apart events published without an id).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._nats.wire import StoredMsg
from .events import MSG_ID

STORED_AT = "Nats-Time-Stamp"


@dataclass(frozen=True, slots=True)
class Mark:
    """The event at ``position``: its id and store time (``None``: not known, e.g. right after an append)."""

    position: int
    event_id: str | None
    stored_at: str | None = None

    @classmethod
    def of(cls, msg: StoredMsg) -> Mark:
        """The mark of a stored message (from a Direct Get)."""
        return cls(msg.seq, msg.headers.get(MSG_ID), msg.headers.get(STORED_AT))

    def matches(self, msg: StoredMsg | None, prefix: str) -> bool:
        """Whether ``msg`` is this event: same position, on a subject under ``prefix``, same id and time."""
        return (
            msg is not None
            and msg.seq == self.position
            and msg.subject.startswith(prefix)
            and msg.headers.get(MSG_ID) == self.event_id
            and (self.stored_at is None or msg.headers.get(STORED_AT) == self.stored_at)
        )
