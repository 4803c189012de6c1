"""Validator-set changes from a height: quorums and primaries follow validators_at(h)."""

from __future__ import annotations

from test_replica_harness import CHANNEL, GENESIS_PREV, Cluster

from consensus import PrePrepare, sign
from consensus.messages import Blocks
from ledger.blocks import build_block
from ledger.certificate import Validator, ValidatorSet
from ledger.crypto import Signer

CHANGE_AT = 6


def _schedule(signers: dict[str, Signer]) -> list[tuple[int, ValidatorSet]]:
    def vset(*names: str) -> ValidatorSet:
        return ValidatorSet(tuple(Validator(n, signers[n].public_key) for n in names))

    # n0 leaves and n5 joins at CHANGE_AT; the new set has 4 members (f = 1, Q = 3),
    # listed so that n1 is the primary of view 0.
    return [(0, vset("n0", "n1", "n2", "n3", "n4")), (CHANGE_AT, vset("n1", "n2", "n5", "n4"))]


def _cluster() -> Cluster:
    c = Cluster(5, extra_nodes=1, schedule=_schedule, max_batch_txs=2, batch_interval_ms=0)
    c.tick(0)
    return c


def test_quorums_and_primaries_follow_the_set_in_force_at_each_height() -> None:
    c = _cluster()
    c.submit("n2", c.clients.txs(20))
    c.run_until(lambda: min(c.heights().values()) >= 10, 3000)
    assert c.check_chains() == 10
    chain = c.apps["n5"].chain
    for block, cert in chain:
        voters = {v.validator for v in cert.votes}
        if block.height < CHANGE_AT:
            assert block.header.proposer == "n0"
            assert len(voters) == 4 and voters <= {"n0", "n1", "n2", "n3", "n4"}
        else:
            assert block.header.proposer == "n1"
            assert len(voters) == 3 and voters <= {"n1", "n2", "n4", "n5"}
    # The replica that left follows the chain without voting on it.
    assert c.apps["n0"].height == 10
    assert c.replicas["n0"].metrics["sent.commit"] == CHANGE_AT - 1


def test_view_change_after_the_set_change_uses_the_new_set() -> None:
    c = _cluster()
    c.submit("n2", c.clients.txs(2 * (CHANGE_AT + 1)))
    c.run_until(lambda: min(c.heights().values()) >= CHANGE_AT + 1, 3000)
    c.crash("n1")  # the primary of view 0 in the new set
    c.crash("n3")  # n3 is no longer a validator: its absence does not matter
    c.submit("n2", c.clients.txs(4))
    live = [n for n in c.live() if n != "n0"]
    c.run_until(lambda: all(c.apps[n].height >= CHANGE_AT + 3 for n in live), 10_000)
    assert c.replicas["n2"].view == 1
    assert c.check_chains(c.live()) >= CHANGE_AT + 3
    last, cert = c.apps["n4"].chain[-1]
    assert last.header.proposer == "n2"  # primary of view 1 in (n1, n2, n5, n4)
    assert {v.validator for v in cert.votes} <= {"n2", "n5", "n4"}


def test_honest_successor_of_an_equivocating_primary_is_not_blamed() -> None:
    """At the boundary the primary changes: n0 (heights < 2) equivocates at height 1 and
    the honest n1 (primary from height 2) builds on the block n0 sent it. A backup
    holding n0's other block refuses n1's proposal, but does not accuse n1."""

    def schedule(signers: dict[str, Signer]) -> list[tuple[int, ValidatorSet]]:
        old, new = _schedule(signers)
        return [old, (2, new[1])]

    c = Cluster(5, extra_nodes=1, schedule=schedule, batch_interval_ms=0)
    c.crash("n0")  # the test plays n0
    c.tick(0)
    a1, b1 = (
        sign(
            PrePrepare(
                CHANNEL,
                "n0",
                0,
                build_block(
                    channel=CHANNEL,
                    height=1,
                    prev_hash=GENESIS_PREV,
                    transactions=c.clients.txs(1),
                    state_height=0,
                    state_root=c.apps["n1"].state_root_at(0),  # type: ignore[arg-type]
                    proposer="n0",
                    view=0,
                    time_ms=c.now,
                ),
            ),
            c.node_signers["n0"],
        )
        for _ in range(2)
    )
    c.replicas["n1"].step(a1)
    c.replicas["n2"].step(b1)
    c.submit("n1", c.clients.txs(1))  # n1 proposes height 2 on top of a1
    proposals = [m for src, _, m in c.sent if src == "n1" and isinstance(m, PrePrepare)]
    assert [(p.height, p.block.header.prev_hash) for p in proposals] == [(2, a1.block_hash)]
    assert c.replicas["n2"].metrics["refused.parent_mismatch"] == 1
    assert all(ev.offender != "n1" for _, ev in c.evidence)


