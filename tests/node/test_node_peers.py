"""Peer frames: authentication before anything reaches consensus; bounded queues."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ledger.crypto import Ed25519Signer
from ledger.encoding import decode, encode
from ledger.hashing import sha256
from node import peers
from node.metrics import NodeMetrics
from node.peers import (
    FRAME_MAGIC,
    FRAME_PATH,
    LENGTH_PREFIX,
    MAC_BYTES,
    STREAM_CONTENT_TYPE,
    STREAM_PATH,
    FrameAuth,
    FrameError,
    PeerLink,
    SeqTracker,
)

NET = sha256(b"net")
A = Ed25519Signer(sha256(b"a"))
B = Ed25519Signer(sha256(b"b"))
KEYS = {"a-node": A.public_key, "b-node": B.public_key}
MSGS = [("supervision", b"\x01\x02"), ("judicial", b"\x03")]
AUTH_A = FrameAuth(A, "a-node", NET, lambda: KEYS)
AUTH_B = FrameAuth(B, "b-node", NET, lambda: KEYS)
HEAD = len(FRAME_MAGIC) + MAC_BYTES


def _rebody(data: bytes, **changes: Any) -> bytes:
    """The frame with its body changed and its MAC left as it was."""
    return data[:HEAD] + encode({**decode(data[HEAD:]), **changes})


def test_frame_round_trip() -> None:
    data = AUTH_A.seal("b-node", 7, MSGS)
    frame = AUTH_B.open(data)
    assert (frame.sender, frame.seq, list(frame.msgs)) == ("a-node", 7, MSGS)
    assert data[:1] == FRAME_MAGIC


def test_both_ends_of_a_link_agree_on_its_key_and_directions_differ() -> None:
    a_to_b = AUTH_A._key("a-node", "b-node", B.public_key)
    assert a_to_b == AUTH_B._key("a-node", "b-node", A.public_key)
    assert a_to_b != AUTH_A._key("b-node", "a-node", B.public_key)
    other_net = FrameAuth(A, "a-node", sha256(b"other"), lambda: KEYS)
    assert other_net._key("a-node", "b-node", B.public_key) != a_to_b


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d + b"\x00", "encoding"),
        (lambda d: d[HEAD:], "encoding"),  # a version 1 frame (no magic byte, no MAC)
        (lambda d: d[: HEAD - 1], "encoding"),
        (lambda d: _rebody(d, extra=1), "schema"),
        (lambda d: _rebody(d, v=1), "schema"),
        (lambda d: _rebody(d, msgs=[["ch", "not bytes"]]), "schema"),
        (lambda d: _rebody(d, net=sha256(b"other")), "network"),
        (lambda d: _rebody(d, **{"from": "mallory"}), "unknown_sender"),
        (lambda d: _rebody(d, to="c-node"), "unknown_sender"),
        (lambda d: _rebody(d, seq=8), "signature"),
        (lambda d: d[:1] + bytes(MAC_BYTES) + d[HEAD:], "signature"),
    ],
)
def test_tampered_frames_are_refused_with_a_reason(
    mutate: Callable[[bytes], bytes], reason: str
) -> None:
    data = AUTH_A.seal("b-node", 7, MSGS)
    with pytest.raises(FrameError) as err:
        AUTH_B.open(mutate(data))
    assert err.value.reason == reason


def test_frame_made_with_another_node_key_is_refused() -> None:
    # b makes a frame claiming to be from a (to itself, or to c, who shares a's key
    # with b): the MAC is under a key only a and the receiver hold
    c = Ed25519Signer(sha256(b"c"))
    keys = {**KEYS, "c-node": c.public_key}
    forged = FrameAuth(B, "a-node", NET, lambda: keys).seal("c-node", 1, MSGS)
    with pytest.raises(FrameError) as err:
        FrameAuth(c, "c-node", NET, lambda: keys).open(forged)
    assert err.value.reason == "signature"
    own = FrameAuth(B, "a-node", NET, lambda: KEYS).seal("b-node", 1, MSGS)
    with pytest.raises(FrameError):  # our own key, another's name: the MAC is wrong
        AUTH_B.open(own)
    # a frame for a, replayed to b: refused (addressed to a, and under a's key)
    to_c = FrameAuth(A, "a-node", NET, lambda: keys).seal("c-node", 1, MSGS)
    with pytest.raises(FrameError):
        AUTH_B.open(to_c)


def test_a_peer_with_no_key_gets_no_frame() -> None:
    with pytest.raises(FrameError) as err:
        AUTH_A.seal("mallory", 1, MSGS)
    assert err.value.reason == "unknown_peer"


def test_seq_tracker_refuses_replays() -> None:
    t = SeqTracker()
    assert t.accept("a", 5) and t.accept("a", 6) and t.accept("b", 1)
    assert not t.accept("a", 6) and not t.accept("a", 2)


class _StreamingMock(httpx.AsyncBaseTransport):
    """Like ``httpx.MockTransport`` but hands the handler the request with its body
    unread (a peer stream never ends; MockTransport reads the whole body first)."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = self.handler(request)
        if not isinstance(response, httpx.Response):
            response = await response
        assert isinstance(response, httpx.Response)
        return response


