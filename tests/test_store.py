"""The LevelDB block store: round trips, indexes, refusals, WAL, open checks, crashes."""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import plyvel
import pytest

from ledger.blocks import Block, channel_genesis_hash
from ledger.encoding import encode
from ledger.errors import ConfigError, CorruptLedgerError
from ledger.ledger_verify import verify_channel
from ledger.store import (
    COMPRESSIONS,
    DEFAULT_COMPRESSION,
    DEFAULT_WRITE_BUFFER_BYTES,
    TABLE_FILE_BYTES,
    BlockCommit,
    BlockRejectedError,
    BlockStore,
    StoreError,
    TxLocation,
    height_key,
)
from tests.helpers_chain import (
    EMPTY_STATE_ROOT,
    certify,
    commit_chain,
    make_block,
    make_chain,
    make_tx,
    state_root_after,
    state_writes,
)

REPO = Path(__file__).resolve().parent.parent
CH = "supervision"


def dump(store: BlockStore) -> dict[bytes, bytes]:
    """Every key/value in the database (to show a refused commit wrote nothing)."""
    with store._db.iterator() as it:
        return dict(it)


def open_store(path: Path, genesis_hash: bytes, **kw: object) -> BlockStore:
    return BlockStore.open(path, genesis_hash, create=True, **kw)  # type: ignore[arg-type]


def flip(path: Path, key: bytes, needle: bytes | None = None, *, at: int | None = None) -> None:
    """Flip one bit of the stored value under ``key`` (the database must be closed):
    in the first occurrence of ``needle``, or at offset ``at``."""
    db = plyvel.DB(str(path))
    try:
        value = bytearray(db.get(key))
        pos = value.index(needle) + len(needle) - 1 if needle is not None else at
        assert pos is not None
        value[pos] ^= 0x01
        db.put(key, bytes(value), sync=True)
    finally:
        db.close()


def block_key(channel: str, height: int) -> bytes:
    return b"c/" + channel.encode() + b"/b/" + height_key(height)


# ---------------------------------------------------------------- round trips


def test_commit_and_read_back_every_index(tmp_path: Path) -> None:
    chain = make_chain(6, 3)
    with open_store(tmp_path / "ledger", chain.genesis_hash) as store:
        assert store.height(CH) == 0
        assert store.last_hash(CH) == channel_genesis_hash(chain.genesis_hash, CH)
        assert store.block(CH, 1) is None and store.certificate(CH, 1) is None
        commit_chain(store, chain.blocks)
        last_block = chain.blocks[-1][0]
        assert store.height(CH) == 6
        assert store.last_hash(CH) == last_block.hash
        assert store.channels() == (CH,)
        for block, cert in chain.blocks:
            h = block.height
            assert store.block(CH, h) == block
            assert store.raw_block(CH, h) == block.encoded()
            assert store.header(CH, h) == block.header
            assert store.certificate(CH, h) == cert
            assert store.height_of(CH, block.hash) == h
            assert store.block_by_hash(CH, block.hash) == block
            assert store.state_root_at(CH, h) == state_root_after(block)
            for i, tx in enumerate(block.transactions):
                assert store.tx_location(CH, tx.tx_id) == TxLocation(h, i)
                located = store.transaction(CH, tx.tx_id)
                assert located is not None
                assert (located.transaction, located.height, located.index) == (tx, h, i)
            for key, value in state_writes(block).items():
                assert store.get_state(CH, key) == value
        assert store.block(CH, 7) is None
        assert store.block_by_hash(CH, b"\x00" * 32) is None
        assert store.tx_location(CH, b"\x00" * 32) is None
        assert store.state_root_at(CH, 7) is None
        # iteration: ranges, decoded and raw
        got = [(b, c) for b, c in store.iter_blocks(CH, 2, 4)]
        assert got == chain.blocks[1:4]
        assert [r.height for r in store.iter_raw_blocks(CH, 5)] == [5, 6]
        assert [r.block for r in store.iter_raw_blocks(CH)] == [
            b.encoded() for b, _ in chain.blocks
        ]
        assert list(store.iter_raw_blocks(CH, 4, 3)) == []