def test_a_replica_that_left_the_set_follows_by_catch_up() -> None:
    """n0 leaves at CHANGE_AT; broadcasts go to validators only, so after a crash it
    hears nothing unless it asks: its STATUS makes the validators answer with theirs,
    and it fetches the blocks it missed."""
    c = _cluster()
    c.broadcast_to_validators = True
    c.submit("n2", c.clients.txs(4))
    c.run_until(lambda: c.apps["n0"].height >= 2, 1000)
    c.crash("n0")
    c.submit("n2", c.clients.txs(20))
    c.run_until(lambda: c.apps["n1"].height >= 12, 10_000)
    c.restart("n0")
    # n0, and n3 (which also left at CHANGE_AT), follow by catch-up.
    c.run_until(lambda: len(set(c.heights().values())) == 1, 3000)
    assert c.check_chains() >= 12
    n0 = c.replicas["n0"]
    assert n0.metrics["catchup.blocks"] >= 10
    assert "sent.commit" not in n0.metrics  # it follows, it does not vote


def test_a_transaction_given_to_a_replica_that_left_the_set_is_still_ordered() -> None:
    """n0 left at CHANGE_AT but still takes client transactions: its FORWARD, verified
    with its last key, puts them in the validators' mempools (they were dropped as
    coming from a non-validator, and waited for the client to try another node)."""
    c = _cluster()
    c.submit("n2", c.clients.txs(2 * CHANGE_AT))
    c.run_until(lambda: min(c.heights().values()) >= CHANGE_AT, 5000)
    given = c.clients.tx()
    assert c.submit("n0", [given])[0].accepted
    c.run_until(lambda: given.tx_id in c.committed_tx_ids("n1"), 3000)
    assert given.tx_id in c.committed_tx_ids("n5")


def test_a_catch_up_answer_from_a_replica_that_left_the_set_is_taken() -> None:
    """After a change of the set the blocks may be held only by validators that left
    it (a simulator seed: the one honest replica that committed the last block of the
    old set left with it). A catch-up answer proves itself by its certificates, so one
    from n0 (left at CHANGE_AT) is taken; one signed by a key never in any set is not."""
    c = _cluster()
    c.submit("n2", c.clients.txs(2 * (CHANGE_AT + 2)))
    c.run_until(lambda: min(c.heights().values()) >= CHANGE_AT + 1, 5000)
    c.crash("n2")
    c.submit("n1", c.clients.txs(8))
    c.run_until(lambda: c.apps["n0"].height >= CHANGE_AT + 4, 5000)
    n2 = c.restart("n2")
    c.crash("n2")  # n2 hears nothing but what the test gives it
    behind = c.apps["n2"].height
    assert behind >= CHANGE_AT and c.apps["n0"].height > behind + 1
    entries = tuple(c.apps["n0"].chain[behind : behind + 2])
    stranger = c.scheme.signer_from_seed(b"n9" * 16)
    forged = sign(Blocks(CHANNEL, "n9", entries), stranger)
    n2.step(forged)
    assert n2.metrics["dropped.not_validator"] == 1 and c.apps["n2"].height == behind
    n2.step(sign(Blocks(CHANNEL, "n0", entries), c.node_signers["n0"]))
    c.down.discard("n2")
    c.pump()
    assert c.apps["n2"].height == behind + 2
    assert n2.metrics["catchup.blocks"] == 2
    assert c.check_chains(["n0", "n2"]) == behind + 2
