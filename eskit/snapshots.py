"""Snapshots: an aggregate's state at a position, kept in a JetStream KV bucket, so loads stay flat.

>>> orders = await client.event_store("orders", snapshots=SnapshotPolicy(every=100))   # doctest: +SKIP
>>> order = await orders.load(Order, "123")      # latest snapshot + the events after it   # doctest: +SKIP
>>> (await orders.snapshots.check(Order, "123")).ok                                    # doctest: +SKIP
True

The bucket ``snapshots_<store>`` holds one key per aggregate (``<snapshot_name>.<id>``). A snapshot is written
after a load that replayed ``every`` events or more, or took longer than ``slower_than`` seconds. Writes are
revision-checked (``Nats-Expected-Last-Subject-Sequence`` on the key), and a snapshot at a later position is
never replaced by an earlier one. A snapshot from another ``snapshot_schema``, or one that cannot be decoded,
is ignored with a :class:`SnapshotWarning` (the load replays everything) and replaced.
"""

from __future__ import annotations

import base64
import json
import re
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import nats
from nats.js.api import KeyValueConfig, StorageType

from ._wire import ApiError, parse_ack
from .errors import EncodeError, InvalidNameError
from .events import parse_time
from .store import CONFLICT, EXPECTED_SEQ, Position

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

    from .aggregate import Aggregate
    from .store import EventStore

_BUCKET_OK = re.compile(r"[-_A-Za-z0-9]+")
_WRITE_ATTEMPTS = 3


class SnapshotWarning(UserWarning):
    """A snapshot was ignored (other schema, undecodable) or could not be written; loading still works."""


@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    """When to write a snapshot: after a load that replayed ``every`` events (``None``: never for that
    reason), and/or took longer than ``slower_than`` seconds.

    >>> SnapshotPolicy(every=100, slower_than=0.05)
    SnapshotPolicy(every=100, slower_than=0.05)
    """

    every: int | None = 100
    slower_than: float | None = None

    def wants(self, replayed: int, seconds: float) -> bool:
        if replayed <= 0:
            return False
        by_count = self.every is not None and replayed >= self.every
        return by_count or (self.slower_than is not None and seconds > self.slower_than)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One stored snapshot: ``state`` as of ``position`` (``version`` events applied)."""

    aggregate_id: str
    schema: int
    version: int
    position: int
    timestamp: datetime | None
    state: dict[str, Any]
    revision: int

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

    @classmethod
    async def open(cls, store: EventStore, policy: SnapshotPolicy) -> Snapshots:
        """Create the store's snapshot bucket if needed (one value per key, direct gets allowed)."""
        snapshots = cls(store, policy)
        config = KeyValueConfig(bucket=snapshots.bucket, history=1, storage=StorageType.FILE, direct=True)
        try:
            await store.client.js.create_key_value(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != 10058:  # exists with another configuration: use it as it is
                raise
        return snapshots

    # -- reading -------------------------------------------------------------------------------------------

    async def get(self, cls: type[Aggregate], aggregate_id: str) -> Snapshot | None:
        """The usable snapshot of an aggregate, or None (none stored, other schema or undecodable: warned)."""
        return (await self.find(cls, aggregate_id)).snapshot

    async def find(self, cls: type[Aggregate], aggregate_id: str) -> Lookup:
        key = key_for(cls, aggregate_id)
        msg = await self._wire.request(f"$JS.API.DIRECT.GET.KV_{self.bucket}.$KV.{self.bucket}.{key}", b"")
        headers = msg.headers or {}
        if "Nats-Sequence" not in headers:  # a status reply (404): none stored
            return Lookup(0, None)
        revision = int(headers["Nats-Sequence"])
        if headers.get("KV-Operation") in ("DEL", "PURGE"):
            return Lookup(revision, None)
        snapshot, problem = _decode(msg.data, aggregate_id, revision, cls)
        if problem:
            message = f"{problem}; replaying {cls.__name__} {aggregate_id!r} from the start"
            warnings.warn(message, SnapshotWarning, stacklevel=4)
        return Lookup(revision, snapshot, ignored=bool(problem))

    # -- writing -------------------------------------------------------------------------------------------

    async def maybe_save(
        self,
        aggregate: Aggregate,
        lookup: Lookup | None,
        replayed: int,
        timestamp: datetime | None,
        seconds: float,
    ) -> bool:
        """After a load that replayed events (the last stored at ``timestamp``), write a snapshot if the
        policy asks for one, or to replace one that was ignored."""
        ignored = lookup is not None and lookup.ignored
        if replayed <= 0 or not (self.policy.wants(replayed, seconds) or ignored):
            return False
        return await self.save(aggregate, timestamp=timestamp, revision=lookup.revision if lookup else 0)

    async def save(
        self, aggregate: Aggregate, *, timestamp: datetime | None = None, revision: int = 0
    ) -> bool:
        """Write the aggregate's snapshot unless the bucket already holds one as late; True if written."""
        cls = type(aggregate)
        subject = f"$KV.{self.bucket}.{key_for(cls, aggregate.id)}"
        payload = _encode(aggregate, timestamp)
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


def _comparable(aggregate: Aggregate) -> dict[str, Any]:
    state = json.loads(json.dumps(aggregate.snapshot()))
    flat = {f"state.{k}": v for k, v in state.items()}
    return {"version": aggregate.version, "position": aggregate.position, **flat}


def _encode(aggregate: Aggregate, timestamp: datetime | None) -> bytes:
    body = {
        "schema": aggregate.snapshot_schema,
        "version": aggregate.version,
        "position": aggregate.position,
        "timestamp": timestamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if timestamp else None,
        "state": aggregate.snapshot(),
    }
    try:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise EncodeError(
            f"{type(aggregate).__name__} state is not JSON-serialisable ({exc}); override snapshot() and "
            "restore() to convert it"
        ) from None


def _decode(
    raw: bytes, aggregate_id: str, revision: int, cls: type[Aggregate]
) -> tuple[Snapshot | None, str]:
    """The snapshot, or None and why it cannot be used."""
    try:
        body = json.loads(raw)
        schema = int(body["schema"])
        snapshot = Snapshot(
            aggregate_id,
            schema,
            int(body["version"]),
            int(body["position"]),
            parse_time(body.get("timestamp")),
            dict(body["state"]),
            revision,
        )
    except (ValueError, TypeError, KeyError) as exc:
        return None, f"snapshot of {cls.__name__} {aggregate_id!r} is undecodable ({exc!r})"
    if schema != cls.snapshot_schema:
        return None, (
            f"snapshot of {cls.__name__} {aggregate_id!r} has schema {schema}, "
            f"{cls.__name__} expects {cls.snapshot_schema}"
        )
    return snapshot, ""


async def drop_bucket(js: JetStreamContext, store: str) -> bool:
    """Delete a store's snapshot bucket; False if it did not exist."""
    try:
        return bool(await js.delete_key_value(bucket_name(store)))
    except (nats.js.errors.NotFoundError, InvalidNameError):
        return False
