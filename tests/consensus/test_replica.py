"""The replica's normal case: proposals, pipelining, batching, dissemination, dedup."""

from __future__ import annotations

from dataclasses import replace

from test_replica_harness import Cluster

from consensus import Message, PrePrepare, Ready
from consensus.mempool import ACCEPTED, COMMITTED, DUPLICATE, REJECTED


def test_normal_case_commits_identical_chains_with_valid_certificates() -> None:
    c = Cluster(5, max_batch_txs=10)
    c.tick(0)
    txs = c.clients.txs(45)
    assert all(r.status == ACCEPTED for r in c.submit("n0", txs))
    c.run_until(lambda: min(c.heights().values()) >= 5, max_ms=2000)
    c.run(100)
    height = c.check_chains()
    assert height == 5
    for name in c.names:
        ids = c.committed_tx_ids(name)
        assert sorted(ids) == sorted(tx.tx_id for tx in txs)
        assert c.replicas[name].mempool_size == 0
        assert c.replicas[name].view == 0
    # The primary of view 0 proposed every block; certificates carry a quorum (4 of 5).
    for block, cert in c.apps["n2"].chain:
        assert block.header.proposer == "n0"
        assert len(cert.votes) == 4
    assert not c.evidence


def test_normal_case_with_ed25519() -> None:
    c = Cluster(5, ed25519=True, max_batch_txs=4)
    c.tick(0)
    txs = c.clients.txs(10)
    c.submit("n2", txs)
    c.run_until(lambda: min(c.heights().values()) >= 3, max_ms=2000)
    assert c.check_chains() == 3
    assert sorted(c.committed_tx_ids("n4")) == sorted(tx.tx_id for tx in txs)


def test_pipelining_keeps_several_heights_in_flight_within_the_window() -> None:
    window = 3
    c = Cluster(5, window=window, max_batch_txs=2, batch_interval_ms=0)
    c.tick(0)
    in_flight: list[int] = []

    def watching(name: str, rd: Ready, height: int) -> None:
        # A proposal in this Ready was made at a committed height ≤ ``height``.
        in_flight.extend(
            o.message.height - height for o in rd.messages if isinstance(o.message, PrePrepare)
        )

    c.on_ready = watching
    c.submit("n0", c.clients.txs(30))
    c.run_until(lambda: min(c.heights().values()) >= 15, max_ms=3000)
    assert c.check_chains() == 15
    assert max(in_flight) == window, "the primary fills the window, never beyond"
    assert all(d <= window for d in in_flight)


def test_partial_batches_wait_while_blocks_are_in_flight_and_grow() -> None:
    def run(limit: int) -> list[int]:
        """Block sizes when 3 transactions arrive every 10 ms for 50 ms while the
        network holds every message (a slow round trip), then delivers them."""
        c = Cluster(5, window=8, max_batch_txs=100, batch_interval_ms=0,
                    partial_batch_inflight=limit)  # fmt: skip
        c.tick(0)
        held: list[tuple[str, str, Message]] = []

        def hold(src: str, dst: str, msg: Message) -> bool:
            held.append((src, dst, msg))
            return True

        c.drop = hold
        for _ in range(5):
            c.submit("n0", c.clients.txs(3))
            c.tick(10)
        proposed = len(
            {m.height for src, _, m in held if src == "n0" and isinstance(m, PrePrepare)}
        )
        c.drop = None
        c.queue.extend(held)
        c.run_until(lambda: c.replicas["n0"].mempool_size == 0, max_ms=5000)
        c.run(100)
        c.check_chains()
        sizes = [len(b.transactions) for b, _ in c.apps["n1"].chain]
        assert sum(sizes) == 15
        return [proposed, *sizes]

    eager = run(0)  # 0: the whole window
    patient = run(1)
    assert eager[0] == 5, "each partial batch proposed at once, five in flight"
    assert patient[0] == 1, "partial batches wait while a block is in flight"
    assert patient[1:] == [3, 12], "the rest gathered into one block"


