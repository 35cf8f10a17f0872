"""Snapshots: an aggregate's state at a position, kept in a JetStream KV bucket, so loads stay flat.

>>> orders = await client.event_store("orders", snapshots=SnapshotPolicy(every=100))   # doctest: +SKIP
>>> order = await orders.load(Order, "123")      # latest snapshot + the events after it   # doctest: +SKIP
>>> (await orders.snapshots.check(Order, "123")).ok                                    # doctest: +SKIP
True

The bucket ``snapshots_<store>`` holds one key per aggregate class and id (``<snapshot_name>.<id>``; the
name defaults to the class's module and qualified name, ``eskit-examples-Account``). A snapshot is written
after a load that replayed ``every`` events or more, or took longer than ``slower_than`` seconds. Writes are
revision-checked (``Nats-Expected-Last-Subject-Sequence`` on the key), and a snapshot at a later position is
never replaced by an earlier one.

A snapshot proves where it belongs: it records the stream's identity (its creation time, which changes when
the stream is deleted and recreated), the id and store time of the event at its position, the aggregate's
class name and id, and a digest of its state (see :mod:`eskit._snapshotformat`). A load reads the event at
the snapshot's position in the same Direct Get as the events after it, so checking costs no round trip. A
snapshot from another ``snapshot_schema``, another stream or history, or one that cannot be decoded, is
ignored with a :class:`SnapshotWarning` (the load replays everything) and replaced.
"""

from __future__ import annotations

import base64
import json
import re
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from . import _snapshotformat
from ._marks import Mark
from ._nats.codes import CONFLICT, EXPECTED_SEQ, STREAM_NAME_IN_USE, STREAM_NOT_FOUND
from ._nats.jsapi import guarded
from ._nats.wire import ApiError, StoredMsg, Wire, parse_ack, status_of
from .errors import EventStoreError, InvalidNameError, StoreTimeoutError, StreamNotFoundError, ValidationError
from .events import Position, parse_time
from .privacy.personal import PERSONAL_MARK, SEALED

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

    from .aggregate import Aggregate
    from .store import EventStore

_BUCKET_OK = re.compile(r"[-_A-Za-z0-9]+")
_WRITE_ATTEMPTS = 3


class SnapshotWarning(UserWarning):
    """A snapshot was ignored (other schema, stream or history; undecodable) or could not be written; loading
    still works."""


