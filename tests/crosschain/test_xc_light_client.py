"""The judicial light client of the supervision channel: what it accepts and refuses."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from crosschain.anchor import HeaderAnchor, LeafChunk
from crosschain.errors import AnchorRejected
from crosschain.light_client import LightClientState, check_anchor
from crosschain.validator_history import ConfigTxProof
from ledger.blocks import Block, BlockHeader
from ledger.certificate import CommitCertificate
from ledger.governance import RemoveValidator
from tests.crosschain.harness import (
    GENESIS,
    CountingScheme,
    Network,
    add_validator,
    anchors_for,
    certify,
    config_tx,
    lender_tx,
    signer,
)

JUDICIAL_LATER = 60_000  # the judicial block comes a minute after the supervision block


def jtime(anchor: Any, net: Network) -> int:
    got = net.sup.committed_block(anchor.height)
    assert got is not None
    return got[0].header.time_ms + JUDICIAL_LATER


def feed(net: Network, state: LightClientState, anchors: list[Any], **kw: Any) -> LightClientState:
    for a in anchors:
        state = check_anchor(state, a, judicial_block_time_ms=jtime(a, net), **kw)
    return state


def rejected(code: str, state: LightClientState, anchor: Any, net: Network, **kw: Any) -> None:
    kw.setdefault("judicial_block_time_ms", jtime(anchor, net))
    with pytest.raises(AnchorRejected) as info:
        check_anchor(state, anchor, **kw)
    assert info.value.code == code, info.value.message


@pytest.fixture
def net() -> Network:
    n = Network(chunk_size=4)
    n.report(0, 0)  # 1: no records
    n.report(1, 3)  # 2: 3 records, one chunk riding in the header anchor
    n.report(3, 3)  # 3: 9 records: chunk 0 in the header anchor, chunks 1 and 2 separate
    n.report(2, 2)  # 4
    return n


def genesis(net: Network) -> LightClientState:
    return net.anchor_rule.initial


def test_genuine_sequence_is_accepted_and_state_round_trips(net: Network) -> None:
    state = genesis(net)
    for h in range(1, 5):
        anchors = anchors_for(net, h)
        state = feed(net, state, anchors)
        block = net.sup.committed_block(h)
        assert block is not None
        assert (state.height, state.header_hash, state.pending) == (h, block[0].hash, None)
    assert len(anchors_for(net, 3)) == 3  # header (+chunk 0), chunk 1, chunk 2
    again = LightClientState.decode(state.encode())
    assert again == state and again.encode() == state.encode()


def test_replay_and_old_heights_are_refused_before_any_signature_check(net: Network) -> None:
    counting = CountingScheme()
    state = feed(net, genesis(net), [a for h in (1, 2, 3) for a in anchors_for(net, h)])
    for h in (1, 2, 3):
        rejected("duplicate_anchor", state, anchors_for(net, h)[0], net, scheme=counting)
    rejected("duplicate_anchor", state, anchors_for(net, 3)[2], net, scheme=counting)
    assert counting.calls == 0
    # and the genuine next one is still accepted, with real signature checks
    check_anchor(
        state,
        anchors_for(net, 4)[0],
        judicial_block_time_ms=jtime(anchors_for(net, 4)[0], net),
        scheme=counting,
    )
    assert counting.calls >= net.sup_vset.quorum


def test_reordered_anchors_are_out_of_sequence(net: Network) -> None:
    counting = CountingScheme()
    state = feed(net, genesis(net), anchors_for(net, 1))
    rejected("out_of_sequence", state, anchors_for(net, 3)[0], net, scheme=counting)
    rejected("out_of_sequence", state, anchors_for(net, 3)[1], net, scheme=counting)
    state = feed(net, state, anchors_for(net, 2))
    header3, chunk1, chunk2 = anchors_for(net, 3)
    state = feed(net, state, [header3])
    rejected("out_of_sequence", state, chunk2, net)
    rejected("leaves_pending", state, anchors_for(net, 4)[0], net)
    assert counting.calls == 0
    state = feed(net, state, [chunk1, chunk2])
    assert state.pending is None


def test_truncated_and_tampered_leaves_are_refused(net: Network) -> None:
    state = feed(net, genesis(net), anchors_for(net, 1) + anchors_for(net, 2))
    header3, chunk1, _ = anchors_for(net, 3)
    assert isinstance(header3, HeaderAnchor) and header3.chunk is not None
    short = replace(header3, chunk=replace(header3.chunk, leaves=header3.chunk.leaves[:-1]))
    rejected("leaves_mismatch", state, short, net)
    forged = replace(header3.chunk, leaves=(b"forged", *header3.chunk.leaves[1:]))
    rejected("leaves_mismatch", state, replace(header3, chunk=forged), net)
    state = feed(net, state, [header3])
    assert isinstance(chunk1, LeafChunk)
    rejected("leaves_mismatch", state, replace(chunk1, leaves=chunk1.leaves[:-1]), net)
    swapped = (chunk1.leaves[1], chunk1.leaves[0], *chunk1.leaves[2:])
    rejected("leaves_mismatch", state, replace(chunk1, leaves=swapped), net)
    # an empty block's anchor may not claim leaves
    empty = anchors_for(net, 1)[0]
    rejected("leaves_mismatch", genesis(net), replace(empty, chunk=header3.chunk), net)


def _recertified(net: Network, header: BlockHeader, **kw: Any) -> CommitCertificate:
    return certify(Block(header, ()), net.sup.validators_at(header.height), net.sup.keys, **kw)


def test_forged_certificates_are_refused(net: Network) -> None:
    state = feed(net, genesis(net), anchors_for(net, 1))
    good = anchors_for(net, 2)[0]
    cert = good.certificate
    too_few = replace(cert, votes=cert.votes[: net.sup_vset.quorum - 1])
    rejected("bad_certificate", state, replace(good, certificate=too_few), net)
    v0 = cert.votes[0]
    flipped = replace(v0, signature=bytes([v0.signature[0] ^ 1]) + v0.signature[1:])
    rejected(
        "bad_certificate",
        state,
        replace(good, certificate=replace(cert, votes=(flipped, *cert.votes[1:]))),
        net,
    )
    twice = replace(cert, votes=(cert.votes[0], *cert.votes[:-1]))
    rejected("bad_certificate", state, replace(good, certificate=twice), net)
    outsiders = {f"x{i}": signer(f"outsider/{i}") for i in range(5)}
    forged = certify(Block(good.header, ()), net.sup_vset, outsiders, voters=list(outsiders)[:4])
    rejected("bad_certificate", state, replace(good, certificate=forged), net)
    other = anchors_for(net, 3)[0]
    rejected("bad_certificate", state, replace(good, certificate=other.certificate), net)
    # a tampered header (its time) no longer matches the certified hash
    moved = replace(good.header, time_ms=good.header.time_ms + 1)
    rejected("bad_certificate", state, replace(good, header=moved), net)


def test_header_checks_before_signatures(net: Network) -> None:
    state = feed(net, genesis(net), anchors_for(net, 1))
    good = anchors_for(net, 2)[0]
    unlinked = replace(good.header, prev_hash=b"\x07" * 32)
    anchor = replace(good, header=unlinked, certificate=_recertified(net, unlinked))
    rejected("prev_hash_mismatch", state, anchor, net)
    t = good.header.time_ms
    rejected("header_from_future", state, good, net, judicial_block_time_ms=t - 10_000)
    rejected("header_too_old", state, good, net, judicial_block_time_ms=t + 2_000, max_lag_ms=1_000)
    rejected("wrong_channel", state, replace(good, source="risk"), net)
    risk_header = replace(good.header, channel="risk")
    rejected("wrong_channel", state, replace(good, header=risk_header), net)


def _fork_at(net: Network, h: int) -> HeaderAnchor:
    """A different, validly certified header at height ``h`` (source equivocation)."""
    block, _ = net.sup.committed_block(h) or (None, None)
    assert block is not None
    header = net.sup.make_block([lender_tx(999_000 + h, [b"\x09" * 32])], block.header.time_ms)
    header = replace(header.header, height=h, prev_hash=block.header.prev_hash)
    return HeaderAnchor("supervision", header, _recertified(net, header), (), None)


def test_two_certified_headers_for_one_height_freeze_the_link(net: Network) -> None:
    state = feed(net, genesis(net), anchors_for(net, 1) + anchors_for(net, 2))
    fork = _fork_at(net, 2)
    frozen = check_anchor(state, fork, judicial_block_time_ms=jtime(fork, net))
    assert frozen.frozen and frozen.height == 2
    (evidence,) = frozen.evidence
    assert evidence.anchored_hash == state.header_hash and evidence.header == fork.header
    assert LightClientState.decode(frozen.encode()) == frozen
    rejected("frozen", frozen, anchors_for(net, 3)[0], net)
    # at an older height the anchor index supplies the hash anchored there
    state3 = feed(net, state, anchors_for(net, 3))
    fork1 = _fork_at(net, 1)
    rejected("duplicate_anchor", state3, fork1, net)  # unknown hash: just a duplicate
    known = {1: anchors_for(net, 1)[0].header.hash}
    frozen1 = check_anchor(
        state3, fork1, judicial_block_time_ms=jtime(fork1, net), anchored_hash=known.get
    )
    assert frozen1.frozen and frozen1.evidence[0].height == 1
    # a conflicting header whose certificate is forged is refused, not evidence
    forged = replace(fork, certificate=replace(fork.certificate, votes=fork.certificate.votes[:1]))
    rejected("bad_certificate", state, forged, net)


def test_validator_set_changes_are_followed_through_anchored_config_blocks() -> None:
    net = Network(chunk_size=4)
    net.report(1, 1)  # 1
    s6 = signer("s/6")
    net.sup.keys["s6"] = s6
    cfg = [
        config_tx("supervision", add_validator("s6", s6), 12, 1),
        config_tx("supervision", RemoveValidator("s1"), 14, 2),
    ]
    net.report(1, 2, extra=cfg)  # 2: the config block
    while net.sup.height < 11:
        net.report(1, 1)
    net.sup.commit([lender_tx(1200, [b"\x01" * 32])], voters=["s6", "s2", "s3", "s4"])  # 12
    net.report(1, 1)  # 13
    net.report(1, 1)  # 14: s1 gone, default quorum is s2..s5
    header2 = anchors_for(net, 2)[0]
    assert isinstance(header2, HeaderAnchor) and len(header2.config) == 2
    assert header2.chunk is None  # config blocks carry their leaves separately
    state = genesis(net)
    for h in range(1, 15):
        state = feed(net, state, anchors_for(net, h))
    for h in (1, 11, 12, 13, 14, 30):
        assert state.validators_at(h) == net.sup.validators_at(h)
    assert [v.node_id for v in state.validators_at(14).validators] == ["s2", "s3", "s4", "s5", "s6"]
    # a relay that drops the config transactions leaves the client unable to follow
    blind = feed(net, genesis(net), anchors_for(net, 1))
    blind = feed(net, blind, [replace(header2, config=()), *anchors_for(net, 2)[1:]])
    for h in range(3, 12):
        blind = feed(net, blind, anchors_for(net, h))
    rejected("bad_certificate", blind, anchors_for(net, 12)[0], net)
    # a removed validator's vote no longer counts
    net.report(1, 1)  # 15
    h15 = anchors_for(net, 15)[0]
    with_s1 = _recertified(net, h15.header, voters=["s1", "s2", "s3", "s4"])
    rejected("bad_certificate", state, replace(h15, certificate=with_s1), net)
    # a config transaction that is not in the block is caught
    state1 = feed(net, genesis(net), anchors_for(net, 1))
    proof = header2.config[0]
    moved = ConfigTxProof(proof.body, proof.index + 1, proof.proof)
    rejected("bad_config_proof", state1, replace(header2, config=(moved, header2.config[1])), net)
    out_of_order = (header2.config[1], header2.config[0])
    rejected("bad_config_proof", state1, replace(header2, config=out_of_order), net)


def test_genesis_state_binds_network_and_channel() -> None:
    a = LightClientState.genesis("supervision", GENESIS, Network().sup_vset)
    b = LightClientState.genesis("supervision", b"\x01" * 32, Network().sup_vset)
    assert a.header_hash != b.header_hash and a.height == 0 and not a.frozen