def test_batch_closes_when_full_without_waiting() -> None:
    c = Cluster(5, max_batch_txs=10, batch_interval_ms=10_000, propose_when_idle=False)
    c.tick(0)
    c.submit("n0", c.clients.txs(25))
    # Two full batches are proposed and committed at once; the remaining 5 wait.
    assert c.heights()["n0"] == 2
    assert [len(b.transactions) for b, _ in c.apps["n0"].chain] == [10, 10]
    c.run(9_000)
    assert c.heights()["n0"] == 2
    c.run(1_100)
    assert [len(b.transactions) for b, _ in c.apps["n0"].chain] == [10, 10, 5]


def test_batch_closes_after_the_interval() -> None:
    c = Cluster(5, batch_interval_ms=50, propose_when_idle=False)
    c.tick(0)
    c.submit("n0", c.clients.txs(3))
    c.run(40)
    assert c.heights()["n0"] == 0
    c.run(20)
    assert c.heights()["n0"] == 1


def test_an_idle_primary_proposes_at_once_and_batches_while_a_block_is_in_flight() -> None:
    c = Cluster(5, batch_interval_ms=50, max_batch_txs=100)
    c.tick(0)
    held: list[tuple[str, str, Message]] = []

    def hold(src: str, dst: str, msg: Message) -> bool:
        held.append((src, dst, msg))
        return True

    c.drop = hold  # the network holds every message: block 1 stays in flight
    c.submit("n0", c.clients.txs(1))
    proposed = [m for src, _, m in held if src == "n0" and isinstance(m, PrePrepare)]
    assert [m.height for m in proposed] == [1, 1, 1, 1], "nothing in flight: proposed at once"
    c.submit("n0", c.clients.txs(2))
    c.tick(40)
    assert {m.height for _, _, m in held if isinstance(m, PrePrepare)} == {1}, (
        "with a block in flight the batch stays open for the interval"
    )
    c.tick(60)
    assert {m.height for _, _, m in held if isinstance(m, PrePrepare)} == {1, 2}
    c.drop = None
    c.queue.extend(held)
    c.run(100)
    assert c.check_chains() == 2
    assert [len(b.transactions) for b, _ in c.apps["n1"].chain] == [1, 2]


def test_a_replica_that_has_no_clock_yet_proposes_nothing() -> None:
    c = Cluster(5, batch_interval_ms=0)
    c.submit("n0", c.clients.txs(2))  # before n0's first tick: a block would carry time 0
    assert c.heights()["n0"] == 0
    c.tick(10)
    c.run(50)
    assert c.check_chains() == 1
    assert c.apps["n1"].chain[0][0].header.time_ms == 10


def test_flush_forwards_sends_the_submitted_transactions_before_the_tick() -> None:
    c = Cluster(5, batch_interval_ms=10_000, max_batch_txs=100, propose_when_idle=False)
    c.tick(0)
    c.submit("n3", c.clients.txs(4))
    c.submit("n3", c.clients.txs(3, sender="lender-2"))
    c.pump()
    assert [c.replicas[n].mempool_size for n in c.names] == [0, 0, 0, 7, 0], "held to the tick"
    sent_before = c.replicas["n3"].metrics.get("sent.forward", 0)
    c.replicas["n3"].flush_forwards()
    c.pump()
    assert all(c.replicas[n].mempool_size == 7 for n in c.names)
    assert c.replicas["n3"].metrics.get("sent.forward", 0) - sent_before == 1, "one FORWARD"


def test_transactions_submitted_to_a_backup_reach_every_validator() -> None:
    c = Cluster(5, batch_interval_ms=10_000, max_batch_txs=100, propose_when_idle=False)
    c.tick(0)
    txs = c.clients.txs(7)
    c.submit("n3", txs)
    c.tick(10)  # FORWARDs are flushed on the tick
    for name in c.names:
        assert c.replicas[name].mempool_size == 7, name
    c.run(10_100)
    assert c.check_chains() == 1
    assert sorted(c.committed_tx_ids("n0")) == sorted(tx.tx_id for tx in txs)


