"""Evidence receipts: self-contained JSON proofs, assembled by a court node and verified
offline by anyone holding the network's genesis validator sets.

The format and the verification algorithm are specified in ``docs/receipts.md``
(which an independent implementation, ``tests/independent_verifier.py``, follows from
the text alone). In short, a receipt chains:

    record (salt + bytes) ─commitment─▶ supervision record leaf ─RFC 9162─▶
    supervision header.record_root ─certificate (supervision validators, tracked from
    genesis through certified config blocks)─▶ supervision header hash ─anchor record
    leaf, RFC 9162─▶ judicial header.record_root ─certificate (court validators,
    tracked from genesis)─▶ trusted.

:func:`verify_receipt` never raises for a bad receipt: it returns a
:class:`VerificationReport` listing every check with ``pass``/``fail``/``skip`` and a
reason code. :func:`build_receipt` makes one from blocks; :func:`assemble_receipt`
from an evidence code through the :class:`ReceiptSource` port.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final, Protocol, runtime_checkable

from crosschain.anchor import SOURCE_CHANNEL, TARGET_CHANNEL, anchor_record_leaf
from crosschain.evidence_index import AnchorEntry, EvidenceEntry
from crosschain.validator_history import (
    MAX_CONFIG_TXS,
    MAX_PROOF_HASHES,
    ConfigStep,
    ConfigStepError,
    ConfigTxProof,
    ValidatorHistory,
)
from ledger.blocks import Block, BlockHeader, record_leaf, record_leaves
from ledger.certificate import CommitCertificate, ValidatorSet, Vote, verify_certificate
from ledger.crypto import ED25519, SignatureScheme
from ledger.encoding import decode
from ledger.errors import CertificateError, LedgerError, ProofError, SchemaError
from ledger.evidence_code import EvidenceCode, code_for_leaf
from ledger.genesis import Genesis
from ledger.hashing import TAG_RECORD, tagged_hash
from ledger.merkle import MerkleTree, verify_inclusion

FORMAT: Final = "wulian-receipt/1"
MAX_STEPS: Final = 4096
MAX_VOTES: Final = 1024
MAX_BODY_HEX: Final = 2 * (256 * 1024 + 1024)
INT_MAX: Final = 2**63 - 1

#: Check names, in the order they are reported.
CHECKS: Final = (
    "format",
    "court_validators",
    "judicial_certificate",
    "anchor_inclusion",
    "supervision_validators",
    "supervision_certificate",
    "record_inclusion",
    "evidence_code",
    "commitment",
)
PASS: Final = "pass"
FAIL: Final = "fail"
SKIP: Final = "skip"

_HEADER_KEYS: Final = (
    "v",
    "ch",
    "h",
    "prev",
    "txr",
    "n",
    "rr",
    "rn",
    "sh",
    "sr",
    "prop",
    "view",
    "t",
)
_HEADER_BYTES: Final = frozenset({"prev", "txr", "rr", "sr"})
_HEADER_STRS: Final = frozenset({"ch", "prop"})


# -- JSON reading helpers: each raises SchemaError naming the path -------------------


def _obj(v: Any, path: str, keys: Sequence[str]) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise SchemaError(f"{path}: expected an object")
    if set(v) != set(keys):
        raise SchemaError(f"{path}: expected exactly the keys {sorted(keys)}")
    return v


def _int(v: Any, path: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= INT_MAX:
        raise SchemaError(f"{path}: expected an integer in [0, 2^63-1]")
    return v


def _str(v: Any, path: str) -> str:
    if not isinstance(v, str):
        raise SchemaError(f"{path}: expected a string")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise SchemaError(f"{path}: not valid Unicode") from None
    return v


def _hex(v: Any, path: str, size: int | None = None, max_chars: int = 4096) -> bytes:
    if (
        not isinstance(v, str)
        or len(v) % 2
        or len(v) > max_chars
        or any(c not in "0123456789abcdef" for c in v)
    ):
        raise SchemaError(f"{path}: expected lowercase hex")
    b = bytes.fromhex(v)
    if size is not None and len(b) != size:
        raise SchemaError(f"{path}: expected {size} bytes")
    return b


def _list(v: Any, path: str, max_len: int) -> list[Any]:
    if not isinstance(v, list) or len(v) > max_len:
        raise SchemaError(f"{path}: expected a list of at most {max_len} items")
    return v


def _proof(v: Any, path: str) -> tuple[bytes, ...]:
    return tuple(
        _hex(p, f"{path}[{i}]", 32) for i, p in enumerate(_list(v, path, MAX_PROOF_HASHES))
    )


def _version(v: Any, path: str) -> None:
    if _int(v, path) != 1:
        raise SchemaError(f"{path}: expected 1")


# -- JSON forms -------------------------------------------------------------------


def header_to_json(h: BlockHeader) -> dict[str, Any]:
    return {k: (v.hex() if isinstance(v, bytes) else v) for k, v in h.to_wire().items()}


def header_from_json(v: Any, path: str) -> BlockHeader:
    m = _obj(v, path, _HEADER_KEYS)
    _version(m["v"], f"{path}.v")
    vals: dict[str, Any] = {}
    for k in _HEADER_KEYS[1:]:
        if k in _HEADER_BYTES:
            vals[k] = _hex(m[k], f"{path}.{k}", 32)
        elif k in _HEADER_STRS:
            vals[k] = _str(m[k], f"{path}.{k}")
        else:
            vals[k] = _int(m[k], f"{path}.{k}")
    return BlockHeader(
        channel=vals["ch"],
        height=vals["h"],
        prev_hash=vals["prev"],
        tx_root=vals["txr"],
        tx_count=vals["n"],
        record_root=vals["rr"],
        record_count=vals["rn"],
        state_height=vals["sh"],
        state_root=vals["sr"],
        proposer=vals["prop"],
        view=vals["view"],
        time_ms=vals["t"],
    )


def cert_to_json(c: CommitCertificate) -> dict[str, Any]:
    return {
        "v": 1,
        "ch": c.channel,
        "h": c.height,
        "view": c.view,
        "b": c.block_hash.hex(),
        "votes": [[v.validator, v.signature.hex()] for v in c.votes],
    }


def cert_from_json(v: Any, path: str) -> CommitCertificate:
    m = _obj(v, path, ("v", "ch", "h", "view", "b", "votes"))
    _version(m["v"], f"{path}.v")
    votes = []
    for i, item in enumerate(_list(m["votes"], f"{path}.votes", MAX_VOTES)):
        p = f"{path}.votes[{i}]"
        if not isinstance(item, list) or len(item) != 2:
            raise SchemaError(f"{p}: expected [validator, signature]")
        votes.append(Vote(_str(item[0], p + "[0]"), _hex(item[1], p + "[1]", max_chars=256)))
    return CommitCertificate(
        channel=_str(m["ch"], f"{path}.ch"),
        height=_int(m["h"], f"{path}.h"),
        view=_int(m["view"], f"{path}.view"),
        block_hash=_hex(m["b"], f"{path}.b", 32),
        votes=tuple(votes),
    )


def step_to_json(s: ConfigStep) -> dict[str, Any]:
    return {
        "header": header_to_json(s.header),
        "certificate": cert_to_json(s.certificate),
        "txs": [
            {"body": t.body.hex(), "index": t.index, "proof": [p.hex() for p in t.proof]}
            for t in s.txs
        ],
    }


def step_from_json(v: Any, path: str) -> ConfigStep:
    m = _obj(v, path, ("header", "certificate", "txs"))
    txs = []
    for i, t in enumerate(_list(m["txs"], f"{path}.txs", MAX_CONFIG_TXS)):
        p = f"{path}.txs[{i}]"
        tm = _obj(t, p, ("body", "index", "proof"))
        txs.append(
            ConfigTxProof(
                _hex(tm["body"], p + ".body", max_chars=MAX_BODY_HEX),
                _int(tm["index"], p + ".index"),
                _proof(tm["proof"], p + ".proof"),
            )
        )
    return ConfigStep(
        header_from_json(m["header"], f"{path}.header"),
        cert_from_json(m["certificate"], f"{path}.certificate"),
        tuple(txs),
    )


@dataclass(frozen=True, slots=True)
class RecordLeaf:
    """The decoded fields of a supervision record leaf."""

    tx_type: str
    tx_id: bytes
    index: int
    commitment: bytes

    @property
    def leaf(self) -> bytes:
        return record_leaf(self.tx_type, self.tx_id, self.index, self.commitment)

    @staticmethod
    def decode(leaf: bytes) -> RecordLeaf:
        """Raises :class:`SchemaError` / EncodingError if ``leaf`` is not a record leaf."""
        m = decode(leaf)
        if not isinstance(m, dict) or set(m) != {"v", "type", "tx", "i", "c"} or m["v"] != 1:
            raise SchemaError("not a record leaf")
        t, tx, i, c = m["type"], m["tx"], m["i"], m["c"]
        if (
            not isinstance(t, str)
            or not isinstance(tx, bytes)
            or len(tx) != 32
            or not isinstance(i, int)
            or isinstance(i, bool)
            or not isinstance(c, bytes)
            or len(c) != 32
        ):
            raise SchemaError("not a record leaf")
        return RecordLeaf(t, tx, i, c)


@dataclass(frozen=True)
class Receipt:
    """A parsed receipt (see docs/receipts.md for every field)."""

    evidence_code: str
    record: RecordLeaf
    record_index: int
    record_proof: tuple[bytes, ...]
    supervision_header: BlockHeader
    supervision_certificate: CommitCertificate
    supervision_config: tuple[ConfigStep, ...]
    anchor_tx: bytes
    anchor_index: int
    anchor_proof: tuple[bytes, ...]
    judicial_header: BlockHeader
    judicial_certificate: CommitCertificate
    judicial_config: tuple[ConfigStep, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        r = self.record
        return {
            "format": FORMAT,
            "evidence_code": self.evidence_code,
            "record": {
                "leaf": {
                    "v": 1,
                    "type": r.tx_type,
                    "tx": r.tx_id.hex(),
                    "i": r.index,
                    "c": r.commitment.hex(),
                },
                "index": self.record_index,
                "proof": [p.hex() for p in self.record_proof],
            },
            "supervision": {
                "header": header_to_json(self.supervision_header),
                "certificate": cert_to_json(self.supervision_certificate),
                "config": [step_to_json(s) for s in self.supervision_config],
            },
            "anchor": {
                "tx": self.anchor_tx.hex(),
                "index": self.anchor_index,
                "proof": [p.hex() for p in self.anchor_proof],
            },
            "judicial": {
                "header": header_to_json(self.judicial_header),
                "certificate": cert_to_json(self.judicial_certificate),
                "config": [step_to_json(s) for s in self.judicial_config],
            },
        }

    @staticmethod
    def from_json(obj: Any) -> Receipt:
        """Parse the JSON form. Raises :class:`SchemaError` naming the bad path."""
        top = _obj(
            obj,
            "receipt",
            ("format", "evidence_code", "record", "supervision", "anchor", "judicial"),
        )
        if top["format"] != FORMAT:
            raise SchemaError(f"receipt.format: expected {FORMAT!r}")
        rec = _obj(top["record"], "record", ("leaf", "index", "proof"))
        leaf = _obj(rec["leaf"], "record.leaf", ("v", "type", "tx", "i", "c"))
        _version(leaf["v"], "record.leaf.v")
        sup = _obj(top["supervision"], "supervision", ("header", "certificate", "config"))
        anc = _obj(top["anchor"], "anchor", ("tx", "index", "proof"))
        jud = _obj(top["judicial"], "judicial", ("header", "certificate", "config"))
        return Receipt(
            evidence_code=_str(top["evidence_code"], "evidence_code"),
            record=RecordLeaf(
                _str(leaf["type"], "record.leaf.type"),
                _hex(leaf["tx"], "record.leaf.tx", 32),
                _int(leaf["i"], "record.leaf.i"),
                _hex(leaf["c"], "record.leaf.c", 32),
            ),
            record_index=_int(rec["index"], "record.index"),
            record_proof=_proof(rec["proof"], "record.proof"),
            supervision_header=header_from_json(sup["header"], "supervision.header"),
            supervision_certificate=cert_from_json(sup["certificate"], "supervision.certificate"),
            supervision_config=tuple(
                step_from_json(s, f"supervision.config[{i}]")
                for i, s in enumerate(_list(sup["config"], "supervision.config", MAX_STEPS))
            ),
            anchor_tx=_hex(anc["tx"], "anchor.tx", 32),
            anchor_index=_int(anc["index"], "anchor.index"),
            anchor_proof=_proof(anc["proof"], "anchor.proof"),
            judicial_header=header_from_json(jud["header"], "judicial.header"),
            judicial_certificate=cert_from_json(jud["certificate"], "judicial.certificate"),
            judicial_config=tuple(
                step_from_json(s, f"judicial.config[{i}]")
                for i, s in enumerate(_list(jud["config"], "judicial.config", MAX_STEPS))
            ),
        )


# -- building ---------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ProvenBlock:
    """What receipts need of one committed block, computed once: its header and
    certificate, each transaction's id, sender and first record leaf, the record
    leaves and their Merkle tree (audit paths in O(log n)). The fields never change
    and the memos only fill (a race computes one equal value twice): safe to share
    between threads. Transaction bodies are not kept (the leaves are a small part)."""

    header: BlockHeader
    certificate: CommitCertificate
    tx_ids: tuple[bytes, ...]
    tx_senders: tuple[str, ...]
    #: ``leaf_starts[i]`` is the index of transaction ``i``'s first record leaf;
    #: one more entry than transactions (the last is the leaf count).
    leaf_starts: tuple[int, ...]
    leaves: tuple[bytes, ...]
    tree: MerkleTree
    #: Memos filled on use (races only compute an equal value twice).
    _records: dict[int, tuple[str, RecordLeaf]] = field(
        default_factory=dict, init=False, repr=False
    )
    _anchors: dict[tuple[int, bytes], bool] = field(default_factory=dict, init=False, repr=False)
    _anchor_paths: dict[int, tuple[int, tuple[bytes, ...]]] = field(
        default_factory=dict, init=False, repr=False
    )

    @staticmethod
    def of(block: Block, certificate: CommitCertificate) -> ProvenBlock:
        """Raises :class:`SchemaError` if a transaction's ``"records"`` are malformed."""
        leaves: list[bytes] = []
        starts = [0]
        for tx in block.transactions:
            leaves.extend(record_leaves(tx))
            starts.append(len(leaves))
        return ProvenBlock(
            header=block.header,
            certificate=certificate,
            tx_ids=tuple(tx.tx_id for tx in block.transactions),
            tx_senders=tuple(tx.sender for tx in block.transactions),
            leaf_starts=tuple(starts),
            leaves=tuple(leaves),
            tree=MerkleTree(leaves),
        )

    @property
    def height(self) -> int:
        return self.header.height

    @property
    def hash(self) -> bytes:
        return self.header.hash

    def anchor_inclusion(self, tx_index: int) -> tuple[int, tuple[bytes, ...]]:
        """``(leaf index, audit path)`` of the record leaf of the header anchor at
        ``tx_index``. Raises :class:`SchemaError` if that transaction contributes no
        record leaf. Computed once per transaction."""
        got = self._anchor_paths.get(tx_index)
        if got is None:
            starts = self.leaf_starts
            if not 0 <= tx_index < len(self.tx_ids) or starts[tx_index + 1] == starts[tx_index]:
                raise SchemaError(f"judicial transaction {tx_index} is not a header anchor")
            index = starts[tx_index]
            got = self._anchor_paths[tx_index] = (index, tuple(self.tree.proof(index)))
        return got

    def record_of(self, leaf_index: int) -> tuple[str, RecordLeaf]:
        """The evidence code and decoded fields of record leaf ``leaf_index``
        (computed once). Raises :class:`SchemaError` if there is no such record leaf."""
        got = self._records.get(leaf_index)
        if got is None:
            if not 0 <= leaf_index < len(self.leaves):
                raise SchemaError(f"supervision block has no record leaf {leaf_index}")
            leaf = self.leaves[leaf_index]
            got = self._records[leaf_index] = (str(code_for_leaf(leaf)), RecordLeaf.decode(leaf))
        return got

    def anchors(self, tx_index: int, block_hash: bytes) -> bool:
        """Whether the record leaf of transaction ``tx_index`` is the header anchor of
        the block hashing to ``block_hash`` (computed once per pair)."""
        key = (tx_index, block_hash)
        got = self._anchors.get(key)
        if got is None:
            index, _ = self.anchor_inclusion(tx_index)
            expected = anchor_record_leaf(self.tx_ids[tx_index], block_hash)
            got = self._anchors[key] = self.leaves[index] == expected
        return got

    def sender_of(self, tx_id: bytes) -> str | None:
        """The sender of transaction ``tx_id`` of this block (None if not in it)."""
        try:
            return self.tx_senders[self.tx_ids.index(tx_id)]
        except ValueError:
            return None

    def approx_bytes(self) -> int:
        """A rough upper bound of the size in memory, for cache budgets: leaves, tree
        nodes (~200 B a leaf), the per-leaf memo once full (~500 B a leaf), ids."""
        n = len(self.leaves)
        return sum(map(len, self.leaves)) + n * 700 + len(self.tx_ids) * 200 + 4096


