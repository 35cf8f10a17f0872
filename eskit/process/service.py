"""A command service on NATS request-reply that does its work once per command id.

``decide`` turns a command (the request's JSON) into the one event that records its outcome; the service
stores it in ``store`` as the first event of the aggregate named by the command id, and replies with it:

>>> def charge(command):
...     if command["amount"] > 100:
...         return eskit.Event("declined", {"order": command["order"], "reason": "over the limit"})
...     return eskit.Event("captured", {"order": command["order"], "amount": command["amount"]})
>>> payments = await eskit.command_service(client, "payment.charge", store="payments", decide=charge)  # doctest: +SKIP
>>> await client.nc.request("payment.charge", b'{"order": "o1", "amount": 30}',
...                         headers={"Eskit-Command-Id": "c1"})                                  # doctest: +SKIP
>>> await payments.stop()                                                                        # doctest: +SKIP

The request's ``Eskit-Correlation-Id`` and ``Eskit-Causation-Id`` headers (a process manager sends them) are
set on the stored event, so one flow's events across stores share a correlation id.

The reply is JSON: ``{"command_id", "type", "data", "position", "duplicate"}``; a request without a command
id, or whose ``decide`` raises :class:`~eskit.errors.DecisionError` or returns no ``Event``, gets a
``Nats-Service-Error`` reply with code 400 (refused: a retry gets the same answer); any other exception of
``decide`` or the store, code 500 (worth a retry).

Once per command id, for ever: a repeated command finds the outcome stored the first time (one read before
``decide``, so ``decide`` is not run again) and gets it as the answer (``"duplicate": true``), even if
``decide`` would now decide otherwise. The outcome is appended with ``expected_position=0`` (the aggregate
must not exist): two copies of the service in one queue group share the requests and still store one outcome
per id (two copies that get one id at the same moment may both run ``decide``; one outcome is stored).

The service is a `NATS micro service <https://docs.nats.io/using-nats/developer/services>`_: ``nats micro
list`` and ``nats micro stats`` show it. In a learner namespace its subject gets the namespace as a prefix
(``alice.payment.charge``), as a process manager's :class:`~eskit.process.commands.Request` does.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import nats.micro
from nats.micro.request import Request as MicroRequest
from nats.micro.service import Service

from .._redact import redact
from ..codec import encode_json
from ..errors import ConcurrencyError, DecisionError, EskitError, ValidationError
from ..events import CAUSATION_ID, CORRELATION_ID, Event, RecordedEvent, check_token
from ..store import EventStore
from .commands import COMMAND_ID

if TYPE_CHECKING:
    from ..connection import Client

__all__ = ["CommandService", "ServiceStats", "command_service", "service_subject"]

Decide = Callable[[dict[str, Any]], Event | Awaitable[Event]]
MAX_IN_FLIGHT = 256  # requests handled at once (each waits for its append)
STOP_WAIT = 5.0  # seconds stop() gives the requests being handled
_SUBJECT = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")


def service_subject(client: Client, subject: str) -> str:
    """``subject`` as sent on the wire: with the learner namespace as a prefix, if the client has one."""
    if not isinstance(subject, str) or not _SUBJECT.fullmatch(subject):
        raise ValidationError(f"a service subject is tokens of letters, digits, - and _ joined by dots, "
                              f"such as 'payment.charge'; got {subject!r}")  # fmt: skip
    return f"{client.namespace}.{subject}" if client.namespace else subject


@dataclass(frozen=True, slots=True)
class ServiceStats:
    """What a command service did: outcomes stored, repeats answered from the store, error replies."""

    handled: int
    duplicates: int
    errors: int


@dataclass(slots=True)
class _Turn:
    """The requests for one command id being handled at one copy of a service: they go one at a time."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class CommandService:
    """A running command service (see the module docstring); :meth:`stop` ends it."""

    def __init__(self, client: Client, subject: str, store: EventStore, decide: Decide) -> None:
        self.client, self.subject, self.store, self.decide = client, subject, store, decide
        self._service: Service | None = None
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        self._deciding: dict[str, _Turn] = {}  # command id -> the requests for it at this copy
        self._handled = self._duplicates = self._errors = 0

    def __repr__(self) -> str:
        return f"<CommandService {self.subject} -> {self.store.name} {self.stats}>"

    @property
    def stats(self) -> ServiceStats:
        return ServiceStats(self._handled, self._duplicates, self._errors)

    async def start(self, name: str) -> None:
        about = f"eskit command service: outcomes in {self.store.name}"
        self._service = await nats.micro.add_service(self.client.nc, name=name, version="1.0.0", description=about)
        await self._service.add_endpoint(name=name, subject=self.subject, handler=self._receive)

    async def _receive(self, request: MicroRequest) -> None:
        await self._slots.acquire()  # at most MAX_IN_FLIGHT at once: the rest wait in the subscription
        task = asyncio.get_running_loop().create_task(self._handle(request))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _handle(self, request: MicroRequest) -> None:
        headers = request.headers or {}
        command_id = headers.get(COMMAND_ID, "")
        try:
            check_token(command_id, f"the {COMMAND_ID} header")
            command = json.loads(request.data or b"{}")
            if not isinstance(command, dict):
                raise ValidationError(f"a command is a JSON object, got {type(command).__name__}")
        except (EskitError, ValueError) as exc:
            self._errors += 1
            await request.respond_error("400", _said(str(exc)))
            return
        try:
            flow = (headers.get(CORRELATION_ID), headers.get(CAUSATION_ID))
            recorded, duplicate = await self._once(command_id, command, flow)
        except (DecisionError, ValidationError) as exc:  # refused: a retry gets the same answer
            self._errors += 1
            await request.respond_error("400", _said(f"{type(exc).__name__}: {exc}"))
            return
        except Exception as exc:  # decide raised, or the store failed: the caller retries
            self._errors += 1
            await request.respond_error("500", _said(f"{type(exc).__name__}: {exc}"))
            return
        self._handled += not duplicate
        self._duplicates += duplicate
        reply = {"command_id": command_id, "type": recorded.type, "data": recorded.data,
                 "position": recorded.position, "duplicate": duplicate}  # fmt: skip
        await request.respond(encode_json(reply, "reply"))

    async def _once(
        self, command_id: str, command: dict[str, Any], flow: tuple[str | None, str | None]
    ) -> tuple[RecordedEvent, bool]:
        """The outcome of ``command_id``: decided and stored now, or (a repeat) the one stored before.

        A repeat is looked up before ``decide`` runs (one read), and repeats arriving at this copy while the
        first is being decided wait for it: ``decide`` runs once per command id, unless two copies of the
        service get the same id at the same moment (then both decide, and one outcome is stored)."""
        turn = self._deciding.setdefault(command_id, _Turn())
        turn.users += 1
        try:
            async with turn.lock:
                stored = await self.store.read(command_id)
                if stored:
                    return stored[0], True
                return await self._decide(command_id, command, flow)
        finally:
            turn.users -= 1
            if not turn.users:
                del self._deciding[command_id]

    async def _decide(
        self, command_id: str, command: dict[str, Any], flow: tuple[str | None, str | None]
    ) -> tuple[RecordedEvent, bool]:
        outcome = self.decide(command)
        event = await outcome if inspect.isawaitable(outcome) else outcome
        if not isinstance(event, Event):
            raise ValidationError(f"decide must return an eskit.Event, got {type(event).__name__}")
        correlation, causation = flow  # the caller's flow: its events and this one share a correlation id
        event = replace(event, correlation_id=event.correlation_id or correlation,
                        causation_id=event.causation_id or causation)  # fmt: skip
        try:  # a fresh event id per attempt: a repeat conflicts instead of passing as our own retry
            position = await self.store.append(command_id, [event], expected_position=0)
        except ConcurrencyError:  # the same command, handled meanwhile by another request or copy
            return (await self.store.read(command_id))[0], True
        return RecordedEvent(position, f"{self.store.name}.{command_id}.{event.type}", command_id, event.type,
                             dict(event.data), event.id, event.occurred_at), False  # fmt: skip

    async def stop(self, *, timeout: float = STOP_WAIT) -> None:
        """Stop answering; requests being handled get ``timeout`` seconds to finish, then are cancelled (a
        ``decide`` that hangs: its caller gets no reply and retries)."""
        service, self._service = self._service, None
        if service is not None:
            await service.stop()
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def __aenter__(self) -> CommandService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def command_service(
    client: Client, subject: str, *, store: str | EventStore, decide: Decide, name: str | None = None
) -> CommandService:
    """Start a command service on ``subject`` that stores each command's outcome in ``store`` (see the module
    docstring); ``name`` is its micro service name (default: the subject with dashes). ``store``: a name, or
    a store opened with options (``client.event_store("payments", privacy=personal)``: outcomes with personal
    fields are stored encrypted)."""
    wire_subject = service_subject(client, subject)
    if not callable(decide):
        raise ValidationError(f"decide takes a function command -> eskit.Event, got {decide!r}")
    service_name = name or subject.replace(".", "-")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", service_name):
        raise ValidationError(f"a service name is letters, digits, - and _, got {service_name!r}")
    opened = store if isinstance(store, EventStore) else await client.event_store(store)
    service = CommandService(client, wire_subject, opened, decide)
    await service.start(service_name)
    return service


def _said(problem: str) -> str:
    """An error as a reply header: one line, at most 500 characters, credentials masked."""
    return redact(" ".join(problem.split()))[:500]


def reply_of(data: bytes) -> Mapping[str, Any]:
    """A service's JSON reply as a mapping (an empty or non-object reply: ``{}``)."""
    try:
        value = json.loads(data) if data else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
