"""Transactions, block headers and blocks, with their canonical wire forms.

Wire forms are canonical maps (see :mod:`ledger.encoding`) carrying ``"v": 1``.

* A transaction's id is ``tagged_hash(TAG_TX, encode(body))`` where ``body`` is the
  wire map without ``"sig"``; the sender signs ``encode(body)`` under ``TAG_TX``.
  Ed25519 signatures are deterministic and libsodium rejects non-canonical ones, so a
  signed transaction has one id and resubmitting it is idempotent.
* A block header's hash is ``tagged_hash(TAG_BLOCK_HEADER, encode(header))``.
* ``tx_root`` is the RFC 9162 Merkle root over the transaction ids in block order.
* ``record_root`` is the RFC 9162 Merkle root over the block's *record leaves*: every
  transaction whose payload carries ``"records"`` (a list of maps, each with a 32-byte
  salted commitment ``"c"``) contributes one leaf per record,
  ``encode({"v": 1, "type": tx.type, "tx": tx_id, "i": index, "c": commitment})``, in
  block order. These
  leaves are what the relay anchors and what evidence codes name (docs/receipts.md).
  Build blocks with :func:`build_block`, which fills both roots.
* ``state_root`` is the channel's state digest after applying every block up to and
  including ``state_height`` (which lags ``height`` by the pipelining window, so a
  primary can propose before the blocks in flight are applied).
"""

from __future__ import annotations

import contextlib
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

from ledger.crypto import ED25519, SignatureScheme, Signer
from ledger.encoding import (
    decode,
    encode,
    encode_list_of_encoded,
    encode_map_of_encoded,
    is_canonical,
    pack,
)
from ledger.errors import SchemaError, SignatureError
from ledger.hashing import TAG_BLOCK_HEADER, TAG_CHANNEL_GENESIS, TAG_TX, tagged_hash
from ledger.merkle import merkle_root
from ledger.schema import as_map, check_keys, get_bytes, get_int, get_list, get_str

MAX_TX_PAYLOAD_BYTES = 256 * 1024
MAX_TXS_PER_BLOCK = 20_000

_T = TypeVar("_T")

_TX_KEYS = frozenset({"v", "net", "ch", "type", "from", "pk", "nonce", "t", "p", "sig"})
_BODY_KEYS_SORTED = tuple(sorted(_TX_KEYS - {"sig"}))
_HEADER_KEYS = frozenset(
    {"v", "ch", "h", "prev", "txr", "n", "rr", "rn", "sh", "sr", "prop", "view", "t"}
)
MAX_RECORDS_PER_TX = 10_000
#: How many recently parsed transactions :meth:`Transaction.from_wire` remembers. A
#: node meets each transaction several times (client batch, FORWARD, PRE-PREPARE,
#: catch-up); a repeat whose wire map packs to the very same bytes is the same value,
#: so its parsed, checked form (with its cached encodings and id) is reused. The
#: repeats come within seconds, so the memo need only span the transactions in flight:
#: 2,048 is over 10 s at the benchmarked 160 tx/s, and a miss only costs one parse
#: (tens of µs against the node's ~11 ms of CPU per transaction). It was 8,192, which
#: at soak rates takes many minutes to fill and read as a leak (docs/reliability.md).
WIRE_MEMO_SIZE = 2_048
#: …and at most this many packed bytes in all (large batch reports evict sooner). An
#: entry's resident cost is about 10 × its packed size (the parsed transaction, its
#: payload objects, cached encodings and id: measured 2.5 KB for a 240-byte loan event,
#: 7.1 KB for a 690-byte one), so 1 MiB here bounds the memo near 10 MB; the former
#: 8 MiB let it reach ~90 MB, a third of a node's memory budget.
WIRE_MEMO_BYTES = 1024 * 1024
#: An OrderedDict, not a dict: evicting a dict's first entry walks over every entry
#: deleted before it (:mod:`ledger.fifo`).
_wire_memo: OrderedDict[bytes, tuple[bytes, Transaction]] = OrderedDict()
_wire_memo_bytes = [0]
#: Every parsed transaction still alive somewhere in the process (mempool, a replica's
#: log, a block being applied), by signature, whatever its size: a repeat of one the
#: node still holds — a 1,000-event batch report in the PRE-PREPARE after its FORWARD,
#: in every VIEW-CHANGE's prepared blocks — is found here at no memory cost. A hit
#: needs the holder's canonical bytes (``_encoded``) to equal the packed repeat.
_live_txs: weakref.WeakValueDictionary[bytes, Transaction] = weakref.WeakValueDictionary()