def build_receipt(
    *,
    leaf_index: int,
    supervision_block: Block,
    supervision_certificate: CommitCertificate,
    judicial_block: Block,
    judicial_certificate: CommitCertificate,
    anchor_tx_index: int,
    supervision_config: Sequence[ConfigStep] = (),
    judicial_config: Sequence[ConfigStep] = (),
) -> Receipt:
    """The receipt of record leaf ``leaf_index`` of ``supervision_block``, anchored by
    the header anchor at ``anchor_tx_index`` of ``judicial_block``.

    ``supervision_config``/``judicial_config`` are the config steps of each channel
    below the block's height (every one, from genesis). Raises :class:`SchemaError`
    if the parts do not fit together (wrong index, not an anchor)."""
    return build_receipt_from(
        leaf_index=leaf_index,
        supervision=ProvenBlock.of(supervision_block, supervision_certificate),
        judicial=ProvenBlock.of(judicial_block, judicial_certificate),
        anchor_tx_index=anchor_tx_index,
        supervision_config=supervision_config,
        judicial_config=judicial_config,
    )


def build_receipt_from(
    *,
    leaf_index: int,
    supervision: ProvenBlock,
    judicial: ProvenBlock,
    anchor_tx_index: int,
    supervision_config: Sequence[ConfigStep] = (),
    judicial_config: Sequence[ConfigStep] = (),
) -> Receipt:
    """:func:`build_receipt` from already proven blocks (same result, same errors)."""
    code, record = supervision.record_of(leaf_index)
    a_index, a_proof = judicial.anchor_inclusion(anchor_tx_index)
    anchor_tx = judicial.tx_ids[anchor_tx_index]
    if not judicial.anchors(anchor_tx_index, supervision.hash):
        raise SchemaError("that judicial transaction does not anchor this supervision block")
    return Receipt(
        evidence_code=code,
        record=record,
        record_index=leaf_index,
        record_proof=tuple(supervision.tree.proof(leaf_index)),
        supervision_header=supervision.header,
        supervision_certificate=supervision.certificate,
        supervision_config=tuple(s for s in supervision_config if s.height < supervision.height),
        anchor_tx=anchor_tx,
        anchor_index=a_index,
        anchor_proof=a_proof,
        judicial_header=judicial.header,
        judicial_certificate=judicial.certificate,
        judicial_config=tuple(s for s in judicial_config if s.height < judicial.height),
    )


