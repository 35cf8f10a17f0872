"""Dynamic Consistency Boundary (dcb.events) on one JetStream stream: read a query, append on a condition.

>>> courses = await client.dcb_store("courses", tag_keys=("course", "student"))      # doctest: +SKIP
>>> q = Query([QueryItem(types=["CourseDefined"], tags=["course:c1"])])
>>> seen = await courses.read(q)                                                     # doctest: +SKIP
>>> await courses.append([TaggedEvent("CourseDefined", {"capacity": 10}, ["course:c1"])],
...                      AppendCondition(q, after=seen.head))                        # doctest: +SKIP

**Layout.** Each event is stored once, on ``<store>.<type>.<slot>...``, one slot token per declared tag key
(see :mod:`eskit.dcb.query`). ``tag_keys`` is fixed when the store is created (kept in the stream's metadata):
old events keep their subjects, so changing it would make filters miss them. A query item becomes one
subject filter (``courses.*.c1.*``): exact when it names at most one type and only tags of declared keys,
a superset otherwise; events are always re-checked precisely on the client.

**The condition, checked by the server.** "No event matching Q after A" is checked with one
``Nats-Expected-Last-Subject-Sequence`` (+ ``-Subject``) header per filter F of Q: "the last message on F
is still L". The header goes on any message of an atomic batch, and all are evaluated against the stream as
it was before the batch, so an append of n events carries up to n checks, all-or-nothing. L is the last
position on F we know of (from a read, an earlier append or one Direct Get per filter); before sending, the
messages on F in (A, L] are re-read and must not match Q (they can only exist when F is a superset).

**When there are more filters than events** (a one-event decision over two boundaries, e.g. course *and*
student), two ways, used in turn:

1. *Merge* filters into their narrowest common one (``courses.*.*.*``) until one per event: a single message,
   the fast path. Still correct, but broader: a writer elsewhere in it moves L, the append is rejected, only
   the messages that arrived in between are re-read, and if none matches Q the append is re-sent after a
   random pause that doubles with each rejection (else writers deciding at one pace collide again in step).
2. After ``MERGED_ATTEMPTS`` rejections: *exact* checks, on *check carriers*: the batch is padded with empty
   messages on ``<store>.~.~...`` (outside every event filter, skipped by every read), each carrying one
   more check. Disjoint writers no longer touch each other's filters, so they cannot starve each other. The
   price: positions have gaps (the spec allows them), an extra empty message (kept: a store allows no
   message TTL, which would let any writer append an event that expires), and an atomic batch (on one
   file-backed server the batch commit syncs to disk: slower than one message).

Either way, writers on disjoint boundaries never see an error; under contention they pay round trips.
Rejected: storing an event once per tag (duplicates, positions that lie), one global lock (serialises all),
and a carrier sent *before* the event to claim the second filter (a writer whose condition does not cover
that filter, or a plain append, could store a matching event in between: no server check would see it).
Many writers deciding on one boundary take turns (:mod:`eskit.dcb.turns`, used by ``examples.execute``).

**On a cluster** (replicas > 1) Direct Get is answered by any replica, and a follower may not have applied
what the leader has already checked a condition against. Two rules keep decisions consistent with the
leader: a scan that must cover a position named by the leader or by another replica (a conflict's actual
position, a remembered last position) reads on until it has seen that message; and ``read`` proves its
``head`` with one ``multi_last`` Direct Get sent with the scans (a replica that holds message ``head`` names
each filter's last message per subject; a scan that has not seen it reads on). R1 stores skip both.

**The append lock on a cluster.** A replicated stream's leader checks a condition *before* proposing the
message to its replicas, against the messages it has already applied: a message still in its Raft proposal
is invisible to a check on a wildcard filter. The server blocks only a second check spelled exactly like an
in-flight one (or on an in-flight message's own subject), so two appends whose filters overlap but differ
(``courses.*.c1.*`` and ``courses.*.*.*``) could both pass on the same stale state. So on a replicated
store every conditional append also checks "nothing is stored on ``<store>.~.~...``" (``Layout.lock``, never
written) on its last message: it always holds, and until the leader has applied that message (every event
of the batch stored) it refuses every other append with that check (retried like a moved filter). A
one-event append then needs a carrier anyway, so replicated appends use exact checks from the first attempt
(no merging). The price: an atomic batch per conditional append, and one in flight per store at a time.
Appends *without* a condition take no lock: one in flight can still escape a concurrent condition whose
query matches it (give such appends a condition when others decide on them). R1 stores take no lock: their
only server checks each message against everything stored before it.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .._nats.codes import (
    BATCH_DUPLICATE,
    CONFLICT,
    DUPLICATE_IN_PROCESS,
    EXPECTED_SEQ,
    EXPECTED_SUBJECT,
    SUBJECT_SEQUENCE_UNAVAILABLE,
)
from .._nats.wire import ApiError, Page, TooManySubjectsError, parse_ack
from .._reader import Reader
from ..errors import (
    AppendConditionError,
    ContentionError,
    DuplicateEventError,
    EventStoreError,
    StoreUnavailableError,
    ValidationError,
)
from ..events import check_position
from .query import (
    AppendCondition,
    Layout,
    Message,
    Query,
    QueryItem,
    ReadResult,
    SequencedEvent,
    TaggedEvent,
    covers,
    decode,
    encode_all,
    upcast,
)
from .subscription import Subscription

if TYPE_CHECKING:
    from ..connection import Client
    from ..upcasting import Upcasters

__all__ = [
    "AppendCondition",
    "AppendConditionError",
    "DCBStore",
    "Query",
    "QueryItem",
    "ReadResult",
    "SequencedEvent",
    "Subscription",
    "TaggedEvent",
]

DUPLICATES = (BATCH_DUPLICATE, DUPLICATE_IN_PROCESS)
MAX_ATTEMPTS = 200
MAX_CARRIERS = 15
MERGED_ATTEMPTS = 32
MERGED_BACKOFF, MAX_BACKOFF = 0.001, 0.02  # full jitter after a merged check moved: 1, 2, 4 ... 20 ms at most
KNOWN_MAX = 50_000
LAG_WAIT, LAG_PAUSE = 5.0, 0.002  # how long a read waits for a lagging follower, and between looks
PROOF_ATTEMPTS = 4


class DCBStore:
    """Tagged events in one stream, read by query and appended on a condition."""

    def __init__(self, client: Client, layout: Layout, stream: str, *, replicas: int = 1) -> None:
        self.client = client
        self.replicas = replicas  # > 1: Direct Get may be answered by a lagging follower (see _prove)
        self.layout = layout
        self.name = layout.store
        self.stream = stream
        self._wire = client.wire
        self.reader = Reader(client, stream, self.name)  # every read of the stream
        self.upcasters: Upcasters | None = None  # set by client.dcb_store(..., upcasters=Upcasters())
        self.retries = 0  # appends re-sent after a check on a (merged) filter moved: internal, not errors
        self.lagged = 0  # reads that found a follower behind the position they must reach, and read again
        self._known: dict[str, int] = {}  # filter -> a last position seen on it (a guess the server checks)

    def __repr__(self) -> str:
        return f"<DCBStore {self.name} tag_keys={list(self.layout.tag_keys)}>"

    # -- reading -------------------------------------------------------------------------------------------

    async def head(self) -> int:
        """The store's last position (an event's, or a check carrier's), 0 if it is empty."""
        return await self._last_on(self.layout.everything)

    async def read(
        self, query: Query | None = None, *, after: int | None = None, limit: int | None = None
    ) -> ReadResult:
        """Events matching ``query`` (all if ``None``) after position ``after``, in order, at most ``limit``.

        On a replicated store every event matching up to ``head`` is returned even if a lagging follower
        answered a scan (see :meth:`_prove`): a decision is never made on a view with a hole in it.

        >>> seen = await courses.read(Query([QueryItem(tags=["course:c1"])]))      # doctest: +SKIP
        >>> seen.head                                                               # doctest: +SKIP
        12
        """
        _check_query(query, after)
        if limit is not None and (type(limit) is not int or limit < 0):
            raise ValidationError(f"limit must be None or a count such as 10, got {limit!r}")
        if limit is not None and limit <= 0:
            return ReadResult([], None)
        start, query = after or 0, query or Query()
        last = await self._direct_last(self.layout.everything)
        head, subject = (last[0], last[1]) if last else (0, "")
        self._remember(self.layout.everything, head)
        filters = self.layout.filters(query)
        scanning = [self._scan(f, query, _Scan(start), head, limit) for f in filters]
        proof: Page | None = None
        unproven = [f for f in filters if not covers(f, subject)]  # a filter holding head sees it, or reads on
        if self.replicas > 1 and limit is None and head > start and unproven:  # the proof goes with the scans
            scanned, proof = await asyncio.gather(
                asyncio.gather(*scanning), self._last_per_subject(unproven, start, head, subject)
            )
            scans = list(scanned)
        else:
            scans = list(await asyncio.gather(*scanning))
        events = _merged(scans, limit)
        if limit is not None:
            if not events:
                return ReadResult([], None)
            head = events[-1].position
            subject = next(s.subjects[head] for s in scans if head in s.subjects)
        await self._prove(filters, query, scans, head, subject, proof)
        events = self._upcast_all(_merged(scans, limit), scans)
        return ReadResult(events, events[-1].position if limit is not None else head)

    async def last(self, query: Query) -> SequencedEvent | None:
        """The last event matching ``query`` (e.g. the last invoice); one round trip if filters are exact."""
        _check_query(query, None)
        found = await asyncio.gather(*(self._last_match(item) for item in query.items or [QueryItem()]))
        return max((e for e in found if e is not None), key=lambda e: e.position, default=None)

    async def _last_match(self, item: QueryItem) -> SequencedEvent | None:
        f = self.layout.filter(item)
        msg = await self._direct_last(f)
        if msg is None:
            return None
        self._remember(f, msg[0])
        if not self.layout.is_carrier(msg[1]):
            event = decode(*msg)
            if item.matches(event.type, event.tags):
                return upcast(self.upcasters, msg[1], event)
        found = await self._scan(f, Query([item]), _Scan(0), msg[0], None, reach=msg[0])  # a superset filter
        return found.events[-1] if found.events else None

    def _upcast_all(self, events: list[SequencedEvent], scans: list[_Scan]) -> list[SequencedEvent]:
        """The events a read returns, upcast (after matching: queries select by stored type and tags)."""
        upcasters = self.upcasters
        if upcasters is None or not upcasters.types:
            return events
        subjects = {p: s for scan in scans for p, s in scan.subjects.items()}
        return [upcast(upcasters, subjects.get(e.position, ""), e) for e in events]

    async def _scan(
        self, f: str, query: Query, scan: _Scan, up_to: int, limit: int | None, *, reach: int = 0
    ) -> _Scan:
        """Matching events on filter ``f`` in (scan.covered, up_to], added to ``scan``; remembers the last
        message seen on ``f``.

        A Direct Get reply holds every message on ``f`` its replica has, so the scan is complete up to the
        highest sequence it saw (``scan.covered``, counting messages beyond ``up_to``). ``reach``: a position
        on ``f`` known to exist (the leader named it): on a replicated store, scan on until it is seen.
        """
        after, last_seen, lagged = scan.covered, None, False
        deadline = time.monotonic() + LAG_WAIT
        while True:
            async for page in self.reader.pages(f, scan.covered, up_to):
                for m in page.messages:
                    scan.covered = max(scan.covered, m.seq)
                    if m.seq > up_to:
                        break
                    last_seen = m.seq
                    if self.layout.is_carrier(m.subject):
                        continue
                    event = decode(m.seq, m.subject, m.headers, m.data)
                    if query.matches(event.type, event.tags):
                        scan.events.append(event)
                        scan.subjects[m.seq] = m.subject
                        if limit is not None and len(scan.events) >= limit:
                            return scan
            if scan.covered >= min(reach, up_to) or self.replicas == 1:
                break
            self.lagged += 1
            await _pause(self.name, f"position {reach} on {f}", deadline)
            if not lagged:  # once: if the leader no longer has it (deleted, a new stream), aim lower
                reach, lagged = min(reach, await self._wire.leader_last(self.stream, f)), True
        if last_seen is not None or after == 0:
            self._remember(f, last_seen or 0)
        return scan

    async def _prove(
        self, filters: list[str], query: Query, scans: list[_Scan], head: int, subject: str, proof: Page | None
    ) -> None:
        """Make every scan complete up to ``head`` (a position some replica had, on ``subject``).

        Direct Get is answered by any replica, and a follower may lag the one that gave ``head``: its scan
        then silently misses events in (covered, head]. NATS ADR-53's ``min_last_seq`` would let the server
        refuse such a read, but nats-server removed it before 2.12 (2.15 ignores the field). So one
        ``multi_last`` Direct Get, answered by one replica, proves it: if it holds message ``head`` (it has
        applied that far), its last message per subject of each filter in (start, head] must already be
        covered by that filter's scan; else that scan is continued until it is. R1 stores skip this: their
        only replica is the leader.
        """
        start, lagging = min(s.start for s in scans), 0
        deadline = time.monotonic() + LAG_WAIT
        while self.replicas > 1:
            open_ = [i for i, s in enumerate(scans) if s.covered < head]
            if not open_:
                return
            page, proof = proof or await self._last_per_subject([filters[i] for i in open_], start, head, subject), None
            if page is not None and all(m.seq != head for m in page.messages):
                lagging, self.lagged = lagging + 1, self.lagged + 1  # not at head yet: again, then the leader
                await _pause(self.name, f"position {head}", deadline)
                if lagging < PROOF_ATTEMPTS:
                    continue
                page = None
            for i in open_:
                if page is None:  # too many subjects for one reply, or lagging: the leader names each last
                    top = min(await self._wire.leader_last(self.stream, filters[i]), head)
                else:
                    top = max((m.seq for m in page.messages if covers(filters[i], m.subject)), default=0)
                if top > scans[i].covered:
                    await self._scan(filters[i], query, scans[i], head, None, reach=top)
                scans[i].covered = max(scans[i].covered, head)

    async def _last_per_subject(self, filters: list[str], start: int, head: int, subject: str) -> Page | None:
        """One replica's last message per subject of ``filters`` and ``subject`` in (start, head]; None if
        that is more than one reply holds (1,024 subjects)."""
        wanted = list(dict.fromkeys([*filters, subject]))
        try:
            return await self._wire.direct_last_per_subject(self.stream, wanted, start=start + 1, up_to=head)
        except TooManySubjectsError:
            return None

    # -- writing -------------------------------------------------------------------------------------------

    async def append(self, events: Sequence[TaggedEvent], condition: AppendCondition | None = None) -> int:
        """Append ``events`` atomically; return the position of the last one.

        Raises :class:`AppendConditionError` if an event matching ``condition.fail_if_events_match`` was
        stored after ``condition.after``.
        """
        if condition is not None and not isinstance(condition, AppendCondition):
            raise ValidationError(
                f"append's condition is an AppendCondition(query, after=seen.head) or None, got {condition!r}"
            )
        messages = encode_all(self.layout, events, max_payload=self.client.max_payload)
        if condition is None:
            return _acked(self.name, await self._publish(messages))
        query, after = condition.fail_if_events_match, condition.after or 0
        verified: dict[str, int] = {}
        hint: dict[str, int] = {}  # the actual last position the server named when it rejected one check
        locked = self.replicas > 1  # the lock is a check: one slot fewer for filters (see the module docstring)
        pause = 0.0
        for attempt in range(MAX_ATTEMPTS):
            exact = locked or attempt >= MERGED_ATTEMPTS  # one check per event, else exact checks on carriers
            slots = len(messages) + (MAX_CARRIERS if exact else 0) - locked
            filters = self.layout.check_filters(query, slots)
            expected = hint if list(hint) == filters else await self._expected(filters, fresh=attempt > 0)
            for f in filters:
                verified.setdefault(f, after)
            await asyncio.gather(*(self._verify(f, query, verified, expected[f]) for f in filters))
            if pause:  # nothing matching arrived: other writers moved a broader filter; spread the re-sends
                await asyncio.sleep(pause)
            batch = self._with_checks(messages, filters, expected, lock=locked)
            ack = await self._publish(batch)
            if not isinstance(ack, ApiError):
                self._after_append(batch, filters, expected, ack)
                return ack
            if ack.err_code not in CONFLICT:
                raise _error(self.name, ack)
            self.retries += 1
            actual = re.search(r"(\d+)\s*$", ack.description)
            hint = {filters[0]: int(actual.group(1))} if actual and len(filters) == 1 else {}
            pause = 0.0 if exact else random.random() * min(MERGED_BACKOFF * 2**attempt, MAX_BACKOFF)  # full jitter
            if exact and attempt >= 3:
                await asyncio.sleep(random.random() * min(0.001 * attempt, 0.02))
        raise ContentionError(
            f"{self.name}: append still losing races on {filters} after {MAX_ATTEMPTS} attempts; narrow the "
            "query (declare its tag keys in tag_keys) or append more events per decision"
        )

    async def _expected(self, filters: list[str], *, fresh: bool) -> dict[str, int]:
        """The last position on each filter: remembered (the server checks it), else looked up."""
        known = {} if fresh else {f: self._known[f] for f in filters if f in self._known}
        return known | await self._lookup([f for f in filters if f not in known])

    def _with_checks(
        self, messages: list[Message], filters: list[str], expected: dict[str, int], *, lock: bool = False
    ) -> list[Message]:
        """The batch: a carrier per check beyond the events, then the events; check i on message i, and with
        ``lock`` the lock's check on the last message.

        The leader frees an in-flight check when it applies the message carrying it: on the last one, every
        event of the batch is stored before another append may take the lock.
        """
        carriers: list[Message] = [(self.layout.carrier, b"", {}) for _ in range(len(filters) + lock - len(messages))]
        batch = carriers + [(subject, data, dict(headers)) for subject, data, headers in messages]
        for (_, _, headers), f in zip(batch, filters, strict=False):
            headers[EXPECTED_SEQ], headers[EXPECTED_SUBJECT] = str(expected[f]), f
        if lock:  # nothing is ever stored on the lock: the check holds unless another append holds the lock
            headers = batch[-1][2]
            headers[EXPECTED_SEQ], headers[EXPECTED_SUBJECT] = "0", self.layout.lock
        return batch

    async def _verify(self, f: str, query: Query, verified: dict[str, int], upto: int) -> None:
        """Messages on ``f`` in (verified, upto] must not match ``query``; raise if one does."""
        if upto > verified[f]:
            found = await self._scan(f, query, _Scan(verified[f]), upto, 1, reach=upto)
            if found.events:
                raise AppendConditionError(
                    self.name, query=str(query), after=verified[f], position=found.events[0].position
                )
            verified[f] = upto

    async def _publish(self, messages: list[Message]) -> int | ApiError:
        reply = await (
            self._wire.request(*messages[0]) if len(messages) == 1 else self._wire.publish_batch(messages)
        )
        ack = parse_ack(reply)
        return ack if isinstance(ack, ApiError) else int(ack["seq"])

    def _after_append(
        self,
        messages: list[Message],
        filters: list[str],
        expected: dict[str, int],
        last: int,
    ) -> None:
        first = last - len(messages) + 1
        for f in filters:
            mine = [first + i for i, (subj, _, _) in enumerate(messages) if covers(f, subj)]
            self._remember(f, mine[-1] if mine else expected[f])

    async def _lookup(self, filters: list[str]) -> dict[str, int]:
        lasts = await asyncio.gather(*(self._last_on(f) for f in filters))
        return dict(zip(filters, lasts, strict=True))

    async def _last_on(self, f: str) -> int:
        msg = await self._direct_last(f)
        last = msg[0] if msg else 0
        self._remember(f, last)
        return last

    async def _direct_last(self, f: str) -> tuple[int, str, dict[str, str], bytes] | None:
        msg = await self.reader.last(f)
        return None if msg is None else (msg.seq, msg.subject, dict(msg.headers), msg.data)

    def _remember(self, f: str, position: int) -> None:
        if len(self._known) > KNOWN_MAX:
            self._known.clear()
        self._known[f] = max(position, self._known.get(f, 0))

    # -- following -----------------------------------------------------------------------------------------

    async def subscribe(self, query: Query | None = None, *, after: int | None = None) -> Subscription:
        """Matching events after ``after``, then new ones as they are stored (an ordered consumer).

        >>> async with await courses.subscribe(q, after=0) as events:            # doctest: +SKIP
        ...     async for e in events: ...
        """
        _check_query(query, after)
        filters = self.layout.filters(query)
        subject = filters[0] if len(filters) == 1 else self.layout.everything
        skip = self.layout.carrier
        subscription = await Subscription.start(
            self.client.js, self.stream, subject, query or Query(), after or 0, skip=skip, wire=self.client.wire
        )
        subscription.upcasters = self.upcasters
        return subscription


