"""Event data as JSON: what is stored, what comes back, and what is refused (one rule for both kinds of store).

>>> from datetime import date
>>> from decimal import Decimal
>>> encode_json({"due": date(2024, 5, 6), "price": Decimal("12.50")}, "invoiced")
b'{"due":"2024-05-06","price":"12.50"}'

Data is stored as compact UTF-8 JSON, and what a read gives back is that JSON, decoded: ``str``, ``int``,
``float``, ``bool``, ``None``, ``list`` and ``dict`` with ``str`` keys. So a few Python values are converted by
a fixed rule, and come back as what they were converted to:

=====================================  =======================================  ==================================
you pass                               stored as                                read it back with
=====================================  =======================================  ==================================
``datetime``, ``date``, ``time``       ISO 8601 text, offset kept               ``datetime.fromisoformat(value)``
``Decimal``                            its text, every digit (``"12.50"``)      ``Decimal(value)``
``UUID``                               its text (``"1b4e28ba-2fa1-..."``)       ``UUID(value)``
``Enum`` member                        its ``value`` (by these same rules)      ``MyEnum(value)``
dataclass instance                     a dict of its fields                     ``MyClass(**value)``
tuple, other ``Mapping``               list, dict                               (as they are)
=====================================  =======================================  ==================================

Refused with :class:`~eskit.errors.EncodeError` (one line that says what to pass instead), nothing stored:
keys that are not ``str`` (JSON keys are text: ``{1: "a", "1": "b"}`` would come back as ``{"1": "b"}``),
NaN and infinities, data nested more than ``MAX_DEPTH`` levels deep (JSON readers stop at 100-1000), sets,
bytes, and any other type.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import date, time
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

from .errors import EncodeError

MAX_DEPTH = 100  # levels of nesting; Rust's serde_json stops at 128, Python's json.loads near 1,000
_LEAVES = frozenset({str, int, float, bool, type(None)})
_ADVICE = {
    "set": "pass a list, e.g. sorted(values)",
    "frozenset": "pass a list, e.g. sorted(values)",
    "bytes": "pass text (e.g. base64.b64encode(raw).decode()), or store the bytes elsewhere and keep a reference",
    "bytearray": "pass text (e.g. base64.b64encode(raw).decode()), or store the bytes elsewhere and keep a reference",
    "timedelta": "pass a number, e.g. delta.total_seconds()",
}
_OTHERWISE = (
    "pass str, int, float, bool, None, a list or a dict with str keys (datetime, date, Decimal, UUID, Enum and "
    "dataclasses are converted: see eskit.codec)"
)


def _convert(value: Any, event_type: str) -> Any:
    """A value JSON cannot hold, converted by the rule in the module docstring, or :class:`EncodeError`."""
    if isinstance(value, date | time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _refused(event_type, value, "NaN and infinities are not JSON numbers: pass None or a string")
        return str(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return dict(value)
    raise _refused(event_type, value, _ADVICE.get(type(value).__name__, _OTHERWISE))


def _refused(event_type: str, value: object, advice: str) -> EncodeError:
    shown = repr(value).replace("\n", " ")
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    kind = type(value).__name__
    return EncodeError(f"event {event_type!r} data holds a {kind} ({shown}), which JSON cannot hold: {advice}")


_ENCODE = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=lambda value: _convert(value, "")
).encode


def check(value: Any, event_type: str) -> None:
    """Raise :class:`EncodeError` unless ``value`` encodes by the rules above (walks it once, no recursion)."""
    if type(value) is dict:  # the common case first: a flat dict of str keys and plain values
        for key, item in value.items():
            if type(key) is not str or type(item) not in _LEAVES:
                break
        else:
            return
    stack = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > MAX_DEPTH:
            raise EncodeError(
                f"event {event_type!r} data is nested more than {MAX_DEPTH} levels deep, which JSON readers cannot "
                "read back: flatten it"
            )
        if isinstance(node, dict):
            for key, item in node.items():
                if not isinstance(key, str):
                    raise EncodeError(
                        f"event {event_type!r} data has the key {key!r} ({type(key).__name__}); JSON keys are text, "
                        f"so it would come back as {str(key)!r}: use str keys"
                    )
                if type(item) not in _LEAVES:
                    push((item, depth + 1))
        elif isinstance(node, list | tuple):
            for item in node:
                if type(item) not in _LEAVES:
                    push((item, depth + 1))
        elif not isinstance(node, str | int | float):  # str/int/float subclasses (IntEnum, StrEnum) are JSON
            push((_convert(node, event_type), depth))


def encode_json(value: Any, event_type: str) -> bytes:
    """``value`` (the data of an event of type ``event_type``) as compact UTF-8 JSON, or :class:`EncodeError`."""
    check(value, event_type)
    try:
        return _ENCODE(value).encode()
    except EncodeError:
        raise
    except ValueError:  # the only thing check() leaves to the encoder: NaN and infinities
        raise EncodeError(
            f"event {event_type!r} data holds NaN or an infinity, which JSON cannot hold: pass None or a string"
        ) from None