class ReceiptSource(Protocol):
    """What a court node provides to assemble receipts (judicial state and blocks)."""

    def evidence(self, code: EvidenceCode) -> list[EvidenceEntry]:
        """The judicial evidence index (:func:`crosschain.anchor_rules.read_evidence`)."""
        ...

    def anchor_entry(self, source_height: int) -> AnchorEntry | None:
        """The judicial anchor index (:func:`crosschain.anchor_rules.read_anchor_entry`)."""
        ...

    def block(self, channel: str, height: int) -> tuple[Block, CommitCertificate] | None: ...

    def config_steps(self, channel: str, below: int) -> list[ConfigStep]:
        """Every config step of ``channel`` below ``below``, from genesis (supervision:
        :func:`crosschain.anchor_rules.read_config_steps`; judicial: its config blocks)."""
        ...


@runtime_checkable
class ProvenBlockSource(ReceiptSource, Protocol):
    """A :class:`ReceiptSource` that also serves :class:`ProvenBlock` s (typically
    from a :class:`ProvenBlockCache`); :func:`assemble_receipt` then uses them instead
    of :meth:`block`."""

    def proven_block(self, channel: str, height: int) -> ProvenBlock | None:
        """``ProvenBlock.of`` the committed block and certificate, or None if missing."""
        ...


