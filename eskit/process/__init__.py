"""Process managers (sagas): flows across stores and services, driven by events, exactly once in effect.

- :mod:`eskit.process.manager`: :class:`ProcessManager` and :func:`reacts_to` (handlers return commands);
- :mod:`eskit.process.commands`: the commands, :class:`Append` and :class:`Request`, and their ids;
- :mod:`eskit.process.service`: :func:`command_service`, a NATS request-reply service that acts once per
  command id;
- inside: :mod:`eskit.process.feed` (a subscriber per store, on the projections' machinery) and
  :mod:`eskit.process.sending` (issuing one command with its id).

>>> class Checkout(eskit.ProcessManager):
...     @eskit.reacts_to("orders", "placed")
...     def _placed(self, event):
...         return eskit.Request("payment.charge", {"order": event.aggregate_id, "amount": event.data["amount"]})
"""

from __future__ import annotations

from .commands import Append, Command, Request, command_id
from .manager import ProcessManager, ProcessStats, reacts_to
from .service import CommandService, ServiceStats, command_service

__all__ = [
    "Append",
    "Command",
    "CommandService",
    "ProcessManager",
    "ProcessStats",
    "Request",
    "ServiceStats",
    "command_id",
    "command_service",
    "reacts_to",
]
