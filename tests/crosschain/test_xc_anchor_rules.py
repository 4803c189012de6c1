"""The judicial anchor rule and the supervision ack rule, applied by the channel layer."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from channels.base import make_rules
from channels.errors import Rejection
from channels.judicial import CaseEvidence, EvidenceResult, judicial_rules
from crosschain.ack import (
    AckState,
    EvidenceAck,
    build_ack,
    check_ack,
    evidence_codes,
    read_ack,
)
from crosschain.anchor import anchor_tx
from crosschain.anchor_rules import (
    AnchorRule,
    case_evidence_verifier,
    lc_key,
    misbehaviour_prefix,
    read_anchor_entry,
    read_config_steps,
    read_evidence,
)
from crosschain.errors import AckRejected
from crosschain.relay import config_steps_of
from ledger.blocks import block_record_leaves
from ledger.evidence_code import code_for_leaf
from ledger.governance import RemoveValidator
from tests.crosschain.harness import (
    GENESIS,
    Network,
    add_validator,
    anchors_for,
    config_tx,
    signer,
)


def submit(net: Network, anchors: list[object], sender: str = "court") -> list[bytes]:
    key = signer(f"relay/{sender}")
    txs = [
        anchor_tx(a, network=GENESIS, sender=sender, signer=key, time_ms=net.jud.time_ms)
        for a in anchors  # type: ignore[misc]
    ]
    net.jud.commit(txs)
    return [tx.tx_id for tx in txs]


def test_every_record_gets_an_evidence_code_and_an_index_entry() -> None:
    net = Network(chunk_size=4)
    net.report(3, 3)
    net.report(1, 2)
    ids = submit(net, anchors_for(net, 1) + anchors_for(net, 2))
    assert [net.jud.outcomes[i].code for i in ids] == ["ok"] * len(ids)
    for h in (1, 2):
        block = net.sup.committed_block(h)
        assert block is not None
        entry = read_anchor_entry(net.jud.state, "supervision", h)
        assert entry is not None and entry.header_hash == block[0].hash
        for li, leaf in enumerate(block_record_leaves(block[0].transactions)):
            (e,) = read_evidence(net.jud.state, code_for_leaf(leaf))
            assert (e.source_height, e.leaf_index, e.leaf) == (h, li, leaf)
            assert e.judicial_height == net.jud.height
    # the codes the lender's status query shows are the same
    block1 = net.sup.committed_block(1)
    assert block1 is not None
    tx0 = block1[0].transactions[0]
    assert [str(c) for c in evidence_codes(tx0)] == [
        str(code_for_leaf(leaf)) for leaf in block_record_leaves(block1[0].transactions)[:3]
    ]


def test_rejected_anchor_leaves_no_writes_and_duplicates_are_invalid() -> None:
    net = Network()
    net.report(1, 1)
    net.report(1, 1)
    before = net.jud.state.snapshot()
    (bad,) = submit(net, anchors_for(net, 2))  # out of sequence
    assert net.jud.outcomes[bad].code == "out_of_sequence"
    after = {k: v for k, v in net.jud.state.snapshot().items() if not k.startswith(b"meta/")}
    assert after == {k: v for k, v in before.items() if not k.startswith(b"meta/")}
    first = submit(net, anchors_for(net, 1), sender="court")
    second = submit(net, anchors_for(net, 1), sender="relay2")
    assert net.jud.outcomes[first[0]].code == "ok"
    assert net.jud.outcomes[second[0]].code == "duplicate_anchor"


def test_freeze_is_recorded_as_evidence() -> None:
    from tests.crosschain.test_xc_light_client import _fork_at

    net = Network()
    net.report(1, 1)
    net.report(1, 1)
    submit(net, anchors_for(net, 1) + anchors_for(net, 2))
    (tx,) = submit(net, [_fork_at(net, 1)])
    outcome = net.jud.outcomes[tx]
    assert outcome.code == "ok" and outcome.result == {"frozen": True, "height": 1}
    assert list(net.jud.state.iter_prefix(misbehaviour_prefix("supervision")))
    net.report(1, 1)
    (late,) = submit(net, anchors_for(net, 3))
    assert net.jud.outcomes[late].code == "frozen"
    assert net.jud.state.get(lc_key("supervision")) is not None


def test_config_steps_are_kept_for_receipts() -> None:
    net = Network()
    s6 = signer("s/6")
    net.report(1, 1, extra=[config_tx("supervision", add_validator("s6", s6), 20, 1)])
    net.report(1, 1)
    submit(net, anchors_for(net, 1) + anchors_for(net, 2))
    (step,) = read_config_steps(net.jud.state, "supervision", 3)
    assert step.height == 1 and len(step.txs) == 1
    assert read_config_steps(net.jud.state, "supervision", 1) == []


def test_install_at_the_judicial_extension_point() -> None:
    rule = AnchorRule(Network().anchor_rule.initial)
    rules = rule.install(judicial_rules(case_evidence_verifier()))
    assert rules.tx_types["anchor"].apply == rule.apply
    with pytest.raises(ValueError):
        rule.install(make_rules("judicial", []))


def test_case_evidence_is_checked_against_the_index() -> None:
    net = Network()
    net.report(1, 2)
    submit(net, anchors_for(net, 1))
    verify = case_evidence_verifier()
    ref = net.records[0]
    block = net.sup.committed_block(1)
    assert block is not None
    code = str(code_for_leaf(block_record_leaves(block[0].transactions)[0]))
    ctx = None
    good = verify(net.jud.state, "lender-a", CaseEvidence(code, ref.commitment), ctx)  # type: ignore[arg-type]
    assert isinstance(good, EvidenceResult) and good.result == "verified"
    anchor = read_anchor_entry(net.jud.state, "supervision", 1)
    assert anchor is not None
    assert (good.source_height, good.source_time_ms) == (1, anchor.header_time_ms)
    assert good.judicial_height == anchor.judicial_height
    bare = verify(net.jud.state, "lender-a", CaseEvidence(code), ctx)  # type: ignore[arg-type]
    assert isinstance(bare, EvidenceResult) and bare.result == "verified"
    wrong = verify(net.jud.state, "lender-a", CaseEvidence(code, b"\x00" * 32), ctx)  # type: ignore[arg-type]
    assert isinstance(wrong, EvidenceResult) and wrong.result == "mismatch"
    typo = code[:-1] + ("0" if code[-1] != "0" else "1")
    bad = verify(net.jud.state, "lender-a", CaseEvidence(typo, ref.commitment), ctx)  # type: ignore[arg-type]
    assert isinstance(bad, Rejection) and bad.code == "bad_evidence_code"
    other = "WL-0000-0000-0000-0000-0"
    missing = verify(net.jud.state, "lender-a", CaseEvidence(other, ref.commitment), ctx)  # type: ignore[arg-type]
    assert isinstance(missing, EvidenceResult) and missing.result == "not_anchored"


# -- acknowledgements ---------------------------------------------------------------


def _anchored(net: Network, heights: range) -> None:
    for h in heights:
        submit(net, anchors_for(net, h))


def _ack(net: Network, s: int, state: AckState) -> EvidenceAck:
    entry = read_anchor_entry(net.jud.state, "supervision", s)
    assert entry is not None
    block, cert = net.jud.committed_block(entry.judicial_height) or (None, None)
    assert block is not None and cert is not None
    steps = net.jud.config_steps(state.judicial.height, entry.judicial_height)
    return build_ack(s, entry.header_hash, block, cert, entry.tx_index, steps)


def _hash(net: Network, h: int) -> bytes | None:
    got = net.sup.committed_block(h)
    return None if got is None else got[0].hash


def test_ack_checks_and_codes() -> None:
    net = Network()
    for _ in range(3):
        net.report(1, 1)
    _anchored(net, range(1, 4))
    state = AckState.genesis(net.jud_vset)
    ack1 = _ack(net, 1, state)

    def rejected(code: str, st: AckState, ack: EvidenceAck) -> None:
        with pytest.raises(AckRejected) as info:
            check_ack(
                st, ack, local_header_hash=lambda h: _hash(net, h), court_anchor=net.court_anchor
            )
        assert info.value.code == code, info.value.message

    rejected("out_of_sequence", state, _ack(net, 2, state))
    rejected("header_mismatch", state, replace(ack1, source_hash=b"\x01" * 32))
    with pytest.raises(AckRejected) as info:
        check_ack(state, ack1, local_header_hash=lambda h: None, court_anchor=net.court_anchor)
    assert info.value.code == "unknown_block"
    state1 = check_ack(
        state, ack1, local_header_hash=lambda h: _hash(net, h), court_anchor=net.court_anchor
    )
    assert state1.acked == 1
    rejected("duplicate_ack", state1, ack1)
    ack2 = _ack(net, 2, state1)
    rejected("bad_proof", state1, replace(ack2, leaf_index=ack2.leaf_index + 1))
    rejected("bad_proof", state1, replace(ack2, anchor_tx=b"\x02" * 32))
    cert = ack2.judicial_certificate
    rejected(
        "bad_certificate",
        state1,
        replace(ack2, judicial_certificate=replace(cert, votes=cert.votes[:2])),
    )
    rejected(
        "wrong_channel",
        state1,
        replace(ack2, judicial_header=replace(ack2.judicial_header, channel="risk")),
    )
    assert EvidenceAck.from_payload(ack2.to_payload()) == ack2


def test_ack_follows_judicial_validator_changes() -> None:
    net = Network()
    j6 = signer("j/6")
    net.jud.keys["j6"] = j6
    net.jud.commit([config_tx("judicial", add_validator("j6", j6), 12, 1)])  # judicial 1
    net.jud.commit([config_tx("judicial", RemoveValidator("j1"), 12, 2)])  # judicial 2
    while net.jud.height < 12:
        net.jud.commit([])
    net.report(1, 1)
    txs = [
        anchor_tx(
            a,
            network=GENESIS,
            sender="court",
            signer=signer("relay/court"),
            time_ms=net.jud.time_ms,
        )
        for a in anchors_for(net, 1)
    ]
    net.jud.commit(txs, voters=["j6", "j2", "j3", "j4"])  # 13, by the new set
    state = AckState.genesis(net.jud_vset)
    ack = _ack(net, 1, state)
    assert [s.height for s in ack.judicial_config] == [1, 2]
    new = check_ack(
        state, ack, local_header_hash=lambda h: _hash(net, h), court_anchor=net.court_anchor
    )
    assert new.judicial.at(13) == net.jud.validators_at(13)
    blind = replace(ack, judicial_config=())
    with pytest.raises(AckRejected, match="not a validator"):
        check_ack(
            state, blind, local_header_hash=lambda h: _hash(net, h), court_anchor=net.court_anchor
        )
    assert config_steps_of(net.jud.blocks[:2])[0].height == 1


def test_an_ack_of_an_anchor_the_court_refused_is_refused() -> None:
    """A relay anchors supervision block 1 with a certificate stripped of its votes: the
    court's light client refuses it (INVALID), but it is ordered, so its record leaf is
    in the judicial block and the inclusion proof and judicial certificate of an ack
    check out. The ack is refused all the same (the court holds no evidence for the
    block), and the honest ack of the anchor the court accepted later goes through."""
    from crosschain.ack import ack_tx

    net = Network()
    net.report(1, 2)
    sblock, _ = net.sup.committed_block(1) or (None, None)
    assert sblock is not None
    head = anchors_for(net, 1)[0]
    bad = replace(head, certificate=replace(head.certificate, votes=()))
    relay = signer("relay/relay2")
    atx = anchor_tx(bad, network=GENESIS, sender="relay2", signer=relay, time_ms=net.jud.time_ms)
    jblock, jcert = net.jud.commit([atx])
    assert net.jud.code_of(atx) == "bad_certificate"
    assert read_anchor_entry(net.jud.state, "supervision", 1) is None
    forged = build_ack(1, sblock.hash, jblock, jcert, 0, [])
    ack = ack_tx(forged, network=GENESIS, sender="relay2", signer=relay, time_ms=net.sup.time_ms)
    net.sup.commit([ack])
    assert net.sup.code_of(ack) == "anchor_not_accepted"
    assert read_ack(net.sup.state, 1) is None
    # the honest relays anchor block 1 and acknowledge the anchor the court accepted
    net.run_relays()
    accepted = read_anchor_entry(net.jud.state, "supervision", 1)
    entry = read_ack(net.sup.state, 1)
    assert accepted is not None and entry is not None
    assert (entry.judicial_height, entry.anchor_tx) == (accepted.judicial_height, accepted.tx_id)
    assert accepted.judicial_height > jblock.height


def test_an_ack_waits_until_this_node_has_applied_the_judicial_block() -> None:
    """A genuine ack whose judicial block this node has not applied yet: the court
    chain's entry cannot be read, and the block waits (NotYetCommitted) — only once
    the judicial header is known to be certified, so it will be applied."""
    from channels.errors import NotYetCommitted

    net = Network()
    net.report(1, 1)
    _anchored(net, range(1, 2))
    state = AckState.genesis(net.jud_vset)
    ack = _ack(net, 1, state)

    def lagging(s: int, judicial_height: int) -> None:
        raise NotYetCommitted("judicial", judicial_height, judicial_height - 1)

    with pytest.raises(NotYetCommitted):
        check_ack(state, ack, local_header_hash=lambda h: _hash(net, h), court_anchor=lagging)


def test_an_ack_naming_an_uncertified_judicial_height_is_refused_not_waited_for() -> None:
    """One node key signs an ack naming judicial height 10⁹ with no votes: it is
    INVALID at once. Reading the court chain's entry first would have made every node
    wait for a height that never comes, stalling the supervision channel for good."""
    from crosschain.ack import ack_tx

    net = Network()
    net.report(1, 1)
    _anchored(net, range(1, 2))
    ack = _ack(net, 1, AckState.genesis(net.jud_vset))
    forged = replace(
        ack,
        judicial_header=replace(ack.judicial_header, height=10**9),
        judicial_certificate=replace(ack.judicial_certificate, height=10**9, votes=()),
    )
    relay = signer("relay/relay2")
    tx = ack_tx(forged, network=GENESIS, sender="relay2", signer=relay, time_ms=net.sup.time_ms)
    net.sup.commit([tx])  # applied, not waiting
    assert net.sup.code_of(tx) == "bad_certificate"
    assert read_ack(net.sup.state, 1) is None


def test_ack_rule_writes_the_acknowledgement() -> None:
    net = Network()
    net.report(1, 1)
    net.run_relays()
    entry = read_ack(net.sup.state, 1)
    anchor = read_anchor_entry(net.jud.state, "supervision", 1)
    assert entry is not None and anchor is not None
    assert (entry.judicial_height, entry.anchor_tx) == (anchor.judicial_height, anchor.tx_id)


def test_rules_and_trust_root_from_a_real_genesis(tmp_path: Path) -> None:
    from crosschain.ack import AckRule
    from crosschain.receipt import TrustRoot
    from ledger.blocks import channel_genesis_hash
    from ledger.genesis import make_local_genesis

    genesis = make_local_genesis(tmp_path, created_ms=1_700_000_000_000)
    rule = AnchorRule.from_genesis(genesis)
    sup = genesis.channel("supervision").validators
    assert rule.initial.validators_at(1) == sup
    assert rule.initial.header_hash == channel_genesis_hash(genesis.hash, "supervision")
    assert rule.max_drift_ms == genesis.channel("judicial").params["max_time_drift_ms"]
    jud = genesis.channel("judicial").validators
    assert AckRule.from_genesis(genesis).initial.judicial.at(1) == jud
    trust = TrustRoot.from_genesis(genesis)
    assert (trust.judicial, trust.supervision) == (jud, sup)
    assert TrustRoot.from_json(json.loads(json.dumps(trust.to_json()))) == trust
