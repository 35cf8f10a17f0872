"""A local nats-server cluster on loopback: N nodes, routes between them, JetStream (Raft) on each.

>>> with EmbeddedCluster(3) as cluster:               # doctest: +SKIP
...     client = await eskit.connect(cluster.url)      # streams get replicas=3 on a cluster
...     cluster.kill(cluster.node_named("n2"))         # SIGKILL a node; start_node(...) brings it back

Each node has its own store directory (kept across kill/restart) and fixed ports, so a restarted node
rejoins as itself.

A cluster someone else runs (a workshop room's): :func:`cluster_at` says whether ``NATS_URL`` is one,
:func:`step_down` moves a stream's leadership (the election a kill would cause, with no node stopped) and
:func:`wait_replicas_current` waits for its replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import urllib.request
from types import TracebackType
from typing import TYPE_CHECKING

from ._nats.jsapi import guarded
from .errors import EventStoreError, ServerStartError
from .server import START_TIMEOUT, EmbeddedServer

if TYPE_CHECKING:
    from .connection import Client


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (bound, read, released)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class EmbeddedCluster:
    """``size`` nats-server processes on 127.0.0.1 forming one JetStream cluster named ``name``."""

    def __init__(self, size: int = 3, *, name: str = "eskit", extra_args: list[str] | None = None) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        ports = free_ports(2 * size)
        client_ports, route_ports = ports[:size], ports[size:]
        routes = ",".join(f"nats-route://127.0.0.1:{p}" for p in route_ports)
        self.name = name
        self.nodes = [
            EmbeddedServer(
                port=client_ports[i],
                name=f"n{i + 1}",
                extra_args=[
                    "--cluster_name",
                    name,
                    "--cluster",
                    f"nats://127.0.0.1:{route_ports[i]}",
                    "--routes",
                    routes,
                    *(extra_args or []),
                ],
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        """All nodes' URLs, comma-separated (``eskit.connect`` accepts this)."""
        return ",".join(f"nats://127.0.0.1:{n.port}" for n in self.nodes)

    def start(self, timeout: float = START_TIMEOUT) -> EmbeddedCluster:
        for node in self.nodes:
            node.start(timeout)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until every running node reports JetStream healthy and names the same running meta leader.

        Until the meta leader is elected, JetStream API requests (create a stream, STREAM.INFO) go
        unanswered: a client would see a StoreTimeoutError under load.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [n for n in self.nodes if n.running]
            if all(_healthz_ok(n.monitor_url) for n in running):
                leaders = {_meta_leader(n.monitor_url) for n in running}
                if len(leaders) == 1 and leaders.pop() in {n.name for n in running}:
                    return
            time.sleep(0.05)
        raise ServerStartError(f"cluster {self.name} has no healthy JetStream meta leader after {timeout:.0f}s")

    def wait_stream_leader(self, stream: str, timeout: float = START_TIMEOUT) -> EmbeddedServer:
        """Wait until ``stream`` has a leader among the running nodes; return it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                leader = self.stream_leader(stream)
                if leader.running:
                    return leader
            except (LookupError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"stream {stream} has no leader after {timeout:.0f}s")
            time.sleep(0.05)

    def node_named(self, name: str) -> EmbeddedServer:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r} in cluster {self.name} ({[n.name for n in self.nodes]})")

    def stream_leader(self, stream: str) -> EmbeddedServer:
        """The node that currently leads ``stream`` (asked through a running node's monitoring port)."""
        for node in self.nodes:
            if not node.running:
                continue
            url = f"{node.monitor_url}/jsz?streams=true&raft=true"
            with urllib.request.urlopen(url, timeout=2) as r:
                jsz = json.load(r)
            for account in jsz.get("account_details", []):
                for s in account.get("stream_detail", []):
                    leader = (s.get("cluster") or {}).get("leader")
                    if s.get("name") == stream and leader:
                        return self.node_named(leader)
        raise LookupError(f"no leader known for stream {stream}")

    def wait_in_sync(self, stream: str, timeout: float = START_TIMEOUT) -> int:
        """Wait until every running node stores ``stream`` up to the same last sequence; return it.

        Direct Get reads are answered by any replica: after a failover, wait for this before counting.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seqs = {_last_seq(node.monitor_url, stream) for node in self.nodes if node.running}
            if len(seqs) == 1 and None not in seqs:
                return int(seqs.pop() or 0)
            time.sleep(0.05)
        raise TimeoutError(f"replicas of {stream} not in sync after {timeout:.0f}s")

    def kill(self, node: EmbeddedServer) -> None:
        """SIGKILL one node (its store is kept)."""
        node.kill()

    def start_node(self, node: EmbeddedServer, timeout: float = START_TIMEOUT) -> None:
        node.start(timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedCluster:
        return self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _last_seq(monitor_url: str, stream: str) -> int | None:
    """The last sequence of ``stream`` in one node's own store (None: the node has no replica of it)."""
    try:
        with urllib.request.urlopen(f"{monitor_url}/jsz?streams=true", timeout=2) as r:
            jsz = json.load(r)
    except OSError:
        return None
    for account in jsz.get("account_details", []):
        for s in account.get("stream_detail", []):
            if s.get("name") == stream:
                return int(s["state"]["last_seq"])
    return None


def _meta_leader(monitor_url: str) -> str | None:
    """The JetStream meta leader one node knows of (None: none yet, or the node does not answer)."""
    try:
        with urllib.request.urlopen(f"{monitor_url}/jsz", timeout=1) as r:
            meta = json.load(r).get("meta_cluster") or {}
    except (OSError, ValueError):
        return None
    leader = meta.get("leader")
    return str(leader) if leader else None


def _healthz_ok(monitor_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{monitor_url}/healthz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


async def cluster_at(url: str | None = None) -> str | None:
    """``url`` (default ``$NATS_URL``) if the server there is a node of a JetStream cluster of 3 or more (a
    workshop room's ``docker compose --profile cluster``), else None (also when nothing answers there).

    >>> url = await cluster_at()          # doctest: +SKIP
    """
    import os

    from .connection import connect
    from .errors import ConnectError

    url = url or os.environ.get("NATS_URL")
    if not url:
        return None
    try:
        async with await connect(url, namespace="") as probe:
            info = await probe.server_info()
            return url if info.jetstream and info.cluster and probe.default_replicas >= 3 else None
    except ConnectError:
        return None


async def step_down(client: Client, stream: str) -> str:
    """Make ``stream``'s leader step down (its replicas elect another), as a kill would, without stopping a
    node: on a shared cluster nobody may kill the nodes. Returns the name of the node that led it.

    >>> await step_down(client, payments.stream)          # doctest: +SKIP
    'n2'
    """
    leader = (await guarded(f"stream info of {stream!r}", client.js.stream_info(stream))).cluster
    before = leader.leader if leader is not None else None
    reply = json.loads((await client.wire.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"")).data)
    if "error" in reply:
        raise EventStoreError(f"stream {stream}: its leader cannot step down ({reply['error'].get('description')})")
    return str(before or "?")


async def wait_replicas_current(client: Client, stream: str, timeout: float = START_TIMEOUT) -> int:
    """Wait until ``stream`` has a leader and every replica is current (no lag); return its last sequence."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # no leader yet: the election is still on
            info = await client.js.stream_info(stream)
            replicas = info.cluster.replicas if info.cluster is not None else []
            if info.cluster and info.cluster.leader and all(r.current and not r.lag for r in replicas or []):
                return int(info.state.last_seq)
        await asyncio.sleep(0.05)
    raise TimeoutError(f"replicas of {stream} not current after {timeout:.0f}s")
