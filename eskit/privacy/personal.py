"""Personal fields, encrypted per data subject on append and decrypted (or shown as forgotten) on every read.

>>> personal = Personal({"registered": ["email", "name"]}, subject="customer")
>>> personal
Personal({'registered': ['email', 'name']}, subject='customer', bucket='personal_keys')

A personal field is stored as one string, ``eskit-pii:1:<key id>:<base64 of nonce + ciphertext>``: the
field's JSON, encrypted with AES-256-GCM (``cryptography``), a random 96-bit nonce per field, and associated
data binding it to its context (store, data subject id, field name): a ciphertext copied into another
subject's event, another field or another store does not decrypt, and reads as :data:`FORGOTTEN`.
"""

from __future__ import annotations

import base64
import json
import os
from binascii import a2b_base64
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..codec import encode_json
from ..errors import ValidationError
from ..events import Event, check_token, decode, subject_parts
from .keys import DEFAULT_BUCKET, KeyRing, check_bucket, check_subject_id

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from .._nats.wire import StoredMsg
    from ..connection import Client
    from ..events import RecordedEvent

FORGOTTEN = "<forgotten>"  # what every read shows for a personal field whose key is gone (or that is not its own)
PREFIX = "eskit-pii:1:"
PERSONAL_MARK = PREFIX.encode()
SEALED = b"eskit-pii-sealed:1\n"  # a snapshot whose state holds personal data: sealed with its subjects' keys
_KID_END = len(PREFIX) + 16  # key ids are 8 bytes, 16 hex digits
NONCE_BYTES = 12


class Personal:
    """Which fields of which event types are personal data, and which data field names their subject.

    ``fields``: event type -> the top-level data fields that are personal (``{"registered": ["email"]}``).
    ``subject``: the data field holding the data subject's id (a ``str``, e.g. the customer id); it stays in
    plain text (it is how the subject is found and forgotten), so it may not be one of the personal fields.
    ``bucket``: the KV bucket of the keys (one per learner namespace; shared by every store that uses it, so
    forgetting a subject forgets it in all of them).

    >>> Personal({"signed_up": "email"}, subject="user")
    Traceback (most recent call last):
    eskit.errors.ValidationError: Personal: the fields of 'signed_up' must be a list of field names, e.g. ...
    """

    def __init__(self, fields: Mapping[str, Sequence[str]], *, subject: str, bucket: str = DEFAULT_BUCKET) -> None:
        if not isinstance(fields, Mapping) or not fields:
            raise ValidationError(
                "Personal takes a dict of event type -> personal fields, e.g. "
                f"Personal({{'registered': ['email', 'name']}}, subject='customer'); got {_shown(fields)}"
            )
        if type(subject) is not str or not subject:
            raise ValidationError(f"Personal subject= names the data field of the subject id, got {_shown(subject)}")
        declared: dict[str, tuple[str, ...]] = {}
        for event_type, names in fields.items():
            check_token(event_type, "Personal event type")
            if isinstance(names, str) or not isinstance(names, Sequence) or not names:
                raise ValidationError(
                    f"Personal: the fields of {event_type!r} must be a list of field names, e.g. "
                    f"{{{event_type!r}: ['email', 'name']}}; got {_shown(names)}"
                )
            for name in names:
                if type(name) is not str or not name:
                    raise ValidationError(f"Personal: fields of {event_type!r} are non-empty str, not {_shown(name)}")
                if name == subject:
                    raise ValidationError(
                        f"Personal: {name!r} of {event_type!r} is the subject field; it stays in plain text (it is "
                        "how the subject is found and forgotten): use a pseudonymous id there, not personal data"
                    )
            declared[event_type] = tuple(dict.fromkeys(names))
        self.fields: Mapping[str, tuple[str, ...]] = declared
        self.subject = subject
        self.bucket = check_bucket(bucket)

    def __repr__(self) -> str:
        fields = {t: list(f) for t, f in self.fields.items()}
        return f"Personal({fields!r}, subject={self.subject!r}, bucket={self.bucket!r})"


