"""A catch-up answer's signatures checked ahead on two threads (``verify_ahead``): the
good ones land in the node's memo, the bad ones do not, both threads take a share,
and the checks a node collects from an answer are exactly the ones its replica then
makes — stepping the answer verifies nothing but the answer's own signature."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from consensus.messages import Blocks, sign
from ledger.crypto import Ed25519Scheme, Ed25519Signer
from ledger.hashing import TAG_TX
from ledger.keyfile import load_key_file
from node.config import load_node_config
from node.runtime import NodeRuntime
from node.signatures import AHEAD_MIN_CHECKS, Check, MemoisedEd25519, verify_ahead
from tests.node.test_node_runtime import write_config
from tests.node.test_node_state_deltas import CH, build_chain


class _Recording(MemoisedEd25519):
    """Records the thread of every verification that reaches Ed25519."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []
        self._rec = threading.Lock()

    def verify(self, public_key: bytes, tag: str, message: bytes, signature: bytes) -> bool:
        with self._rec:
            self.threads.append(threading.current_thread().name)
        return super().verify(public_key, tag, message, signature)


def _checks(n: int, bad: set[int]) -> list[Check]:
    signer = Ed25519Signer(bytes(range(32)))
    out: list[Check] = []
    for i in range(n):
        msg = f"message {i}".encode()
        sig = signer.sign(TAG_TX, msg)
        if i in bad:
            sig = bytes([sig[0] ^ 1]) + sig[1:]
        out.append((signer.public_key, TAG_TX, msg, sig))
    return out


def test_both_threads_check_and_only_good_signatures_are_remembered() -> None:
    scheme = _Recording()
    bad = {399}  # the last: every check before it is made (they stop at a bad one)
    checks = _checks(400, bad)
    verify_ahead(scheme, checks)
    assert len(scheme.threads) == 400  # each check once
    me = threading.current_thread().name
    helpers = [t for t in scheme.threads if t.startswith("verify-ahead")]
    assert helpers and scheme.threads.count(me) > 0  # both took a share
    assert len(helpers) + scheme.threads.count(me) == 400
    assert len(scheme) == 400 - len(bad)
    hits = scheme.hits
    for i, c in enumerate(checks):
        assert scheme.verify(*c) is (i not in bad)
    assert scheme.hits == hits + 400 - len(bad)  # the good ones came from the memo


def test_a_few_checks_stay_on_the_calling_thread() -> None:
    scheme = _Recording()
    verify_ahead(scheme, _checks(AHEAD_MIN_CHECKS - 1, set()))
    assert scheme.threads == [threading.current_thread().name] * (AHEAD_MIN_CHECKS - 1)
    assert len(scheme) == AHEAD_MIN_CHECKS - 1


@pytest.fixture
def two_nodes(tmp_path: Path) -> Any:
    src = NodeRuntime.open(load_node_config(write_config(tmp_path)))
    dst = NodeRuntime.open(load_node_config(write_config(tmp_path, node="risk_centre-node")))
    try:
        yield src, dst
    finally:
        src.store.close()
        dst.store.close()


def test_an_answers_checks_are_the_ones_its_replica_makes(
    two_nodes: tuple[NodeRuntime, NodeRuntime], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = two_nodes
    blocks = build_chain(tmp_path, src.channels[CH], [[f"k{i}", f"j{i}"] for i in range(12)])
    signer = load_key_file(tmp_path / "net" / "keys" / "bureau-node.key").signer
    answer = sign(Blocks(CH, "bureau-node", tuple(blocks)), signer)
    svc = dst.channels[CH]
    checks = svc._answer_checks(answer)
    assert len(checks) == 12 * (4 + 2)  # four votes and two client signatures a block
    assert isinstance(svc._scheme, MemoisedEd25519)
    verify_ahead(svc._scheme, checks)
    reached: list[bytes] = []
    real = Ed25519Scheme.verify

    def counted(self: Any, public_key: bytes, tag: str, message: bytes, sig: bytes) -> bool:
        reached.append(message)
        return bool(real(self, public_key, tag, message, sig))

    monkeypatch.setattr(Ed25519Scheme, "verify", counted)
    replica = svc.replica
    assert replica is not None
    replica.step(answer)
    committed = replica.ready().committed
    assert [b.height for b, _ in committed] == list(range(1, 13))
    assert reached == [answer.signing_bytes]  # only the answer's own signature


def test_both_threads_stop_at_the_first_bad_signature() -> None:
    """A forged answer costs about what the replica's own checks would: the checks
    stop at its first bad signature (the replica stops at that block too)."""
    scheme = _Recording()
    verify_ahead(scheme, _checks(400, {10}))
    assert 11 <= len(scheme.threads) < 40
    few = _Recording()
    verify_ahead(few, _checks(AHEAD_MIN_CHECKS - 1, {2}))
    assert len(few.threads) == 3


def _drain(svc: Any, answer: Blocks) -> None:
    import asyncio

    async def go() -> None:
        svc._inbox.append(("msg", answer))
        assert svc.replica is not None
        svc._drain_inbox(svc.replica, asyncio.get_running_loop().time() + 5)

    asyncio.run(go())


def test_only_an_answer_the_replica_would_check_is_verified_ahead(
    two_nodes: tuple[NodeRuntime, NodeRuntime], tmp_path: Path
) -> None:
    """An answer ahead of the chain that nobody asked for is dropped by the replica
    after one signature: the driver does not check its blocks ahead either."""
    src, dst = two_nodes
    blocks = build_chain(tmp_path, src.channels[CH], [[f"k{i}"] for i in range(12)])
    signer = load_key_file(tmp_path / "net" / "keys" / "bureau-node.key").signer
    svc = dst.channels[CH]
    replica = svc.replica
    assert replica is not None and isinstance(svc._scheme, MemoisedEd25519)
    ahead = sign(Blocks(CH, "bureau-node", tuple(blocks[4:])), signer)
    assert not replica.would_take(ahead)
    _drain(svc, ahead)
    assert len(svc._scheme) <= 1  # at most the answer's own signature
    assert replica.committed_height == 0
    answer = sign(Blocks(CH, "bureau-node", tuple(blocks)), signer)
    assert replica.would_take(answer)
    _drain(svc, answer)
    assert len(svc._scheme) >= 12 * 5  # votes and client signatures, checked ahead
    assert replica.committed_height == 12
    assert not replica.would_take(answer)  # nothing above the committed height now