def test_transaction_lookup_checks_the_index(tmp_path: Path) -> None:
    chain = make_chain(2, 3)
    with open_store(tmp_path / "ledger", chain.genesis_hash) as store:
        commit_chain(store, chain.blocks)
        tx = chain.blocks[1][0].transactions[2]
        store._db.put(b"c/" + CH.encode() + b"/t/" + tx.tx_id, encode([2, 1]))
        assert store.tx_location(CH, tx.tx_id) == TxLocation(2, 1)
        with pytest.raises(CorruptLedgerError) as info:
            store.transaction(CH, tx.tx_id)
        assert info.value.height == 2
        store._db.put(b"c/" + CH.encode() + b"/t/" + tx.tx_id, b"\xc1")
        with pytest.raises(CorruptLedgerError):
            store.tx_location(CH, tx.tx_id)


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    chain = make_chain(4, 2)
    with open_store(tmp_path / "ledger", chain.genesis_hash) as store:
        commit_chain(store, chain.blocks)
        before = dump(store)
    with BlockStore.open(tmp_path / "ledger", chain.genesis_hash, create=False) as store:
        assert store.height(CH) == 4
        assert store.last_hash(CH) == chain.blocks[-1][0].hash
        assert dump(store) == before
        # the chain continues from the reopened tip
        longer = make_chain(5, 2)
        commit_chain(store, longer.blocks[4:])
        assert store.height(CH) == 5