class Privacy:
    """A store's personal-data handling: its :class:`Personal` declaration and the key ring (``store.privacy``)."""

    def __init__(self, personal: Personal, ring: KeyRing, store: str) -> None:
        self.personal = personal
        self.ring = ring
        self.store = store
        self._fields = personal.fields
        self._subject = personal.subject
        self._store_context = b"eskit-pii:1\x00" + store.encode() + b"\x00"

    def __repr__(self) -> str:
        return f"<Privacy {self.store} {self.personal!r}>"

    @classmethod
    async def open(cls, client: Client, personal: Personal, store: str) -> Privacy:
        return cls(personal, await KeyRing.open(client, personal.bucket), store)

    async def forget(self, subject_id: str) -> bool:
        """Forget a data subject everywhere its key bucket is used (see :func:`eskit.forget`)."""
        return await self.ring.forget(check_subject_id(subject_id, "forget: the subject id"))

    # -- writing -------------------------------------------------------------------------------------------

    async def seal(self, events: Sequence[Event]) -> Sequence[Event]:
        """``events`` with their personal fields encrypted (new Event objects with the same ids); events
        without personal fields come back as they are. Bad input raises before anything is stored."""
        return await self.sealed(events, self.check(events))

    def check(self, events: Sequence[Event]) -> list[tuple[int, Event, list[str], str]]:
        """The events to encrypt (index, event, its personal fields, subject id); raises on a missing or bad
        subject id, before any key is made."""
        fields = self._fields
        todo: list[tuple[int, Event, list[str], str]] = []
        if type(events) is not list and type(events) is not tuple:
            return todo  # the store's own check says what is wrong
        for i, event in enumerate(events):
            names = fields.get(event.type) if isinstance(event, Event) else None
            data = event.data if names else None
            if not isinstance(data, Mapping):
                continue
            present = [n for n in names or () if n in data]
            if present:
                where = f"event {event.type!r}: the subject id in data[{self._subject!r}]"
                todo.append((i, event, present, check_subject_id(data.get(self._subject), where)))
        return todo

    async def sealed(self, events: Sequence[Event], todo: list[tuple[int, Event, list[str], str]]) -> Sequence[Event]:
        """``events`` with the personal fields :meth:`check` found encrypted."""
        if not todo:
            return events
        out = list(events)
        for i, event, present, subject_id in todo:
            kid, aead = await self.ring.for_write(subject_id)
            sealed = dict(event.data)
            for name in present:
                plain = encode_json(sealed[name], event.type)
                nonce = os.urandom(NONCE_BYTES)
                box = aead.encrypt(nonce, plain, self._context(subject_id, name))
                sealed[name] = f"{PREFIX}{kid}:{base64.b64encode(nonce + box).decode()}"
            out[i] = replace(event, data=sealed)
        return out

    def _context(self, subject_id: str, name: str) -> bytes:
        """The associated data of a field's ciphertext: what it belongs to (a swap elsewhere fails)."""
        return b"%s%s\x00%s" % (self._store_context, subject_id.encode(), name.encode())

    # -- reading -------------------------------------------------------------------------------------------

    async def reveal(self, types: Sequence[str], datas: Sequence[Any]) -> dict[str, str]:
        """Decrypt the personal fields of the decoded ``datas`` (dicts changed in place; ``types`` are the
        stored event types): a field whose key is gone, or that is not this subject's, becomes
        :data:`FORGOTTEN`. Keys not known yet are read first, one read per subject. Returns the keys used
        (subject id -> key id)."""
        fields, subject_field, ring = self._fields, self._subject, self.ring
        await ring.fresh()
        current, dead = ring._current, ring._dead
        used: dict[str, str] = {}
        later: list[tuple[dict[str, Any], str, str, str, str]] = []  # keys to read first
        for event_type, data in zip(types, datas, strict=True):
            names = fields.get(event_type)
            if names is None or type(data) is not dict:
                continue
            subject_id = data.get(subject_field)
            if type(subject_id) is not str:
                subject_id = ""  # no subject id: nothing of it can be read (no key is ever made for "")
            for name in names:
                value = data.get(name)
                if type(value) is not str or not value.startswith(PREFIX):
                    continue
                kid = value[len(PREFIX) : _KID_END]
                known = current.get(subject_id)
                if known is not None and known[0] == kid:  # the common case: one dict lookup, then AES-GCM
                    data[name] = opened = self._decrypt(known[1], subject_id, name, value)
                    if opened is not FORGOTTEN:
                        used[subject_id] = kid
                elif subject_id and (subject_id, kid) not in dead:
                    later.append((data, name, subject_id, kid, value))
                else:
                    data[name] = FORGOTTEN
        if later:
            await ring.learn({(s, k) for _, _, s, k, _ in later})
            for data, name, subject_id, kid, value in later:
                aead = ring.cipher(subject_id, kid)
                data[name] = opened = FORGOTTEN if aead is None else self._decrypt(aead, subject_id, name, value)
                if opened is not FORGOTTEN:
                    used[subject_id] = kid
        return used

    def _decrypt(self, aead: AESGCM, subject_id: str, name: str, value: str) -> Any:
        context = b"%s%s\x00%s" % (self._store_context, subject_id.encode(), name.encode())  # as _context()
        try:
            box = a2b_base64(value[_KID_END + 1 :])
            plain = aead.decrypt(box[:NONCE_BYTES], box[NONCE_BYTES:], context)
        except Exception:  # InvalidTag (another subject's, field's or store's, or tampered), garbled base64
            return FORGOTTEN
        if plain[:1] == b'"' and b"\\" not in plain:  # a JSON string without escapes: the common case
            return plain[1:-1].decode()
        return json.loads(plain)

    async def reveal_events(self, events: Sequence[RecordedEvent]) -> None:
        """:meth:`reveal` for decoded events (their data dicts changed in place)."""
        if events:
            await self.reveal([e.type for e in events], [e.data for e in events])

    async def revealed_messages(self, messages: Sequence[StoredMsg]) -> tuple[list[Any], dict[str, str]]:
        """The data of stored messages, decoded and revealed, and the keys used; a payload that is not JSON
        is an :class:`Undecodable` holding the error (the caller says where)."""
        datas: list[Any] = []
        for m in messages:
            try:
                datas.append(json.loads(m.data) if m.data else None)
            except (ValueError, RecursionError) as exc:
                datas.append(Undecodable(exc))
        used = await self.reveal([subject_parts(m.subject)[1] for m in messages], datas)
        return datas, used

    def keys_of(self, events: Sequence[Event]) -> dict[str, str]:
        """The keys (subject id -> key id) the personal fields of ``events`` were just encrypted with."""
        used: dict[str, str] = {}
        for _, _, _, subject_id in self.check(events):
            known = self.ring._current.get(subject_id)
            if known is not None:
                used[subject_id] = known[0]
        return used

    # -- snapshots -----------------------------------------------------------------------------------------

    def seal_snapshot(self, payload: bytes, keys: Mapping[str, str], name: str) -> bytes | None:
        """A snapshot's bytes encrypted with each key its state was built with (forgetting any one of them
        makes it unreadable); None if one of them is not current (forgotten meanwhile)."""
        pairs = sorted(keys.items())
        box = payload
        for subject_id, kid in pairs:
            aead = self.ring.cipher(subject_id, kid)
            if aead is None:
                return None
            nonce = os.urandom(NONCE_BYTES)
            box = nonce + aead.encrypt(nonce, box, self._context(subject_id, f"snapshot {name}"))
        return SEALED + json.dumps(pairs, separators=(",", ":")).encode() + b"\n" + box

    async def open_snapshot(self, raw: bytes, name: str) -> tuple[bytes, dict[str, str]] | None:
        """A sealed snapshot's bytes and keys; None if a key is gone or it does not open (tampered)."""
        head, _, box = raw[len(SEALED) :].partition(b"\n")
        try:
            pairs = [(str(s), str(k)) for s, k in json.loads(head)]
        except (ValueError, TypeError):
            return None
        unknown = [(s, k) for s, k in pairs if not self.ring.settled(s, k)]
        if unknown:
            await self.ring.learn(unknown)
        for subject_id, kid in reversed(pairs):
            aead = self.ring.cipher(subject_id, kid)
            if aead is None:
                return None
            try:
                box = aead.decrypt(box[:NONCE_BYTES], box[NONCE_BYTES:], self._context(subject_id, f"snapshot {name}"))
            except Exception:  # InvalidTag: not this aggregate's, or tampered with
                return None
        return box, dict(pairs)

    async def reveal_parked(self, event: RecordedEvent) -> RecordedEvent:
        """A parked event's stored bytes decoded again and revealed (a dead letter keeps the ciphertext)."""
        fresh = decode(event.position, event.subject, {}, event.raw) if event.raw else event
        if fresh.data is not None:
            await self.reveal_events([fresh])
            return replace(event, data=fresh.data)
        return event


class Undecodable:
    """A stored payload that is not JSON (see :meth:`Privacy.revealed_messages`)."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def _shown(value: object) -> str:
    text = repr(value).replace("\n", " ")
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"
