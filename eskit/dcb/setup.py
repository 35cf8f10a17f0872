"""Creating or opening a DCB store: its stream, and the tag keys that fix its subject layout.

>>> courses = await open_dcb_store(client, "courses", tag_keys=("course", "student"))   # doctest: +SKIP

The tag keys are kept in the stream's metadata (``eskit_dcb_tag_keys``), so every client lays out subjects
the same way; opening the store with other keys is refused, because old events keep their subjects.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import EventStoreError, ValidationError
from ..streams import DCB_TAG_KEYS, _api, _compatible, keep_history_flags, settings, stream_config, stream_name
from .query import Layout
from .store import DCBStore

if TYPE_CHECKING:
    from ..connection import Client

TAG_KEYS_META = DCB_TAG_KEYS


async def open_dcb_store(
    client: Client,
    name: str,
    *,
    tag_keys: Sequence[str] | None = None,
    replicas: int | None = None,
    reconfigure: bool = False,
    allow_delete_history: bool = False,
) -> DCBStore:
    """Create or open the DCB store ``name``; ``tag_keys`` is fixed at creation (None: the stored ones);
    ``allow_delete_history`` too (see :mod:`eskit.streams`)."""
    stream, wanted = stream_name(name), None if tag_keys is None else _check_keys(tag_keys)
    info = await _api(client.wire, f"STREAM.INFO.{stream}", b"")
    window, replicas = settings(name, info, kind="DCB store", duplicate_window=None, replicas=replicas,
                                default_replicas=client.default_replicas, reconfigure=reconfigure,
                              allow_delete_history=allow_delete_history)  # fmt: skip
    config = stream_config(name, duplicate_window=window, replicas=replicas, allow_delete_history=allow_delete_history)
    exists = "error" not in info
    metadata: dict[str, str] = dict(info["config"].get("metadata") or {}) if exists else {}
    stored = tuple(k for k in metadata[TAG_KEYS_META].split(",") if k) if TAG_KEYS_META in metadata else None
    if stored is not None and wanted is not None and stored != wanted:
        raise ValidationError(
            f"DCB store {name!r} was created with tag_keys={list(stored)}; open it with those (or with "
            "tag_keys=None): changing them would hide its old events from queries"
        )
    keys = stored if stored is not None else (wanted or ())
    # no allow_msg_ttl: with it, any writer's Nats-TTL header would make an event expire (check carriers stay)
    if not exists or stored is None or not _compatible(info["config"], config):
        config.metadata = {**metadata, TAG_KEYS_META: ",".join(keys)}
        if exists:
            keep_history_flags(config, info["config"])  # set once, at creation
        body = {**info["config"], **config.as_dict()} if exists else config.as_dict()  # the rest stays
        info = await _api(client.wire, f"STREAM.{'UPDATE' if exists else 'CREATE'}.{stream}",
                          json.dumps(body).encode())  # fmt: skip
    if "error" in info:
        raise EventStoreError(
            f"cannot set up DCB store {name}: {info['error'].get('description', info['error'])}"
        )
    replicas = int(info.get("config", {}).get("num_replicas", replicas))
    return DCBStore(client, Layout(name, keys), stream, replicas=replicas)


def _check_keys(keys: Sequence[str]) -> tuple[str, ...]:
    if isinstance(keys, str):
        raise ValidationError(
            f"tag_keys takes a list of keys, e.g. tag_keys=['course', 'student'], not {keys!r}"
        )
    for key in keys:
        if type(key) is not str or not key.isidentifier():
            raise ValidationError(f"tag key {key!r} must be an identifier such as 'course'")
    if len(set(keys)) != len(keys):
        raise ValidationError(f"tag_keys {list(keys)} repeats a key")
    return tuple(keys)
