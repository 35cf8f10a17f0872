"""The seam to nats-py (eskit/_nats): eskit's fast lanes give what nats-py's own path gives, byte for byte, and
what nats-py raises reaches nobody as a nats-py exception.

Contracts, each against the installed nats-py itself: the fast parser's hand-offs (also where nats-py resets
the parser from inside ``parse()``), the header parsers, the hand-built HPUB; then on a real server the
translation of nats-py's errors, ``ESKIT_FAST_LANE=0``, and a nats-py whose internals differ (one warning).
"""

from __future__ import annotations

import asyncio
import enum
import warnings
from collections.abc import AsyncIterator

import nats
import nats.errors
import nats.js.errors
import pytest
from conftest import unique
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from nats.protocol.parser import Parser
from test_fastlane import KINDS, Recorder, chunked, frame, frame_lists

import eskit
from eskit import _nats
from eskit._nats import fastlane as _fastlane
from eskit._nats import headers as _headers
from eskit._nats import jsapi, wire

STALE = b"-ERR 'Stale Connection'\r\n"


class Resetting(Recorder):
    """A client that, as nats-py's does on ``-ERR 'Stale Connection'``, resets its parser from inside parse()."""

    parser: Parser

    async def _process_err(self, err: str) -> None:
        self.seen.append(("err", err))
        if "stale connection" in err:
            self.parser.reset()


def hand_offs(parser_type: type[Parser], chunks: list[bytes]) -> list[tuple[object, ...]]:
    client = Resetting()
    client.parser = parser = parser_type(client)

    async def feed() -> None:
        for chunk in chunks:
            try:
                await parser.parse(chunk)
            except nats.errors.ProtocolError:  # nats-py's read loop reconnects: nothing more is read
                client.seen.append(("protocol error",))
                return

    asyncio.run(feed())
    return client.seen


def test_the_fast_parser_stops_reading_a_chunk_where_nats_py_resets_it_on_a_stale_connection() -> None:
    chunk = frame("msg", 1, b"before", b"") + STALE + frame("msg", 2, b"after", b"") + b"PING\r\n"
    theirs = hand_offs(Parser, [chunk])
    assert [s[0] for s in theirs] == ["msg", "err"]  # nats-py drops the rest of the read: it reconnects
    assert hand_offs(_fastlane.FastParser, [chunk]) == theirs


frames = frame_lists([*KINDS, "stale"], [b"", b"\r\n", b"MSG x 1 2\r\n", STALE])


@given(items=frames, cuts=st.lists(st.integers(0, 10_000), max_size=8))
@settings(max_examples=300, deadline=None)
def test_the_fast_parser_hands_off_what_nats_py_does_with_resets_pings_and_infos_anywhere(
    items: list[tuple[str, bytes, bytes]], cuts: list[int]
) -> None:
    chunks = chunked(b"".join(frame(k, n, p, h) for n, (k, p, h) in enumerate(items)), cuts)
    assert hand_offs(_fastlane.FastParser, chunks) == hand_offs(Parser, chunks)


def test_a_message_split_at_every_byte_arrives_as_nats_py_delivers_it() -> None:
    data = frame("hmsg", 1, b"payload\r\nwith CRLF", b"A: 1\r\n") + b"PONG\r\n" + frame("msg-reply", 2, b"x", b"")
    for at in range(len(data) + 1):
        assert hand_offs(_fastlane.FastParser, [data[:at], data[at:]]) == hand_offs(Parser, [data])


NAMES = st.sampled_from(["A", "Nats-Msg-Id", "Eskit-Type", " A", "A ", "A B", "a\tb", "", "Ä", "x\x1c", "Status"])
VALUES = st.sampled_from(["1", " 1", "1 ", "  x  ", "", "a: b", "\t1", "é", "1\x0b", "\x85v", "v\xa0"]) | st.text(
    st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=8
)
LINES = st.lists(
    st.tuples(NAMES, st.sampled_from([": ", ":", " : ", ":  "]), VALUES).map(lambda t: "".join(t))
    | st.sampled_from(["no colon", "", ": empty name"]),
    max_size=6,
)
STATUS = st.sampled_from(["", " 404 No Messages", " 204 EOB", " 503", " 100 Idle Heartbeat", " 408 Request Timeout"])


