"""One aggregate's events read by literal subjects, so that a load does not grow with the stream.

A wildcard scan (``orders.123.>``) makes nats-server walk every message block from the aggregate's first event
to the end of the stream: its stream-wide subject index is too large to skip blocks by, and inside a block it
tests every message. A literal subject (``orders.123.created``) is found through each block's subject table,
and the scan stops after the subject's last block (docs/jetstream.md, "How JetStream finds an aggregate's
events"). So :func:`by_subject` sends, in one round trip, a ``multi_last`` on ``<store>.<id>.>`` (every subject
of the aggregate, its last position, and ``Nats-UpTo-Sequence``: the position the answer holds as of, the
cut) and a literal scan for each event type the caller expects; subjects of other types get their scan in a
second round. Every scan is cut at the cut, and must reach the last position ``multi_last`` named for its
subject, else (a replica behind the one that answered ``multi_last``) the caller reads by wildcard.

In a small stream one wildcard page costs less than those requests: :func:`literal` chooses, from what the
store's reader knows of the stream's end without asking (its size at open, append acks, ``multi_last`` cuts).
A store that other writers have grown reads by wildcard (slower, never wrong) until its next literal read,
at most ``PROBE_EVERY`` seconds after it last saw the stream's end, tells it how far the stream goes.

>>> groups = await by_subject(store.reader, "123", ["created"], set(), after=0, up_to=None)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._nats.wire import Page, StoredMsg, TooManySubjectsError

if TYPE_CHECKING:
    from ._reader import Reader

READ_PAGE = 2000  # messages per Direct Get reply
MAX_PAGES = 1_000_000  # pages of one subject in one read (a bound for the loop: 2 billion events)
MAX_TYPES_SEEN = 1000  # event types a store remembers having met
_TOKEN = re.compile(r"[^.*>\s]+")  # an event type that is one subject token
WILDCARD_UNTIL = 5000  # a load whose wildcard scan would walk fewer stream messages than this reads by wildcard
PROBE_EVERY = 1.0  # seconds after which a store that knows itself small reads by literal subjects once more


def literal(reader: Reader, after: int) -> bool:
    """Whether a load of the events after ``after`` reads by literal subjects (:func:`by_subject`): the
    wildcard scan would walk ``WILDCARD_UNTIL`` messages or more, or the stream's end was last seen too long
    ago (the literal read's cut tells it again).

    >>> literal(store.reader, after=0)  # doctest: +SKIP
    False
    """
    return reader.reach - after >= WILDCARD_UNTIL or time.monotonic() - reader.reached_at >= PROBE_EVERY


async def by_subject(
    reader: Reader, aggregate_id: str, types: Iterable[str], seen: set[str], *, after: int, up_to: int | None
) -> list[list[StoredMsg]] | None:
    """The aggregate's messages after ``after`` (up to ``up_to``), one position-ordered list per subject; None
    when this way cannot answer (more than 1,024 subjects, a lagging replica): then read by wildcard.

    ``types`` are the event types to scan at once (an aggregate class's handlers); ``seen``, the types the
    store's loads have met (updated here): once it holds some, only those of ``types`` in it are scanned at
    once (the others come in the second round if they exist).
    """
    if up_to is not None and up_to <= after:
        return []
    wire, stream, prefix, start = reader.wire, reader.stream, f"{reader.name}.{aggregate_id}.", after + 1
    wanted = [prefix + t for t in types if (t in seen or not seen) and _TOKEN.fullmatch(t)]
    outcomes = await asyncio.gather(
        wire.direct_last_per_subject(stream, [prefix + ">"], start=start, up_to=up_to or 0),
        *(wire.direct_get(stream, s, start=start, batch=READ_PAGE) for s in wanted),
        return_exceptions=True,
    )
    lasts, firsts = outcomes[0], outcomes[1:]
    if isinstance(lasts, TooManySubjectsError):
        return None
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    assert isinstance(lasts, Page)
    if not lasts.messages:
        return []  # nothing after `after` as of the cut
    if not lasts.up_to:
        return None
    if up_to is None:  # cut at the stream's end as this replica knows it
        reader.reached(lasts.up_to)
    if len(seen) < MAX_TYPES_SEEN:
        seen.update(m.subject[len(prefix) :] for m in lasts.messages)
    pages = {s: p for s, p in zip(wanted, firsts, strict=True) if isinstance(p, Page)}
    others = [m.subject for m in lasts.messages if m.subject not in pages]
    more = await asyncio.gather(*(wire.direct_get(stream, s, start=start, batch=READ_PAGE) for s in others))
    pages.update(zip(others, more, strict=True))
    return await _complete(reader, lasts, pages)


async def _complete(reader: Reader, lasts: Page, pages: dict[str, Page]) -> list[list[StoredMsg]] | None:
    """Each subject's messages up to the cut, paging on until the last position ``multi_last`` named."""
    groups = []
    for last in lasts.messages:
        page = pages[last.subject]
        group = [m for m in page.messages if m.seq <= lasts.up_to]
        for _ in range(MAX_PAGES):
            if (group and group[-1].seq >= last.seq) or not (page.pending and page.messages):
                break
            page = await reader.wire.direct_get(
                reader.stream, last.subject, start=page.last_seq + 1, batch=min(page.pending, READ_PAGE)
            )
            group += [m for m in page.messages if m.seq <= lasts.up_to]
        if not group or group[-1].seq != last.seq:
            return None  # the replica that scanned is behind the one that answered multi_last
        groups.append(group)
    return groups
