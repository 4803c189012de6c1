"""The LevelDB block store: one database per node holding every channel's ledger.

This is the only module that touches LevelDB (plyvel). The database lives at
``DATA_DIR/ledger``; every key is prefixed by its channel so channels never collide.

Key layout (``<h>`` is the height as 8-byte big-endian, so keys sort by height)::

    g/genesis              genesis hash this ledger was created for
    g/version              store format version (b"2"; a b"1" store is upgraded when it
                           first opens, see below)
    g/ch/<channel>         b"" — the channel has at least one block
    c/<ch>/b/<h>           encoded Block (header and transactions)
    c/<ch>/e/<h>           encoded BlockHeader (cheap header reads; equals the block's)
    c/<ch>/q/<h>           encoded CommitCertificate, stored beside its block
    c/<ch>/h/<block hash>  <h>
    c/<ch>/t/<tx id>       encode([height, index])
    c/<ch>/s/<state key>   state value (opaque bytes, owned by the channel layer)
    c/<ch>/m/tip           encode([height, block hash]) of the last block
    c/<ch>/m/root/<h>      state root after applying blocks 1..h (given by the caller)
    c/<ch>/d/<h>           the block's state delta (opaque bytes from the channel layer:
                           what the root covers beyond the previous one), kept for the
                           last ``state_delta_heights`` heights (and
                           ``state_delta_bytes``) only
    c/<ch>/ds/<h>          that delta's size, 4-byte big-endian, written and deleted
                           with it (the store opens without reading the deltas)
    c/<ch>/w/<name>        consensus write-ahead entries (opaque bytes)

Format versions: b"2" (this store) has a size entry for each kept delta and for nothing
else. A b"1" store (older binaries; they kept no size entries, or kept them without
telling older binaries apart: ``g/delta_sizes``) is upgraded when it first opens: every
channel's size entries are rebuilt from its deltas, then the version becomes b"2" —
which a format-1 binary refuses to open, so a rolled-back node cannot leave deltas
without entries or entries without deltas behind. A crash during the upgrade leaves
b"1", and the next open rebuilds again.

Contracts:

* :meth:`BlockStore.commit_block` writes a block, its certificate, the hash and
  transaction indexes, the state writes, the state root and the tip in ONE LevelDB
  write batch with ``sync=True``: after a crash either all of it is there or none.
  :meth:`BlockStore.commit_blocks` does the same for several consecutive blocks.
* The store checks structure (height sequence, hash links, ``tx_root``, certificate
  names this block, tx ids not yet seen). It does NOT check certificate signatures or
  transaction signatures: it has no validator set. The consensus layer checks those
  before committing; ``wulian ledger verify`` (:mod:`ledger.ledger_verify`) rechecks
  them for the whole chain.
* State digest: the channel layer computes the state root after applying a block and
  passes it to ``commit_block``; the store records it per height
  (:meth:`BlockStore.state_root_at`), since block headers carry a lagged root. With it
  the channel layer may pass the block's state delta, which the store keeps for the
  last ``state_delta_heights`` heights, at most ``state_delta_bytes`` of them per
  channel (:meth:`BlockStore.state_delta_at`; served to nodes that catch up, who check
  it against certified roots). The store does not
  check a delta: it does not know the channel layer's digest.
* On open the store refuses (:class:`~ledger.errors.ConfigError`) a ledger made for
  another genesis, and checks the last ``verify_recent`` blocks of every channel,
  raising :class:`~ledger.errors.CorruptLedgerError` naming channel and height.
  LevelDB runs with ``paranoid_checks``: a damaged log record or table block raises
  :class:`~ledger.errors.CorruptLedgerError` (never silently dropped); a torn last
  record (a write that never completed) is discarded, leaving the last whole batch.
  Every read verifies the checksums of the table blocks it loads (LevelDB's default
  does not: a flipped byte in a data block was read back as garbage). Tables carry
  Bloom filters (10 bits a key), so reads of absent keys skip the data blocks.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final

import msgpack
import plyvel

from ledger.blocks import Block, BlockHeader, Transaction, channel_genesis_hash
from ledger.certificate import CommitCertificate
from ledger.encoding import decode, encode
from ledger.errors import ConfigError, CorruptLedgerError, LedgerError
from ledger.hashing import HASH_SIZE
from ledger.schema import is_name

FORMAT_VERSION: Final = b"2"
#: Store formats that opening upgrades to :data:`FORMAT_VERSION` (see the module doc).
UPGRADABLE_VERSIONS: Final = frozenset({b"1"})
#: How many of each channel's last blocks are rechecked when the store opens…
DEFAULT_VERIFY_RECENT: Final = 16
#: …unless they hold more transactions than this (then fewer blocks, at least the last
#: one): rechecking costs ~80 µs per transaction, and a restart should stay quick.
DEFAULT_VERIFY_RECENT_TXS: Final = 20_000
#: LevelDB table files kept open. LevelDB maps each open table file into memory (up to
#: 1,000 of them) and every page read stays in the process's resident set until the
#: table is closed: with its default (1,000 files) a node's RSS grows with its ledger —
#: 178–313 MB of mapped tables per node at 10⁶ records (469 MB of ledger each; session
#: 10). 64 open tables of ≤ 1 MiB (:data:`TABLE_FILE_BYTES`) bound that to 64 MiB (plus
#: the few level-0 tables, each about :data:`DEFAULT_WRITE_BUFFER_BYTES`); a
#: table read after it was closed is opened again (its index and filter blocks read
#: anew). Tables written before with LevelDB's 2 MiB stay so until compaction rewrites
#: them.
DEFAULT_OPEN_TABLES: Final = 64
#: Size of the table files LevelDB's compactions write (its smallest; its default is
#: 2 MiB). With 10⁶ records on the ledger: peak RSS 229–280 MB per node with 2 MiB
#: tables, 202–234 MB with 1 MiB; catch-up and throughput unchanged (session 10).
TABLE_FILE_BYTES: Final = 1 << 20
#: LevelDB's write buffer (its memtable): writes gather here, then go to a level-0
#: table and are compacted down the levels. With LevelDB's default (4 MiB) its
#: background compactions took about a quarter of each node's CPU under load — a
#: native thread no Python profiler sees — rewriting every byte ~7 times: each of the
#: many reads of keys that do not exist yet (a new transaction, report or loan id)
#: probes a level-0 or level-1 table and one below it, and LevelDB compacts a table
#: once it has been probed past so often ("seek compaction": file size / 16 KiB times,
#: at least 100); so each flushed table went down at once, and a level-1 table holding
#: one flush's random keys spans the whole key space: merging it rewrites a share of
#: level 2 that grows with the ledger. Bytes rewritten per byte written go as (level-2
#: size) / (write buffer). 90 s of full load (BENCHMARKS.md): 4 MiB 4.3 ms of node CPU
#: per transaction, 8 MiB 3.6, 16 MiB 3.2 — but 16 MiB took one node to 275 MB at 10⁶
#: records (8 MiB: 215–235 MB, as 4 MiB). LevelDB holds up to two buffers (a full one
#: while it is written out) and writes a level-0 table of about this size.
DEFAULT_WRITE_BUFFER_BYTES: Final = 8 << 20
#: How LevelDB compresses the blocks of the tables it writes: ``"none"`` or
#: ``"snappy"`` (LevelDB's default). Compression is CPU in the compactions and in every
#: read of a block: under full load, three alternating pairs (BENCHMARKS.md, session
#: 19), 532.7 / 616.0, 532.1 / 584.1, 546.9 / 604.0 tx/s (snappy / none), node CPU
#: 3.40 / 2.89 … 3.31 / 2.96 ms per transaction; with 10⁶ records peak RSS 247.1 →
#: 200.9 MB (blocks read from the mapped tables as they are, not decompressed into
#: the heap). The price is disk: 492 → 1,302 bytes of ledger per record. Each block
#: records its own compression, so a ledger written either way is read either way.
COMPRESSIONS: Final = ("none", "snappy")
DEFAULT_COMPRESSION: Final = "none"
#: Heights whose state deltas are kept (:meth:`BlockStore.state_delta_at`): a node that
#: fell up to this many blocks behind catches up without applying them. Each costs
#: about the size of the block's state writes (~1.4 KB a loan report)…
DEFAULT_STATE_DELTA_HEIGHTS: Final = 16_384
#: …and a channel keeps at most this many bytes of them (the oldest go first): ~180,000
#: loan reports' worth, so large blocks do not make the window's disk use unbounded.
DEFAULT_STATE_DELTA_BYTES: Final = 256 << 20
MIN_WRITE_BUFFER_BYTES: Final = 1 << 20
MAX_WRITE_BUFFER_BYTES: Final = 256 << 20
#: LevelDB's own bounds on ``max_open_files`` (it keeps 10 for its log and manifest).
_LEVELDB_NON_TABLE_FILES: Final = 10
MIN_OPEN_TABLES: Final = 64
MAX_OPEN_TABLES: Final = 49_990
#: Decoded blocks kept after their commit (all channels together), and the cap on
#: their encoded bytes (a decoded block takes about 3× its encoded size).
RECENT_BLOCKS: Final = 40
RECENT_BLOCK_BYTES: Final = 8 * 1024 * 1024

_G_GENESIS: Final = b"g/genesis"
_G_VERSION: Final = b"g/version"
_G_CHANNEL: Final = b"g/ch/"
#: Format 1 only: set by binaries that kept size entries; removed by the upgrade.
_G_DELTA_SIZES: Final = b"g/delta_sizes"


class StoreError(LedgerError):
    """The ledger database cannot be opened, read or written (missing, locked by
    another process, not a LevelDB database, I/O failure)."""

    code = "store_error"


class DamagedStoreError(StoreError, CorruptLedgerError):
    """LevelDB itself reports damage (checksum mismatch, unreadable table block, a
    manifest that is missing): both a store error and a corrupt ledger, so
    ``wulian node --repair`` treats it like any other corruption."""

    code = "corrupt_ledger"


class BlockRejectedError(LedgerError):
    """``commit_block`` refused a block (wrong height, broken link, body not matching
    its header, certificate for another block, duplicate tx id). Nothing was written."""

    code = "block_rejected"


@dataclass(frozen=True)
class BlockCommit:
    """One block to append (see :meth:`BlockStore.commit_block` for the fields)."""

    block: Block
    certificate: CommitCertificate
    state_writes: Mapping[bytes, bytes | None]
    state_root: bytes
    wal: Mapping[str, bytes | None] = field(default_factory=dict)
    #: The block's state delta (empty: none is kept for it)
    state_delta: bytes = b""


@dataclass(frozen=True)
class TxLocation:
    """Where a transaction is: block height and index inside the block."""

    height: int
    index: int


@dataclass(frozen=True)
class LocatedTx:
    transaction: Transaction
    height: int
    index: int


@dataclass(frozen=True)
class RawBlock:
    """A block and its certificate as stored (canonical bytes), for catch-up serving."""

    height: int
    block: bytes
    certificate: bytes


@dataclass(frozen=True)
class IndexSizes:
    """Entry counts of a channel's per-block keys."""

    blocks: int
    headers: int
    certificates: int
    hashes: int
    transactions: int
    state_roots: int


