"""Stream setup: one stream per store, configured for event sourcing.

``ORDERS`` holds ``orders.>``: file storage, limits retention, kept forever, no per-subject cap (as in the
pattern), plus ``allow_direct`` (one-round-trip reads), ``allow_atomic`` (all-or-nothing multi-event
appends) and a duplicate window for ``Nats-Msg-Id``. History is immutable by default: ``deny_delete`` and
``deny_purge`` make the server refuse to delete single events or purge the stream (deleting the whole
stream still works), unless the store is created with ``allow_delete_history=True``. The server refuses
to turn the flags off later; opening an existing store never changes them.
"""

from __future__ import annotations

import json
from typing import Any

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from ._wire import Wire
from .errors import EventStoreError, InvalidNameError, StoreUnavailableError
from .events import check_token

STREAM_NOT_FOUND = 10059


def stream_name(store: str) -> str:
    """The stream behind a store: ``'orders'`` -> ``'ORDERS'``."""
    check_token(store, "store name")
    if "/" in store or "\\" in store:
        raise InvalidNameError(f"store name {store!r} may not contain '/' or '\\'")
    if store != store.lower():
        raise InvalidNameError(f"store names are lowercase (the stream is the uppercase): use {store.lower()!r}")
    return store.upper()


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
    wire: Wire, store: str, *, duplicate_window: float, replicas: int, allow_delete_history: bool = False
) -> str:
    """Create the store's stream, or update it to our settings; return its name.

    An existing stream that already has our settings is left alone, so a read-only account (an analyst)
    can open a store without the right to create streams.
    """
    config = stream_config(
        store, duplicate_window=duplicate_window, replicas=replicas, allow_delete_history=allow_delete_history
    )
    name = str(config.name)
    info = await _api(wire, f"STREAM.INFO.{name}", b"")
    if info.get("error", {}).get("err_code") == STREAM_NOT_FOUND:
        info = await _api(wire, f"STREAM.CREATE.{name}", json.dumps(config.as_dict()).encode())
    elif "error" not in info and not _compatible(info["config"], config):
        keep_history_flags(config, info["config"])
        info = await _api(wire, f"STREAM.UPDATE.{name}", json.dumps(config.as_dict()).encode())
    if "error" in info:
        raise EventStoreError(f"cannot set up stream {name}: {info['error'].get('description', info['error'])}")
    if not info["config"].get("allow_atomic"):
        raise EventStoreError(f"stream {name} does not support atomic batches: nats-server 2.12 or newer is required")
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
