"""The commands a process manager issues, and the ids that make a retried command one command.

A handler returns :class:`Append` (events for an aggregate of a store) or :class:`Request` (a NATS request
to a service, e.g. one started with :func:`~eskit.process.service.command_service`):

>>> Append("shipping", "o1", [Event("requested", {"order": "o1"})], expected_position=0).store
'shipping'
>>> Request("payment.charge", {"order": "o1", "amount": 30}).subject
'payment.charge'

Every command gets an id derived from the event that triggered it (never random), so issuing it again after
a crash is the same command: the events of an ``Append`` carry ids derived from it (``Nats-Msg-Id``), and a
``Request`` carries it in the ``Eskit-Command-Id`` header.

>>> command_id("checkout", "orders", 7, "5f1c", 0)
'checkout-5f1c-0'
>>> command_id("checkout", "orders", 7, None, 1)
'checkout-orders-7-1'

An id derived from an id derived from ... (a chain of steps) would grow at every step: an origin longer than
64 characters is replaced by a hash of it (the same for the same origin), so an id stays one subject token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..events import Event

COMMAND_ID = "Eskit-Command-Id"  # the header a Request carries its command id in
MAX_ORIGIN = 64  # longer event ids are hashed into a command id

__all__ = ["COMMAND_ID", "Append", "Command", "Request", "command_id"]


@dataclass(frozen=True, slots=True)
class Append:
    """Append ``events`` to aggregate ``aggregate_id`` of store ``store`` (a name, as in ``client.event_store``).

    ``expected_position=0`` (the aggregate must not exist yet) makes the append idempotent for ever: a
    repeat finds its own events stored and succeeds without storing them again. Without it, a repeat is
    recognised by its event ids (``Nats-Msg-Id``, within the store's duplicate window, and by reading the
    aggregate when the process manager may have issued it before a crash).

    >>> Append("orders", "o1", [Event("cancelled", {"reason": "declined"})]).aggregate_id
    'o1'
    """

    store: str
    aggregate_id: str
    events: Sequence[Event]
    expected_position: int | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """Send ``data`` (JSON) as a NATS request to ``subject`` and wait up to ``timeout`` s for the reply.

    The command id travels in the ``Eskit-Command-Id`` header: the service must do the work once per id
    (:func:`~eskit.process.service.command_service` does). A reply with a ``Nats-Service-Error`` header,
    no responder or no reply in time is a failure: retried, then the triggering event is parked.

    >>> Request("payment.charge", {"order": "o1", "amount": 30}, timeout=1.0).timeout
    1.0
    """

    subject: str
    data: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 2.0


Command = Append | Request


def command_id(manager: str, store: str, position: int, event_id: str | None, index: int) -> str:
    """The id of the ``index``-th command ``manager`` issues for an event: from the event's id, or, for an
    event stored without one, from its store and position. The same event always gives the same ids."""
    origin = event_id if event_id else f"{store}-{position}"
    if len(origin) > MAX_ORIGIN:
        origin = hashlib.blake2b(origin.encode(), digest_size=16).hexdigest()
    return f"{manager}-{origin}-{index}"
