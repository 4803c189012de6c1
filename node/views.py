"""How blocks and transactions are shown to clients (JSON and msgpack share one shape).

A block view::

    {"channel": str, "height": int, "hash": bytes, "header": <header wire map>,
     "certificate": <certificate wire map>, "tx_count": int, "scoped": bool,
     "txs": [{"index": int, "id": bytes, "tx": <tx wire map>,
              "outcome": {"valid": bool, "code": str, "message": str} | None,
              "proof": [bytes, ...]   # scoped views only: RFC 9162 inclusion proof
             }, ...]}

In JSON every bytes value is ``{"$hex": "…"}`` (:mod:`node.jsonwire`). A *scoped*
view (a lender reading) lists only the caller's own transactions, each with its
Merkle inclusion proof against ``header.txr`` so it can still be verified against
the certificate; other transactions are withheld.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger.blocks import Block
from ledger.certificate import CommitCertificate
from ledger.merkle import MerkleTree
from node.rules import TxOutcome


def block_view(
    block: Block,
    cert: CommitCertificate,
    outcomes: Sequence[TxOutcome],
    *,
    only_sender: str | None = None,
) -> dict[str, Any]:
    """The view of one block; ``only_sender`` makes it a scoped view."""
    txs: list[dict[str, Any]] = []
    # one tree per view: a proof per transaction from it is O(log n), where rebuilding
    # the tree for each (inclusion_proof) made a scoped view of a large block O(n²)
    scoped = only_sender is not None
    tree = MerkleTree([tx.tx_id for tx in block.transactions]) if scoped else None
    for i, tx in enumerate(block.transactions):
        if only_sender is not None and tx.sender != only_sender:
            continue
        item: dict[str, Any] = {
            "index": i,
            "id": tx.tx_id,
            "tx": tx.to_wire(),
            "outcome": outcomes[i].to_wire() if i < len(outcomes) else None,
        }
        if tree is not None:
            item["proof"] = tree.proof(i)
        txs.append(item)
    return {
        "channel": block.header.channel,
        "height": block.height,
        "hash": block.hash,
        "header": block.header.to_wire(),
        "certificate": cert.to_wire(),
        "tx_count": len(block.transactions),
        "scoped": only_sender is not None,
        "txs": txs,
    }
