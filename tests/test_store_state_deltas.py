"""The store keeps the state delta given with a block for the last
``state_delta_heights`` heights and ``state_delta_bytes`` bytes only, across
reopening; it learns their sizes on opening from size entries kept beside them, not
from the deltas (a store written before those gets them once)."""

from __future__ import annotations

from pathlib import Path

import plyvel
import pytest

from ledger.blocks import Block
from ledger.certificate import CommitCertificate
from ledger.errors import ConfigError
from ledger.hashing import TAG_STATE, tagged_hash
from ledger.ledger_verify import StateDigest, verify_channel
from ledger.store import (
    DEFAULT_STATE_DELTA_HEIGHTS,
    FORMAT_VERSION,
    BlockCommit,
    BlockStore,
    StoreError,
)
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
    """The heights in 1..``top`` that have a delta (checked: the one given with the block,
    and a size entry for each and no other)."""
    have = {h: d for h, d in deltas(store, top).items() if d is not None}
    assert have == {h: delta_of(h) for h in have}
    assert size_entries(store) == {h: len(d) for h, d in have.items()}
    return sorted(have)


DELTA = b"c/" + CH.encode() + b"/d/"
SIZE = b"c/" + CH.encode() + b"/ds/"


def size_entries(store: BlockStore) -> dict[int, int]:
    """The store's size entries of the channel's deltas, read from LevelDB itself."""
    with store._db.iterator(prefix=SIZE) as it:
        return {int.from_bytes(k[len(SIZE) :], "big"): int.from_bytes(v, "big") for k, v in it}


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


def test_a_narrower_window_or_budget_applies_when_the_store_opens(tmp_path: Path) -> None:
    """Deltas a wider window of an earlier run kept are deleted on open, not served."""
    chain = make_chain(6, 1)
    commits = [commit_of(b, c) for b, c in chain.blocks]
    path = tmp_path / "ledger"
    with open_store(path, chain.genesis_hash) as store:
        store.commit_blocks(CH, commits[:5])
        assert kept(store, 5) == [1, 2, 3, 4, 5]
    with BlockStore.open(path, chain.genesis_hash, create=False, state_delta_heights=2) as store:
        assert kept(store, 5) == [4, 5]
        store.commit_blocks(CH, commits[5:])
        assert kept(store, 6) == [5, 6]
    size = len(delta_of(6))
    with BlockStore.open(path, chain.genesis_hash, create=False, state_delta_bytes=size) as store:
        assert kept(store, 6) == [6]
    with BlockStore.open(path, chain.genesis_hash, create=False, state_delta_heights=0) as store:
        assert kept(store, 6) == []


@pytest.mark.parametrize("batched", [False, True], ids=["one-by-one", "one-batch"])
def test_the_oldest_deltas_go_once_their_bytes_exceed_the_budget(
    tmp_path: Path, batched: bool
) -> None:
    """``state_delta_bytes`` bounds the window's disk use whatever the blocks' size:
    the oldest deltas go first; one larger than the whole budget is not kept."""
    chain = make_chain(8, 1)
    big = {h: bytes([h]) * 100 for h in range(1, 9)}
    big[7] = b"\x07" * 1000  # alone over the budget
    commits = [commit_of(b, c, big[b.height]) for b, c in chain.blocks]
    path = tmp_path / "ledger"
    with BlockStore.open(path, chain.genesis_hash, create=True, state_delta_bytes=250) as store:
        if batched:
            store.commit_blocks(CH, commits[:6])
        else:
            for commit in commits[:6]:
                store.commit_blocks(CH, [commit])
        assert [h for h in range(1, 7) if store.state_delta_at(CH, h)] == [5, 6]
        store.commit_blocks(CH, commits[6:7])
        assert [h for h in range(1, 8) if store.state_delta_at(CH, h)] == []
        store.commit_blocks(CH, commits[7:])
        assert [h for h in range(1, 9) if store.state_delta_at(CH, h)] == [8]
        assert store.state_delta_at(CH, 8) == big[8]
    with BlockStore.open(path, chain.genesis_hash, create=False, state_delta_bytes=250) as store:
        assert [h for h in range(1, 9) if store.state_delta_at(CH, h)] == [8]
        assert store.height(CH) == 8  # the blocks themselves are all there


