"""Republishing: a projection that appends a curated public shape of chosen events to another store.

JetStream copies whole events (:mod:`eskit.integration.public`); to drop fields, a projection writes a
public shape instead. Each handler returns the public :class:`~eskit.events.Event` (or ``None`` to publish
nothing):

>>> from eskit import Event, applies
>>> class PublicOrders(Republisher):
...     @applies("placed")
...     def _placed(self, event):
...         return Event("placed", {"total": event.data["total"]})      # no e-mail, no address
>>> public = await client.event_store("orders-public-v2")              # doctest: +SKIP
>>> republisher = PublicOrders(orders, public, db="public_orders.db")  # doctest: +SKIP
>>> await republisher.run_until_caught_up()                            # or .start() in the background  # doctest: +SKIP

How it stays exactly once in effect (a transactional outbox): the shapes go into an ``eskit_outbox`` table in
the same SQLite transaction that moves the projection's position (:mod:`eskit.projections`), and after
each batch the outbox is appended to the public store, then emptied. The public event's id is derived from
the private event's id (a hash), so a crash between the append and the emptying appends it again with the
same ``Nats-Msg-Id``: the public store deduplicates it within its duplicate window (120 s by default), and
what a crash left staged is checked against the public store's events once on restart (one read per
aggregate in the outbox), so a restart after a longer outage publishes nothing twice either; so is what a
flush that failed half-way left there. The public
event keeps the aggregate id, ``occurred_at`` and correlation id; its causation id is the private event's id.

Personal data (:mod:`eskit.privacy`): handlers see the private events decrypted, so a shape that carries a
personal field would publish it in plain text, beyond the reach of ``eskit.forget``. Leave personal fields
out of shapes, or open the public store with ``privacy=`` (the same key bucket): the flush encrypts them as
``append`` does, and forgetting the subject shreds the public copy too. The flush never makes a key: a
shape staged before its subject was forgotten (a crash or an outage between the staging and the flush) is
published with :data:`~eskit.privacy.FORGOTTEN` in its personal fields, never sealed under a new key.

The trade-off against sourcing: a second write (the public store holds its own copy, appended by this
process), a lag of the projection plus one batch, and deduplication by id; in exchange the fields are
yours to choose. A Republisher is not rebuilt (a rebuild would publish everything again): publish a new
shape under a new store name instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
from typing import TYPE_CHECKING, Any

from .._nats.wire import ApiError, parse_ack
from ..errors import EventStoreError, ProjectionError, ValidationError
from ..events import MSG_ID, Event, RecordedEvent, encode_data
from ..privacy.personal import FORGOTTEN
from ..projections import Projection

if TYPE_CHECKING:
    from ..projections.consumer import Batch
    from ..store import EventStore

__all__ = ["Republisher"]

OUTBOX = "eskit_outbox"
OUTBOX_SCHEMA = (  # each row: one public event, encoded and checked (size, headers) when it was staged
    f"CREATE TABLE {OUTBOX} (seq INTEGER PRIMARY KEY AUTOINCREMENT, aggregate_id TEXT NOT NULL, "
    "id TEXT NOT NULL, subject TEXT NOT NULL, payload BLOB NOT NULL, headers TEXT NOT NULL)"
)
FLUSH_PAGE = 1000


def public_id(stream: str, event: RecordedEvent, public_type: str) -> str:
    """The public event's id: the same for the same private event and public type, on every retry (a hash
    of them, 32 hex digits like an event id).

    >>> from types import SimpleNamespace as S
    >>> public_id("ORDERS", S(id="abc", position=3), "placed") == public_id("ORDERS", S(id="abc", position=9), "placed")
    True
    >>> len(public_id("ORDERS", S(id=None, position=3), "placed"))
    32
    """
    key = f"{stream}/{event.id or event.position}/{public_type}".encode()
    return hashlib.blake2b(key, digest_size=16, person=b"eskit-public").hexdigest()


class Republisher(Projection):
    """A projection whose handlers return the public shape of an event (see the module docstring).

    ``Republisher(store, target, db=...)``: ``store`` is the private store, ``target`` the public one (an
    event store the writer appends to); the other options are :class:`~eskit.projections.Projection`'s. A
    ``schema`` (class attribute or option) adds tables of yours beside the outbox; a handler writes them with
    ``self.db.execute(...)``, in the same transaction as the outbox and the position.
    """

    def __init__(
        self, store: EventStore, target: EventStore, *, db: str | os.PathLike[str] = ":memory:",
        name: str | None = None, schema: str | None = None, **options: Any,
    ) -> None:  # fmt: skip
        from ..store import EventStore as _Store

        if not isinstance(target, _Store):
            raise ValidationError(f"Republisher takes the public store (client.event_store(...)), got {target!r}")
        if target.stream == store.stream:
            raise ValidationError(f"a Republisher publishes to another store than {store.name!r}")
        own = (schema if schema is not None else type(self).schema).strip().rstrip(";")  # tables of yours, if any
        super().__init__(store, db=db, name=name, schema=f"{OUTBOX_SCHEMA};\n{own}" if own else OUTBOX_SCHEMA,
                         **options)  # fmt: skip
        self.target = target
        self.published = 0  # public events appended by this process (duplicates of a retry included)
        self._leftovers_checked = False  # what a crash left staged: checked against the target once
        self._applier.handlers = {
            t: self._staging(handler) for t, handler in self._applier.handlers.items()
        }

    def _staging(self, shape: Any) -> Any:
        def stage(db: sqlite3.Connection, event: RecordedEvent) -> None:
            public = shape(event)
            if public is None:
                return
            if not isinstance(public, Event):
                raise ProjectionError(f"a Republisher handler returns an Event or None, got {public!r}")
            public = dataclasses.replace(
                public, id=public_id(self.store.stream, event, public.type),
                occurred_at=event.occurred_at or event.timestamp,  # when the private fact happened
                correlation_id=public.correlation_id or event.correlation_id, causation_id=event.id,
            )  # fmt: skip
            if self.target.privacy is not None:  # a personal field without a subject id: parked here, not
                self.target.privacy.check([public])  # refused by every flush (the outbox would never empty)
            # encoded (and checked: a shape too large or with bad metadata is parked) in the transaction
            [(subj, payload, headers)] = self.target._encode(event.aggregate_id, [public], None)
            db.execute(
                f"INSERT INTO {OUTBOX} (aggregate_id, id, subject, payload, headers) VALUES (?, ?, ?, ?, ?)",
                (event.aggregate_id, public.id, subj, payload, json.dumps(headers)),
            )

        return stage

    @property
    def outbox(self) -> int:
        """Public events staged but not appended yet (after a crash, until the next step)."""
        return int(self.db.execute(f"SELECT count(*) FROM {OUTBOX}").fetchone()[0])

    async def _step(self, *, wait: float, ack: bool) -> Batch:
        await self.flush()  # what a crash left staged goes out first, in order
        batch = await super()._step(wait=wait, ack=ack)
        await self.flush()
        return batch

    async def flush(self) -> int:
        """Append what is staged to the public store (deduplicated by id), then empty the outbox."""
        try:
            return await self._flush()
        except BaseException:  # some rows may be appended already: the next flush checks them against the
            self._leftovers_checked = False  # target, as after a crash (the duplicate window may be over by then)
            raise

    async def _flush(self) -> int:
        flushed = 0
        for _ in range(1_000_000):  # bounded: each round empties up to FLUSH_PAGE rows
            rows: list[Any] = self.db.execute(
                f"SELECT seq, aggregate_id, id, subject, payload, headers FROM {OUTBOX} ORDER BY seq LIMIT {FLUSH_PAGE}"
            ).fetchall()
            if not rows:
                break
            last = rows[-1][0]
            if not self._leftovers_checked:  # staged before this process: maybe appended already
                rows = await self._not_yet_stored(rows)
            if rows:  # in order, pipelined: one request each, as append_many sends single events
                messages = [(r[3], r[4], json.loads(r[5])) for r in rows]
                if self.target.privacy is not None:  # the public store encrypts personal fields, as append does
                    messages = await self._sealed(messages)
                replies = await self.target._wire.request_many(messages)
                for row, reply in zip(rows, replies, strict=True):
                    ack = parse_ack(reply)  # a duplicate (a retry) is an ack too
                    if isinstance(ack, ApiError):
                        raise EventStoreError(
                            f"republishing {row[3]} to {self.target.name} failed: {ack.description}; it stays in "
                            "the outbox and is sent again by the next step"
                        )
            self._forget(last)
            flushed += len(rows)
            self.published += len(rows)
        self._leftovers_checked = True
        return flushed

    async def _sealed(self, messages: list[tuple[str, bytes, Any]]) -> list[tuple[str, bytes, Any]]:
        """``messages`` with the personal fields of the public store's declaration encrypted (``privacy=``)."""
        assert self.target.privacy is not None
        shapes = [Event(subj.rsplit(".", 1)[1], json.loads(payload), id=headers[MSG_ID])
                  for subj, payload, headers in messages]  # fmt: skip
        privacy = self.target.privacy
        todo = privacy.check(shapes)
        ring = privacy.ring
        unknown = list(dict.fromkeys(subject_id for *_, subject_id in todo if subject_id not in ring._current))
        for subject_id in unknown:  # read once each: the flush never makes a key (see below)
            ring._remember(subject_id, await ring._stored(subject_id))
        # A shape was staged decrypted, while its subject's key existed (the private store shares the bucket).
        # A subject without a key now was forgotten since: its fields become FORGOTTEN; sealing them would make
        # it a new key and publish what was forgotten, readable for good.
        for i, event, present, subject_id in todo:
            if subject_id not in ring._current:
                shapes[i] = dataclasses.replace(event, data={**event.data, **dict.fromkeys(present, FORGOTTEN)})
        sealed = await privacy.sealed(shapes, [t for t in todo if t[3] in ring._current])
        return [(subj, encode_data(event), headers) for (subj, _, headers), event in zip(messages, sealed, strict=True)]

    async def _not_yet_stored(self, rows: list[Any]) -> list[Any]:
        """The staged ``rows`` whose ids the target does not hold yet: a crash after the append and before
        the outbox was emptied, longer ago than the duplicate window, must not publish them twice."""
        stored: set[str | None] = set()
        for aggregate_id in dict.fromkeys(row[1] for row in rows):
            stored |= {e.id for e in await self.target.read(aggregate_id)}
        return [row for row in rows if row[2] not in stored]

    def _forget(self, seq: int) -> None:
        """Empty the outbox up to ``seq`` (appended). A crash just before this appends them again: deduplicated."""
        self.db.execute(f"DELETE FROM {OUTBOX} WHERE seq <= ?", (seq,))

    async def rebuild(self) -> int:
        """Not for a Republisher: a rebuild would publish every event again (see the module docstring)."""
        raise ProjectionError(
            f"{self.name} republishes events: a rebuild would publish them again; publish to a new store instead"
        )