def test_resubmission_never_commits_twice() -> None:
    c = Cluster(5, batch_interval_ms=20, propose_when_idle=False)
    c.tick(0)
    tx = c.clients.tx()
    assert c.submit("n1", [tx])[0].status == ACCEPTED
    assert c.submit("n1", [tx])[0].status == DUPLICATE
    assert c.submit("n0", [tx])[0].status == ACCEPTED  # n0 had not seen it yet…
    c.tick(10)
    assert c.submit("n2", [tx])[0].status == DUPLICATE  # …n2 got it forwarded
    c.run_until(lambda: min(c.heights().values()) >= 1, max_ms=500)
    for name in c.names:
        assert c.replicas[name].submit([tx])[0].status == COMMITTED
    c.run(500)
    for name in c.names:
        assert c.committed_tx_ids(name) == [tx.tx_id]


def test_invalid_transactions_are_rejected_on_submit() -> None:
    c = Cluster(5, reject=lambda tx: "blocked" if tx.payload.get("bad") else None)
    c.tick(0)
    good = c.clients.tx()
    bad_rule = c.clients.tx(bad=True)
    forged = c.clients.tx()
    forged = replace(forged, signature=bytes(64))
    results = c.submit("n0", [good, bad_rule, forged])
    assert [r.status for r in results] == [ACCEPTED, REJECTED, REJECTED]
    assert results[1].reason == "blocked"
    assert results[2].reason == "invalid client signature"


def test_mempool_bounds_are_enforced() -> None:
    c = Cluster(
        5, mempool_limit=10, mempool_per_sender=4, batch_interval_ms=10_000, propose_when_idle=False
    )
    c.tick(0)
    r1 = c.submit("n0", c.clients.txs(6, sender="lender-1"))
    assert [r.status for r in r1] == [ACCEPTED] * 4 + [REJECTED] * 2
    r2 = c.submit("n0", c.clients.txs(8, sender="lender-2"))
    assert [r.status for r in r2] == [ACCEPTED] * 4 + [REJECTED] * 4
    r3 = c.submit("n0", c.clients.txs(4, sender="mallory"))
    assert [r.status for r in r3] == [ACCEPTED] * 2 + [REJECTED] * 2
    assert r3[3].reason == "mempool full"
    assert c.replicas["n0"].mempool_size == 10


def test_mempool_is_bounded_in_bytes_in_total_and_per_sender() -> None:
    """Large transactions (batch reports of up to 256 KiB) meet a byte bound long
    before the count bound; a sender gets the same share of the bytes as of the count,
    and bytes are given back when transactions commit."""
    from consensus.mempool import Mempool, tx_size

    c = Cluster(5)
    blob = bytes(200_000)
    big = {s: [c.clients.tx(s, blob=blob) for _ in range(6)] for s in ("lender-1", "lender-2")}
    size = tx_size(big["lender-1"][0])
    pool = Mempool(limit=100, per_sender=50, recent_committed_limit=10, max_bytes=7 * size)
    for tx in big["lender-1"][:3]:
        assert pool.check(tx) is None
        pool.add(tx, 0)
    # a sender's share: 7 × size × 50 / 100 = 3.5 transactions' worth
    assert "bytes of transactions waiting" in (pool.check(big["lender-1"][3]) or "")
    for tx in big["lender-2"][:3]:
        pool.add(tx, 0)
    small = c.clients.tx("mallory")
    assert pool.check(small) is None  # still room below the total
    pool.add(small, 0)
    refused = pool.check(c.clients.tx("mallory", blob=blob))
    assert refused is not None and refused.startswith("mempool full")
    assert pool.total_bytes == 6 * size + tx_size(small) <= 7 * size
    pool.committed([big["lender-1"][0].tx_id])
    assert pool.total_bytes == 5 * size + tx_size(small)
    assert pool.check(big["lender-1"][3]) is None  # its bytes were given back
    # the replica takes the bound from its config and answers "overloaded"-style reasons
    c2 = Cluster(
        5, mempool_max_bytes=2 * size + 1000, batch_interval_ms=10_000, propose_when_idle=False
    )
    c2.tick(0)
    res = c2.submit(
        "n0", [c2.clients.tx(s, blob=blob) for s in ("lender-1", "lender-2", "mallory")]
    )
    assert [r.status for r in res] == [ACCEPTED, ACCEPTED, REJECTED]
    assert (res[2].reason or "").startswith("mempool full")