@dataclass(frozen=True)
class Tip:
    """A channel's last block. ``height`` 0 means no block yet; ``hash`` is then the
    channel genesis hash (the ``prev_hash`` of block 1)."""

    height: int
    hash: bytes


def height_key(height: int) -> bytes:
    return height.to_bytes(8, "big")


def _key_height(suffix: bytes) -> int:
    if len(suffix) != 8:
        raise ValueError("height key suffix must be 8 bytes")
    return int.from_bytes(suffix, "big")


class _Keys:
    """Key builders for one channel."""

    __slots__ = (
        "base",
        "block",
        "cert",
        "delta",
        "delta_size",
        "hash",
        "header",
        "root",
        "state",
        "tip",
        "tx",
        "wal",
    )

    def __init__(self, channel: str) -> None:
        self.base = b"c/" + channel.encode("ascii") + b"/"
        self.block = self.base + b"b/"
        self.header = self.base + b"e/"
        self.cert = self.base + b"q/"
        self.hash = self.base + b"h/"
        self.tx = self.base + b"t/"
        self.state = self.base + b"s/"
        self.tip = self.base + b"m/tip"
        self.root = self.base + b"m/root/"
        self.wal = self.base + b"w/"
        self.delta = self.base + b"d/"
        self.delta_size = self.base + b"ds/"


def _size_bytes(size: int) -> bytes:
    """A state delta's size entry (4-byte big-endian; a delta is far below 4 GiB)."""
    return size.to_bytes(4, "big")


