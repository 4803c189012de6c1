"""Leaf chunks proven as aligned subtrees of an RFC 9162 tree."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crosschain.chunks import (
    chunk_bounds,
    chunk_count,
    chunk_proof,
    verify_chunk,
)
from ledger.errors import ProofError
from ledger.merkle import inclusion_proof, leaf_hash, merkle_root, root_from_node_path


def leaves(n: int) -> list[bytes]:
    return [f"leaf-{i}".encode() for i in range(n)]


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 200), shift=st.integers(0, 5), data=st.data())
def test_every_chunk_of_every_tree_verifies(n: int, shift: int, data: st.DataObject) -> None:
    size = 1 << shift
    ls = leaves(n)
    root = merkle_root(ls)
    k = data.draw(st.integers(0, chunk_count(n, size) - 1))
    lo, hi = chunk_bounds(n, k, size)
    proof = chunk_proof(ls, k, size)
    verify_chunk(ls[lo:hi], k, n, proof, root, size)
    # the same leaves claimed as another chunk, or one leaf short, do not verify
    if chunk_count(n, size) > 1:
        other = (k + 1) % chunk_count(n, size)
        with pytest.raises(ProofError):
            verify_chunk(ls[lo:hi], other, n, proof, root, size)
    if hi - lo > 1:
        with pytest.raises(ProofError):
            verify_chunk(ls[lo : hi - 1], k, n, proof, root, size)


@given(n=st.integers(1, 64), data=st.data())
def test_chunk_size_one_is_an_ordinary_inclusion_proof(n: int, data: st.DataObject) -> None:
    ls = leaves(n)
    i = data.draw(st.integers(0, n - 1))
    assert chunk_proof(ls, i, 1) == inclusion_proof(ls, i)
    assert root_from_node_path(leaf_hash(ls[i]), i, n, inclusion_proof(ls, i)) == merkle_root(ls)


def test_tampered_leaf_or_proof_is_rejected() -> None:
    ls = leaves(37)
    root = merkle_root(ls)
    proof = chunk_proof(ls, 1, 8)
    verify_chunk(ls[8:16], 1, 37, proof, root, 8)
    bad = list(ls[8:16])
    bad[3] = b"forged"
    with pytest.raises(ProofError):
        verify_chunk(bad, 1, 37, proof, root, 8)
    flipped = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]
    with pytest.raises(ProofError):
        verify_chunk(ls[8:16], 1, 37, flipped, root, 8)
    with pytest.raises(ProofError, match="too short"):
        verify_chunk(ls[8:16], 1, 37, proof[:-1], root, 8)
    with pytest.raises(ProofError, match="too long"):
        verify_chunk(ls[8:16], 1, 37, [*proof, proof[0]], root, 8)
    with pytest.raises(ProofError, match="out of range"):
        verify_chunk(ls[32:37], 5, 37, proof, root, 8)


def test_last_partial_chunk_and_bounds() -> None:
    assert chunk_count(0, 8) == 0
    assert chunk_count(8, 8) == 1
    assert chunk_count(9, 8) == 2
    assert chunk_bounds(37, 4, 8) == (32, 37)
    ls = leaves(37)
    verify_chunk(ls[32:], 4, 37, chunk_proof(ls, 4, 8), merkle_root(ls), 8)
    with pytest.raises(ValueError):
        chunk_count(10, 3)
