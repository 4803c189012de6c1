"""Catch-up with state deltas, in process on real stores (``rules = "test"``): a node
that receives blocks with their deltas (``Ready.extras``, as a catch-up answer brings
them) takes the effects of every block whose delta chains to a root that a certified
header names, without applying it, and ends with the same state, roots, outcomes and
deltas as the node that applied them. Blocks whose root is not certified yet, blocks
with a rejected transaction, and everything after a delta that does not chain are
applied by the rules."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from consensus.replica import Ready
from ledger.blocks import Block, Transaction, build_block
from ledger.certificate import CommitCertificate, Vote, commit_vote_message
from ledger.hashing import TAG_COMMIT_VOTE
from ledger.keyfile import load_key_file
from node.channel import ChannelService, outcomes_key
from node.config import load_node_config
from node.runtime import NodeRuntime
from tests.node.test_node_runtime import write_config

CH = "supervision"
W = 8  # the lag of a header's state root (the pipelining window)


def _commit(
    svc: ChannelService,
    blocks: Sequence[tuple[Block, CommitCertificate]],
    extras: Mapping[int, bytes] | None = None,
) -> None:
    ready = Ready(None, (), tuple(blocks), (), dict(extras or {}))
    asyncio.run(svc._persist_and_commit(ready))


def build_chain(tmp: Path, src: ChannelService, keys: Sequence[Sequence[str]]) -> list[Any]:
    """Blocks of test-rule transactions (``{"k": K}``), certified by a quorum, each
    committed on ``src`` as it is built: block h's header names src's root at h − W,
    as a proposal's does."""
    signers = {
        v.node_id: load_key_file(tmp / "net" / "keys" / f"{v.node_id}.key").signer
        for v in src.config.validators.validators
    }
    validators = src.config.validators
    sender = signers["bureau-node"]
    out = []
    for ks in keys:
        h = src.store.height(CH) + 1
        t = 1_700_000_000_000 + h
        txs = tuple(
            Transaction(
                network=src.genesis.hash, channel=CH, type="loan_event", sender="bureau-node",
                public_key=sender.public_key, nonce=secrets.randbits(62), time_ms=t,
                payload={"k": k},
            ).signed(sender)
            for k in ks
        )  # fmt: skip
        sh = max(0, h - W)
        root = src.logic.initial_state_root() if sh == 0 else src.store.state_root_at(CH, sh)
        assert root is not None
        block = build_block(
            channel=CH, height=h, prev_hash=src.store.last_hash(CH), transactions=txs,
            state_height=sh, state_root=root, proposer=validators.primary(0), view=0,
            time_ms=t,
        )  # fmt: skip
        msg = commit_vote_message(CH, h, 0, block.hash)
        votes = tuple(
            Vote(v.node_id, signers[v.node_id].sign(TAG_COMMIT_VOTE, msg))
            for v in validators.validators[: validators.quorum]
        )
        entry = (block, CommitCertificate(CH, h, 0, block.hash, votes))
        _commit(src, [entry])
        out.append(entry)
    return out


@pytest.fixture
def target(tmp_path: Path) -> Any:
    """A second node (the risk centre's) of the same network, on its own ledger."""
    rt = NodeRuntime.open(load_node_config(write_config(tmp_path, node="risk_centre-node")))
    try:
        yield rt.channels[CH]
    finally:
        rt.store.close()


