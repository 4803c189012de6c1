"""Relays: exactly once whoever relays, crash and resume, re-sending, the return leg."""

from __future__ import annotations

from crosschain.ack import read_ack
from crosschain.anchor_rules import read_evidence
from crosschain.relay import AckRelay, AnchorProgress, AnchorRelay, RelayConfig
from ledger.blocks import block_record_leaves
from ledger.evidence_code import code_for_leaf
from ledger.governance import RemoveValidator
from tests.crosschain.harness import GENESIS, Network, add_validator, config_tx, signer


def relay(net: Network, name: str, **kw: int) -> AnchorRelay:
    cfg = RelayConfig(network=GENESIS, sender=name, signer=signer(f"relay/{name}"), **kw)
    return AnchorRelay(net.sup_source(), net.anchor_sink(), cfg)


def ack_relay(net: Network, name: str, **kw: int) -> AckRelay:
    cfg = RelayConfig(network=GENESIS, sender=name, signer=signer(f"relay/{name}"), **kw)
    return AckRelay(net.judicial_source(), net.ack_sink(), cfg)


def all_anchored(net: Network) -> None:
    lc = net.light_client()
    assert (lc.height, lc.pending, lc.frozen) == (net.sup.height, None, False)
    for h in range(1, net.sup.height + 1):
        block = net.sup.committed_block(h)
        assert block is not None
        for li, leaf in enumerate(block_record_leaves(block[0].transactions)):
            (entry,) = read_evidence(net.jud.state, code_for_leaf(leaf))
            assert (entry.source_height, entry.leaf_index) == (h, li)


def outcome_counts(net: Network) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in net.jud.outcomes.values():
        counts[o.code] = counts.get(o.code, 0) + 1
    return counts


def test_two_relays_anchor_every_block_exactly_once() -> None:
    net = Network(chunk_size=4)
    a, b = relay(net, "court"), relay(net, "relay2")
    now = net.jud.time_ms
    for round_ in range(8):
        net.report(2, 3 + round_)  # 6.. records, so several chunks per block
        now += 1000
        sent_a, sent_b = a.step(now), b.step(now)
        assert sent_a and sent_b
        net.jud.commit()
    for _ in range(10):  # drain: each step carries what the chain still needs
        now += 10_000
        if not (a.step(now) + b.step(now)):
            break
        net.jud.commit()
    all_anchored(net)
    counts = outcome_counts(net)
    accepted = counts["ok"]
    n_anchors = sum(len(a._anchors(h, 4) or []) for h in range(1, 9))
    assert accepted == n_anchors  # each header anchor and chunk accepted once
    assert set(counts) <= {"ok", "duplicate_anchor", "out_of_sequence", "leaves_pending"}
    assert counts["duplicate_anchor"] > 0  # the losing relay's copies


def test_a_crashed_relay_resumes_where_the_chain_says() -> None:
    net = Network(chunk_size=4)
    for _ in range(4):
        net.report(3, 5)  # 15 records a block: header + 3 chunks
    first = relay(net, "court")
    now = net.jud.time_ms + 1000
    sent = first.step(now)
    assert len(sent) == 16
    # only part of what it sent gets ordered before it crashes (mempool lost)
    net.jud.commit(net.jud.mempool[:6])
    net.jud.mempool.clear()
    progress = AnchorProgress.of(net.light_client())
    assert (progress.height, progress.next_chunk) == (2, 2)  # mid-block
    second = relay(net, "court")  # a fresh process: no memory of the first
    now += 1000
    resumed = second.step(now)
    assert len(resumed) == 10  # chunks 2,3 of block 2, then blocks 3 and 4
    net.jud.commit()
    all_anchored(net)
    assert outcome_counts(net) == {"ok": 16}


def test_unanswered_transactions_are_resent_after_a_while() -> None:
    net = Network()
    net.report(1, 1)
    r = relay(net, "court", resend_after_ms=5_000, rebuild_after_ms=60_000)
    now = net.jud.time_ms
    (tx1,) = r.step(now)
    net.jud.mempool.clear()  # lost on the way
    assert r.step(now + 4_999) == []
    # the same transaction again (same id: a no-op where it still waits in a mempool)
    (tx2,) = r.step(now + 5_000)
    assert tx2 is tx1 and r.stats.resent == 1
    (tx3,) = r.step(now + 10_000)
    assert tx3 is tx1
    # until it is old: then rebuilt with a new time, hence a new id
    (tx4,) = r.step(now + 60_000)
    assert tx4.tx_id != tx1.tx_id and tx4.nonce == tx1.nonce and r.stats.resent == 3
    (tx5,) = r.step(now + 65_000)
    assert tx5 is tx4, "the rebuilt one is young again"
    net.jud.commit()
    all_anchored(net)
    assert r.step(now + 80_000) == []


