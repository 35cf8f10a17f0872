"""Per-subject keys in a JetStream KV bucket: created once (create-only), cached, forgotten for good.

One :class:`KeyRing` per connection and bucket. A key is 32 random bytes (AES-256) with an 8-byte random key
id; the bucket's value for a data subject is ``key id + key`` (40 bytes), under the subject id as KV key (ids
that are not ``[-_A-Za-z0-9]+`` are base64url-encoded: ``b64.<token>``). The bucket keeps one revision per
key (``history=1``) and allows deleting single messages, so :meth:`KeyRing.forget` can erase the key's bytes
on the server (a secure ``STREAM.MSG.DELETE``, which overwrites them) and then purge the key with a rollup.

Reads never wait on the bucket for a key they know: a key is read once per subject (one leader read, on the
first miss) and kept in memory; a forget in this process drops it at once. Forgets made elsewhere are found
by a check in the background, at most once every ``CHECK_EVERY`` seconds while the ring is used (a ring idle
for ``STALE_AFTER`` seconds awaits the check on its next use, so an idle process shows no forgotten field
from its caches either: one Direct Get then, none while the ring is busy): a Direct Get
of the bucket's messages after the last one seen, whose delete and purge markers drop their keys (and the
connection's cached aggregates). It needs only the read rights every role has (a subscription to the bucket's
subjects would need more, and a refused one fails the connection's waiting requests). After a reconnect the
cache starts over.

>>> ring = await KeyRing.open(client, "personal_keys")        # doctest: +SKIP
>>> kid, aead = await ring.for_write("c1")                    # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .._nats.codes import NO_MESSAGE, STREAM_NAME_IN_USE, STREAM_NOT_FOUND, WRONG_LAST_SEQUENCE
from ..errors import EventStoreError, StoreTimeoutError, ValidationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from ..connection import Client

KEY_BYTES = 32  # AES-256
KID_BYTES = 8
MAX_SUBJECT_BYTES = 255
DEFAULT_BUCKET = "personal_keys"
_PLAIN = re.compile(r"[-_A-Za-z0-9]+")
_BUCKET_OK = re.compile(r"[-_A-Za-z0-9]{1,64}")
_CREATE_ATTEMPTS = 4  # create-only writes that lose a race read the winner's key; bounded
_FETCH_WINDOW = 64  # key reads in flight at once when a batch names many unknown subjects
CHECK_EVERY = 1.0  # seconds between background checks for forgets made elsewhere (while the ring is used)
STALE_AFTER = 2 * CHECK_EVERY  # a ring not checked for this long (idle) awaits the check before a read uses it
_API_ATTEMPTS = 3  # bucket info and create, asked again when unanswered
_CHECK_PAGES = 100  # pages of 256 bucket messages one check reads at most
STREAM_EXISTS = STREAM_NAME_IN_USE
_rings: weakref.WeakKeyDictionary[Client, dict[str, KeyRing]] = weakref.WeakKeyDictionary()


def aesgcm() -> type[AESGCM]:
    """``cryptography``'s AESGCM, or a one-line error saying how to install it."""
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:  # pragma: no cover - the test and lab extras bring it
        raise ValidationError("personal data needs the 'cryptography' package: pip install 'eskit[privacy]'") from None
    return AESGCM


def check_subject_id(value: object, what: str) -> str:
    """A data subject id: a non-empty ``str`` of at most 255 bytes, else :class:`ValidationError`."""
    if type(value) is str and value and len(value.encode()) <= MAX_SUBJECT_BYTES:
        return value
    if not isinstance(value, str):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise ValidationError(f"{what} must be a str (a customer id such as 'c1'), got {type(value).__name__} {shown}")
    raise ValidationError(f"{what} must be a non-empty str of at most {MAX_SUBJECT_BYTES} bytes, got {value[:20]!r}")


def check_bucket(value: object) -> str:
    if type(value) is str and _BUCKET_OK.fullmatch(value):
        return value
    raise ValidationError(f"bucket must be a KV bucket name of letters, digits, '-' and '_', got {value!r}")


def kv_key(subject_id: str) -> str:
    """The KV key holding a subject's key."""
    if _PLAIN.fullmatch(subject_id):
        return subject_id
    return "b64." + base64.urlsafe_b64encode(subject_id.encode()).decode().rstrip("=")


