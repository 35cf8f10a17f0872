"""Taking turns on a contended DCB boundary: a writer that keeps losing the race queues, the others let it go.

>>> await take_turns(invoices, query, attempt)                                     # doctest: +SKIP
185

``attempt`` does one read-decide-append round on ``query``'s boundary; a round that loses the race (a
:class:`~eskit.errors.ConcurrencyError`) is run again on fresh events. Plain jittered backoff is not fair:
the writer that just won starts its next round at once while the losers sleep, so on one busy boundary
(8 writers numbering invoices) a writer could lose 50 rounds in a row. Here a writer that has lost
``TICKET_AFTER`` rounds takes a **ticket**: a message on its own subject,
``<carrier>.<boundary>.<slot>`` (a check carrier's subject plus two tokens: outside every event filter,
skipped by reads). A holder goes at once, racing only the other holders; a writer without a ticket that lost
a round on the boundary lately first waits until the tickets it saw waiting are marked done (one
``multi_last`` Direct Get per look: each ticket's last message). So once a writer holds a ticket,
every other writer that lost lately can beat it at most once (its next round waits for that ticket): a
decision takes about ``TICKET_AFTER`` + the number of writers rounds at most. That is liveness in practice,
not a guarantee: a writer that lost no round in the last ``HOT_FOR`` s does not look at the queue, and a
waiter goes after ``TURN_WAIT`` s whatever the queue says. A holder marks its ticket done
(one more message) when its decision is stored or refused.

This is for liveness only: every append is still checked by the server, so a writer that ignores the queue
(an old client, a plain ``append``) costs the others rounds but never a wrong decision. A holder that dies
leaves a ticket that counts as expired once it is ``TICKET_SECONDS`` old (its store time, or, for a writer
whose clock is behind the server's, since this process first saw it waiting; the store has no message TTL,
which would let any writer make an event expire, so tickets are kept: two messages per decision that took
one, and a ticket subject per decision holding one at a time per store instance, new ones in a new process;
a look at a queue of more than 1,024 subjects is skipped, and the queue then orders nothing); nobody waits longer than
``TURN_WAIT``. A writer that
never lost a round pays nothing (no extra round trip); a writer on a contended boundary pays a Direct Get
(or a few, while it waits) per round, a ticket holder two more messages per decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import nats.errors

from .._nats.wire import ApiError, TooManySubjectsError, parse_ack
from ..errors import ConcurrencyError, EskitError, ValidationError
from .query import Query
from .store import DCBStore

T = TypeVar("T")

TICKET_AFTER = 6  # rounds lost before a writer takes a ticket
TICKET_SECONDS = 2.0  # a ticket left by a writer that died counts as expired after this
TURN_WAIT = 2.5  # seconds at most in the queue per round (then the round runs anyway)
HOT_FOR = 2.0  # seconds after a lost round during which a boundary counts as contended for this store
POLL = 0.0005  # between looks at the queue
MAX_REMEMBERED = 1024  # boundaries a store instance remembers losing on, before it forgets the cold ones
WAITING, DONE = b"waiting", b"done"
ANY_POSITION = 0  # up_to_seq 0: up to the last message (a number past it finds nothing)


@dataclass
class _Writer:
    """One store instance as a writer: when it last lost a round on each boundary, and its ticket subjects'
    last tokens not in use (one per decision holding a ticket; reused, so a look at the queue stays short)."""

    lost_at: dict[str, float] = field(default_factory=dict)
    # (ticket subject, position) -> when this process first saw it waiting (its own monotonic clock): a ticket
    # expires by its store time, or by this count, whichever comes first (a wall clock behind the server's)
    first_seen: dict[tuple[str, int], float] = field(default_factory=dict)
    free: list[str] = field(default_factory=list)

    def contended(self, boundary: str) -> bool:
        return time.monotonic() - self.lost_at.get(boundary, -HOT_FOR) < HOT_FOR

    def lost(self, boundary: str) -> None:
        """Note a lost round on ``boundary``; boundaries no longer contended are forgotten (a long-lived store
        deciding on ever new boundaries keeps only the contended ones)."""
        now = self.lost_at[boundary] = time.monotonic()
        if len(self.lost_at) > MAX_REMEMBERED:
            self.lost_at = {b: at for b, at in self.lost_at.items() if now - at < HOT_FOR}


_writers: weakref.WeakKeyDictionary[DCBStore, _Writer] = weakref.WeakKeyDictionary()


async def take_turns(
    store: DCBStore,
    query: Query,
    attempt: Callable[[], Awaitable[T]],
    *,
    attempts: int = 100,
    base_delay: float = 0.001,
    max_delay: float = 0.02,
) -> T:
    """Run ``attempt()`` (a read-decide-append round on ``query``) until it does not lose the race, at most
    ``attempts`` times, queueing fairly with the other writers on the same boundary (see the module).

    >>> await take_turns(invoices, Query([QueryItem(["InvoiceCreated"])]), attempt)   # doctest: +SKIP
    """
    if type(attempts) is not int or attempts < 1:
        raise ValidationError(f"attempts takes a number of rounds from 1, such as 100; got {attempts!r}")
    writer = _writers.setdefault(store, _Writer())
    boundary = _boundary(store, query)
    queue = f"{store.layout.carrier}.{boundary}"
    slot = ""  # this decision's ticket subject's last token, once it takes a ticket
    ticket = 0
    try:
        for n in range(attempts):
            if not ticket and n >= TICKET_AFTER:
                slot = writer.free.pop() if writer.free else uuid.uuid4().hex[:16]
                ticket = await _mark(store, f"{queue}.{slot}", WAITING)
            if ticket <= 0 and writer.contended(boundary):
                await _wait_turn(store, queue, writer)
            try:
                return await attempt()
            except ConcurrencyError as exc:
                writer.lost(boundary)
                if n == attempts - 1:
                    exc.add_note(f"gave up after {attempts} rounds: allow more, or reduce contention on it")
                    raise
            if ticket <= 0:  # a holder goes again at once: the others wait for it
                await asyncio.sleep(random.uniform(0, min(max_delay, base_delay * 2**n)))
        raise AssertionError("unreachable")
    finally:
        if ticket > 0:  # not acknowledged: the waiters see it, or the ticket grows old (a closed connection
            # must not turn a stored decision, or the round's own error, into a connection error)
            with contextlib.suppress(EskitError, ConnectionError, TimeoutError, nats.errors.Error):
                await store.client.wire.publish(f"{queue}.{slot}", DONE)
        if slot:
            writer.free.append(slot)


def _boundary(store: DCBStore, query: Query) -> str:
    """A subject token naming the boundary: writers deciding on the same filters share one queue."""
    filters = "|".join(sorted(store.layout.filters(query)))
    return hashlib.blake2b(filters.encode(), digest_size=8).hexdigest()


async def _mark(store: DCBStore, subject: str, state: bytes) -> int:
    """Store ``state`` on a writer's ticket subject; its position, or -1 if the server refused it (the
    decision goes on without a place in the queue)."""
    try:
        ack = parse_ack(await store.client.wire.request(subject, state))
    except (EskitError, TimeoutError, nats.errors.Error):  # the round goes on (and meets the error itself)
        return -1
    return -1 if isinstance(ack, ApiError) else int(ack["seq"])


async def _wait_turn(store: DCBStore, queue: str, writer: _Writer) -> None:
    """Wait until the tickets waiting at the first look are done or expired (at most ``TURN_WAIT``)."""
    deadline = time.monotonic() + TURN_WAIT
    seen: int | None = None
    for _ in range(int(TURN_WAIT / POLL) + 1):
        try:
            page = await store.client.wire.direct_last_per_subject(
                store.stream, [f"{queue}.*"], start=1, up_to=ANY_POSITION
            )
        except (TooManySubjectsError, EskitError, TimeoutError, nats.errors.Error):  # the queue only orders
            return
        now, here = time.time(), time.monotonic()
        if len(writer.first_seen) > MAX_REMEMBERED:  # forget tickets first seen long ago (seen again: anew)
            writer.first_seen = {k: t for k, t in writer.first_seen.items() if here - t < 2 * TICKET_SECONDS}
        waiting = [
            m.seq for m in page.messages
            if m.data == WAITING and not _expired(m.headers, now)
            and here - writer.first_seen.setdefault((m.subject, m.seq), here) <= TICKET_SECONDS
        ]  # fmt: skip
        seen = max(waiting, default=0) if seen is None else seen
        if not any(seq <= seen for seq in waiting) or time.monotonic() > deadline:
            return
        await asyncio.sleep(POLL)


def _expired(headers: Mapping[str, str], now: float) -> bool:
    """Whether a ticket's store time (``Nats-Time-Stamp``, RFC 3339 in UTC) is over ``TICKET_SECONDS`` ago;
    an unreadable one is not (the wait is bounded by ``TURN_WAIT`` anyway).

    >>> _expired({"Nats-Time-Stamp": "2026-01-01T00:00:00.5Z"}, 1767225603.0)
    True
    """
    whole, _, fraction = headers.get("Nats-Time-Stamp", "").rstrip("Z").partition(".")
    try:
        stored = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp() + float("0." + (fraction or "0"))
    except ValueError:
        return False
    return now - stored > TICKET_SECONDS