@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    """When to write a snapshot: after a load that replayed ``every`` events (``None``: never for that
    reason), and/or took longer than ``slower_than`` seconds.

    >>> SnapshotPolicy(every=100, slower_than=0.05)
    SnapshotPolicy(every=100, slower_than=0.05)
    """

    every: int | None = 100
    slower_than: float | None = None

    def __post_init__(self) -> None:
        if self.every is not None and (type(self.every) is not int or self.every < 1):
            raise ValidationError(f"SnapshotPolicy every= takes a count of events such as 100, got {self.every!r}")
        if self.slower_than is not None and (type(self.slower_than) not in (int, float) or not self.slower_than >= 0):
            raise ValidationError(
                f"SnapshotPolicy slower_than= takes seconds such as 0.05 (or None), got {self.slower_than!r}"
            )

    def wants(self, replayed: int, seconds: float) -> bool:
        if replayed <= 0:
            return False
        by_count = self.every is not None and replayed >= self.every
        return by_count or (self.slower_than is not None and seconds > self.slower_than)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One stored snapshot: ``state`` as of ``position`` (``version`` events applied), taken from the stream
    created at ``stream``, where the event at ``position`` is ``mark``."""

    aggregate_id: str
    schema: int
    version: int
    position: int
    timestamp: datetime | None
    state: dict[str, Any]
    revision: int
    stream: str = ""
    mark: Mark | None = None
    personal: dict[str, str] = field(default_factory=dict)  # the keys it is sealed with (eskit.privacy)

    def fits(self, up_to: Position) -> bool:
        """Whether the snapshot is no later than ``up_to`` (a position or a time)."""
        if up_to is None:
            return True
        if isinstance(up_to, datetime):
            limit = up_to if up_to.tzinfo else up_to.astimezone()
            return self.timestamp is not None and self.timestamp <= limit
        return self.position <= up_to

    def restore_into(self, aggregate: Aggregate) -> None:
        aggregate.restore(self.state)
        aggregate.version, aggregate.position = self.version, self.position
        aggregate._mark = self.mark
        if self.personal:
            aggregate._personal = dict(self.personal)

    def proven_by(self, msg: StoredMsg | None, prefix: str) -> bool:
        """Whether ``msg`` (the stored message at ``position``, on a subject under ``prefix``) is the event
        this snapshot was taken at."""
        return self.mark is not None and self.mark.matches(msg, prefix)


@dataclass(frozen=True, slots=True)
class Lookup:
    """What the bucket holds for one aggregate: its KV revision (0: none) and the usable snapshot, if any."""

    revision: int
    snapshot: Snapshot | None
    ignored: bool = False


@dataclass(frozen=True, slots=True)
class SnapshotCheck:
    """Snapshot + tail compared with a full replay; ``differences`` names what differs."""

    ok: bool
    snapshot_position: int | None
    differences: list[str] = field(default_factory=list)


def bucket_name(store: str) -> str:
    name = f"snapshots_{store}"
    if not _BUCKET_OK.fullmatch(name):
        raise InvalidNameError(
            f"store {store!r} cannot keep snapshots: KV bucket names allow only letters, digits, '-' and '_'"
        )
    return name


def key_for(cls: type[Aggregate], aggregate_id: str) -> str:
    """The KV key of an aggregate's snapshot; ids that are not valid KV tokens are base64-encoded."""
    if not _BUCKET_OK.fullmatch(cls.snapshot_name):
        raise InvalidNameError(f"snapshot_name {cls.snapshot_name!r}: use only letters, digits, '-' and '_'")
    if _BUCKET_OK.fullmatch(aggregate_id):
        return f"{cls.snapshot_name}.{aggregate_id}"
    token = base64.urlsafe_b64encode(aggregate_id.encode()).decode().rstrip("=")
    return f"{cls.snapshot_name}.b64.{token}"