def _check_channel(channel: str) -> None:
    if not isinstance(channel, str) or not is_name(channel):
        raise ValueError(f"{channel!r} is not a valid channel name")


class BlockStore:
    """The node's ledger database. Open with :meth:`open`; use as a context manager.

    Reads are safe from several threads; commits and WAL writes are serialised by a
    lock. Decoding errors of stored values raise :class:`CorruptLedgerError`.
    """

    def __init__(
        self,
        db: plyvel.DB,
        path: Path,
        genesis_hash: bytes,
        state_delta_heights: int = DEFAULT_STATE_DELTA_HEIGHTS,
        state_delta_bytes: int = DEFAULT_STATE_DELTA_BYTES,
        read_only: bool = False,
    ) -> None:
        self._db = db
        self._read_only = read_only
        self._delta_heights = state_delta_heights
        self._delta_budget = state_delta_bytes
        #: per channel: (height, size) of each kept delta, oldest first, and their sum
        self._deltas: dict[str, deque[tuple[int, int]]] = {}
        self._delta_bytes: dict[str, int] = {}
        self._path = path
        self._genesis_hash = genesis_hash
        self._lock = threading.Lock()
        self._keys: dict[str, _Keys] = {}
        self._tips: dict[str, Tip] = {}
        self._channels: set[str] = set()
        #: Decoded blocks of the latest commits, oldest first, and their encoded bytes.
        self._recent: OrderedDict[tuple[str, int], tuple[Block, int]] = OrderedDict()
        self._recent_bytes = 0
        #: a format-1 store: its size entries are not trusted (rebuilt on opening, or
        #: read from the deltas when read-only); False once it is marked format 2
        self._upgrading = False
        #: Channels whose format-2 size entries were found malformed on opening and
        #: rebuilt from their deltas (read-only: read from the deltas, nothing written).
        self.rebuilt_size_entries: list[str] = []

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(
        cls,
        path: str | Path,
        genesis_hash: bytes,
        *,
        create: bool,
        verify_recent: int = DEFAULT_VERIFY_RECENT,
        verify_recent_txs: int = DEFAULT_VERIFY_RECENT_TXS,
        open_tables: int = DEFAULT_OPEN_TABLES,
        write_buffer_bytes: int = DEFAULT_WRITE_BUFFER_BYTES,
        compression: str = DEFAULT_COMPRESSION,
        state_delta_heights: int = DEFAULT_STATE_DELTA_HEIGHTS,
        state_delta_bytes: int = DEFAULT_STATE_DELTA_BYTES,
        read_only: bool = False,
    ) -> BlockStore:
        """Open (or with ``create=True`` create) the ledger database at ``path``,
        keeping at most ``open_tables`` LevelDB table files open (and mapped; see
        :data:`DEFAULT_OPEN_TABLES`), a write buffer of ``write_buffer_bytes``
        (:data:`DEFAULT_WRITE_BUFFER_BYTES`) and writing tables with ``compression``
        (:data:`DEFAULT_COMPRESSION`), keeping the state deltas of each channel's last
        ``state_delta_heights`` heights (:data:`DEFAULT_STATE_DELTA_HEIGHTS`; 0: none)
        and at most ``state_delta_bytes`` of them (:data:`DEFAULT_STATE_DELTA_BYTES`;
        the oldest go first).

        Raises :class:`StoreError` if the database is missing (and ``create`` is false),
        locked by another process or not LevelDB; :class:`ConfigError` if it was made
        for another genesis or an unknown store format, or holds foreign data; and
        :class:`CorruptLedgerError` if any channel's last ``verify_recent`` blocks (fewer
        if they hold over ``verify_recent_txs`` transactions; see :meth:`check_recent`)
        are inconsistent, or LevelDB reports damaged files. A channel's state-delta size
        entries are derived data: a malformed one has them all rebuilt from the deltas
        (:attr:`rebuilt_size_entries`), as a format-1 store's are. ``verify_recent=0`` skips
        the check (the verifier walks all). Opening writes: the state deltas outside the
        window are deleted, and a format-1 store is upgraded to format 2 (module doc) —
        unless ``read_only``: then nothing is written (every delta stays, a format-1 store
        stays format 1, its deltas' sizes read from the deltas) and every write raises
        :class:`StoreError` (LevelDB may still replay its log into a table file: the
        same content). ValueError for ``create`` with ``read_only``, a genesis hash that
        is not 32 bytes, ``open_tables`` outside 64–49,990 (LevelDB's range),
        ``write_buffer_bytes`` outside 1–256 MiB, a ``compression`` not in
        :data:`COMPRESSIONS` or a negative ``state_delta_heights`` or
        ``state_delta_bytes``.
        """
        p = Path(path)
        if len(genesis_hash) != HASH_SIZE:
            raise ValueError("genesis hash must be 32 bytes")
        if not MIN_OPEN_TABLES <= open_tables <= MAX_OPEN_TABLES:
            raise ValueError(f"open_tables must be {MIN_OPEN_TABLES} to {MAX_OPEN_TABLES}")
        if not MIN_WRITE_BUFFER_BYTES <= write_buffer_bytes <= MAX_WRITE_BUFFER_BYTES:
            raise ValueError("write_buffer_bytes must be 1 to 256 MiB")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}")
        if state_delta_heights < 0 or state_delta_bytes < 0:
            raise ValueError("state_delta_heights and state_delta_bytes must be 0 or more")
        if create and read_only:
            raise ValueError("a store cannot be created read-only")
        if not create and not p.is_dir():
            raise StoreError(f"no ledger database at {p}")
        if create:
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create {p.parent}: {exc.strerror}") from None
        try:
            # paranoid_checks: a damaged log record or table block is an error, not
            # silently skipped (which would drop committed blocks from the middle of
            # the chain); a torn record at the very end of the log (a write that never
            # completed) is still discarded, leaving the last complete batch.
            # Bloom filters (10 bits a key): most reads while applying a block look for
            # keys that do not exist yet (a new transaction id, report id, loan), and
            # without a filter each such miss reads a data block of every level:
            # 17 µs → 3 µs a miss on a 300,000-key table (hits 10 → 8 µs). Tables
            # written before without filters are still read as they are.
            db = plyvel.DB(
                str(p),
                create_if_missing=create,
                paranoid_checks=True,
                bloom_filter_bits=10,
                max_open_files=open_tables + _LEVELDB_NON_TABLE_FILES,
                max_file_size=TABLE_FILE_BYTES,
                write_buffer_size=write_buffer_bytes,
                compression=None if compression == "none" else compression,
            )
        except plyvel.CorruptionError as exc:
            raise _corrupt_db(p, exc) from None
        except plyvel.IOError as exc:
            text = str(exc)
            if "lock" in text.lower():
                raise StoreError(
                    f"ledger database {p} is locked by another process (is the node running?)"
                ) from None
            raise StoreError(f"cannot open ledger database {p}: {text.strip()}") from None
        except plyvel.Error as exc:
            raise StoreError(
                f"{p} is not a usable LevelDB ledger database: {str(exc).strip()}"
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot open ledger database {p}: {exc.strerror}") from None
        store = cls(db, p, bytes(genesis_hash), state_delta_heights, state_delta_bytes, read_only)
        try:
            store._init_meta(create)
            store._load_channels()
            if verify_recent > 0:
                for channel in sorted(store._channels):
                    store.check_recent(channel, verify_recent, max_txs=verify_recent_txs)
        except plyvel.Error as exc:
            db.close()
            raise _corrupt_db(p, exc) from None
        except BaseException:
            db.close()
            raise
        return store

    def _init_meta(self, create: bool) -> None:
        stored = self._get(_G_GENESIS)
        if stored is None:
            has_data = False
            with self._db.iterator(include_value=False, verify_checksums=True) as it:
                for _ in it:
                    has_data = True
                    break
            if has_data:
                raise ConfigError(str(self._path), "genesis", "not a wulian ledger database")
            if not create:
                raise StoreError(f"no ledger database at {self._path}")
            with self._db.write_batch(sync=True) as wb:
                wb.put(_G_GENESIS, self._genesis_hash)
                wb.put(_G_VERSION, FORMAT_VERSION)
            return
        if stored != self._genesis_hash:
            raise ConfigError(
                str(self._path),
                "genesis",
                f"ledger was created for genesis {stored.hex()[:16]}…, "
                f"not {self._genesis_hash.hex()[:16]}… (wrong data directory or genesis file?)",
            )
        version = self._get(_G_VERSION)
        if version in UPGRADABLE_VERSIONS:
            self._upgrading = True
        elif version != FORMAT_VERSION:
            raise ConfigError(
                str(self._path),
                "version",
                f"unsupported ledger format version {version!r} (this wulian reads "
                f"{FORMAT_VERSION!r} and upgrades {b'1'!r}: a newer release wrote it?)",
            )

    def _load_channels(self) -> None:
        with self._db.iterator(prefix=_G_CHANNEL, include_value=False, verify_checksums=True) as it:
            for key in it:
                name = key[len(_G_CHANNEL) :].decode("ascii", "replace")
                if not is_name(name):
                    raise CorruptLedgerError(f"ledger corrupt: bad channel entry {key!r}")
                self._channels.add(name)
        for channel in self._channels:
            self._tips[channel] = self._read_tip(channel)
            self._prune_deltas(channel)
        if self._upgrading and not self._read_only:
            # every channel rebuilt: now (and only now) format 2
            self._write([(_G_VERSION, FORMAT_VERSION)], [_G_DELTA_SIZES])
            self._upgrading = False

    def _sizes_of_deltas(self, keys: _Keys) -> list[tuple[int, int]]:
        """(height, size) of each kept state delta, oldest first, read from the deltas
        themselves (a key that is not 8 bytes of height is no delta this store wrote)."""
        out = []
        with self._db.iterator(prefix=keys.delta, verify_checksums=True) as it:
            for key, value in it:
                hk = key[len(keys.delta) :]
                if len(hk) == 8:
                    out.append((int.from_bytes(hk, "big"), len(value)))
        return out

    def _size_entries(self, keys: _Keys) -> list[tuple[int, int]] | None:
        """(height, size) of each size entry, oldest first; None if one is malformed."""
        out = []
        with self._db.iterator(prefix=keys.delta_size, verify_checksums=True) as it:
            for key, value in it:
                hk = key[len(keys.delta_size) :]
                if len(hk) != 8 or len(value) != 4:
                    return None
                out.append((int.from_bytes(hk, "big"), int.from_bytes(value, "big")))
        return out

    def _prune_deltas(self, channel: str) -> None:
        """Load the sizes of the channel's kept state deltas and delete those outside
        the last ``state_delta_heights`` heights or the ``state_delta_bytes`` budget
        (left by a wider window or budget of an earlier run), in one synced batch.

        Format 2: the sizes come from the size entries, not the deltas. Format 1 (its
        entries are not trusted), or a format-2 channel with a malformed entry (the
        entries are derived data: the channel is listed in :attr:`rebuilt_size_entries`):
        from the deltas themselves (read this once), and the same batch rebuilds the
        entries — one for each delta kept, none else (stale or malformed ones deleted).
        Read-only: the sizes only, nothing deleted or rebuilt."""
        keys = self._k(channel)
        entries = None if self._upgrading else self._size_entries(keys)
        rebuild = entries is None
        if rebuild and not self._upgrading:
            self.rebuilt_size_entries.append(channel)
        kept = deque(self._sizes_of_deltas(keys) if entries is None else entries)
        total = sum(size for _, size in kept)
        if not self._read_only:
            old, total = self._leaving(kept, total, self._tips[channel].height)
            deletes = [k + height_key(h) for h in old for k in (keys.delta, keys.delta_size)]
            for _ in old:
                kept.popleft()
            puts = []
            if rebuild:
                with self._db.iterator(
                    prefix=keys.delta_size, include_value=False, verify_checksums=True
                ) as it:
                    deletes.extend(it)
                puts = [(keys.delta_size + height_key(h), _size_bytes(n)) for h, n in kept]
            if puts or deletes:
                self._write(puts, deletes)  # deletes go first: a rebuilt entry stays
        self._deltas[channel] = kept
        self._delta_bytes[channel] = total

    def _leaving(
        self, deltas: Iterable[tuple[int, int]], total: int, top: int
    ) -> tuple[list[int], int]:
        """The heights of the oldest of ``deltas`` ((height, size), oldest first, their
        sizes summing to ``total``) that leave the window once ``top`` is the channel's
        height: below its last ``state_delta_heights`` heights, or over the
        ``state_delta_bytes`` budget. Returns them and the bytes then kept."""
        first_kept = top - self._delta_heights + 1
        out: list[int] = []
        for h, size in deltas:
            if h >= first_kept and total <= self._delta_budget:
                break
            out.append(h)
            total -= size
        return out, total

    def _stage_deltas(
        self,
        channel: str,
        keys: _Keys,
        commits: Sequence[BlockCommit],
        ops: dict[bytes, bytes | None],
    ) -> tuple[list[tuple[int, int]], int, int]:
        """Add the ``commits``' state deltas to ``ops``, with the deletion of the oldest
        that leave the window (heights or bytes). Returns what to record once ``ops``
        is written (:meth:`_kept_deltas`): the new deltas' (height, size), how many
        of the oldest go, and the bytes then kept."""
        kept = self._deltas.setdefault(channel, deque())
        total = self._delta_bytes.get(channel, 0)
        new: list[tuple[int, int]] = []
        if self._delta_heights > 0 and self._delta_budget > 0:
            for c in commits:
                if c.state_delta:
                    hk = height_key(c.block.height)
                    ops[keys.delta + hk] = bytes(c.state_delta)
                    ops[keys.delta_size + hk] = _size_bytes(len(c.state_delta))
                    new.append((c.block.height, len(c.state_delta)))
                    total += len(c.state_delta)
        old, total = self._leaving(itertools.chain(kept, new), total, commits[-1].block.height)
        for h in old:
            ops[keys.delta + height_key(h)] = None
            ops[keys.delta_size + height_key(h)] = None
        return new, len(old), total

    def _kept_deltas(self, channel: str, staged: tuple[list[tuple[int, int]], int, int]) -> None:
        """Record what :meth:`_stage_deltas` staged, now that it is written."""
        new, dropped, total = staged
        kept = self._deltas[channel]
        kept.extend(new)
        for _ in range(dropped):
            kept.popleft()
        self._delta_bytes[channel] = total

    def close(self) -> None:
        """Close the database (idempotent)."""
        if not self._db.closed:
            self._db.close()

    @property
    def closed(self) -> bool:
        return bool(self._db.closed)

    def __enter__(self) -> BlockStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers

    @property
    def path(self) -> Path:
        return self._path

    @property
    def genesis_hash(self) -> bytes:
        return self._genesis_hash

    def _get(self, key: bytes) -> bytes | None:
        try:
            value = self._db.get(key, verify_checksums=True)
        except plyvel.CorruptionError as exc:
            raise _corrupt_db(self._path, exc) from None
        return None if value is None else bytes(value)

    def _k(self, channel: str) -> _Keys:
        keys = self._keys.get(channel)
        if keys is None:
            _check_channel(channel)
            keys = self._keys[channel] = _Keys(channel)
        return keys

    def _corrupt(self, channel: str, height: int | None, what: str) -> CorruptLedgerError:
        where = f"channel {channel!r}" + (f" height {height}" if height is not None else "")
        return CorruptLedgerError(
            f"ledger corrupt: {where}: {what} (run `wulian ledger verify`)",
            channel=channel,
            height=height,
        )

    def _read_tip(self, channel: str) -> Tip:
        raw = self._get(self._k(channel).tip)
        if raw is None:
            return Tip(0, channel_genesis_hash(self._genesis_hash, channel))
        try:
            value = decode(raw)
            if (
                not isinstance(value, list)
                or len(value) != 2
                or not isinstance(value[0], int)
                or not isinstance(value[1], bytes)
                or value[0] < 1
                or len(value[1]) != HASH_SIZE
            ):
                raise ValueError("malformed")
        except (LedgerError, ValueError):
            raise self._corrupt(channel, None, "tip metadata is malformed") from None
        return Tip(value[0], value[1])

    # ------------------------------------------------------------------ reads

    def channels(self) -> tuple[str, ...]:
        """Channels holding at least one block, sorted."""
        return tuple(sorted(self._channels))

    def tip(self, channel: str) -> Tip:
        tip = self._tips.get(channel)
        if tip is None:
            self._k(channel)
            return Tip(0, channel_genesis_hash(self._genesis_hash, channel))
        return tip

    def height(self, channel: str) -> int:
        """Height of the channel's last block (0 if none)."""
        return self.tip(channel).height

    def last_hash(self, channel: str) -> bytes:
        """Hash of the last block's header, or the channel genesis hash if none."""
        return self.tip(channel).hash

    def raw_block(self, channel: str, height: int) -> bytes | None:
        return self._get(self._k(channel).block + height_key(height))

    def raw_certificate(self, channel: str, height: int) -> bytes | None:
        return self._get(self._k(channel).cert + height_key(height))

    def block(self, channel: str, height: int) -> Block | None:
        """The committed block at ``height`` (``None`` above the tip). The newest
        blocks come from memory (the relays, workers and catch-up answers read each
        one again right after its commit); older ones are read and decoded."""
        hit = self._recent.get((channel, height))
        if hit is not None:
            return hit[0]
        raw = self.raw_block(channel, height)
        return None if raw is None else self._decode_block(channel, height, raw)

    def _remember(self, channel: str, height: int, block: Block, size: int) -> None:
        """Keep a just-committed block decoded; caller holds ``_lock``. Bounded by
        :data:`RECENT_BLOCKS` and :data:`RECENT_BLOCK_BYTES` (encoded size)."""
        recent = self._recent
        recent[(channel, height)] = (block, size)
        self._recent_bytes += size
        while recent and (len(recent) > RECENT_BLOCKS or self._recent_bytes > RECENT_BLOCK_BYTES):
            _key, (_block, old_size) = recent.popitem(last=False)
            self._recent_bytes -= old_size

    def header(self, channel: str, height: int) -> BlockHeader | None:
        """The block header alone (does not decode the transactions)."""
        raw = self._get(self._k(channel).header + height_key(height))
        if raw is None:
            return None
        try:
            return BlockHeader.from_wire(decode(raw))
        except LedgerError as exc:
            raise self._corrupt(channel, height, f"stored header does not decode: {exc}") from None

    def certificate(self, channel: str, height: int) -> CommitCertificate | None:
        raw = self.raw_certificate(channel, height)
        return None if raw is None else self._decode_cert(channel, height, raw)

    def height_of(self, channel: str, block_hash: bytes) -> int | None:
        raw = self._get(self._k(channel).hash + block_hash)
        return None if raw is None else _key_height(raw)

    def block_by_hash(self, channel: str, block_hash: bytes) -> Block | None:
        height = self.height_of(channel, block_hash)
        return None if height is None else self.block(channel, height)

    def tx_location(self, channel: str, tx_id: bytes) -> TxLocation | None:
        raw = self._get(self._k(channel).tx + tx_id)
        if raw is None:
            return None
        loc = _parse_tx_location(raw)
        if loc is None:
            raise self._corrupt(channel, None, f"tx index entry {tx_id.hex()} is malformed")
        return loc

    def transaction(self, channel: str, tx_id: bytes) -> LocatedTx | None:
        """The committed transaction with id ``tx_id`` and where it is, or None.

        Decodes only that transaction (not the whole block); its id is recomputed and
        must equal ``tx_id``, else :class:`CorruptLedgerError`.
        """
        loc = self.tx_location(channel, tx_id)
        if loc is None:
            return None
        raw = self.raw_block(channel, loc.height)
        tx: Transaction | None = None
        if raw is not None:
            try:
                wire = msgpack.unpackb(raw, raw=False, strict_map_key=True)
                tx = Transaction.from_wire(wire["txs"][loc.index])
            except Exception:  # msgpack, indexing and schema errors alike: corrupt
                tx = None
        if tx is None or tx.tx_id != tx_id or tx.channel != channel:
            raise self._corrupt(channel, loc.height, f"tx index for {tx_id.hex()} is wrong")
        return LocatedTx(tx, loc.height, loc.index)

    def state_root_at(self, channel: str, height: int) -> bytes | None:
        """The state root recorded after applying block ``height`` (None if unknown)."""
        return self._get(self._k(channel).root + height_key(height))

    def state_delta_at(self, channel: str, height: int) -> bytes | None:
        """The state delta stored with block ``height`` (None if none was given, or it
        has left the window: ``state_delta_heights``, ``state_delta_bytes``)."""
        return self._get(self._k(channel).delta + height_key(height))

    def get_state(self, channel: str, key: bytes) -> bytes | None:
        return self._get(self._k(channel).state + key)

    def iter_state(self, channel: str, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` pairs whose key starts with ``prefix``, in key order, from a
        consistent snapshot taken when iteration starts."""
        full = self._k(channel).state
        cut = len(full)
        with self._db.iterator(prefix=full + prefix, verify_checksums=True) as it:
            for key, value in it:
                yield key[cut:], value

    def last_state_below(
        self, channel: str, prefix: bytes, stop: bytes
    ) -> tuple[bytes, bytes] | None:
        """The state item with the greatest key starting with ``prefix`` and less than
        ``stop`` (one backward seek), or ``None``."""
        full = self._k(channel).state
        lower = full + prefix
        upper = min(full + stop, _range_end(lower))
        with self._db.iterator(start=lower, stop=upper, reverse=True, verify_checksums=True) as it:
            for key, value in it:
                return key[len(full) :], value
        return None

    def iter_raw_blocks(
        self, channel: str, from_height: int = 1, to_height: int | None = None
    ) -> Iterator[RawBlock]:
        """Stored blocks and certificates with ``from_height ≤ height ≤ to_height``
        (default: the tip), from one snapshot, without decoding them."""
        keys = self._k(channel)
        snap = self._db.snapshot()
        try:
            start = height_key(max(from_height, 0))
            if to_height is None:
                bstop, cstop = _prefix_end(keys.block), _prefix_end(keys.cert)
            elif to_height < from_height:
                return
            else:
                stop = height_key(to_height + 1)
                bstop, cstop = keys.block + stop, keys.cert + stop
            blocks = snap.iterator(start=keys.block + start, stop=bstop, verify_checksums=True)
            certs = snap.iterator(start=keys.cert + start, stop=cstop, verify_checksums=True)
            with blocks, certs:
                for bkey, bval in blocks:
                    h = _key_height(bkey[len(keys.block) :])
                    item = next(certs, None)
                    if item is None or item[0][len(keys.cert) :] != bkey[len(keys.block) :]:
                        raise self._corrupt(channel, h, "block stored without its certificate")
                    yield RawBlock(h, bval, item[1])
        finally:
            snap.close()

    def iter_blocks(
        self, channel: str, from_height: int = 1, to_height: int | None = None
    ) -> Iterator[tuple[Block, CommitCertificate]]:
        """Like :meth:`iter_raw_blocks`, decoded."""
        for raw in self.iter_raw_blocks(channel, from_height, to_height):
            yield (
                self.decode_block(channel, raw),
                self._decode_cert(channel, raw.height, raw.certificate),
            )

    def iter_stored_blocks(self, channel: str) -> Iterator[tuple[int, bytes]]:
        """Every stored ``(height, block bytes)`` of the channel in height order, whatever
        the tip says (for the verifier, which must notice blocks beyond the tip)."""
        keys = self._k(channel)
        cut = len(keys.block)
        with self._db.iterator(prefix=keys.block, verify_checksums=True) as it:
            for key, value in it:
                suffix = key[cut:]
                if len(suffix) != 8:
                    raise self._corrupt(channel, None, f"malformed block key {key!r}")
                yield _key_height(suffix), value

    def index_sizes(self, channel: str) -> IndexSizes:
        """How many entries each per-block index of the channel holds (the verifier
        compares them with the chain, which catches stray entries)."""
        keys = self._k(channel)

        def count(prefix: bytes) -> int:
            with self._db.iterator(prefix=prefix, include_value=False, verify_checksums=True) as it:
                return sum(1 for _ in it)

        return IndexSizes(
            blocks=count(keys.block),
            headers=count(keys.header),
            certificates=count(keys.cert),
            hashes=count(keys.hash),
            transactions=count(keys.tx),
            state_roots=count(keys.root),
        )

    def get_wal(self, channel: str, name: str) -> bytes | None:
        return self._get(self._k(channel).wal + _wal_name(name))

    def wal_items(self, channel: str, prefix: str = "") -> dict[str, bytes]:
        """Every write-ahead entry of the channel whose name starts with ``prefix``,
        by full name. Raises :class:`DamagedStoreError` if LevelDB reports damage."""
        base = self._k(channel).wal
        start = base + prefix.encode("utf-8")
        try:
            with self._db.iterator(prefix=start, verify_checksums=True) as it:
                return {k[len(base) :].decode("utf-8"): v for k, v in it}
        except plyvel.CorruptionError as exc:
            raise _corrupt_db(self._path, exc) from None

    def decode_block(self, channel: str, raw: RawBlock) -> Block:
        """Decode a block read by :meth:`iter_raw_blocks`; raises
        :class:`CorruptLedgerError` naming channel and height if it does not decode."""
        return self._decode_block(channel, raw.height, raw.block)

    def _decode_block(self, channel: str, height: int, raw: bytes) -> Block:
        try:
            block = Block.decode(raw)
        except LedgerError as exc:
            raise self._corrupt(channel, height, f"stored block does not decode: {exc}") from None
        if block.height != height or block.header.channel != channel:
            raise self._corrupt(channel, height, "stored block has another channel or height")
        return block

    def _decode_cert(self, channel: str, height: int, raw: bytes) -> CommitCertificate:
        try:
            return CommitCertificate.from_wire(decode(raw))
        except LedgerError as exc:
            raise self._corrupt(
                channel, height, f"stored certificate does not decode: {exc}"
            ) from None

    # ------------------------------------------------------------------ writes

    def commit_block(
        self,
        channel: str,
        block: Block,
        certificate: CommitCertificate,
        state_writes: Mapping[bytes, bytes | None],
        state_root: bytes,
        *,
        wal: Mapping[str, bytes | None] | None = None,
    ) -> None:
        """Append ``block`` with its ``certificate`` and apply its state changes.

        ``state_writes`` maps state keys to new values (``None`` deletes the key);
        ``state_root`` is the channel's state digest after this block; ``wal`` entries
        (``None`` deletes) are written in the same batch, so the consensus layer can
        retire write-ahead data atomically with the commit.

        Raises :class:`BlockRejectedError` — with nothing written — if the block is not
        for ``channel``, its height is not ``height(channel) + 1``, its ``prev_hash`` is
        not ``last_hash(channel)``, its body does not match its header, the certificate
        names another channel/height/block, or a transaction id is already committed
        (or repeated in the block). Certificate signatures are the caller's check.
        """
        self.commit_blocks(
            channel, [BlockCommit(block, certificate, state_writes, state_root, wal or {})]
        )

    def commit_blocks(self, channel: str, commits: Sequence[BlockCommit]) -> None:
        """Append several consecutive blocks in ONE synced write batch (catch-up and
        multi-slot commits pay one disk sync, not one each): after a crash all of them
        are there or none. Each is checked as :meth:`commit_block` checks one, against
        the tip the previous one leaves; a later block's state writes and wal entries
        override an earlier one's. Raises :class:`BlockRejectedError` naming the first
        bad block — with nothing written."""
        if not commits:
            return
        with self._lock:
            keys = self._k(channel)
            tip = self.tip(channel)
            ops: dict[bytes, bytes | None] = {}
            seen: set[bytes] = set()
            done: list[tuple[int, Block, int]] = []
            for c in commits:
                tip = self._stage(channel, keys, tip, c, ops, seen)
                done.append((tip.height, c.block, len(c.block.encoded())))
            if channel not in self._channels:
                ops[_G_CHANNEL + channel.encode("ascii")] = b""
            ops[keys.tip] = encode([tip.height, tip.hash])
            deltas = self._stage_deltas(channel, keys, commits, ops)
            self._write(
                [(k, v) for k, v in ops.items() if v is not None],
                [k for k, v in ops.items() if v is None],
            )
            self._kept_deltas(channel, deltas)
            self._tips[channel] = tip
            self._channels.add(channel)
            for h, block, size in done:
                self._remember(channel, h, block, size)

    def _stage(
        self,
        channel: str,
        keys: _Keys,
        tip: Tip,
        c: BlockCommit,
        ops: dict[bytes, bytes | None],
        seen: set[bytes],
    ) -> Tip:
        """Check ``c`` against ``tip`` and add its writes to ``ops`` (each key once, the
        last write wins; ``seen``: tx ids staged so far). Returns the new tip."""
        block, certificate, state_root = c.block, c.certificate, c.state_root
        h = block.height
        where = f"block {h} on channel {channel!r}"
        if block.header.channel != channel:
            raise BlockRejectedError(f"{where}: block is for channel {block.header.channel!r}")
        if h != tip.height + 1:
            raise BlockRejectedError(f"{where}: expected height {tip.height + 1}")
        if block.header.prev_hash != tip.hash:
            raise BlockRejectedError(f"{where}: prev_hash does not link to block {tip.height}")
        try:
            block.check_body()
        except LedgerError as exc:
            raise BlockRejectedError(f"{where}: {exc}") from None
        block_hash = block.hash
        if (
            certificate.channel != channel
            or certificate.height != h
            or certificate.block_hash != block_hash
        ):
            raise BlockRejectedError(f"{where}: certificate does not commit this block")
        if len(state_root) != HASH_SIZE:
            raise BlockRejectedError(f"{where}: state root must be {HASH_SIZE} bytes")
        hk = height_key(h)
        ops[keys.block + hk] = block.encoded()
        ops[keys.header + hk] = block.header.encoded
        ops[keys.cert + hk] = encode(certificate.to_wire())
        ops[keys.hash + block_hash] = hk
        ops[keys.root + hk] = bytes(state_root)
        for index, tx in enumerate(block.transactions):
            tx_id = tx.tx_id
            if tx_id in seen:
                raise BlockRejectedError(f"{where}: transaction {tx_id.hex()} appears twice")
            seen.add(tx_id)
            if self._get(keys.tx + tx_id) is not None:
                raise BlockRejectedError(f"{where}: transaction {tx_id.hex()} is already committed")
            ops[keys.tx + tx_id] = encode([h, index])
        for skey, svalue in c.state_writes.items():
            if not isinstance(skey, bytes) or not (svalue is None or isinstance(svalue, bytes)):
                raise BlockRejectedError(f"{where}: state keys and values must be bytes")
            ops[keys.state + skey] = svalue
        for name, value in c.wal.items():
            ops[keys.wal + _wal_name(name)] = None if value is None else bytes(value)
        return Tip(h, block_hash)

    def put_wal(self, channel: str, entries: Mapping[str, bytes | None]) -> None:
        """Write (``None``: delete) consensus write-ahead entries atomically and durably."""
        keys = self._k(channel)
        puts: list[tuple[bytes, bytes]] = []
        deletes: list[bytes] = []
        for name, value in entries.items():
            wkey = keys.wal + _wal_name(name)
            if value is None:
                deletes.append(wkey)
            else:
                puts.append((wkey, bytes(value)))
        with self._lock:
            self._write(puts, deletes)

    def _write(self, puts: list[tuple[bytes, bytes]], deletes: list[bytes]) -> None:
        """The single point where data reaches LevelDB: one synced batch.

        Deletes are applied before puts (a key both deleted and put ends up put).
        Raises :class:`StoreError` on a store opened read-only, writing nothing.
        """
        if self._read_only:
            raise StoreError(f"ledger database {self._path} is open read-only")
        try:
            with self._db.write_batch(sync=True) as wb:
                for key in deletes:
                    wb.delete(key)
                for key, value in puts:
                    wb.put(key, value)
        except plyvel.Error as exc:
            raise StoreError(f"ledger write failed: {_detail(exc)}") from exc

    # ------------------------------------------------------------------ checks

    def check_recent(
        self,
        channel: str,
        depth: int = DEFAULT_VERIFY_RECENT,
        *,
        max_txs: int = DEFAULT_VERIFY_RECENT_TXS,
    ) -> None:
        """Check the channel's last ``depth`` blocks and indexes — fewer if those blocks
        hold more than ``max_txs`` transactions (counted from the header copies), but
        always the last block.

        Checks: the tip names the last stored block and nothing is stored beyond it;
        each block decodes, has its height and channel, links to the previous block's
        header hash (block 1 to the channel genesis hash), matches its ``tx_root`` and
        count, has its header copy, hash index, state root and a certificate naming it;
        each transaction id is indexed at its place. Signatures are not checked.
        Raises :class:`CorruptLedgerError` naming the channel and the height.
        """
        keys = self._k(channel)
        tip = self._read_tip(channel)
        if tip.height == 0:
            return
        with self._db.iterator(
            start=keys.block + height_key(tip.height + 1),
            stop=_prefix_end(keys.block),
            include_value=False,
            verify_checksums=True,
        ) as it:
            for key in it:
                raise self._corrupt(
                    channel,
                    _key_height(key[len(keys.block) :]),
                    f"block stored beyond the recorded tip {tip.height}",
                )
        first = tip.height
        txs = self._header_tx_count(channel, first)
        while first > 1 and tip.height - first + 1 < depth:
            more = self._header_tx_count(channel, first - 1)
            if txs + more > max_txs:
                break
            txs += more
            first -= 1
        if first == 1:
            prev = channel_genesis_hash(self._genesis_hash, channel)
        else:
            before = self.block(channel, first - 1)
            if before is None:
                raise self._corrupt(channel, first - 1, "block missing")
            prev = before.hash
        for h in range(first, tip.height + 1):
            raw = self.raw_block(channel, h)
            if raw is None:
                raise self._corrupt(channel, h, "block missing")
            block = self._decode_block(channel, h, raw)
            problem = self.check_block_record(channel, block, prev)
            if problem is not None:
                raise self._corrupt(channel, h, problem)
            prev = block.hash
        if prev != tip.hash:
            raise self._corrupt(channel, tip.height, "tip metadata names another block hash")

    def _header_tx_count(self, channel: str, height: int) -> int:
        header = self.header(channel, height)
        if header is None:
            raise self._corrupt(channel, height, "block header copy missing")
        return header.tx_count

    def check_block_record(self, channel: str, block: Block, prev_hash: bytes) -> str | None:
        """Structural checks of one stored block against its neighbours and indexes.

        ``block`` is the decoded block stored at its height; ``prev_hash`` the previous
        block's header hash (the channel genesis hash for block 1). Returns a description
        of the first problem, or None. Signatures are not checked.
        """
        h = block.height
        if block.header.prev_hash != prev_hash:
            return f"prev_hash does not link to block {h - 1}"
        try:
            block.check_body()
        except LedgerError as exc:
            return f"body does not match header: {exc}"
        keys = self._k(channel)
        hk = height_key(h)
        if self._get(keys.header + hk) != block.header.encoded:
            return "stored header copy differs from the block's header"
        block_hash = block.hash
        if self._get(keys.hash + block_hash) != hk:
            return "block hash index does not point to this height"
        root = self.state_root_at(channel, h)
        if root is None or len(root) != HASH_SIZE:
            return "state root record missing"
        raw_cert = self.raw_certificate(channel, h)
        if raw_cert is None:
            return "certificate missing"
        try:
            cert = CommitCertificate.from_wire(decode(raw_cert))
        except LedgerError as exc:
            return f"stored certificate does not decode: {exc}"
        if cert.channel != channel or cert.height != h or cert.block_hash != block_hash:
            return "certificate does not commit this block"
        for index, tx in enumerate(block.transactions):
            loc = _parse_tx_location(self._get(keys.tx + tx.tx_id))
            if loc != TxLocation(h, index):
                return f"tx index for transaction {index} ({tx.tx_id.hex()[:16]}…) is wrong"
        return None


def _detail(exc: Exception) -> str:
    """LevelDB's message of a plyvel error, as one line of text (not ``b'…'``)."""
    arg = exc.args[0] if exc.args else ""
    text = arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)
    return " ".join(text.split()) or type(exc).__name__


def _corrupt_db(path: Path, exc: Exception) -> DamagedStoreError:
    """One line for LevelDB's own corruption reports (checksum mismatch, bad block)."""
    return DamagedStoreError(f"ledger database {path} is damaged (LevelDB: {_detail(exc)})")


def _parse_tx_location(raw: bytes | None) -> TxLocation | None:
    """Decode a tx index value; None if absent or malformed."""
    if raw is None:
        return None
    try:
        value = decode(raw)
    except LedgerError:
        return None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return None
    return TxLocation(value[0], value[1])


def _prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix`` (which ends
    with ``/``, so incrementing its last byte cannot overflow)."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _range_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix`` (``prefix`` is
    never all ``0xff`` bytes here: it starts with a channel's key prefix)."""
    p = prefix.rstrip(b"\xff")
    return p[:-1] + bytes([p[-1] + 1])


def _wal_name(name: str) -> bytes:
    if not isinstance(name, str) or not name:
        raise ValueError("WAL entry names are non-empty strings")
    return name.encode("utf-8")
