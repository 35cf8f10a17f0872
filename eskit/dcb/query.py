"""DCB values and their subject layout: tagged events, queries, conditions, and the filters that index them.

>>> item = QueryItem(types=["StudentSubscribedToCourse"], tags=["course:c1"])
>>> Layout("courses", ("course", "student")).filter(item)
'courses.StudentSubscribedToCourse.c1.*'
>>> Query([item]).matches("StudentSubscribedToCourse", ["student:s7", "course:c1"])
True

An event is stored once, on ``<store>.<type>.<slot 1>...<slot n>``: one token per *declared tag key*
(``tag_keys=("course", "student")``), holding the value of the event's ``course:...`` tag, or ``_`` if it has
none. The full tag list travels in the ``Eskit-Tags`` header and is the truth; the subject is an index, so a
value that is not a safe subject token (``.``, ``*``, ``>``, whitespace, ``~``, too long) is stored as
``~<hash>``. Every filter is therefore a *superset* of what a query item matches; reads and condition checks
always re-check events precisely.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..codec import encode_json
from ..errors import EventStoreError, PayloadTooLargeError, ValidationError
from ..events import MAX_POSITION, MSG_ID, SCHEMA_VERSION, check_events, check_position, check_token

if TYPE_CHECKING:
    from ..upcasting import Upcasters

TAGS = "Eskit-Tags"
RAW = "Eskit-Raw"  # the payload is opaque bytes, not JSON
EMPTY = "_"
ANY = "*"
_SAFE_MAX = 64
MAX_BATCH = 1000  # the server's atomic batch limit
Message = tuple[str, bytes, dict[str, str]]


@dataclass(frozen=True, slots=True)
class TaggedEvent:
    """A new DCB event: a type, data (JSON-able, or ``bytes`` kept as is) and tags.

    >>> TaggedEvent("CourseDefined", {"courseId": "c1", "capacity": 10}, ["course:c1"]).tags
    ('course:c1',)
    """

    type: str
    data: Any = field(default_factory=dict)
    tags: Sequence[str] = ()
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    schema_version: int = 1  # bump it when the data's shape changes (see eskit.upcasting)

    def __post_init__(self) -> None:
        if isinstance(self.tags, str):
            raise ValidationError(f"tags takes a list: TaggedEvent({self.type!r}, data, [{self.tags!r}])")
        object.__setattr__(self, "tags", tuple(self.tags))


@dataclass(frozen=True, slots=True)
class SequencedEvent:
    """A stored DCB event and its position (the stream sequence)."""

    position: int
    type: str
    data: Any
    tags: tuple[str, ...]
    id: str | None = None
    schema_version: int = 1  # after upcasting, if the store has upcasters

    @property
    def event(self) -> TaggedEvent:
        return TaggedEvent(self.type, self.data, self.tags, self.id or "", self.schema_version)


class ReadResult(list[SequencedEvent]):
    """The events a read returned, in position order, and ``head``: the store's last position at the read
    (with ``limit``: the last returned position, as pyeventsourcing does). Use ``head`` as ``after``."""

    def __init__(self, events: Sequence[SequencedEvent], head: int | None) -> None:
        super().__init__(events)
        self.head = head


@dataclass(frozen=True, slots=True)
class QueryItem:
    """Events whose type is one of ``types`` (any type if empty) and that carry all of ``tags``."""

    types: Sequence[str] = ()
    tags: Sequence[str] = ()

    def __post_init__(self) -> None:
        if isinstance(self.types, str) or isinstance(self.tags, str):
            raise ValidationError("QueryItem takes lists: QueryItem(types=['A'], tags=['course:c1'])")
        object.__setattr__(self, "types", tuple(self.types))
        object.__setattr__(self, "tags", tuple(self.tags))

    def matches(self, event_type: str, tags: Iterable[str]) -> bool:
        return (not self.types or event_type in self.types) and set(self.tags) <= set(tags)


@dataclass(frozen=True, slots=True)
class Query:
    """Items OR-ed together; no items matches every event (``Query.all()``)."""

    items: Sequence[QueryItem] = ()

    def __post_init__(self) -> None:
        items = self.items
        if not isinstance(items, Sequence) or not all(isinstance(item, QueryItem) for item in items):
            raise ValidationError(f"Query takes a list of QueryItems: Query([QueryItem(tags=['c:1'])]), got {items!r}")
        object.__setattr__(self, "items", tuple(items))

    @classmethod
    def all(cls) -> Query:
        return cls(())

    def matches(self, event_type: str, tags: Iterable[str]) -> bool:
        tag_set = set(tags)
        return not self.items or any(item.matches(event_type, tag_set) for item in self.items)

    def __str__(self) -> str:
        if not self.items:
            return "Query.all()"
        return " OR ".join(f"(types={list(i.types)} tags={list(i.tags)})" for i in self.items)


@dataclass(frozen=True, slots=True)
class AppendCondition:
    """Fail the append if an event matching ``fail_if_events_match`` was stored after position ``after``."""

    fail_if_events_match: Query = field(default_factory=Query)
    after: int | None = None

    def __post_init__(self) -> None:
        check_position(self.after, "AppendCondition's after")
        if not isinstance(self.fail_if_events_match, Query):
            raise ValidationError(
                f"AppendCondition takes a Query, e.g. AppendCondition(Query([...]), after=seen.head), got "
                f"{self.fail_if_events_match!r}"
            )


def check_tag(tag: object) -> str:
    """A tag is any non-empty str without control characters (it is stored JSON-encoded in a header)."""
    if not isinstance(tag, str) or not tag:
        raise ValidationError(f"tag {tag!r} must be a non-empty str such as 'course:c1'")
    for ch in tag:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            raise ValidationError(f"tag {tag!r} contains the control character {ch!r}; remove it")
    return tag


def token(value: str) -> str:
    """The subject token for a tag value: the value itself if it is safe, else ``~`` + a hash of it."""
    safe = value and len(value) <= _SAFE_MAX and value != EMPTY and not value.startswith("~")
    if safe:
        try:
            return check_token(value, "tag value")
        except ValidationError:
            pass
    return "~" + hashlib.blake2b(value.encode(), digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class Layout:
    """How one DCB store maps events to subjects and query items to subject filters."""

    store: str
    tag_keys: tuple[str, ...] = ()

    @property
    def everything(self) -> str:
        return f"{self.store}.>"

    @property
    def carrier(self) -> str:
        """The subject of check carriers: one token longer than any event's, so no event filter holds it."""
        return ".".join([self.store, *["~"] * (len(self.tag_keys) + 2)])

    @property
    def lock(self) -> str:
        """The subject of the append lock on replicated stores (see :mod:`eskit.dcb`): never written to."""
        return ".".join([self.store, *["~"] * (len(self.tag_keys) + 3)])

    def is_carrier(self, subject: str) -> bool:
        """A check carrier, or a ticket of :mod:`eskit.dcb.turns` (on the carrier's subject + tokens)."""
        return subject == self.carrier or subject.startswith(self.carrier + ".")

    def subject(self, event: TaggedEvent) -> str:
        check_token(event.type, "event type")
        slots = [EMPTY] * len(self.tag_keys)
        for tag in event.tags:
            key, sep, value = check_tag(tag).partition(":")
            if sep and key in self.tag_keys:
                i = self.tag_keys.index(key)
                if slots[i] != EMPTY:
                    raise ValidationError(
                        f"event {event.type!r} has two '{key}:' tags, but '{key}' is a subject slot of store "
                        f"{self.store!r} (one value per event); use a tag key that is not in tag_keys"
                    )
                slots[i] = token(value)
        return ".".join([self.store, event.type, *slots])

    def filter(self, item: QueryItem) -> str:
        """The narrowest subject filter that holds every event ``item`` matches."""
        for t in item.types:
            check_token(t, "event type")
        slots = [ANY] * len(self.tag_keys)
        for tag in item.tags:
            key, sep, value = check_tag(tag).partition(":")
            if sep and key in self.tag_keys:
                slots[self.tag_keys.index(key)] = token(value)
        event_type = item.types[0] if len(set(item.types)) == 1 else ANY
        return ".".join([self.store, event_type, *slots])

    def filters(self, query: Query | None) -> list[str]:
        """One filter per item, minus duplicates and filters inside others."""
        if query is None or not query.items:
            return [self.everything]
        return _minimal(self.filter(item) for item in query.items)

    def check_filters(self, query: Query, slots: int) -> list[str]:
        """At most ``slots`` filters that together hold every event ``query`` matches (merging if needed)."""
        filters = self.filters(query)
        while len(filters) > slots:
            pairs = [(a, b) for i, a in enumerate(filters) for b in filters[i + 1 :]]
            a, b = min(pairs, key=lambda p: _merge(*p).count(ANY))
            filters = _minimal([f for f in filters if f not in (a, b)] + [_merge(a, b)])
        return filters


