"""The entries of the judicial channel's anchor and evidence indexes (plain values).

Written by :mod:`crosschain.anchor_rules`; read by relays, the node and receipt
assembly. Kept free of the channel layer so the offline receipt verifier imports only
``ledger``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.evidence_code import EvidenceCode, code_for_leaf
from ledger.schema import as_map, get_bytes, get_int


@dataclass(frozen=True)
class AnchorEntry:
    """Where source block ``height``'s header anchor is on the judicial chain."""

    height: int
    judicial_height: int
    tx_index: int
    tx_id: bytes
    header_hash: bytes
    header_time_ms: int
    record_count: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "jh": self.judicial_height,
            "ti": self.tx_index,
            "tx": self.tx_id,
            "hash": self.header_hash,
            "t": self.header_time_ms,
            "rn": self.record_count,
        }

    @staticmethod
    def from_wire(height: int, raw: Any) -> AnchorEntry:
        m = as_map(raw, "anchor entry")
        return AnchorEntry(
            height,
            get_int(m, "jh"),
            get_int(m, "ti"),
            get_bytes(m, "tx", 32),
            get_bytes(m, "hash", 32),
            get_int(m, "t"),
            get_int(m, "rn"),
        )


@dataclass(frozen=True)
class EvidenceEntry:
    """One anchored record: the anchor transaction that carried its leaf, the source
    height and the leaf's index in that block's record tree."""

    judicial_height: int
    tx_index: int
    source_height: int
    leaf_index: int
    leaf: bytes

    @property
    def code(self) -> EvidenceCode:
        return code_for_leaf(self.leaf)

    def to_wire(self) -> dict[str, Any]:
        return {
            "jh": self.judicial_height,
            "ti": self.tx_index,
            "sh": self.source_height,
            "li": self.leaf_index,
            "leaf": self.leaf,
        }

    @staticmethod
    def from_wire(raw: Any) -> EvidenceEntry:
        m = as_map(raw, "evidence entry")
        return EvidenceEntry(
            get_int(m, "jh"),
            get_int(m, "ti"),
            get_int(m, "sh"),
            get_int(m, "li"),
            get_bytes(m, "leaf", max_size=1024),
        )
