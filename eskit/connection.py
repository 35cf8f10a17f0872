"""Connecting: ``NATS_URL`` if set, else an embedded nats-server owned by the client.

>>> async with await eskit.connect() as client:          # doctest: +SKIP
...     orders = await client.event_store("orders")

A learner namespace (``ESKIT_LEARNER=alice``, or ``connect(namespace="alice")``) prefixes every store the
client opens: ``client.event_store("orders")`` is the store ``alice_orders`` (stream ``ALICE_ORDERS``, subjects
``alice_orders.>``, snapshots ``snapshots_alice_orders``), so twenty learners share one server without seeing
each other's stores; ``store.name`` and every event's subject show the real name.

Failures are one readable line (:class:`~eskit.errors.ConnectError`): the URL tried and how to start a
server; nats-py's reconnect noise is kept out of sight. Credentials never show: ``client.url``, ``repr(client)``
and every error name ``nats://writer:***@host`` (see :mod:`eskit._redact`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

from . import _nats, auth
from ._nats import closing as _closing
from ._nats import server_info
from ._nats.codes import STREAM_NOT_FOUND
from ._nats.wire import Wire
from ._redact import redact, redact_url
from .cache import AggregateCache
from .dcb.setup import open_dcb_store
from .dcb.store import DCBStore
from .errors import AuthenticationError, ConnectError, EventStoreError, ValidationError
from .integration.public import IntegrationStream, open_public_store, publish_integration
from .privacy import DEFAULT_BUCKET, KeyRing, Personal, Privacy
from .privacy.keys import check_subject_id
from .server import EmbeddedServer
from .snapshots import SnapshotPolicy, Snapshots, drop_bucket
from .store import EventStore
from .streams import LEARNER_ENV, check_namespace, ensure_stream, owned_stream
from .upcasting import Upcasters

_USER_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a user name that makes one inbox subject token
HOW_TO_START = "start one with `python -m eskit server` or `docker compose up -d`, or unset NATS_URL"
CLOSE_TIMEOUT = 2.0  # seconds close() waits for a drain (a stalled server answers nothing): then it just closes


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the connected server says about itself."""

    version: str
    jetstream: bool
    max_payload: int
    server_name: str
    cluster: str | None


