"""The explorer's node adapter (:class:`node.explorer.backend.RuntimeBackend`) over a
real :class:`~node.runtime.NodeRuntime`: a five-node genesis, this node's LevelDB store
holding really certified supervision and judicial blocks, and the judicial state the
cross-chain anchor rule writes (header anchor and evidence index). Verification
assembles a real receipt and checks it against the genesis trust root."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from channels.loans import EventFact, EventRef, LoanEvent
from channels.state import seq_part
from channels.supervision import event_prefix, loan_key
from crosschain.anchor_rules import anchor_key, evidence_key
from crosschain.evidence_index import AnchorEntry, EvidenceEntry
from ledger.blocks import Block, Transaction, block_record_leaves
from ledger.crypto import Ed25519Signer
from ledger.encoding import encode
from ledger.evidence_code import code_for_leaf
from ledger.hashing import TAG_RECORD, tagged_hash
from node.explorer.backend import RuntimeBackend
from node.runtime import NodeRuntime
from tests.node.single_node import T0, SingleNode, org_entry


@dataclass
class World:
    rt: NodeRuntime
    backend: RuntimeBackend
    lender: Ed25519Signer
    records: list[tuple[bytes, bytes]]  # (record bytes, salt) per anchored leaf
    leaves: list[bytes]
    txs: list[Transaction]
    sup1: Block
    jud1: Block
    anchor_tx: Transaction
    unanchored: Transaction


def _event(loan: str, event: str, c: bytes, t: int) -> LoanEvent:
    return LoanEvent(f"r-{loan}-{event}", loan, b"\x07" * 32, event, 500_000, 1500, 12, t, c)


def _record(loan: str, event: str, c: bytes) -> dict[str, Any]:
    """A loan event as the supervision channel carries it: a record map with "c"."""
    wire = _event(loan, event, c, T0).to_wire()
    del wire["commitment"]
    return {**wire, "c": c}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    lender, clerk = Ed25519Signer.generate(), Ed25519Signer.generate()

    def edit(doc: dict[str, Any]) -> None:
        doc["orgs"] += [
            org_entry("acme", "lender", lender, name="acme org"),
            org_entry("court-clerks", "clerk", clerk, name="court-clerks org"),
        ]

    node = SingleNode(tmp_path_factory.mktemp("node"), edit)
    rt, genesis, signers = node.rt, node.genesis, node.node_keys

    def commit(
        ch: str, txs: list[Transaction], t: int, writes: dict[bytes, bytes], view: int = 0
    ) -> Block:
        return node.commit(ch, txs, writes, time_ms=t, view=view)

    def tx(
        sender: str, key: Ed25519Signer, ch: str, typ: str, payload: dict[str, Any], n: int
    ) -> Transaction:
        return Transaction(
            genesis.hash, ch, typ, sender, key.public_key, n, T0 + n, payload
        ).signed(key)

    records = [(f"loan record {i} 借款合同".encode(), bytes([i + 1]) * 32) for i in range(4)]
    cs = [tagged_hash(TAG_RECORD, salt + rec) for rec, salt in records]

    def loan_tx(loan: str, event: str, c: bytes, n: int) -> Transaction:
        payload = {"records": [_record(loan, event, c)]}
        return tx("acme", lender, "supervision", "loan_event", payload, n)

    tx1 = loan_tx("L-1", "contract", cs[0], 1)
    batch = {"records": [_record("L-2", "contract", cs[1]), _record("L-3", "contract", cs[2])]}
    tx2 = tx("acme", lender, "supervision", "loan_event_batch", batch, 2)
    t1 = T0 + 1000
    facts = {}
    for lid, (t, i, c) in {
        "L-1": (tx1, 0, cs[0]),
        "L-2": (tx2, 0, cs[1]),
        "L-3": (tx2, 1, cs[2]),
    }.items():
        fact = EventFact("acme", 0, 1, t1, EventRef(t.tx_id, i), _event(lid, "contract", c, T0))
        facts[event_prefix("acme", lid) + seq_part(0)] = encode(fact.to_wire())
        facts[loan_key("acme", lid)] = encode({"state": "contracted"})
    sup1 = commit("supervision", [tx1, tx2], t1, facts)
    tx3 = loan_tx("L-1", "repayment", cs[3], 3)
    fact3 = EventFact(
        "acme", 1, 2, t1 + 1000, EventRef(tx3.tx_id, 0), _event("L-1", "repayment", cs[3], T0)
    )
    commit(
        "supervision",
        [tx3],
        t1 + 1000,
        {event_prefix("acme", "L-1") + seq_part(1): encode(fact3.to_wire())},
        view=1,
    )

    leaves = block_record_leaves(sup1.transactions)
    court_node = signers["court-node"]
    anchor = tx("court-node", court_node, "judicial", "anchor",
                {"records": [{"c": sup1.hash}], "kind": "test"}, 9)  # fmt: skip
    jwrites = {
        anchor_key("supervision", 1): encode(
            AnchorEntry(
                1, 1, 0, anchor.tx_id, sup1.hash, sup1.header.time_ms, len(leaves)
            ).to_wire()
        )
    }
    for i, leaf in enumerate(leaves):
        jwrites[evidence_key(code_for_leaf(leaf))] = encode(
            [EvidenceEntry(1, 0, 1, i, leaf).to_wire()]
        )
    jud1 = commit("judicial", [anchor], t1 + 700, jwrites)
    backend = RuntimeBackend(rt)
    try:
        yield World(rt, backend, lender, records, leaves, [tx1, tx2], sup1, jud1, anchor, tx3)
    finally:
        node.close()


def test_genuine_record_verifies_against_the_genesis_trust_root(world: World) -> None:
    b = world.backend
    for i, (record, salt) in enumerate(world.records[:3]):
        code = code_for_leaf(world.leaves[i])
        v = b.verify(code, tagged_hash(TAG_RECORD, salt + record))
        assert v.status == "verified", v
        assert [c.status for c in v.checks] == ["pass"] * 9
        assert v.judicial_height == 1 and v.supervision_height == 1
        assert v.anchored_time_ms == world.jud1.header.time_ms
    record, salt = world.records[0]
    code = code_for_leaf(world.leaves[0])
    tampered = b.verify(code, tagged_hash(TAG_RECORD, salt + record + b" "))
    assert tampered.status == "mismatch"
    assert [c.name for c in tampered.checks if c.status == "fail"] == ["commitment"]
    wrong_salt = b.verify(code, tagged_hash(TAG_RECORD, bytes(32) + record))
    assert wrong_salt.status == "mismatch"
    unanchored = code_for_leaf(block_record_leaves([world.unanchored])[0])
    assert b.verify(unanchored, bytes(32)).status == "not_anchored"


def test_evidence_lineage_by_code_tx_and_loan(world: World) -> None:
    b = world.backend
    code = code_for_leaf(world.leaves[2])
    (r,) = b.evidence_by_code(code)
    assert r.evidence_code == str(code)
    assert (r.tx_id, r.tx_type, r.record_index, r.leaf_index) == (
        world.txs[1].tx_id, "loan_event_batch", 1, 2,
    )  # fmt: skip
    assert (r.supervision_height, r.supervision_hash) == (1, world.sup1.hash)
    assert r.anchor is not None
    assert (r.anchor.judicial_height, r.anchor.judicial_hash) == (1, world.jud1.hash)
    assert r.anchor.anchor_tx_id == world.anchor_tx.tx_id
    assert r.anchor.judicial_time_ms - r.supervision_time_ms == 700
    assert r.supervision is not None
    assert (r.supervision.lender, r.supervision.loan_id, r.supervision.event) == (
        "acme", "L-3", "contract",
    )  # fmt: skip
    by_tx = b.evidence_by_tx(world.txs[1].tx_id)
    assert [x.evidence_code for x in by_tx] == [
        str(code_for_leaf(world.leaves[1])),
        str(code),
    ]
    loan = b.evidence_by_loan("L-1", None)
    assert len(loan) == 2  # the anchored contract and the not-yet-anchored repayment
    assert [x.anchor is not None for x in loan] == [True, False]
    assert loan[1].supervision_height == 2
    assert b.evidence_by_loan("L-1", "acme") == loan
    assert b.evidence_by_loan("L-1", "other") == []
    assert b.evidence_by_code(code_for_leaf(b"nothing")) == []


def test_blocks_transactions_certificates_and_view_changes(world: World) -> None:
    b = world.backend
    blk = b.block("supervision", 1)
    assert blk is not None and blk.hash == world.sup1.hash
    assert blk.certificate is not None and blk.certificate.valid_votes == 4
    assert blk.certificate.complete and blk.certificate.quorum == 4
    assert [t.tx_id for t in blk.txs] == [t.tx_id for t in world.txs]
    assert all(t.valid for t in blk.txs)
    assert b.block_by_hash("supervision", world.sup1.hash) == blk
    assert b.block("supervision", 3) is None and b.block("nope", 1) is None
    tx = b.transaction("supervision", world.txs[0].tx_id)
    assert tx is not None
    assert (tx.sender, tx.sender_role, tx.signature_valid) == ("acme", "lender", True)
    fields = {f.path: f.value for f in tx.fields}
    assert fields["records[0].loan_id"] == "L-1"
    assert fields["records[0].amount_cents"] == "500000 (¥5,000.00)"
    assert [r.evidence_code for r in tx.records] == [str(code_for_leaf(world.leaves[0]))]
    (vc,) = b.view_changes("supervision", 10)
    assert (vc.height, vc.from_view, vc.to_view, vc.in_progress) == (2, 0, 1, False)
    recent = b.recent_blocks("supervision", 10)
    assert [x.height for x in recent] == [2, 1]
    assert [x.height for x in b.recent_blocks("supervision", 10, before=2)] == [1]


def test_overview_roles_and_health(world: World) -> None:
    b = world.backend
    summaries = {s.channel: s for s in b.channel_summaries()}
    assert summaries["supervision"].height == 2 and summaries["judicial"].height == 1
    assert summaries["risk"].height == 0 and summaries["supervision"].quorum == 4
    vals = {v.node_id: v for v in b.validators()}
    assert vals["court-node"].link == "self"
    assert vals["bureau-node"].link == "down"  # the peer links never started here
    sup = {c.channel: c for c in vals["bureau-node"].channels}["supervision"]
    assert sup.signed_recent == 0  # the first validator never voted in these blocks
    court = {c.channel: c for c in vals["court-node"].channels}["supervision"]
    assert (court.signed_recent, court.last_signed_height) == (2, 2)
    assert b.org("court-clerks") is not None and b.org("court-clerks").role == "clerk"  # type: ignore[union-attr]
    assert b.org("nobody") is None
    assert "clerk" in b.read_roles("judicial") and "clerk" not in b.read_roles("supervision")
    assert b.node_summary().node_id == "court-node"


def test_explorer_over_the_runtime_end_to_end(world: World) -> None:
    """Mount the explorer over the adapter and verify a file as a clerk would."""
    from fastapi import FastAPI

    from node.explorer import mount_explorer
    from node.explorer.accounts import AccountFile, accounts_path, hash_password
    from node.explorer.port import Account
    from tests.explorer.helpers import session_csrf, sign_in

    data_dir = world.rt.config.data_dir
    AccountFile(accounts_path(data_dir)).save(
        {
            "clerk.li": Account(
                "clerk.li", "court-clerks", hash_password("correct horse battery", n=2**8)
            )
        }
    )
    app = FastAPI()
    mount_explorer(app, world.backend)
    from fastapi.testclient import TestClient

    c = TestClient(app)
    assert sign_in(c, "clerk.li").status_code == 303
    code = str(code_for_leaf(world.leaves[0]))
    record, salt = world.records[0]
    body = {"items": [{"code": code, "commitment": tagged_hash(TAG_RECORD, salt + record).hex()}]}
    r = c.post("/explorer/api/verify", json=body, headers={"X-CSRF-Token": session_csrf(c)})
    assert r.json()["results"][0]["status"] == "verified"
    page = c.get(f"/explorer/evidence/{code}")
    assert page.status_code == 200 and world.jud1.hash.hex()[:16] in page.text
    assert "acme" not in page.text  # a clerk may not read supervision
    assert c.get("/explorer/channels/supervision/blocks/1").status_code == 404
    assert c.get("/explorer/channels/judicial/blocks/1").status_code == 200
    audit = (data_dir / "explorer" / "audit.jsonl").read_text("utf-8")
    assert '"action":"verify"' in audit and code in audit