def test_recent_blocks_come_from_memory_within_bounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ledger.store as store_mod

    monkeypatch.setattr(store_mod, "RECENT_BLOCKS", 4)
    chain = make_chain(10, 3)
    with open_store(tmp_path / "ledger", chain.genesis_hash) as store:
        commit_chain(store, chain.blocks[:6])
        # the last four commits are the very objects committed; older ones are decoded
        for h in (3, 4, 5, 6):
            assert store.block(CH, h) is chain.blocks[h - 1][0]
        for h in (1, 2):
            got = store.block(CH, h)
            assert got is not chain.blocks[h - 1][0]
            assert got == chain.blocks[h - 1][0]
        assert store.block(CH, 7) is None
        # the byte cap holds too: with room for about two blocks, two stay
        size = len(chain.blocks[6][0].encoded())
        monkeypatch.setattr(store_mod, "RECENT_BLOCK_BYTES", 2 * size + size // 2)
        commit_chain(store, chain.blocks[6:10])
        assert len(store._recent) == 2
        assert store._recent_bytes <= 2 * size + size // 2
        assert store.block(CH, 10) is chain.blocks[9][0]
        assert store.block(CH, 8) == chain.blocks[7][0]
    # a refused commit leaves nothing behind in memory either
    with open_store(tmp_path / "other", chain.genesis_hash) as store:
        commit_chain(store, chain.blocks[:1])
        block, cert = chain.blocks[2]
        with pytest.raises(BlockRejectedError):
            store.commit_block(CH, block, cert, state_writes(block), state_root_after(block))
        assert store.block(CH, 3) is None


def test_channels_are_isolated(tmp_path: Path) -> None:
    a = make_chain(3, 2, channel="supervision")
    b = make_chain(2, 2, channel="judicial")
    with open_store(tmp_path / "ledger", a.genesis_hash) as store:
        commit_chain(store, a.blocks)
        commit_chain(store, b.blocks)
        assert store.channels() == ("judicial", "supervision")
        assert (store.height("supervision"), store.height("judicial")) == (3, 2)
        tx_a = a.blocks[0][0].transactions[0].tx_id
        assert store.tx_location("judicial", tx_a) is None
        assert store.block_by_hash("judicial", a.blocks[0][0].hash) is None
        # same state key in both channels holds each channel's own value
        store.commit_block(
            "risk",
            *_single_block_chain(a.genesis_hash, "risk", {b"shared": b"risk"}),
        )
        assert store.get_state("risk", b"shared") == b"risk"
        assert store.get_state("supervision", b"shared") is None
        assert store.height("credit") == 0


def _single_block_chain(genesis_hash: bytes, channel: str, writes: dict[bytes, bytes | None]):  # type: ignore[no-untyped-def]
    chain = make_chain(1, 1)
    block = make_block(
        channel,
        1,
        channel_genesis_hash(genesis_hash, channel),
        [make_tx(genesis_hash, channel, 7)],
        state_root=EMPTY_STATE_ROOT,
    )
    return block, certify(block, chain.validators, chain.signers), writes, state_root_after(block)


def test_state_writes_deletes_and_prefix_iteration(tmp_path: Path) -> None:
    chain = make_chain(2, 1)
    (b1, c1), (b2, c2) = chain.blocks
    with open_store(tmp_path / "ledger", chain.genesis_hash) as store:
        store.commit_block(
            CH,
            b1,
            c1,
            {b"acct/a": b"1", b"acct/b": b"2", b"acct/c": b"3", b"other": b"x"},
            state_root_after(b1),
        )
        store.commit_block(
            CH, b2, c2, {b"acct/b": None, b"acct/c": b"33", b"acct/d": b"4"}, state_root_after(b2)
        )
        assert store.get_state(CH, b"acct/b") is None
        assert list(store.iter_state(CH, b"acct/")) == [
            (b"acct/a", b"1"),
            (b"acct/c", b"33"),
            (b"acct/d", b"4"),
        ]
        assert [k for k, _ in store.iter_state(CH)] == [b"acct/a", b"acct/c", b"acct/d", b"other"]
        # one backward seek: the greatest live key under the prefix and below the stop
        assert store.last_state_below(CH, b"acct/", b"acct/d") == (b"acct/c", b"33")
        assert store.last_state_below(CH, b"acct/", b"acct/c") == (b"acct/a", b"1")  # b deleted
        assert store.last_state_below(CH, b"acct/", b"acct/a") is None
        assert store.last_state_below(CH, b"acct/", b"zzz") == (b"acct/d", b"4")  # not "other"
        assert store.last_state_below(CH, b"", b"zzz") == (b"other", b"x")
        assert store.last_state_below(CH, b"acct/\xff", b"zzz") is None
        assert store.last_state_below("credit", b"", b"zzz") is None  # nothing of CH leaks
        assert store.state_root_at(CH, 1) == state_root_after(b1)
        assert store.state_root_at(CH, 2) == state_root_after(b2)


def test_wal_put_get_delete_and_commit_with_wal(tmp_path: Path) -> None:
    chain = make_chain(1, 1)
    block, cert = chain.blocks[0]
    with open_store(tmp_path / "ledger", chain.genesis_hash) as store:
        assert store.get_wal(CH, "view") is None
        store.put_wal(CH, {"view": encode(3), "prepared/1": b"p1", "sent": b"s"})
        store.put_wal("risk", {"view": encode(9)})
        assert store.get_wal(CH, "view") == encode(3)
        assert store.get_wal("risk", "view") == encode(9)
        store.put_wal(CH, {"sent": None, "view": encode(4)})
        assert store.wal_items(CH) == {"view": encode(4), "prepared/1": b"p1"}
        assert store.wal_items(CH, "prepared/") == {"prepared/1": b"p1"}
        assert store.wal_items(CH, "v") == {"view": encode(4)}
        assert store.wal_items("risk", "prepared/") == {}
        store.commit_block(
            CH,
            block,
            cert,
            state_writes(block),
            state_root_after(block),
            wal={"prepared/1": None, "committed": b"1"},
        )
        assert store.wal_items(CH) == {"view": encode(4), "committed": b"1"}
    with BlockStore.open(tmp_path / "ledger", chain.genesis_hash, create=False) as store:
        assert store.wal_items(CH) == {"view": encode(4), "committed": b"1"}
        assert store.wal_items("risk") == {"view": encode(9)}
        with pytest.raises(ValueError):
            store.put_wal(CH, {"": b"x"})


# ---------------------------------------------------------------- refusals


def test_refusals_write_nothing(tmp_path: Path) -> None:
    chain = make_chain(3, 2)
    (b1, c1), (b2, c2), (b3, c3) = chain.blocks
    other = make_chain(2, 1, seed=5)  # another network: its block 2 does not link here
    with open_store(tmp_path / "ledger", chain.genesis_hash) as store:
        commit_chain(store, chain.blocks[:1])
        before = dump(store)

        def refused(block: Block, cert: object, match: str, channel: str = CH) -> None:
            with pytest.raises(BlockRejectedError, match=match):
                store.commit_block(
                    channel,
                    block,
                    cert,
                    {b"junk": b"x"},
                    state_root_after(block),
                    wal={"w": b"1"},  # type: ignore[arg-type]
                )
            assert dump(store) == before
            assert store.height(CH) == 1 and store.last_hash(CH) == b1.hash

        refused(b1, c1, "expected height 2")  # the same block again
        refused(b3, c3, "expected height 2")  # a gap
        refused(b2, c2, "for channel", channel="risk")
        # height 2 whose prev_hash links to another chain (with a valid certificate)
        forged2 = make_block(
            CH, 2, other.blocks[0][0].hash, list(b2.transactions), state_root=b2.header.state_root
        )
        refused(forged2, certify(forged2, chain.validators, chain.signers), "prev_hash")
        # body does not match the header
        stripped = Block(b2.header, b2.transactions[:1])
        refused(stripped, c2, "transactions")
        # certificate for another block / height / channel
        refused(b2, c3, "certificate")
        refused(b2, c1, "certificate")
        # a transaction already committed in block 1
        dup = make_block(
            CH, 2, b1.hash, [b1.transactions[0], make_tx(chain.genesis_hash, CH, 99)],
            state_root=b2.header.state_root,
        )  # fmt: skip
        refused(dup, certify(dup, chain.validators, chain.signers), "already committed")
        # the same transaction twice inside one block
        tx = make_tx(chain.genesis_hash, CH, 98)
        twice = make_block(CH, 2, b1.hash, [tx, tx], state_root=b2.header.state_root)
        refused(twice, certify(twice, chain.validators, chain.signers), "appears twice")
        # the genuine block still goes in afterwards
        commit_chain(store, chain.blocks[1:])
        assert store.height(CH) == 3


def test_commit_blocks_writes_several_blocks_in_one_batch(tmp_path: Path) -> None:
    """Three blocks in one call: every index as if committed one by one, a later
    block's state writes and wal entries override an earlier one's (a put then a
    delete leaves the key deleted, a delete then a put leaves it put), and reopening
    finds them all."""
    chain = make_chain(4, 2)
    (b2, c2), (b3, c3), (b4, c4) = chain.blocks[1:]
    with open_store(tmp_path / "ledger", chain.genesis_hash) as store:
        commit_chain(store, chain.blocks[:1])
        store.commit_blocks(
            CH,
            [
                BlockCommit(b2, c2, {b"a": b"1", b"b": b"2"}, state_root_after(b2), {"w": b"2"}),
                BlockCommit(b3, c3, {b"a": None, b"c": b"3"}, state_root_after(b3), {"x": b"3"}),
                BlockCommit(b4, c4, {b"c": None, b"a": b"4"}, state_root_after(b4), {"w": None}),
            ],
        )
        assert store.height(CH) == 4 and store.last_hash(CH) == b4.hash
    with BlockStore.open(tmp_path / "ledger", chain.genesis_hash, create=False) as store:
        assert store.height(CH) == 4 and store.last_hash(CH) == b4.hash
        assert [k for k, _ in store.iter_state(CH) if len(k) == 1] == [b"a", b"b"]
        assert store.get_state(CH, b"a") == b"4"
        assert store.wal_items(CH) == {"x": b"3"}
        for block in (b2, b3, b4):
            assert store.block(CH, block.height) == block
            assert store.state_root_at(CH, block.height) == state_root_after(block)
            for i, tx in enumerate(block.transactions):
                assert store.tx_location(CH, tx.tx_id) == TxLocation(block.height, i)
        report = verify_channel(store, CH, chain.genesis_hash, lambda _h: chain.validators)
        assert report.ok and report.blocks == 4, report.line()


def test_commit_blocks_refuses_the_whole_batch(tmp_path: Path) -> None:
    """One bad block in a batch (a gap, a transaction repeated from an earlier block
    of the same batch) and nothing of the batch is written, the good blocks before it
    included."""
    chain = make_chain(3, 2)
    (b2, c2), (b3, c3) = chain.blocks[1:]
    with open_store(tmp_path / "ledger", chain.genesis_hash) as store:
        commit_chain(store, chain.blocks[:1])
        before = dump(store)

        def batch(*blocks: tuple[Block, object]) -> list[BlockCommit]:
            return [
                BlockCommit(b, c, state_writes(b), state_root_after(b))  # type: ignore[arg-type]
                for b, c in blocks
            ]

        with pytest.raises(BlockRejectedError, match=r"block 3 .*expected height 4"):
            store.commit_blocks(CH, batch((b2, c2), (b3, c3), (b3, c3)))
        assert dump(store) == before
        replay = make_block(CH, 3, b2.hash, [b2.transactions[0]], state_root=b3.header.state_root)
        with pytest.raises(BlockRejectedError, match="appears twice"):
            store.commit_blocks(
                CH, batch((b2, c2), (replay, certify(replay, chain.validators, chain.signers)))
            )
        assert dump(store) == before and store.height(CH) == 1
        store.commit_blocks(CH, [])
        assert dump(store) == before
        store.commit_blocks(CH, batch((b2, c2), (b3, c3)))
        assert store.height(CH) == 3


# ---------------------------------------------------------------- opening


def test_open_errors_are_clear(tmp_path: Path) -> None:
    chain = make_chain(1, 1)
    path = tmp_path / "ledger"
    with pytest.raises(StoreError, match="no ledger database"):
        BlockStore.open(path, chain.genesis_hash, create=False)
    assert not path.exists()
    with open_store(path, chain.genesis_hash) as store:
        commit_chain(store, chain.blocks)
        with pytest.raises(StoreError, match="locked"):
            BlockStore.open(path, chain.genesis_hash, create=False)
    with pytest.raises(ConfigError, match="genesis") as info:
        BlockStore.open(path, make_chain(1, 1, seed=3).genesis_hash, create=False)
    assert "\n" not in str(info.value)
    # an empty directory, a plain file, a directory of junk
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError):
        BlockStore.open(tmp_path / "empty", chain.genesis_hash, create=False)
    (tmp_path / "file").write_bytes(b"not a database")
    with pytest.raises(StoreError):
        BlockStore.open(tmp_path / "file", chain.genesis_hash, create=False)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "CURRENT").write_text("MANIFEST-000099\n")
    with pytest.raises(StoreError):
        BlockStore.open(junk, chain.genesis_hash, create=False)
    # a LevelDB database that is not a wulian ledger
    foreign = plyvel.DB(str(tmp_path / "foreign"), create_if_missing=True)
    foreign.put(b"hello", b"world")
    foreign.close()
    with pytest.raises(ConfigError, match="not a wulian ledger"):
        BlockStore.open(tmp_path / "foreign", chain.genesis_hash, create=True)


