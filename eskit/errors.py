"""Every error eskit raises, under one root.

```
EskitError
├── ConnectError                 no server answers at the URL tried (says how to start one)
│   └── AuthenticationError      the server refused the credentials
├── ServerStartError             the embedded nats-server did not start (shows its last log lines)
├── PermissionDeniedError        the account may not do this (e.g. an analyst appending)
├── DecisionError                a command was refused by a business rule ("course is fully booked")
├── AggregateError               an aggregate cannot be rebuilt from its events
│   ├── UnknownEventError        no apply handler for an event type (or set on_unknown = "ignore")
│   └── UndecodableEventError    a stored event cannot be decoded (its position is named)
├── ProjectionError              a projection cannot run (bad declaration, lost consumer, no catch-up)
├── ProcessError                 a process manager reacts to nothing, or did not catch up in time
├── UpcastError                  an upcaster raised on a stored event (names its position, type, version)
├── ValidationError (ValueError) bad input caught before anything is sent
│   ├── InvalidNameError         aggregate id, event type or store name is not one subject token
│   ├── PayloadTooLargeError     an event is bigger than the server's max_payload
│   ├── EncodeError              event data has no JSON form (see eskit.codec) or is nested too deep
│   └── EventLogError            an event log file (CSV/XES) is malformed (names the line or element)
└── EventStoreError              the store refused or failed an operation
    ├── ConcurrencyError         the aggregate moved on since you read it (expected vs actual position)
    │   ├── AppendConditionError  DCB: an event matching the condition's query was stored after `after`
    │   └── ContentionError      DCB: an append kept losing races on a broad boundary, retries exhausted
    ├── DuplicateEventError      event ids already stored, but not as the result of this append
    ├── StreamNotFoundError      the stream does not exist (yet)
    ├── StoreUnavailableError    no server answers for the stream now (leader election?): retry
    └── StoreTimeoutError        the server did not answer in time
```

Messages are one line and say what to do. NATS errors are translated at the boundary
(`raise ConcurrencyError(...) from exc`), so a learner never has to read nats-py internals. Credentials never
appear in a message: every one goes through :func:`eskit._redact.redact` (a URL's password or token, nkey seeds).
"""

from __future__ import annotations

from typing import Any

from ._redact import redact


class EskitError(Exception):
    """Root of every error raised by eskit; its message is redacted (no passwords, tokens or seeds).

    >>> str(EskitError("cannot reach nats://writer:pw@db:4222"))
    'cannot reach nats://writer:***@db:4222'
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class ConnectError(EskitError):
    """No NATS server could be reached."""


class AuthenticationError(ConnectError):
    """The server rejected the credentials (user/password, token, nkey or creds file)."""


class ServerStartError(EskitError):
    """The embedded nats-server failed to start."""


class PermissionDeniedError(EskitError):
    """The connected account is not allowed to publish or subscribe on a subject."""


class AggregateError(EskitError):
    """An aggregate cannot be rebuilt from its events."""


class UnknownEventError(AggregateError):
    """An event type has no apply handler on the aggregate (and ``on_unknown`` is ``"raise"``)."""


class UndecodableEventError(AggregateError):
    """A stored event's payload could not be decoded, so it cannot be applied."""


class DecisionError(EskitError):
    """A command was refused by a business rule; the message is the rule's own words."""


class ValidationError(EskitError, ValueError):
    """Input rejected before anything was sent to the server."""


class InvalidNameError(ValidationError):
    """A name that must be a single NATS subject token is not one."""


class PayloadTooLargeError(ValidationError):
    """An encoded event exceeds the server's ``max_payload``."""


class EncodeError(ValidationError):
    """Event data cannot be encoded as JSON."""


class EventLogError(ValidationError):
    """An event log file (CSV or XES) cannot be imported; the message names the line or element."""


class EventStoreError(EskitError):
    """The event store refused or failed an operation."""


class ConcurrencyError(EventStoreError):
    """Optimistic concurrency check failed: someone appended since you read.

    >>> raise ConcurrencyError("orders", "42", expected=7, actual=9)
    Traceback (most recent call last):
    eskit.errors.ConcurrencyError: orders/42: expected position 7, but the aggregate is at 9; reload and retry
    """

    def __init__(self, store: str, aggregate_id: str, *, expected: int, actual: int | None) -> None:
        self.store = store
        self.aggregate_id = aggregate_id
        self.expected = expected
        self.actual = actual
        at = "a later position" if actual is None else str(actual)
        super().__init__(
            f"{store}/{aggregate_id}: expected position {expected}, but the aggregate is at {at}; reload and retry"
        )


class AppendConditionError(ConcurrencyError):
    """A DCB append condition failed: an event matching its query was stored after its ``after`` position.

    >>> raise AppendConditionError("courses", query="(types=[] tags=['course:c1'])", after=7, position=9)
    Traceback (most recent call last):
    eskit.errors.AppendConditionError: courses: event at position 9 matches (types=[] tags=['course:c1']), stored after position 7; read again, decide again, retry
    """

    def __init__(self, store: str, *, query: str, after: int, position: int | None) -> None:
        self.store, self.aggregate_id, self.expected, self.actual = store, "", after, position
        self.query = query
        at = "an event" if position is None else f"event at position {position}"
        EventStoreError.__init__(
            self, f"{store}: {at} matches {query}, stored after position {after}; read again, decide again, retry"
        )


class ContentionError(ConcurrencyError):
    """A DCB append lost the race for its (merged) subject filters too many times in a row."""

    def __init__(self, message: str) -> None:
        self.store, self.aggregate_id, self.expected, self.actual = "", "", 0, None
        EventStoreError.__init__(self, message)


class DuplicateEventError(EventStoreError):
    """Some event ids of an append were already stored by another append."""


class StreamNotFoundError(EventStoreError):
    """The stream behind a store does not exist."""


class StoreUnavailableError(EventStoreError):
    """Nobody answered for an existing stream (503 no responders), e.g. while its leader is elected: retry."""


class StoreTimeoutError(EventStoreError):
    """The server did not answer in time."""


class ProjectionError(EskitError):
    """A projection is declared wrongly, lost its consumer, or did not catch up in time."""


class ProcessError(EskitError):
    """A process manager is declared wrongly (reacts to nothing), already running, or did not catch up in time.

    A command that keeps failing is not an error of the manager: its event is parked with the reason.
    """


class UpcastError(EskitError):
    """An upcaster raised (or returned nothing) on a stored event; the stored event is unchanged.

    >>> raise UpcastError("add_currency", position=7, subject="orders.42.item_added", event_type="item_added",
    ...                   version=1, cause="KeyError: 'price'")
    Traceback (most recent call last):
    eskit.errors.UpcastError: upcaster add_currency (item_added v1 -> v2) failed on the event at position 7 (orders.42.item_added): KeyError: 'price'; fix the upcaster (the stored event is unchanged)
    """

    def __init__(self, upcaster: str, *, position: int, subject: str, event_type: str, version: int, cause: str) -> None:
        self.upcaster, self.position, self.subject = upcaster, position, subject
        self.event_type, self.version = event_type, version
        super().__init__(
            f"upcaster {upcaster} ({event_type} v{version} -> v{version + 1}) failed on the event at position "
            f"{position} ({subject}): {cause}; fix the upcaster (the stored event is unchanged)"
        )
