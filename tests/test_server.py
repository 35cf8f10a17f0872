"""EmbeddedServer: the real nats-server as a child process on loopback (each test starts its own)."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import eskit
from eskit import EmbeddedServer, Event


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def gone_within(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.status == 200
        return json.load(reply)


def stop_and_clean(server: EmbeddedServer) -> None:
    """Stop a server started with a given store_dir, and remove the temporary directory it leaves behind."""
    server.stop()
    shutil.rmtree(server.log_path.parent, ignore_errors=True)


def server_pid(server: EmbeddedServer) -> int:
    assert server._proc is not None
    return server._proc.pid


async def append_and_close(url: str, store: str, event: Event) -> int:
    async with await eskit.connect(url) as client:
        return await (await client.event_store(store)).append("1", [event])


async def read_and_close(url: str, store: str) -> list[str | None]:
    async with await eskit.connect(url) as client:
        return [e.id for e in await (await client.event_store(store)).read("1")]


def test_a_server_starts_on_loopback_on_a_free_port_with_jetstream_healthy() -> None:
    with EmbeddedServer() as server:
        assert server.running and server.url == f"nats://127.0.0.1:{server.port}" and server.port > 0
        assert server.monitor_url.startswith("http://127.0.0.1:")
        assert get_json(f"{server.monitor_url}/healthz?js-enabled-only=true") == {"status": "ok"}
        varz = get_json(f"{server.monitor_url}/varz")
        assert (varz["host"], varz["port"], varz["http_host"]) == ("127.0.0.1", server.port, "127.0.0.1")
        assert varz["jetstream"]["config"]["store_dir"].startswith(str(server.store_dir))


def test_stop_leaves_no_process_and_removes_the_temporary_store() -> None:
    server = EmbeddedServer().start()
    pid, store_dir = server_pid(server), server.store_dir
    assert alive(pid) and store_dir.exists()
    server.stop()
    assert not server.running
    assert not alive(pid)
    assert not store_dir.exists()
    server.stop()  # stopping twice is harmless


async def test_a_given_store_dir_survives_stop_and_start(tmp_path: Path) -> None:
    server = EmbeddedServer(store_dir=tmp_path / "js").start()
    try:
        event = Event("created", {"kept": True})
        await append_and_close(server.url, "kept", event)
        server.stop()
        assert (tmp_path / "js").exists()
        server.start()
        assert await read_and_close(server.url, "kept") == [event.id]
    finally:
        stop_and_clean(server)


async def test_kill_then_start_resumes_on_the_same_port_with_the_data(tmp_path: Path) -> None:
    server = EmbeddedServer(store_dir=tmp_path / "js").start()
    try:
        url, pid = server.url, server_pid(server)
        event = Event("created")
        await append_and_close(url, "killed", event)
        server.kill()
        assert not server.running and not alive(pid)
        server.start()
        assert server.url == url and server_pid(server) != pid
        assert await read_and_close(url, "killed") == [event.id]
    finally:
        stop_and_clean(server)


def test_two_servers_at_once_get_different_ports() -> None:
    with EmbeddedServer() as one, EmbeddedServer() as two:
        assert one.port != two.port and one.url != two.url
        assert one.store_dir != two.store_dir
        for server in (one, two):
            assert get_json(f"{server.monitor_url}/healthz")["status"] == "ok"


def test_a_server_that_cannot_start_raises_server_start_error() -> None:
    with pytest.raises(eskit.ServerStartError, match="nats-server"):
        EmbeddedServer(extra_args=["--no-such-flag"]).start(timeout=10)


def test_stopping_a_server_with_a_given_store_dir_leaves_no_temporary_files(tmp_path: Path) -> None:
    server = EmbeddedServer(store_dir=tmp_path / "js").start()
    work = server.log_path.parent
    try:
        server.stop()
        assert (tmp_path / "js").exists()
        assert not work.exists(), f"temporary directory {work} (log, ports file) left behind after stop()"
    finally:
        shutil.rmtree(work, ignore_errors=True)


CHILD = textwrap.dedent(
    """
    import time
    from eskit import EmbeddedServer
    server = EmbeddedServer().start()
    print(server._proc.pid, server.log_path.parent, flush=True)
    time.sleep(120)
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux only")
def test_a_server_does_not_outlive_a_parent_killed_with_sigkill() -> None:
    parent = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    nats_pid, work = 0, ""
    try:
        with selectors.DefaultSelector() as selector:
            assert parent.stdout is not None
            selector.register(parent.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=30), "the child did not report its server in 30 s"
            pid_text, work = parent.stdout.readline().decode().split()
            nats_pid = int(pid_text)
        assert alive(nats_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        assert gone_within(nats_pid, 5.0), f"nats-server {nats_pid} outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(5)
        if nats_pid and alive(nats_pid):
            os.kill(nats_pid, signal.SIGKILL)
        if parent.stdout is not None:
            parent.stdout.close()
        if parent.stderr is not None:
            parent.stderr.close()
        if work.startswith("/tmp/") or work.startswith(os.path.realpath("/tmp") + "/"):
            shutil.rmtree(work, ignore_errors=True)