def test_open_refuses_recent_corruption_naming_the_height(tmp_path: Path) -> None:
    chain = make_chain(20, 2)
    path = tmp_path / "ledger"
    with open_store(path, chain.genesis_hash) as store:
        commit_chain(store, chain.blocks)
    nonce = chain.blocks[14][0].transactions[1].nonce
    flip(path, block_key(CH, 15), f"key-{nonce}".encode())
    with pytest.raises(CorruptLedgerError) as info:
        BlockStore.open(path, chain.genesis_hash, create=False)
    assert (info.value.channel, info.value.height) == (CH, 15)
    assert "height 15" in str(info.value) and "\n" not in str(info.value)
    # outside the checked window the store opens (the full walk is `ledger verify`)
    with BlockStore.open(path, chain.genesis_hash, create=False, verify_recent=4) as store:
        assert store.height(CH) == 20
    # the window also ends when the blocks hold too many transactions (2 per block)
    with BlockStore.open(path, chain.genesis_hash, create=False, verify_recent_txs=10):
        pass
    with pytest.raises(CorruptLedgerError):
        BlockStore.open(path, chain.genesis_hash, create=False, verify_recent_txs=12)


@pytest.mark.parametrize(
    ("damage", "height"),
    [
        ("drop-cert", 20),
        ("drop-tx-index", 19),
        ("block-beyond-tip", 21),
        ("drop-block", 18),
        ("drop-hash-index", 17),
    ],
)
def test_open_refuses_missing_or_stray_entries(tmp_path: Path, damage: str, height: int) -> None:
    chain = make_chain(20, 2)
    path = tmp_path / "ledger"
    with open_store(path, chain.genesis_hash) as store:
        commit_chain(store, chain.blocks)
    base = b"c/" + CH.encode() + b"/"
    db = plyvel.DB(str(path))
    block = chain.blocks[height - 1][0] if height <= 20 else None
    if damage == "drop-cert":
        db.delete(base + b"q/" + height_key(height))
    elif damage == "drop-tx-index":
        assert block is not None
        db.delete(base + b"t/" + block.transactions[0].tx_id)
    elif damage == "block-beyond-tip":
        db.put(base + b"b/" + height_key(height), db.get(base + b"b/" + height_key(20)))
    elif damage == "drop-block":
        db.delete(base + b"b/" + height_key(height))
    else:
        assert block is not None
        db.delete(base + b"h/" + block.hash)
    db.close()
    with pytest.raises(CorruptLedgerError) as info:
        BlockStore.open(path, chain.genesis_hash, create=False)
    assert info.value.height == height