class Client:
    """A connection to NATS with JetStream, and the embedded server it owns (if any)."""

    def __init__(self, nc: NATS, url: str, server: EmbeddedServer | None = None, namespace: str = "") -> None:
        self.nc = nc
        self.namespace = check_namespace(namespace)  # the learner's: prefixes every store name ("" = none)
        self.js: JetStreamContext = nc.jetstream()
        self.url = redact_url(url, url)  # what it is connected to, for messages: credentials masked
        self.server = server
        self.wire = Wire(nc)
        self._caches: dict[str, list[AggregateCache]] = {}  # per store name: cleared when the store is deleted

    def store_name(self, name: str) -> str:
        """The name store ``name`` really has: ``<namespace>_<name>`` in a learner namespace, else ``name``.

        A name already in the namespace stays as it is, so ``client.event_store(store.name)`` opens the same store.

        >>> client.namespace, client.store_name("orders"), client.store_name("alice_orders")   # doctest: +SKIP
        ('alice', 'alice_orders', 'alice_orders')
        """
        if not self.namespace or not isinstance(name, str) or name.startswith(f"{self.namespace}_"):
            return name
        return f"{self.namespace}_{name}"

    @property
    def default_replicas(self) -> int:
        """3 on a cluster of 3 or more nodes (JetStream replicates with Raft), else 1."""
        info = server_info(self.nc)
        if not info.get("cluster"):
            return 1
        return min(3, max(1, len(info.get("connect_urls") or [])))

    async def event_store(
        self,
        name: str,
        *,
        duplicate_window: float | None = None,
        replicas: int | None = None,
        snapshots: SnapshotPolicy | None = None,
        cache: AggregateCache | None = None,
        reconfigure: bool = False,
        allow_delete_history: bool = False,
        upcasters: Upcasters | None = None,
        privacy: Personal | None = None,
    ) -> EventStore:
        """The event store ``name``: stream ``NAME`` holding subjects ``name.>``, created or opened.

        ``snapshots=SnapshotPolicy(every=100)`` keeps aggregate snapshots in the KV bucket ``snapshots_<name>``;
        ``cache=AggregateCache()`` keeps loaded aggregates in memory (see :mod:`eskit.cache`).
        A new store gets ``duplicate_window`` (default 120 s) and ``replicas`` (default :attr:`default_replicas`:
        3 on a cluster, 1 on a single server); an existing one keeps its own, and asking for others is an error
        unless ``reconfigure=True`` (which changes them for everyone using the store).
        A new store's history is immutable: the server refuses to delete single events or purge it
        (``deny_delete``, ``deny_purge``; :meth:`delete_store` still deletes it whole), unless
        ``allow_delete_history=True``. The flags are set when the stream is created, never changed later.
        ``upcasters=Upcasters()``: every read sees old events as their current version (see
        :mod:`eskit.upcasting`); the stored events are never rewritten.
        ``privacy=Personal({"registered": ["email"]}, subject="customer")``: those fields are encrypted per
        data subject on append and decrypted on every read; ``eskit.forget(client, "c1")`` makes them read as
        ``"<forgotten>"`` (see :mod:`eskit.privacy`).

        In a learner namespace the store is ``<namespace>_<name>`` (see :meth:`store_name`).

        >>> orders = await client.event_store("orders")      # doctest: +SKIP
        """
        for value, kind, example in ((snapshots, SnapshotPolicy, "SnapshotPolicy(every=100)"),
                                     (cache, AggregateCache, "AggregateCache()"),
                                     (upcasters, Upcasters, "Upcasters()"),
                                     (privacy, Personal, "Personal({'joined': ['email']}, subject='u')")):  # fmt: skip
            if value is not None and not isinstance(value, kind):
                raise ValidationError(f"event_store takes None or {example} there, got {value!r}")
        name = self.store_name(name)
        stream, last = await ensure_stream(self.wire, name, duplicate_window=duplicate_window, replicas=replicas,
                                     default_replicas=self.default_replicas, reconfigure=reconfigure,
                                     allow_delete_history=allow_delete_history)  # fmt: skip
        store = EventStore(self, name, stream)
        store.reader.reached(last)
        if snapshots is not None:
            store.snapshots = await Snapshots.open(store, snapshots)
        store.cache = cache
        store.upcasters = upcasters
        if privacy is not None:
            store.privacy = await Privacy.open(self, privacy, name)
        if cache is not None:
            self._caches.setdefault(name, []).append(cache)
        return store

    async def dcb_store(
        self,
        name: str,
        *,
        tag_keys: Sequence[str] | None = None,
        replicas: int | None = None,
        reconfigure: bool = False,
        allow_delete_history: bool = False,
        upcasters: Upcasters | None = None,
    ) -> DCBStore:
        """The DCB store ``name`` (events with a type and tags, read by query, appended on a condition);
        immutable history unless ``allow_delete_history=True``, as in :meth:`event_store`.

        ``replicas`` and ``reconfigure`` as for :meth:`event_store`.

        ``upcasters``: reads and subscriptions see old events as their current version (:mod:`eskit.upcasting`).

        >>> courses = await client.dcb_store("courses", tag_keys=["course", "student"])   # doctest: +SKIP
        """
        name = self.store_name(name)
        store = await open_dcb_store(self, name, tag_keys=tag_keys, replicas=replicas, reconfigure=reconfigure,
                                     allow_delete_history=allow_delete_history)  # fmt: skip
        store.upcasters = upcasters
        return store

    async def publish_integration(self, store: EventStore, name: str, *, types: Sequence[str]) -> IntegrationStream:
        """Publish the event ``types`` of ``store`` to the public store ``name``: a stream the server fills by
        sourcing ``store`` (no second write by the application; whole events, chosen types only). Returns a
        handle: ``.store`` to read it, ``.wait_for()`` the server's copy, ``.lag()``, ``.delete()``. See
        :mod:`eskit.integration.public`.

        >>> public = await client.publish_integration(orders, "orders-public", types=["placed"])  # doctest: +SKIP
        """
        return await publish_integration(self, store, name, types=types)

    async def public_store(self, name: str, *, upcasters: Upcasters | None = None) -> EventStore:
        """The public store ``name`` (made by :meth:`publish_integration`), to read: what a partner opens with
        its read-only user (:class:`eskit.auth.Partner`); ``upcasters`` as for :meth:`event_store`.

        >>> orders = await partner.public_store("orders-public")          # doctest: +SKIP
        """
        return await open_public_store(self, name, upcasters=upcasters)

    async def delete_store(self, name: str) -> bool:
        """Delete the stream behind store ``name`` (and all its events). Returns False if it did not exist.

        Works on immutable stores too (``deny_delete`` refuses deleting single events, not the stream); an
        account without the right (a writer, an analyst) gets :class:`~eskit.errors.PermissionDeniedError`.
        """
        name = self.store_name(name)
        # The stream first, through the wire: an account that may not delete fails fast (PermissionDeniedError)
        stream = await owned_stream(self.wire, name)  # never another store's or a stream made outside eskit
        reply = json.loads((await self.wire.request(f"$JS.API.STREAM.DELETE.{stream}", b"")).data)
        await drop_bucket(self.js, name)  # its snapshots, if any
        for cache in self._caches.get(name, []):
            cache.clear()
        if reply.get("error", {}).get("err_code") == STREAM_NOT_FOUND:
            return False
        if "error" in reply:
            raise EventStoreError(f"cannot delete store {name}: {reply['error'].get('description')}")
        return bool(reply.get("success"))

    @property
    def max_payload(self) -> int:
        return int(self.nc.max_payload)

    async def server_info(self) -> ServerInfo:
        info = server_info(self.nc)  # the INFO the server sent
        return ServerInfo(
            version=str(info.get("version", "?")),
            jetstream=bool(info.get("jetstream", False)),
            max_payload=self.max_payload,
            server_name=str(info.get("server_name", "")),
            cluster=info.get("cluster"),
        )

    async def close(self) -> None:
        """Drain the connection and stop the embedded server, if this client started one.

        Always closes, within a few seconds, and never raises: a server that does not answer (stalled, gone)
        gets no drain, just a closed socket (``CLOSE_TIMEOUT``).
        """
        try:
            if self.nc.is_connected:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.wire.close(), CLOSE_TIMEOUT)
            await _closing.close(self.nc, timeout=CLOSE_TIMEOUT)
        finally:
            if self.server is not None:
                self.server.stop()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        owner = " (embedded)" if self.server is not None else ""
        learner = f" learner {self.namespace}" if self.namespace else ""
        return f"<eskit.Client {self.url}{owner}{learner}>"