def count_applied(svc: ChannelService, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the heights that ``svc`` applies through its rules."""
    applied: list[int] = []
    inner = svc.logic.apply_block

    def counted(block: Block, *args: Any) -> Any:
        applied.append(block.height)
        return inner(block, *args)

    monkeypatch.setattr(svc.logic, "apply_block", counted)
    return applied


def catchup_count(svc: ChannelService, event: str) -> float:
    return svc.metrics.catchup.value(CH, event)


def assert_same_ledger(src: ChannelService, dst: ChannelService, top: int) -> None:
    assert dst.store.height(CH) == top
    assert list(dst.store.iter_state(CH)) == list(src.store.iter_state(CH))
    for h in range(1, top + 1):
        assert dst.store.state_root_at(CH, h) == src.store.state_root_at(CH, h)
        assert dst.store.get_wal(CH, outcomes_key(h)) == src.store.get_wal(CH, outcomes_key(h))
        assert dst.store.state_delta_at(CH, h) == src.store.state_delta_at(CH, h)


def deltas(src: ChannelService, blocks: Sequence[Any]) -> dict[int, bytes]:
    out = {}
    for block, _ in blocks:
        d = src.store.state_delta_at(CH, block.height)
        assert d
        out[block.height] = d
    return out


def test_proven_deltas_stand_in_for_applying_the_blocks(
    runtime: NodeRuntime, target: ChannelService, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Of 30 blocks sent with their deltas, the 22 whose roots the later headers
    certify are taken from the deltas; the last W are applied; the ledgers are equal."""
    src = runtime.channels[CH]
    blocks = build_chain(tmp_path, src, [[f"k{i}", f"j{i}"] for i in range(30)])
    applied = count_applied(target, monkeypatch)
    _commit(target, blocks, deltas(src, blocks))
    assert applied == list(range(23, 31))
    assert catchup_count(target, "delta_blocks") == 22
    assert catchup_count(target, "delta_refused") == 0
    assert_same_ledger(src, target, 30)
    assert [o.code for o in target.outcomes(5)] == ["ok", "ok"]


def test_blocks_without_deltas_are_applied(
    runtime: NodeRuntime, target: ChannelService, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """No extras (blocks committed by consensus, or a peer that keeps no deltas):
    every block goes through the rules; a gap in the deltas stops their use there."""
    src = runtime.channels[CH]
    blocks = build_chain(tmp_path, src, [[f"k{i}"] for i in range(20)])
    applied = count_applied(target, monkeypatch)
    _commit(target, blocks[:10])
    assert applied == list(range(1, 11))
    partial = deltas(src, blocks[10:])
    del partial[13]
    _commit(target, blocks[10:], partial)
    assert applied == list(range(1, 11)) + list(range(13, 21))
    assert catchup_count(target, "delta_blocks") == 2  # 11 and 12 (certified by 19, 20)
    assert_same_ledger(src, target, 20)


def test_a_block_with_a_rejected_transaction_is_applied(
    runtime: NodeRuntime, target: ChannelService, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A rejection's message is not in the delta: that block is applied by the rules
    (its outcome message is the rules' own), the blocks around it still come from
    their deltas."""
    src = runtime.channels[CH]
    keys = [[f"k{i}"] for i in range(20)]
    keys[4] = ["k0", "x"]  # k0 is set already: "exists"
    blocks = build_chain(tmp_path, src, keys)
    applied = count_applied(target, monkeypatch)
    _commit(target, blocks, deltas(src, blocks))
    assert applied == [5, *range(13, 21)]
    assert catchup_count(target, "delta_blocks") == 11
    outcomes = target.outcomes(5)
    assert [o.code for o in outcomes] == ["exists", "ok"]
    assert "already set" in outcomes[0].message
    assert_same_ledger(src, target, 20)


@pytest.mark.parametrize("where", ["value", "outcome"])
def test_a_forged_delta_is_refused_and_the_blocks_applied(
    runtime: NodeRuntime, target: ChannelService, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, where: str,
) -> None:  # fmt: skip
    """A peer that alters one delta (a written value, or an outcome code) gets nothing
    past the certified roots: the blocks before the forged one come from their deltas
    (the headers of 9–13 certify their roots), every block from it on is applied, and
    the ledger is the honest one."""
    src = runtime.channels[CH]
    blocks = build_chain(tmp_path, src, [[f"k{i}"] for i in range(20)])
    forged = deltas(src, blocks)
    honest = forged[6]
    if where == "value":
        forged[6] = honest.replace(b"bureau-node", b"bureau-nodf")
    else:
        forged[6] = honest.replace(b"\xa2ok", b"\xa2no")
    assert forged[6] != honest
    applied = count_applied(target, monkeypatch)
    _commit(target, blocks, forged)
    assert applied == list(range(6, 21))
    assert catchup_count(target, "delta_blocks") == 5
    assert catchup_count(target, "delta_refused") == 1
    assert_same_ledger(src, target, 20)


def test_deltas_are_kept_for_the_configured_heights(runtime: NodeRuntime, tmp_path: Path) -> None:
    """A node keeps the deltas of its last ``state_delta_heights`` heights (16,384 by
    default) and serves them with catch-up answers (``block_extra``)."""
    src = runtime.channels[CH]
    blocks = build_chain(tmp_path, src, [["a"], ["b"]])
    app = src.replica.app if src.replica is not None else None
    assert app is not None
    for block, _ in blocks:
        assert app.block_extra(block.height) == src.store.state_delta_at(CH, block.height)
        assert app.block_extra(block.height)
    assert app.block_extra(3) is None


@pytest.mark.parametrize("rules", ["test", "channels"])
def test_ledger_verify_checks_a_nodes_kept_deltas(
    rules: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``wulian ledger verify`` checks each kept delta with the rules the node's config
    names (the production rules reject these test transactions: their deltas hold the
    outcome codes): it leads from the recorded root before it (block 1: the rules'
    initial root) to the one after; one damaged delta is reported with its height."""
    from ledger.store import BlockStore
    from node.cli import main

    runtime = NodeRuntime.open(load_node_config(write_config(tmp_path, rules=rules)))
    try:
        build_chain(tmp_path, runtime.channels[CH], [[f"k{i}", f"j{i}"] for i in range(6)])
    finally:
        runtime.store.close()
    data = tmp_path / "bureau-node"
    capsys.readouterr()
    assert main(["ledger", "verify", "--data", str(data)]) == 0
    assert f"{CH}: ok — 6 blocks, 12 transactions, 6 state deltas" in capsys.readouterr().out
    for h in (1, 4):
        with BlockStore.open(data / "ledger", runtime.genesis.hash, create=False) as store:
            delta = store.state_delta_at(CH, h)
            assert delta is not None
            key = b"c/" + CH.encode() + b"/d/" + h.to_bytes(8, "big")
            store._db.put(key, delta[:-1])
        capsys.readouterr()
        assert main(["ledger", "verify", "--data", str(data)]) == 1
        err = capsys.readouterr().err
        assert CH in err and f"height {h}" in err and "state delta" in err, err
        with BlockStore.open(data / "ledger", runtime.genesis.hash, create=False) as store:
            store._db.put(key, delta)
    assert main(["ledger", "verify", "--data", str(data)]) == 0


def test_ledger_verify_writes_nothing(
    runtime: NodeRuntime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ledger verify`` opens the store read-only: a node's opening would delete the
    deltas outside its (here narrowed) window and upgrade a format-1 ledger; verifying
    checks every delta on disk and leaves the ledger as it was. Without a
    ``node.toml`` (rules unknown) it checks no delta."""
    import plyvel

    from node.cli import main

    build_chain(tmp_path, runtime.channels[CH], [[f"k{i}"] for i in range(6)])
    runtime.store.close()
    data = tmp_path / "bureau-node"
    config = data / "node.toml"
    config.write_text(config.read_text() + "\n[limits]\nstate_delta_heights = 4\n")
    with plyvel.DB(str(data / "ledger")) as db:
        db.put(b"g/version", b"1")  # as an earlier wulian left it
        before = dict(db.iterator())
    capsys.readouterr()
    assert main(["ledger", "verify", "--data", str(data)]) == 0
    assert f"{CH}: ok — 6 blocks, 6 transactions, 6 state deltas" in capsys.readouterr().out
    with plyvel.DB(str(data / "ledger")) as db:
        assert dict(db.iterator()) == before
    genesis = tmp_path / "net" / "genesis.json"
    config.rename(data / "elsewhere.toml")
    assert main(["ledger", "verify", "--data", str(data), "--genesis", str(genesis)]) == 0
    out = capsys.readouterr().out
    assert f"{CH}: ok — 6 blocks, 6 transactions," in out and "state deltas" not in out
