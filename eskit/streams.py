"""Stream setup: one stream per store, configured for event sourcing.

``ORDERS`` holds ``orders.>``: file storage, limits retention, kept forever, no per-subject cap (as in the
pattern), plus ``allow_direct`` (one-round-trip reads), ``allow_atomic`` (all-or-nothing multi-event
appends) and a duplicate window for ``Nats-Msg-Id``.

Store names are ASCII (``a-z``, ``0-9``, ``-``, ``_``), so each names its own stream: upper-casing unicode
folds names together (``straße`` and ``strasse`` are both ``STRASSE``). Opening a store never rewrites a
stream it does not own (other subjects, or the other kind of store) and never silently changes the settings
of one it does (``duplicate_window``, ``replicas``: an error says what differs, ``reconfigure=True`` changes
them).

History is immutable by default: ``deny_delete`` and
``deny_purge`` make the server refuse to delete single events or purge the stream (deleting the whole
stream still works), unless the store is created with ``allow_delete_history=True``. The server refuses
to turn the flags off later; opening an existing store never changes them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from ._nats.codes import STREAM_NOT_FOUND
from ._nats.wire import Wire
from .errors import EventStoreError, InvalidNameError, StoreUnavailableError, ValidationError
from .events import check_token

DUPLICATE_WINDOW = 120.0  # seconds: the default for a new store
DCB_TAG_KEYS = "eskit_dcb_tag_keys"  # stream metadata: present on a DCB store's stream, never on an event store's
_STORE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
LEARNER_ENV = "ESKIT_LEARNER"  # the learner namespace eskit.connect() and eskit.course.unique() use when none is given
_NAMESPACE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def stream_name(store: str) -> str:
    """The stream behind a store: ``'orders'`` -> ``'ORDERS'``.

    >>> stream_name("order-lines")
    'ORDER-LINES'
    """
    if type(store) is str and _STORE_NAME.fullmatch(store) and len(store) <= 255:
        return store.upper()
    check_token(store, "store name")
    if "/" in store or "\\" in store:
        raise InvalidNameError(f"store name {store!r} may not contain '/' or '\\'")
    if store.isascii() and store != store.lower():
        raise InvalidNameError(f"store names are lowercase (the stream is the uppercase): use {store.lower()!r}")
    raise InvalidNameError(
        f"store name {store!r}: use lowercase ASCII letters, digits, '-' and '_', starting with a letter or digit "
        "(e.g. 'orders'); other characters can fold onto another store's stream ('straße' and 'strasse')"
    )


def check_namespace(namespace: str) -> str:
    """``namespace`` if it is a valid learner namespace (or ``""``), else :class:`~eskit.errors.InvalidNameError`.

    >>> check_namespace("alice")
    'alice'
    """
    if namespace == "" or (isinstance(namespace, str) and _NAMESPACE.fullmatch(namespace)):
        return namespace
    lower = namespace.lower() if isinstance(namespace, str) else ""
    hint = f" (use {lower!r})" if _NAMESPACE.fullmatch(lower) else ""
    raise InvalidNameError(
        f"learner namespace {namespace!r}{hint}: use up to 64 lowercase ASCII letters, digits, '-' and '_', starting "
        f"with a letter or digit (e.g. {LEARNER_ENV}=alice)"
    )


def stream_config(
    store: str, *, duplicate_window: float = 120.0, replicas: int = 1, allow_delete_history: bool = False
) -> StreamConfig:
    """The stream of a new store.

    >>> stream_config("orders").deny_purge
    True
    """
    return StreamConfig(
        name=stream_name(store),
        subjects=[f"{store}.>"],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=0,
        max_msgs_per_subject=-1,
        duplicate_window=duplicate_window,
        num_replicas=replicas,
        allow_direct=True,
        allow_atomic=True,
        deny_delete=not allow_delete_history,
        deny_purge=not allow_delete_history,
    )


async def ensure_stream(
    wire: Wire,
    store: str,
    *,
    duplicate_window: float | None = None,
    replicas: int | None = None,
    default_replicas: int = 1,
    reconfigure: bool = False,
    allow_delete_history: bool = False,
) -> tuple[str, int]:
    """Create the store's stream, or open the existing one (see :func:`settings`); return its name and last
    sequence (what its reads start from knowing of its size: see :func:`eskit._bysubject.literal`).

    An existing stream that already has our settings is left alone, so a read-only account (an analyst)
    can open a store without the right to create streams.
    """
    name = stream_name(store)
    info = await _api(wire, f"STREAM.INFO.{name}", b"")
    window, replicas = settings(
        store, info, kind="event store", duplicate_window=duplicate_window, replicas=replicas,
        default_replicas=default_replicas, reconfigure=reconfigure, allow_delete_history=allow_delete_history,
    )  # fmt: skip
    config = stream_config(store, duplicate_window=window, replicas=replicas, allow_delete_history=allow_delete_history)
    if info.get("error", {}).get("err_code") == STREAM_NOT_FOUND:
        info = await _api(wire, f"STREAM.CREATE.{name}", json.dumps(config.as_dict()).encode())
    elif "error" not in info and not _compatible(info["config"], config):
        keep_history_flags(config, info["config"])  # set once, at creation
        update = {**info["config"], **config.as_dict()}  # what we do not set (metadata, limits) stays
        info = await _api(wire, f"STREAM.UPDATE.{name}", json.dumps(update).encode())
    if "error" in info:
        raise EventStoreError(f"cannot set up stream {name}: {info['error'].get('description', info['error'])}")
    if not info["config"].get("allow_atomic"):
        raise EventStoreError(f"stream {name} does not support atomic batches: nats-server 2.12 or newer is required")
    return name, int(info.get("state", {}).get("last_seq", 0))


def settings(
    store: str,
    info: dict[str, Any],
    *,
    kind: str,
    duplicate_window: float | None,
    replicas: int | None,
    default_replicas: int,
    reconfigure: bool,
    allow_delete_history: bool = False,
) -> tuple[float, int]:
    """The ``(duplicate_window, replicas)`` a store opens with, given its stream's ``STREAM.INFO`` reply.

    A new stream gets what was asked, else the defaults; an existing one keeps its own unless asked otherwise
    with ``reconfigure=True``. A stream that is not this store's (other subjects, the other kind of store) is
    an error, as is a setting that differs from the stream's without ``reconfigure``.
    """
    if duplicate_window is not None and (
        type(duplicate_window) not in (int, float) or not 0 <= duplicate_window < 10**9
    ):  # a str would be repeated a billion times below
        raise ValidationError(f"duplicate_window must be a number of seconds such as 120, got {duplicate_window!r}")
    if replicas is not None and (type(replicas) is not int or not 1 <= replicas <= 5):
        raise ValidationError(f"replicas must be an int from 1 to 5 (1 on a single server), got {replicas!r}")
    if "error" in info:  # not found (created by the caller), or an error the caller reports
        return (DUPLICATE_WINDOW if duplicate_window is None else duplicate_window), replicas or default_replicas
    config = info["config"]
    _check_owner(store, info, kind)
    if not allow_delete_history:
        _check_keeps_history(store, config, kind)
    window_ns, have_replicas = int(config.get("duplicate_window", 0)), int(config.get("num_replicas", 1))
    differs = []
    if duplicate_window is not None and int(duplicate_window * 1e9) != window_ns:
        differs.append(f"duplicate_window={window_ns / 1e9:g} (you asked for {duplicate_window:g})")
    if replicas is not None and replicas != have_replicas:
        differs.append(f"replicas={have_replicas} (you asked for {replicas})")
    if differs and not reconfigure:
        raise EventStoreError(
            f"store {store!r} exists with {' and '.join(differs)}: open it without them to use its settings, or "
            "pass reconfigure=True to change them for everyone who uses the store"
        )
    return (window_ns / 1e9 if duplicate_window is None else duplicate_window), replicas or have_replicas


def _check_owner(store: str, info: dict[str, Any], kind: str) -> None:
    """Refuse a stream that is not this store's: other subjects, or the other kind of store."""
    config = info["config"]
    name, subjects = config.get("name"), config.get("subjects")
    if "eskit_public_of" in (config.get("metadata") or {}):  # eskit.integration.public.PUBLIC_OF
        raise EventStoreError(
            f"store {store!r} is a public stream of {config['metadata']['eskit_public_of']!r}: read it with "
            f"client.public_store({store!r}); nobody appends to it"
        )
    if subjects != [f"{store}.>"]:
        raise EventStoreError(
            f"stream {name} already exists with subjects {subjects}, not ['{store}.>']: it is not store {store!r} "
            "(made outside eskit?); eskit will not rewrite it: choose another store name"
        )
    is_dcb = DCB_TAG_KEYS in (config.get("metadata") or {})
    if kind == "event store" and is_dcb:
        raise EventStoreError(f"store {store!r} is a DCB store: open it with client.dcb_store({store!r})")
    if kind == "DCB store" and not is_dcb and info.get("state", {}).get("messages", 0):
        raise EventStoreError(
            f"store {store!r} is an event store with events: open it with client.event_store({store!r}), or give "
            "the DCB store another name"
        )