def _merge(a: str, b: str) -> str:
    """The narrowest filter holding both: equal tokens kept, others become ``*``."""
    ta, tb = a.split("."), b.split(".")
    if ">" in ta or ">" in tb or len(ta) != len(tb):
        return f"{ta[0]}.>"
    return ".".join(x if x == y else ANY for x, y in zip(ta, tb, strict=True))


def covers(outer: str, inner: str) -> bool:
    """Does filter (or subject) ``outer`` hold everything ``inner`` does?"""
    to, ti = outer.split("."), inner.split(".")
    if to[-1] == ">":
        return len(ti) >= len(to) and all(o in (ANY, i) for o, i in zip(to[:-1], ti, strict=False))
    return len(to) == len(ti) and all(o in (ANY, i) for o, i in zip(to, ti, strict=True))


def _minimal(filters: Iterable[str]) -> list[str]:
    unique = list(dict.fromkeys(filters))
    return [f for f in unique if not any(g != f and covers(g, f) for g in unique)]


def encode(event: TaggedEvent, subject: str) -> tuple[str, bytes, dict[str, str]]:
    """The message for an event: JSON (or raw bytes) payload, tags and id in headers."""
    headers = {MSG_ID: event.id, TAGS: json.dumps(list(event.tags))}
    version = event.schema_version
    if version != 1:
        if type(version) is not int or not 1 <= version <= MAX_POSITION:  # stored, then read back as version 1
            raise ValidationError(f"schema_version must be an int (1, 2, ...), got {version!r}")
        headers[SCHEMA_VERSION] = str(version)
    if isinstance(event.data, bytes | bytearray):
        headers[RAW] = "1"
        return subject, bytes(event.data), headers
    return subject, encode_json(event.data, event.type), headers