def nats_py_headers(raw: bytes) -> dict[str, str] | None:
    """nats-py's own parse of a header block (its Description key is an Enum member: compared as text)."""
    parsed = asyncio.run(NATS()._process_headers(raw))
    return None if parsed is None else {(k.value if isinstance(k, enum.Enum) else k): v for k, v in parsed.items()}


@given(status=STATUS, lines=LINES)
@settings(max_examples=400, deadline=None)
def test_header_blocks_parse_as_nats_py_parses_them_spaces_stripped_as_adr_4_says(
    status: str, lines: list[str]
) -> None:
    body = "".join(f"{line}\r\n" for line in lines).encode()
    block = f"NATS/1.0{status}\r\n".encode() + body + b"\r\n"
    assert _headers.parse_header_lines(body) == NATS._parse_header_lines(body)
    if status == " 503" and body:
        return  # nats-py 2.16 reads the header lines after a bare status code as its Description ("\nA: 1")
    assert _headers.parse_headers(block) == nats_py_headers(block)


def test_a_padded_value_and_name_are_stripped_on_both_paths() -> None:
    block = b"NATS/1.0\r\nEskit-Type:  created \r\n Nats-Msg-Id: 7\r\n\r\n"
    assert _headers.parse_headers(block) == nats_py_headers(block) == {"Eskit-Type": "created", "Nats-Msg-Id": "7"}


def nats_py_publish(subject: str, reply: str, headers: dict[str, str], payload: bytes) -> bytes:
    """The bytes nats-py's publish queues for this message (on a client that never connects)."""
    nc = NATS()
    sent: list[bytes] = []

    async def capture(cmd: bytes, priority: bool = False) -> None:
        sent.append(cmd)

    nc._send_command = capture  # type: ignore[method-assign]
    nc._flush_queue = None
    asyncio.run(nc._send_publish(subject, reply, payload, len(payload), headers))
    return b"".join(sent)


HEADER_NAMES = st.sampled_from(["Nats-Msg-Id", "Eskit-Type", "A", " A", "A B", "", "a:b", "Ä"])
HEADER_VALUES = st.sampled_from(["1", " 1", "1 ", "", "x\r\ny", "é", "a: b"]) | st.text(
    st.characters(blacklist_categories=("Cs",)), max_size=6
)


@given(
    subject=st.sampled_from(["orders.1.created", "a", "o.é.x"]),
    headers=st.dictionaries(HEADER_NAMES, HEADER_VALUES, min_size=1, max_size=5),
    payload=st.binary(max_size=64),
)
@settings(max_examples=400, deadline=None)
def test_a_hand_built_hpub_is_byte_equal_to_nats_py_s_publish_or_left_to_it(
    subject: str, headers: dict[str, str], payload: bytes
) -> None:
    command = wire.hpub(subject, "_INBOX.x.1", headers, payload)
    if command is not None:
        assert command == nats_py_publish(subject, "_INBOX.x.1", headers, payload)


def test_eskit_s_own_headers_take_the_hand_built_hpub() -> None:
    headers = {"Nats-Msg-Id": "0b7e", "Eskit-Type": "created", "Nats-Expected-Last-Subject-Sequence": "0"}
    assert wire.hpub("orders.1.created", "_INBOX.x.1", headers, b"{}") == nats_py_publish(
        "orders.1.created", "_INBOX.x.1", headers, b"{}"
    )


@pytest.fixture(params=["fast lane", "nats-py"])
async def lane_client(request: pytest.FixtureRequest, nats_url: str, monkeypatch: pytest.MonkeyPatch
                      ) -> AsyncIterator[eskit.Client]:  # fmt: skip
    """A client of its own, with the fast lane or (ESKIT_FAST_LANE=0) without."""
    monkeypatch.setenv(_fastlane.ENV, "1" if request.param == "fast lane" else "0")
    async with await eskit.connect(nats_url) as c:
        yield c


async def test_an_oversize_message_gets_the_same_clear_error_on_both_paths_and_nothing_is_sent(
    lane_client: eskit.Client,
) -> None:
    nc, subject = lane_client.nc, unique("big")
    sub = await nc.subscribe(subject)
    try:
        too_big = b"x" * (nc.max_payload - 20)  # the payload fits; with its headers it does not
        with pytest.raises(eskit.PayloadTooLargeError, match="max_payload") as caught:
            await lane_client.wire.request_many([(subject, too_big, {"Nats-Msg-Id": "1", "Pad": "y" * 40})])
        assert "\n" not in str(caught.value)
        with pytest.raises(eskit.PayloadTooLargeError):
            await lane_client.wire.request(subject, b"x" * (nc.max_payload + 1))
        await nc.flush(timeout=5)
        assert nc.is_connected and sub.pending_msgs == 0
    finally:
        await sub.unsubscribe()