class Snapshots:
    """The snapshot bucket of one store, and its policy."""

    def __init__(self, store: EventStore, policy: SnapshotPolicy) -> None:
        self.store = store
        self.policy = policy
        self.bucket = bucket_name(store.name)
        self._wire = store.client.wire
        self.stream_identity = ""  # the stream's creation time, as last seen (see refresh_identity)

    @classmethod
    async def open(cls, store: EventStore, policy: SnapshotPolicy) -> Snapshots:
        """Create the store's snapshot bucket if needed (one value per key, direct gets allowed)."""
        snapshots = cls(store, policy)
        stream = f"KV_{snapshots.bucket}"  # asked through the wire: an account that may only read (an analyst)
        info = json.loads((await _patient(snapshots._wire, f"$JS.API.STREAM.INFO.{stream}", b"")).data)
        if info.get("error", {}).get("err_code") == STREAM_NOT_FOUND:  # opens an existing bucket; may not create one:
            config = StreamConfig(  # nats-py's create_key_value(history=1, direct=True), sent through the wire:
                name=stream, subjects=[f"$KV.{snapshots.bucket}.>"], allow_direct=True, allow_rollup_hdrs=True,
                allow_msg_ttl=True, deny_delete=True, discard=DiscardPolicy.NEW, duplicate_window=120.0,
                max_msgs=-1, max_consumers=-1, max_msgs_per_subject=1, num_replicas=1, storage=StorageType.FILE,
            )  # a refusal is a PermissionDeniedError at once (nats-py's request waited 5 s for a TimeoutError)
            body = json.dumps(config.as_dict()).encode()
            reply = json.loads((await _patient(snapshots._wire, f"$JS.API.STREAM.CREATE.{stream}", body)).data)
            error = reply.get("error")
            if error and error.get("err_code") != STREAM_NAME_IN_USE:  # made meanwhile: use it
                raise EventStoreError(f"cannot create snapshot bucket {snapshots.bucket}: {error.get('description')}")
        await snapshots.refresh_identity()
        return snapshots

    async def refresh_identity(self) -> str:
        """Ask the server for the stream's identity: its creation time (new when the stream is recreated)."""
        reply = json.loads((await self._wire.request(f"$JS.API.STREAM.INFO.{self.store.stream}", b"")).data)
        if "error" in reply:
            description = reply["error"].get("description", "unavailable")
            raise EventStoreError(f"stream {self.store.stream}: {description}")
        self.stream_identity = str(reply.get("created", ""))
        return self.stream_identity

    # -- reading -------------------------------------------------------------------------------------------

    async def get(self, cls: type[Aggregate], aggregate_id: str) -> Snapshot | None:
        """The usable snapshot of an aggregate, or None (none stored, other schema, stream or history, or
        undecodable: warned). Reads the event at its position to prove it (one more round trip)."""
        snapshot = (await self.find(cls, aggregate_id)).snapshot
        if snapshot is None:
            return None
        stored = await self._stored_at(aggregate_id, snapshot.position)
        if snapshot.proven_by(stored, f"{self.store.name}.{aggregate_id}."):
            return snapshot
        await self.ignore(cls, snapshot, stacklevel=3)
        return None

    async def find(self, cls: type[Aggregate], aggregate_id: str) -> Lookup:
        """The stored snapshot, decoded and checked against this stream's identity; the event at its
        position is for the caller to check (:meth:`Snapshot.proven_by`)."""
        key = key_for(cls, aggregate_id)
        msg = await self._wire.request(f"$JS.API.DIRECT.GET.KV_{self.bucket}.$KV.{self.bucket}.{key}", b"")
        headers = msg.headers or {}
        if "Nats-Sequence" not in headers:  # a status reply (404): none stored
            return Lookup(0, None)
        revision = int(headers["Nats-Sequence"])
        if headers.get("KV-Operation") in ("DEL", "PURGE"):
            return Lookup(revision, None)
        raw, personal = msg.data, dict[str, str]()
        privacy = self.store.privacy
        if privacy is not None and raw.startswith(SEALED):  # personal data inside: sealed with its subjects' keys
            opened = await privacy.open_snapshot(raw, key)
            if opened is None:  # a subject was forgotten: replay (the load writes a new snapshot)
                return Lookup(revision, None, ignored=True)
            raw, personal = opened
        elif privacy is not None and PERSONAL_MARK in raw:  # written by a reader without the keys: ciphertext
            return Lookup(revision, None, ignored=True)
        snapshot, problem = _decode(raw, aggregate_id, revision, cls)
        if snapshot is not None and personal:
            snapshot = replace(snapshot, personal=personal)
        taken_from = snapshot.stream if snapshot is not None else self.stream_identity
        if taken_from != self.stream_identity and taken_from != await self.refresh_identity():
            snapshot = None  # the stream was deleted and recreated since the snapshot was taken
            problem = (
                f"snapshot of {cls.__name__} {aggregate_id!r} was taken from another stream {self.store.stream} "
                f"(created {taken_from}; this one was created {self.stream_identity})"
            )
        if problem:
            message = f"{problem}; replaying {cls.__name__} {aggregate_id!r} from the start"
            warnings.warn(message, SnapshotWarning, stacklevel=4)
        return Lookup(revision, snapshot, ignored=bool(problem))

    async def ignore(self, cls: type[Aggregate], snapshot: Snapshot, *, stacklevel: int = 4) -> None:
        """Warn that ``snapshot`` is not from this stream's history (the event at its position differs), and
        look at the stream's identity again: it may have been recreated."""
        warnings.warn(
            f"snapshot of {cls.__name__} {snapshot.aggregate_id!r} at position {snapshot.position} is not from "
            f"this stream's history (the event there is another one, or none); replaying {cls.__name__} "
            f"{snapshot.aggregate_id!r} from the start",
            SnapshotWarning,
            stacklevel=stacklevel,
        )
        await self.refresh_identity()

    async def _stored_at(self, aggregate_id: str, position: int) -> StoredMsg | None:
        """The stored message at ``position`` if it is one of the aggregate's events (a Direct Get by sequence,
        which the server answers from its index: no scan)."""
        request = f'{{"seq":{position}}}'.encode()
        msg = await self._wire.request(f"$JS.API.DIRECT.GET.{self.store.stream}", request)
        headers = msg.headers or {}
        if status_of(msg) is not None or "Nats-Sequence" not in headers:  # a server status, not a stored event
            return None
        stored = StoredMsg(int(headers["Nats-Sequence"]), headers.get("Nats-Subject", ""), headers, msg.data)
        return stored if stored.subject.startswith(f"{self.store.name}.{aggregate_id}.") else None

    # -- writing -------------------------------------------------------------------------------------------

    async def maybe_save(
        self, aggregate: Aggregate, lookup: Lookup | None, replayed: int, last: StoredMsg, seconds: float
    ) -> bool:
        """After a load that replayed events (the last is ``last``), write a snapshot if the policy asks for
        one, or to replace one that was ignored."""
        ignored = lookup is not None and lookup.ignored
        if replayed <= 0 or not (self.policy.wants(replayed, seconds) or ignored):
            return False
        revision = lookup.revision if lookup else 0
        return await self.save(aggregate, revision=revision, at=last)

    async def save(
        self,
        aggregate: Aggregate,
        *,
        timestamp: datetime | None = None,
        revision: int = 0,
        at: StoredMsg | None = None,
    ) -> bool:
        """Write the aggregate's snapshot unless the bucket already holds one as late; True if written.

        ``at`` is the stored message at the aggregate's position, if the caller has it (else it is read).
        An aggregate with unsaved events has no snapshot yet (ValidationError).
        """
        cls = type(aggregate)
        if aggregate.pending:
            raise ValidationError(f"{aggregate!r} has unsaved events: save them, then its snapshot")
        mark = Mark.of(at) if at is not None else aggregate._mark
        if mark is None or mark.position != aggregate.position or mark.stored_at is None:
            stored = await self._stored_at(aggregate.id, aggregate.position)
            if stored is None:
                message = f"snapshot of {aggregate!r} not written: the stream holds no event of it at its position"
                warnings.warn(message, SnapshotWarning, stacklevel=3)
                return False
            mark = Mark.of(stored)
        subject = f"$KV.{self.bucket}.{key_for(cls, aggregate.id)}"
        # The identity as last seen: if the stream was recreated since, the mark (an event of the new stream) and
        # the old identity disagree, and a load elsewhere ignores this snapshot once and writes a right one.
        when = timestamp or parse_time(mark.stored_at)
        payload = _snapshotformat.encode_aggregate(aggregate, when, self.stream_identity, mark)
        personal = getattr(aggregate, "_personal", None)
        if personal and self.store.privacy is not None:
            sealed = self.store.privacy.seal_snapshot(payload, personal, key_for(cls, aggregate.id))
            if sealed is None:  # one of its subjects was forgotten meanwhile: no snapshot of that state
                return False
            payload = sealed
        for _ in range(_WRITE_ATTEMPTS):
            reply = parse_ack(await self._wire.request(subject, payload, {EXPECTED_SEQ: str(revision)}))
            if not isinstance(reply, ApiError):
                return True
            if reply.err_code not in CONFLICT:  # 10071, or 10164 on a cluster
                warnings.warn(
                    f"snapshot of {aggregate!r} not written: {reply.description}",
                    SnapshotWarning,
                    stacklevel=3,
                )
                return False
            with warnings.catch_warnings():  # someone wrote meanwhile: keep theirs if it is as late as ours
                warnings.simplefilter("ignore", SnapshotWarning)
                current = await self.find(cls, aggregate.id)
            if current.snapshot is not None and current.snapshot.position >= aggregate.position:
                return False
            revision = current.revision
        return False

    # -- checking ------------------------------------------------------------------------------------------

    async def check(self, cls: type[Aggregate], aggregate_id: str) -> SnapshotCheck:
        """Compare latest snapshot + the events after it with a replay of every event (for tests, lessons)."""
        snapshot = await self.get(cls, aggregate_id)
        history = await self.store.read(aggregate_id)
        full = cls.from_events(aggregate_id, history)
        if snapshot is None:
            return SnapshotCheck(False, None, ["no usable snapshot"])
        fast = cls(aggregate_id)
        snapshot.restore_into(fast)
        fast.apply(e for e in history if e.position > snapshot.position)
        expected, actual = _comparable(full), _comparable(fast)
        differences = sorted(k for k in expected.keys() | actual.keys() if expected.get(k) != actual.get(k))
        return SnapshotCheck(not differences, snapshot.position, differences)


