"""The lender's local record store: SQLite in a directory the lender owns.

It holds every transaction the SDK built (signed or awaiting an offline signature),
the exact bytes and salt of each record it commits to, the transaction's progress,
evidence codes once known, and stream checkpoints. It never holds a raw ID number.

Durability: WAL journal with ``synchronous=FULL``, one SQLite transaction per change,
so a change is on disk when the call returns. The SDK stores a transaction and its
records **before** sending it: a crash between the two loses nothing — on restart
:meth:`RecordStore.unfinished` lists it and the client resubmits the very same signed
transaction (same tx id; the network commits it at most once).

States (only ever move forward)::

    unsigned ──attach──▶ unsent ──▶ sent ──▶ committed | invalid
                              └──────┴──────▶ rejected
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from clients._errors import RecordStoreError
from clients._records import PreparedTransaction, Record, UnsignedTransaction
from ledger.blocks import Transaction
from ledger.encoding import decode
from ledger.errors import LedgerError

DB_FILE: Final = "records.sqlite3"
SCHEMA_VERSION: Final = 1
STATES: Final = ("unsigned", "unsent", "sent", "committed", "invalid", "rejected")
_RANK: Final = {"unsigned": 0, "unsent": 1, "sent": 2, "committed": 3, "invalid": 3, "rejected": 3}
FINAL_STATES: Final = frozenset({"committed", "invalid", "rejected"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS txs (
    tx_id      BLOB PRIMARY KEY,
    channel    TEXT NOT NULL,
    type       TEXT NOT NULL,
    body       BLOB NOT NULL,
    sig        BLOB,
    state      TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    height     INTEGER,
    tx_index   INTEGER,
    code       TEXT,
    message    TEXT
);
CREATE INDEX IF NOT EXISTS txs_by_state ON txs (state, created_ms);
CREATE TABLE IF NOT EXISTS records (
    tx_id         BLOB NOT NULL,
    idx           INTEGER NOT NULL,
    data          BLOB NOT NULL,
    salt          BLOB NOT NULL,
    commitment    BLOB NOT NULL,
    evidence_code TEXT,
    PRIMARY KEY (tx_id, idx)
);
CREATE INDEX IF NOT EXISTS records_by_commitment ON records (commitment);
CREATE TABLE IF NOT EXISTS checkpoints (name TEXT PRIMARY KEY, height INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class StoredTx:
    """A transaction as the store holds it."""

    tx: Transaction
    records: tuple[Record, ...]
    state: str
    created_ms: int
    updated_ms: int
    height: int | None = None
    index: int | None = None
    code: str | None = None
    message: str | None = None

    @property
    def tx_id(self) -> bytes:
        return self.tx.tx_id

    @property
    def signed(self) -> bool:
        return self.state != "unsigned"

    def prepared(self) -> PreparedTransaction:
        if not self.signed:
            raise RecordStoreError(
                "transaction is not signed yet (attach its signature first)", tx_id=self.tx_id
            )
        return PreparedTransaction(self.tx, self.records)

    def unsigned(self) -> UnsignedTransaction:
        return UnsignedTransaction(self.tx, self.records)


@dataclass(frozen=True)
class Progress:
    """A state change for :meth:`RecordStore.mark_many`."""

    tx_id: bytes
    state: str
    height: int | None = None
    index: int | None = None
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class StoredRecord:
    """One record and where it was committed."""

    tx_id: bytes
    index: int
    record: Record
    evidence_code: str | None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _one_line(exc: object) -> str:
    return " ".join(str(exc).split())[:300]


class RecordStore:
    """The SQLite record store in ``directory`` (created, mode 0700, if missing).

    ``network`` (the genesis hash) and ``owner`` (the lender's org id) are written on
    first use and checked afterwards, so one store never mixes networks or lenders.
    With ``check``, :meth:`check_integrity` runs at once. Raises
    :class:`RecordStoreError` (one line naming the file) if the directory or database
    cannot be used; every method raises it for any SQLite error, never sqlite3.Error.
    Thread-safe (one connection behind a lock).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        network: bytes,
        owner: str,
        check: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self._checked = False
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise RecordStoreError(f"{self.directory}: cannot create ({exc.strerror})") from None
        self.path = self.directory / DB_FILE
        self._lock = threading.Lock()
        try:
            fresh = not self.path.exists()
            if fresh:
                fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RecordStoreError(f"{self.path}: cannot switch to WAL mode (got {mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._tx():
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        self._db.execute(stmt)
            self._check_meta(network, owner)
        except (sqlite3.Error, OSError, RecordStoreError) as exc:
            with contextlib.suppress(sqlite3.Error, AttributeError):
                self._db.close()
            if isinstance(exc, RecordStoreError):
                raise
            why = exc.strerror if isinstance(exc, OSError) else _one_line(exc)
            raise RecordStoreError(f"{self.path}: cannot open the record store ({why})") from None
        if check:
            try:
                self.check_integrity()
            except RecordStoreError:
                self.close()
                raise

    # ------------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def _sql(self, what: str, tx_id: bytes | None = None) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; any sqlite3.Error becomes a one-line
        :class:`RecordStoreError` naming the file and what failed."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise RecordStoreError(
                    f"{self.path}: cannot {what} ({_one_line(exc)})", tx_id=tx_id
                ) from None

    def check_integrity(self) -> None:
        """``PRAGMA quick_check``, once per open store: it reads the whole database
        (about 0.2 s per 100,000 reports when cached, seconds from a cold disk), so
        only the CLI and the crash-recovery paths (``pending``/``recover``) ask for it.
        Raises :class:`RecordStoreError` naming the file if the store is damaged."""
        if self._checked:
            return
        with self._sql("check the record store"):
            rows = self._db.execute("PRAGMA quick_check").fetchall()
        problems = [str(r[0]).replace("*** in database main ***", "") for r in rows]
        problems = [p for p in problems if p.strip() != "ok"]
        if problems or not rows:
            first = _one_line(problems[0] if problems else "no answer")[:120]
            more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
            raise RecordStoreError(
                f"{self.path}: the record store is damaged (quick_check: {first}{more}); "
                "restore it from a backup"
            )
        self._checked = True

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One durable SQLite transaction (BEGIN IMMEDIATE … COMMIT)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _check_meta(self, network: bytes, owner: str) -> None:
        with self._lock, self._tx() as db:
            rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
            want = {"network": network, "owner": owner.encode(), "schema": b"%d" % SCHEMA_VERSION}
            for key, value in want.items():
                have = rows.get(key)
                if have is None:
                    db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
                elif bytes(have) != value:
                    shown = bytes(have).hex() if key == "network" else bytes(have).decode()
                    raise RecordStoreError(
                        f"{self.path}: store belongs to {key} {shown[:16]}, not this client's"
                    )

    def close(self) -> None:
        with self._sql("close the record store"):
            self._db.close()

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transactions

    def put(self, item: PreparedTransaction | UnsignedTransaction) -> StoredTx:
        """Store a transaction and its records durably (state ``unsent``, or ``unsigned``).

        Idempotent: storing the same transaction again changes nothing (a signature
        is added to a stored unsigned one). Raises :class:`RecordStoreError` if another
        body is stored under the same id, or the write fails (then nothing is stored).
        """
        self.put_many([item])
        return self.get(item.tx.tx_id)

    def put_many(self, items: Sequence[PreparedTransaction | UnsignedTransaction]) -> None:
        """Store several transactions in ONE durable SQLite transaction (all or none)."""
        now = _now_ms()
        first = items[0].tx.tx_id if items else None
        with self._sql("store transactions", first), self._tx() as db:
            for item in items:
                tx = item.tx
                tx_id = tx.tx_id
                signed = isinstance(item, PreparedTransaction)
                row = db.execute("SELECT body, state FROM txs WHERE tx_id = ?", (tx_id,)).fetchone()
                if row is None:
                    db.execute(
                        "INSERT INTO txs (tx_id, channel, type, body, sig, state, created_ms,"
                        " updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            tx_id, tx.channel, tx.type, tx.body_bytes,
                            tx.signature if signed else None,
                            "unsent" if signed else "unsigned", now, now,
                        ),
                    )  # fmt: skip
                    db.executemany(
                        "INSERT INTO records (tx_id, idx, data, salt, commitment)"
                        " VALUES (?, ?, ?, ?, ?)",
                        [
                            (tx_id, i, r.data, r.salt, r.commitment)
                            for i, r in enumerate(item.records)
                        ],
                    )
                elif bytes(row[0]) != tx.body_bytes:
                    raise RecordStoreError("another body is stored under this tx id", tx_id=tx_id)
                elif signed and row[1] == "unsigned":
                    db.execute(
                        "UPDATE txs SET sig = ?, state = 'unsent', updated_ms = ? WHERE tx_id = ?",
                        (tx.signature, now, tx_id),
                    )

    def attach_signature(self, tx_id: bytes, signature: bytes) -> StoredTx:
        """Record the signature of an ``unsigned`` transaction (→ ``unsent``). The
        caller has checked it (``UnsignedTransaction.attach``)."""
        with self._sql("store a signature", tx_id), self._tx() as db:
            db.execute(
                "UPDATE txs SET sig = ?, state = 'unsent', updated_ms = ?"
                " WHERE tx_id = ? AND state = 'unsigned'",
                (signature, _now_ms(), tx_id),
            )
        return self.get(tx_id)

    def mark(
        self,
        tx_id: bytes,
        state: str,
        *,
        height: int | None = None,
        index: int | None = None,
        code: str | None = None,
        message: str | None = None,
    ) -> None:
        """Move a transaction forward to ``state`` (never backwards; unknown ids and
        backward moves are ignored)."""
        self.mark_many([Progress(tx_id, state, height, index, code, message)])

    def mark_many(self, changes: Sequence[Progress]) -> None:
        """Apply several :meth:`mark` changes in one durable SQLite transaction."""
        for ch in changes:
            if ch.state not in _RANK:
                raise ValueError(f"unknown state {ch.state!r}")
        now = _now_ms()
        with self._sql("update transactions"), self._tx() as db:
            for ch in changes:
                row = db.execute("SELECT state FROM txs WHERE tx_id = ?", (ch.tx_id,)).fetchone()
                if row is None or row[0] == "unsigned" or _RANK[row[0]] >= _RANK[ch.state]:
                    continue
                db.execute(
                    "UPDATE txs SET state = ?, updated_ms = ?, height = ?, tx_index = ?,"
                    " code = ?, message = ? WHERE tx_id = ?",
                    (ch.state, now, ch.height, ch.index, ch.code, ch.message, ch.tx_id),
                )

    def _row_to_stored(self, row: Any) -> StoredTx:
        tx_id, body, sig, state, created, updated, height, index, code, message = row
        try:
            wire = decode(bytes(body))
            if not isinstance(wire, dict):
                raise RecordStoreError("stored body is not a map", tx_id=bytes(tx_id))
            if sig is not None:
                tx = Transaction.from_wire({**wire, "sig": bytes(sig)})
            else:
                tx = Transaction.from_wire({**wire, "sig": bytes(64)})
                tx = Transaction(
                    tx.network, tx.channel, tx.type, tx.sender, tx.public_key, tx.nonce,
                    tx.time_ms, tx.payload, b"",
                )  # fmt: skip
        except LedgerError as exc:
            raise RecordStoreError(
                f"stored transaction is corrupt ({exc})", tx_id=bytes(tx_id)
            ) from None
        if tx.tx_id != bytes(tx_id):
            raise RecordStoreError("stored transaction does not match its id", tx_id=bytes(tx_id))
        recs = self._db.execute(
            "SELECT data, salt FROM records WHERE tx_id = ? ORDER BY idx", (tx_id,)
        ).fetchall()
        return StoredTx(
            tx=tx,
            records=tuple(Record(bytes(d), bytes(s)) for d, s in recs),
            state=state,
            created_ms=created,
            updated_ms=updated,
            height=height,
            index=index,
            code=code,
            message=message,
        )

    _COLS = "tx_id, body, sig, state, created_ms, updated_ms, height, tx_index, code, message"

    def get(self, tx_id: bytes) -> StoredTx:
        """The stored transaction; raises :class:`RecordStoreError` if unknown."""
        found = self.find(tx_id)
        if found is None:
            raise RecordStoreError("no such transaction in the record store", tx_id=tx_id)
        return found

    def find(self, tx_id: bytes) -> StoredTx | None:
        """The stored transaction, None if the store has none. Raises
        :class:`RecordStoreError` if the store (or that transaction) is damaged."""
        with self._sql("read a transaction", tx_id):
            row = self._db.execute(
                f"SELECT {self._COLS} FROM txs WHERE tx_id = ?", (tx_id,)
            ).fetchone()
            return None if row is None else self._row_to_stored(row)

    def state_of(self, tx_id: bytes) -> tuple[str, int | None] | None:
        """``(state, height)`` of a stored transaction (None if not stored)."""
        with self._sql("read a transaction", tx_id):
            row = self._db.execute(
                "SELECT state, height FROM txs WHERE tx_id = ?", (tx_id,)
            ).fetchone()
        return None if row is None else (str(row[0]), row[1])

    def list_txs(self, states: tuple[str, ...] = STATES, *, limit: int = 1000) -> list[StoredTx]:
        """Transactions in ``states``, oldest first."""
        marks = ",".join("?" * len(states))
        with self._sql("list transactions"):
            rows = self._db.execute(
                f"SELECT {self._COLS} FROM txs WHERE state IN ({marks})"
                " ORDER BY created_ms, rowid LIMIT ?",
                (*states, limit),
            ).fetchall()
            return [self._row_to_stored(r) for r in rows]

    def unfinished(self, *, limit: int = 100_000) -> list[StoredTx]:
        """Signed transactions not known to be final (``unsent`` or ``sent``), oldest
        first: what to resubmit after a crash."""
        return self.list_txs(("unsent", "sent"), limit=limit)

    def count(self, state: str) -> int:
        with self._sql("count transactions"):
            n = self._db.execute("SELECT COUNT(*) FROM txs WHERE state = ?", (state,)).fetchone()
            return int(n[0])

    # ------------------------------------------------------------------ records

    def find_record(self, commitment: bytes) -> StoredRecord | None:
        """The record committed as ``commitment`` (None if the store has none)."""
        with self._sql("read a record"):
            row = self._db.execute(
                "SELECT tx_id, idx, data, salt, evidence_code FROM records"
                " WHERE commitment = ? ORDER BY rowid LIMIT 1",
                (commitment,),
            ).fetchone()
        if row is None:
            return None
        return StoredRecord(bytes(row[0]), row[1], Record(bytes(row[2]), bytes(row[3])), row[4])

    def record(self, tx_id: bytes, index: int) -> StoredRecord:
        with self._sql("read a record", tx_id):
            row = self._db.execute(
                "SELECT data, salt, evidence_code FROM records WHERE tx_id = ? AND idx = ?",
                (tx_id, index),
            ).fetchone()
        if row is None:
            raise RecordStoreError(f"no record {index} of this transaction", tx_id=tx_id)
        return StoredRecord(tx_id, index, Record(bytes(row[0]), bytes(row[1])), row[2])

    def set_evidence_code(self, tx_id: bytes, index: int, code: str) -> None:
        with self._sql("store an evidence code", tx_id), self._tx() as db:
            db.execute(
                "UPDATE records SET evidence_code = ? WHERE tx_id = ? AND idx = ?",
                (code, tx_id, index),
            )

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self, name: str) -> int | None:
        """The last height fully processed by stream ``name`` (None if never)."""
        with self._sql("read a stream checkpoint"):
            row = self._db.execute(
                "SELECT height FROM checkpoints WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else int(row[0])

    def save_checkpoint(self, name: str, height: int) -> None:
        with self._sql("save a stream checkpoint"), self._tx() as db:
            db.execute(
                "INSERT INTO checkpoints (name, height) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET height = excluded.height",
                (name, height),
            )
