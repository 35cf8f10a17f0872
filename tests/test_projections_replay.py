"""Regression tests for foundation pieces projections rely on: multi-filter replay, times, headers."""

from __future__ import annotations

import asyncio

import pytest

import eskit


async def test_a_replay_over_several_filters_is_a_consistent_cut_while_others_append(
    store: eskit.EventStore,
) -> None:
    async def write() -> None:
        for i in range(20):
            await store.append_many(
                [(f"w{i}-{j}", [eskit.Event("shipped" if j % 2 else "created")], 0) for j in range(50)]
            )

    await store.append("first", [eskit.Event("created"), eskit.Event("shipped")])
    writer = asyncio.ensure_future(write())
    cuts = 0
    try:
        while not writer.done() and cuts < 200:
            seen = [
                e.position
                async for e in store.replay(subjects=[f"{store.name}.*.created", f"{store.name}.*.shipped"])
            ]
            # every event up to the last one seen was seen: nothing of one filter is missing at the end
            assert seen == list(range(1, seen[-1] + 1))
            cuts += 1
    finally:
        await writer
    assert cuts > 0


def test_store_times_parse_the_same_on_the_fast_path_projections_rely_on() -> None:
    from datetime import UTC, datetime

    from eskit.events import parse_time

    expected = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert parse_time("2026-01-02T03:04:05.123456789Z") == expected  # nanoseconds, as the server writes them
    assert parse_time("2026-01-02T03:04:05.123456+00:00") == expected  # isoformat(), as eskit writes them
    assert parse_time("2026-01-02T03:04:05.1234567891Z") == expected  # more digits: the slow path
    assert parse_time("2026-01-02T03:04:05") == expected.replace(microsecond=0)  # naive: taken as UTC
    assert parse_time("not a time") is None


@pytest.mark.parametrize(
    "raw",
    [
        b"Nats-Msg-Id: 0123abcd\r\nEskit-Schema-Version: 1\r\nEskit-Occurred-At: 2026-01-02T03:04Z\r\n\r\n",
        b"a b: 1\r\nx:2\r\n: empty\r\nnocolon\r\n\xff\xfe: v\r\nk: \xff\r\n  sp  :  v  \r\n\x1cA: 1\r\n",
    ],
)
def test_eskit_reads_headers_exactly_as_nats_py_does(raw: bytes) -> None:
    from nats.aio.client import Client as NATS

    from eskit._nats.headers import parse_header_lines

    assert parse_header_lines(raw) == NATS._parse_header_lines(raw)


@pytest.mark.fast_lane
async def test_eskit_connections_use_the_fast_header_parser(
    client: eskit.Client, store: eskit.EventStore
) -> None:
    from eskit._nats.headers import parse_header_lines

    assert client.nc._parse_header_lines is parse_header_lines
    await store.append("o1", [eskit.Event("created", metadata={"user": "ü"})])
    [event] = await store.read("o1")
    assert event.metadata == {"user": "ü"} and event.id is not None