def _memo_put(sig: bytes, packed: bytes, tx: Transaction) -> None:
    """Remember a parsed transaction, evicting the oldest beyond the bounds (FIFO;
    worker threads may race here: a lost update only costs a miss later)."""
    with contextlib.suppress(KeyError, RuntimeError):
        old = _wire_memo.pop(sig, None)
        if old is not None:
            _wire_memo_bytes[0] -= len(old[0])
        while _wire_memo and (
            len(_wire_memo) >= WIRE_MEMO_SIZE or _wire_memo_bytes[0] + len(packed) > WIRE_MEMO_BYTES
        ):
            evicted = _wire_memo.popitem(last=False)[1]
            _wire_memo_bytes[0] -= len(evicted[0])
        _wire_memo[sig] = (packed, tx)
        _wire_memo_bytes[0] += len(packed)


def _packed(raw: dict[str, Any]) -> bytes | None:
    """``raw`` packed as-is (no sorting): equal bytes mean an identical map, types
    included (unlike ``==``, which lets ``True == 1``)."""
    try:
        return pack(raw)
    except Exception:  # anything unpackable simply misses the memo
        return None


def channel_genesis_hash(genesis_hash: bytes, channel: str) -> bytes:
    """The ``prev_hash`` of a channel's first block (height 1)."""
    return tagged_hash(TAG_CHANNEL_GENESIS, genesis_hash + channel.encode())


