"""Process managers: react to events of several stores with commands, exactly once in effect.

One handler per (store, event type), declared with :func:`reacts_to`; a handler gets the
:class:`~eskit.events.RecordedEvent` and returns the commands to issue (:class:`~eskit.process.commands.Append`,
:class:`~eskit.process.commands.Request`, a list of them, or ``None``):

>>> class Checkout(ProcessManager):
...     @reacts_to("orders", "placed")
...     def _placed(self, event):
...         return Request("payment.charge", {"order": event.aggregate_id, "amount": event.data["amount"]})
...
...     @reacts_to("payments", "captured")
...     def _captured(self, event):
...         order = event.data["order"]
...         return Append("shipping", order, [Event("requested", {"order": order})], expected_position=0)
...
...     @reacts_to("payments", "declined")
...     def _declined(self, event):
...         return Append("orders", event.data["order"], [Event("cancelled", {"reason": event.data["reason"]})])
>>> checkout = Checkout(client, db="checkout.db")       # or ":memory:" (the default)   # doctest: +SKIP
>>> await checkout.run_until_caught_up()                # a script or a test            # doctest: +SKIP
>>> checkout.start(); ...; await checkout.stop()        # a notebook: in the background # doctest: +SKIP

How it stays exactly once in effect. Each store it reacts to is read by a durable subscriber of its own
(``projection-<manager>-<store>``): the machinery of :class:`~eskit.projections.Projection`, with a position
per store in the SQLite file ``db``. For each batch of events it first notes in that file how far it is about
to issue commands, then issues them, then stores the new position (and acknowledges the batch). A crash
between issuing and storing the position delivers those events again, and their commands are issued again
**with the same ids**, derived from the triggering event (:func:`~eskit.process.commands.command_id`):

- ``Append``: its events' ids (``Nats-Msg-Id``) come from the command id; the store drops a repeat within its
  duplicate window. ``expected_position=0`` makes it safe for ever: the repeat finds its own events stored.
  Past the window, an event the file notes as possibly issued has its appends checked first (one read).
- ``Request``: the id travels in the ``Eskit-Command-Id`` header; the service must act once per id, as
  :func:`~eskit.process.service.command_service` does (``expected_position=0`` on an aggregate named by it).

Events of one aggregate are handled in order; different aggregates concurrently (``concurrency``). A
command that fails for a reason a retry may fix (no responder, a timeout, a store hiccup, a service error
5xx) is retried ``max_attempts`` times in all, a short pause between; then, or at once for a refusal (a
conflict, a service error 4xx, a bad command), the triggering event is **parked** with the reason
(:meth:`ProcessManager.parked`) and the manager goes on. :meth:`ProcessManager.replay_parked` issues the
parked events' commands again, with the same ids, once the cause is fixed.

Run one instance per name: a second one would reposition the same subscribers under the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import nats

from ..codec import encode_json
from ..errors import (
    ConcurrencyError,
    DuplicateEventError,
    EskitError,
    PermissionDeniedError,
    ProcessError,
    ProjectionError,
    ValidationError,
)
from ..events import CAUSATION_ID, CORRELATION_ID, Event, RecordedEvent, check_token
from ..projections.applying import Applier, Counts, Handler
from ..projections.deadletter import ParkedEvent
from ..projections.projection import Projection
from ..projections.readmodel import ReadModel
from .commands import COMMAND_ID, Append, Command, Request, command_id
from .service import service_subject

if TYPE_CHECKING:
    from ..connection import Client
    from ..store import EventStore

__all__ = ["ProcessManager", "ProcessStats", "reacts_to"]

F = TypeVar("F", bound=Callable[..., Any])
IN_FLIGHT = "eskit_process_in_flight"  # per subscriber: the last position whose commands may have been issued
MAX_ROUNDS = 10_000  # run_until_caught_up: passes over the stores (each one issues something, or it ends)
IDLE_WAIT = 0.05  # seconds a caught-up store waits for events while another store is still busy
SERVICE_ERROR, SERVICE_ERROR_CODE = "Nats-Service-Error", "Nats-Service-Error-Code"


def reacts_to(store: str, event_type: str) -> Callable[[F], F]:
    """Mark a method as the handler of events of ``event_type`` in store ``store``; it returns commands.

    >>> @reacts_to("payments", "declined")
    ... def _declined(self, event): return Append("orders", event.data["order"], [Event("cancelled")])
    """
    check_token(store, "store name")
    check_token(event_type, "event type")

    def mark(method: F) -> F:
        method.__eskit_reacts_to__ = (store, event_type)  # type: ignore[attr-defined]
        return method

    return mark


@dataclass(frozen=True, slots=True)
class ProcessStats:
    """What a process manager has done in this process, and where it is in each store."""

    name: str
    positions: Mapping[str, int]  # per store: the stream sequence of the last event handled (stored in db)
    handled: int  # events whose commands were all issued
    commands: int  # commands issued (a repeat after a crash counts again: the receiver drops it)
    retried: int  # failed attempts that were tried again
    parked: int  # events parked because their commands kept failing or were refused
    running: bool
    error: str | None  # the last error of the background task, if any


class _Retry(Exception):
    """A command failed in a way a retry may fix (its message is the reason)."""


class _Refused(Exception):
    """A command was refused: no retry will change that (its message is the reason)."""


@dataclass(slots=True)
class _Counts:
    commands: int = 0
    retried: int = 0


class ProcessManager:
    """Base class of process managers (see the module docstring for a full example).

    Class attribute ``name`` (default: the class name) names its subscribers and command ids: keep it when
    you change the class, or every command is issued again under new ids.
    """

    name: str = ""
    _reactions: ClassVar[dict[str, dict[str, str]]] = {}  # store -> event type -> method name

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        reactions = {store: dict(types) for store, types in cls._reactions.items()}
        for attr, member in vars(cls).items():
            mark = getattr(member, "__eskit_reacts_to__", None)
            if mark is not None:
                store, event_type = mark
                reactions.setdefault(store, {})[event_type] = attr
        cls._reactions = reactions

    def __init__(
        self, client: Client, *, db: str | os.PathLike[str] = ":memory:", name: str | None = None,
        batch_size: int = 500, max_wait: float = 0.5, max_attempts: int = 3, retry_delay: float = 0.1,
        concurrency: int = 64, ack_wait: float = 30.0,
    ) -> None:  # fmt: skip
        self.name = check_token(name or type(self).name or type(self).__name__, "process manager name")
        if not self._reactions:
            raise ProcessError(
                f'{type(self).__name__} reacts to nothing; add methods marked @reacts_to("orders", "placed")'
            )
        if not isinstance(db, str | os.PathLike) or not db:
            raise ValidationError(f"db takes a file path or ':memory:', got {db!r}")
        numbers: list[tuple[str, object, int, tuple[type, ...]]] = [
            ("batch_size", batch_size, 1, (int,)), ("max_attempts", max_attempts, 1, (int,)),
            ("concurrency", concurrency, 1, (int,)), ("max_wait", max_wait, 0, (int, float)),
            ("retry_delay", retry_delay, 0, (int, float)), ("ack_wait", ack_wait, 0, (int, float)),
        ]  # fmt: skip
        for what, value, low, kinds in numbers:
            if type(value) not in kinds or not low <= value < 10**9:  # type: ignore[operator]
                raise ValidationError(f"{what} takes a number from {low}, got {value!r}")
        self.client, self.db_path = client, db
        self.batch_size, self.max_wait, self.ack_wait = batch_size, max_wait, ack_wait
        self.max_attempts, self.retry_delay = max_attempts, retry_delay
        self._concurrency, self._slots = concurrency, asyncio.Semaphore(concurrency)
        self._stores: dict[str, EventStore] = {}
        self._feeds: list[_Feed] = []
        self._counts = _Counts()
        self._task: asyncio.Task[None] | None = None
        self._error: str | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} positions={dict(self.positions)}>"

    # -- state ---------------------------------------------------------------------------------------------

    @property
    def positions(self) -> Mapping[str, int]:
        """Per store reacted to: the position of the last event handled (0 before the first run)."""
        return {feed.source: feed.position for feed in self._feeds}

    @property
    def stats(self) -> ProcessStats:
        feeds = [feed.stats for feed in self._feeds]
        return ProcessStats(self.name, self.positions, sum(f.applied for f in feeds), self._counts.commands,
                            self._counts.retried, sum(f.parked for f in feeds), self.running,
                            self._error or next((f.error for f in feeds if f.error), None))  # fmt: skip

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- running -------------------------------------------------------------------------------------------

    async def run_until_caught_up(self, *, timeout: float = 60.0) -> int:
        """Handle everything stored so far in every store it reacts to, including the events its own commands
        caused (a payment recorded by the service it called); return how many events it handled.

        While it runs in the background (:meth:`start`), this waits until the background task has done so.
        """
        if self.running:
            return await self._wait_caught_up(timeout)
        feeds = await self._open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        total = 0
        for _ in range(MAX_ROUNDS):  # bounded: and by the deadline
            total += await self._together(feeds, deadline)
            handled = 0  # then one pass over the stores, one after the other: nothing left anywhere?
            for feed in feeds:
                handled += await self._catch_up(feed, deadline)
            total += handled
            if not handled:
                return total
            if loop.time() > deadline:
                break
        raise ProcessError(f"process manager {self.name} did not catch up within {timeout:.0f}s "
                           f"(positions {dict(self.positions)})")  # fmt: skip

    async def _catch_up(self, feed: _Feed, deadline: float) -> int:
        try:
            return await feed.run_until_caught_up(timeout=max(0.1, deadline - asyncio.get_running_loop().time()))
        except ProjectionError as exc:
            raise ProcessError(f"process manager {self.name}, store {feed.source}: {exc}") from exc

    async def _together(self, feeds: list[_Feed], deadline: float) -> int:
        """Every store at once, so that a step's events are handled while the step before is still being
        issued (payments handled while orders are still charged). A store that has caught up waits for more
        (a long poll: answered as soon as an event arrives) while another is still busy, since that one's
        commands may cause events here. Returns how many events were handled."""
        if len(feeds) == 1:
            return await self._catch_up(feeds[0], deadline)
        loop = asyncio.get_running_loop()
        busy = set(range(len(feeds)))

        async def drive(i: int, feed: _Feed) -> int:
            handled = 0
            for _ in range(MAX_ROUNDS):  # bounded: and by the deadline
                done = await self._catch_up(feed, deadline)
                handled += done
                if done:
                    busy.add(i)
                    continue
                busy.discard(i)
                if not busy or loop.time() > deadline:
                    break
                got = await feed.step(wait=IDLE_WAIT)
                if got:
                    busy.add(i)
                    handled += got
            return handled

        outcomes = await asyncio.gather(*(drive(i, f) for i, f in enumerate(feeds)), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return sum(o for o in outcomes if isinstance(o, int))

    async def _wait_caught_up(self, timeout: float) -> int:
        """Wait until every store's position is its last one, twice in a row with nothing handled between."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        before, settled = self.stats.handled, -1
        while loop.time() < deadline and self.running:  # bounded by the deadline
            handled = self.stats.handled
            lasts = [await feed.store.last_position() for feed in self._feeds]
            if self._feeds and all(f.position >= last for f, last in zip(self._feeds, lasts, strict=True)):
                if settled == handled:
                    return handled - before
                settled = handled
                continue
            settled = -1
            await asyncio.sleep(0.01)
        state = "running" if self.running else f"not running: {self._error or 'stopped'}"
        raise ProcessError(f"process manager {self.name} did not catch up within {timeout:.0f}s "
                           f"(positions {dict(self.positions)}; {state})")  # fmt: skip

    async def run(self) -> None:
        """Handle events as they arrive in every store until :meth:`stop`."""
        self._error = None
        feeds = await self._open()
        tasks = [feed.start() for feed in feeds]
        try:
            await asyncio.gather(*tasks)
        except BaseException as exc:
            self._error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            for feed in feeds:
                await feed.stop()

    def start(self) -> asyncio.Task[None]:
        """Run in the background (e.g. in a notebook); :meth:`stop` ends it."""
        if self.running:
            raise ProcessError(f"process manager {self.name} is already running; stop it first")
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"process-{self.name}")
        return self._task

    async def stop(self) -> None:
        """Stop the background task after the batches being handled."""
        task, self._task = self._task, None
        for feed in self._feeds:
            await feed.stop()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10.0)

    async def close(self, *, delete_consumers: bool = False) -> None:
        """Stop, close the position file, and (if asked) delete the durable consumers on the server."""
        await self.stop()
        for feed in self._feeds:
            await feed.close(delete_consumer=delete_consumers)
        self._feeds = []

    async def __aenter__(self) -> ProcessManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- dead letters --------------------------------------------------------------------------------------

    async def parked(self) -> list[ParkedEvent]:
        """The events whose commands kept failing or were refused, per store, oldest first; ``reason`` says why."""
        return [parked for feed in await self._open() for parked in await feed.parked()]

    async def replay_parked(self) -> int:
        """Issue the parked events' commands again (same ids: what was done before is not done twice); those
        that succeed are unparked. Returns how many succeeded."""
        done = 0
        for feed in await self._open():
            async with feed._lock:
                for parked in await feed.parked():
                    if await self._handle(feed.source, parked.event, suspect=True) is None:
                        await feed.dead_letters.remove(parked)
                        done += 1
        return done

    # -- handling one event --------------------------------------------------------------------------------

    async def _open(self) -> list[_Feed]:
        if not self._feeds:
            if str(self.db_path) != ":memory:":  # WAL before the first table: creating them waits for no fsync
                with contextlib.closing(sqlite3.connect(self.db_path)) as db:
                    db.execute("PRAGMA journal_mode = WAL")
            for source, types in self._reactions.items():
                self._feeds.append(_Feed(self, source, await self._store(source), frozenset(types)))
        return self._feeds

    async def _store(self, name: str) -> EventStore:
        store = self._stores.get(name)
        if store is None:
            store = self._stores[name] = await self.client.event_store(name)
        return store

    async def _handle_batch(
        self, source: str, events: list[RecordedEvent], suspect: int
    ) -> list[tuple[RecordedEvent, str, int]]:
        """Issue the commands of ``events`` (one aggregate's in order, aggregates concurrently); return the
        events that failed, with the reason and the attempts made, in stream order."""
        flows: dict[str, list[RecordedEvent]] = {}
        for event in events:
            flows.setdefault(event.aggregate_id, []).append(event)
        failed: list[tuple[RecordedEvent, str, int]] = []

        todo = iter(flows.values())

        async def worker() -> None:  # as many as may run at once: the slots' waiters stay few
            for flow in todo:
                async with self._slots:  # shared by the stores: at most `concurrency` flows in all
                    for event in flow:
                        failure = await self._handle(source, event, suspect=event.position <= suspect)
                        if failure is not None:
                            failed.append((event, *failure))

        workers = min(self._concurrency, len(flows))
        if workers == 1:
            await worker()
        else:  # every flow finishes before an error (a permission refused) ends the batch
            outcomes = await asyncio.gather(*(worker() for _ in range(workers)), return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        return sorted(failed, key=lambda f: f[0].position)

    async def _handle(self, source: str, event: RecordedEvent, *, suspect: bool) -> tuple[str, int] | None:
        """Decide and issue ``event``'s commands; None, or (why it failed, attempts) after the retries."""
        if event.decode_error is not None:
            return f"undecodable event: {event.decode_error}", 1
        method = self._reactions[source][event.type]
        where = f"{type(self).__name__}.{method}"
        commands: list[Command] | None = None
        attempts, reason, sent = 0, "", 0
        for attempts in range(1, self.max_attempts + 1):
            try:
                if commands is None:
                    commands = await self._decide(getattr(self, method), event, where)
                while sent < len(commands):  # a retry goes on with the first command not issued yet
                    await self._send(source, event, sent, commands[sent], suspect=suspect)
                    sent += 1
                return None
            except _Refused as exc:
                return f"{where}: {exc}", attempts
            except PermissionDeniedError:
                raise  # no retry will grant it: the run ends, as a projection's does
            except (_Retry, EskitError, OSError, TimeoutError, nats.errors.Error, sqlite3.Error) as exc:
                reason = f"{where}: {exc}" if isinstance(exc, _Retry) else f"{where}: {type(exc).__name__}: {exc}"
            except Exception as exc:  # the handler raised: retried, like a projection's handler
                reason = f"{where} raised {type(exc).__name__}: {exc}"
            if attempts < self.max_attempts:
                self._counts.retried += 1
                await asyncio.sleep(self.retry_delay * attempts)
        return f"{reason} ({attempts} attempts)", attempts

    async def _decide(self, method: Callable[[RecordedEvent], Any], event: RecordedEvent, where: str) -> list[Command]:
        result = method(event)
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            return []
        single = isinstance(result, Append | Request | str | bytes | Mapping) or not isinstance(result, Iterable)
        commands = [result] if single else list(result)
        wrong = [c for c in commands if not isinstance(c, Append | Request)]
        if wrong:
            raise _Refused(f"returned {wrong[0]!r}; return eskit.Append, eskit.Request, a list of them, or None")
        return commands

    async def _send(self, source: str, event: RecordedEvent, index: int, command: Command, *, suspect: bool) -> None:
        """Issue ``command``, the ``index``-th of ``event``, with the id derived from them."""
        cid = command_id(self.name, source, event.position, event.id, index)
        correlation = event.correlation_id or event.id
        self._counts.commands += 1
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
            raise _Refused(f"{where}: events must be a non-empty list of eskit.Event, got {given!r}")
        wrong = [e for e in given if not isinstance(e, Event)]
        if wrong:
            raise _Refused(f"{where}: events must be eskit.Event objects, got {wrong[0]!r}")
        events = [
            replace(e, id=f"{cid}-{j}", causation_id=e.causation_id or event.id,
                    correlation_id=e.correlation_id or correlation)
            for j, e in enumerate(given)
        ]  # fmt: skip
        try:
            target = await self._store(command.store)
            # issued before a crash (the in-flight mark says it may have been)? past the duplicate window too
            if (
                suspect
                and command.expected_position is None
                and await target._find_stored(command.aggregate_id, events, after=0, reach=None) is not None
            ):
                return
            await target.append(command.aggregate_id, events, expected_position=command.expected_position)
        except (ValidationError, ConcurrencyError, DuplicateEventError) as exc:
            raise _Refused(f"{where}: {type(exc).__name__}: {exc}") from exc

    async def _request(self, command: Request, cid: str, event: RecordedEvent, correlation: str | None) -> None:
        try:
            subject = service_subject(self.client, command.subject)
            body = encode_json(dict(command.data), "request")
        except ValidationError as exc:
            raise _Refused(f"Request {command.subject}: {exc}") from exc
        headers = {COMMAND_ID: cid}
        if correlation:
            headers[CORRELATION_ID] = correlation
        if event.id:
            headers[CAUSATION_ID] = event.id
        try:
            reply = await self.client.nc.request(subject, body, timeout=command.timeout, headers=headers)
        except nats.errors.NoRespondersError:
            raise _Retry(f"Request {subject}: no service answers on {subject!r}; is it running?") from None
        except nats.errors.TimeoutError:
            raise _Retry(f"Request {subject}: no reply within {command.timeout:g}s") from None
        error = (reply.headers or {}).get(SERVICE_ERROR)
        if error is not None:
            code = (reply.headers or {}).get(SERVICE_ERROR_CODE, "500")
            problem = f"Request {subject}: the service answered {code} {error}"
            raise _Refused(problem) if code.startswith("4") else _Retry(problem)


class _Feed(Projection):
    """The events of one store a process manager reacts to: a projection whose "read model" is only its
    position (and the in-flight mark), and whose applier issues commands."""

    def __init__(self, manager: ProcessManager, source: str, store: EventStore, types: frozenset[str]) -> None:
        self._appliers = dict.fromkeys(types, "_nothing")  # type: ignore[misc]  # per instance, not per class
        super().__init__(
            store, db=manager.db_path, name=f"{manager.name}-{source}", schema=_SCHEMA,
            batch_size=manager.batch_size, max_wait=manager.max_wait, max_attempts=manager.max_attempts,
            retry_delay=manager.retry_delay, ack_wait=manager.ack_wait,
        )  # fmt: skip
        self.source = source
        # WAL (set by the manager's _open): a commit writes the log and waits for no fsync; a killed process
        # loses nothing (a power cut may: then commands come again, with the same ids)
        self._model.db.execute(_SCHEMA)  # a file another subscriber of the manager created first
        self._applier = _Issuer(manager, self)

    def _nothing(self, db: sqlite3.Connection, event: RecordedEvent) -> None:
        """Commands are issued by the applier (:class:`_Issuer`), not inside the transaction."""


_SCHEMA = f"CREATE TABLE IF NOT EXISTS {IN_FLIGHT} (name TEXT PRIMARY KEY, position INTEGER NOT NULL)"


class _Issuer(Applier):
    """Issues a batch's commands, then moves the position past it (the projection's applier, for commands)."""

    def __init__(self, manager: ProcessManager, feed: _Feed) -> None:
        reactions = manager._reactions[feed.source]
        handlers: dict[str, tuple[str, Handler]] = {
            t: (f"{type(manager).__name__}.{m}", feed._nothing) for t, m in reactions.items()
        }
        super().__init__(feed.name, handlers, feed.dead_letters, max_attempts=manager.max_attempts,
                         retry_delay=manager.retry_delay)  # fmt: skip
        self.manager, self.feed = manager, feed

    async def apply(self, model: ReadModel, events: list[RecordedEvent], counts: Counts, *, through: int = 0) -> None:
        """Issue the commands of the events after the position (noting first how far: a crash before the
        position is stored leaves them marked as possibly issued), park those that failed, move the position."""
        todo = [e for e in events if e.position > model.position]
        counts.skipped += len(events) - len(todo)
        if todo:
            suspect = self._in_flight(model)
            self._mark(model, todo[-1].position)
            failed = await self.manager._handle_batch(self.feed.source, todo, suspect)
            for event, reason, attempts in failed:
                await self.dead_letters.park(self.projection, event, reason=reason, attempts=attempts)
                counts.parked += 1
                counts.parked_positions.add(event.position)
            counts.applied += len(todo) - len(failed)
            through = max(through, todo[-1].position)
        if through > model.position:
            model.advance(through)

    def _in_flight(self, model: ReadModel) -> int:
        row = model.db.execute(f"SELECT position FROM {IN_FLIGHT} WHERE name = ?", (self.projection,)).fetchone()
        return int(row[0]) if row else 0

    def _mark(self, model: ReadModel, position: int) -> None:
        model.db.execute(
            f"INSERT INTO {IN_FLIGHT} (name, position) VALUES (?, ?) ON CONFLICT (name) "
            "DO UPDATE SET position = max(position, excluded.position)", (self.projection, position),
        )  # fmt: skip
