"""RFC 9162 (Certificate Transparency v2) Merkle trees.

* ``MTH({}) = SHA-256()``; leaf hash ``SHA-256(0x00 || d)``; interior node
  ``SHA-256(0x01 || left || right)`` where the left subtree holds the largest power of
  two strictly less than n leaves. Odd nodes are never duplicated (so the
  CVE-2012-2459 ambiguity cannot arise).
* Inclusion proofs (RFC 9162 §2.1.3) and consistency proofs (§2.1.4), verified with
  the RFC's algorithms, which reject proofs of the wrong length and indexes ≥ size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ledger.errors import ProofError

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash of ``data``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly less than n (n ≥ 2)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def root_of_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH of a tree whose leaf *hashes* (or subtree roots) are given, left to right."""
    # Bottom-up: pair adjacent nodes, carry a lone last node up unchanged. This
    # produces exactly the RFC's left-balanced tree.
    level = list(hashes)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """MTH of the leaf *data* ``leaves`` (each is hashed with the 0x00 prefix)."""
    if not leaves:
        return EMPTY_ROOT
    return root_of_hashes([leaf_hash(d) for d in leaves])


def _subtree(hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    return root_of_hashes(hashes[lo:hi])


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path for leaf ``index`` in the tree of ``leaves`` (RFC 9162 PATH(m, D[n]))."""
    n = len(leaves)
    if not 0 <= index < n:
        raise ProofError(f"leaf index {index} out of range for tree of size {n}")
    return path_of_hashes([leaf_hash(d) for d in leaves], index)


def path_of_hashes(hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path for position ``index`` in the tree over ``hashes`` (leaf hashes or
    aligned subtree roots, as :func:`root_of_hashes` takes them)."""
    if not 0 <= index < len(hashes):
        raise ProofError(f"index {index} out of range for tree of size {len(hashes)}")
    path: list[bytes] = []

    def walk(m: int, lo: int, hi: int) -> None:
        if hi - lo == 1:
            return
        k = _split(hi - lo)
        if m < k:
            walk(m, lo, lo + k)
            path.append(_subtree(hashes, lo + k, hi))
        else:
            walk(m - k, lo + k, hi)
            path.append(_subtree(hashes, lo, lo + k))

    walk(index, 0, len(hashes))
    return path


def root_from_inclusion_proof(
    leaf_data: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """Recompute the root from a leaf, its index, the tree size and the audit path.

    Raises :class:`ProofError` if ``index >= size``, the proof has the wrong length,
    or an element is not 32 bytes (RFC 9162 §2.1.3.2).
    """
    return root_from_node_path(leaf_hash(leaf_data), index, size, proof)


def root_from_node_path(node: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2 starting from an already-hashed node (a leaf hash, or the root
    of an aligned subtree treated as one leaf). Raises :class:`ProofError` as
    :func:`root_from_inclusion_proof` does."""
    if size <= 0 or not 0 <= index < size:
        raise ProofError(f"leaf index {index} out of range for tree of size {size}")
    fn, sn = index, size - 1
    r = node
    for p in proof:
        if len(p) != 32:
            raise ProofError("proof element is not 32 bytes")
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    return r


def verify_inclusion(
    leaf_data: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise :class:`ProofError` unless ``proof`` puts ``leaf_data`` at ``index`` under ``root``."""
    if root_from_inclusion_proof(leaf_data, index, size, proof) != root:
        raise ProofError("inclusion proof does not lead to the expected root")


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """Proof that the first ``old_size`` leaves' tree is a prefix (RFC 9162 PROOF(m, D[n]))."""
    n = len(leaves)
    if not 0 < old_size <= n:
        raise ProofError(f"old size {old_size} out of range for tree of size {n}")
    hashes = [leaf_hash(d) for d in leaves]
    proof: list[bytes] = []

    def subproof(m: int, lo: int, hi: int, complete: bool) -> None:
        size = hi - lo
        if m == size:
            if not complete:
                proof.append(_subtree(hashes, lo, hi))
            return
        k = _split(size)
        if m <= k:
            subproof(m, lo, lo + k, complete)
            proof.append(_subtree(hashes, lo + k, hi))
        else:
            subproof(m - k, lo + k, hi, False)
            proof.append(_subtree(hashes, lo, lo + k))

    subproof(old_size, 0, n, True)
    return proof


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows the old tree is a prefix of the new
    one (RFC 9162 §2.1.4.2)."""
    if not 0 < old_size <= new_size:
        raise ProofError(f"sizes out of order: {old_size} > {new_size}")
    for p in proof:
        if len(p) != 32:
            raise ProofError("proof element is not 32 bytes")
    if old_size == new_size:
        if proof:
            raise ProofError("consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError("equal sizes but different roots")
        return
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # exact power of two: old root is the first node
        path.insert(0, old_root)
    if not path:
        raise ProofError("consistency proof is empty")
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root")
    if sr != new_root:
        raise ProofError("consistency proof does not lead to the new root")


class MerkleTree:
    """An RFC 9162 tree over leaf data with every level kept, so :meth:`proof` is
    O(log n) instead of rebuilding the tree.

    Levels are built bottom-up by pairing adjacent nodes and carrying a lone last node
    up unchanged (the construction of :func:`root_of_hashes`), which is exactly the
    RFC's left-balanced tree. Immutable after construction; safe to share between
    threads.
    """

    __slots__ = ("_levels",)

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self._levels = _levels([leaf_hash(d) for d in leaves])

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self._levels[0])

    @property
    def root(self) -> bytes:
        """MTH of the leaves (:data:`EMPTY_ROOT` for none), as :func:`merkle_root`."""
        top = self._levels[-1]
        return top[0] if top else EMPTY_ROOT

    def leaf_hash(self, index: int) -> bytes:
        """The hash of leaf ``index``. Raises :class:`ProofError` if out of range."""
        self._check(index)
        return self._levels[0][index]

    def proof(self, index: int) -> list[bytes]:
        """The audit path of leaf ``index``: the same list as
        :func:`inclusion_proof` ``(leaves, index)``. Raises :class:`ProofError` if
        ``index`` is out of range."""
        self._check(index)
        path: list[bytes] = []
        i = index
        for level in self._levels[:-1]:
            sibling = i ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            i >>= 1
        return path

    def _check(self, index: int) -> None:
        if not 0 <= index < self.size:
            raise ProofError(f"leaf index {index} out of range for tree of size {self.size}")


def _levels(hashes: list[bytes]) -> list[list[bytes]]:
    """Every level of the tree over ``hashes``, leaves first, root level last."""
    levels = [hashes]
    level = hashes
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        levels.append(nxt)
        level = nxt
    return levels