@dataclass(frozen=True)
class Transaction:
    """A client transaction, signed by ``sender``'s key ``public_key``.

    ``network`` is the genesis hash, so a transaction cannot be replayed on another
    network; ``nonce`` lets a sender make otherwise identical transactions distinct.
    """

    network: bytes
    channel: str
    type: str
    sender: str
    public_key: bytes
    nonce: int
    time_ms: int
    payload: dict[str, Any] = field(hash=False)
    signature: bytes = b""

    def body(self) -> dict[str, Any]:
        return {
            "v": 1,
            "net": self.network,
            "ch": self.channel,
            "type": self.type,
            "from": self.sender,
            "pk": self.public_key,
            "nonce": self.nonce,
            "t": self.time_ms,
            "p": self.payload,
        }

    @cached_property
    def body_bytes(self) -> bytes:
        return encode(self.body())

    @cached_property
    def tx_id(self) -> bytes:
        return tagged_hash(TAG_TX, self.body_bytes)

    def to_wire(self) -> dict[str, Any]:
        w = self.body()
        w["sig"] = self.signature
        return w

    @cached_property
    def _record_leaves(self) -> tuple[bytes, ...]:
        return _compute_record_leaves(self)

    @cached_property
    def _encoded(self) -> bytes:
        return encode(self.to_wire())

    def encoded(self) -> bytes:
        """The canonical bytes of :meth:`to_wire` (computed once)."""
        return self._encoded

    def derived(self, key: Hashable, compute: Callable[[], _T]) -> _T:
        """``compute()``, run once per ``key`` for this object and then remembered on
        it until :meth:`forget_derived` (the channel rules parse a payload when they
        admit the transaction and again when they apply it: the same object, so the
        same result). ``compute`` must depend on this transaction's fields alone and
        return an immutable value, which every caller then shares. What it raises
        propagates and is not remembered. Threads may race here: both compute, one
        result stays."""
        memo: dict[Hashable, Any] | None = self.__dict__.get("_derived")
        if memo is None:
            memo = self.__dict__["_derived"] = {}
        try:
            value: _T = memo[key]
        except KeyError:
            value = memo[key] = compute()
        return value

    def forget_derived(self) -> None:
        """Drop what :meth:`derived` remembered (the last user of a value that a
        long-lived object should not keep: blocks stay cached after their commit)."""
        self.__dict__.pop("_derived", None)

    def signed(self, signer: Signer) -> Transaction:
        """Return a copy signed by ``signer`` (whose key must be ``public_key``)."""
        if signer.public_key != self.public_key:
            raise SignatureError("signer's key is not the transaction's public key")
        sig = signer.sign(TAG_TX, self.body_bytes)
        return Transaction(
            self.network, self.channel, self.type, self.sender, self.public_key,
            self.nonce, self.time_ms, self.payload, sig,
        )  # fmt: skip

    def verify_signature(self, scheme: SignatureScheme = ED25519) -> None:
        """Raise :class:`SignatureError` unless the signature is valid for ``public_key``.

        Whether that key belongs to ``sender`` at this height is the channel rules' check.
        """
        if not scheme.verify(self.public_key, TAG_TX, self.body_bytes, self.signature):
            raise SignatureError(f"transaction {self.tx_id.hex()} has an invalid signature")

    @staticmethod
    def from_wire(raw: Any) -> Transaction:
        """Parse and check a wire map. Raises :class:`SchemaError`/``EncodingError``.

        A map identical (as packed bytes) to one parsed recently, or to the canonical
        bytes of one still alive in this process, returns that earlier result: the same
        fields give the same checks and the same transaction."""
        sig = raw.get("sig") if type(raw) is dict else None
        if type(sig) is not bytes:
            return Transaction._from_wire(raw, None)
        packed = _packed(raw)
        if packed is not None:
            hit = _wire_memo.get(sig)
            if hit is not None and hit[0] == packed:
                return hit[1]
            live = _live_txs.get(sig)
            if live is not None and live.__dict__.get("_encoded") == packed:
                return live
        canonical = packed if packed is not None and is_canonical(raw) else None
        tx = Transaction._from_wire(raw, canonical)
        if packed is not None and len(packed) <= WIRE_MEMO_BYTES // 8:
            _memo_put(sig, packed, tx)
        if canonical is not None:  # only a canonical parse can match a repeat
            with contextlib.suppress(RuntimeError):  # a racing weakref callback
                _live_txs[sig] = tx
        return tx

    @staticmethod
    def _from_wire(raw: Any, canonical: bytes | None) -> Transaction:
        """Parse a wire map. ``canonical``: its packed bytes when
        :func:`~ledger.encoding.is_canonical` holds for it — then they *are* the
        transaction's canonical encoding, and its body's is packed without normalising."""
        m = as_map(raw, "transaction")
        check_keys(m, _TX_KEYS, "transaction")
        if get_int(m, "v") != 1:
            raise SchemaError("transaction: unsupported version")
        payload = m.get("p")
        if not isinstance(payload, dict):
            raise SchemaError("field 'p': expected a map")
        tx = Transaction(
            network=get_bytes(m, "net", 32),
            channel=get_str(m, "ch", name=True),
            type=get_str(m, "type", name=True),
            sender=get_str(m, "from", name=True),
            public_key=get_bytes(m, "pk", 32),
            nonce=get_int(m, "nonce"),
            time_ms=get_int(m, "t"),
            payload=payload,
            signature=get_bytes(m, "sig", 64),
        )
        if canonical is not None:
            # The body is the wire map without "sig"; its keys, in sorted order:
            body = {k: m[k] for k in _BODY_KEYS_SORTED}
            tx.__dict__["body_bytes"] = pack(body)
            tx.__dict__["_encoded"] = canonical
        if len(tx.body_bytes) > MAX_TX_PAYLOAD_BYTES:
            raise SchemaError(f"transaction larger than {MAX_TX_PAYLOAD_BYTES} bytes")
        return tx

    @staticmethod
    def decode(data: bytes) -> Transaction:
        return Transaction.from_wire(decode(data, max_size=MAX_TX_PAYLOAD_BYTES + 1024))


