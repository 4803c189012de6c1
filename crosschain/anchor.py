"""Anchor transactions: a committed supervision block carried to the judicial channel.

Transaction type ``"anchor"`` on the judicial channel, sent by any node's relay. Two
payload kinds, both canonical maps:

**Header anchor** (one per supervision block, in height order)::

    {"v": 1, "kind": "header", "src": "supervision",
     "header": <BlockHeader wire>, "cert": <CommitCertificate wire>,
     "config": [<ConfigTxProof wire>, ...],   # every config_update tx of the block
     "chunk": null | {"leaves": [leaf, ...], "proof": [hash, ...]},   # leaf chunk 0
     "records": [{"c": <header hash>}]}

``records`` makes the anchor contribute exactly one record leaf to the judicial
block's ``record_root``: ``record_leaf("anchor", anchor tx id, 0, header hash)`` —
how a receipt proves compactly that the court chain ordered this anchor.

**Leaf chunk** (the block's remaining record leaves, chunk by chunk, in order)::

    {"v": 1, "kind": "leaves", "src": "supervision", "h": <height>, "k": <chunk index>,
     "leaves": [leaf, ...], "proof": [hash, ...]}

Leaves travel in chunks of :data:`crosschain.chunks.CHUNK_LEAVES` so every anchor
transaction stays below ``MAX_TX_PAYLOAD_BYTES`` however many records a block holds.
A block without records needs only its header anchor.

:func:`parse_anchor` turns a payload into :class:`HeaderAnchor` / :class:`LeafChunk`
(raising :class:`~ledger.errors.SchemaError` naming the field); :func:`anchor_payloads`
and :func:`build_anchor_txs` make them from a committed block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from crosschain.chunks import CHUNK_LEAVES, chunk_proof, chunk_roots
from crosschain.validator_history import (
    MAX_CONFIG_TXS,
    MAX_PROOF_HASHES,
    ConfigTxProof,
    config_tx_proofs,
)
from ledger.blocks import (
    MAX_TX_PAYLOAD_BYTES,
    Block,
    BlockHeader,
    Transaction,
    block_record_leaves,
    record_leaf,
)
from ledger.certificate import CommitCertificate
from ledger.crypto import Signer
from ledger.encoding import encode
from ledger.errors import SchemaError
from ledger.schema import as_map, check_keys, get_int, get_list, get_str

ANCHOR_TX_TYPE: Final = "anchor"
SOURCE_CHANNEL: Final = "supervision"
TARGET_CHANNEL: Final = "judicial"
#: A record leaf is ≈ 100–160 bytes; anything longer is not one.
MAX_LEAF_BYTES: Final = 512

_HEADER_KEYS: Final = frozenset(
    {"v", "kind", "src", "header", "cert", "config", "chunk", "records"}
)
_CHUNK_KEYS: Final = frozenset({"v", "kind", "src", "h", "k", "leaves", "proof"})


def _hashes(raw: Any, what: str) -> tuple[bytes, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_PROOF_HASHES:
        raise SchemaError(f"field {what!r}: expected a list of at most {MAX_PROOF_HASHES} hashes")
    for p in raw:
        if not isinstance(p, bytes) or len(p) != 32:
            raise SchemaError(f"field {what!r}: each hash must be 32 bytes")
    return tuple(raw)


def _leaves(raw: Any, what: str) -> tuple[bytes, ...]:
    if not isinstance(raw, list) or not raw or len(raw) > CHUNK_LEAVES:
        raise SchemaError(f"field {what!r}: expected 1 to {CHUNK_LEAVES} leaves")
    for leaf in raw:
        if not isinstance(leaf, bytes) or not 0 < len(leaf) <= MAX_LEAF_BYTES:
            raise SchemaError(f"field {what!r}: each leaf must be 1 to {MAX_LEAF_BYTES} bytes")
    return tuple(raw)


@dataclass(frozen=True)
class LeafChunk:
    """Chunk ``index`` of the record leaves of source block ``height``."""

    source: str
    height: int
    index: int
    leaves: tuple[bytes, ...]
    proof: tuple[bytes, ...]

    def to_payload(self) -> dict[str, Any]:
        return {
            "v": 1,
            "kind": "leaves",
            "src": self.source,
            "h": self.height,
            "k": self.index,
            "leaves": list(self.leaves),
            "proof": list(self.proof),
        }


@dataclass(frozen=True)
class HeaderAnchor:
    """A certified source header, its config transactions and (optionally) leaf chunk 0."""

    source: str
    header: BlockHeader
    certificate: CommitCertificate
    config: tuple[ConfigTxProof, ...]
    chunk: LeafChunk | None

    @property
    def height(self) -> int:
        return self.header.height

    def to_payload(self) -> dict[str, Any]:
        chunk = (
            None
            if self.chunk is None
            else {"leaves": list(self.chunk.leaves), "proof": list(self.chunk.proof)}
        )
        return {
            "v": 1,
            "kind": "header",
            "src": self.source,
            "header": self.header.to_wire(),
            "cert": self.certificate.to_wire(),
            "config": [c.to_wire() for c in self.config],
            "chunk": chunk,
            "records": [{"c": self.header.hash}],
        }


Anchor: TypeAlias = HeaderAnchor | LeafChunk


def parse_anchor(payload: Any) -> Anchor:
    """Parse an anchor payload. Raises :class:`SchemaError` naming the bad field."""
    m = as_map(payload, "anchor")
    if get_int(m, "v") != 1:
        raise SchemaError("anchor: unsupported version")
    kind = get_str(m, "kind", max_len=16)
    source = get_str(m, "src", name=True)
    if kind == "header":
        check_keys(m, _HEADER_KEYS, "header anchor")
        header = BlockHeader.from_wire(m.get("header"))
        cert = CommitCertificate.from_wire(m.get("cert"))
        config = tuple(
            ConfigTxProof.from_wire(c) for c in get_list(m, "config", max_len=MAX_CONFIG_TXS)
        )
        raw_chunk = m.get("chunk")
        chunk = None
        if raw_chunk is not None:
            c = as_map(raw_chunk, "chunk")
            check_keys(c, frozenset({"leaves", "proof"}), "chunk")
            chunk = LeafChunk(
                source,
                header.height,
                0,
                _leaves(c.get("leaves"), "chunk.leaves"),
                _hashes(c.get("proof"), "chunk.proof"),
            )
        if m.get("records") != [{"c": header.hash}]:
            raise SchemaError("field 'records': must be [{'c': <header hash>}]")
        return HeaderAnchor(source, header, cert, config, chunk)
    if kind == "leaves":
        check_keys(m, _CHUNK_KEYS, "leaf chunk")
        return LeafChunk(
            source,
            get_int(m, "h", lo=1),
            get_int(m, "k", hi=1 << 20),
            _leaves(m.get("leaves"), "leaves"),
            _hashes(m.get("proof"), "proof"),
        )
    raise SchemaError(f"field 'kind': expected 'header' or 'leaves', got {kind!r}")


def anchor_payloads(
    block: Block,
    certificate: CommitCertificate,
    *,
    source: str = SOURCE_CHANNEL,
    chunk_size: int = CHUNK_LEAVES,
) -> list[Anchor]:
    """Every anchor carrying ``block``, in the order they must be applied: its header
    anchor, then its leaf chunks. Chunk 0 rides in the header anchor unless the block
    has config transactions or the result would be too large."""
    leaves = block_record_leaves(block.transactions)
    roots = chunk_roots(leaves, chunk_size)

    def chunk(k: int) -> LeafChunk:
        lo = k * chunk_size
        return LeafChunk(
            source,
            block.height,
            k,
            tuple(leaves[lo : lo + chunk_size]),
            tuple(chunk_proof(leaves, k, chunk_size, roots=roots)),
        )

    config = config_tx_proofs(block)
    head = HeaderAnchor(source, block.header, certificate, config, None)
    first = 0
    if roots and not config:
        with_chunk = HeaderAnchor(source, block.header, certificate, config, chunk(0))
        if len(encode(with_chunk.to_payload())) <= MAX_TX_PAYLOAD_BYTES - 4096:
            head, first = with_chunk, 1
    return [head, *(chunk(i) for i in range(first, len(roots)))]


def anchor_record_leaf(anchor_tx_id: bytes, header_hash: bytes) -> bytes:
    """The judicial record leaf a header anchor contributes (what receipts and acks prove)."""
    return record_leaf(ANCHOR_TX_TYPE, anchor_tx_id, 0, header_hash)


def anchor_nonce(anchor: Anchor) -> int:
    """Deterministic nonce: a relay re-sending an anchor re-sends the same transaction."""
    if isinstance(anchor, HeaderAnchor):
        return anchor.height << 22
    return (anchor.height << 22) + (anchor.index << 1) + 1


def anchor_tx(
    anchor: Anchor,
    *,
    network: bytes,
    sender: str,
    signer: Signer,
    time_ms: int,
    channel: str = TARGET_CHANNEL,
) -> Transaction:
    """The signed judicial ``anchor`` transaction carrying ``anchor``."""
    tx = Transaction(
        network=network,
        channel=channel,
        type=ANCHOR_TX_TYPE,
        sender=sender,
        public_key=signer.public_key,
        nonce=anchor_nonce(anchor),
        time_ms=time_ms,
        payload=anchor.to_payload(),
    )
    return tx.signed(signer)


def build_anchor_txs(
    block: Block,
    certificate: CommitCertificate,
    *,
    network: bytes,
    sender: str,
    signer: Signer,
    time_ms: int,
    chunk_size: int = CHUNK_LEAVES,
) -> list[Transaction]:
    """Every anchor transaction for ``block``, in the order they must be applied."""
    return [
        anchor_tx(a, network=network, sender=sender, signer=signer, time_ms=time_ms)
        for a in anchor_payloads(block, certificate, chunk_size=chunk_size)
    ]


def anchored_leaves(anchors: Sequence[Anchor]) -> list[bytes]:
    """The leaves carried by ``anchors`` (in order)."""
    out: list[bytes] = []
    for a in anchors:
        chunk = a.chunk if isinstance(a, HeaderAnchor) else a
        if chunk is not None:
            out.extend(chunk.leaves)
    return out
