"""Stream setup: one stream per store, configured for event sourcing.

``ORDERS`` holds ``orders.>``: file storage, limits retention, kept forever, no per-subject cap (as in the
pattern), plus ``allow_direct`` (one-round-trip reads), ``allow_atomic`` (all-or-nothing multi-event
appends) and a duplicate window for ``Nats-Msg-Id``.
"""

from __future__ import annotations

import nats
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext

from .errors import EventStoreError, InvalidNameError, PermissionDeniedError
from .events import check_token


def stream_name(store: str) -> str:
    """The stream behind a store: ``'orders'`` -> ``'ORDERS'``."""
    check_token(store, "store name")
    if "/" in store or "\\" in store:
        raise InvalidNameError(f"store name {store!r} may not contain '/' or '\\'")
    return store.upper()


def stream_config(store: str, *, duplicate_window: float = 120.0, replicas: int = 1) -> StreamConfig:
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
    )


async def ensure_stream(js: JetStreamContext, store: str, *, duplicate_window: float, replicas: int) -> str:
    """Create the store's stream, or update it to our settings; return its name."""
    config = stream_config(store, duplicate_window=duplicate_window, replicas=replicas)
    try:
        try:
            info = await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != 10058:  # stream name already in use with a different configuration
                raise
            info = await js.update_stream(config)
    except nats.js.errors.APIError as exc:
        if exc.code == 403 or "permission" in str(exc.description).lower():
            raise PermissionDeniedError(f"permission denied: may not create stream {config.name}") from None
        raise EventStoreError(f"cannot create stream {config.name}: {exc.description}") from None
    except nats.errors.TimeoutError:
        raise EventStoreError(
            f"no answer creating stream {config.name}: is JetStream enabled on the server (nats-server -js)?"
        ) from None
    if not info.config.allow_atomic:
        raise EventStoreError(
            f"stream {config.name} does not support atomic batches: nats-server 2.12 or newer is required"
        )
    return str(config.name)