class ReceiptUnavailable(LedgerError):
    """No receipt can be assembled (unknown code, not anchored yet, block missing)."""

    code = "receipt_unavailable"


def _prove_from(source: ReceiptSource) -> Callable[[str, int], ProvenBlock | None]:
    # getattr, not isinstance(ProvenBlockSource): a runtime protocol check is slow
    served: Callable[[str, int], ProvenBlock | None] | None = getattr(source, "proven_block", None)
    if served is not None:
        return served

    def prove(channel: str, height: int) -> ProvenBlock | None:
        got = source.block(channel, height)
        return None if got is None else ProvenBlock.of(*got)

    return prove


def assemble_receipt(code: EvidenceCode, source: ReceiptSource) -> list[Receipt]:
    """Receipts for every record with evidence code ``code`` (normally one).

    Raises :class:`ReceiptUnavailable` if the code is unknown or a part is missing."""
    entries = source.evidence(code)
    if not entries:
        raise ReceiptUnavailable(f"no anchored record has evidence code {code}")
    prove = _prove_from(source)
    out = []
    for e in entries:
        anchor = source.anchor_entry(e.source_height)
        sup = prove(SOURCE_CHANNEL, e.source_height)
        if anchor is None or sup is None:
            raise ReceiptUnavailable(f"{SOURCE_CHANNEL} block {e.source_height} is not available")
        jud = prove(TARGET_CHANNEL, anchor.judicial_height)
        if jud is None:
            raise ReceiptUnavailable(f"{TARGET_CHANNEL} block {anchor.judicial_height} is missing")
        out.append(
            build_receipt_from(
                leaf_index=e.leaf_index,
                supervision=sup,
                judicial=jud,
                anchor_tx_index=anchor.tx_index,
                supervision_config=source.config_steps(SOURCE_CHANNEL, e.source_height),
                judicial_config=source.config_steps(TARGET_CHANNEL, anchor.judicial_height),
            )
        )
    return out