def make_link(
    handler: object, queue_limit: int = 4, frame_max: int = 1 << 20
) -> tuple[PeerLink, NodeMetrics]:
    metrics = NodeMetrics()
    client = httpx.AsyncClient(base_url="http://peer", transport=_StreamingMock(handler))
    link = PeerLink(
        peer_id="b-node", address="http://peer", auth=AUTH_A,
        metrics=metrics, queue_limit=queue_limit, frame_max_bytes=frame_max, flush_ms=1,
        seq_start=100, client=client,
    )  # fmt: skip
    return link, metrics


def test_full_queue_drops_oldest_non_essential_first() -> None:
    async def main() -> None:
        link, metrics = make_link(lambda r: httpx.Response(200))
        link.enqueue("ch", b"vote1", "commit", True)
        link.enqueue("ch", b"status1", "status", False)
        link.enqueue("ch", b"vote2", "commit", True)
        link.enqueue("ch", b"status2", "status", False)
        link.enqueue("ch", b"vote3", "commit", True)  # full: drops status1
        link.enqueue("ch", b"vote4", "commit", True)  # drops status2
        link.enqueue("ch", b"vote5", "commit", True)  # only essentials left: drops vote1
        assert [i.payload for i in link._queue] == [b"vote2", b"vote3", b"vote4", b"vote5"]
        assert metrics.dropped_outbound.value("b-node", "status") == 2
        assert metrics.dropped_outbound.value("b-node", "commit") == 1
        await link.close()

    asyncio.run(main())


def _split_frames(data: bytes) -> list[bytes]:
    frames = []
    while data:
        n = int.from_bytes(data[:LENGTH_PREFIX], "big")
        frames.append(data[LENGTH_PREFIX : LENGTH_PREFIX + n])
        data = data[LENGTH_PREFIX + n :]
    return frames


async def _read_frames(request: httpx.Request, count: int) -> list[bytes]:
    """Read ``count`` length-prefixed frames from a streaming body, then ask for one
    more chunk (as a real transport does after each write: that is how the link
    learns the last frame was written) and give up on it after a moment."""
    buf = b""
    assert isinstance(request.stream, httpx.AsyncByteStream)
    stream = aiter(request.stream)
    while len(_split_frames(buf)) < count or not _whole(buf):
        buf += await anext(stream)
    with contextlib.suppress(TimeoutError, StopAsyncIteration):
        buf += await asyncio.wait_for(anext(stream), 0.2)
    return _split_frames(buf)


def _whole(buf: bytes) -> bool:
    frames = _split_frames(buf)
    return sum(len(f) + LENGTH_PREFIX for f in frames) == len(buf)