def _check_keeps_history(store: str, config: dict[str, Any], kind: str) -> None:
    """Refuse a stream whose own settings drop events (made outside eskit, e.g. by a writer that created the
    stream before anyone opened the store): limits, another retention, rollups, message TTLs, mirrors."""
    dropping = [f"{key}={config[key]}" for key in ("max_msgs", "max_bytes", "max_age", "max_msgs_per_subject")
                if (config.get(key) or 0) > 0]  # fmt: skip
    if config.get("retention", "limits") != "limits":
        dropping.append(f"retention={config['retention']}")
    flags = ["allow_rollup_hdrs", "mirror", "sources", "subject_transform", "sealed", "allow_msg_ttl"]
    dropping += [f"{key}={config[key]}" for key in flags if config.get(key)]
    if dropping:
        raise EventStoreError(
            f"store {store!r} exists with {', '.join(dropping)}: its history can lose events, which eskit does "
            "not open by default; ask an admin to fix the stream, or pass allow_delete_history=True to accept it"
        )


async def owned_stream(wire: Wire, store: str) -> str:
    """The stream of ``store``, checked to be the store's (its subjects) if it exists: before deleting it."""
    name = stream_name(store)
    info = await _api(wire, f"STREAM.INFO.{name}", b"")
    subjects = info.get("config", {}).get("subjects", [f"{store}.>"])
    if subjects != [f"{store}.>"]:
        raise EventStoreError(
            f"stream {name} holds subjects {subjects}, not ['{store}.>']: it is not store {store!r}; not deleted"
        )
    return name


def keep_history_flags(config: StreamConfig, current: dict[str, Any]) -> None:
    """An update keeps the stream's ``deny_delete``/``deny_purge`` as they are (set once, at creation)."""
    config.deny_delete = bool(current.get("deny_delete"))
    config.deny_purge = bool(current.get("deny_purge"))


def _compatible(current: dict[str, Any], wanted: StreamConfig) -> bool:
    return bool(
        current.get("subjects") == wanted.subjects
        and current.get("allow_direct") and current.get("allow_atomic")
        and current.get("num_replicas", 1) == wanted.num_replicas
        and current.get("duplicate_window") == int((wanted.duplicate_window or 0) * 1e9)
    )


async def _api(wire: Wire, call: str, payload: bytes) -> dict[str, Any]:
    try:
        msg = await wire.request(f"$JS.API.{call}", payload)
    except StoreUnavailableError:  # 503: no responders on $JS.API
        raise EventStoreError("JetStream is not enabled on the server: start nats-server with -js") from None
    reply: dict[str, Any] = json.loads(msg.data)
    return reply