def test_the_sizes_on_opening_come_from_the_size_entries(tmp_path: Path) -> None:
    """Opening reads the size entries, not the deltas: an entry that says 1,000 bytes
    puts its delta over a 250-byte budget, although the delta itself is 7 bytes."""
    chain = make_chain(3, 1)
    path = tmp_path / "ledger"
    with open_store(path, chain.genesis_hash) as store:
        store.commit_blocks(CH, [commit_of(b, c) for b, c in chain.blocks])
        assert kept(store, 3) == [1, 2, 3]
        store._db.put(SIZE + (2).to_bytes(8, "big"), (1000).to_bytes(4, "big"))
    with BlockStore.open(path, chain.genesis_hash, create=False, state_delta_bytes=250) as store:
        assert kept(store, 3) == [3]  # 2 "weighs" 1,000: it and the older 1 went


def as_format_1(store: BlockStore, *, marked: bool) -> None:
    """Make ``store`` look as a format-1 binary left it (``marked``: one that kept size
    entries and set ``g/delta_sizes``)."""
    store._db.put(b"g/version", b"1")
    if marked:
        store._db.put(b"g/delta_sizes", b"")
    else:
        store._db.delete(b"g/delta_sizes")


def test_a_format_1_store_without_size_entries_gets_them_once(tmp_path: Path) -> None:
    chain = make_chain(4, 1)
    path = tmp_path / "ledger"
    with open_store(path, chain.genesis_hash) as store:
        store.commit_blocks(CH, [commit_of(b, c) for b, c in chain.blocks])
        for h in range(1, 5):  # as the binaries before the size entries left it
            store._db.delete(SIZE + h.to_bytes(8, "big"))
        store._db.put(DELTA + b"\x01", b"not a height")  # no delta this store wrote
        as_format_1(store, marked=False)
        assert size_entries(store) == {}
    size = len(delta_of(4))
    with BlockStore.open(
        path, chain.genesis_hash, create=False, state_delta_bytes=2 * size
    ) as store:
        assert kept(store, 4) == [3, 4]  # sizes read from the deltas, then the budget
        assert size_entries(store) == {3: size, 4: size}
        assert store._db.get(b"g/version") == FORMAT_VERSION == b"2"
        assert store._db.get(DELTA + b"\x01") == b"not a height"  # left alone
    with open_store(path, chain.genesis_hash) as store:
        assert kept(store, 4) == [3, 4]


def test_upgrading_a_format_1_store_rebuilds_entries_a_rollback_left_wrong(
    tmp_path: Path,
) -> None:
    """A node rolled back to a binary without size entries, then forward again: the
    deltas it wrote have no entries, the ones it pruned left theirs behind, and the
    marker still says all is indexed. The upgrade trusts none of it."""
    chain = make_chain(6, 1)
    path = tmp_path / "ledger"
    with open_store(path, chain.genesis_hash) as store:
        store.commit_blocks(CH, [commit_of(b, c) for b, c in chain.blocks])
        for h in (1, 2):  # pruned by the old binary: the deltas gone, entries left
            store._db.delete(DELTA + h.to_bytes(8, "big"))
        for h in (5, 6):  # written by the old binary: no entries
            store._db.delete(SIZE + h.to_bytes(8, "big"))
        store._db.put(SIZE + b"\x02", b"junk")  # malformed: would refuse a format-2 open
        as_format_1(store, marked=True)
    with BlockStore.open(path, chain.genesis_hash, create=False) as store:
        size = len(delta_of(3))
        assert size_entries(store) == {3: size, 4: size, 5: size, 6: size}
        assert store._delta_bytes[CH] == 4 * size
        assert store._db.get(b"g/version") == b"2"
        assert store._db.get(b"g/delta_sizes") is None