async def connect(
    url: str | None = None,
    *,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    nkeys_seed: str | None = None,
    creds: str | None = None,
    tls: ssl.SSLContext | None = None,
    name: str = "eskit",
    timeout: float = 2.0,
    store_dir: str | os.PathLike[str] | None = None,
    namespace: str | None = None,
    inbox_prefix: str | None = None,
) -> Client:
    """Connect to ``url``, else ``$NATS_URL``, else a new embedded server (stopped by ``client.close()``).

    ``namespace``: the learner namespace every store name gets as a prefix (``"alice"``: ``alice_orders``);
    default ``$ESKIT_LEARNER``, ``""`` for none. Lowercase ASCII letters, digits, ``-`` and ``_``.

    Credentials and TLS are passed through to nats-py: ``user``/``password``, ``token``, ``nkeys_seed``
    (a seed file), ``creds`` (a ``.creds`` file), ``tls`` (an ``ssl.SSLContext``).

    Replies arrive under ``inbox_prefix``: by default ``_INBOX_<user>`` when a ``user`` is given (the only
    inbox :func:`eskit.auth.least_privilege_config` lets that user read, so no other user reads or forges its
    replies), else ``_INBOX``; pass ``inbox_prefix="_INBOX"`` for a server that grants users only ``_INBOX.>``.
    """
    namespace = check_namespace(os.environ.get(LEARNER_ENV, "").strip() if namespace is None else namespace)
    url = url or os.environ.get("NATS_URL") or None
    server = None
    relay = _Relay()
    if url is None:
        server = EmbeddedServer(store_dir=store_dir).start()
        url = server.url
    options: dict[str, Any] = {
        "name": name, "connect_timeout": timeout, "max_reconnect_attempts": 1, "reconnect_time_wait": 0.2,
        "error_cb": relay.error, "disconnected_cb": relay.disconnected, "reconnected_cb": relay.reconnected,
        "user": user, "password": password, "token": token,
        "nkeys_seed": nkeys_seed, "user_credentials": creds, "tls": tls,
        "inbox_prefix": inbox_prefix or _inbox_of(user or _url_user(url)),
    }  # fmt: skip
    try:
        servers = [u.strip() for u in url.split(",") if u.strip()]
        nc = NATS()
        _nats.install(nc)  # fast lanes: bulk reads and the reply inbox skip nats-py's per-message machinery
        await nc.connect(servers, **{k: v for k, v in options.items() if v is not None})
    except Exception as exc:
        if server is not None:
            server.stop()
        raise _connect_error(url, exc, relay.seen, secrets=(password, token, nkeys_seed, creds)) from None
    nc.options["max_reconnect_attempts"] = -1
    relay.client = Client(nc, url, server, namespace)
    return relay.client


