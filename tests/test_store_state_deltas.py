"""The store keeps the state delta given with a block for the last
``state_delta_heights`` heights only, across reopening."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.blocks import Block
from ledger.certificate import CommitCertificate
from ledger.ledger_verify import verify_channel
from ledger.store import DEFAULT_STATE_DELTA_HEIGHTS, BlockCommit, BlockStore
from tests.helpers_chain import make_chain, state_root_after, state_writes

CH = "supervision"


def open_store(
    path: Path, genesis_hash: bytes, state_delta_heights: int = DEFAULT_STATE_DELTA_HEIGHTS
) -> BlockStore:
    return BlockStore.open(path, genesis_hash, create=True, state_delta_heights=state_delta_heights)


def delta_of(height: int) -> bytes:
    return f"delta-{height}".encode()


def commit_of(block: Block, cert: CommitCertificate, delta: bytes | None = None) -> BlockCommit:
    return BlockCommit(
        block,
        cert,
        state_writes(block),
        state_root_after(block),
        {},
        delta_of(block.height) if delta is None else delta,
    )


def deltas(store: BlockStore, top: int) -> dict[int, bytes | None]:
    return {h: store.state_delta_at(CH, h) for h in range(1, top + 1)}


def kept(store: BlockStore, top: int) -> list[int]:
    """The heights in 1..``top`` that have a delta (checked: the one given with the block)."""
    have = {h: d for h, d in deltas(store, top).items() if d is not None}
    assert have == {h: delta_of(h) for h in have}
    return sorted(have)


def test_a_delta_given_with_a_block_is_read_back(tmp_path: Path) -> None:
    chain = make_chain(2, 2)
    (b1, c1), (b2, c2) = chain.blocks
    with open_store(tmp_path / "ledger", chain.genesis_hash) as store:
        assert store.state_delta_at(CH, 1) is None
        store.commit_blocks(CH, [commit_of(b1, c1, b"\x93\x90\x90\x90")])
        assert store.state_delta_at(CH, 1) == b"\x93\x90\x90\x90"
        store.commit_blocks(CH, [commit_of(b2, c2)])
        assert deltas(store, 3) == {1: b"\x93\x90\x90\x90", 2: delta_of(2), 3: None}
        assert store.state_root_at(CH, 2) == state_root_after(b2)  # the root is kept as ever


@pytest.mark.parametrize("batched", [False, True], ids=["one-by-one", "one-batch"])
def test_only_the_last_state_delta_heights_are_kept(tmp_path: Path, batched: bool) -> None:
    chain = make_chain(6, 2)
    commits = [commit_of(b, c) for b, c in chain.blocks]
    with open_store(tmp_path / "ledger", chain.genesis_hash, state_delta_heights=3) as store:
        if batched:
            store.commit_blocks(CH, commits)
        else:
            for i, commit in enumerate(commits, start=1):
                store.commit_blocks(CH, [commit])
                assert kept(store, 6) == list(range(max(1, i - 2), i + 1))
        assert store.height(CH) == 6
        assert kept(store, 6) == [4, 5, 6]
        # the blocks and roots themselves are all kept, and the deltas are no stray
        # entries to the ledger verifier
        assert all(store.state_root_at(CH, h) is not None for h in range(1, 7))
        report = verify_channel(store, CH, chain.genesis_hash, lambda _h: chain.validators)
        assert report.ok and report.blocks == 6, report.line()


def test_zero_heights_keeps_no_delta(tmp_path: Path) -> None:
    chain = make_chain(4, 1)
    commits = [commit_of(b, c) for b, c in chain.blocks]
    with open_store(tmp_path / "ledger", chain.genesis_hash, state_delta_heights=0) as store:
        store.commit_blocks(CH, commits[:1])
        store.commit_blocks(CH, commits[1:])
        assert store.height(CH) == 4
        assert kept(store, 4) == []


def test_a_block_committed_without_a_delta_has_none(tmp_path: Path) -> None:
    chain = make_chain(3, 1)
    (b1, c1), (b2, c2), (b3, c3) = chain.blocks
    with open_store(tmp_path / "ledger", chain.genesis_hash) as store:
        store.commit_block(CH, b1, c1, state_writes(b1), state_root_after(b1))
        store.commit_blocks(CH, [commit_of(b2, c2, b"")])  # empty: none
        store.commit_blocks(CH, [BlockCommit(b3, c3, state_writes(b3), state_root_after(b3))])
        assert store.height(CH) == 3
        assert deltas(store, 3) == {1: None, 2: None, 3: None}


@pytest.mark.parametrize("bad", [-1, -16_384])
def test_a_negative_number_of_heights_is_refused(tmp_path: Path, bad: int) -> None:
    chain = make_chain(1, 1)
    with pytest.raises(ValueError, match="state_delta_heights"):
        open_store(tmp_path / "ledger", chain.genesis_hash, state_delta_heights=bad)
    assert not (tmp_path / "ledger").exists()  # refused before anything is created


def test_deltas_survive_close_and_reopen(tmp_path: Path) -> None:
    chain = make_chain(5, 2)
    commits = [commit_of(b, c) for b, c in chain.blocks]
    path = tmp_path / "ledger"
    with open_store(path, chain.genesis_hash, state_delta_heights=3) as store:
        store.commit_blocks(CH, commits[:4])
    with BlockStore.open(path, chain.genesis_hash, create=False, state_delta_heights=3) as store:
        assert kept(store, 4) == [2, 3, 4]
        store.commit_blocks(CH, commits[4:])  # pruning goes on after reopening
        assert kept(store, 5) == [3, 4, 5]
    with BlockStore.open(path, chain.genesis_hash, create=False, state_delta_heights=3) as store:
        assert kept(store, 5) == [3, 4, 5]
