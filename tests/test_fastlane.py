"""The fast lane's protocol parser, on a real server: every frame arrives whole, routed or not."""

from __future__ import annotations

import asyncio
import random

import nats
import pytest
from conftest import unique
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

import eskit
from eskit import _fastlane

SIZES = [0, 1, 2, 7, 100, 4095, 4096, 32_767, 32_768, 70_000, 1_000_000]


def test_eskit_connections_use_the_fast_parser(client: eskit.Client) -> None:
    assert isinstance(client.nc._ps, _fastlane.FastParser)
    assert _fastlane.available(client.nc)


async def test_frames_of_every_size_arrive_intact_on_routed_and_ordinary_subscriptions(client: eskit.Client) -> None:
    nc = client.nc
    subject = unique("lane")
    rng = random.Random(7)
    sizes = SIZES + [rng.randrange(0, 50_000) for _ in range(300)]
    payloads = [rng.randbytes(n) for n in sizes]
    routed: list[tuple[bytes, bytes, bytes, bytes]] = []
    ordinary: list[Msg] = []
    done = asyncio.Event()

    def sink(subj: bytes, reply: bytes, headers: bytes, data: bytes) -> None:
        routed.append((subj, reply, headers, data))

    async def cb(msg: Msg) -> None:
        ordinary.append(msg)
        if len(ordinary) == len(payloads):
            done.set()

    fast = await nc.subscribe(f"{subject}.fast")
    slow = await nc.subscribe(f"{subject}.slow", cb=cb)
    assert _fastlane.route(nc, fast, sink)
    try:
        for i, payload in enumerate(payloads):  # alternate, headers on every other message
            headers = {"N": str(i), "Pad": "x" * (i % 50)} if i % 2 else None
            await nc.publish(f"{subject}.fast", payload, reply="r.1" if i % 3 else "", headers=headers)
            await nc.publish(f"{subject}.slow", payload, headers=headers)
        await asyncio.wait_for(done.wait(), 30)
        await nc.flush()
    finally:
        _fastlane.unroute(nc, fast)
        await fast.unsubscribe()
        await slow.unsubscribe()
    assert [m.data for m in ordinary] == payloads
    assert [d for _, _, _, d in routed] == payloads
    for i, (subj, reply, headers, _) in enumerate(routed):
        assert subj == f"{subject}.fast".encode()
        assert reply == (b"r.1" if i % 3 else b"")
        assert headers.startswith(b"NATS/1.0\r\nN: %d\r\n" % i) if i % 2 else headers == b""
        assert (ordinary[i].headers or {}).get("N") == (str(i) if i % 2 else None)


async def test_a_failing_sink_does_not_stop_the_connection(client: eskit.Client) -> None:
    nc = client.nc
    subject = unique("lane")
    sub = await nc.subscribe(subject)

    def sink(subj: bytes, reply: bytes, headers: bytes, data: bytes) -> None:
        raise RuntimeError("a bug")

    assert _fastlane.route(nc, sub, sink)
    try:
        await nc.publish(subject, b"boom")
        await nc.flush(timeout=5)  # PING/PONG still flows after the failing sink
    finally:
        _fastlane.unroute(nc, sub)
        await sub.unsubscribe()
    assert nc.is_connected


async def test_a_client_connected_by_hand_gets_the_process_msg_hook(nats_url: str) -> None:
    nc = await nats.connect(nats_url)  # its parser is nats-py's own: the hook is the way in
    try:
        assert not _fastlane.prepare(nc)  # too late: already connected
        got: list[bytes] = []
        sub = await nc.subscribe("hook.test")
        assert _fastlane.route(nc, sub, lambda s, r, h, d: got.append(d))
        await nc.publish("hook.test", b"one", headers={"A": "1"})
        await nc.flush(timeout=5)
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.01)
        assert got == [b"one"]
    finally:
        await nc.close()


def test_prepare_gives_a_new_client_the_fast_parser() -> None:
    nc = NATS()
    assert _fastlane.prepare(nc)
    assert isinstance(nc._ps, _fastlane.FastParser)
    assert _fastlane.prepare(nc)  # idempotent


@pytest.mark.parametrize("payload", [b"", b"x" * 1_000_000])
async def test_empty_and_large_payloads_reach_an_ordinary_subscription(client: eskit.Client, payload: bytes) -> None:
    nc = client.nc
    if len(payload) > nc.max_payload:
        pytest.skip("server max_payload is smaller")
    subject = unique("lane")
    sub = await nc.subscribe(subject)
    try:
        await nc.publish(subject, payload)
        msg = await sub.next_msg(timeout=5)
    finally:
        await sub.unsubscribe()
    assert msg.data == payload