@dataclass(frozen=True)
class BlockHeader:
    channel: str
    height: int
    prev_hash: bytes
    tx_root: bytes
    tx_count: int
    record_root: bytes
    record_count: int
    state_height: int
    state_root: bytes
    proposer: str
    view: int
    time_ms: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": 1,
            "ch": self.channel,
            "h": self.height,
            "prev": self.prev_hash,
            "txr": self.tx_root,
            "n": self.tx_count,
            "rr": self.record_root,
            "rn": self.record_count,
            "sh": self.state_height,
            "sr": self.state_root,
            "prop": self.proposer,
            "view": self.view,
            "t": self.time_ms,
        }

    @cached_property
    def encoded(self) -> bytes:
        return encode(self.to_wire())

    @cached_property
    def hash(self) -> bytes:
        return tagged_hash(TAG_BLOCK_HEADER, self.encoded)

    @staticmethod
    def from_wire(raw: Any) -> BlockHeader:
        m = as_map(raw, "header")
        check_keys(m, _HEADER_KEYS, "header")
        if get_int(m, "v") != 1:
            raise SchemaError("header: unsupported version")
        return BlockHeader(
            channel=get_str(m, "ch", name=True),
            height=get_int(m, "h", lo=1),
            prev_hash=get_bytes(m, "prev", 32),
            tx_root=get_bytes(m, "txr", 32),
            tx_count=get_int(m, "n", hi=MAX_TXS_PER_BLOCK),
            record_root=get_bytes(m, "rr", 32),
            record_count=get_int(m, "rn"),
            state_height=get_int(m, "sh"),
            state_root=get_bytes(m, "sr", 32),
            proposer=get_str(m, "prop", name=True),
            view=get_int(m, "view"),
            time_ms=get_int(m, "t"),
        )


@dataclass(frozen=True)
class Block:
    header: BlockHeader
    transactions: tuple[Transaction, ...]

    @property
    def height(self) -> int:
        return self.header.height

    @property
    def hash(self) -> bytes:
        return self.header.hash

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": 1,
            "header": self.header.to_wire(),
            "txs": [tx.to_wire() for tx in self.transactions],
        }

    @cached_property
    def _encoded(self) -> bytes:
        # Spliced from the cached encodings of the header and transactions: the same
        # bytes as encode(self.to_wire()), without normalising every payload again.
        return encode_map_of_encoded(
            {
                "v": encode(1),
                "header": self.header.encoded,
                "txs": encode_list_of_encoded([tx.encoded() for tx in self.transactions]),
            }
        )

    def encoded(self) -> bytes:
        """The canonical bytes of :meth:`to_wire` (computed once)."""
        return self._encoded

    def check_body(self) -> None:
        """Raise :class:`SchemaError` unless the transactions match the header
        (count, root, channel). Signatures are not checked here."""
        if len(self.transactions) != self.header.tx_count:
            raise SchemaError(
                f"block {self.height}: header says {self.header.tx_count} transactions, "
                f"body has {len(self.transactions)}"
            )
        if compute_tx_root(self.transactions) != self.header.tx_root:
            raise SchemaError(f"block {self.height}: transactions do not match tx_root")
        leaves = block_record_leaves(self.transactions)
        if (
            len(leaves) != self.header.record_count
            or merkle_root(leaves) != self.header.record_root
        ):
            raise SchemaError(f"block {self.height}: records do not match record_root")
        for tx in self.transactions:
            if tx.channel != self.header.channel:
                raise SchemaError(f"block {self.height}: transaction for channel {tx.channel}")

    @staticmethod
    def from_wire(raw: Any) -> Block:
        m = as_map(raw, "block")
        check_keys(m, frozenset({"v", "header", "txs"}), "block")
        if get_int(m, "v") != 1:
            raise SchemaError("block: unsupported version")
        txs = tuple(Transaction.from_wire(t) for t in get_list(m, "txs", max_len=MAX_TXS_PER_BLOCK))
        return Block(BlockHeader.from_wire(m.get("header")), txs)

    @staticmethod
    def decode(data: bytes) -> Block:
        return Block.from_wire(decode(data))