class _Relay:
    """nats-py's connection callbacks, passed on to the client's wire once it exists (server -ERRs fail its
    waiting requests); errors while connecting are kept, to be reported once, as one line."""

    def __init__(self) -> None:
        self.client: Client | None = None
        self.seen: list[Exception] = []

    async def error(self, exc: Exception) -> None:
        if self.client is None:
            self.seen.append(exc)
        else:
            self.client.wire.on_server_error(exc)

    async def disconnected(self) -> None:
        if self.client is not None:
            self.client.wire.on_disconnected()

    async def reconnected(self) -> None:
        if self.client is not None:
            self.client.wire.on_reconnected()


async def forget(target: Client | EventStore, subject_id: str, *, bucket: str | None = None) -> bool:
    """Forget data subject ``subject_id``: erase its key from the key bucket and purge the key's history.

    ``target`` is a client (the bucket: ``bucket=``, default ``personal_keys``) or a store opened with
    ``privacy=`` (its bucket). Every personal field encrypted with that key, in every store using the bucket,
    reads as ``eskit.FORGOTTEN`` from now on; the events themselves are unchanged. Returns True if there was a
    key. Read models that copied personal fields must be rebuilt, or forget them themselves (docs/privacy.md).

    >>> await eskit.forget(client, "c1")                               # doctest: +SKIP
    True
    """
    subject_id = check_subject_id(subject_id, "forget: the subject id")
    if isinstance(target, EventStore):
        privacy = target.privacy
        if privacy is None:
            raise ValidationError(
                f"store {target.name!r} was opened without privacy=: pass the client, "
                "eskit.forget(client, subject_id), or open the store with privacy=eskit.Personal(...)"
            )
        if bucket is not None and target.client.store_name(bucket) != privacy.ring.bucket:
            raise ValidationError(f"store {target.name!r} keeps its keys in {privacy.ring.bucket!r}, not {bucket!r}")
        return await privacy.forget(subject_id)
    if not isinstance(target, Client):
        shown = repr(target) if len(repr(target)) <= 40 else repr(target)[:37] + "..."
        raise ValidationError(
            f"forget takes a client or a store: eskit.forget(client, 'c1'); got {type(target).__name__} {shown}"
        )
    ring = await KeyRing.open(target, DEFAULT_BUCKET if bucket is None else bucket)
    return await ring.forget(subject_id)


def _url_user(url: str) -> str | None:
    """The user name in the first server's ``nats://user:password@host`` (None: none, or a token)."""
    userinfo, at, _ = url.split(",")[0].strip().rpartition("@")
    user, colon, _ = userinfo.rpartition("://")[2].partition(":")
    return user if at and colon else None


def _inbox_of(user: str | None) -> str | None:
    """``_INBOX_<user>`` (see :func:`eskit.auth.inbox_prefix`) for a user name that makes one subject token."""
    return auth.inbox_prefix(user) if user and _USER_TOKEN.fullmatch(user) else None


def _connect_error(url: str, exc: Exception, seen: list[Exception], *, secrets: Sequence[str | None]) -> ConnectError:
    text = redact(redact_url(str(exc) or type(exc).__name__, url), *secrets)
    url = redact(redact_url(url, url), *secrets)
    if any("authorization violation" in str(e).lower() for e in [exc, *seen]):
        text = "Authorization Violation"
        return AuthenticationError(
            f"the server at {url} rejected the credentials ({text}); check user/password, token, nkey seed or creds"
        )
    if isinstance(exc, OSError) and exc.filename is not None:  # a seed or creds file that cannot be read
        return ConnectError(f"cannot read the nkey seed or creds file given to connect() ({text}); check its path")
    return ConnectError(f"cannot reach a NATS server at {url} ({text}); {HOW_TO_START}")
