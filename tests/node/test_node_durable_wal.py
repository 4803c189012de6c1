"""The replica's durable state as write-ahead entries (``node.durable_wal``), on a real
store: each write holds only what changed, the state read back is always the last one
written, and a store that holds the whole state in one entry (as before) is read and
moved over."""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.durable import DurableState
from consensus.replica import Ready
from ledger.errors import LedgerError
from ledger.store import BlockStore
from node.durable_wal import LEGACY_ENTRY, PREFIX, DurableWal
from tests.consensus.test_replica_harness import Cluster

CH = "supervision"
GENESIS = b"\x07" * 32


def _pipelined_states() -> list[DurableState]:
    """The durable states a replica of a busy cluster persisted, in order: votes, then
    prepared certificates (each with its block) coming and going as blocks commit."""
    c = Cluster(4, max_batch_txs=3, batch_interval_ms=0)
    states: list[DurableState] = []

    def keep(name: str, rd: Ready, height: int) -> None:
        if name == "n2" and rd.persist is not None:
            states.append(rd.persist)

    c.on_ready = keep
    c.tick(0)
    for _ in range(6):
        c.submit("n1", c.clients.txs(9))
        c.run(40)
    c.run_until(lambda: min(c.heights().values()) >= 10, 5000)
    assert sum(1 for s in states if s.prepared) >= 5
    return states


@pytest.fixture
def store(tmp_path: Path) -> BlockStore:
    s = BlockStore.open(tmp_path / "ledger", GENESIS, create=True)
    yield s
    s.close()


def test_each_write_holds_only_what_changed_and_reads_back_whole(store: BlockStore) -> None:
    states = _pipelined_states()
    state, wal = DurableWal.load(store, CH)
    assert state is None
    written = whole = 0
    puts: dict[str, int] = {}
    for st in states:
        entries = wal.changes(st)
        store.put_wal(CH, entries)
        wal.written()
        written += sum(len(v) for v in entries.values() if v is not None)
        whole += len(st.to_bytes())
        for name, value in entries.items():
            if value is not None:
                puts[name] = puts.get(name, 0) + 1
        loaded, _ = DurableWal.load(store, CH)
        assert loaded == st
        assert set(store.wal_items(CH, PREFIX)) == {PREFIX + k.decode() for k in st.to_records()}
    assert wal.changes(states[-1]) == {}  # the same state again: nothing to write
    # each prepared certificate (its block) was written once
    certs = {pc.encoded for st in states for pc in st.prepared}
    assert sorted(v for n, v in puts.items() if n.startswith(PREFIX + "prep/")) == [1] * len(certs)
    assert written < whole


def test_a_vote_alone_rewrites_only_the_small_meta_entry(store: BlockStore) -> None:
    states = _pipelined_states()
    with_prep = next(s for s in states if s.prepared)
    _, wal = DurableWal.load(store, CH)
    store.put_wal(CH, wal.changes(with_prep))
    wal.written()
    newer = DurableState(
        view=with_prep.view,
        view_active=with_prep.view_active,
        view_change_sent=with_prep.view_change_sent,
        votes=(*with_prep.votes, (999, with_prep.view, b"\x05" * 32)),
        prepared=with_prep.prepared,
    )
    # the whole state would rewrite every prepared block with each vote
    assert list(wal.changes(newer)) == [PREFIX + "meta"]
    wal.written()
    assert len(newer.to_bytes()) > 5 * len(newer.to_records()[b"meta"])


def test_the_state_in_one_entry_is_read_then_moved_to_records(store: BlockStore) -> None:
    states = _pipelined_states()
    old = next(s for s in states if s.prepared)
    store.put_wal(CH, {LEGACY_ENTRY: old.to_bytes()})
    state, wal = DurableWal.load(store, CH)
    assert state == old
    entries = wal.changes(states[-1])
    assert entries[LEGACY_ENTRY] is None  # deleted in the same batch
    store.put_wal(CH, entries)
    wal.written()
    assert store.get_wal(CH, LEGACY_ENTRY) is None
    assert DurableWal.load(store, CH)[0] == states[-1]
    assert LEGACY_ENTRY not in wal.changes(states[-1])


def test_a_damaged_entry_stops_the_load(store: BlockStore) -> None:
    """A replica must not vote from a guess: an entry that does not decode raises."""
    states = _pipelined_states()
    _, wal = DurableWal.load(store, CH)
    store.put_wal(CH, wal.changes(next(s for s in states if s.prepared)))
    wal.written()
    name = next(n for n in store.wal_items(CH, PREFIX) if n.startswith(PREFIX + "prep/"))
    store.put_wal(CH, {name: b"\xc1 not msgpack"})
    with pytest.raises(LedgerError):
        DurableWal.load(store, CH)
    store.put_wal(CH, {PREFIX + "meta": None})
    with pytest.raises(LedgerError, match="no meta"):
        DurableWal.load(store, CH)


def test_written_without_changes_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        DurableWal({}).written()
