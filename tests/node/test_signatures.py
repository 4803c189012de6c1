"""The node's memo of verified signatures (node/signatures.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from consensus.messages import Status, sign
from ledger.crypto import Ed25519Signer
from ledger.hashing import TAG_COMMIT_VOTE, TAG_TX
from ledger.keyfile import load_key_file
from node.config import load_node_config
from node.runtime import NodeRuntime
from node.signatures import MemoisedEd25519
from tests.node.test_node_runtime import write_config

ALICE = Ed25519Signer(b"\x01" * 32)
BOB = Ed25519Signer(b"\x02" * 32)


def test_a_valid_signature_is_verified_once_then_remembered() -> None:
    memo = MemoisedEd25519()
    sig = ALICE.sign(TAG_TX, b"report 1")
    assert memo.verify(ALICE.public_key, TAG_TX, b"report 1", sig)
    assert (memo.hits, len(memo)) == (0, 1)
    assert memo.verify(ALICE.public_key, TAG_TX, b"report 1", sig)
    assert (memo.hits, len(memo)) == (1, 1)


def test_a_failure_is_never_remembered_and_a_hit_needs_the_exact_inputs() -> None:
    memo = MemoisedEd25519()
    sig = ALICE.sign(TAG_TX, b"report 1")
    assert memo.verify(ALICE.public_key, TAG_TX, b"report 1", sig)
    for args in [
        (ALICE.public_key, TAG_TX, b"report 2", sig),  # another message
        (ALICE.public_key, TAG_COMMIT_VOTE, b"report 1", sig),  # another purpose
        (BOB.public_key, TAG_TX, b"report 1", sig),  # another key
        (ALICE.public_key, TAG_TX, b"report 1", bytes(64)),  # another signature
    ]:
        assert not memo.verify(*args)
        assert not memo.verify(*args), "a failure stays a failure"
    assert (memo.hits, len(memo)) == (0, 1)
    assert not memo.verify(ALICE.public_key[:31], TAG_TX, b"report 1", sig)
    assert not memo.verify(ALICE.public_key, TAG_TX, b"report 1", sig[:63])


def test_long_messages_are_verified_every_time() -> None:
    memo = MemoisedEd25519(max_message=8)
    long = b"a batch report of many events"
    sig = ALICE.sign(TAG_TX, long)
    assert memo.verify(ALICE.public_key, TAG_TX, long, sig)
    assert memo.verify(ALICE.public_key, TAG_TX, long, sig)
    assert (memo.hits, len(memo)) == (0, 0)
    assert not memo.verify(ALICE.public_key, TAG_TX, long, bytes(64))


def test_the_oldest_entry_is_forgotten_first() -> None:
    memo = MemoisedEd25519(capacity=2)
    msgs = [b"m1", b"m2", b"m3"]
    sigs = [ALICE.sign(TAG_TX, m) for m in msgs]
    for m, s in zip(msgs, sigs, strict=True):
        assert memo.verify(ALICE.public_key, TAG_TX, m, s)
    assert len(memo) == 2
    assert memo.verify(ALICE.public_key, TAG_TX, msgs[2], sigs[2])
    assert memo.hits == 1
    assert memo.verify(ALICE.public_key, TAG_TX, msgs[0], sigs[0])
    assert memo.hits == 1, "m1 was evicted: verified again, not a hit"
    assert len(memo) == 2


def test_threads_share_it_safely() -> None:
    memo = MemoisedEd25519(capacity=8)
    items = [(b"m%d" % i, ALICE.sign(TAG_TX, b"m%d" % i)) for i in range(16)]
    errors: list[BaseException] = []
    results: list[bool] = []

    def work(offset: int) -> None:
        try:
            for n in range(200):
                m, s = items[(n + offset) % len(items)]
                results.append(memo.verify(ALICE.public_key, TAG_TX, m, s))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 800 and all(results)
    assert len(memo) <= 8


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        MemoisedEd25519(capacity=0)
    with pytest.raises(ValueError):
        MemoisedEd25519(max_message=-1)


def test_the_runtime_gives_its_replicas_and_cross_chain_rules_one_memo(tmp_path: Path) -> None:
    rt = NodeRuntime.open(load_node_config(write_config(tmp_path, rules="channels")))
    try:
        memo = rt.signatures
        for svc in rt.channels.values():
            assert svc.replica is not None and svc.replica.config.scheme is memo
        anchor = rt.channels["judicial"].logic._rules.tx_types["anchor"]  # type: ignore[attr-defined]
        ack = rt.channels["supervision"].logic._rules.tx_types["anchor_receipt"]  # type: ignore[attr-defined]
        assert anchor.apply.__self__.scheme is memo
        assert ack.apply.__self__.scheme is memo
        # and the replicas really verify through it
        signer = load_key_file(tmp_path / "net" / "keys" / "court-node.key").signer
        status = sign(Status("judicial", "court-node", 0, True, 0, b"\x01" * 32), signer)
        before = len(memo)
        rt.channels["judicial"].replica.step(status)  # type: ignore[union-attr]
        assert len(memo) == before + 1
        # a second check of the same vote is a hit, and the metrics show it
        assert memo.verify(signer.public_key, status.tag, status.signing_bytes, status.signature)
        rt.refresh_metrics()
        assert "wulian_signature_memo_hits_total 1" in rt.metrics.render()
    finally:
        rt.store.close()