def test_a_crash_during_the_upgrade_leaves_format_1_and_the_next_open_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two channels, the power cut while the second is rebuilt: the first is rebuilt,
    the version still says 1, and the next open rebuilds both and says 2."""
    channels = ("risk", "supervision")
    chains = {ch: make_chain(3, 1, channel=ch) for ch in channels}
    genesis = chains["risk"].genesis_hash
    path = tmp_path / "ledger"

    def entries(db: plyvel.DB, channel: str) -> list[int]:
        prefix = b"c/" + channel.encode() + b"/ds/"
        with db.iterator(prefix=prefix, include_value=False) as it:
            return [int.from_bytes(k[len(prefix) :], "big") for k in it]

    with open_store(path, genesis) as store:
        for ch, chain in chains.items():
            store.commit_blocks(ch, [commit_of(b, c) for b, c in chain.blocks])
            store._db.delete(b"c/" + ch.encode() + b"/ds/" + (3).to_bytes(8, "big"))
        as_format_1(store, marked=True)
    rebuilt: list[str] = []
    rebuild = BlockStore._prune_deltas

    def cut_on_second(self: BlockStore, channel: str) -> None:
        if rebuilt:
            raise OSError("power cut")
        rebuild(self, channel)
        rebuilt.append(channel)

    with monkeypatch.context() as m:
        m.setattr(BlockStore, "_prune_deltas", cut_on_second)
        with pytest.raises(OSError, match="power cut"):
            BlockStore.open(path, genesis, create=False)
    (first,) = rebuilt
    (second,) = set(channels) - {first}
    with plyvel.DB(str(path)) as db:
        assert db.get(b"g/version") == b"1"
        assert entries(db, first) == [1, 2, 3]
        assert entries(db, second) == [1, 2]
    with BlockStore.open(path, genesis, create=False) as store:
        assert store._db.get(b"g/version") == b"2"
        assert {ch: entries(store._db, ch) for ch in channels} == {
            "risk": [1, 2, 3],
            "supervision": [1, 2, 3],
        }


def test_a_store_open_read_only_writes_nothing(tmp_path: Path) -> None:
    """Read-only (``wulian ledger verify``): a format-1 store stays format 1 with its
    entries as they were, sized from its deltas; deltas outside the window stay; a
    commit is refused with nothing written."""
    chain = make_chain(6, 1)
    path = tmp_path / "ledger"
    with open_store(path, chain.genesis_hash) as store:
        store.commit_blocks(CH, [commit_of(b, c) for b, c in chain.blocks[:5]])
        store._db.delete(SIZE + (5).to_bytes(8, "big"))  # as a format-1 binary may leave it
        store._db.put(SIZE + b"\x02", b"junk")
        as_format_1(store, marked=True)
    with plyvel.DB(str(path)) as db:
        before = dict(db.iterator())
    with BlockStore.open(
        path, chain.genesis_hash, create=False, state_delta_heights=2, read_only=True
    ) as store:
        assert [h for h in range(1, 6) if store.state_delta_at(CH, h)] == [1, 2, 3, 4, 5]
        assert store._delta_bytes[CH] == 5 * len(delta_of(1))  # from the deltas
        b6, c6 = chain.blocks[5]
        with pytest.raises(StoreError, match="read-only"):
            store.commit_blocks(CH, [commit_of(b6, c6)])
        assert store.height(CH) == 5
    with plyvel.DB(str(path)) as db:
        assert dict(db.iterator()) == before
    with pytest.raises(ValueError, match="read-only"):
        BlockStore.open(tmp_path / "new", chain.genesis_hash, create=True, read_only=True)


@pytest.mark.parametrize("version", [b"0", b"3", b""])
def test_an_unknown_store_format_is_refused(tmp_path: Path, version: bytes) -> None:
    """A store format this binary neither reads nor upgrades (as a format-1 binary
    refuses format 2) is refused, and left as it is."""
    chain = make_chain(2, 1)
    path = tmp_path / "ledger"
    with open_store(path, chain.genesis_hash) as store:
        store.commit_blocks(CH, [commit_of(b, c) for b, c in chain.blocks])
        store._db.put(b"g/version", version)
    with pytest.raises(ConfigError, match="unsupported ledger format version"):
        BlockStore.open(path, chain.genesis_hash, create=False)
    with plyvel.DB(str(path)) as db:  # refused without a write
        assert db.get(b"g/version") == version


MALFORMED = pytest.mark.parametrize(
    ("key", "value"),
    [(SIZE + (2).to_bytes(8, "big"), b"\x00\x01"), (SIZE + b"\x02", (7).to_bytes(4, "big"))],
    ids=["short-value", "short-height"],
)


@MALFORMED
def test_a_malformed_size_entry_is_rebuilt_on_opening(
    tmp_path: Path, key: bytes, value: bytes
) -> None:
    """Size entries are derived from the deltas: a malformed one (format 2) has the
    channel's entries rebuilt from them, in the same batch as the pruning, instead of
    stopping the node. The next open finds them sound."""
    chain = make_chain(4, 1)
    path = tmp_path / "ledger"
    with open_store(path, chain.genesis_hash, state_delta_heights=3) as store:
        store.commit_blocks(CH, [commit_of(b, c) for b, c in chain.blocks])
        store._db.put(key, value)
        store._db.delete(SIZE + (4).to_bytes(8, "big"))  # and one entry lost besides
    with open_store(path, chain.genesis_hash, state_delta_heights=3) as store:
        assert store.rebuilt_size_entries == [CH]
        size = len(delta_of(2))
        assert size_entries(store) == {2: size, 3: size, 4: size}
        assert store._delta_bytes[CH] == 3 * size
        assert kept(store, 4) == [2, 3, 4]
        assert store._db.get(b"g/version") == FORMAT_VERSION
    with open_store(path, chain.genesis_hash, state_delta_heights=3) as store:
        assert store.rebuilt_size_entries == []
        assert kept(store, 4) == [2, 3, 4]


@MALFORMED
def test_a_read_only_open_reads_past_a_malformed_size_entry_and_writes_nothing(
    tmp_path: Path, key: bytes, value: bytes
) -> None:
    chain = make_chain(2, 1)
    path = tmp_path / "ledger"
    with open_store(path, chain.genesis_hash) as store:
        store.commit_blocks(CH, [commit_of(b, c) for b, c in chain.blocks])
        store._db.put(key, value)
    with BlockStore.open(path, chain.genesis_hash, create=False, read_only=True) as store:
        assert store.rebuilt_size_entries == [CH]
        assert store._delta_bytes[CH] == 2 * len(delta_of(1))
    with plyvel.DB(str(path)) as db:
        assert db.get(key) == value


INITIAL = tagged_hash(TAG_STATE, b"before block 1")


def toy_digest() -> StateDigest:
    """A digest under which block h's delta is ``b"from:" + root(h - 1)``: it leads to the
    toy root recorded after the block, anything else to a root nobody recorded."""

    def root_after(block: Block, prev: bytes, delta: bytes) -> bytes:
        return state_root_after(block) if delta == b"from:" + prev else bytes(32)

    return StateDigest(INITIAL, root_after)


def test_ledger_verify_checks_the_kept_deltas_against_the_roots(tmp_path: Path) -> None:
    chain = make_chain(4, 1)
    prev = INITIAL
    commits = []
    for b, c in chain.blocks:
        commits.append(commit_of(b, c, b"from:" + prev))
        prev = state_root_after(b)
    with open_store(tmp_path / "ledger", chain.genesis_hash) as store:
        store.commit_blocks(CH, commits)

        def verify(digest: StateDigest | None) -> object:
            return verify_channel(
                store, CH, chain.genesis_hash, lambda _h: chain.validators, state_digest=digest
            )

        report = verify(toy_digest())
        assert report.ok and report.blocks == 4, report.line()
        for h in (1, 3):  # block 1 chains from the digest's initial root
            good = store.state_delta_at(CH, h)
            assert good is not None
            store._db.put(DELTA + h.to_bytes(8, "big"), good + b"!")
            report = verify(toy_digest())
            assert report.failed_height == h and "state delta" in str(report.problem)
            assert verify(None).ok  # without the channel layer's digest: not checked
            store._db.put(DELTA + h.to_bytes(8, "big"), good)
        assert verify(toy_digest()).ok