# ---------------------------------------------------------------- crashes

CRASH_CHILD = textwrap.dedent(
    """
    import os, pickle, sys
    sys.path.insert(0, sys.argv[1])
    from ledger.encoding import encode
    from ledger.store import BlockStore, height_key
    from tests.helpers_chain import state_root_after, state_writes

    path, chain_file, mode, target = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    with open(chain_file, "rb") as f:
        genesis_hash, blocks = pickle.load(f)
    if mode != "kill":
        target_key = b"c/supervision/b/" + height_key(target)
        original = BlockStore._write

        def hooked(self, puts, deletes):
            hit = any(k == target_key for k, _ in puts)
            if hit and mode == "exit-before":
                os._exit(17)
            original(self, puts, deletes)
            if hit and mode == "exit-after":
                os._exit(17)

        BlockStore._write = hooked
    store = BlockStore.open(path, genesis_hash, create=True)
    start = store.height("supervision")
    print("ready", start, flush=True)
    for block, cert in blocks[start:]:
        writes = state_writes(block)
        for i in range(40):  # make each batch a few kilobytes
            writes[b"pad/%d/%d" % (block.height, i)] = bytes([i]) * 100
        store.commit_block(
            "supervision", block, cert, writes, state_root_after(block),
            wal={"committed": encode(block.height)},
        )
        print(block.height, flush=True)
    print("done", flush=True)
    """
)


