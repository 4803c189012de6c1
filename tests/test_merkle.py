"""RFC 9162 / RFC 6962 Merkle trees: published known-answer vectors and property tests.

The vectors (tests/vectors/rfc6962/ct_reference_tree.json) are the 8-leaf reference tree
of the Certificate Transparency reference implementations, copied from
google/certificate-transparency cpp/merkletree/merkle_tree_test.cc and
transparency-dev/merkle (testonly/constants.go, proof/verify_test.go); the file records
the exact sources. The corruption probes mirror the ones those test files apply.

The property tests compare against small reference implementations written here from
the RFC's recursive definitions (MTH, PATH, PROOF/SUBPROOF).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import ProofError
from ledger.merkle import (
    EMPTY_ROOT,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    node_hash,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "rfc6962" / "ct_reference_tree.json").read_text()
)
LEAVES: list[bytes] = [bytes.fromhex(h) for h in VECTORS["leaves"]]
ROOTS: list[bytes] = [bytes.fromhex(h) for h in VECTORS["roots_by_size"]]  # index = size
INCLUSION: list[dict[str, Any]] = VECTORS["inclusion_proofs"]
CONSISTENCY: list[dict[str, Any]] = VECTORS["consistency_proofs"]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _hexes(items: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in items]


# --------------------------------------------------------------------------------------
# Reference implementations (RFC 9162 §2.1.1, §2.1.3.1, §2.1.4.1), deliberately naive.


def _k(n: int) -> int:
    """Largest power of two smaller than n (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = _k(len(leaves))
    return hashlib.sha256(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:])).digest()


