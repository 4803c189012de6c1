"""Anchor payloads: build, parse, bounds."""

from __future__ import annotations

from typing import Any

import pytest

from crosschain.anchor import (
    HeaderAnchor,
    LeafChunk,
    anchor_payloads,
    anchored_leaves,
    build_anchor_txs,
    parse_anchor,
)
from ledger.blocks import MAX_TX_PAYLOAD_BYTES, Transaction, block_record_leaves
from ledger.errors import SchemaError
from tests.crosschain.harness import GENESIS, Network, anchors_for, signer


@pytest.fixture(scope="module")
def net() -> Network:
    n = Network(chunk_size=4)
    n.report(3, 3)
    return n


def test_payloads_round_trip(net: Network) -> None:
    anchors = anchors_for(net, 1)
    assert isinstance(anchors[0], HeaderAnchor) and all(
        isinstance(a, LeafChunk) for a in anchors[1:]
    )
    for a in anchors:
        assert parse_anchor(a.to_payload()) == a
    block = net.sup.committed_block(1)
    assert block is not None
    assert anchored_leaves(anchors) == block_record_leaves(block[0].transactions)
    header = anchors[0].to_payload()
    assert header["records"] == [{"c": block[0].hash}]
    assert "records" not in anchors[1].to_payload()


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda p: p.update(records=[{"c": b"\x00" * 32}]), "records"),
        (lambda p: p.pop("records"), "records"),
        (lambda p: p.update(kind="other"), "kind"),
        (lambda p: p.update(extra=1), "unknown field"),
        (lambda p: p.update(v=2), "version"),
        (lambda p: p["chunk"].update(proof=[b"short"]), "chunk.proof"),
        (lambda p: p["chunk"].update(leaves=[]), "chunk.leaves"),
        (lambda p: p["chunk"].update(leaves=[b"x" * 600]), "chunk.leaves"),
        (lambda p: p["header"].update(h=0), "'h'"),
        (lambda p: p.update(config=[{"body": b"", "i": -1, "proof": []}]), "'i'"),
    ],
)
def test_header_anchor_schema_errors_name_the_field(net: Network, mutate: Any, field: str) -> None:
    payload = anchors_for(net, 1)[0].to_payload()
    mutate(payload)
    with pytest.raises(SchemaError, match=field):
        parse_anchor(payload)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda p: p.update(leaves=[b"l"] * 1025), "leaves"),
        (lambda p: p.update(h=0), "'h'"),
        (lambda p: p.update(k=-1), "'k'"),
        (lambda p: p.update(records=[]), "unknown field"),
        (lambda p: p.update(proof=[b"\x00" * 32] * 65), "proof"),
    ],
)
def test_leaf_chunk_schema_errors_name_the_field(net: Network, mutate: Any, field: str) -> None:
    payload = anchors_for(net, 1)[1].to_payload()
    mutate(payload)
    with pytest.raises(SchemaError, match=field):
        parse_anchor(payload)


def test_a_big_block_fits_in_bounded_transactions() -> None:
    big = Network()  # the real chunk size, 1024 leaves
    big.report(5, 700)  # 3,500 records
    block, cert = big.sup.committed_block(1) or (None, None)
    assert block is not None and cert is not None
    anchors = anchor_payloads(block, cert)
    assert [
        len(a.chunk.leaves) if isinstance(a, HeaderAnchor) and a.chunk else len(a.leaves)
        for a in anchors
    ] == [1024, 1024, 1024, 428]
    txs = build_anchor_txs(
        block, cert, network=GENESIS, sender="court", signer=signer("relay"), time_ms=1
    )
    for tx in txs:
        assert len(tx.body_bytes) <= MAX_TX_PAYLOAD_BYTES
        again = Transaction.decode(tx.encoded())  # the node's own parser accepts it
        assert again.tx_id == tx.tx_id
        again.verify_signature()
    assert len({tx.nonce for tx in txs}) == len(txs)