def _check_whole(path: Path, chain_blocks: list, genesis_hash: bytes, validators) -> int:  # type: ignore[no-untyped-def,type-arg]
    """Reopen after a crash; assert the ledger holds exactly blocks 1..H, whole."""
    with BlockStore.open(path, genesis_hash, create=True) as store:
        h = store.height(CH)
        report = verify_channel(store, CH, genesis_hash, lambda _h: validators, tx_signatures=False)
        assert report.ok, report.line()
        assert report.blocks == h
        if h:
            block, cert = chain_blocks[h - 1]
            assert store.block(CH, h) == block and store.certificate(CH, h) == cert
            assert store.last_hash(CH) == block.hash
            assert store.get_state(CH, b"pad/%d/39" % h) == bytes([39]) * 100
            assert store.get_wal(CH, "committed") == encode(h)
        if h < len(chain_blocks):
            nxt = chain_blocks[h][0]
            assert store.block(CH, h + 1) is None and store.certificate(CH, h + 1) is None
            assert store.height_of(CH, nxt.hash) is None
            assert all(store.tx_location(CH, tx.tx_id) is None for tx in nxt.transactions)
            assert all(store.get_state(CH, k) is None for k in state_writes(nxt))
            assert store.get_state(CH, b"pad/%d/0" % (h + 1)) is None
        return h


