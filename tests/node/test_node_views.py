"""Block views: a scoped view lists the reader's own transactions, each with an RFC
9162 inclusion proof against the certified ``tx_root`` (built from one tree per view,
the same proofs as :func:`ledger.merkle.inclusion_proof`)."""

from __future__ import annotations

from ledger.merkle import inclusion_proof, verify_inclusion
from node.rules import TxOutcome
from node.views import block_view
from tests.helpers_chain import make_chain


def test_a_scoped_view_proves_each_of_the_readers_transactions() -> None:
    block, cert = make_chain(1, 7).blocks[0]
    ids = [tx.tx_id for tx in block.transactions]
    sender = block.transactions[3].sender
    outcomes = [TxOutcome() for _ in ids]
    view = block_view(block, cert, outcomes, only_sender=sender)
    mine = [i for i, tx in enumerate(block.transactions) if tx.sender == sender]
    assert view["scoped"] and [t["index"] for t in view["txs"]] == mine
    for item in view["txs"]:
        i = item["index"]
        assert item["id"] == ids[i] and item["proof"] == inclusion_proof(ids, i)
        verify_inclusion(ids[i], i, len(ids), item["proof"], block.header.tx_root)
    full = block_view(block, cert, outcomes)
    assert not full["scoped"] and len(full["txs"]) == 7
    assert all("proof" not in t for t in full["txs"])
