"""Every test talks to a real nats-server: one embedded server per test session (127.0.0.1, free port,
temporary store), or the one at $NATS_URL. Each test gets its own uniquely named store, deleted after.

The server's URL is exported as NATS_URL so notebook kernels started by nbval use the same server, and
ESKIT_LEARNER is unset (no learner namespace: lesson outputs are the stored ones). ESKIT_CLEANUP=now makes
a lesson's "when you are done" button clean up at once (nobody presses it here).

The tests that read (replays, loads, projections, ``to_dataframe``: :data:`LANED`) run twice, on a client with
eskit's fast lane and on one without (``ESKIT_FAST_LANE=0``, nats-py's own path): the ``lane`` parameter
(``[fast lane]``/``[nats-py]`` in their ids). With ``ESKIT_FAST_LANE=0`` set for the whole run, every test
runs once, without.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator

import pytest

import eskit
from eskit._nats import fastlane

LANES = ("fast lane", "nats-py")
# module -> the tests in it that read (a pattern of their names; None: all of them)
LANED: dict[str, str | None] = {
    "test_store": r"read|replay|round_trip|history|raw_message",
    "test_aggregate": r"load|replay|read|history",
    "test_bulkread": None,
    "test_projections": None,
    "test_projections_replay": None,
    "test_analysis": r"dataframe|frame|column|read|decod",
    "test_upcasting": r"read|replay|load|dataframe|frame|projection",
    "test_export": r"dataframe|arrow|parquet",
    "test_hostile": r"read|replay|load|dataframe|projection",
}

_server: eskit.EmbeddedServer | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _server
    os.environ.setdefault("ESKIT_CLEANUP", "now")
    os.environ.pop("ESKIT_LEARNER", None)  # tests/test_room.py sets it per notebook kernel
    if not os.environ.get("NATS_URL"):
        _server = eskit.EmbeddedServer().start()
        os.environ["NATS_URL"] = _server.url


def pytest_unconfigure(config: pytest.Config) -> None:
    if _server is not None:
        _server.stop()
        os.environ.pop("NATS_URL", None)


@pytest.fixture(scope="session")
def nats_url() -> str:
    return os.environ["NATS_URL"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run the tests of :data:`LANED` with the fast lane and without (one client each, for the session)."""
    module = metafunc.module.__name__.rpartition(".")[2]
    if module not in LANED or "client" not in metafunc.fixturenames or not fastlane.enabled():
        return
    pattern = LANED[module]
    if metafunc.definition.get_closest_marker("fast_lane") is None and (
        pattern is None or re.search(pattern, metafunc.function.__name__)
    ):
        metafunc.parametrize("lane", LANES, indirect=True, scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not fastlane.enabled():
        skip = pytest.mark.skip(reason="ESKIT_FAST_LANE=0: this test is about the fast lane itself")
        for item in items:
            if item.get_closest_marker("fast_lane") is not None:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def lane(request: pytest.FixtureRequest) -> str:
    """``"fast lane"`` or ``"nats-py"`` (ESKIT_FAST_LANE=0); a test that is not laned gets what the
    environment says."""
    param: str = getattr(request, "param", "fast lane" if fastlane.enabled() else "nats-py")
    return param


@pytest.fixture(scope="session")
async def client(nats_url: str, lane: str) -> AsyncIterator[eskit.Client]:
    before = os.environ.get(fastlane.ENV)
    os.environ[fastlane.ENV] = "0" if lane == "nats-py" else (before or "1")  # read once, at connect
    try:
        connecting = eskit.connect(nats_url)
        c = await connecting
    finally:
        if before is None:
            os.environ.pop(fastlane.ENV, None)
        else:
            os.environ[fastlane.ENV] = before
    async with c:
        assert fastlane.available(c.nc) is (lane == "fast lane"), f"the {lane} client has the wrong lane"
        yield c


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def store(client: eskit.Client) -> AsyncIterator[eskit.EventStore]:
    name = unique("orders")
    s = await client.event_store(name)
    yield s
    await client.delete_store(name)