def _spawn(path: Path, chain_file: Path, mode: str, target: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            CRASH_CHILD,
            str(REPO),
            str(path),
            str(chain_file),
            mode,
            str(target),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def test_sigkill_at_random_moments_leaves_whole_blocks(tmp_path: Path) -> None:
    chain = make_chain(400, 2)
    chain_file = tmp_path / "chain.pickle"
    chain_file.write_bytes(pickle.dumps((chain.genesis_hash, chain.blocks)))
    path = tmp_path / "ledger"
    rng = random.Random(20240611)
    height = 0
    for _round in range(7):
        proc = _spawn(path, chain_file, "kill")
        assert proc.stdout is not None
        ready = proc.stdout.readline().split()
        assert ready[:1] == ["ready"], proc.stderr.read() if proc.stderr else ""
        assert int(ready[1]) == height
        time.sleep(rng.uniform(0.0, 0.05))
        os.kill(proc.pid, signal.SIGKILL)
        rest = proc.stdout.read().split()
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        acked = [int(x) for x in rest if x.isdigit()]
        acked_height = max(acked, default=height)
        new_height = _check_whole(path, chain.blocks, chain.genesis_hash, chain.validators)
        # every acknowledged (synced) commit survived; at most one more got in
        assert acked_height <= new_height <= acked_height + 1
        height = new_height
    assert height > 0


@pytest.mark.parametrize("mode", ["exit-before", "exit-after"])
def test_exit_around_the_batch_write(tmp_path: Path, mode: str) -> None:
    chain = make_chain(12, 3)
    chain_file = tmp_path / "chain.pickle"
    chain_file.write_bytes(pickle.dumps((chain.genesis_hash, chain.blocks)))
    path = tmp_path / "ledger"
    with open_store(path, chain.genesis_hash) as store:
        commit_chain(store, chain.blocks[:3])
    proc = _spawn(path, chain_file, mode, target=7)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 17, err
    assert out.split()[-1] == "6"  # blocks 4..6 acknowledged, then the exit at 7
    expected = 6 if mode == "exit-before" else 7
    assert _check_whole(path, chain.blocks, chain.genesis_hash, chain.validators) == expected


# ---------------------------------------------------------------- open table files


def _mapped_tables(ledger: Path) -> set[str]:
    """The ledger's table files this process has mapped (LevelDB maps each open one)."""
    prefix = str(ledger.resolve()) + "/"
    with open("/proc/self/maps", encoding="utf-8") as maps:
        return {
            line.split()[-1]
            for line in maps
            if line.rstrip().endswith(".ldb") and line.split()[-1].startswith(prefix)
        }


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_open_tables_bounds_the_mapped_table_files(tmp_path: Path) -> None:
    chain = make_chain(1, 1)
    path = tmp_path / "ledger"
    rng = random.Random(7)
    # 1 MiB write buffer: level-0 tables (one per buffer) as small as the compacted ones
    with BlockStore.open(
        path, chain.genesis_hash, create=True, write_buffer_bytes=1 << 20
    ) as store:
        state_prefix = store._k(CH).state
        # 100 MB of incompressible state values in random key order (so that compaction
        # merges tables rather than moving them), written with the store's own options
        order = list(range(100_000))
        rng.shuffle(order)
        for start in range(0, 100_000, 1000):
            with store._db.write_batch() as wb:
                for key in order[start : start + 1000]:
                    wb.put(state_prefix + b"%03d/%04d" % divmod(key, 1000), rng.randbytes(1000))
        store._db.compact_range()  # as LevelDB does in the background, over time
    sizes = [f.stat().st_size for f in path.iterdir() if f.suffix == ".ldb"]
    # compaction writes tables of TABLE_FILE_BYTES (LevelDB's own default: 2 MiB)
    assert len(sizes) > 64
    assert sorted(sizes)[len(sizes) // 2] <= TABLE_FILE_BYTES + (64 << 10)

    counts = {}
    for open_tables in (64, 1000):
        with BlockStore.open(path, chain.genesis_hash, create=False, open_tables=open_tables) as s:
            assert sum(1 for _ in s.iter_state(CH)) == 100_000
            for key in rng.sample(range(100_000), 2000):  # and point reads all over
                assert s.get_state(CH, b"%03d/%04d" % divmod(key, 1000))
            counts[open_tables] = len(_mapped_tables(path))
        assert not _mapped_tables(path)  # closing the store unmaps them all
    # LevelDB's table cache holds 64; a background compaction started by the point
    # reads (seek compaction) may hold a table or two beyond it while it runs
    assert counts[64] <= 64 + 2 < counts[1000], counts

    with pytest.raises(ValueError, match="open_tables"):
        BlockStore.open(path, chain.genesis_hash, create=False, open_tables=63)


# ---------------------------------------------------------------- write buffer


def _tables(ledger: Path) -> int:
    return sum(1 for f in ledger.iterdir() if f.suffix == ".ldb")


def test_write_buffer_holds_writes_until_it_is_full(tmp_path: Path) -> None:
    """A level-0 table is written when the buffer fills: 5 MiB of WAL entries make
    tables with a 1 MiB buffer and none with the default 8 MiB (still in the log)."""
    chain = make_chain(1, 1)
    rng = random.Random(3)
    blobs = [rng.randbytes(64 << 10) for _ in range(80)]  # 5 MiB, incompressible
    tables = {}
    for buffer in (1 << 20, DEFAULT_WRITE_BUFFER_BYTES):
        path = tmp_path / f"ledger-{buffer}"
        with BlockStore.open(
            path, chain.genesis_hash, create=True, write_buffer_bytes=buffer
        ) as store:
            for i, blob in enumerate(blobs):
                store.put_wal(CH, {f"e{i}": blob})
            time.sleep(0.5)  # LevelDB writes level-0 tables in its background thread
            tables[buffer] = _tables(path)
        with BlockStore.open(path, chain.genesis_hash, create=False) as store:
            assert store.get_wal(CH, "e79") == blobs[79]  # nothing lost either way
    assert DEFAULT_WRITE_BUFFER_BYTES == 8 << 20
    assert tables[1 << 20] >= 3 and tables[DEFAULT_WRITE_BUFFER_BYTES] == 0


def test_write_buffer_bounds(tmp_path: Path) -> None:
    chain = make_chain(1, 1)
    for bad in ((1 << 20) - 1, (256 << 20) + 1):
        with pytest.raises(ValueError, match="write_buffer_bytes"):
            BlockStore.open(tmp_path / "l", chain.genesis_hash, create=True, write_buffer_bytes=bad)
    assert not (tmp_path / "l").exists()  # refused before anything was created


def _table_bytes(ledger: Path) -> int:
    return sum(f.stat().st_size for f in ledger.iterdir() if f.suffix == ".ldb")


def test_compression_is_chosen_per_store_and_either_reads_the_other(tmp_path: Path) -> None:
    """Tables are written with the store's compression (none by default: the
    compactions' CPU); a ledger written one way opens and reads the other way."""
    chain = make_chain(1, 1)
    text = b"".join(b"loan %06d contract 100000 cents; " % i for i in range(2000))  # ~66 KB
    sizes = {}
    for compression in COMPRESSIONS:
        path = tmp_path / compression
        with BlockStore.open(
            path, chain.genesis_hash, create=True, write_buffer_bytes=1 << 20,
            compression=compression,
        ) as store:  # fmt: skip
            for i in range(64):  # 4 MiB: level-0 tables written from full buffers
                store.put_wal(CH, {f"e{i}": text + b"%d" % i})
            store._db.compact_range()
        sizes[compression] = _table_bytes(path)
        other = "snappy" if compression == "none" else "none"
        with BlockStore.open(path, chain.genesis_hash, create=False, compression=other) as s:
            assert s.get_wal(CH, "e63") == text + b"63"
            s.put_wal(CH, {"more": text})  # and appends the other way
            s._db.compact_range()
        with BlockStore.open(path, chain.genesis_hash, create=False) as s:
            assert s.get_wal(CH, "e0") == text + b"0" and s.get_wal(CH, "more") == text
    assert DEFAULT_COMPRESSION == "none"
    assert sizes["none"] > 3 * sizes["snappy"] > 0, sizes


def test_an_unknown_compression_is_refused(tmp_path: Path) -> None:
    chain = make_chain(1, 1)
    with pytest.raises(ValueError, match="compression must be one of none, snappy"):
        BlockStore.open(tmp_path / "l", chain.genesis_hash, create=True, compression="zstd")
    assert not (tmp_path / "l").exists()
