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