def encode_all(layout: Layout, events: Sequence[TaggedEvent], *, max_payload: int) -> list[Message]:
    """The messages for an append, checked before anything is sent."""
    check_events(events, TaggedEvent, "append([event], condition)")
    if not events or len(events) > MAX_BATCH:
        raise ValidationError(f"{len(events)} events in one append; give 1 to {MAX_BATCH} (one atomic batch)")
    out = []
    for event in events:
        msg = encode(event, layout.subject(event))
        size = len(msg[1]) + sum(len(k) + len(v) + 4 for k, v in msg[2].items()) + 300
        if size > max_payload:
            raise PayloadTooLargeError(
                f"event {event.type!r} is {size:,} bytes with headers, over the server's max_payload "
                f"({max_payload:,}); store large data elsewhere and keep a reference"
            )
        out.append(msg)
    return out


def decode(seq: int, subject: str, headers: Mapping[str, str], data: bytes) -> SequencedEvent:
    try:
        tags = tuple(json.loads(headers.get(TAGS, "[]")))
        value: Any = data if headers.get(RAW) else (json.loads(data) if data else None)
    except ValueError as exc:
        raise EventStoreError(
            f"message {seq} on {subject} is not a DCB event ({exc}); published by hand?"
        ) from exc
    parts = subject.split(".")
    version = headers.get(SCHEMA_VERSION)
    return SequencedEvent(seq, parts[1] if len(parts) > 1 else "", value, tags, headers.get(MSG_ID),
                          int(version) if version and version.isdigit() else 1)  # fmt: skip


def upcast(upcasters: Upcasters | None, subject: str, event: SequencedEvent) -> SequencedEvent:
    """``event`` as its current version (queries select by stored type and tags: this runs after them)."""
    if upcasters is None or event.type not in upcasters.types or isinstance(event.data, bytes):
        return event
    t, v, d = upcasters.resolve(event.position, subject, event.type, event.schema_version, event.data)
    return SequencedEvent(event.position, t, d, event.tags, event.id, v)