def test_window_and_step_bounds() -> None:
    net = Network()
    for _ in range(10):
        net.report(1, 1)
    r = relay(net, "court", window=3)
    assert [tx.payload["header"]["h"] for tx in r.step(net.jud.time_ms)] == [1, 2, 3]
    small = relay(net, "relay2", max_txs_per_step=2)
    assert len(small.step(net.jud.time_ms)) == 2


def test_a_default_relay_carries_a_backlog_of_small_blocks_in_one_step() -> None:
    """One step per judicial commit: the window is the relay's bandwidth in blocks."""
    net = Network()
    for _ in range(40):
        net.report(1, 1)
    now = net.sup.time_ms + 1000  # the blocks are in the past, as on a live network
    r = relay(net, "court")
    assert [tx.payload["header"]["h"] for tx in r.step(now)] == list(range(1, 41))
    net.jud.commit(time_ms=now + 500)
    all_anchored(net)
    assert len(ack_relay(net, "court").step(now + 1000)) == 40


def test_a_step_carries_whole_blocks_up_to_the_leaf_budget() -> None:
    """Large blocks go a few at a time (what they put in one judicial block stays
    bounded), small ones a window at a time; a block above the budget still goes."""
    net = Network(chunk_size=4)
    for _ in range(6):
        net.report(2, 5)  # 10 records: a header anchor with chunk 0, then 2 chunks
    r = relay(net, "court", max_leaves_per_step=25)
    sent = r.step(net.jud.time_ms)
    assert [a.height for a in r.pending(AnchorProgress(0))] == [1] * 3 + [2] * 3 + [3] * 3
    assert len(sent) == 9  # three whole blocks: 30 leaves, the third one crossing 25
    lone = relay(net, "relay2", max_leaves_per_step=1)
    assert {a.height for a in lone.pending(AnchorProgress(0))} == {1}  # never nothing


def test_a_frozen_link_stops_the_relay() -> None:
    from tests.crosschain.test_xc_anchor_rules import submit
    from tests.crosschain.test_xc_light_client import _fork_at

    net = Network()
    net.report(1, 1)
    net.run_relays()
    submit(net, [_fork_at(net, 1)])
    net.report(1, 1)
    r = relay(net, "court")
    assert r.step(net.jud.time_ms + 1000) == [] and r.frozen


def test_acks_come_back_once_per_block_whoever_relays() -> None:
    net = Network()
    j6 = signer("j/6")
    net.jud.keys["j6"] = j6
    net.jud.commit([config_tx("judicial", add_validator("j6", j6), 12, 1)])
    net.jud.commit([config_tx("judicial", RemoveValidator("j1"), 14, 2)])
    a, b = relay(net, "court"), relay(net, "relay2")
    ka, kb = ack_relay(net, "court"), ack_relay(net, "relay2")
    now = net.jud.time_ms
    for _ in range(16):  # crosses both judicial validator changes
        net.report(1, 2)
        now += 1000
        a.step(now)
        b.step(now)
        net.jud.commit()
        ka.step(now)
        kb.step(now)
    for _ in range(6):
        now += 10_000
        a.step(now)
        net.jud.commit()
        ka.step(now)
        kb.step(now)
        net.sup.commit()
    acked = [read_ack(net.sup.state, h) for h in range(1, 17)]
    assert all(e is not None for e in acked)
    ack_outcomes = [o.code for o in net.sup.outcomes.values() if o.code != "ok"]
    # duplicate_tx: a resent copy of the very same ack (this harness's mempool keeps
    # both; a node's answers the second as a duplicate before any block)
    assert set(ack_outcomes) <= {"duplicate_ack", "out_of_sequence", "duplicate_tx"}
    state = net.ack_sink().ack_state()
    assert state.judicial.at(net.jud.height) == net.jud.validators_at(net.jud.height)
    assert [v.node_id for v in state.judicial.at(20).validators] == ["j2", "j3", "j4", "j5", "j6"]
