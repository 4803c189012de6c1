"""Validators added and removed by governance, over five real node processes.

The network runs the real channel rules. A sixth validator (``sixth-node``, run by the
bureau) is added to the service channel by a ``config_update`` approved by 3 of the 5
institutions: the rule marks it VALID (too few approvals: INVALID), the five nodes
dial the new validator at the address in the committed change — a stand-in HTTP
server there receives their signed frames carrying service-channel consensus
messages once the change is in effect — and accept frames signed by its key. After a
second ``config_update`` removes it and that takes effect, its frames are refused.

``test_joining_node_catches_up_and_commits`` (slow) starts a real node process
that is not in the genesis (``joining = true``), adds it by governance, sees it catch up
and commit, and proves it votes: with two genesis validators killed, blocks still
commit (3 + it = quorum 4 of 6) and their certificates carry its vote.

Plus unit tests of :mod:`node.membership` and :meth:`PeerTransport.update_peers`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from ledger.crypto import Ed25519Signer
from ledger.governance import (
    CONFIG_ACTIVATION_DELAY,
    AddValidator,
    ChannelGovernance,
    ConfigUpdate,
    RemoveValidator,
    approve,
)
from ledger.identity import NodeInfo
from node.membership import current_peers
from node.metrics import NodeMetrics
from node.peers import (
    FRAME_CONTENT_TYPE,
    FRAME_PATH,
    LENGTH_PREFIX,
    STREAM_PATH,
    FrameAuth,
    PeerTransport,
)
from tests.node.netfixture import TestNetwork, start_network

pytestmark = pytest.mark.xdist_group("governance-network")

CH = "service"
APPROVERS = ("bureau", "court", "risk_centre")
SIXTH = "sixth-node"


class _Sink(BaseHTTPRequestHandler):
    """A stand-in for the sixth node: records the frames streamed (or POSTed) to it."""

    frames: list[bytes]

    def do_POST(self) -> None:
        if self.path == STREAM_PATH:
            self._read_stream()
        else:
            n = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(n)
            if self.path == FRAME_PATH:
                type(self).frames.append(body)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def _read_stream(self) -> None:
        """Record each length-prefixed frame of a chunked stream as it completes."""
        buf = b""
        while True:
            line = self.rfile.readline()
            if not line:
                return  # the sender hung up
            size = int(line.split(b";")[0], 16)
            chunk = self.rfile.read(size)
            self.rfile.readline()  # CRLF after the chunk
            if size == 0:
                return
            buf += chunk
            while len(buf) >= LENGTH_PREFIX:
                n = int.from_bytes(buf[:LENGTH_PREFIX], "big")
                if len(buf) < LENGTH_PREFIX + n:
                    break
                type(self).frames.append(buf[LENGTH_PREFIX : LENGTH_PREFIX + n])
                buf = buf[LENGTH_PREFIX + n :]

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNetwork]:
    network = start_network(tmp_path_factory.mktemp("govnet"), rules="channels")
    try:
        yield network
    finally:
        network.stop()


def _update(net: TestNetwork, change: Any, eff: int, orgs: tuple[str, ...]) -> ConfigUpdate:
    approvals = tuple(approve(o, net.signer_of(o), net.genesis.hash, CH, change, eff) for o in orgs)
    return ConfigUpdate(change, eff, approvals)


def _commit(net: TestNetwork, update: ConfigUpdate, i: int = 0) -> dict[str, Any]:
    c = net.client(i, "bureau")
    r = c.submit(CH, c.tx(CH, "config_update", update.to_payload()), wait_ms=30_000)
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    assert doc["status"] == "committed", doc
    return doc


def _schedule(net: TestNetwork, change: Any) -> tuple[int, int]:
    """Commit ``change`` with the earliest effective height the rules accept (retrying
    if the block landed later than hoped). Returns ``(commit height, eff)``."""
    for _ in range(5):
        h = net.client(0, "bureau").height(CH)
        eff = h + 2 + CONFIG_ACTIVATION_DELAY
        doc = _commit(net, _update(net, change, eff, APPROVERS))
        if doc["outcome"]["valid"]:
            assert doc["outcome"]["result"] == {"kind": change.kind, "effective_height": eff}
            return int(doc["height"]), eff
        assert doc["outcome"]["code"] == "governance_too_early", doc
    raise AssertionError("could not schedule the change")


def _advance_to(net: TestNetwork, height: int) -> None:
    """Make blocks on CH until every node has committed ``height``: each refused
    config_update (one approval) is a block with one INVALID transaction."""
    stray = RemoveValidator("no-such-node")
    while net.client(0, "bureau").height(CH) < height:
        doc = _commit(net, _update(net, stray, 10**9, ("bureau",)))
        assert doc["outcome"]["code"] == "governance_too_few", doc
    net.wait_heights(CH, height, timeout_s=90)


def _post_frame(net: TestNetwork, i: int, signer: Ed25519Signer) -> httpx.Response:
    seq = (time.time_ns() // 1000) << 8
    keys = {n.node_id: n.public_key for n in net.genesis.nodes}
    auth = FrameAuth(signer, SIXTH, net.genesis.hash, lambda: keys)
    frame = auth.seal(net.nodes[i].node_id, seq, [])
    with httpx.Client(timeout=10.0) as http:
        return http.post(
            net.nodes[i].url + FRAME_PATH,
            content=frame,
            headers={"content-type": FRAME_CONTENT_TYPE},
        )


@pytest.mark.network
def test_validator_added_then_removed_by_governance(net: TestNetwork) -> None:
    sixth = Ed25519Signer.generate()
    _Sink.frames = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        address = f"http://127.0.0.1:{server.server_address[1]}"
        info = NodeInfo(SIXTH, "bureau", sixth.public_key, address)
        # not a genesis node: its frames are refused
        r = _post_frame(net, 0, sixth)
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_frame", r.text
        # two approvals are not enough: committed INVALID, nothing changes
        h = net.client(0, "bureau").height(CH)
        doc = _commit(net, _update(net, AddValidator(info), h + 30, APPROVERS[:2]))
        assert not doc["outcome"]["valid"]
        assert doc["outcome"]["code"] == "governance_too_few", doc

        _, eff = _schedule(net, AddValidator(info))
        # every node now dials it and accepts its frames (before eff: it is scheduled)
        deadline = time.monotonic() + 30
        while True:
            codes = [_post_frame(net, i, sixth).status_code for i in range(5)]
            if codes == [200] * 5:
                break
            assert time.monotonic() < deadline, codes
            time.sleep(0.3)
        _advance_to(net, eff + 1)
        # once in effect, the others send it service-channel consensus messages
        deadline = time.monotonic() + 60
        senders: set[str] = set()
        while len(senders) < 4:
            for raw in list(_Sink.frames):
                keys = {n.node_id: n.public_key for n in net.genesis.nodes}
                frame = FrameAuth(sixth, SIXTH, net.genesis.hash, lambda k=keys: k).open(raw)
                if any(ch == CH for ch, _ in frame.msgs):
                    senders.add(frame.sender)
            if len(senders) >= 4:
                break
            assert time.monotonic() < deadline, senders
            time.sleep(0.5)
        info_doc = net.client(1, "bureau").get(f"/v1/channels/{CH}").json()
        assert SIXTH in str(info_doc["validators"]), info_doc
        # A restarted node rebuilds the validator set from its ledger: the blocks that
        # hold a config_update are found by their bytes, the others are skipped.
        net.kill(1)
        net.start([1])
        net.wait_healthy(indexes=[1])
        info_doc = net.client(1, "bureau").get(f"/v1/channels/{CH}").json()
        assert SIXTH in str(info_doc["validators"]), info_doc
        # the five keep committing without it (n = 6, quorum 4)
        _advance_to(net, net.client(0, "bureau").height(CH) + 2)

        # removal: once in effect, its frames are refused again
        _, eff2 = _schedule(net, RemoveValidator(SIXTH))
        _advance_to(net, eff2 + 1)
        deadline = time.monotonic() + 30
        while True:
            codes = [_post_frame(net, i, sixth).status_code for i in range(5)]
            if codes == [400] * 5:
                break
            assert time.monotonic() < deadline, codes
            time.sleep(0.3)
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------- unit


def test_membership_follows_scheduled_changes(tmp_path: Any) -> None:
    from ledger.blocks import Transaction
    from ledger.genesis import make_local_genesis
    from ledger.keyfile import load_key_file
    from tests.test_governance import _block

    genesis = make_local_genesis(tmp_path)
    gov = ChannelGovernance(genesis, CH)
    me = genesis.nodes[0].node_id
    base = current_peers([(gov, 1)], genesis.nodes, me)
    assert set(base) == {n.node_id for n in genesis.nodes} - {me}
    sixth = Ed25519Signer.generate()
    info = NodeInfo(SIXTH, "bureau", sixth.public_key, "http://10.0.0.6:7006")
    eff = 1 + CONFIG_ACTIVATION_DELAY + 5
    change = AddValidator(info)
    approvals = tuple(
        approve(o, load_key_file(tmp_path / "keys" / f"{o}.key").signer, genesis.hash, CH,
                change, eff)
        for o in APPROVERS
    )  # fmt: skip
    bureau = load_key_file(tmp_path / "keys" / "bureau.key").signer
    tx = Transaction(
        network=genesis.hash, channel=CH, type="config_update", sender="bureau",
        public_key=bureau.public_key, nonce=1, time_ms=0,
        payload=ConfigUpdate(change, eff, approvals).to_payload(),
    ).signed(bureau)  # fmt: skip
    gov.observe_block(_block(1, [tx], channel=CH))
    # scheduled, but not yet within the activation window of the next height
    assert SIXTH not in current_peers([(gov, 2)], genesis.nodes, me)
    # within the window: dialled ahead of its effective height
    assert current_peers([(gov, eff - CONFIG_ACTIVATION_DELAY)], genesis.nodes, me)[SIXTH] == info
    assert SIXTH in current_peers([(gov, eff + 100)], genesis.nodes, me)


def test_transport_update_peers_opens_and_closes_links() -> None:
    async def main() -> None:
        signer = Ed25519Signer.generate()
        t = PeerTransport(
            auth=FrameAuth(signer, "a", b"\0" * 32, dict),
            peers={"a": "http://127.0.0.1:1", "b": "http://127.0.0.1:2"},
            metrics=NodeMetrics(), queue_limit=100, frame_max_bytes=1 << 20, flush_ms=1,
        )  # fmt: skip
        assert set(t.links) == {"b"}
        t.start()
        old_b = t.links["b"]
        await t.update_peers({"a": "x", "b": "http://127.0.0.1:2/", "c": "http://127.0.0.1:3"})
        assert set(t.links) == {"b", "c"} and t.links["b"] is old_b
        assert t.links["c"]._task is not None  # started, since the transport runs
        t.send(["c"], CH, b"m", "status", essential=False)
        assert t.links["c"].queued == 1
        await t.update_peers({"c": "http://127.0.0.1:33"})  # b removed, c moved
        assert set(t.links) == {"c"} and t.links["c"].address.endswith(":33")
        await t.close()

    asyncio.run(main())


def test_frame_from_unknown_sender_is_refused() -> None:
    signer = Ed25519Signer.generate()
    net_id = secrets.token_bytes(32)
    a = Ed25519Signer.generate()
    frame = FrameAuth(signer, SIXTH, net_id, lambda: {"a": a.public_key}).seal("a", 1, [])
    keys = {SIXTH: signer.public_key}
    assert FrameAuth(a, "a", net_id, lambda: keys).open(frame).sender == SIXTH
    with pytest.raises(Exception, match="unknown node"):
        FrameAuth(a, "a", net_id, dict).open(frame)


@pytest.mark.network
@pytest.mark.slow  # ~2-3 min on a loaded 2-core machine: `make soak`
def test_joining_node_catches_up_and_commits(net: TestNetwork, tmp_path: Any) -> None:
    """A real node process that is not in the genesis (``joining = true``) is added to
    the channel by governance: it catches up through the validators and then commits
    the channel's new blocks with them, agreeing on every hash."""
    import os
    import subprocess
    import sys

    from ledger.keyfile import write_key_file
    from node.commands.node_cmd import EXIT_WITH_PARENT_ENV
    from node.config import render_node_config
    from node.localnet import REPO_ROOT
    from tests.node.netfixture import FAST_CONSENSUS, Client, free_base_port

    node_id = "joining-node"
    signer = Ed25519Signer.generate()
    write_key_file(tmp_path / "node.key", node_id, signer)
    port = free_base_port(1)
    text = render_node_config(
        node_id=node_id, key_file="node.key", genesis_file=str(net.data_dir / "genesis.json"),
        data_dir=".", host="127.0.0.1", port=port, rules="channels", consensus=FAST_CONSENSUS,
    )  # fmt: skip
    (tmp_path / "node.toml").write_text("joining = true\n" + text)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), EXIT_WITH_PARENT_ENV: str(os.getpid())}
    log = open(tmp_path / "node.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.commands.node_cmd", "--config", str(tmp_path / "node.toml")],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        me = Client(url, net.genesis.hash, "bureau", net.signer_of("bureau"))
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "node.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "joining node did not start"
            time.sleep(0.3)
        info = NodeInfo(node_id, "bureau", signer.public_key, url)
        _, eff = _schedule(net, AddValidator(info))
        _advance_to(net, eff + 2)
        # it catches up through the validators (every block's certificate checked)
        target = eff + 2
        deadline = time.monotonic() + 120
        while me.height(CH) < target:
            assert proc.poll() is None, (tmp_path / "node.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (me.height(CH), target)
            time.sleep(0.5)
        # and commits new blocks with them
        _advance_to(net, target + 3)
        deadline = time.monotonic() + 90
        while me.height(CH) < target + 3:
            assert time.monotonic() < deadline, (me.height(CH), target + 3)
            time.sleep(0.3)
        for h in (eff, target + 3):
            ours = me.block(CH, h)["hash"]["$hex"]
            assert ours == net.client(0, "bureau").block(CH, h)["hash"]["$hex"], h
        status = me.get(f"/v1/channels/{CH}").json()
        assert node_id in str(status["validators"]), status

        # It votes: with two of the five down, 3 + the joining node = quorum 4 of 6.
        net.kill(3)
        net.kill(4)
        try:
            live = [0, 1, 2]
            start = net.client(0, "bureau").height(CH)
            stray = RemoveValidator("no-such-node")
            deadline = time.monotonic() + 180
            while min(net.heights(CH, indexes=live)) <= start:
                c = net.client(0, "bureau")
                upd = _update(net, stray, 10**9, ("bureau",))
                c.submit(CH, c.tx(CH, "config_update", upd.to_payload()), wait_ms=5_000)
                assert time.monotonic() < deadline, net.heights(CH, indexes=live)
            cert = net.client(0, "bureau").block(CH, start + 1)["certificate"]
            assert node_id in json.dumps(cert), cert
        finally:
            net.start([3, 4])
            net.wait_healthy(indexes=[3, 4], timeout_s=90)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