class ProvenBlockCache:
    """A thread-safe LRU of :class:`ProvenBlock` s keyed by ``(channel, height)``,
    bounded by a block count and a rough byte budget (:meth:`ProvenBlock.approx_bytes`).

    Only for committed blocks: they never change, so an entry never goes stale.
    Loading runs outside the lock (two threads may both load a missing block; the
    results are equal and one is kept)."""

    def __init__(self, max_blocks: int = 64, max_bytes: int = 64 * 1024 * 1024) -> None:
        if max_blocks < 1 or max_bytes < 1:
            raise ValueError("cache bounds must be positive")
        self.max_blocks = max_blocks
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, int], tuple[ProvenBlock, int]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def bytes(self) -> int:
        """The rough size of the cached entries."""
        with self._lock:
            return self._bytes

    def get(
        self, channel: str, height: int, load: Callable[[], ProvenBlock | None]
    ) -> ProvenBlock | None:
        """The cached block, or ``load()``'s result (cached unless None)."""
        key = (channel, height)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return hit[0]
            self.misses += 1
        value = load()
        if value is None:
            return None
        size = value.approx_bytes()
        with self._lock:
            if key not in self._entries:
                self._entries[key] = (value, size)
                self._bytes += size
            self._entries.move_to_end(key)
            while len(self._entries) > 1 and (
                len(self._entries) > self.max_blocks or self._bytes > self.max_bytes
            ):
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped
        return value


