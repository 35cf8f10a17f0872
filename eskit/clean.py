"""``python -m eskit clean``: remove what the lessons and their checks left on a server, and nothing else.

    python -m eskit clean              # the server at $NATS_URL
    python -m eskit clean --dry-run    # only say what would be removed
    python -m eskit clean --url nats://host:4222
    python -m eskit clean --namespace alice   # only learner alice's (the default when $ESKIT_LEARNER is set)

Every store, KV bucket and consumer a lesson or an exercise check creates is named with
:func:`eskit.course.unique`, so its name starts with :data:`LESSON_PREFIX` (``lesson_``): the store
``lesson_orders1a2b3c4d`` is the stream ``LESSON_ORDERS1A2B3C4D``, its dead letters ``LESSON_..._PARKED``, its
snapshots the KV bucket ``snapshots_lesson_...`` (stream ``KV_snapshots_lesson_...``). ``clean`` deletes
exactly those streams (their consumers go with them) and, on any other stream, the consumers named
``lesson_...`` or ``projection-lesson_...``. A learner's or a team's own stores are never touched: a name
must *start* with the prefix (after a known role such as ``KV_`` or ``snapshots_``).

In a learner namespace (``ESKIT_LEARNER=alice``, see :mod:`eskit.connection`) the lesson's store is
``alice_lesson_orders1a2b3c4d``: ``clean --namespace alice`` removes only names starting ``alice_lesson_``,
plain ``clean`` every learner's as well (a learner's name, ``_lesson_``, and a name ending in 8 hex digits
as :func:`eskit.course.unique` makes them).

>>> is_lesson_name("LESSON_ORDERS1A2B3C4D"), is_lesson_name("KV_snapshots_lesson_snap1a2b3c4d")
(True, True)
>>> is_lesson_name("ORDERS"), is_lesson_name("LESSONS"), is_lesson_name("KV_snapshots_orders")
(False, False, False)
>>> is_lesson_name("ALICE_LESSON_ORDERS1A2B3C4D"), is_lesson_name("ALICE_LESSON_ORDERS1A2B3C4D", namespace="bob")
(True, False)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConnectError, EventStoreError, StoreUnavailableError
from .streams import LEARNER_ENV, check_namespace

if TYPE_CHECKING:
    from .connection import Client

LESSON_PREFIX = "lesson_"
"""Every name a lesson or check creates starts with this (a later ``--namespace`` narrows it per learner)."""

_WRAPPERS = ("kv_", "obj_")  # the stream behind a KV bucket / an object store
_ROLES = ("snapshots_", "projection-")  # a store's snapshot bucket / a projection's consumer
_MAX_PAGES = 10_000  # listing pages (the server sends up to 256 names a page)


def is_lesson_name(name: str, prefix: str = LESSON_PREFIX, *, namespace: str | None = None) -> bool:
    """True if a stream, bucket or consumer name was made by a lesson (see the module docstring).

    ``namespace="alice"``: only learner alice's; ``None``: any learner's, and those made outside a namespace.
    """
    n = name.lower()
    for lead in (_WRAPPERS, _ROLES):
        for role in lead:
            if n.startswith(role):
                n = n[len(role) :]
                break
    if namespace is not None:
        return n.startswith(f"{namespace}_{prefix}".lower())
    if n.startswith(prefix.lower()):
        return True
    learner = re.escape(prefix.lower())
    return re.fullmatch(rf"[a-z0-9][a-z0-9_-]*?_{learner}[a-z0-9_-]*[0-9a-f]{{8}}(_parked)?", n) is not None


@dataclass(frozen=True)
class Removed:
    """One thing ``clean`` removed (or would remove): a stream with its consumers, or one consumer."""

    kind: str  # "store", "dead letters", "KV bucket", "object store", "consumer"
    name: str  # the store / bucket / consumer name, as a learner knows it
    stream: str
    events: int = 0
    consumers: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.kind == "consumer":
            return f"consumer {self.name} on stream {self.stream}"
        extra = f", {len(self.consumers)} consumer{'s' if len(self.consumers) != 1 else ''}" if self.consumers else ""
        unit = "key revision" if self.kind == "KV bucket" else "message" if self.kind == "object store" else "event"
        plural = "" if self.events == 1 else "s"
        return f"{self.kind} {self.name} (stream {self.stream}: {self.events:,} {unit}{plural}{extra})"


@dataclass(frozen=True)
class CleanReport:
    removed: list[Removed]
    kept_streams: int  # streams left alone (not the lessons')
    dry_run: bool
    namespace: str | None = None  # only this learner's, or None: everyone's

    def lines(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        out = [f"{verb} {r.describe()}" for r in self.removed]
        streams = sum(r.kind != "consumer" for r in self.removed)
        consumers = len(self.removed) - streams
        left = f"left {self.kept_streams} other stream{'s' if self.kept_streams != 1 else ''} alone"
        if not self.removed:
            whose = f"{self.namespace}_{LESSON_PREFIX}" if self.namespace else LESSON_PREFIX
            out.append(f"nothing to remove: no stream or consumer starts with {whose!r} ({left})")
        else:
            out.append(f"{verb} {streams} stream(s) and {consumers} other consumer(s); {left}"
                       + (" (dry run: nothing was removed)" if self.dry_run else ""))
        return out


def _kind(stream: str) -> tuple[str, str]:
    """What a lesson stream is, and the name a learner knows it by."""
    if stream.startswith("KV_"):
        return "KV bucket", stream[3:]
    if stream.startswith("OBJ_"):
        return "object store", stream[4:]
    if stream.endswith("_PARKED"):
        return "dead letters", stream.lower()
    return "store", stream.lower()


async def _api(client: Client, call: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    try:
        msg = await client.wire.request(f"$JS.API.{call}", json.dumps(body or {}).encode())
    except StoreUnavailableError:
        raise EventStoreError("JetStream is not enabled on the server: nothing to clean") from None
    reply: dict[str, Any] = json.loads(msg.data)
    if "error" in reply:
        raise EventStoreError(f"{call}: {reply['error'].get('description', reply['error'])}")
    return reply


async def _names(client: Client, call: str, key: str) -> list[str]:
    """Every name a paged ``*.NAMES`` API call lists."""
    names: list[str] = []
    for _ in range(_MAX_PAGES):
        reply = await _api(client, call, {"offset": len(names)})
        page = reply.get(key) or []
        names.extend(page)
        if not page or len(names) >= int(reply.get("total", 0)):
            return names
    raise EventStoreError(f"{call}: more than {_MAX_PAGES} pages of names; clean them in smaller steps")


async def clean(
    client: Client, *, prefix: str = LESSON_PREFIX, namespace: str | None = None, dry_run: bool = False
) -> CleanReport:
    """Delete the lessons' streams (stores, dead letters, KV buckets) and consumers, by name prefix.

    ``namespace="alice"``: only learner alice's (``alice_lesson_...``); ``None``: every learner's and the rest.

    >>> report = await clean(client, dry_run=True)        # doctest: +SKIP
    >>> print("\\n".join(report.lines()))                  # doctest: +SKIP
    """
    if not prefix.strip("_-"):
        raise ValueError("clean needs a non-empty prefix: it must never match every stream")
    if namespace is not None and not check_namespace(namespace):
        raise ValueError("clean needs a learner's name as namespace, or None for everyone's")
    removed: list[Removed] = []
    kept = 0
    for stream in sorted(await _names(client, "STREAM.NAMES", "streams")):
        consumers = sorted(await _names(client, f"CONSUMER.NAMES.{stream}", "consumers"))
        if is_lesson_name(stream, prefix, namespace=namespace):
            info = await _api(client, f"STREAM.INFO.{stream}")
            kind, name = _kind(stream)
            removed.append(Removed(kind, name, stream, int(info["state"].get("messages", 0)), consumers))
            if not dry_run:
                await _api(client, f"STREAM.DELETE.{stream}")
            continue
        kept += 1
        for consumer in consumers:
            if is_lesson_name(consumer, prefix, namespace=namespace):
                removed.append(Removed("consumer", consumer, stream))
                if not dry_run:
                    await _api(client, f"CONSUMER.DELETE.{stream}.{consumer}")
    return CleanReport(removed, kept, dry_run, namespace)


def add_command(sub: Any) -> None:
    """``python -m eskit clean [--url URL] [--dry-run]``."""
    p = sub.add_parser(
        "clean",
        help=f"remove the stores, KV buckets and consumers the lessons created (names starting {LESSON_PREFIX!r})",
    )
    p.add_argument("--url", help="NATS server URL (default: $NATS_URL)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.add_argument(
        "--namespace", metavar="LEARNER",
        help="only this learner's (default: $ESKIT_LEARNER if set, else every learner's and all lesson leftovers)",
    )  # fmt: skip
    p.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("NATS_URL")
    if not url:
        raise ConnectError(
            "no server to clean: pass --url or set NATS_URL (an embedded server started by `python -m eskit lab` "
            "is gone once the lab stops, and its stores with it)"
        )
    namespace = args.namespace or os.environ.get(LEARNER_ENV, "").strip() or None
    if namespace is not None:
        check_namespace(namespace)
        print(f"only learner {namespace}'s (names starting {namespace}_{LESSON_PREFIX})")
    for line in asyncio.run(_clean(url, args.dry_run, namespace)).lines():
        print(line)
    return 0


async def _clean(url: str, dry_run: bool, namespace: str | None) -> CleanReport:
    from .connection import connect

    async with await connect(url, namespace="") as client:
        return await clean(client, dry_run=dry_run, namespace=namespace)
