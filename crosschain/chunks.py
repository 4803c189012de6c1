"""Leaf chunks: proving a contiguous, aligned run of record leaves under a record_root.

A supervision block may hold far more record leaves than one judicial transaction may
carry, so an anchor carries its block's leaves in *chunks* of :data:`CHUNK_LEAVES`
(a power of two): chunk ``k`` is ``leaves[k·C : min((k+1)·C, n)]``.

In an RFC 9162 tree of ``n`` leaves every such aligned chunk is one interior node
(the last, possibly shorter, chunk too), and the tree over the chunk nodes is exactly
the RFC 9162 tree over ``m = ⌈n/C⌉`` "leaves" whose leaf hashes are the chunk roots.
So a chunk is proven like a leaf: its root ``MTH(chunk)`` plus an RFC 9162 audit path
for index ``k`` in a tree of size ``m`` — with ``C = 1`` this is the ordinary
inclusion proof. A chunk proof is at most ``⌈log2 m⌉`` hashes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from ledger.errors import ProofError
from ledger.merkle import merkle_root, path_of_hashes, root_from_node_path

#: Leaves per chunk (a power of two). 1024 leaves of ≤ 170 bytes fit one transaction.
CHUNK_LEAVES: Final = 1024


def _check_chunk_size(chunk: int) -> None:
    if chunk < 1 or chunk & (chunk - 1):
        raise ValueError(f"chunk size {chunk} is not a power of two")


def chunk_count(n: int, chunk: int = CHUNK_LEAVES) -> int:
    """Number of chunks of a block with ``n`` leaves (0 for an empty block)."""
    _check_chunk_size(chunk)
    return (n + chunk - 1) // chunk


def chunk_bounds(n: int, k: int, chunk: int = CHUNK_LEAVES) -> tuple[int, int]:
    """``(lo, hi)``: chunk ``k`` holds leaves ``lo .. hi-1``. Raises ProofError if ``k``
    is not a chunk of a block with ``n`` leaves."""
    if not 0 <= k < chunk_count(n, chunk):
        raise ProofError(f"chunk {k} out of range for {n} leaves")
    lo = k * chunk
    return lo, min(lo + chunk, n)


def chunk_roots(leaves: Sequence[bytes], chunk: int = CHUNK_LEAVES) -> list[bytes]:
    """``MTH`` of every chunk of ``leaves``, in order."""
    m = chunk_count(len(leaves), chunk)
    return [merkle_root(leaves[i * chunk : (i + 1) * chunk]) for i in range(m)]


def chunk_proof(
    leaves: Sequence[bytes],
    k: int,
    chunk: int = CHUNK_LEAVES,
    *,
    roots: Sequence[bytes] | None = None,
) -> list[bytes]:
    """The audit path proving chunk ``k`` of ``leaves`` under ``merkle_root(leaves)``.

    Pass ``roots`` (:func:`chunk_roots`) when proving many chunks of one block."""
    if roots is None:
        roots = chunk_roots(leaves, chunk)
    if not 0 <= k < len(roots):
        raise ProofError(f"chunk {k} out of range for {len(leaves)} leaves")
    return path_of_hashes(roots, k)


def verify_chunk(
    chunk_leaves: Sequence[bytes],
    k: int,
    n: int,
    proof: Sequence[bytes],
    root: bytes,
    chunk: int = CHUNK_LEAVES,
) -> None:
    """Raise :class:`ProofError` unless ``chunk_leaves`` is exactly chunk ``k`` of the
    ``n``-leaf tree with root ``root``."""
    lo, hi = chunk_bounds(n, k, chunk)
    if len(chunk_leaves) != hi - lo:
        raise ProofError(f"chunk {k} must hold {hi - lo} leaves, not {len(chunk_leaves)}")
    node = merkle_root(chunk_leaves)
    if root_from_node_path(node, k, chunk_count(n, chunk), proof) != root:
        raise ProofError(f"chunk {k} does not lead to the record root")