def compute_tx_root(transactions: tuple[Transaction, ...] | list[Transaction]) -> bytes:
    """RFC 9162 Merkle root over the transaction ids, in order."""
    return merkle_root([tx.tx_id for tx in transactions])


def record_leaves(tx: Transaction) -> list[bytes]:
    """The record leaves ``tx`` contributes (empty if its payload has no ``"records"``).

    Computed once per transaction (a node needs them at admission, in the proposal,
    when checking it, when applying and relaying it). Raises :class:`SchemaError` if
    ``"records"`` is present but is not a list of maps each holding a 32-byte ``"c"``
    commitment, or holds more than MAX_RECORDS_PER_TX (checked again on every call).
    """
    return list(tx._record_leaves)


def _compute_record_leaves(tx: Transaction) -> tuple[bytes, ...]:
    if "records" not in tx.payload:
        return ()
    records = tx.payload["records"]
    if not isinstance(records, list) or len(records) > MAX_RECORDS_PER_TX:
        raise SchemaError(
            f"field 'records': expected a list of at most {MAX_RECORDS_PER_TX} records"
        )
    # The canonical encoding of {"v": 1, "type": ..., "tx": ..., "i": ..., "c": ...}
    # (record_leaf), assembled from the parts shared by every record of the tx.
    head = b"\x85\xa1c\xc4\x20"
    tail = b"\xa2tx\xc4\x20" + tx.tx_id + b"\xa4type" + encode(tx.type) + b"\xa1v\x01"
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise SchemaError(f"records[{i}]: expected a map")
        c = rec.get("c")
        if not isinstance(c, bytes) or len(c) != 32:
            raise SchemaError(f"records[{i}].c: expected a 32-byte commitment")
        out.append(head + c + b"\xa1i" + encode(i) + tail)
    return tuple(out)


def record_leaf(tx_type: str, tx_id: bytes, index: int, commitment: bytes) -> bytes:
    """The leaf of record ``index`` of transaction ``tx_id`` (of type ``tx_type``)."""
    return encode({"v": 1, "type": tx_type, "tx": tx_id, "i": index, "c": commitment})


def block_record_leaves(transactions: tuple[Transaction, ...] | list[Transaction]) -> list[bytes]:
    return [leaf for tx in transactions for leaf in tx._record_leaves]


def build_block(
    *,
    channel: str,
    height: int,
    prev_hash: bytes,
    transactions: tuple[Transaction, ...] | list[Transaction],
    state_height: int,
    state_root: bytes,
    proposer: str,
    view: int,
    time_ms: int,
) -> Block:
    """Assemble a block, computing ``tx_root``, ``record_root`` and the counts.

    Raises :class:`SchemaError` if a transaction's records are malformed.
    """
    txs = tuple(transactions)
    leaves = block_record_leaves(txs)
    header = BlockHeader(
        channel=channel,
        height=height,
        prev_hash=prev_hash,
        tx_root=compute_tx_root(txs),
        tx_count=len(txs),
        record_root=merkle_root(leaves),
        record_count=len(leaves),
        state_height=state_height,
        state_root=state_root,
        proposer=proposer,
        view=view,
        time_ms=time_ms,
    )
    return Block(header, txs)