def ref_path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_proof(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    def sub(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
        n = len(d)
        if m == n:
            return [] if b else [ref_mth(d)]
        k = _k(n)
        if m <= k:
            return [*sub(m, d[:k], b), ref_mth(d[k:])]
        return [*sub(m - k, d[k:], False), ref_mth(d[:k])]

    return sub(m, leaves, True)


def inclusion_shape(m: int, n: int) -> tuple[str, ...]:
    """Bottom-up sides of the audit-path siblings for leaf m of an n-leaf tree."""
    if n == 1:
        return ()
    k = _k(n)
    if m < k:
        return (*inclusion_shape(m, k), "R")
    return (*inclusion_shape(m - k, n - k), "L")


def consistency_plan(m: int, n: int) -> tuple[str, ...]:
    """What each element of PROOF(m, n) is: the start node, or a left/right sibling."""

    def sub(m: int, n: int, b: bool) -> tuple[str, ...]:
        if m == n:
            return () if b else ("start",)
        k = _k(n)
        if m <= k:
            return (*sub(m, k, b), "right")
        return (*sub(m - k, n - k, False), "left")

    return sub(m, n, True)


def _inclusion_ok(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    try:
        verify_inclusion(leaf, index, size, proof, root)
    except ProofError:
        return False
    return True


def _consistency_ok(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    try:
        verify_consistency(old, new, old_root, new_root, proof)
    except ProofError:
        return False
    return True


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# --------------------------------------------------------------------------------------
# Known-answer tests.


def test_empty_tree_root_is_sha256_of_empty_string() -> None:
    assert EMPTY_ROOT == hashlib.sha256(b"").digest() == ROOTS[0]
    assert merkle_root([]) == ROOTS[0]
    assert ROOTS[0].hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize("size", range(1, 9))
def test_root_vectors(size: int) -> None:
    assert merkle_root(LEAVES[:size]) == ROOTS[size]


def test_leaf_and_node_hashing_match_rfc_prefixes() -> None:
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    left, right = b"\x11" * 32, b"\x22" * 32
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()


@pytest.mark.parametrize("level", range(4))
def test_complete_subtree_hashes_match_vectors(level: int) -> None:
    width = 1 << level
    expected = _hexes(VECTORS["node_hashes_by_level"][level])
    got = [merkle_root(LEAVES[i * width : (i + 1) * width]) for i in range(len(expected))]
    assert got == expected


@pytest.mark.parametrize("vec", INCLUSION, ids=lambda v: f"leaf{v['index']}-of-{v['size']}")
def test_inclusion_vectors(vec: dict[str, Any]) -> None:
    index, size, path = vec["index"], vec["size"], _hexes(vec["path"])
    assert inclusion_proof(LEAVES[:size], index) == path
    assert root_from_inclusion_proof(LEAVES[index], index, size, path) == ROOTS[size]
    verify_inclusion(LEAVES[index], index, size, path, ROOTS[size])


def _corrupt_inclusion(
    index: int, size: int, proof: list[bytes], root: bytes
) -> list[tuple[str, int, int, bytes, list[bytes], bytes]]:
    """The corruptions applied by transparency-dev/merkle's verify_test.go, as
    (description, index, size, leaf, proof, root); the leaf is LEAVES[index]."""
    leaf = LEAVES[index]
    probes = [
        ("index-1", index - 1, size, leaf, proof, root),
        ("index+1", index + 1, size, leaf, proof, root),
        ("index^2", index ^ 2, size, leaf, proof, root),
        ("size*2", index, size * 2, leaf, proof, root),
        ("size/2", index, size // 2, leaf, proof, root),
        ("wrong leaf", index, size, b"WrongLeaf", proof, root),
        ("empty root", index, size, leaf, proof, EMPTY_ROOT),
        ("random root", index, size, leaf, proof, SOME_HASH),
        ("trailing garbage", index, size, leaf, [*proof, b""], root),
        ("trailing root", index, size, leaf, [*proof, root], root),
        ("preceding garbage", index, size, leaf, [b"", *proof], root),
        ("preceding root", index, size, leaf, [root, *proof], root),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = _flip(wrong[i], 3)
        probes.append((f"proof[{i}] bit 3", index, size, leaf, wrong, root))
        wrong = list(proof)
        wrong[i] = EMPTY_ROOT
        probes.append((f"proof[{i}] replaced", index, size, leaf, wrong, root))
    if proof:
        probes.append(("removed component", index, size, leaf, proof[:-1], root))
    if len(proof) > 1:
        inserted = [proof[0], SOME_HASH, *proof[1:]]
        probes.append(("inserted component", index, size, leaf, inserted, root))
    return probes


@pytest.mark.parametrize("vec", INCLUSION, ids=lambda v: f"leaf{v['index']}-of-{v['size']}")
def test_inclusion_vectors_corrupted_fail(vec: dict[str, Any]) -> None:
    index, size, path = vec["index"], vec["size"], _hexes(vec["path"])
    probes = _corrupt_inclusion(index, size, path, ROOTS[size])
    accepted = [p[0] for p in probes if _inclusion_ok(p[3], p[1], p[2], p[4], p[5])]
    assert accepted == []


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (1, 1), (2, 1), (-1, 4), (8, 8)])
def test_inclusion_index_out_of_range_fails(index: int, size: int) -> None:
    leaves = LEAVES[: max(size, 1)]
    with pytest.raises(ProofError):
        verify_inclusion(LEAVES[0], index, size, [], merkle_root(leaves))
    with pytest.raises(ProofError):
        root_from_inclusion_proof(LEAVES[0], index, size, [])
    if size > 0:
        with pytest.raises(ProofError):
            inclusion_proof(LEAVES[:size], index)


def test_inclusion_proof_of_empty_tree_refused() -> None:
    with pytest.raises(ProofError):
        inclusion_proof([], 0)


def test_inclusion_single_entry() -> None:
    root = merkle_root([b"data"])
    assert root == leaf_hash(b"data")
    verify_inclusion(b"data", 0, 1, [], root)
    with pytest.raises(ProofError):
        verify_inclusion(b"data", 0, 1, [], b"")
    with pytest.raises(ProofError):
        verify_inclusion(b"other", 0, 1, [], root)


def test_inclusion_proof_element_of_wrong_length_fails() -> None:
    path = inclusion_proof(LEAVES, 0)
    for bad in (path[0][:31], path[0] + b"\x00", b""):
        with pytest.raises(ProofError):
            verify_inclusion(LEAVES[0], 0, 8, [bad, *path[1:]], ROOTS[8])


@pytest.mark.parametrize("vec", CONSISTENCY, ids=lambda v: f"{v['old_size']}-to-{v['new_size']}")
def test_consistency_vectors(vec: dict[str, Any]) -> None:
    old, new, proof = vec["old_size"], vec["new_size"], _hexes(vec["proof"])
    assert consistency_proof(LEAVES[:new], old) == proof
    verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


def _corrupt_consistency(
    old: int, new: int, r1: bytes, r2: bytes, proof: list[bytes]
) -> list[tuple[str, int, int, bytes, bytes, list[bytes]]]:
    """The corruptions of transparency-dev/merkle's verify_test.go and the CT C++ tests."""
    probes = [
        ("old-1", old - 1, new, r1, r2, proof),
        ("old+1", old + 1, new, r1, r2, proof),
        ("old^2", old ^ 2, new, r1, r2, proof),
        ("new*2", old, new * 2, r1, r2, proof),
        ("new/2", old, new // 2, r1, r2, proof),
        ("wrong root1", old, new, b"WrongRoot", r2, proof),
        ("wrong root2", old, new, r1, b"WrongRoot", proof),
        ("swapped roots", old, new, r2, r1, proof),
        ("empty proof", old, new, r1, r2, []),
        ("trailing garbage", old, new, r1, r2, [*proof, b""]),
        ("trailing root1", old, new, r1, r2, [*proof, r1]),
        ("trailing root2", old, new, r1, r2, [*proof, r2]),
        ("trailing last", old, new, r1, r2, [*proof, proof[-1]]),
        ("preceding garbage", old, new, r1, r2, [b"", *proof]),
        ("preceding root1", old, new, r1, r2, [r1, *proof]),
        ("preceding root2", old, new, r1, r2, [r2, *proof]),
        ("preceding proof[0]", old, new, r1, r2, [proof[0], *proof]),
        ("truncated", old, new, r1, r2, proof[:-1]),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = _flip(wrong[i], 4)
        probes.append((f"proof[{i}] bit 4", old, new, r1, r2, wrong))
        wrong = list(proof)
        wrong[i] = EMPTY_ROOT
        probes.append((f"proof[{i}] replaced", old, new, r1, r2, wrong))
    return probes


@pytest.mark.parametrize(
    "vec",
    [v for v in CONSISTENCY if v["proof"]],
    ids=lambda v: f"{v['old_size']}-to-{v['new_size']}",
)
def test_consistency_vectors_corrupted_fail(vec: dict[str, Any]) -> None:
    old, new, proof = vec["old_size"], vec["new_size"], _hexes(vec["proof"])
    probes = _corrupt_consistency(old, new, ROOTS[old], ROOTS[new], proof)
    accepted = [p[0] for p in probes if _consistency_ok(p[1], p[2], p[3], p[4], p[5])]
    assert accepted == []


def test_consistency_edge_cases() -> None:
    r1, r2 = ROOTS[1], ROOTS[2]
    verify_consistency(1, 1, r1, r1, [])
    verify_consistency(8, 8, ROOTS[8], ROOTS[8], [])
    with pytest.raises(ProofError):  # equal sizes, different roots
        verify_consistency(1, 1, r1, r2, [])
    with pytest.raises(ProofError):  # equal sizes, non-empty proof
        verify_consistency(1, 1, r1, r1, [EMPTY_ROOT])
    with pytest.raises(ProofError):  # time travel to the past
        verify_consistency(2, 1, r2, r1, [])
    with pytest.raises(ProofError):  # empty proof between different sizes
        verify_consistency(1, 2, r1, r2, [])
    with pytest.raises(ProofError):  # the empty tree is not a proof subject here
        verify_consistency(0, 1, EMPTY_ROOT, r1, [])
    with pytest.raises(ProofError):
        verify_consistency(-1, 1, EMPTY_ROOT, r1, [])
    for old in (0, 9, -1):
        with pytest.raises(ProofError):
            consistency_proof(LEAVES, old)


# --------------------------------------------------------------------------------------
# Exhaustive small trees against the reference implementations.

SMALL = [bytes([i]) * (i % 3) + i.to_bytes(2, "big") for i in range(40)]


def test_small_trees_match_reference_and_all_proofs_verify() -> None:
    for n in range(1, len(SMALL) + 1):
        leaves = SMALL[:n]
        root = merkle_root(leaves)
        assert root == ref_mth(leaves)
        for m in range(n):
            path = inclusion_proof(leaves, m)
            assert path == ref_path(m, leaves)
            assert len(path) == len(inclusion_shape(m, n))
            verify_inclusion(leaves[m], m, n, path, root)
        for m in range(1, n + 1):
            proof = consistency_proof(leaves, m)
            assert proof == ref_proof(m, leaves)
            verify_consistency(m, n, merkle_root(leaves[:m]), root, proof)


# --------------------------------------------------------------------------------------
# Property tests on random trees. Leaves are distinct so that a proof for one position
# can never honestly be a proof for another.

distinct_leaves = st.lists(st.binary(max_size=12), min_size=1, max_size=200, unique=True)


@settings(max_examples=60, deadline=None)
@given(leaves=distinct_leaves, data=st.data())
def test_inclusion_proofs_verify_and_resist_tampering(leaves: list[bytes], data: Any) -> None:
    n = len(leaves)
    index = data.draw(st.integers(0, n - 1), label="index")
    root = merkle_root(leaves)
    proof = inclusion_proof(leaves, index)
    leaf = leaves[index]
    verify_inclusion(leaf, index, n, proof, root)

    # Any single bit flipped in any proof element.
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1), label="element")
        bit = data.draw(st.integers(0, 255), label="bit")
        bad = list(proof)
        bad[i] = _flip(bad[i], bit)
        with pytest.raises(ProofError):
            verify_inclusion(leaf, index, n, bad, root)

    # Any other index, in range or not.
    other = data.draw(st.integers(-2, 2 * n + 2).filter(lambda j: j != index), label="other")
    with pytest.raises(ProofError):
        verify_inclusion(leaf, other, n, proof, root)

    # Another size: rejected unless the audit path for (index, size') has exactly the
    # same shape as for (index, n); then RFC 9162 verification cannot tell them apart
    # (the size must be authenticated with the root, e.g. by a signed header's count).
    sizes = {n - 1, n + 1, 2 * n, n // 2, data.draw(st.integers(-1, 4 * n + 4), label="size")}
    for size in sizes - {n}:
        same_shape = 0 <= index < size and inclusion_shape(index, size) == inclusion_shape(index, n)
        assert _inclusion_ok(leaf, index, size, proof, root) == same_shape, size

    # Truncated or extended proofs.
    extra = data.draw(st.binary(min_size=32, max_size=32), label="extra")
    tampered = [[*proof, extra], [extra, *proof], [*proof, root]]
    if proof:
        tampered += [proof[:-1], proof[1:]]
    for bad in tampered:
        with pytest.raises(ProofError):
            verify_inclusion(leaf, index, n, bad, root)

    # Wrong root; wrong leaf.
    with pytest.raises(ProofError):
        verify_inclusion(leaf, index, n, proof, _flip(root, data.draw(st.integers(0, 255))))
    with pytest.raises(ProofError):
        verify_inclusion(leaf + b"\x00", index, n, proof, root)


@settings(max_examples=60, deadline=None)
@given(leaves=distinct_leaves, data=st.data())
def test_consistency_proofs_verify_and_resist_tampering(leaves: list[bytes], data: Any) -> None:
    n = len(leaves)
    old = data.draw(st.integers(1, n), label="old")
    r1, r2 = merkle_root(leaves[:old]), merkle_root(leaves)
    proof = consistency_proof(leaves, old)
    verify_consistency(old, n, r1, r2, proof)
    if old == n:
        assert proof == []
        with pytest.raises(ProofError):
            verify_consistency(old, n, r1, r2, [r1])
        return

    i = data.draw(st.integers(0, len(proof) - 1), label="element")
    bad = list(proof)
    bad[i] = _flip(bad[i], data.draw(st.integers(0, 255), label="bit"))
    with pytest.raises(ProofError):
        verify_consistency(old, n, r1, r2, bad)

    # Other sizes: rejected unless PROOF(old', new') has the same plan as PROOF(old, n).
    plan = consistency_plan(old, n)
    pairs = {
        (old - 1, n),
        (old + 1, n),
        (old, n - 1),
        (old, n + 1),
        (old, 2 * n),
        (old, n // 2),
        (
            data.draw(st.integers(-1, 2 * n + 2), label="old'"),
            data.draw(st.integers(-1, 2 * n + 2), label="new'"),
        ),
    }
    for o, s in pairs - {(old, n)}:
        expect = 0 < o < s and consistency_plan(o, s) == plan
        assert _consistency_ok(o, s, r1, r2, proof) == expect, (o, s)

    extra = data.draw(st.binary(min_size=32, max_size=32), label="extra")
    for bad in ([*proof, extra], [extra, *proof], proof[:-1], proof[1:], [], [*proof, r2]):
        with pytest.raises(ProofError):
            verify_consistency(old, n, r1, r2, bad)
    with pytest.raises(ProofError):
        verify_consistency(old, n, r2, r1, proof)
    with pytest.raises(ProofError):
        verify_consistency(old, n, _flip(r1, data.draw(st.integers(0, 255))), r2, proof)
    with pytest.raises(ProofError):
        verify_consistency(old, n, r1, _flip(r2, data.draw(st.integers(0, 255))), proof)


@settings(max_examples=100, deadline=None)
@given(leaves=st.lists(st.binary(max_size=12), min_size=1, max_size=200))
def test_root_matches_reference_and_duplicating_last_leaf_changes_it(leaves: list[bytes]) -> None:
    root = merkle_root(leaves)
    assert root == ref_mth(leaves)
    # CVE-2012-2459: Bitcoin duplicates an odd last node, so [a, b, c] and [a, b, c, c]
    # share a root. RFC 9162 trees never duplicate.
    assert merkle_root([*leaves, leaves[-1]]) != root


def test_cve_2012_2459_classic_case() -> None:
    a, b, c = b"a", b"b", b"c"
    assert merkle_root([a, b, c]) != merkle_root([a, b, c, c])
    assert merkle_root([a, b, c]) == node_hash(node_hash(leaf_hash(a), leaf_hash(b)), leaf_hash(c))
    # Six leaves: Bitcoin would give [1..6] and [1..6, 5, 6] the same root.
    six = [bytes([i]) for i in range(6)]
    assert merkle_root(six) != merkle_root([*six, six[4], six[5]])


def test_interior_node_is_not_a_leaf() -> None:
    # Domain separation: the bytes of two child hashes, taken as one leaf, give another root.
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert merkle_root([b"a", b"b"]) != merkle_root([a + b])


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.binary(max_size=4), max_size=20),
    st.lists(st.binary(max_size=4), max_size=20),
)
def test_different_leaf_lists_have_different_roots(xs: list[bytes], ys: list[bytes]) -> None:
    if xs != ys:
        assert merkle_root(xs) != merkle_root(ys)
