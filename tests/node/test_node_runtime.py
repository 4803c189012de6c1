"""Node startup checks and the HTTP surface, in process (no consensus running)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from consensus.messages import Status, encode_message, sign
from ledger.crypto import Signer
from ledger.encoding import decode
from ledger.errors import ConfigError
from ledger.genesis import make_local_genesis
from ledger.keyfile import load_key_file
from ledger.store import BlockStore
from node.api import create_asgi
from node.config import load_node_config, render_node_config
from node.localnet import REPO_ROOT
from node.peers import (
    FRAME_PATH,
    LENGTH_PREFIX,
    MAX_FRAME_BYTES,
    STREAM_CONTENT_TYPE,
    STREAM_PATH,
    FrameAuth,
)
from node.runtime import NodeRuntime


def seal(
    signer: Signer, sender: str, rt: NodeRuntime, seq: int, msgs: list[tuple[str, bytes]]
) -> bytes:
    """A frame from ``sender`` (made with ``signer``'s key) to the runtime's node."""
    auth = FrameAuth(signer, sender, rt.genesis.hash, lambda: rt.node_keys)
    return auth.seal(rt.config.node_id, seq, msgs)


def write_config(
    tmp: Path, node: str = "bureau-node", key: str | None = None, rules: str = "test"
) -> Path:
    net = tmp / "net"
    make_local_genesis(net, base_port=17001)
    d = tmp / node
    d.mkdir(exist_ok=True)
    cfg = d / "node.toml"
    cfg.write_text(
        render_node_config(
            node_id=node,
            key_file=str(net / "keys" / f"{key or node}.key"),
            genesis_file=str(net / "genesis.json"),
            data_dir=".",
            host="127.0.0.1",
            port=17001,
            rules=rules,
        )
    )
    return cfg


def test_runtime_opens_and_refuses_wrong_identity(tmp_path: Path) -> None:
    cfg = load_node_config(write_config(tmp_path))
    rt = NodeRuntime.open(cfg)
    assert set(rt.channels) == {"supervision", "judicial", "risk", "credit", "service"}
    assert all(s.is_validator and s.replica is not None for s in rt.channels.values())
    rt.store.close()
    # another node's key
    bad = load_node_config(write_config(tmp_path, key="court-node"))
    with pytest.raises(ConfigError, match="not the genesis key of node 'bureau-node'"):
        NodeRuntime.open(bad)
    # a node id the genesis does not know
    unknown = load_node_config(write_config(tmp_path, node="mallory-node", key="court-node"))
    with pytest.raises(ConfigError, match="not in the genesis"):
        NodeRuntime.open(unknown)


def test_the_ledger_is_opened_with_the_configured_table_and_buffer_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from node.config import Limits

    seen: list[object] = []
    real_open = BlockStore.open

    def recording_open(*args: object, **kw: object) -> BlockStore:
        seen.append((kw.get("open_tables"), kw.get("write_buffer_bytes"), kw.get("compression")))
        return real_open(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(BlockStore, "open", recording_open)
    cfg = load_node_config(write_config(tmp_path))
    limits = Limits(ledger_open_tables=200, ledger_write_buffer_mb=8, ledger_compression="snappy")
    cfg = dataclasses.replace(cfg, limits=limits)
    NodeRuntime.open(cfg).store.close()
    assert seen == [(200, 8 << 20, "snappy")]


def test_store_of_another_genesis_is_refused(tmp_path: Path) -> None:
    cfg = load_node_config(write_config(tmp_path))
    with BlockStore.open(cfg.ledger_dir, b"\x01" * 32, create=True):
        pass
    with pytest.raises(ConfigError, match="genesis"):
        NodeRuntime.open(cfg)


def test_cli_exits_1_with_one_line_for_a_loose_key(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    os.chmod(tmp_path / "net" / "keys" / "bureau-node.key", 0o644)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    r = subprocess.run(
        [sys.executable, "-m", "node.commands.node_cmd", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "0644" in lines[0] and lines[0].startswith("wulian: error:")


def test_peer_stream_delivers_frames_as_they_arrive_until_one_is_refused(
    tmp_path: Path,
) -> None:
    cfg = load_node_config(write_config(tmp_path))
    rt = NodeRuntime.open(cfg)
    court = load_key_file(tmp_path / "net" / "keys" / "court-node.key").signer
    risk = load_key_file(tmp_path / "net" / "keys" / "risk_centre-node.key").signer
    svc = rt.channels["supervision"]
    msg = encode_message(sign(Status("supervision", "court-node", 0, True, 0, b"\x00" * 32), court))

    def framed(frame: bytes) -> bytes:
        return len(frame).to_bytes(LENGTH_PREFIX, "big") + frame

    def queued() -> int:
        return len(svc._inbox) + len(svc._urgent)

    async def body(*chunks: bytes) -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def main() -> None:
        transport = httpx.ASGITransport(app=create_asgi(rt))
        h = {"content-type": STREAM_CONTENT_TYPE}
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as c:
            one = framed(seal(court, "court-node", rt, 10, [("supervision", msg)]))
            two = framed(seal(court, "court-node", rt, 11, [("supervision", msg)]))
            # frames split across chunks and several in one chunk are all read
            r = await c.post(STREAM_PATH, content=body(one[:3], one[3:] + two), headers=h)
            assert r.status_code == 200, r.text
            assert decode(r.content) == {"ok": True, "frames": 2}
            assert queued() == 2
            # a forged frame ends the stream; the frames before it were delivered
            three = framed(seal(court, "court-node", rt, 12, [("supervision", msg)]))
            forged = framed(seal(risk, "court-node", rt, 13, [("supervision", msg)]))
            four = framed(seal(court, "court-node", rt, 14, [("supervision", msg)]))
            r = await c.post(STREAM_PATH, content=body(three, forged, four), headers=h)
            assert r.status_code == 401 and r.json()["error"]["code"] == "bad_frame"
            assert "frame 2" in r.json()["error"]["message"]
            assert queued() == 3
            # a replayed frame is skipped, not refused
            r = await c.post(STREAM_PATH, content=body(three), headers=h)
            assert r.status_code == 200 and queued() == 3
            r = await c.post(STREAM_PATH, content=body(four[:-1]), headers=h)
            assert r.status_code == 400 and "inside a frame" in r.json()["error"]["message"]
            too_big = (MAX_FRAME_BYTES + 1).to_bytes(LENGTH_PREFIX, "big")
            r = await c.post(STREAM_PATH, content=body(too_big), headers=h)
            assert r.status_code == 413
            r = await c.post(STREAM_PATH, content=body(four), headers={"content-type": "x/y"})
            assert r.status_code == 415
            assert queued() == 3

    try:
        asyncio.run(main())
    finally:
        rt.store.close()


def test_peer_frames_are_authenticated_before_delivery(tmp_path: Path) -> None:
    cfg = load_node_config(write_config(tmp_path))
    rt = NodeRuntime.open(cfg)
    court = load_key_file(tmp_path / "net" / "keys" / "court-node.key").signer
    risk = load_key_file(tmp_path / "net" / "keys" / "risk_centre-node.key").signer
    svc = rt.channels["supervision"]

    status = sign(Status("supervision", "court-node", 0, True, 0, b"\x00" * 32), court)
    msg = encode_message(status)
    heard: list[str] = []  # an authentic frame tells the link to that peer it is up
    rt.transport.heard_from = heard.append  # type: ignore[method-assign]

    async def main() -> None:
        transport = httpx.ASGITransport(app=create_asgi(rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as c:
            h = {"content-type": "application/msgpack"}
            good = seal(
                court,
                "court-node",
                rt,
                5,
                [("supervision", msg), ("nope", msg), ("supervision", b"junk")],
            )
            r = await c.post(FRAME_PATH, content=good, headers=h)
            assert r.status_code == 200, r.text
            assert decode(r.content) == {"ok": True, "delivered": 1, "duplicate": False}
            assert len(svc._inbox) + len(svc._urgent) == 1
            r = await c.post(FRAME_PATH, content=good, headers=h)  # replay
            assert decode(r.content)["duplicate"] is True
            assert len(svc._inbox) + len(svc._urgent) == 1
            forged = seal(risk, "court-node", rt, 6, [("supervision", b"z")])
            r = await c.post(FRAME_PATH, content=forged, headers=h)
            assert r.status_code == 401 and r.json()["error"]["code"] == "bad_frame"
            r = await c.post(FRAME_PATH, content=b"\xc1", headers=h)
            assert r.status_code == 400
            r = await c.post(FRAME_PATH, content=good, headers={"content-type": "text/plain"})
            assert r.status_code == 415
            assert len(svc._inbox) + len(svc._urgent) == 1
            assert heard == ["court-node"], "neither the replay nor the forgery counts"
            text = (await c.get("/metrics")).text
            assert 'wulian_peer_rejected_frames_total{reason="signature"} 1' in text
            assert 'wulian_peer_rejected_frames_total{reason="replayed"} 1' in text
            assert (await c.get("/healthz")).json()["status"] == "ok"
            r = await c.get("/v1/channels/supervision")
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"

    try:
        asyncio.run(main())
    finally:
        rt.store.close()


def test_a_refused_stream_is_closed_so_the_sender_learns_of_it(tmp_path: Path) -> None:
    """Over a real socket: the node answers the first refused frame of a stream and
    closes the connection (it would otherwise read and discard every later frame while
    the sender believed them delivered); the sender's link sees the stream break, sends
    the frame it was writing on its own, and learns of the refusal from that answer."""
    import threading

    import uvicorn

    from node.localnet import free_base_port
    from node.metrics import NodeMetrics
    from node.peers import PeerLink

    cfg = load_node_config(write_config(tmp_path))
    rt = NodeRuntime.open(cfg)
    court = load_key_file(tmp_path / "net" / "keys" / "court-node.key").signer
    port = free_base_port(1)
    server = uvicorn.Server(
        uvicorn.Config(create_asgi(rt), host="127.0.0.1", port=port, lifespan="off",
                       log_level="warning")
    )  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    async def main() -> float:
        for _ in range(100):
            if server.started:
                break
            await asyncio.sleep(0.05)
        metrics = NodeMetrics()
        keys = {"bureau-node": rt.node_keys["bureau-node"]}
        # another network: every frame is refused
        auth = FrameAuth(court, "court-node", b"\x07" * 32, lambda: keys)
        link = PeerLink(
            peer_id="bureau-node", address=f"http://127.0.0.1:{port}", auth=auth,
            metrics=metrics, queue_limit=100, frame_max_bytes=1 << 20, flush_ms=1, seq_start=1,
        )  # fmt: skip
        link.start()
        refused = 0.0
        for _ in range(100):  # traffic keeps flowing, as STATUS would
            link.enqueue("supervision", b"status", "status", False)
            await asyncio.sleep(0.05)
            refused = metrics.dropped_outbound.value("bureau-node", "refused")
            if refused:
                break
        await link.close()
        return refused

    try:
        refused = asyncio.run(main())
        assert refused >= 1
        assert rt.metrics.rejected_frames.value("network") >= 2
        assert rt.metrics.rejected_frames.value("network") >= 1
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        rt.store.close()


def test_the_first_peer_refresh_logs_no_change_of_peers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from node.membership import refresh

    async def refresh_once(rt: NodeRuntime) -> None:
        try:
            await refresh(rt)
        finally:
            await rt.transport.close()

    rt = NodeRuntime.open(load_node_config(write_config(tmp_path)))
    try:
        assert "bureau-node" in rt.node_keys  # the genesis keys, its own among them
        with caplog.at_level(logging.INFO, logger="wulian.peers"):
            asyncio.run(refresh_once(rt))
        assert "bureau-node" not in rt.node_keys and len(rt.node_keys) == 4
        assert not [r for r in caplog.records if "peers changed" in r.getMessage()]
    finally:
        rt.store.close()


def test_a_node_behind_on_the_judicial_channel_does_not_relay_anchors(
    tmp_path: Path,
) -> None:
    """Its view of the judicial chain's anchor progress is stale: what it would send is
    duplicates of anchors the chain already holds (node/relays.py ``MAX_BEHIND``)."""
    from node.relays import MAX_BEHIND

    rt = NodeRuntime.open(load_node_config(write_config(tmp_path, rules="channels")))
    try:
        relays = rt.relays
        assert relays is not None
        steps: list[int] = []
        relays.anchor.step = lambda now: steps.append(now) or []  # type: ignore[method-assign]
        # anchors due (a fresh chain has none to send; the wait is not what this tests)
        relays._anchor_needed = lambda now: True  # type: ignore[method-assign]
        asyncio.run(relays.step())
        assert len(steps) == 1  # level, and its turn (rank 0 at height 0): it relays
        replica = rt.channels["judicial"].replica
        assert replica is not None

        def status(peer: str, height: int) -> None:
            signer = load_key_file(tmp_path / "net" / "keys" / f"{peer}.key").signer
            replica.step(sign(Status("judicial", peer, 0, True, height, b"\x01" * 32), signer))

        status("court-node", MAX_BEHIND + 1)
        status("risk_centre-node", MAX_BEHIND)
        assert replica.behind_by == MAX_BEHIND  # the (f+1)-th claim: not too far yet
        asyncio.run(relays.step())
        assert len(steps) == 2
        status("credit_agency-node", 50)
        assert replica.behind_by == MAX_BEHIND + 1
        asyncio.run(relays.step())
        assert len(steps) == 2, "behind: it leaves the anchors to the others"
    finally:
        rt.store.close()


def test_the_relays_step_again_as_soon_as_the_judicial_channel_commits(
    tmp_path: Path,
) -> None:
    """A judicial commit means anchors landed: the next window goes at once, not on the
    relay's timer (only the fallback) — also when the commit came during the step."""
    rt = NodeRuntime.open(load_node_config(write_config(tmp_path, rules="channels")))
    try:
        relays = rt.relays
        assert relays is not None

        class Judicial:  # the judicial driver as the relays see it: height, wait_block
            replica = rt.channels["judicial"].replica
            failed = None
            height = 0

            def __init__(self) -> None:
                self.committed = asyncio.Event()

            async def wait_block(self, after_height: int, timeout_s: float) -> None:
                if self.height <= after_height:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.committed.wait(), timeout_s)
                    self.committed.clear()

        async def main() -> None:
            judicial = Judicial()
            relays.channels = {**relays.channels, "judicial": judicial}  # type: ignore[dict-item]
            steps = 0

            async def step() -> int:
                nonlocal steps
                steps += 1
                if steps == 2:
                    judicial.height = 2  # a block commits while this step runs
                return 0

            relays.step = step  # type: ignore[method-assign]
            task = asyncio.get_running_loop().create_task(relays.run(interval_s=30.0))
            await asyncio.sleep(0.1)
            assert steps == 1  # waiting on the 30 s timer or a commit
            judicial.height = 1
            judicial.committed.set()
            await asyncio.sleep(0.1)
            assert steps == 3, "stepped at once on the commit, and again for the one during it"
            await asyncio.sleep(0.1)
            assert steps == 3  # then waits again
            task.cancel()

        asyncio.run(main())
    finally:
        rt.store.close()
