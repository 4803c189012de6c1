"""SHA-256 with a domain-separation tag per object kind.

``tagged_hash(tag, data) = SHA-256(b"wulian:" + tag + b"\\x00" + data)``. Tags name the
object kind and its schema version, so a transaction's bytes can never be passed off
as a block header's, nor a v1 object as a v2 one. Merkle trees use RFC 9162's own
0x00/0x01 prefixes instead (see :mod:`ledger.merkle`).
"""

from __future__ import annotations

import hashlib
from typing import Final

HASH_SIZE: Final = 32

TAG_TX: Final = "tx/v1"
TAG_BLOCK_HEADER: Final = "block-header/v1"
TAG_COMMIT_VOTE: Final = "commit-vote/v1"
TAG_GENESIS: Final = "genesis/v1"
TAG_CHANNEL_GENESIS: Final = "channel-genesis/v1"
TAG_STATE: Final = "state/v1"
TAG_RECORD: Final = "record/v1"
TAG_CONSENSUS_MSG: Final = "consensus-msg/v1"
TAG_REQUEST: Final = "request/v1"
TAG_GOVERNANCE: Final = "governance/v1"


def tagged_hash(tag: str, data: bytes) -> bytes:
    """Return the 32-byte domain-separated SHA-256 of ``data`` under ``tag``."""
    return hashlib.sha256(b"wulian:" + tag.encode("ascii") + b"\x00" + data).digest()


def sha256(data: bytes) -> bytes:
    """Plain SHA-256 (for file digests that third parties recompute with any tool)."""
    return hashlib.sha256(data).digest()