def test_mempool_bookkeeping_stays_consistent() -> None:
    from consensus.mempool import Mempool, tx_size

    c = Cluster(5)
    pool = Mempool(limit=100, per_sender=100, recent_committed_limit=5)
    txs = c.clients.txs(12)

    def check() -> None:
        free = [t for t in txs if t.tx_id in pool and pool.reserved_at(t.tx_id) is None]
        assert pool.total_bytes == sum(tx_size(t) for t in txs if t.tx_id in pool)
        assert pool.free_count == len(free)
        assert pool.free_bytes == sum(tx_size(t) for t in free)
        assert [t.tx_id for t in pool.batch(100, 1 << 30)] == [t.tx_id for t in free]

    for i, tx in enumerate(txs[:8]):
        pool.add(tx, i)
    check()
    pool.reserve([t.tx_id for t in txs[:3]], 5)
    pool.reserve([txs[9].tx_id], 6)  # reserved before it arrives
    pool.add(txs[9], 9)
    check()
    assert pool.oldest_free_arrival() == 3
    pool.release_above(5)
    check()
    pool.committed([t.tx_id for t in txs[:2]])
    check()
    pool.release_all()
    check()
    assert pool.oldest_free_arrival() == 2
    assert pool.is_committed(txs[0].tx_id) and pool.check(txs[0]) == "committed"
    pool.committed([t.tx_id for t in txs[2:9]])  # the memory of committed ids is bounded
    assert not pool.is_committed(txs[0].tx_id)
    check()


def test_a_replica_is_quiescent_only_with_nothing_a_timer_could_judge() -> None:
    c = Cluster(5, max_batch_txs=5, status_interval_ms=1000)
    assert not any(r.quiescent() for r in c.replicas.values())  # no clock yet
    c.tick(0)
    assert all(r.quiescent() for r in c.replicas.values())
    assert all(r.next_status_ms == 1000 for r in c.replicas.values())
    c.replicas["n2"].submit(c.clients.txs(3))  # queued at n2, not yet forwarded
    assert not c.replicas["n2"].quiescent()
    c.drop = lambda src, dst, m: m.kind == "commit"  # proposed and endorsed, not committed
    c.run(100)
    assert all(c.apps[n].height == 0 for n in c.names)
    assert not any(r.quiescent() for r in c.replicas.values())
    c.drop = None
    c.run_until(lambda: all(c.apps[n].height == 1 for n in c.names), 5000)
    c.run(50)
    assert all(r.quiescent() for r in c.replicas.values())
    # a replica that left the view alone (its own transaction waited too long) is not
    # quiescent even once its mempool is empty: its view-change timer runs
    c.drop = lambda src, dst, m: "n3" in (src, dst)
    (tx,) = c.clients.txs(1)
    c.submit("n3", [tx])
    c.run_until(lambda: not c.replicas["n3"].view_active, 10_000)
    c.replicas["n3"]._mempool.committed([tx.tx_id])
    assert c.replicas["n3"].mempool_size == 0
    assert not c.replicas["n3"].quiescent()