def _exact(value: object, kind: type) -> bool:
    return type(value) is kind


def _certificate_fields(cert: CommitCertificate) -> tuple[Any, ...] | None:
    """Every field of ``cert`` as a hashable tuple, or None unless each has its exact
    wire type (str, int, bytes): then equal tuples mean equal canonical bytes."""
    votes = tuple((v.validator, v.signature) for v in cert.votes)
    if not (
        _exact(cert.channel, str)
        and _exact(cert.height, int)
        and _exact(cert.view, int)
        and _exact(cert.block_hash, bytes)
        and all(_exact(i, str) and _exact(sig, bytes) for i, sig in votes)
    ):
        return None
    return (cert.channel, cert.height, cert.view, cert.block_hash, votes)


#: Signature of :func:`ledger.certificate.verify_certificate`, for injected verifiers.
CertificateVerifier = Callable[..., None]


class CertificateMemo:
    """:func:`verify_certificate` memoised by its exact inputs: the certificate's
    fields (all of them, with their exact types: as good as its canonical bytes),
    channel, height, block hash, validator set and scheme. It is a pure function, so
    the memo answers exactly what a fresh check would (a failure is re-raised as the
    same :class:`CertificateError`). Bounded (LRU) and thread-safe.

    For a node verifying many receipts over the same few blocks; an offline verifier
    keeps calling :func:`verify_certificate` itself."""

    def __init__(self, max_entries: int = 4096) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._results: OrderedDict[tuple[Any, ...], str | None] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._results)

    def __call__(
        self,
        cert: CommitCertificate,
        *,
        channel: str,
        height: int,
        block_hash: bytes,
        validators: ValidatorSet,
        scheme: SignatureScheme = ED25519,
    ) -> None:
        """As :func:`verify_certificate`: None, or raises :class:`CertificateError`."""
        kw: dict[str, Any] = {
            "channel": channel,
            "height": height,
            "block_hash": block_hash,
            "validators": validators,
            "scheme": scheme,
        }
        fields = _certificate_fields(cert)
        if fields is None or not (
            _exact(channel, str) and _exact(height, int) and _exact(block_hash, bytes)
        ):
            verify_certificate(cert, **kw)  # unusual types: not memoised
            return
        key = (fields, channel, height, block_hash, validators, scheme)
        with self._lock:
            found = key in self._results
            if found:
                self._results.move_to_end(key)
                self.hits += 1
                failure = self._results[key]
            else:
                self.misses += 1
        if not found:
            try:
                verify_certificate(cert, **kw)
                failure = None
            except CertificateError as exc:
                failure = exc.message
        with self._lock:
            self._results[key] = failure
            self._results.move_to_end(key)
            while len(self._results) > self.max_entries:
                self._results.popitem(last=False)
        _raise_if(failure)


def _raise_if(failure: str | None) -> None:
    if failure is not None:
        raise CertificateError(failure)


# -- verification -----------------------------------------------------------------


