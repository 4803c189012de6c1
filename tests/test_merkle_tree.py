""":class:`ledger.merkle.MerkleTree`: the kept-levels tree gives exactly the RFC 9162
roots and audit paths of :func:`merkle_root` / :func:`inclusion_proof` (property
tests against them, plus the CT reference-tree vectors)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import ProofError
from ledger.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    verify_inclusion,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "rfc6962" / "ct_reference_tree.json").read_text()
)
LEAVES = [bytes.fromhex(x) for x in VECTORS["leaves"]]


@pytest.mark.parametrize(
    "vec", VECTORS["inclusion_proofs"], ids=lambda v: f"leaf{v['index']}-of-{v['size']}"
)
def test_reference_tree_paths(vec: dict[str, Any]) -> None:
    tree = MerkleTree(LEAVES[: vec["size"]])
    assert tree.proof(vec["index"]) == [bytes.fromhex(x) for x in vec["path"]]


def test_empty_and_single_leaf_trees() -> None:
    empty = MerkleTree([])
    assert (empty.size, empty.root) == (0, EMPTY_ROOT)
    with pytest.raises(ProofError):
        empty.proof(0)
    one = MerkleTree([b"x"])
    assert (one.size, one.root, one.proof(0)) == (1, leaf_hash(b"x"), [])
    assert one.leaf_hash(0) == leaf_hash(b"x")


@pytest.mark.parametrize("index", [-1, 5, 6, 100])
def test_out_of_range_indexes_are_refused(index: int) -> None:
    tree = MerkleTree([bytes([i]) for i in range(5)])
    with pytest.raises(ProofError):
        tree.proof(index)
    with pytest.raises(ProofError):
        tree.leaf_hash(index)


@settings(max_examples=150, deadline=None)
@given(leaves=st.lists(st.binary(max_size=10), min_size=1, max_size=300), data=st.data())
def test_tree_paths_equal_inclusion_proof(leaves: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree(leaves)
    assert tree.size == len(leaves)
    assert tree.root == merkle_root(leaves)
    for index in {0, len(leaves) - 1, data.draw(st.integers(0, len(leaves) - 1))}:
        path = tree.proof(index)
        assert path == inclusion_proof(leaves, index)
        verify_inclusion(leaves[index], index, len(leaves), path, tree.root)


@pytest.mark.parametrize("n", [*range(1, 40), 63, 64, 65, 127, 128, 129, 1000])
def test_every_path_of_small_and_boundary_sizes(n: int) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(n)]
    tree = MerkleTree(leaves)
    assert tree.root == merkle_root(leaves)
    step = 1 if n <= 129 else 37
    for index in range(0, n, step):
        assert tree.proof(index) == inclusion_proof(leaves, index)
