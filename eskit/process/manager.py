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

Run one instance per name: a second one would handle every event again. In one process, one that starts
while another of its name runs stops that one first (after its current batch: a notebook cell run again);
across processes, it is yours to ensure.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import sqlite3
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import nats

from .._redact import redact
from ..errors import (
    EskitError,
    PermissionDeniedError,
    ProcessError,
    ProjectionError,
    ValidationError,
)
from ..events import RecordedEvent, check_token
from ..projections.deadletter import ParkedEvent
from ..store import EventStore
from .commands import Append, Command, Request
from .feed import Feed
from .sending import Refused, Retry, Sender

if TYPE_CHECKING:
    from ..connection import Client

__all__ = ["ProcessManager", "ProcessStats", "reacts_to"]

F = TypeVar("F", bound=Callable[..., Any])
MAX_ROUNDS = 10_000  # run_until_caught_up: passes over the stores (each one issues something, or it ends)
_log = logging.getLogger("eskit")
IDLE_WAIT = 0.05  # seconds a caught-up store waits for events while another store is still busy
# the instance running under each (server, namespace, name) in this process (see ProcessManager._take_over)
_running: weakref.WeakValueDictionary[tuple[str, str, str], ProcessManager] = weakref.WeakValueDictionary()


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
    checked: int = 0  # Appends looked for in their store first (possibly issued by a run that lost its positions)


class ProcessManager:
    """Base class of process managers (see the module docstring for a full example).

    Class attribute ``name`` (default: the class name) names its subscribers and command ids: keep it when
    you change the class, or every command is issued again under new ids.

    ``stores``: stores opened with options (``privacy=``, ``upcasters=``), used under their names both to
    react to and to append to; other stores are opened plainly. A store with personal fields must be given:
    else its handlers see ciphertext and Appends to it store those fields in clear.

    >>> customers = await client.event_store("customers", privacy=personal)       # doctest: +SKIP
    >>> Welcome(client, stores={"customers": customers})                            # doctest: +SKIP
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
        concurrency: int = 64, ack_wait: float = 30.0, stores: Mapping[str, EventStore] | None = None,
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
        given = dict(stores or {})
        for store_name, opened in given.items():
            if not isinstance(opened, EventStore) or opened.name != client.store_name(store_name):
                raise ValidationError(
                    f"stores maps a store name to the store opened under it, e.g. "
                    f"{{'customers': await client.event_store('customers', privacy=personal)}}; got "
                    f"{store_name!r}: {opened!r}"
                )
        self._sender = Sender(client, self.name, given)
        self._feeds: list[Feed] = []
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
        return ProcessStats(self.name, self.positions, sum(f.applied for f in feeds), self._sender.counts.commands,
                            self._sender.counts.retried, sum(f.parked for f in feeds), self.running,
                            self._error or next((f.error for f in feeds if f.error), None),
                            self._sender.counts.checked)  # fmt: skip

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
        await self._take_over()
        try:
            return await self._catch_up_all(timeout)
        finally:
            self._release()

    async def _catch_up_all(self, timeout: float) -> int:
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

    async def _catch_up(self, feed: Feed, deadline: float) -> int:
        try:
            return await feed.run_until_caught_up(timeout=max(0.1, deadline - asyncio.get_running_loop().time()))
        except ProjectionError as exc:
            raise ProcessError(f"process manager {self.name}, store {feed.source}: {exc}") from exc

    async def _together(self, feeds: list[Feed], deadline: float) -> int:
        """Every store at once, so that a step's events are handled while the step before is still being
        issued (payments handled while orders are still charged). A store that has caught up waits for more
        (a long poll: answered as soon as an event arrives) while another is still busy, since that one's
        commands may cause events here. Returns how many events were handled."""
        if len(feeds) == 1:
            return await self._catch_up(feeds[0], deadline)
        loop = asyncio.get_running_loop()
        busy = set(range(len(feeds)))

        async def drive(i: int, feed: Feed) -> int:
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
        await self._take_over()
        try:
            feeds = await self._open()
            tasks = [feed.start() for feed in feeds]
            try:
                await asyncio.gather(*tasks)
            except BaseException as exc:
                self._error = redact(f"{type(exc).__name__}: {exc}")
                raise
            finally:
                for feed in feeds:
                    await feed.stop()
        finally:
            self._release()

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
            self._release()  # also if the task was cancelled before it began

    async def _take_over(self) -> None:
        """One running instance per name (and server and namespace) in this process: two would each issue
        every command (a repeated Append without expected_position is dropped only within the duplicate
        window). A second one stops the first, after its current batch (a notebook cell run again)."""
        key = (self.client.url, self.client.namespace, self.name)
        other = _running.get(key)
        if other is not None and other is not self:
            _log.warning("process manager %s: stopping the instance already running in this process", self.name)
            await other.stop()
            other._release()
        _running[key] = self

    def _release(self) -> None:
        key = (self.client.url, self.client.namespace, self.name)
        if _running.get(key) is self:
            del _running[key]

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
                    event = parked.event  # as the feed gave it to the handler: revealed, upcast
                    if feed.store.privacy is not None:  # a dead letter keeps the ciphertext
                        event = await feed.store.privacy.reveal_parked(event)
                    if feed.store.upcasters is not None:
                        event = feed.store.upcasters._apply_fresh([event], strict=False)[0]
                    if await self._handle(feed.source, event, suspect=True) is None:
                        await feed.dead_letters.remove(parked)
                        done += 1
        return done

    # -- handling one event --------------------------------------------------------------------------------

    async def _open(self) -> list[Feed]:
        if not self._feeds:
            if str(self.db_path) != ":memory:":  # WAL before the first table: creating them waits for no fsync
                with contextlib.closing(sqlite3.connect(self.db_path)) as db:
                    db.execute("PRAGMA journal_mode = WAL")
            for source, types in self._reactions.items():
                self._feeds.append(Feed(self, source, await self._sender.store(source), frozenset(types)))
        return self._feeds

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
                    await self._sender.send(source, event, sent, commands[sent], suspect=suspect)
                    sent += 1
                return None
            except Refused as exc:
                return f"{where}: {exc}", attempts
            except PermissionDeniedError:
                raise  # no retry will grant it: the run ends, as a projection's does
            except (Retry, EskitError, OSError, TimeoutError, nats.errors.Error, sqlite3.Error) as exc:
                reason = f"{where}: {exc}" if isinstance(exc, Retry) else f"{where}: {type(exc).__name__}: {exc}"
            except Exception as exc:  # the handler raised: retried, like a projection's handler
                reason = f"{where} raised {type(exc).__name__}: {exc}"
            if attempts < self.max_attempts:
                self._sender.counts.retried += 1
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
            raise Refused(f"returned {wrong[0]!r}; return eskit.Append, eskit.Request, a list of them, or None")
        return commands
