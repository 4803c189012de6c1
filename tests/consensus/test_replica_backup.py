"""Backups check every proposal before they PREPARE; a faulty primary leaves evidence."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from test_replica_harness import CHANNEL, GENESIS_PREV, Cluster

from consensus import Commit, Prepare, PrePrepare, sign
from consensus.errors import EQUIVOCATION, FORGED_TRANSACTION, INVALID_PROPOSAL, NOT_PRIMARY
from ledger.blocks import Block, Transaction, build_block


def _block(c: Cluster, txs: list[Transaction], **overrides: Any) -> Block:
    fields: dict[str, Any] = {
        "channel": CHANNEL,
        "height": 1,
        "prev_hash": GENESIS_PREV,
        "transactions": txs,
        "state_height": 0,
        "state_root": c.apps["n1"].state_root_at(0),
        "proposer": "n0",
        "view": 0,
        "time_ms": c.now,
    }
    fields.update(overrides)
    return build_block(**fields)


def _pp(c: Cluster, block: Block, by: str = "n0", view: int = 0) -> PrePrepare:
    return sign(PrePrepare(CHANNEL, by, view, block), c.node_signers[by])


def _prepares_from(c: Cluster, name: str, height: int) -> list[Prepare]:
    return [
        m for src, _, m in c.sent if src == name and isinstance(m, Prepare) and m.height == height
    ]


def _silenced_primary() -> Cluster:
    """A cluster whose primary n0 is down: the test plays n0 by hand."""
    c = Cluster(5)
    c.crash("n0")
    c.tick(0)
    return c


def test_forged_client_transaction_is_refused_and_the_primary_replaced() -> None:
    c = _silenced_primary()
    good = c.clients.txs(2)
    forged = replace(c.clients.tx(), signature=bytes(64))
    pp = _pp(c, _block(c, [good[0], forged, good[1]]))
    for name in ("n1", "n2", "n3", "n4"):
        c.step(name, pp)
    assert not any(_prepares_from(c, n, 1) for n in c.names)
    kinds = {(who, ev.kind, ev.offender) for who, ev in c.evidence}
    assert kinds == {(n, FORGED_TRANSACTION, "n0") for n in ("n1", "n2", "n3", "n4")}
    assert all(ev.proof == (pp,) for _, ev in c.evidence)
    # The backups suspect the primary: view change to view 1 (primary n1), which
    # orders the valid transactions (submitted by a client meanwhile).
    c.submit("n2", good)
    c.run_until(lambda: c.apps["n3"].height >= 1, max_ms=5000)
    assert all(c.replicas[n].view == 1 for n in c.live())
    assert c.check_chains(c.live()) == 1
    assert sorted(c.committed_tx_ids("n4")) == sorted(tx.tx_id for tx in good)


def test_transaction_failing_the_channel_rule_is_refused() -> None:
    c = Cluster(5, reject=lambda tx: "not allowed" if tx.payload.get("bad") else None)
    c.crash("n0")
    c.tick(0)
    c.step("n1", _pp(c, _block(c, [c.clients.tx(bad=True)])))
    assert not _prepares_from(c, "n1", 1)
    assert [ev.kind for _, ev in c.evidence] == [FORGED_TRANSACTION]
    assert "not allowed" in c.evidence[0][1].detail


def test_wrong_previous_hash_is_refused() -> None:
    c = _silenced_primary()
    c.step("n1", _pp(c, _block(c, c.clients.txs(1), prev_hash=b"\x07" * 32)))
    assert not _prepares_from(c, "n1", 1)
    assert [(ev.kind, ev.offender) for _, ev in c.evidence] == [(INVALID_PROPOSAL, "n0")]
    assert "previous hash" in c.evidence[0][1].detail


def test_wrong_height_is_refused_or_dropped() -> None:
    c = _silenced_primary()
    b1 = _block(c, c.clients.txs(1))
    c.step("n1", _pp(c, b1))
    assert len(_prepares_from(c, "n1", 1)) == 1
    # Height 2 claiming to follow genesis directly: the chain link is wrong.
    c.step("n1", _pp(c, _block(c, c.clients.txs(1), height=2, state_height=0)))
    assert not _prepares_from(c, "n1", 2)
    assert [ev.kind for _, ev in c.evidence] == [INVALID_PROPOSAL]
    # A header whose state height does not lag the window as required.
    c.step("n1", _pp(c, _block(c, c.clients.txs(1), height=2, prev_hash=b1.hash, state_height=1)))
    assert not _prepares_from(c, "n1", 2)
    assert [ev.kind for _, ev in c.evidence] == [INVALID_PROPOSAL] * 2
    # Far beyond the window: not judged, dropped and counted.
    far = _block(c, c.clients.txs(1), height=500, prev_hash=b1.hash, state_height=492)
    c.step("n1", _pp(c, far))
    assert c.replicas["n1"].metrics["dropped.outside_window"] == 1


def test_time_outside_the_drift_bound_is_refused() -> None:
    c = _silenced_primary()
    c.run(10_000)
    ahead = _block(c, c.clients.txs(1), time_ms=c.now + 5_001)
    c.step("n1", _pp(c, ahead))
    assert not _prepares_from(c, "n1", 1)
    ok = _block(c, c.clients.txs(1), time_ms=c.now + 4_999)
    c.step("n2", _pp(c, ok))
    assert len(_prepares_from(c, "n2", 1)) == 1
    # A time in the future is the primary's doing: evidence.
    assert [(who, ev.kind) for who, ev in c.evidence] == [("n1", INVALID_PROPOSAL)]
    # A time too far in the past may be network delay: refused, but nobody is blamed.
    stale = _block(c, c.clients.txs(1), time_ms=c.now - 5_001)
    c.step("n3", _pp(c, stale))
    assert not _prepares_from(c, "n3", 1)
    assert c.replicas["n3"].metrics["refused.stale_time"] == 1
    assert len(c.evidence) == 1


def test_a_proposal_is_judged_against_the_time_noted_since_the_last_tick() -> None:
    # The backup's node was busy for 6 s after its last tick (applying large blocks);
    # the PRE-PREPARE stamped meanwhile is on time, not "ahead" (drift bound 5 s).
    c = _silenced_primary()
    c.run(10_000)
    busy_until = c.now + 6_000
    block = _block(c, c.clients.txs(1), time_ms=busy_until)
    c.replicas["n1"].note_time(busy_until)
    c.step("n1", _pp(c, block))
    assert len(_prepares_from(c, "n1", 1)) == 1
    assert c.evidence == []
    # Without the noted time the same proposal looks 6 s early and its primary is blamed.
    c.step("n2", _pp(c, block))
    assert not _prepares_from(c, "n2", 1)
    assert [(who, ev.kind) for who, ev in c.evidence] == [("n2", INVALID_PROPOSAL)]


def test_time_before_the_parent_is_refused() -> None:
    c = _silenced_primary()
    c.run(1000)
    b1 = _block(c, c.clients.txs(1))
    c.step("n1", _pp(c, b1))
    b2 = _block(c, c.clients.txs(1), height=2, prev_hash=b1.hash, time_ms=b1.header.time_ms - 1)
    c.step("n1", _pp(c, b2))
    assert not _prepares_from(c, "n1", 2)
    assert "before its parent" in c.evidence[0][1].detail


def test_wrong_state_root_is_refused() -> None:
    c = _silenced_primary()
    c.step("n1", _pp(c, _block(c, c.clients.txs(1), state_root=b"\x01" * 32)))
    assert not _prepares_from(c, "n1", 1)
    assert "state root" in c.evidence[0][1].detail


def test_conflicting_second_proposal_is_refused_with_proof() -> None:
    c = _silenced_primary()
    first = _pp(c, _block(c, c.clients.txs(2)))
    second = _pp(c, _block(c, c.clients.txs(2)))
    c.step("n1", first)
    c.step("n1", second)
    prepares = _prepares_from(c, "n1", 1)
    assert [p.block_hash for p in prepares] == [first.block_hash]
    [(who, ev)] = c.evidence
    assert (who, ev.kind, ev.offender, ev.proof) == ("n1", EQUIVOCATION, "n0", (first, second))
    # The same proposal again is only a duplicate.
    c.step("n1", first)
    assert len(c.evidence) == 1
    assert c.replicas["n1"].metrics["dropped.duplicate"] == 1


def test_proposal_from_a_backup_is_refused() -> None:
    c = Cluster(5)
    c.tick(0)
    pp = _pp(c, _block(c, c.clients.txs(1), proposer="n2"), by="n2")
    c.step("n1", pp)
    assert not _prepares_from(c, "n1", 1)
    assert [(ev.kind, ev.offender) for _, ev in c.evidence] == [(NOT_PRIMARY, "n2")]


def test_bad_signature_is_dropped_without_blaming_anyone() -> None:
    c = _silenced_primary()
    pp = _pp(c, _block(c, c.clients.txs(1)), by="n0")
    c.step("n1", replace(pp, signature=c.node_signers["n2"].sign(pp.tag, pp.signing_bytes)))
    c.step("n1", replace(pp, sender="outsider"))
    assert not _prepares_from(c, "n1", 1)
    assert not c.evidence
    metrics = c.replicas["n1"].metrics
    assert metrics["dropped.bad_signature"] == 1
    assert metrics["dropped.not_validator"] == 1


def test_already_committed_transaction_is_refused_without_blame() -> None:
    c = Cluster(5, batch_interval_ms=0)
    c.tick(0)
    tx = c.clients.tx()
    c.submit("n0", [tx])
    c.run(50)
    assert c.apps["n1"].height == 1
    b2 = _block(
        c,
        [tx],
        height=2,
        prev_hash=c.apps["n1"].chain[0][0].hash,
        time_ms=c.now,
    )
    c.crash("n0")
    c.step("n1", _pp(c, b2))
    assert not _prepares_from(c, "n1", 2)
    # A primary that is behind could do this honestly: refused, not evidence.
    assert c.replicas["n1"].metrics["refused.committed_tx"] == 1
    assert not c.evidence


def test_a_proposal_before_the_first_tick_waits_for_the_clock() -> None:
    c = Cluster(5)
    c.crash("n0")
    c.replicas["n1"].step(_pp(c, _block(c, c.clients.txs(1), time_ms=1_000_000)))
    c.pump()
    assert not _prepares_from(c, "n1", 1)  # no clock: cannot judge the time yet
    assert not c.evidence
    c.now = 1_000_000
    c.replicas["n1"].tick(c.now)
    c.pump()
    assert len(_prepares_from(c, "n1", 1)) == 1


def test_a_message_that_cannot_be_encoded_is_dropped_not_raised() -> None:
    c = _silenced_primary()
    block = _block(c, c.clients.txs(1))
    broken = Block(replace(block.header, time_ms=1.5), block.transactions)  # type: ignore[arg-type]
    c.step("n1", PrePrepare(CHANNEL, "n0", 0, broken, b"\x00" * 64))
    assert c.replicas["n1"].metrics["dropped.malformed"] == 1


def test_a_block_prepared_before_its_parent_is_committed_once_the_parent_is() -> None:
    """The quorum of PREPAREs for height 2 arrives while height 1 is not prepared yet
    (so the replica cannot endorse 2); once 1 is prepared it endorses 2 and, 2 being
    prepared already, COMMITs it."""
    c = _silenced_primary()
    c.drop = lambda src, dst, m: True  # n1 alone; everything else is injected
    b1 = _block(c, c.clients.txs(1))
    b2 = _block(c, c.clients.txs(1), height=2, prev_hash=b1.hash)

    def prepare(who: str, block: Block) -> Prepare:
        return sign(Prepare(CHANNEL, who, 0, block.height, block.hash), c.node_signers[who])

    c.step("n1", _pp(c, b1))
    c.step("n1", _pp(c, b2))
    for who in ("n0", "n2", "n3", "n4"):
        c.step("n1", prepare(who, b2))
    assert [p.height for p in _prepares_from(c, "n1", 2)] == []  # parent not prepared
    for who in ("n0", "n2", "n3"):
        c.step("n1", prepare(who, b1))
    commits = [m for src, _, m in c.sent if src == "n1" and isinstance(m, Commit)]
    assert [(m.height, m.block_hash) for m in commits] == [(1, b1.hash), (2, b2.hash)]