@dataclass(frozen=True)
class TrustRoot:
    """The genesis validator sets a verifier trusts: the court (judicial) channel's and
    the supervision channel's, both from the network genesis."""

    judicial: ValidatorSet
    supervision: ValidatorSet

    @staticmethod
    def from_genesis(genesis: Genesis) -> TrustRoot:
        return TrustRoot(
            genesis.channel(TARGET_CHANNEL).validators, genesis.channel(SOURCE_CHANNEL).validators
        )

    def to_json(self) -> dict[str, Any]:
        return {
            ch: [{"id": v.node_id, "pk": v.public_key.hex()} for v in vs.validators]
            for ch, vs in ((TARGET_CHANNEL, self.judicial), (SOURCE_CHANNEL, self.supervision))
        }

    @staticmethod
    def from_json(obj: Any) -> TrustRoot:
        """Raises :class:`SchemaError`."""
        m = _obj(obj, "trust root", (TARGET_CHANNEL, SOURCE_CHANNEL))
        sets = []
        for ch in (TARGET_CHANNEL, SOURCE_CHANNEL):
            items = _list(m[ch], ch, 1024)
            sets.append(
                ValidatorSet.from_wire(
                    [
                        {
                            "id": _str(_obj(v, f"{ch}[{i}]", ("id", "pk"))["id"], f"{ch}[{i}].id"),
                            "pk": _hex(v["pk"], f"{ch}[{i}].pk", 32),
                        }
                        for i, v in enumerate(items)
                    ]
                )
            )
        return TrustRoot(sets[0], sets[1])


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    reason: str = ""
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class VerificationReport:
    """Every check performed, with the facts the receipt establishes."""

    checks: tuple[Check, ...]
    evidence_code: str | None = None
    commitment: bytes | None = None
    supervision_height: int | None = None
    supervision_time_ms: int | None = None
    judicial_height: int | None = None
    anchored_time_ms: int | None = None

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status == FAIL)

    @property
    def ok(self) -> bool:
        """The receipt proves its record leaf was anchored: no check failed and every
        check but ``commitment`` ran."""
        return not self.failures and all(
            c.status == PASS for c in self.checks if c.name != "commitment"
        )

    @property
    def data_verified(self) -> bool:
        """``ok`` and the given record/salt or commitment matched."""
        return self.ok and self.check("commitment").status == PASS

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def summary(self) -> list[tuple[str, str, str]]:
        """``(name, status, reason)`` of every check (what verifiers must agree on)."""
        return [(c.name, c.status, c.reason) for c in self.checks]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "data_verified": self.data_verified,
            "evidence_code": self.evidence_code,
            "commitment": None if self.commitment is None else self.commitment.hex(),
            "supervision_height": self.supervision_height,
            "supervision_time_ms": self.supervision_time_ms,
            "judicial_height": self.judicial_height,
            "anchored_time_ms": self.anchored_time_ms,
            "checks": [c.to_json() for c in self.checks],
        }


def record_commitment(salt: bytes, record_bytes: bytes) -> bytes:
    """``tagged_hash(TAG_RECORD, salt + record_bytes)`` — the salted commitment."""
    return tagged_hash(TAG_RECORD, salt + record_bytes)


@lru_cache(maxsize=64)
def _genesis_history(channel: str, genesis: ValidatorSet) -> ValidatorHistory:
    """``ValidatorHistory.genesis`` shared (it is immutable and its lookups read only):
    the validator tracker behind it is built once, not per receipt."""
    return ValidatorHistory.genesis(channel, genesis)


def _history(
    channel: str,
    genesis: ValidatorSet,
    steps: Sequence[ConfigStep],
    below: int,
    scheme: SignatureScheme,
) -> ValidatorHistory:
    history = _genesis_history(channel, genesis)
    for step in steps:
        if step.height >= below:
            raise ConfigStepError(f"config step {step.height} is not below height {below}")
        history = history.apply_step(step, scheme=scheme)
    return history


def _certified(
    header: BlockHeader,
    cert: CommitCertificate,
    channel: str,
    history: ValidatorHistory,
    scheme: SignatureScheme,
    verify: CertificateVerifier = verify_certificate,
) -> Check:
    name = f"{channel}_certificate"
    if header.channel != channel:
        return Check(name, FAIL, "wrong_channel", f"header is of channel {header.channel!r}")
    try:
        verify(
            cert,
            channel=channel,
            height=header.height,
            block_hash=header.hash,
            validators=history.at(header.height),
            scheme=scheme,
        )
    except CertificateError as exc:
        return Check(name, FAIL, "bad_certificate", exc.message)
    return Check(name, PASS)


def _included(name: str, leaf: bytes, index: int, proof: Sequence[bytes], h: BlockHeader) -> Check:
    try:
        verify_inclusion(leaf, index, h.record_count, proof, h.record_root)
    except ProofError as exc:
        return Check(name, FAIL, "bad_proof", exc.message)
    return Check(name, PASS)