def subject_of(key: str) -> str:
    """The subject id a KV key stands for (:func:`kv_key` undone)."""
    if not key.startswith("b64."):
        return key
    token = key[4:]
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8", "replace")


class KeyRing:
    """The keys of one bucket as this connection knows them (see the module docstring)."""

    def __init__(self, client: Client, bucket: str) -> None:
        self.client = client
        self.bucket = bucket  # the real name (a learner namespace's prefix included)
        self.stream = f"KV_{bucket}"
        self._current: dict[str, tuple[str, AESGCM]] = {}  # subject id -> (key id, cipher)
        self._dead: set[tuple[str, str]] = set()  # (subject id, key id) known not to be the subject's key
        self._locks: dict[str, asyncio.Lock] = {}
        self._reconnects = 0
        self._seen = 0  # the bucket's last message this ring has looked at (forgets after it: not yet seen)
        self._checked = 0.0
        self._checking: asyncio.Future[None] | None = None

    def __repr__(self) -> str:  # never a key: how many are cached, that is all
        return f"<KeyRing bucket={self.bucket} cached={len(self._current)} forgotten={len(self._dead)}>"

    @classmethod
    async def open(cls, client: Client, bucket: str = DEFAULT_BUCKET) -> KeyRing:
        """The connection's ring for ``bucket`` (in a learner namespace ``<namespace>_<bucket>``), the bucket
        created if needed."""
        real = client.store_name(check_bucket(bucket))
        rings = _rings.setdefault(client, {})
        ring = rings.get(real)
        if ring is None:
            aesgcm()  # fail early, one line, if cryptography is missing
            ring = cls(client, real)
            await ring._ensure_bucket()
            ring._reconnects = int(client.nc.stats.get("reconnects", 0))
            ring._checked = time.monotonic()
            ring = rings.setdefault(real, ring)
        return ring

    async def _patient(self, subject: str, payload: bytes) -> dict[str, Any]:
        """A JetStream API request (info, create: safe to repeat) asked again when unanswered, up to 3 times:
        a busy server (or a cluster's meta leader creating buckets) may not answer the first in time."""
        for attempt in range(_API_ATTEMPTS):
            try:
                reply: dict[str, Any] = json.loads((await self.client.wire.request(subject, payload)).data)
                return reply
            except StoreTimeoutError:
                if attempt == _API_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def _ensure_bucket(self) -> None:
        info = await self._patient(f"$JS.API.STREAM.INFO.{self.stream}", b"")
        if info.get("error", {}).get("err_code") != STREAM_NOT_FOUND:
            if "error" in info:
                raise EventStoreError(f"key bucket {self.bucket}: {info['error'].get('description')}")
            self._seen = int(info.get("state", {}).get("last_seq", 0))
            return
        config = {  # a KV bucket (history=1) that allows erasing a message: forget() overwrites the key's bytes
            "name": self.stream, "subjects": [f"$KV.{self.bucket}.>"], "allow_direct": True,
            "allow_rollup_hdrs": True, "deny_delete": False, "deny_purge": False, "discard": "new",
            "duplicate_window": 120_000_000_000, "max_msgs": -1, "max_bytes": -1, "max_age": 0,
            "max_consumers": -1, "max_msgs_per_subject": 1, "num_replicas": self.client.default_replicas,
            "storage": "file", "retention": "limits",
        }  # fmt: skip
        reply = await self._patient(f"$JS.API.STREAM.CREATE.{self.stream}", json.dumps(config).encode())
        error = reply.get("error")
        if error and error.get("err_code") != STREAM_EXISTS:
            raise EventStoreError(f"cannot create key bucket {self.bucket}: {error.get('description')}")

    def _poke(self) -> None:
        """Start a background check for forgets made elsewhere, unless one ran in the last ``CHECK_EVERY`` s."""
        now = time.monotonic()
        if now - self._checked < CHECK_EVERY or (self._checking is not None and not self._checking.done()):
            return
        self._checked = now
        self._checking = asyncio.ensure_future(self._check_forgets())

    async def _check_forgets(self) -> None:
        """Drop the keys whose delete or purge markers were stored after the last message seen."""
        prefix = f"$KV.{self.bucket}."
        try:
            for _ in range(_CHECK_PAGES):  # bounded: each page moves `_seen` on
                page = await self.client.wire.direct_get(self.stream, f"{prefix}>", start=self._seen + 1, batch=256)
                for m in page.messages:
                    self._seen = max(self._seen, m.seq)
                    if m.headers.get("KV-Operation") in ("DEL", "PURGE") and m.subject.startswith(prefix):
                        self._drop(subject_of(m.subject[len(prefix) :]))
                if not page.pending or not page.messages:
                    return
        except Exception:  # a check that fails (a reconnect, a closed client) runs again later
            pass

    def _drop(self, subject_id: str) -> None:
        known = self._current.pop(subject_id, None)
        if known is not None:
            self._dead.add((subject_id, known[0]))
        self._clear_caches()

    def _clear_caches(self) -> None:
        """Cached aggregates may hold a forgotten subject's fields: they go (forgets are rare)."""
        for caches in self.client._caches.values():
            for cache in caches:
                cache.clear()

    async def fresh(self) -> None:
        """:meth:`_check_connection`, first awaiting the check for forgets made elsewhere if none ran for
        ``STALE_AFTER`` seconds: a process that was idle must not give out a forgotten subject's fields from
        its caches on its next read (a busy one checks in the background, never waiting)."""
        if time.monotonic() - self._checked >= STALE_AFTER:
            self._checked = time.monotonic()
            if self._checking is None or self._checking.done():
                self._checking = asyncio.ensure_future(self._check_forgets())
            await asyncio.shield(self._checking)  # a cancelled read leaves the check running for the others
        self._check_connection()

    def _check_connection(self) -> None:
        """Look for forgets made elsewhere (in the background), and after a reconnect read every key again."""
        self._poke()
        reconnects = int(self.client.nc.stats.get("reconnects", 0))
        if reconnects != self._reconnects:
            self._reconnects = reconnects
            self._current.clear()
            self._clear_caches()

    # -- reading -------------------------------------------------------------------------------------------

    def cipher(self, subject_id: str, kid: str) -> AESGCM | None:
        """The cipher of ``kid`` if it is ``subject_id``'s current key (known here), else None."""
        known = self._current.get(subject_id)
        return known[1] if known is not None and known[0] == kid else None

    def settled(self, subject_id: str, kid: str) -> bool:
        """Whether this ring knows what ``kid`` is: the subject's current key, or one that is gone."""
        known = self._current.get(subject_id)
        return (known is not None and known[0] == kid) or (subject_id, kid) in self._dead

    async def learn(self, wanted: Iterable[tuple[str, str]]) -> None:
        """Read the keys of the (subject id, key id) pairs not settled yet: one leader read per subject."""
        await self.fresh()
        by_subject: dict[str, set[str]] = {}
        for subject_id, kid in wanted:
            if not self.settled(subject_id, kid):
                by_subject.setdefault(subject_id, set()).add(kid)
        subjects = list(by_subject)
        for start in range(0, len(subjects), _FETCH_WINDOW):
            chunk = subjects[start : start + _FETCH_WINDOW]
            stored = await asyncio.gather(*(self._stored(s) for s in chunk))
            for subject_id, value in zip(chunk, stored, strict=True):
                current = self._remember(subject_id, value)
                for kid in by_subject[subject_id]:
                    if kid != current:
                        self._dead.add((subject_id, kid))

    def _remember(self, subject_id: str, value: tuple[int, bytes | None]) -> str | None:
        """Cache the stored key (if any); return its key id."""
        raw = value[1]
        if raw is None or len(raw) != KID_BYTES + KEY_BYTES:
            known = self._current.pop(subject_id, None)
            if known is not None:
                self._dead.add((subject_id, known[0]))
            return None
        kid = raw[:KID_BYTES].hex()
        known = self._current.get(subject_id)
        if known is None or known[0] != kid:
            if known is not None:
                self._dead.add((subject_id, known[0]))
            self._current[subject_id] = (kid, aesgcm()(raw[KID_BYTES:]))
        return kid

    async def _stored(self, subject_id: str) -> tuple[int, bytes | None]:
        """(sequence, value) of the subject's key message as the stream's leader has it; (0, None) if none,
        (seq, None) for a delete or purge marker."""
        subject = f"$KV.{self.bucket}.{kv_key(subject_id)}"
        request = json.dumps({"last_by_subj": subject}).encode()
        reply = json.loads((await self.client.wire.request(f"$JS.API.STREAM.MSG.GET.{self.stream}", request)).data)
        error = reply.get("error")
        if error:
            if error.get("err_code") == NO_MESSAGE:
                return 0, None
            raise EventStoreError(f"key bucket {self.bucket}: {error.get('description', 'unavailable')}")
        message = reply.get("message", {})
        seq = int(message.get("seq", 0))
        headers = base64.b64decode(message.get("hdrs") or b"")
        if b"KV-Operation: DEL" in headers or b"KV-Operation: PURGE" in headers:
            return seq, None
        return seq, base64.b64decode(message.get("data") or b"")

    # -- writing -------------------------------------------------------------------------------------------

    async def for_write(self, subject_id: str) -> tuple[str, AESGCM]:
        """The subject's key (key id, cipher), created on first use: create-only, so two writers racing for a
        new subject end up with one key."""
        await self.fresh()
        known = self._current.get(subject_id)
        if known is not None:
            return known
        lock = self._locks.setdefault(subject_id, asyncio.Lock())
        try:
            async with lock:
                return await self._create(subject_id)
        finally:
            if not lock.locked():
                self._locks.pop(subject_id, None)

    async def _create(self, subject_id: str) -> tuple[str, AESGCM]:
        for _ in range(_CREATE_ATTEMPTS):
            known = self._current.get(subject_id)
            if known is not None:
                return known
            seq, value = await self._stored(subject_id)
            if value is not None and self._remember(subject_id, (seq, value)) is not None:
                return self._current[subject_id]  # someone made it
            fresh = os.urandom(KID_BYTES + KEY_BYTES)
            headers = {"Nats-Expected-Last-Subject-Sequence": str(seq)}  # 0: none yet; else the marker's
            reply = await self.client.wire.request(f"$KV.{self.bucket}.{kv_key(subject_id)}", fresh, headers)
            body = json.loads(reply.data)
            error = body.get("error")
            if error is None:
                self._remember(subject_id, (int(body.get("seq", 0)), fresh))
                return self._current[subject_id]
            if error.get("err_code") != WRONG_LAST_SEQUENCE:  # else another writer was first: read its key
                raise EventStoreError(f"cannot store a key in bucket {self.bucket}: {error.get('description')}")
        raise EventStoreError(
            f"the key of one data subject in bucket {self.bucket} kept changing while it was created; retry"
        )

    async def forget(self, subject_id: str) -> bool:
        """Erase the subject's key from the bucket (its bytes overwritten on the server) and purge the key's
        history; True if there was a key. Whatever was encrypted with it can no longer be read."""
        self._check_connection()
        seq, value = await self._stored(subject_id)
        wire, subject = self.client.wire, f"$KV.{self.bucket}.{kv_key(subject_id)}"
        if seq:  # overwrite the stored message (no_erase false): a purge alone only unlinks it
            request = json.dumps({"seq": seq}).encode()
            reply = json.loads((await wire.request(f"$JS.API.STREAM.MSG.DELETE.{self.stream}", request)).data)
            error = reply.get("error")
            if error and error.get("err_code") != NO_MESSAGE:
                raise EventStoreError(f"cannot erase a key in bucket {self.bucket}: {error.get('description')}")
        reply = await wire.request(subject, b"", {"KV-Operation": "PURGE", "Nats-Rollup": "sub"})
        error = json.loads(reply.data).get("error")
        if error:
            raise EventStoreError(f"cannot purge a key in bucket {self.bucket}: {error.get('description')}")
        self._drop(subject_id)
        self._current.pop(subject_id, None)
        return value is not None

    async def history(self, subject_id: str) -> list[Any]:
        """What the bucket still holds for a subject, every revision (a test's and a lesson's check)."""
        subject = f"$KV.{self.bucket}.{kv_key(subject_id)}"
        found, start = [], 1
        for _ in range(1000):  # bounded: each step moves past one message
            request = json.dumps({"seq": start, "next_by_subj": subject}).encode()
            reply = json.loads((await self.client.wire.request(f"$JS.API.STREAM.MSG.GET.{self.stream}", request)).data)
            if "error" in reply:
                break
            message = reply["message"]
            found.append({"seq": message["seq"], "bytes": len(base64.b64decode(message.get("data") or b""))})
            start = int(message["seq"]) + 1
        return found
