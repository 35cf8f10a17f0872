"""Issuing one command of a process manager: an :class:`~eskit.process.commands.Append` to a store or a
:class:`~eskit.process.commands.Request` to a service, with the id derived from the triggering event.

>>> sender = Sender(client, "Checkout")                                                  # doctest: +SKIP
>>> await sender.send("orders", placed_event, 0, Request("payment.charge", {...}), suspect=False)  # doctest: +SKIP

A failure a retry may fix raises :class:`Retry`, a refusal :class:`Refused` (their message is the reason a
parked event shows); the manager decides what to do with them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import nats

from ..codec import encode_json
from ..errors import ConcurrencyError, DuplicateEventError, ValidationError
from ..events import CAUSATION_ID, CORRELATION_ID, Event, RecordedEvent
from .commands import COMMAND_ID, Append, Command, Request, command_id
from .service import service_subject

if TYPE_CHECKING:
    from ..connection import Client
    from ..store import EventStore

SERVICE_ERROR, SERVICE_ERROR_CODE = "Nats-Service-Error", "Nats-Service-Error-Code"
MAX_TIMEOUT = 3600  # seconds a Request may wait for its reply


class Retry(Exception):
    """A command failed in a way a retry may fix (its message is the reason)."""


class Refused(Exception):
    """A command was refused: no retry will change that (its message is the reason)."""


@dataclass(slots=True)
class SendCounts:
    commands: int = 0  # issued (a repeat after a crash counts again)
    retried: int = 0  # failed attempts tried again (counted by the manager)
    checked: int = 0  # Appends read for before issuing (possibly issued before a restart that lost positions)


class Sender:
    """Issues commands for process manager ``name`` through ``client`` (see the module docstring)."""

    def __init__(self, client: Client, name: str, stores: dict[str, EventStore] | None = None) -> None:
        self.client, self.name = client, name
        self.counts = SendCounts()
        self._stores: dict[str, EventStore] = dict(stores or {})  # opened by the caller (privacy=, upcasters=)

    async def store(self, name: str) -> EventStore:
        """Store ``name``, opened once."""
        store = self._stores.get(name)
        if store is None:
            store = self._stores[name] = await self.client.event_store(name)
        return store

    async def send(self, source: str, event: RecordedEvent, index: int, command: Command, *, suspect: bool) -> None:
        """Issue ``command``, the ``index``-th of ``event``, with the id derived from them."""
        cid = command_id(self.name, source, event.position, event.id, index)
        correlation = event.correlation_id or event.id
        self.counts.commands += 1
        if isinstance(command, Append):
            await self._append(command, cid, event, correlation, suspect=suspect)
        else:
            await self._request(command, cid, event, correlation)

    async def _append(
        self, command: Append, cid: str, event: RecordedEvent, correlation: str | None, *, suspect: bool
    ) -> None:
        where = f"Append to {command.store}/{command.aggregate_id}"
        given = command.events
        if isinstance(given, str | bytes) or not isinstance(given, Iterable) or not given:
            raise Refused(f"{where}: events must be a non-empty list of eskit.Event, got {given!r}")
        wrong = [e for e in given if not isinstance(e, Event)]
        if wrong:
            raise Refused(f"{where}: events must be eskit.Event objects, got {wrong[0]!r}")
        events = [
            replace(e, id=f"{cid}-{j}", causation_id=e.causation_id or event.id,
                    correlation_id=e.correlation_id or correlation)
            for j, e in enumerate(given)
        ]  # fmt: skip
        try:
            target = await self.store(command.store)
            # issued before a crash (the in-flight mark says it may have been)? past the duplicate window too
            if suspect and command.expected_position is None:
                self.counts.checked += 1
                if await target._find_stored(command.aggregate_id, events, after=0, reach=None) is not None:
                    return
            await target.append(command.aggregate_id, events, expected_position=command.expected_position)
        except (ValidationError, ConcurrencyError, DuplicateEventError) as exc:
            raise Refused(f"{where}: {type(exc).__name__}: {exc}") from exc

    async def _request(self, command: Request, cid: str, event: RecordedEvent, correlation: str | None) -> None:
        try:
            subject = service_subject(self.client, command.subject)
            if not isinstance(command.data, Mapping):
                raise ValidationError(f"data takes a JSON object (a dict), got {command.data!r}"[:300])
            timeout = command.timeout
            if type(timeout) not in (int, float) or not 0 < timeout <= MAX_TIMEOUT:
                raise ValidationError(f"timeout takes a number of seconds from 0 to {MAX_TIMEOUT}, got {timeout!r}")
            body = encode_json(dict(command.data), "request")
        except ValidationError as exc:
            raise Refused(f"Request {command.subject}: {exc}") from exc
        headers = {COMMAND_ID: cid}
        if correlation:
            headers[CORRELATION_ID] = correlation
        if event.id:
            headers[CAUSATION_ID] = event.id
        try:
            reply = await self.client.nc.request(subject, body, timeout=timeout, headers=headers)
        except nats.errors.NoRespondersError:
            raise Retry(f"Request {subject}: no service answers on {subject!r}; is it running?") from None
        except nats.errors.TimeoutError:
            raise Retry(f"Request {subject}: no reply within {command.timeout:g}s") from None
        error = (reply.headers or {}).get(SERVICE_ERROR)
        if error is not None:
            code = (reply.headers or {}).get(SERVICE_ERROR_CODE, "500")
            problem = f"Request {subject}: the service answered {code} {error}"
            raise Refused(problem) if code.startswith("4") else Retry(problem)
