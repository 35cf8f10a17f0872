"""The fast lane's protocol parser, on a real server: every frame arrives whole, routed or not."""

from __future__ import annotations

import asyncio
import itertools
import random

import nats
import pytest
from conftest import unique
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.protocol.parser import Parser

import eskit
from eskit._nats import fastlane as _fastlane

SIZES = [0, 1, 2, 7, 100, 4095, 4096, 32_767, 32_768, 70_000, 1_000_000]


@pytest.mark.fast_lane
def test_eskit_connections_use_the_fast_parser(client: eskit.Client) -> None:
    assert isinstance(client.nc._ps, _fastlane.FastParser)
    assert _fastlane.available(client.nc)


@pytest.mark.fast_lane
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


@pytest.mark.fast_lane
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


@pytest.mark.fast_lane
async def test_a_client_connected_by_hand_gets_the_process_msg_hook(nats_url: str) -> None:
    nc = await nats.connect(nats_url)  # its parser is nats-py's own: the hook is the way in
    try:
        assert _fastlane.prepare(nc) == "the client is connected already"  # too late
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
    assert _fastlane.prepare(nc) is None
    assert isinstance(nc._ps, _fastlane.FastParser)
    assert _fastlane.prepare(nc) is None  # idempotent


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


class Recorder:
    """What a nats-py client would receive from its parser (the parser's hand-offs, recorded in order)."""

    def __init__(self) -> None:
        self.seen: list[tuple[object, ...]] = []

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        self.seen.append(("msg", sid, subject, reply, data, headers))

    async def _process_ping(self) -> None:
        self.seen.append(("ping",))

    async def _process_pong(self) -> None:
        self.seen.append(("pong",))

    async def _process_info(self, info: dict[str, object]) -> None:
        self.seen.append(("info", info))

    async def _process_err(self, err: str) -> None:
        self.seen.append(("err", err))


def frame(kind: str, n: int, payload: bytes, headers: bytes) -> bytes:
    if kind == "msg":
        return b"MSG subj.%d %d %d\r\n%s\r\n" % (n, n % 3 + 1, len(payload), payload)
    if kind == "msg-reply":
        return b"MSG subj.%d %d _INBOX.x.%d %d\r\n%s\r\n" % (n, n % 3 + 1, n, len(payload), payload)
    if kind == "hmsg":
        block = b"NATS/1.0\r\n" + headers + b"\r\n"
        size = len(block)
        return b"HMSG subj.%d %d %d %d\r\n%s%s\r\n" % (n, n % 3 + 1, size, size + len(payload), block, payload)
    if kind == "hmsg-reply":
        block = b"NATS/1.0 404 No Messages\r\n" + headers + b"\r\n"
        size = len(block)
        return b"HMSG s %d r.%d %d %d\r\n%s%s\r\n" % (n % 3 + 1, n, size, size + len(payload), block, payload)
    return {"ping": b"PING\r\n", "pong": b"PONG\r\n", "ok": b"+OK\r\n", "info": b'INFO {"a":1}\r\n',
            "err": b"-ERR 'Permissions Violation for Publish to \"x\"'\r\n",
            "stale": b"-ERR 'Stale Connection'\r\n"}[kind]  # fmt: skip


KINDS = ["msg", "msg-reply", "hmsg", "hmsg-reply", "ping", "pong", "ok", "info", "err"]


def frame_lists(kinds: list[str], odd: list[bytes]) -> st.SearchStrategy[list[tuple[str, bytes, bytes]]]:
    """Frames of these kinds, with payloads that look like protocol lines (``odd``) now and then."""
    return st.lists(
        st.tuples(
            st.sampled_from(kinds),
            st.binary(max_size=300) | st.sampled_from(odd),
            st.sampled_from([b"", b"A: 1\r\n", b"Nats-Msg-Id: x\r\nB: y\r\n"]),
        ),
        min_size=1,
        max_size=30,
    )


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut where ``cuts`` say (modulo its length), as reads from a socket arrive."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


frames = frame_lists(KINDS, [b"", b"\r\n", b"MSG x 1 2\r\n", b"HMSG", b"PING\r\n"])


@given(items=frames, cuts=st.lists(st.integers(0, 20_000), max_size=12))
@settings(max_examples=300, deadline=None)
def test_the_fast_parser_hands_off_exactly_what_nats_py_does_wherever_the_reads_split(
    items: list[tuple[str, bytes, bytes]], cuts: list[int]
) -> None:
    chunks = chunked(b"".join(frame(k, n, p, h) for n, (k, p, h) in enumerate(items)), cuts)

    async def feed(parser: Parser) -> list[tuple[object, ...]]:
        for chunk in chunks:
            await parser.parse(chunk)
        return parser.nc.seen  # type: ignore[no-any-return]

    theirs = asyncio.run(feed(Parser(Recorder())))
    ours = asyncio.run(feed(_fastlane.FastParser(Recorder())))
    assert ours == theirs
    assert len([s for s in ours if s[0] == "msg"]) == len([i for i in items if "msg" in i[0]])


def test_routed_frames_reach_their_sink_and_others_the_client() -> None:
    parser = _fastlane.FastParser(Recorder())
    routed: list[tuple[bytes, ...]] = []
    parser.sinks[3] = lambda *parts: routed.append(parts)  # frames 2 and 5 are on sid 3, frame 1 on sid 2
    wire = frame("hmsg", 1, b"one", b"A: 1\r\n") + frame("msg", 2, b"two", b"") + frame("msg-reply", 5, b"three", b"")
    for i in range(len(wire)):  # every split point
        routed.clear()
        parser.nc.seen.clear()
        asyncio.run(parser.parse(wire[:i]))
        asyncio.run(parser.parse(wire[i:]))
        assert routed == [(b"subj.2", b"", b"", b"two"), (b"subj.5", b"_INBOX.x.5", b"", b"three")]
        assert [s[4] for s in parser.nc.seen] == [b"one"]


def test_a_long_control_line_split_across_reads_is_waited_for_as_nats_py_does() -> None:
    info = b'INFO {"connect_urls": [' + b",".join(b'"10.0.0.%d:4222"' % i for i in range(600)) + b"]}\r\n"
    assert len(info) > 8192
    parser = _fastlane.FastParser(Recorder())
    for at in range(0, len(info), 1000):  # arrives in 1 kB reads
        asyncio.run(parser.parse(info[at : at + 1000]))
    [(kind, parsed)] = parser.nc.seen
    assert kind == "info" and len(parsed["connect_urls"]) == 600  # type: ignore[index]
