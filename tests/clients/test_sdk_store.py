"""The local record store: durability settings, forward-only states, crash safety."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from clients import Record, RecordStore, RecordStoreError
from clients._records import PreparedTransaction, make_transaction
from ledger.crypto import Ed25519Signer

NET = b"\x11" * 32
SIGNER = Ed25519Signer(b"\x03" * 32)
ROOT = Path(__file__).resolve().parents[2]


def prepared(key: str, records: int = 1) -> PreparedTransaction:
    recs = [Record.new({"k": key, "i": i}) for i in range(records)]
    return make_transaction(
        network=NET, channel="supervision", tx_type="loan_event", sender="lender1",
        public_key=SIGNER.public_key, payload={"k": key}, time_ms=1, records=recs,
    ).sign_with(SIGNER)  # fmt: skip


def test_store_is_wal_with_full_sync_and_private(tmp_path: Path) -> None:
    with RecordStore(tmp_path / "s", network=NET, owner="lender1") as store:
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert (os.stat(tmp_path / "s").st_mode & 0o777) == 0o700
        assert (os.stat(store.path).st_mode & 0o777) == 0o600
    db = sqlite3.connect(tmp_path / "s" / "records.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_round_trip_keeps_exact_bytes_and_salt(tmp_path: Path) -> None:
    p = prepared("a", records=3)
    with RecordStore(tmp_path, network=NET, owner="lender1") as store:
        stored = store.put(p)
        assert stored.state == "unsent" and stored.tx == p.tx
        assert stored.tx.encoded() == p.tx.encoded()
        assert stored.records == p.records
        again = store.put(p)  # idempotent
        assert again.created_ms == stored.created_ms
        found = store.find_record(p.records[2].commitment)
        assert found is not None and (found.tx_id, found.index) == (p.tx_id, 2)
        assert found.record == p.records[2]
        assert store.find_record(b"\x00" * 32) is None


def test_states_only_move_forward(tmp_path: Path) -> None:
    p = prepared("b")
    with RecordStore(tmp_path, network=NET, owner="lender1") as store:
        store.put(p)
        store.mark(p.tx_id, "sent")
        store.mark(p.tx_id, "committed", height=4, index=2, code="ok")
        store.mark(p.tx_id, "sent")  # ignored: backwards
        s = store.get(p.tx_id)
        assert (s.state, s.height, s.index, s.code) == ("committed", 4, 2, "ok")
        assert store.unfinished() == []
        with pytest.raises(ValueError):
            store.mark(p.tx_id, "lost")


def test_unsigned_then_attached(tmp_path: Path) -> None:
    p = prepared("c")
    unsigned = make_transaction(
        network=NET, channel="supervision", tx_type="loan_event", sender="lender1",
        public_key=SIGNER.public_key, payload={"k": "c"}, time_ms=1, nonce=p.tx.nonce,
        records=p.records,
    )  # fmt: skip
    assert unsigned.tx_id == p.tx_id
    with RecordStore(tmp_path, network=NET, owner="lender1") as store:
        assert store.put(unsigned).state == "unsigned"
        assert store.unfinished() == []  # nothing to send before it is signed
        with pytest.raises(RecordStoreError):
            store.get(p.tx_id).prepared()
        assert store.put(p).state == "unsent"
        assert store.get(p.tx_id).prepared().tx.signature == p.tx.signature


def test_store_refuses_another_network_or_owner(tmp_path: Path) -> None:
    RecordStore(tmp_path, network=NET, owner="lender1").close()
    with pytest.raises(RecordStoreError, match="network"):
        RecordStore(tmp_path, network=b"\x12" * 32, owner="lender1")
    with pytest.raises(RecordStoreError, match="owner"):
        RecordStore(tmp_path, network=NET, owner="lender2")


def test_checkpoints(tmp_path: Path) -> None:
    with RecordStore(tmp_path, network=NET, owner="lender1") as store:
        assert store.checkpoint("sup") is None
        store.save_checkpoint("sup", 7)
        store.save_checkpoint("sup", 9)
        assert store.checkpoint("sup") == 9


def test_a_killed_process_loses_nothing_it_stored(tmp_path: Path) -> None:
    """SIGKILL right after put(): the record, salt and signed bytes survive."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.clients.test_sdk_store import prepared
        from clients import RecordStore
        store = RecordStore({str(tmp_path)!r}, network=b"\\x11" * 32, owner="lender1")
        p = prepared("crash", records=2)
        store.put(p)
        sys.stdout.write(p.tx.encoded().hex() + " " + p.records[1].salt.hex() + "\\n")
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == -9, done.stderr
    wire_hex, salt_hex = done.stdout.split()
    with RecordStore(tmp_path, network=NET, owner="lender1") as store:
        (unsent,) = store.unfinished()
        assert unsent.tx.encoded().hex() == wire_hex
        assert unsent.records[1].salt.hex() == salt_hex


PAGE = 4096


def _damaged_copy(tmp_path: Path, n: int = 20) -> tuple[Path, list[bytes], dict[str, int]]:
    """A store of ``n`` signed, unsent transactions (WAL checkpointed into the file),
    and the root page of each table and index."""
    d = tmp_path / "s"
    with RecordStore(d, network=NET, owner="lender1") as store:
        items = [prepared(f"d{i}" + "x" * 300) for i in range(n)]
        store.put_many(items)
    db = sqlite3.connect(d / "records.sqlite3")
    roots = dict(db.execute("SELECT name, rootpage FROM sqlite_master WHERE rootpage > 0"))
    db.close()
    return d, [i.tx_id for i in items], roots


def _damage(d: Path, page: int, offset: int, data: bytes) -> None:
    with open(d / "records.sqlite3", "r+b") as fh:
        fh.seek((page - 1) * PAGE + offset)
        fh.write(data)


def test_a_damaged_index_is_refused_before_it_hides_unfinished_transactions(
    tmp_path: Path,
) -> None:
    """A torn index page (cell count zeroed) makes `unfinished()` silently return
    nothing: `check_integrity` (quick_check) refuses the store first, naming the file."""
    d, ids, roots = _damaged_copy(tmp_path)
    _damage(d, roots["txs_by_state"], 3, b"\x00\x00")
    with RecordStore(d, network=NET, owner="lender1") as store:  # opening stays cheap
        assert store.unfinished() == []  # what the damage does: 20 are unfinished
        with pytest.raises(RecordStoreError, match="damaged") as err:
            store.check_integrity()
        assert store.find(ids[0]) is not None
    message = str(err.value)
    assert str(d / "records.sqlite3") in message and "\n" not in message
    with pytest.raises(RecordStoreError, match="damaged"):
        RecordStore(d, network=NET, owner="lender1", check=True)


def test_sqlite_errors_of_store_methods_are_record_store_errors(tmp_path: Path) -> None:
    d, ids, roots = _damaged_copy(tmp_path)
    _damage(d, roots["txs"], 0, b"\x0d\xff\xff\x00\x50")
    with RecordStore(d, network=NET, owner="lender1") as store:
        for call in (
            lambda: store.get(ids[3]),
            lambda: store.find(ids[3]),
            lambda: store.unfinished(),
            lambda: store.mark(ids[3], "sent"),
        ):
            with pytest.raises(RecordStoreError) as err:
                call()
            assert str(d / "records.sqlite3") in str(err.value)
            assert not isinstance(err.value, sqlite3.Error)
    d2 = tmp_path / "garbage"
    d2.mkdir()
    (d2 / "records.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(RecordStoreError, match="cannot open the record store"):
        RecordStore(d2, network=NET, owner="lender1")