def test_link_batches_and_reconnects_until_the_peer_answers() -> None:
    received: list[bytes] = []
    calls = {"n": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        assert request.url.path == STREAM_PATH
        assert request.headers["content-type"] == STREAM_CONTENT_TYPE
        if calls["n"] <= 2:
            raise httpx.ConnectError("down")
        received.extend(await _read_frames(request, 1))
        return httpx.Response(200)

    async def main() -> None:
        link, metrics = make_link(handler, queue_limit=100)
        assert not link.broken, "a link not tried yet is not reported unreachable"
        link.start()
        for i in range(10):
            link.enqueue("ch", bytes([i]), "prepare", True)
        seen_broken = False
        for _ in range(300):
            await asyncio.sleep(0.01)
            seen_broken = seen_broken or link.broken
            if received and link.up:
                break
        await link.close()
        assert seen_broken, "refused connections mark the link broken (replicas are told)"
        assert not link.broken
        assert len(received) == 1, "ten messages travel in one frame"
        frame = AUTH_B.open(received[0])
        assert [m for _, m in frame.msgs] == [bytes([i]) for i in range(10)]
        assert frame.seq == 101
        assert metrics.frame_errors.value("b-node") == 2
        assert metrics.frames_sent.value("b-node") == 1
        assert link.up

    asyncio.run(main())


async def _until(cond: Callable[[], bool], seconds: float = 3.0) -> None:
    """Poll ``cond`` every 10 ms for at most ``seconds`` (the asserts after it say
    what was expected)."""
    for _ in range(int(seconds * 100)):
        if cond():
            return
        await asyncio.sleep(0.01)


def test_frame_cut_off_by_a_broken_stream_is_sent_alone_with_its_seq() -> None:
    seen: list[tuple[str, list[int]]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == FRAME_PATH:  # a single frame, body in full
            seen.append(("single", [AUTH_B.open(await request.aread()).seq]))
            return httpx.Response(200)
        assert isinstance(request.stream, httpx.AsyncByteStream)
        if not seen:
            seen.append(("stream", []))
            await anext(aiter(request.stream))  # the first frame is taken, then a reset
            raise httpx.WriteError("connection reset")
        frames = await _read_frames(request, 1)
        seen.append(("stream", [AUTH_B.open(f).seq for f in frames]))
        return httpx.Response(200)

    async def main() -> None:
        link, metrics = make_link(handler, queue_limit=100)
        link.start()
        link.enqueue("ch", b"first", "prepare", True)
        await _until(lambda: len(seen) > 1)
        link.enqueue("ch", b"second", "prepare", True)
        await _until(lambda: len(seen) > 2)
        await link.close()
        # the frame cut off goes again, alone, with the seq it had; then streams resume
        assert seen == [("stream", []), ("single", [101]), ("stream", [102])]
        assert metrics.frame_errors.value("b-node") == 1
        assert metrics.frames_sent.value("b-node") == 2

    asyncio.run(main())


def test_refused_frame_is_dropped_not_retried() -> None:
    calls = {"n": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        assert isinstance(request.stream, httpx.AsyncByteStream)
        await anext(aiter(request.stream))
        if calls["n"] == 1:
            return httpx.Response(400, json={"error": {"code": "bad_frame", "message": "no"}})
        return httpx.Response(200)

    async def main() -> None:
        link, metrics = make_link(handler, queue_limit=100)
        link.start()
        link.enqueue("ch", b"refused", "prepare", True)
        await _until(lambda: calls["n"] > 0, seconds=1.0)
        await asyncio.sleep(0.2)
        await link.close()
        assert calls["n"] == 1, "nothing left to send: no second stream"
        assert metrics.dropped_outbound.value("b-node", "refused") == 1
        assert link.last_error == "refused 400"

    asyncio.run(main())


def test_fast_message_decoder_matches_the_strict_one() -> None:
    from consensus.messages import Forward, encode_message, sign
    from ledger.blocks import Transaction
    from ledger.errors import EncodingError
    from node.consensus_port import decode_message, decode_message_strict

    txs = tuple(
        Transaction(
            NET, "supervision", "loan_event", "l1", A.public_key, i, 5, {"k": str(i)}
        ).signed(A)
        for i in range(3)
    )
    msg = sign(Forward("supervision", "a-node", txs), A)
    data = encode_message(msg)
    assert decode_message(data) == decode_message_strict(data) == msg
    import msgpack

    with_float = msgpack.packb({**decode(data), "txs": [{"p": {"x": 1.5}}]})
    with pytest.raises(EncodingError):
        decode_message(with_float)
    with pytest.raises(EncodingError):
        decode_message(b"\xc1")


def test_stale_messages_expire_unsent(monkeypatch: pytest.MonkeyPatch) -> None:
    import node.peers as peers

    async def main() -> None:
        link, metrics = make_link(lambda r: httpx.Response(200), queue_limit=10)
        link.enqueue("ch", b"old", "prepare", True)
        link._queue[0].enqueued -= peers.MESSAGE_TTL_S + 1
        link.enqueue("ch", b"new", "prepare", True)
        assert link._take_frame() == [("ch", b"new")]
        assert metrics.dropped_outbound.value("b-node", "expired") == 1
        assert link._essential_count == 0
        await link.close()

    asyncio.run(main())


def test_urgent_messages_leave_first_and_are_dropped_last() -> None:
    async def main() -> None:
        link, metrics = make_link(lambda r: httpx.Response(200), queue_limit=3)
        link.enqueue("ch", b"fwd1", "forward", False)
        link.enqueue("ch", b"vote", "prepare", True, urgent=True)
        link.enqueue("ch", b"fwd2", "forward", False)
        link.enqueue("ch", b"vote2", "commit", True, urgent=True)  # full: drops fwd1
        assert metrics.dropped_outbound.value("b-node", "forward") == 1
        assert link._take_frame() == [("ch", b"vote"), ("ch", b"vote2"), ("ch", b"fwd2")]
        await link.close()

    asyncio.run(main())


def _down_then_up(attempts: list[float], up: dict[str, bool]) -> Callable[..., Any]:
    """A peer that refuses connections until ``up["now"]``, then takes one frame."""

    async def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(asyncio.get_running_loop().time())
        if not up["now"]:
            raise httpx.ConnectError("down")
        await _read_frames(request, 1)
        return httpx.Response(200)

    return handler


def test_a_broken_link_reconnects_at_once_when_the_peer_is_heard_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The backoff after a failure is long (as after a peer was down for minutes); the
    # peer comes back and sends us a frame: the link tries again without waiting it out.
    monkeypatch.setattr(peers, "BACKOFF_MIN_S", 30.0)
    attempts: list[float] = []
    up = {"now": False}

    async def main() -> None:
        link, _metrics = make_link(_down_then_up(attempts, up), queue_limit=100)
        link.start()
        link.enqueue("ch", b"status", "status", False)
        await _until(lambda: link.broken)
        assert link.broken and len(attempts) == 1
        up["now"] = True
        await asyncio.sleep(0.5)
        assert len(attempts) == 1, "without news of the peer the backoff runs its course"
        t = asyncio.get_running_loop().time()
        link.heard_from()
        await _until(lambda: link.up)
        took = asyncio.get_running_loop().time() - t
        await link.close()
        assert link.up and not link.broken
        assert len(attempts) == 2
        assert took < 2.0, f"reconnected {took:.2f} s after hearing from the peer"

    asyncio.run(main())


def test_hearing_from_an_unreachable_peer_is_rate_limited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Its frames reach us but our connections to it fail (a one-way firewall): each
    # frame it sends must not become a connection attempt.
    monkeypatch.setattr(peers, "BACKOFF_MIN_S", 30.0)
    attempts: list[float] = []

    async def main() -> None:
        link, _metrics = make_link(_down_then_up(attempts, {"now": False}), queue_limit=100)
        link.start()
        link.enqueue("ch", b"status", "status", False)
        await _until(lambda: link.broken)
        for _ in range(100):  # a frame from it every 10 ms for a second
            link.heard_from()
            await asyncio.sleep(0.01)
        await link.close()
        # the first attempt, then at most one per REVIVE_MIN_S of that second
        assert 2 <= len(attempts) <= 1 + int(1.0 / peers.REVIVE_MIN_S) + 1, attempts
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert min(gaps) >= peers.REVIVE_MIN_S * 0.9, gaps

    asyncio.run(main())


def test_hearing_from_a_healthy_peer_opens_nothing() -> None:
    calls = {"n": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        await _read_frames(request, 1)
        return httpx.Response(200)

    async def main() -> None:
        link, _metrics = make_link(handler, queue_limit=100)
        link.start()
        link.enqueue("ch", b"status", "status", False)
        await _until(lambda: link.up)
        for _ in range(20):
            link.heard_from()
        await asyncio.sleep(0.3)
        await link.close()
        assert link.up and calls["n"] == 1

    asyncio.run(main())
