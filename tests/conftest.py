"""Every test talks to a real nats-server: one embedded server per test session (127.0.0.1, free port,
temporary store), or the one at $NATS_URL. Each test gets its own uniquely named store, deleted after.

The server's URL is exported as NATS_URL so notebook kernels started by nbval use the same server, and
ESKIT_LEARNER is unset (no learner namespace: lesson outputs are the stored ones). ESKIT_CLEANUP=now makes
a lesson's "when you are done" button clean up at once (nobody presses it here).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest

import eskit

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


@pytest.fixture(scope="session")
async def client(nats_url: str) -> AsyncIterator[eskit.Client]:
    async with await eskit.connect(nats_url) as c:
        yield c


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def store(client: eskit.Client) -> AsyncIterator[eskit.EventStore]:
    name = unique("orders")
    s = await client.event_store(name)
    yield s
    await client.delete_store(name)