def verify_receipt(
    receipt: Receipt | Mapping[str, Any],
    trust: TrustRoot | Genesis,
    record_bytes: bytes | None = None,
    salt: bytes | None = None,
    commitment: bytes | None = None,
    *,
    scheme: SignatureScheme = ED25519,
    certificate_verifier: CertificateVerifier = verify_certificate,
) -> VerificationReport:
    """Verify ``receipt`` (parsed or its JSON object) offline against ``trust``.

    Never raises for a bad receipt or bad input: the report lists each check of
    :data:`CHECKS` with ``pass``, ``fail`` (and a reason code) or ``skip``. With
    ``record_bytes`` and ``salt`` (or ``commitment``), the ``commitment`` check
    compares them with the anchored commitment. ``trust`` is the network genesis or
    the two genesis validator sets taken from it (:class:`TrustRoot`).

    ``certificate_verifier`` checks the two receipt certificates; it must behave
    exactly as :func:`verify_certificate` (the default), e.g. a node's
    :class:`CertificateMemo`. Every check runs whatever is injected.
    """
    if isinstance(trust, Genesis):
        trust = TrustRoot.from_genesis(trust)
    if isinstance(receipt, Receipt):
        r = receipt
    else:
        try:
            r = Receipt.from_json(receipt)
        except LedgerError as exc:
            fail = Check("format", FAIL, "malformed", exc.message)
            return VerificationReport(
                (fail, *(Check(n, SKIP, "", "malformed receipt") for n in CHECKS[1:]))
            )
    checks: list[Check] = [Check("format", PASS)]

    def history_check(
        name: str, channel: str, genesis: ValidatorSet, steps: Sequence[ConfigStep], below: int
    ) -> ValidatorHistory | None:
        try:
            history = _history(channel, genesis, steps, below, scheme)
        except ConfigStepError as exc:
            checks.append(Check(name, FAIL, "bad_config_step", exc.message))
            return None
        checks.append(Check(name, PASS))
        return history

    jh = r.judicial_header
    sh = r.supervision_header
    court = history_check(
        "court_validators", TARGET_CHANNEL, trust.judicial, r.judicial_config, jh.height
    )
    if court is None:
        checks.append(Check("judicial_certificate", SKIP, "", "court validators unknown"))
    else:
        checks.append(
            _certified(
                jh, r.judicial_certificate, TARGET_CHANNEL, court, scheme, certificate_verifier
            )
        )
    checks.append(
        _included(
            "anchor_inclusion",
            anchor_record_leaf(r.anchor_tx, sh.hash),
            r.anchor_index,
            r.anchor_proof,
            jh,
        )
    )
    sup = history_check(
        "supervision_validators", SOURCE_CHANNEL, trust.supervision, r.supervision_config, sh.height
    )
    if sup is None:
        checks.append(Check("supervision_certificate", SKIP, "", "supervision validators unknown"))
    else:
        checks.append(
            _certified(
                sh, r.supervision_certificate, SOURCE_CHANNEL, sup, scheme, certificate_verifier
            )
        )
    leaf = r.record.leaf
    checks.append(_included("record_inclusion", leaf, r.record_index, r.record_proof, sh))
    expected_code = str(code_for_leaf(leaf))
    if r.evidence_code == expected_code:
        checks.append(Check("evidence_code", PASS))
    else:
        checks.append(
            Check("evidence_code", FAIL, "code_mismatch", f"the leaf's code is {expected_code}")
        )
    checks.append(_commitment_check(r.record.commitment, record_bytes, salt, commitment))
    return VerificationReport(
        tuple(checks),
        evidence_code=r.evidence_code,
        commitment=r.record.commitment,
        supervision_height=sh.height,
        supervision_time_ms=sh.time_ms,
        judicial_height=jh.height,
        anchored_time_ms=jh.time_ms,
    )


def _commitment_check(
    anchored: bytes, record_bytes: bytes | None, salt: bytes | None, commitment: bytes | None
) -> Check:
    if record_bytes is None and salt is None and commitment is None:
        return Check("commitment", SKIP, "", "no record or commitment given")
    if (record_bytes is None) != (salt is None):
        return Check("commitment", FAIL, "incomplete_input", "give both the record and its salt")
    if (
        record_bytes is not None
        and salt is not None
        and record_commitment(salt, record_bytes) != anchored
    ):
        return Check(
            "commitment",
            FAIL,
            "commitment_mismatch",
            "the record and salt do not hash to the anchored commitment",
        )
    if commitment is not None and commitment != anchored:
        return Check(
            "commitment",
            FAIL,
            "commitment_mismatch",
            "the given commitment is not the anchored one",
        )
    return Check("commitment", PASS)


#: Signature of :func:`verify_receipt`, for callers that inject a verifier.
ReceiptVerifier = Callable[..., VerificationReport]