async def test_eskit_fast_lane_0_gives_a_connection_on_nats_py_s_own_path(lane_client: eskit.Client) -> None:
    nc = lane_client.nc
    fast = _fastlane.enabled()
    assert isinstance(nc._ps, _fastlane.FastParser) is fast
    assert _fastlane.available(nc) is fast and (lane_client.wire._raw is not None) is fast
    assert (nc._parse_header_lines is _headers.parse_header_lines) is fast
    store = await lane_client.event_store(unique("lane"))
    try:
        await store.append_many([(f"o{i}", [eskit.Event("a", {"i": i})], 0) for i in range(50)])
        assert [e.position async for e in store.replay()] == list(range(1, 51))
    finally:
        await lane_client.delete_store(store.name)


async def test_a_nats_py_whose_internals_differ_gets_one_warning_and_nats_py_s_own_path(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def process(self: NATS, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None,
                      extra: object = None) -> None:  # fmt: skip
        pass  # a changed hand-off: never called (eskit must not install over it)

    monkeypatch.setattr(NATS, "_process_msg", process)
    monkeypatch.setattr(_nats, "_warned", [])
    monkeypatch.setenv(_fastlane.ENV, "1")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        first, second = NATS(), NATS()
        assert not _nats.install(first) and not _nats.install(second)
    lines = [str(w.message) for w in said if issubclass(w.category, eskit.FastLaneWarning)]
    assert len(lines) == 1 and "_process_msg" in lines[0] and "\n" not in lines[0]
    assert not isinstance(first._ps, _fastlane.FastParser) and not _fastlane.available(first)


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    conn = await nats.connect(nats_url)
    yield conn
    await conn.close()


async def test_a_missing_stream_is_a_stream_not_found_error_with_nats_py_s_error_as_its_cause(
    client: eskit.Client,
) -> None:
    with pytest.raises(eskit.StreamNotFoundError, match="create the store first") as caught:
        await jsapi.guarded("stream info of 'nope'", client.js.stream_info(unique("nope")))
    assert isinstance(caught.value.__cause__, nats.js.errors.NotFoundError) and "\n" not in str(caught.value)


async def test_no_responders_is_store_unavailable_and_a_silent_responder_a_timeout(nc: NATS) -> None:
    with pytest.raises(eskit.StoreUnavailableError, match="retry") as caught:
        await jsapi.guarded("a request", nc.request(unique("nobody"), b"", timeout=2))
    assert isinstance(caught.value.__cause__, nats.errors.NoRespondersError)
    subject = unique("silent")
    sub = await nc.subscribe(subject)  # listens, never answers
    try:
        with pytest.raises(eskit.StoreTimeoutError) as late:
            await jsapi.guarded("a request", nc.request(subject, b"", timeout=0.2))
    finally:
        await sub.unsubscribe()
    assert isinstance(late.value.__cause__, nats.errors.TimeoutError) and "\n" not in str(late.value)


async def test_dropping_a_snapshot_bucket_that_is_not_there_says_false(client: eskit.Client) -> None:
    from eskit.snapshots import drop_bucket

    assert await drop_bucket(client.js, unique("none")) is False


async def test_pipelined_requests_nobody_answers_time_out_in_the_time_given(client: eskit.Client) -> None:
    subject = unique("silent")
    sub = await client.nc.subscribe(subject)  # listens, never answers: no 503 either
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(eskit.StoreTimeoutError, match=r"within 0\.5s"):
            await client.wire.request_many([(subject, b"x", {"A": "1"}), (subject, b"y", None)], timeout=0.5)
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        await sub.unsubscribe()


async def test_a_projection_consumer_on_a_closed_connection_raises_an_eskit_error_not_nats_py_s(nats_url: str) -> None:
    from eskit.projections.consumer import PullConsumer

    own = await eskit.connect(nats_url)
    store = await own.event_store(unique("closed"))
    consumer = PullConsumer(own, store.stream, unique("view"), [f"{store.name}.>"])
    await own.delete_store(store.name)
    await own.close()
    with pytest.raises(eskit.EskitError) as caught:
        await consumer.flush()
    assert isinstance(caught.value.__cause__, nats.errors.Error) and "\n" not in str(caught.value)