def _acked(store: str, ack: int | ApiError) -> int:
    if isinstance(ack, ApiError):
        raise _error(store, ack)
    return ack


def _error(store: str, ack: ApiError) -> EventStoreError:
    if ack.err_code in DUPLICATES:
        return DuplicateEventError(f"{store}: some of these event ids are already stored; create new events")
    if ack.err_code == SUBJECT_SEQUENCE_UNAVAILABLE:  # a new stream leader is still catching up
        return StoreUnavailableError(f"append to {store}: {ack.description}; retry")
    return EventStoreError(f"append to {store} failed: {ack.description} (err_code {ack.err_code})")


@dataclass
class _Scan:
    """A scan of one filter: matching events, and how far it is complete (every message up to ``covered``)."""

    start: int
    events: list[SequencedEvent] = field(default_factory=list)
    subjects: dict[int, str] = field(default_factory=dict)  # position -> subject, of the matching events
    covered: int = -1

    def __post_init__(self) -> None:
        self.covered = max(self.covered, self.start)


def _merged(scans: list[_Scan], limit: int | None) -> list[SequencedEvent]:
    merged = sorted({e.position: e for s in scans for e in s.events}.values(), key=lambda e: e.position)
    return merged[:limit] if limit is not None else merged


def _check_query(query: object, after: object) -> None:
    if query is not None and not isinstance(query, Query):
        raise ValidationError(f"expected a Query, e.g. Query([QueryItem(tags=['course:c1'])]), or None, got {query!r}")
    check_position(after, "after")


async def _pause(store: str, what: str, deadline: float) -> None:
    if time.monotonic() > deadline:
        raise StoreUnavailableError(
            f"{store}: the replicas answering reads have not reached {what} within {LAG_WAIT:.0f}s "
            "(a follower is far behind its leader); retry"
        )
    await asyncio.sleep(LAG_PAUSE)