def ignored(lookup: Lookup) -> Lookup:
    """The same lookup, its snapshot set aside (it did not prove itself): the next write replaces it."""
    return replace(lookup, snapshot=None, ignored=True)


def _comparable(aggregate: Aggregate) -> dict[str, Any]:
    state = json.loads(json.dumps(aggregate.snapshot()))
    flat = {f"state.{k}": v for k, v in state.items()}
    return {"version": aggregate.version, "position": aggregate.position, **flat}


def _decode(
    raw: bytes, aggregate_id: str, revision: int, cls: type[Aggregate]
) -> tuple[Snapshot | None, str]:
    """The snapshot, or None and why it cannot be used."""
    try:
        header, state = _snapshotformat.decode(raw)
        schema, version, position = _snapshotformat.ints(header, "schema", "version", "position")
        stream, event_id, stored_at = header.get("stream"), header.get("event_id"), header.get("stored_at")
        if not (isinstance(stream, str) and isinstance(stored_at, str) and isinstance(event_id, str | None)):
            raise ValueError("no stream identity or event mark")
        if header.get("name") != cls.snapshot_name or header.get("id") != aggregate_id:
            raise ValueError(f"it is {header.get('name')!r} {header.get('id')!r}'s")
        if not 1 <= version <= position:
            raise ValueError(f"version {version} at position {position}")
        mark = Mark(position, event_id, stored_at)
        timestamp = parse_time(header.get("timestamp"))
        snapshot = Snapshot(aggregate_id, schema, version, position, timestamp, state, revision, stream, mark)
    except (ValueError, TypeError, KeyError) as exc:
        return None, f"snapshot of {cls.__name__} {aggregate_id!r} is undecodable ({exc})"
    if schema != cls.snapshot_schema:
        return None, (
            f"snapshot of {cls.__name__} {aggregate_id!r} has schema {schema}, "
            f"{cls.__name__} expects {cls.snapshot_schema}"
        )
    return snapshot, ""


async def drop_bucket(js: JetStreamContext, store: str) -> bool:
    """Delete a store's snapshot bucket; False if it did not exist."""
    try:
        return bool(await guarded(f"delete snapshot bucket of {store!r}", js.delete_key_value(bucket_name(store))))
    except (StreamNotFoundError, InvalidNameError):
        return False


async def _patient(wire: Wire, subject: str, payload: bytes, attempts: int = 3) -> Msg:
    """A JetStream API request asked again when unanswered: on a cluster, several processes opening one store
    at once keep the meta leader busy creating its bucket, and an info or create is safe to repeat."""
    for attempt in range(attempts):
        try:
            return await wire.request(subject, payload)
        except StoreTimeoutError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
