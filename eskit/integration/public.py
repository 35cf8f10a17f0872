"""A public stream that sources chosen event types of a private store: no second write, no code running.

>>> public = await client.publish_integration(orders, "orders-public", types=["placed", "shipped"])  # doctest: +SKIP
>>> await public.wait_for()              # the server copied what was stored so far      # doctest: +SKIP
>>> [e.type for e in await public.store.read("1")]                                     # doctest: +SKIP
['placed', 'shipped']

The public store is a JetStream stream (``ORDERS-PUBLIC``) with **no subjects of its own** (nobody can
publish into it) and one *source*: the private stream, with one subject transform per public type,
``orders.*.placed`` -> ``orders-public.{{wildcard(1)}}.placed``. The server copies every matching event, in
the private store's order, with its headers (event id, schema version, time of occurrence, correlation and
causation ids, metadata) and its payload unchanged; the concurrency and batch headers are not copied. It
adds ``Nats-Stream-Source`` (the private stream and position the copy came from). Other types never leave
the private store. The copies are the events as stored: the private store's upcasters do not run on them
(a partner passes its own to ``public_store(name, upcasters=...)``).

What it guarantees, and what not:

- every event of a public type is copied once, in order (the server's source consumer resumes where it
  stopped, after a restart too); the copy lags the append by the server's own delay (milliseconds on one
  server), and :meth:`IntegrationStream.wait_for` waits for it;
- the payload is copied **whole**: JetStream filters subjects, never fields. Keep personal or internal
  fields out of public types, or publish a curated shape with :class:`~eskit.integration.Republisher`;
- the types are fixed when the public store is created: calling again with other ``types`` is an error.
  nats-server (2.15) identifies a source by its filters and transforms, so a changed source starts over and
  copies every matching event again (measured: the old types appeared twice). Publish a wider set under a
  new name (``orders-public-v2``: the history of every type included), let partners move, delete the old one;
- positions in the public store are its own (1, 2, 3, ...), not the private ones;
- on a cluster the public stream has as many replicas as a new store would (3); reads are Direct Gets, which
  any replica answers, so right after :meth:`IntegrationStream.wait_for` a lagging replica may not show the
  newest copy yet (as for every read on a cluster: see ``tests/test_cluster.py``).

A partner reads it with its own user (:class:`eskit.auth.Partner`): ``await partner.public_store("orders-public")``
gives an :class:`~eskit.store.EventStore` to ``read``, ``replay``, ``load`` and run projections on; appending
to it fails (no stream listens on its subjects).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._nats.codes import STREAM_NOT_FOUND
from .._nats.wire import status_of
from ..errors import EventStoreError, ProjectionError, StreamNotFoundError, ValidationError
from ..events import check_token
from ..store import EventStore
from ..streams import stream_name
from ..upcasting import Upcasters

if TYPE_CHECKING:
    from ..connection import Client

PUBLIC_OF = "eskit_public_of"  # stream metadata: the private store a public stream sources
PUBLIC_TYPES = "eskit_public_types"  # stream metadata: the published types, comma-separated
SOURCE_HEADER = "Nats-Stream-Source"

__all__ = ["IntegrationStream", "open_public_store", "publish_integration"]


class IntegrationStream:
    """The handle :func:`publish_integration` returns: the public store, what it publishes, its progress.

    >>> public.name, public.types, public.source                        # doctest: +SKIP
    ('orders-public', ('placed', 'shipped'), 'orders')
    """

    def __init__(self, source: EventStore, store: EventStore, types: tuple[str, ...]) -> None:
        self.source_store = source
        self.store = store  # the public store, read through the publishing client
        self.types = types

    @property
    def name(self) -> str:
        return self.store.name

    @property
    def stream(self) -> str:
        return self.store.stream

    @property
    def source(self) -> str:
        return self.source_store.name

    def __repr__(self) -> str:
        return f"<IntegrationStream {self.name} <- {self.source} types={list(self.types)}>"

    async def _info(self) -> dict[str, Any]:
        reply: dict[str, Any] = json.loads(
            (await self.store._wire.request(f"$JS.API.STREAM.INFO.{self.stream}", b"")).data
        )
        if "error" in reply:
            raise EventStoreError(f"public stream {self.stream}: {reply['error'].get('description')}")
        return reply

    async def lag(self) -> int:
        """Events of the public types the server has not copied yet, as it says (0 when caught up)."""
        sources = (await self._info()).get("sources") or [{}]
        return int(sources[0].get("lag", 0))

    async def source_position(self) -> int:
        """The private position of the last event copied (0: none yet)."""
        msg = await self.store._wire.request(
            f"$JS.API.DIRECT.GET.{self.stream}", json.dumps({"last_by_subj": f"{self.name}.>"}).encode()
        )
        if status_of(msg) == "404":
            return 0
        return origin_position((msg.headers or {}).get(SOURCE_HEADER, ""))

    async def wait_for(self, position: int | None = None, *, timeout: float = 10.0) -> int:
        """Wait until every public event at or below private ``position`` (default: the private store's
        last) has been copied; returns the public store's last position (for ``view.wait_for``).

        >>> await public.wait_for(await orders.append("1", [Event("shipped")]))   # doctest: +SKIP
        """
        if position is None:
            position = await self.source_store.last_position()
        target = 0
        for event_type in self.types:  # the last public event at or below `position`, or `position` itself
            last = await self.source_store._wire.request(
                f"$JS.API.DIRECT.GET.{self.source_store.stream}",
                json.dumps({"last_by_subj": f"{self.source}.*.{event_type}"}).encode(),
            )
            seq = int((last.headers or {}).get("Nats-Sequence", 0)) if status_of(last) != "404" else 0
            target = max(target, min(seq, position))
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + timeout, 0.002
        for _ in range(100_000):  # bounded: the deadline ends it first
            if target == 0 or await self.source_position() >= target:
                return await self.store.last_position()
            if loop.time() > deadline:
                break
            await asyncio.sleep(pause)
            pause = min(0.05, pause * 2)
        source = ((await self._info()).get("sources") or [{}])[0]
        problem = (source.get("error") or {}).get("description") or "is it reachable?"
        raise ProjectionError(
            f"public stream {self.stream} did not copy position {target} of {self.source} within {timeout:g}s "
            f"(lag {source.get('lag', '?')}); source stream {self.source_store.stream}: {problem}"
        )

    async def delete(self) -> bool:
        """Delete the public stream and its dead letters (the private store is untouched). False if it did not
        exist."""
        reply = json.loads((await self.store._wire.request(f"$JS.API.STREAM.DELETE.{self.stream}", b"")).data)
        if "error" not in reply:  # its dead letters (made with it by publish_integration) go with it
            await self.store._wire.request(f"$JS.API.STREAM.DELETE.{stream_name(self.name + '_parked')}", b"")
        if reply.get("error", {}).get("err_code") == STREAM_NOT_FOUND:
            return False
        if "error" in reply:
            raise EventStoreError(f"cannot delete public stream {self.stream}: {reply['error'].get('description')}")
        return bool(reply.get("success"))


def origin_position(header: str) -> int:
    """The private position in a ``Nats-Stream-Source`` header (``'ORDERS 42 <filters> ...'``); 0 if none.

    >>> origin_position("ORDERS 42 orders.*.placed orders-public.{{wildcard(1)}}.placed orders.1.placed x")
    42
    """
    parts = header.split(" ")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def public_config(source: EventStore, name: str, types: Sequence[str], *, replicas: int) -> dict[str, Any]:
    """The public stream's configuration: no subjects, one source with a transform per type.

    >>> from types import SimpleNamespace as S
    >>> public_config(S(name="orders", stream="ORDERS"), "orders-public", ["placed"], replicas=1)["sources"]
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'name': 'ORDERS',
      'subject_transforms': [{'src': 'orders.*.placed', 'dest': 'orders-public.{{wildcard(1)}}.placed'}]}]
    """
    transforms = [{"src": f"{source.name}.*.{t}", "dest": f"{name}.{{{{wildcard(1)}}}}.{t}"} for t in types]
    return {
        "name": stream_name(name),
        "subjects": [],
        "storage": "file",
        "retention": "limits",
        "discard": "old",
        "max_age": 0,
        "max_msgs_per_subject": -1,
        "num_replicas": replicas,
        "allow_direct": True,
        "deny_delete": True,
        "deny_purge": True,
        "metadata": {PUBLIC_OF: source.name, PUBLIC_TYPES: ",".join(types)},
        "sources": [{"name": source.stream, "subject_transforms": transforms}],
    }


def _check_types(types: object) -> tuple[str, ...]:
    if isinstance(types, str) or not isinstance(types, Sequence) or not types:
        raise ValidationError(f'types takes a non-empty list of event types, e.g. types=["placed"], got {types!r}')
    checked = tuple(dict.fromkeys(check_token(t, "event type") for t in types))
    return checked


async def _stream_info(client: Client, stream: str) -> dict[str, Any]:
    reply: dict[str, Any] = json.loads((await client.wire.request(f"$JS.API.STREAM.INFO.{stream}", b"")).data)
    return reply


async def publish_integration(
    client: Client, source: EventStore, name: str, *, types: Sequence[str]
) -> IntegrationStream:
    """Create (or open) the public store ``name`` sourcing the event ``types`` of ``source``.

    Calling it again with the same types opens it; other types are an error (see the module docstring:
    publish them under a new name). ``client.publish_integration(...)`` calls this.

    >>> public = await publish_integration(client, orders, "orders-public", types=["placed"])  # doctest: +SKIP
    """
    if not isinstance(source, EventStore):
        raise ValidationError(f"publish_integration takes an event store (client.event_store(...)), got {source!r}")
    checked = _check_types(types)
    name = client.store_name(name)
    stream = stream_name(name)
    if name == source.name or stream == source.stream:
        raise ValidationError(f"the public store needs a name of its own, not {name!r} (e.g. '{source.name}-public')")
    config = public_config(source, name, checked, replicas=client.default_replicas)
    info = await _stream_info(client, stream)
    if info.get("error", {}).get("err_code") == STREAM_NOT_FOUND:
        info = json.loads(
            (await client.wire.request(f"$JS.API.STREAM.CREATE.{stream}", json.dumps(config).encode())).data
        )
    elif "error" not in info:
        metadata = info["config"].get("metadata") or {}
        if metadata.get(PUBLIC_OF) != source.name or info["config"].get("subjects"):
            raise EventStoreError(
                f"stream {stream} exists and is not a public stream of {source.name!r}: choose another public name"
            )
        published = tuple(t for t in str(metadata.get(PUBLIC_TYPES, "")).split(",") if t)
        if set(published) != set(checked):
            raise EventStoreError(
                f"public store {name!r} publishes {list(published)}, not {list(checked)}: changing a source's types "
                f"makes nats-server copy every matching event again (duplicates); publish them under a new name "
                f"(e.g. '{name}-v2') or delete this one first (.delete() on its handle)"
            )
        checked = published
        expected = public_config(source, name, published, replicas=client.default_replicas)
        have = info["config"]
        sources = [{"name": x.get("name"), "subject_transforms": x.get("subject_transforms")}
                   for x in have.get("sources") or []]  # fmt: skip
        deletable = not (have.get("deny_delete") and have.get("deny_purge"))
        if sources != expected["sources"] or have.get("mirror") or deletable:
            raise EventStoreError(
                f"stream {stream} says it publishes {list(published)} of {source.name!r} but is not a public stream "
                f"made by publish_integration (other sources, or deletable): choose another public name"
            )
    if "error" in info:
        raise EventStoreError(f"cannot publish {stream}: {info['error'].get('description', info['error'])}")
    # the dead-letter stream of partners' projections (eskit.projections.deadletter), made here: a partner may
    # not create streams (one it made could mirror or source the private store)
    await client.event_store(f"{name}_parked", allow_delete_history=True)
    return IntegrationStream(source, EventStore(client, name, stream), checked)


async def open_public_store(client: Client, name: str, *, upcasters: Upcasters | None = None) -> EventStore:
    """The public store ``name`` for reading (``read``, ``replay``, ``load``, projections): what a partner
    opens, with its own ``upcasters`` if it has some (the copies are the events as stored: the private
    store's upcasters do not run on them). ``client.public_store(name)`` calls this.

    >>> public = await partner.public_store("orders-public")        # doctest: +SKIP
    """
    name = client.store_name(name)
    stream = stream_name(name)
    info = await _stream_info(client, stream)
    if info.get("error", {}).get("err_code") == STREAM_NOT_FOUND:
        raise StreamNotFoundError(
            f"public store {name!r} does not exist; its owner creates it with client.publish_integration(...)"
        )
    if "error" in info:
        raise EventStoreError(f"public store {name!r}: {info['error'].get('description', info['error'])}")
    if PUBLIC_OF not in (info["config"].get("metadata") or {}):
        raise EventStoreError(
            f"stream {stream} is not a public stream (made by publish_integration); open a store with event_store"
        )
    if upcasters is not None and not isinstance(upcasters, Upcasters):
        raise ValidationError(f"public_store takes None or Upcasters() there, got {upcasters!r}")
    store = EventStore(client, name, stream)
    store.upcasters = upcasters
    return store
