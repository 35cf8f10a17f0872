"""connect(): explicit URL, NATS_URL, or an embedded server owned by the client; server info; stores."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from conftest import unique

import eskit
from eskit import EmbeddedServer, Event


def closed_port_url() -> str:
    """A loopback URL nobody listens on (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"nats://127.0.0.1:{port}"


async def test_connecting_to_a_closed_port_fails_quickly_with_one_line_of_advice() -> None:
    url = closed_port_url()
    started = time.monotonic()
    with pytest.raises(eskit.ConnectError) as info:
        await asyncio.wait_for(eskit.connect(url), 10)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "\n" not in message
    assert url in message
    assert "python -m eskit server" in message and "docker compose up -d" in message


async def test_nats_url_is_used_when_no_url_is_given(nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_URL", nats_url)
    async with await eskit.connect() as client:
        assert (client.url, client.server) == (nats_url, None)
        assert client.nc.connected_url is not None and client.nc.connected_url.port == int(
            nats_url.rsplit(":")[-1]
        )
    dead = closed_port_url()
    monkeypatch.setenv("NATS_URL", dead)
    with pytest.raises(eskit.ConnectError, match=dead):
        await asyncio.wait_for(eskit.connect(), 10)


async def test_an_explicit_url_wins_over_nats_url(nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_URL", closed_port_url())
    async with await eskit.connect(nats_url) as client:
        assert client.url == nats_url and client.nc.is_connected


async def test_without_any_url_connect_starts_an_embedded_server_that_close_stops(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NATS_URL", raising=False)
    client = await eskit.connect()
    try:
        server = client.server
        assert server is not None and server.running
        assert client.url == server.url != nats_url
        store = await client.event_store("embedded")
        assert await store.append("1", [Event("created")], expected_position=0) == 1
    finally:
        await client.close()
    assert not server.running
    assert not server.store_dir.exists()


async def test_server_info_reports_jetstream_on_nats_server_2_12_or_newer(client: eskit.Client) -> None:
    info = await client.server_info()
    major, minor = (int(part) for part in info.version.split(".")[:2])
    assert (major, minor) >= (2, 12), info.version
    assert info.jetstream is True
    assert info.max_payload == client.max_payload > 0


async def test_event_store_is_idempotent_and_keeps_the_data(client: eskit.Client) -> None:
    name = unique("orders")
    try:
        first = await client.event_store(name)
        event = Event("created")
        await first.append("1", [event])
        second = await client.event_store(name)
        assert second.stream == first.stream == name.upper()
        assert [e.id for e in await second.read("1")] == [event.id]
        info = await client.js.stream_info(second.stream)
        assert (info.config.subjects, info.config.allow_atomic, info.config.allow_direct) == (
            [f"{name}.>"],
            True,
            True,
        )
    finally:
        assert await client.delete_store(name) is True
    assert await client.delete_store(name) is False


@pytest.mark.parametrize("name", ["", "a.b", "a b", "a\tb", "*", ">", "a/b", "a\\b", None])
async def test_store_names_that_are_not_one_subject_token_are_rejected(
    client: eskit.Client, name: str | None
) -> None:
    with pytest.raises(eskit.InvalidNameError):
        await client.event_store(name)  # type: ignore[arg-type]


async def test_store_names_that_differ_only_in_case_do_not_break_each_other(client: eskit.Client) -> None:
    lower = unique("orders")
    try:
        orders = await client.event_store(lower)
        await orders.append("1", [Event("created")])
        with contextlib.suppress(eskit.EskitError):  # refusing the second name is fine; hijacking is not
            await client.event_store(lower.upper())
        await orders.append("1", [Event("item_added")])
        assert [e.type for e in await orders.read("1")] == ["created", "item_added"]
    finally:
        await client.delete_store(lower)


async def test_closing_a_client_whose_server_went_away_does_not_raise_and_closes_it() -> None:
    server = EmbeddedServer().start()
    client = await eskit.connect(server.url)
    try:
        store = await client.event_store("gone")
        await store.read("1")
        server.kill()
        deadline = time.monotonic() + 5
        while client.nc.is_connected and time.monotonic() < deadline:  # until nats-py notices
            await asyncio.sleep(0.01)
        assert not client.nc.is_connected
        failure: BaseException | None = None
        try:
            await asyncio.wait_for(client.close(), 10)
        except (Exception, asyncio.CancelledError) as exc:
            failure = exc
        assert failure is None and client.nc.is_closed, (
            f"close() raised {failure!r}; closed: {client.nc.is_closed}"
        )
    finally:
        if not client.nc.is_closed:
            with contextlib.suppress(nats.errors.Error):
                await client.nc.close()
        server.stop()


PASSWORD, TOKEN = "pw-Sesame-7731", "tok-Opensesame-4410"


@pytest.fixture(scope="module")
def guarded() -> Iterator[EmbeddedServer]:
    config = 'authorization { users = [{user: "writer", password: "' + PASSWORD + '"}] }\n'
    with EmbeddedServer(config=config) as server:
        yield server


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text and TOKEN not in text, f"a secret leaked: {text!r}"


def everything_said_by(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc)


async def test_a_password_in_the_url_never_shows_in_errors_reprs_or_log_records(
    guarded: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    host = guarded.url.split("://", 1)[1]
    with pytest.raises(eskit.AuthenticationError) as refused:
        await asyncio.wait_for(eskit.connect(f"nats://writer:{PASSWORD}x@{host}"), 10)
    with pytest.raises(eskit.ConnectError) as unreachable:
        await asyncio.wait_for(eskit.connect(f"nats://writer:{PASSWORD}@{closed_port_url()[7:]}"), 10)
    with pytest.raises(eskit.ConnectError) as tokened:
        await asyncio.wait_for(eskit.connect(f"nats://{TOKEN}@{closed_port_url()[7:]}"), 10)
    with pytest.raises(eskit.ConnectError, match="seed or creds file") as seed_path:
        await asyncio.wait_for(eskit.connect(guarded.url, nkeys_seed=f"/nowhere/{TOKEN}.nk"), 10)
    async with await eskit.connect(f"nats://writer:{PASSWORD}@{host}") as client:
        store = await client.event_store(unique("orders"))
        try:
            with pytest.raises(eskit.ConcurrencyError) as refused_append:
                await store.append("1", [Event("created")], expected_position=7)
        finally:
            await client.delete_store(store.name)
        said = [repr(client), str(client.url), repr(store), everything_said_by(refused_append.value)]
    assert "writer:***@" in str(refused.value) and "writer:***@" in said[0]
    assert_no_secret(*said, *(everything_said_by(e.value) for e in (refused, unreachable, tokened, seed_path)))
    assert_no_secret(*(r.getMessage() + (r.exc_text or "") for r in caplog.records))


def test_an_eskit_log_record_naming_a_url_with_a_password_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("eskit").warning("reconnecting to %s", f"nats://writer:{PASSWORD}@db:4222")
    try:
        raise RuntimeError(f"lost nats://{TOKEN}@db:4222")
    except RuntimeError:
        logging.getLogger("eskit").exception("a handler failed")
    assert "nats://writer:***@db:4222" in caplog.text
    assert_no_secret(caplog.text)


class Keep(logging.Handler):
    """A handler that keeps what it would print."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.mark.parametrize("name", ["eskit.projections", "eskit.x.y", "nats.aio.client.x"])
def test_a_child_loggers_record_is_redacted_on_its_own_handler_and_on_the_parents(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    child, own = logging.getLogger(name), Keep()
    child.addHandler(own)  # was printed as given: a filter on "eskit" sees only records logged on "eskit" itself
    try:
        child.warning("reconnecting to %s", f"nats://writer:{PASSWORD}@db:4222")
        try:
            raise RuntimeError(f"lost nats://{TOKEN}@db:4222")
        except RuntimeError:
            child.exception("a handler failed")
    finally:
        child.removeHandler(own)
    assert "nats://writer:***@db:4222" in own.lines[0] and "nats://writer:***@db:4222" in caplog.text
    assert_no_secret(*own.lines, caplog.text)


def test_the_cli_never_prints_a_password_from_the_url(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("case:concept:name,concept:name,time:timestamp\nc1,start,2024-01-01T00:00:00Z\n")
    url = f"nats://writer:{PASSWORD}@{closed_port_url()[7:]}"
    run = [sys.executable, "-m", "eskit"]
    imported = subprocess.run([*run, "import", str(log), "--stream", "t", "--url", url],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    assert imported.returncode == 1 and "writer:***@" in imported.stderr
    lab = subprocess.run([*run, "lab", "--notebooks", str(tmp_path), "--", "--version"], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "NATS_URL": url})  # fmt: skip
    assert "using NATS_URL=nats://writer:***@" in lab.stdout
    assert_no_secret(imported.stdout, imported.stderr, lab.stdout, lab.stderr)


async def test_closing_a_client_whose_server_is_stalled_closes_within_seconds_without_raising() -> None:
    server = EmbeddedServer().start()
    pid = server._proc.pid  # type: ignore[union-attr]
    client = await eskit.connect(server.url)
    try:
        store = await client.event_store("stalled")
        await store.append("1", [Event("created")])
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        failure: BaseException | None = None
        try:
            await asyncio.wait_for(client.close(), 15)
        except (Exception, asyncio.CancelledError) as exc:
            failure = exc
        took = time.monotonic() - started
        assert failure is None, f"close() raised {failure!r}"
        assert client.nc.is_closed and took < 5, f"closed: {client.nc.is_closed} after {took:.1f} s"
    finally:
        os.kill(pid, signal.SIGCONT)
        if not client.nc.is_closed:
            with contextlib.suppress(nats.errors.Error):
                await client.nc.close()
        server.stop()


def test_redaction_hides_url_passwords_tokens_seeds_and_config_values_as_its_doctests_show() -> None:
    import doctest

    import eskit._redact

    result = doctest.testmod(eskit._redact)
    assert result.attempted >= 4 and result.failed == 0


async def test_a_learner_namespace_prefixes_the_store_its_stream_subjects_and_snapshot_bucket(nats_url: str) -> None:
    learner = unique("learner")
    async with await eskit.connect(nats_url, namespace=learner) as mine, await eskit.connect(nats_url) as plain:
        orders = await mine.event_store("orders", snapshots=eskit.SnapshotPolicy(every=1))
        try:
            assert (orders.name, orders.stream) == (f"{learner}_orders", f"{learner}_orders".upper())
            await orders.append("o1", [Event("created")])
            assert [e.subject for e in await orders.read("o1")] == [f"{learner}_orders.o1.created"]
            config = (await plain.js.stream_info(orders.stream)).config
            assert config.subjects == [f"{learner}_orders.>"]
            assert orders.snapshots is not None and orders.snapshots.bucket == f"snapshots_{learner}_orders"
            again = await mine.event_store(orders.name)  # the real name opens the same store, not learner_learner_...
            assert again.stream == orders.stream and mine.store_name(orders.name) == orders.name
            assert len(await (await plain.event_store(f"{learner}_orders")).read("o1")) == 1
            assert learner in repr(mine)
        finally:
            assert await mine.delete_store("orders")
        names = {info.config.name for info in await plain.js.streams_info()}
        assert not {orders.stream, f"KV_snapshots_{learner}_orders"} & names


async def test_eskit_learner_in_the_environment_is_the_namespace_and_an_empty_namespace_turns_it_off(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    learner = unique("learner")
    monkeypatch.setenv("ESKIT_LEARNER", learner)
    async with await eskit.connect(nats_url) as c, await eskit.connect(nats_url, namespace="") as plain:
        assert c.namespace == learner and c.store_name("orders") == f"{learner}_orders"
        assert plain.namespace == "" and plain.store_name("orders") == "orders"
        courses = await c.dcb_store("courses", tag_keys=["course"])
        try:
            assert courses.name == f"{learner}_courses"
        finally:
            await c.delete_store("courses")
    name = eskit.course.unique("orders")
    assert name.startswith(f"{learner}_lesson_orders") and len(name) == len(f"{learner}_lesson_orders") + 8


@pytest.mark.parametrize("namespace", ["Alice", "a.b", "al ice", "_alice", "x" * 65, "straße"])
async def test_an_invalid_learner_namespace_is_one_line_of_advice_before_any_connection(
    namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(eskit.errors.InvalidNameError, match="learner namespace") as caught:
        await eskit.connect(closed_port_url(), namespace=namespace)  # no ConnectError: checked first
    assert "\n" not in str(caught.value) and "ESKIT_LEARNER=alice" in str(caught.value)
    monkeypatch.setenv("ESKIT_LEARNER", namespace)
    with pytest.raises(eskit.errors.InvalidNameError, match="learner namespace"):
        await eskit.connect(closed_port_url())
    if namespace == "Alice":
        assert "use 'alice'" in str(caught.value)


async def test_a_url_password_with_a_slash_or_a_url_without_scheme_never_shows_in_errors_or_reprs(
    guarded: EmbeddedServer,
) -> None:
    host = guarded.url.split("://", 1)[1]
    slashed = f"{PASSWORD[:4]}/{PASSWORD[4:]}"  # as generated passwords often are; unencoded in the URL
    with pytest.raises(eskit.ConnectError) as refused:
        await asyncio.wait_for(eskit.connect(f"nats://writer:{slashed}@{host}"), 10)
    with pytest.raises(eskit.ConnectError) as unreachable:
        await asyncio.wait_for(eskit.connect(f"writer:{PASSWORD}@{closed_port_url()[7:]}"), 10)
    async with await eskit.connect(f"writer:{PASSWORD}@{host}") as client:  # nats-py adds nats://
        said = [repr(client), str(client.url)]
    assert "writer:***@" in said[0] and all("writer:***@" in str(e.value) for e in (refused, unreachable))
    assert_no_secret(*said, *(everything_said_by(e.value).replace(slashed, PASSWORD) for e in (refused, unreachable)))
