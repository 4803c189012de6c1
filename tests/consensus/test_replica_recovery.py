"""Durability across restarts, and catch-up from peers' committed blocks."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_replica_harness import CHANNEL, GENESIS_PREV, Cluster

from consensus import Blocks, Commit, Fetch, Prepare, PrePrepare, Status, ViewChange, sign
from consensus.errors import BAD_CERTIFICATE
from consensus.replica import _txs_bytes
from ledger.blocks import Block, build_block
from ledger.certificate import Vote


def _pp(c: Cluster, ntx: int = 1, view: int = 0) -> PrePrepare:
    block = build_block(
        channel=CHANNEL,
        height=1,
        prev_hash=GENESIS_PREV,
        transactions=c.clients.txs(ntx),
        state_height=0,
        state_root=c.apps["n1"].state_root_at(0),  # type: ignore[arg-type]
        proposer="n0",
        view=view,
        time_ms=c.now,
    )
    return sign(PrePrepare(CHANNEL, "n0", view, block), c.node_signers["n0"])


def _prepares(c: Cluster, name: str) -> list[Prepare]:
    return [m for src, _, m in c.sent if src == name and isinstance(m, Prepare)]


# ---------------------------------------------------------------------------------------
# Durability
# ---------------------------------------------------------------------------------------


def test_restarted_replica_never_prepares_a_conflicting_proposal() -> None:
    c = Cluster(5)
    c.crash("n0")  # the test plays the (equivocating) primary
    c.tick(0)
    first, second = _pp(c), _pp(c)
    c.step("n1", first)
    assert [p.block_hash for p in _prepares(c, "n1")] == [first.block_hash]
    persisted = c.durable["n1"]
    assert persisted is not None and persisted.vote_at(1) == (0, first.block_hash)
    c.crash("n1")
    c.restart("n1")  # volatile state (the slot holding `first`) is gone
    c.step("n1", second)
    assert [p.block_hash for p in _prepares(c, "n1")] == [first.block_hash]
    assert c.replicas["n1"].metrics["refused.conflicting_vote"] == 1
    # The same proposal again is fine: the replica may repeat its own vote.
    c.step("n1", first)
    assert [p.block_hash for p in _prepares(c, "n1")] == [first.block_hash] * 2


def test_restarted_primary_does_not_propose_another_block_at_the_same_height() -> None:
    c = Cluster(5, batch_interval_ms=0)
    c.tick(0)
    c.drop = lambda src, dst, m: src == "n0"  # its proposal never leaves
    c.submit("n0", c.clients.txs(2))
    proposals = [m for src, _, m in c.sent if isinstance(m, PrePrepare)]
    assert len(proposals) == 1
    c.crash("n0")
    c.drop = None
    c.restart("n0")
    c.submit("n0", c.clients.txs(2))
    c.run(200)
    assert len([m for src, _, m in c.sent if isinstance(m, PrePrepare)]) == 1
    # The backups time out and view 1 orders the transactions.
    c.run_until(lambda: min(c.heights().values()) >= 1, 10_000)
    assert c.replicas["n2"].view == 1
    assert c.check_chains() >= 1


def test_prepared_certificates_survive_a_restart_into_the_view_change() -> None:
    c = Cluster(5, batch_interval_ms=0)
    c.tick(0)
    c.drop = lambda src, dst, m: isinstance(m, Commit)
    c.submit("n0", c.clients.txs(2))
    pp = next(m for _, _, m in c.sent if isinstance(m, PrePrepare))
    for name in ("n1", "n2", "n3", "n4"):
        c.crash(name)
        c.restart(name)
    c.crash("n0")
    c.drop = None
    c.run_until(lambda: all(c.apps[n].height >= 1 for n in c.live()), 10_000)
    vcs = [m for _, _, m in c.sent if isinstance(m, ViewChange) and m.new_view == 1]
    assert vcs and all([pc.block_hash for pc in vc.prepared] == [pp.block_hash] for vc in vcs)
    assert c.apps["n3"].chain[0][0].hash == pp.block_hash


def test_durable_state_is_garbage_collected_after_commit() -> None:
    c = Cluster(5, batch_interval_ms=0, max_batch_txs=2)
    c.tick(0)
    c.submit("n0", c.clients.txs(6))
    c.run(100)
    assert c.check_chains() == 3
    for name in c.names:
        state = c.durable[name]
        assert state is not None
        assert state.votes == () and state.prepared == ()
        assert (state.view, state.view_active) == (0, True)


# ---------------------------------------------------------------------------------------
# Catch-up
# ---------------------------------------------------------------------------------------


def test_replica_far_behind_catches_up_with_verified_certificates() -> None:
    c = Cluster(5, batch_interval_ms=0, max_batch_txs=1, fetch_batch=64)
    c.tick(0)
    c.crash("n4")
    c.submit("n1", c.clients.txs(300))
    c.run_until(lambda: c.apps["n0"].height == 300, 20_000)
    c.restart("n4")
    c.run_until(lambda: c.apps["n4"].height == 300, 5_000)
    assert c.check_chains() == 300
    r = c.replicas["n4"]
    assert r.metrics["catchup.blocks"] == 300
    assert r.metrics["catchup.fetches"] >= 300 // 64
    assert r.committed_height == 300
    # It then takes part in consensus again.
    c.submit("n4", c.clients.txs(3))
    c.run_until(lambda: min(c.heights().values()) >= 301, 2_000)


def _lagging() -> tuple[Cluster, list[tuple[Block, object]]]:
    c = Cluster(5, batch_interval_ms=0, max_batch_txs=1)
    c.tick(0)
    c.crash("n4")
    c.submit("n1", c.clients.txs(5))
    c.run(100)
    assert c.apps["n0"].height == 5
    c.down.discard("n4")  # n4 is up again but cut off: only injected messages reach it
    c.drop = lambda src, dst, m: dst == "n4" or src == "n4"
    return c, list(c.apps["n0"].chain)  # type: ignore[arg-type]


def test_bad_certificate_in_a_blocks_answer_is_refused_and_counted() -> None:
    c, chain = _lagging()
    (b1, cert1), (b2, cert2) = chain[0], chain[1]
    forged_votes = (*cert2.votes[:3], Vote(cert2.votes[3].validator, bytes(64)))  # type: ignore[attr-defined]
    bad = Blocks(CHANNEL, "n3", ((b1, cert1), (b2, replace(cert2, votes=forged_votes))))  # type: ignore[arg-type]
    c.step("n4", sign(bad, c.node_signers["n3"]))
    r = c.replicas["n4"]
    assert r.committed_height == 1  # the good prefix is kept, the rest refused
    assert r.metrics["catchup.bad_certificate"] == 1
    [(who, ev)] = c.evidence
    assert (who, ev.kind, ev.offender, ev.height) == ("n4", BAD_CERTIFICATE, "n3", 2)
    # Too few votes, and a block that does not link, are refused too.
    short = Blocks(CHANNEL, "n2", ((b2, replace(cert2, votes=cert2.votes[:3])),))  # type: ignore[arg-type]
    c.step("n4", sign(short, c.node_signers["n2"]))
    b3, cert3 = chain[2]
    unlinked = Blocks(CHANNEL, "n2", ((b3, cert3),))  # type: ignore[arg-type]
    c.step("n4", sign(unlinked, c.node_signers["n2"]))
    assert r.committed_height == 1
    assert r.metrics["catchup.bad_certificate"] == 2
    assert r.metrics["dropped.catchup_gap"] == 1
    # A correct answer is accepted.
    good = Blocks(CHANNEL, "n1", tuple(chain[1:]))  # type: ignore[arg-type]
    c.step("n4", sign(good, c.node_signers["n1"]))
    assert r.committed_height == 5
    assert [b.hash for b, _ in c.apps["n4"].chain] == [b.hash for b, _ in chain]


def test_behind_by_counts_only_heights_f_plus_one_peers_claim() -> None:
    c, chain = _lagging()
    r = c.replicas["n4"]
    head = chain[-1][0].hash

    def status(sender: str, height: int) -> None:
        c.step("n4", sign(Status(CHANNEL, sender, 0, True, height, head), c.node_signers[sender]))

    assert r.behind_by == 0
    status("n1", 5)
    assert r.behind_by == 0, "one claim may be a lie (f = 1)"
    status("n2", 5)
    assert r.behind_by == 5
    status("n3", 9)
    assert r.behind_by == 5, "the (f+1)-th highest claim"
    c.step("n4", sign(Blocks(CHANNEL, "n1", tuple(chain)), c.node_signers["n1"]))  # type: ignore[arg-type]
    assert (r.committed_height, r.behind_by) == (5, 0)


def test_blocks_with_a_forged_client_signature_are_refused() -> None:
    c, chain = _lagging()
    b1, cert1 = chain[0]
    tx = replace(b1.transactions[0], signature=bytes(64))
    tampered = Block(b1.header, (tx,))
    assert tampered.hash == b1.hash  # the certificate still matches the header
    c.step("n4", sign(Blocks(CHANNEL, "n3", ((tampered, cert1),)), c.node_signers["n3"]))  # type: ignore[arg-type]
    assert c.replicas["n4"].committed_height == 0
    assert c.replicas["n4"].metrics["catchup.bad_certificate"] == 1


def test_fetch_is_answered_with_bounded_batches() -> None:
    c, _chain = _lagging()
    c.sent.clear()
    c.step("n0", sign(Fetch(CHANNEL, "n4", 2, 900), c.node_signers["n4"]))
    [answer] = [m for src, to, m in c.sent if src == "n0" and to == "n4"]
    assert isinstance(answer, Blocks)
    assert [b.height for b, _ in answer.entries] == [2, 3, 4, 5]


# ---------------------------------------------------------------------------------------
# Catch-up with more than one request in flight (fetch_parallel)
# ---------------------------------------------------------------------------------------


def _cut_off(n: int = 6, **config: object) -> tuple[Cluster, list[tuple[Block, object]]]:
    """n4 is ``n`` heights behind and cut off: only injected messages reach it, and its
    own messages are recorded in ``c.sent`` but never delivered."""
    c = Cluster(5, batch_interval_ms=0, max_batch_txs=1, **config)
    c.tick(0)
    c.crash("n4")
    c.submit("n1", c.clients.txs(n))
    c.run(100)
    assert c.apps["n0"].height == n
    c.down.discard("n4")
    c.drop = lambda src, dst, m: dst == "n4" or src == "n4"
    return c, list(c.apps["n0"].chain)  # type: ignore[arg-type]


def _claims(c: Cluster, height: int, *senders: str) -> None:
    """Inject STATUS claims of ``height`` into n4 (f + 1 = 2 claims make a target)."""
    head = c.apps["n0"].chain[height - 1][0].hash
    for s in senders:
        c.step("n4", sign(Status(CHANNEL, s, 0, True, height, head), c.node_signers[s]))


def _fetches(c: Cluster) -> list[tuple[str | None, int, int]]:
    return [
        (to, m.from_height, m.to_height)
        for src, to, m in c.sent
        if src == "n4" and isinstance(m, Fetch)
    ]


def _answer(c: Cluster, chain: list, sender: str, lo: int, hi: int) -> None:
    entries = tuple(chain[lo - 1 : hi])
    c.step("n4", sign(Blocks(CHANNEL, sender, entries), c.node_signers[sender]))


def _started(c: Cluster, chain: list, n: int) -> tuple[str, str]:
    """Claims of ``n``; the first request (1..2) goes alone and is answered small, then
    two are in flight (3..4, 5..6): returns their peers."""
    _claims(c, n, "n1", "n2")
    c.run(300)  # not urgent (within the window): it waits a status interval first
    [(p0, lo, hi)] = _fetches(c)
    assert (lo, hi) == (1, 2), "the first request goes alone: answer sizes are unknown"
    c.sent.clear()
    _answer(c, chain, p0, 1, 2)
    c.run(300)
    (p1, lo1, hi1), (p2, lo2, hi2) = _fetches(c)
    assert (lo1, hi1, lo2, hi2) == (3, 4, 5, 6)
    return p1, p2


def test_two_requests_in_flight_ask_different_peers_for_consecutive_ranges() -> None:
    c, chain = _cut_off(10, fetch_batch=2, fetch_parallel=2)
    p1, p2 = _started(c, chain, 10)
    assert p1 != p2, "two peers, one request each"
    c.run(200)
    assert len(_fetches(c)) == 2, "only two in flight until an answer frees a place"


def test_an_answer_ahead_of_a_gap_is_held_until_the_gap_is_filled() -> None:
    c, chain = _cut_off(8, fetch_batch=2, fetch_parallel=2)
    p1, p2 = _started(c, chain, 8)
    r = c.replicas["n4"]
    _answer(c, chain, p2, 5, 6)  # the second range arrives first
    assert r.committed_height == 2
    assert "dropped.catchup_gap" not in r.metrics
    c.sent.clear()
    _answer(c, chain, p1, 3, 4)
    assert r.committed_height == 6, "the gap filled, the held answer is taken too"
    assert [b.hash for b, _ in c.apps["n4"].chain] == [b.hash for b, _ in chain[:6]]
    # the rest (7..8) is asked for once (a lag within the window waits a status
    # interval after each commit, as before)
    c.run(300)
    assert [(lo, hi) for _, lo, hi in _fetches(c)] == [(7, 8)]


def test_an_unasked_answer_ahead_of_the_chain_is_dropped_not_held() -> None:
    c, chain = _cut_off(fetch_batch=2, fetch_parallel=2)
    r = c.replicas["n4"]
    _answer(c, chain, "n3", 3, 4)
    assert r.metrics["dropped.catchup_gap"] == 1
    _answer(c, chain, "n3", 1, 2)
    assert r.committed_height == 2, "nothing of the dropped answer was kept"


def test_a_late_first_request_is_asked_again_and_the_held_answer_then_taken() -> None:
    c, chain = _cut_off(8, fetch_batch=2, fetch_parallel=2, fetch_timeout_ms=500)
    _p1, p2 = _started(c, chain, 8)
    _answer(c, chain, p2, 5, 6)
    c.sent.clear()
    c.run(600)  # the request for 3..4 times out: that range is the one asked again
    r = c.replicas["n4"]
    assert r.metrics["catchup.timeouts"] >= 1
    again = _fetches(c)
    assert again and (again[0][1], again[0][2]) == (3, 4)
    _answer(c, chain, again[0][0], 3, 4)
    assert r.committed_height == 6


@pytest.mark.parametrize(
    ("parallel_bytes", "extra"),
    [(1, b""), (2_000, b"d" * 1_500)],
    ids=["by_transactions", "by_extras"],
)
def test_large_answers_are_fetched_one_at_a_time(parallel_bytes: int, extra: bytes) -> None:
    """An answer's extras (a node's state deltas: several times its transactions' bytes
    for a large block) count toward its size like its transactions."""
    c, chain = _cut_off(10, fetch_batch=2, fetch_parallel=2, fetch_parallel_bytes=parallel_bytes)
    assert sum(_txs_bytes(b) for b, _ in chain[:2]) < 2_000  # extras alone make it large
    _claims(c, 10, "n1", "n2")
    c.run(300)
    for lo in (1, 3, 5):
        [(peer, got_lo, hi)] = _fetches(c)  # one at a time: each answer is "large"
        assert (got_lo, hi) == (lo, lo + 1)
        c.sent.clear()
        entries = tuple(chain[lo - 1 : lo + 1])
        extras = (extra,) * len(entries) if extra else ()
        c.step("n4", sign(Blocks(CHANNEL, peer, entries, extras=extras), c.node_signers[peer]))
        c.run(300)
    assert c.replicas["n4"].committed_height == 6


def test_pause_moves_catch_up_deadlines_later() -> None:
    c, _chain = _cut_off(fetch_batch=2, fetch_timeout_ms=500)
    _claims(c, 6, "n1", "n2")
    c.run(300)
    assert len(_fetches(c)) == 1
    r = c.replicas["n4"]
    r.pause(2_000)  # the node was busy: the answer may be waiting in its inbox
    c.run(1_000)
    assert "catchup.timeouts" not in r.metrics
    assert len(_fetches(c)) == 1
    c.run(1_600)
    assert r.metrics["catchup.timeouts"] == 1
