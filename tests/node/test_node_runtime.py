"""Node startup checks and the HTTP surface, in process (no consensus running)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from consensus.messages import Status, encode_message, sign
from ledger.encoding import decode
from ledger.errors import ConfigError
from ledger.genesis import make_local_genesis
from ledger.keyfile import load_key_file
from ledger.store import BlockStore
from node.api import create_asgi
from node.config import load_node_config, render_node_config
from node.localnet import REPO_ROOT
from node.peers import FRAME_PATH, encode_frame
from node.runtime import NodeRuntime


def write_config(tmp: Path, node: str = "bureau-node", key: str | None = None) -> Path:
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
            rules="test",
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


def test_peer_frames_are_authenticated_before_delivery(tmp_path: Path) -> None:
    cfg = load_node_config(write_config(tmp_path))
    rt = NodeRuntime.open(cfg)
    court = load_key_file(tmp_path / "net" / "keys" / "court-node.key").signer
    risk = load_key_file(tmp_path / "net" / "keys" / "risk_centre-node.key").signer
    net = rt.genesis.hash
    svc = rt.channels["supervision"]

    status = sign(Status("supervision", "court-node", 0, True, 0, b"\x00" * 32), court)
    msg = encode_message(status)

    async def main() -> None:
        transport = httpx.ASGITransport(app=create_asgi(rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as c:
            h = {"content-type": "application/msgpack"}
            good = encode_frame(
                court,
                "court-node",
                net,
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
            forged = encode_frame(risk, "court-node", net, 6, [("supervision", b"z")])
            r = await c.post(FRAME_PATH, content=forged, headers=h)
            assert r.status_code == 401 and r.json()["error"]["code"] == "bad_frame"
            r = await c.post(FRAME_PATH, content=b"\xc1", headers=h)
            assert r.status_code == 400
            r = await c.post(FRAME_PATH, content=good, headers={"content-type": "text/plain"})
            assert r.status_code == 415
            assert len(svc._inbox) + len(svc._urgent) == 1
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
