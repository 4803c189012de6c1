"""The deterministic simulator: its parts, its checkers, and many seeds against the core."""

from __future__ import annotations

import argparse
import io
import itertools
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from consensus.config import ReplicaConfig
from consensus.durable import DurableState
from consensus.errors import InternalError
from consensus.mempool import SubmitResult
from consensus.messages import Message, Prepare, sign
from consensus.replica import Outbound, Ready
from consensus.sim.app import TX_TYPE, SimApplication, ValidatorSchedule, check_sim_tx
from consensus.sim.checkers import (
    LIVENESS_TIMEOUT_MULTIPLE,
    LivenessChecker,
    SafetyChecker,
    liveness_bound_ms,
)
from consensus.sim.faults import (
    ALL_KINDS,
    BYZANTINE_BEHAVIOURS,
    FAULT_KINDS,
    ByzantineFault,
    FaultPlan,
    FaultWindow,
    make_plan,
)
from consensus.sim.network import LinkProfile, Network
from consensus.sim.prng import Prng
from consensus.sim.runner import (
    DEFAULT_CONFIG,
    EPOCH_MS,
    ReplicaLike,
    SeedResult,
    SimConfig,
    real_replica,
    resolve_kind,
    run_many,
    run_seed,
)
from consensus.sim.scheduler import Scheduler, SchedulerError
from ledger.blocks import Block, Transaction, build_block, channel_genesis_hash
from ledger.certificate import (
    CommitCertificate,
    Validator,
    ValidatorSet,
    Vote,
    commit_vote_message,
)
from ledger.crypto import FastScheme, Signer
from ledger.hashing import TAG_COMMIT_VOTE
from node.commands import simulate_cmd
from node.commands.simulate_cmd import failure_line

CHANNEL = "supervision"
NETWORK_ID = bytes(32)
GENESIS_PREV = channel_genesis_hash(NETWORK_ID, CHANNEL)

# ---------------------------------------------------------------------------------------
# Scheduler and network model
# ---------------------------------------------------------------------------------------


def test_scheduler_orders_by_time_then_insertion() -> None:
    s: Scheduler[str] = Scheduler()
    s.at(30, "c")
    s.at(10, "a")
    s.at(30, "d")
    s.at(10, "b")
    order = []
    while (item := s.pop()) is not None:
        order.append(item)
    assert order == [(10, "a"), (10, "b"), (30, "c"), (30, "d")]
    assert s.now_ms == 30
    with pytest.raises(SchedulerError):
        s.at(29, "past")
    s.after(5, "e")
    assert s.peek_time() == 35


def _delivery_trace(seed: int, profile: LinkProfile) -> list[tuple[int, ...]]:
    net = Network(("a", "b", "c"), Prng(seed), profile)
    return [net.transmit("a", "b", t) for t in range(0, 2000, 10)]


def test_network_is_deterministic_per_seed() -> None:
    profile = LinkProfile(1, 50, drop=0.2, duplicate=0.2, tail=0.2, tail_ms=500)
    assert _delivery_trace(5, profile) == _delivery_trace(5, profile)
    assert _delivery_trace(5, profile) != _delivery_trace(6, profile)


def test_network_delay_bounds_loss_duplication_and_reordering() -> None:
    profile = LinkProfile(5, 20, drop=0.25, duplicate=0.2, tail=0.3, tail_ms=400)
    net = Network(("a", "b"), Prng(1), profile)
    n = 4000
    arrivals = [(t, net.transmit("a", "b", t)) for t in range(n)]
    lost = sum(1 for _, a in arrivals if not a)
    dups = sum(1 for _, a in arrivals if len(a) == 2)
    assert 0.2 * n < lost < 0.3 * n
    assert 0.12 * n < dups < 0.2 * n
    for t, times in arrivals:
        for at in times:
            assert t + 5 <= at <= t + 20 + 400
    # reordering: some message sent later arrives before one sent earlier
    firsts = [(t, a[0]) for t, a in arrivals if a]
    assert any(b[1] < a[1] for a, b in itertools.pairwise(firsts))
    assert net.stats.sent == n
    assert net.stats.dropped_loss == lost
    assert net.stats.duplicated == dups


def test_network_partitions_and_heal() -> None:
    net = Network(("a", "b", "c", "d"), Prng(2))
    net.partition([("a", "b"), ("c",)])  # d is alone
    assert net.transmit("a", "b", 0)
    assert net.transmit("a", "c", 0) == ()
    assert net.transmit("d", "a", 0) == ()
    assert net.transmit("c", "d", 0) == ()
    assert net.transmit("client-1", "c", 0)  # endpoints outside the network are never cut
    assert net.stats.dropped_partition == 3
    with pytest.raises(ValueError):
        net.partition([("a",), ("a", "b")])
    net.set_node("a", LinkProfile(drop=1.0))
    assert net.transmit("a", "b", 0) == ()
    net.heal()
    assert not net.partitioned
    assert all(net.transmit(s, d, 0) for s in "abcd" for d in "abcd" if s != d)


def test_link_profile_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        LinkProfile(10, 5)
    with pytest.raises(ValueError):
        LinkProfile(drop=1.5)


# ---------------------------------------------------------------------------------------
# Fault plans
# ---------------------------------------------------------------------------------------

NODES = ("v0", "v1", "v2", "v3", "v4")
#: Crash seeds among which forgetting the durable state leads to a double vote.
AMNESIA_SEEDS = range(0, 60)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_fault_plans_are_deterministic_and_bounded(kind: str) -> None:
    window = FaultWindow(200, 4000)
    for seed in range(40):
        plan = make_plan(kind, Prng(seed).fork("faults"), NODES, window)
        assert plan == make_plan(kind, Prng(seed).fork("faults"), NODES, window)
        assert plan.kind == kind
        assert len(plan.faulty) <= 1
        assert plan.heal_ms <= window.end_ms
        for c in plan.crashes:
            assert window.start_ms <= c.at_ms < c.restart_ms <= plan.heal_ms
        # at most one replica is down at any moment
        spans = sorted((c.at_ms, c.restart_ms) for c in plan.crashes)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
        for p in plan.partitions:
            assert sorted(n for g in p.groups for n in g) == sorted(NODES)
            assert p.until_ms <= plan.heal_ms
        assert plan.describe()[0].startswith(f"kind={kind}")


def test_byzantine_plans_cover_every_behaviour_and_refuse_unknown_ones() -> None:
    seen = {
        make_plan("byzantine", Prng(s), NODES).byzantine.behaviour  # type: ignore[union-attr]
        for s in range(200)
    }
    assert seen == set(BYZANTINE_BEHAVIOURS)
    plan = make_plan("byzantine", Prng(1), NODES, behaviour="twins")
    assert plan.byzantine is not None and plan.byzantine.behaviour == "twins"
    assert plan.faulty == {plan.byzantine.node}
    with pytest.raises(ValueError):
        make_plan("byzantine", Prng(1), NODES, behaviour="nonsense")
    with pytest.raises(ValueError):
        make_plan("earthquake", Prng(1), NODES)


# ---------------------------------------------------------------------------------------
# Synthetic chains for the app and the checkers
# ---------------------------------------------------------------------------------------


class Fixture:
    def __init__(self) -> None:
        self.scheme = FastScheme()
        self.signers: dict[str, Signer] = {
            name: self.scheme.signer_from_seed(name.encode().ljust(32, b"\0")) for name in NODES
        }
        self.vset = ValidatorSet(tuple(Validator(n, self.signers[n].public_key) for n in NODES))
        self.client = self.scheme.signer_from_seed(b"client".ljust(32, b"\0"))
        self.clients = {"client-0": self.client.public_key}

    def tx(self, seq: int, *, sign: bool = True, sender: str = "client-0") -> Transaction:
        tx = Transaction(
            NETWORK_ID, CHANNEL, TX_TYPE, sender, self.client.public_key, seq, 0, {"seq": seq}
        )
        return tx.signed(self.client) if sign else replace(tx, signature=bytes(64))

    def block(
        self,
        height: int,
        prev: bytes,
        txs: tuple[Transaction, ...] = (),
        *,
        view: int = 0,
        time_ms: int = 0,
        proposer: str | None = None,
    ) -> Block:
        return build_block(
            channel=CHANNEL,
            height=height,
            prev_hash=prev,
            transactions=txs,
            state_height=0,
            state_root=bytes(32),
            proposer=proposer or self.vset.primary(view),
            view=view,
            time_ms=time_ms,
        )

    def cert(
        self, block: Block, voters: tuple[str, ...] = NODES[:4], view: int = 0
    ) -> CommitCertificate:
        msg = commit_vote_message(CHANNEL, block.height, view, block.hash)
        votes = tuple(Vote(v, self.signers[v].sign(TAG_COMMIT_VOTE, msg)) for v in voters)
        return CommitCertificate(CHANNEL, block.height, view, block.hash, votes)

    def checker(self) -> SafetyChecker:
        return SafetyChecker(
            channel=CHANNEL,
            genesis_prev_hash=GENESIS_PREV,
            validators_at=lambda h: self.vset,
            scheme=self.scheme,
            tx_rule=lambda tx: check_sim_tx(
                tx, network=NETWORK_ID, channel=CHANNEL, clients=self.clients
            ),
        )


@pytest.fixture()
def fx() -> Fixture:
    return Fixture()


def test_app_validates_stores_in_order_and_tracks_roots(fx: Fixture) -> None:
    app = SimApplication(
        channel=CHANNEL,
        network=NETWORK_ID,
        schedule=ValidatorSchedule.fixed(fx.vset),
        clients=fx.clients,
    )
    assert app.validate_tx(fx.tx(1)) is None
    assert app.validate_tx(fx.tx(1, sender="mallory")) is not None
    assert app.validate_tx(replace(fx.tx(1), channel="risk")) is not None
    assert app.validate_tx(replace(fx.tx(1), type="other")) is not None
    assert app.validate_tx(replace(fx.tx(1), payload={"seq": "x"})) is not None
    root0 = app.state_root_at(0)
    assert root0 is not None and app.state_root_at(1) is None
    b1 = fx.block(1, GENESIS_PREV, (fx.tx(1),))
    app.store(b1, fx.cert(b1))
    assert app.committed_block(1) == (b1, fx.cert(b1))
    assert app.state_root_at(1) not in (None, root0)
    assert app.committed_block(2) is None
    b3 = fx.block(3, b1.hash)
    with pytest.raises(Exception, match="height 3"):
        app.store(b3, fx.cert(b3))
    assert app.height == 1 and app.head_hash == b1.hash


def test_safety_checker_accepts_a_good_chain(fx: Fixture) -> None:
    chk = fx.checker()
    b1 = fx.block(1, GENESIS_PREV, (fx.tx(1), fx.tx(2)), time_ms=10)
    b2 = fx.block(2, b1.hash, (fx.tx(3),), time_ms=20)
    for node in NODES[:4]:
        assert chk.on_commit(node, b1, fx.cert(b1), 100) == []
        assert chk.on_commit(node, b2, fx.cert(b2), 200) == []
    assert chk.max_height == 2 and chk.committed_hash(2) == b2.hash


def test_safety_checker_catches_two_honest_replicas_committing_different_blocks(
    fx: Fixture,
) -> None:
    chk = fx.checker()
    b1 = fx.block(1, GENESIS_PREV, (fx.tx(1),))
    other = fx.block(1, GENESIS_PREV, (fx.tx(2),))
    assert chk.on_commit("v0", b1, fx.cert(b1), 1) == []
    found = chk.on_commit("v1", other, fx.cert(other), 2)
    assert [v.kind for v in found] == ["agreement"]
    assert "v0" in found[0].detail and found[0].node == "v1"


def test_safety_checker_catches_bad_certificates(fx: Fixture) -> None:
    chk = fx.checker()
    b1 = fx.block(1, GENESIS_PREV)
    too_few = fx.cert(b1, NODES[:3])
    assert [v.kind for v in chk.on_commit("v0", b1, too_few, 1)] == ["certificate"]
    chk = fx.checker()
    forged = fx.cert(b1)
    forged = replace(forged, votes=(*forged.votes[:3], Vote("v4", bytes(64))))
    assert [v.kind for v in chk.on_commit("v0", b1, forged, 1)] == ["certificate"]
    chk = fx.checker()
    other = fx.block(1, GENESIS_PREV, (fx.tx(9),))
    assert [v.kind for v in chk.on_commit("v0", b1, fx.cert(other), 1)] == ["certificate"]


def test_safety_checker_catches_broken_chains(fx: Fixture) -> None:
    chk = fx.checker()
    b1 = fx.block(1, GENESIS_PREV, time_ms=50)
    b2_bad_prev = fx.block(2, bytes(32), time_ms=60)
    assert chk.on_commit("v0", b1, fx.cert(b1), 1) == []
    assert [v.kind for v in chk.on_commit("v0", b2_bad_prev, fx.cert(b2_bad_prev), 2)] == ["chain"]
    chk = fx.checker()
    b2 = fx.block(2, b1.hash, time_ms=60)
    assert [v.kind for v in chk.on_commit("v0", b2, fx.cert(b2), 1)] == ["chain"]  # skipped h=1
    chk = fx.checker()
    assert chk.on_commit("v0", b1, fx.cert(b1), 1) == []
    b2_early = fx.block(2, b1.hash, time_ms=40)
    assert [v.kind for v in chk.on_commit("v0", b2_early, fx.cert(b2_early), 2)] == ["chain"]


def test_safety_checker_catches_forged_transactions_and_wrong_proposers(fx: Fixture) -> None:
    chk = fx.checker()
    bad_sig = fx.block(1, GENESIS_PREV, (fx.tx(1, sign=False),))
    found = chk.on_commit("v0", bad_sig, fx.cert(bad_sig), 1)
    assert [v.kind for v in found] == ["validity"] and "signature" in found[0].detail
    chk = fx.checker()
    stranger = fx.block(1, GENESIS_PREV, (fx.tx(1, sender="mallory").signed(fx.client),))
    assert [v.kind for v in chk.on_commit("v0", stranger, fx.cert(stranger), 1)] == ["validity"]
    chk = fx.checker()
    usurper = fx.block(1, GENESIS_PREV, proposer="v3")
    assert [v.kind for v in chk.on_commit("v0", usurper, fx.cert(usurper), 1)] == ["validity"]


def test_vote_checker_catches_an_honest_replica_signing_twice(fx: Fixture) -> None:
    chk = fx.checker()
    assert chk.on_vote("v1", "commit", 0, 5, b"a" * 32, 1) == []
    assert chk.on_vote("v1", "commit", 0, 5, b"a" * 32, 2) == []  # resending is fine
    assert chk.on_vote("v1", "commit", 1, 5, b"b" * 32, 3) == []  # another view is fine
    assert chk.on_vote("v2", "commit", 0, 5, b"b" * 32, 3) == []  # another node is fine
    found = chk.on_vote("v1", "commit", 0, 5, b"b" * 32, 4)
    assert [v.kind for v in found] == ["equivocation"]
    chk.forget_votes_below(6)
    assert chk.on_vote("v1", "commit", 0, 5, b"c" * 32, 5) == []


def test_liveness_bound_constant_and_doubling() -> None:
    assert LIVENESS_TIMEOUT_MULTIPLE == 10
    assert liveness_bound_ms(1000, 0) == 10_000
    assert liveness_bound_ms(1000, 1) == 12_000
    assert liveness_bound_ms(1000, 3) == 10_000 + 2_000 + 4_000 + 8_000
    assert liveness_bound_ms(500, -2) == 5_000


def test_liveness_checker_passes_timely_commits_and_flags_late_or_missing_ones() -> None:
    lc = LivenessChecker(base_timeout_ms=1000)
    a, b, c = b"a" * 32, b"b" * 32, b"c" * 32
    lc.submitted(a, 100)
    lc.submitted(b, 5_000)
    lc.submitted(c, 6_000)
    lc.view_seen(0)
    for node in ("v1", "v2"):
        lc.committed(node, [a], 3_000, view=0)
        lc.committed(node, [b], 15_000, view=0)  # deadline max(5000, 4000) + 10000 = 15000
    lc.committed("v1", [c], 6_500, view=0)
    assert lc.pending(["v1", "v2"]) == 1
    found = lc.finish(last_heal_ms=4_000, honest=["v1", "v2"])
    assert len(found) == 1 and found[0].kind == "liveness" and found[0].node == "v2"
    assert "never" in found[0].detail
    late = LivenessChecker(base_timeout_ms=1000)
    late.submitted(a, 0)
    late.committed("v1", [a], 10_001, view=0)
    assert [v.kind for v in late.finish(last_heal_ms=0, honest=["v1"])] == ["liveness"]


def test_liveness_checker_allows_for_failed_view_changes() -> None:
    lc = LivenessChecker(base_timeout_ms=1000)
    lc.submitted(b"a" * 32, 0)
    for v in (0, 1, 2, 3):
        lc.view_seen(v)
    lc.committed("v1", [b"a" * 32], 23_000, view=3)  # views 1 and 2 failed: + 2000 + 4000
    assert lc.failed_view_changes == 2
    assert lc.bound_ms() == 16_000
    assert [v.kind for v in lc.finish(last_heal_ms=7_000, honest=["v1"])] == []
    assert [v.kind for v in lc.finish(last_heal_ms=6_999, honest=["v1"])] == ["liveness"]


# ---------------------------------------------------------------------------------------
# Whole runs against the real core
# ---------------------------------------------------------------------------------------


def _failures(results: list[SeedResult]) -> str:
    return "\n".join(failure_line(r) for r in results if not r.ok)


def _faulty(result: SeedResult) -> str:
    found = re.search(r" by (v\d+)", result.detail)
    assert found, result.detail
    return found.group(1)


def _run(seeds: range, kind: str, behaviour: str | None = None) -> list[SeedResult]:
    return [run_seed(s, kind, behaviour=behaviour) for s in seeds]


# make test: 100 crash + 100 network + 12 × 8 Byzantine + 10 fault-free = 306 seeds.
@pytest.mark.parametrize("kind", ["crash", "network"])
@pytest.mark.parametrize("start", [0, 25, 50, 75])
def test_seeds_crash_and_network(kind: str, start: int) -> None:
    results = _run(range(start, start + 25), kind)
    assert all(r.faults == kind for r in results)
    assert not _failures(results), _failures(results)
    assert sum(r.committed_height for r in results) > 0


@pytest.mark.parametrize("behaviour", BYZANTINE_BEHAVIOURS)
def test_seeds_byzantine(behaviour: str) -> None:
    results = _run(range(1000, 1012), "byzantine", behaviour)
    assert all(behaviour in r.detail for r in results)
    assert not _failures(results), _failures(results)
    # the adversary really acted, and the honest replicas noticed where they can
    assert all(r.adversary_actions > 0 for r in results if behaviour != "silent_primary")
    if behaviour in ("equivocate", "double_vote", "forged_tx", "twins"):
        assert sum(r.evidence for r in results) > 0
    if behaviour in ("equivocate", "silent_primary", "forged_tx"):
        # the faulty primary (of view 0, or of view 1 after a cut-off) was replaced
        for r in results:
            assert r.max_view >= (1 if _faulty(r) == "v0" else 2), r.summary()
        assert {_faulty(r) for r in results} == {"v0", "v1"}


#: Seeds that once broke the core (see the simulator findings); they must stay green.
REGRESSIONS = [
    # F1: a new primary re-proposed a transaction already in the block it built on
    (46, "crash", None),
    (269, "network", None),
    (463, "crash", None),
    # F5: a late commit with twins of the first primary and a validator-set change
    (22997, "byzantine", None),
    # a PRE-PREPARE buffered by a partitioned replica in view 0 was judged after it had
    # committed the parent height, by catch-up, from a later view: honest primary blamed
    (50897, "network", None),
    (51792, "network", None),
    # F6: with validator sets learnt as the chain grows, replicas judged proposals
    # above the sets they knew with the old set, and reported honest primaries
    (627, "network", None),
    (287, "byzantine", None),
    (307, "byzantine", None),
]


@pytest.mark.parametrize(("seed", "kind", "behaviour"), REGRESSIONS)
def test_regression_seeds(seed: int, kind: str, behaviour: str | None) -> None:
    result = run_seed(seed, kind, behaviour=behaviour)
    assert result.ok, failure_line(result)


def test_f2_one_double_voting_backup_does_not_force_a_view_change() -> None:
    """F2: a replica never PREPAREd h+1 when h committed without a local prepare, so
    one double-voting backup (v4) stalled the honest quorum and forced a view change."""
    plan = FaultPlan(
        kind="byzantine",
        byzantine=ByzantineFault("v4", "double_vote"),
        baseline=LinkProfile(1, 15),
    )
    result = run_seed(2017, config=SimConfig(reconfig_every=0), plan=plan)
    assert result.ok, failure_line(result)
    assert result.max_view == 0 and result.evidence > 0


def test_f3_a_replica_that_left_the_validator_set_catches_up_after_a_crash() -> None:
    """F3: v0 leaves the set at height 6, crashes, and must still follow the chain."""
    cfg = SimConfig(followers_must_catch_up=True)
    result = run_seed(22, "crash", config=cfg)
    assert "validator set changes" in result.detail
    assert result.ok, failure_line(result)


@pytest.mark.parametrize(
    ("seed", "behaviour"),
    [(32, "restart_twin"), (92, "restart_twin"), (97, "twins"), (157, "equivocate")],
)
def test_f4_no_evidence_against_an_honest_primary_after_a_set_change(
    seed: int, behaviour: str
) -> None:
    """F4: in view 1 the faulty v1 proposes heights < 6 and honest v2 heights >= 6."""
    result = run_seed(seed, "byzantine", behaviour=behaviour)
    assert _faulty(result) == "v1" and "validator set changes" in result.detail
    assert result.ok, failure_line(result)


def test_seeds_without_faults_commit_everything_in_view_0() -> None:
    results = _run(range(10), "none")
    assert not _failures(results), _failures(results)
    for r in results:
        assert r.txs_committed == r.txs_submitted > 0
        assert r.max_view == 0
        assert r.evidence == 0


def test_seeds_that_learn_the_validator_sets_follow_the_seed() -> None:
    cfg = SimConfig(txs_per_client=1, invalid_txs=0)
    learnt = "validator sets learnt as the chain grows"
    assert learnt in run_seed(7, "none", config=cfg).detail
    assert learnt not in run_seed(6, "none", config=cfg).detail
    assert learnt not in run_seed(7, "none", config=replace(cfg, learn_sets_every=0)).detail


def test_scheme_and_wire_choice_follow_the_seed() -> None:
    cfg = SimConfig(txs_per_client=1, invalid_txs=0)
    assert run_seed(9, "none", config=cfg).scheme == "ed25519+wire"
    assert run_seed(19, "none", config=cfg).scheme == "ed25519"
    assert run_seed(3, "none", config=cfg).scheme == "fast-sim+wire"
    assert run_seed(4, "none", config=cfg).scheme == "fast-sim"


def test_all_resolves_to_every_kind_and_replays_as_that_kind() -> None:
    kinds = {resolve_kind(s, "all") for s in range(30)}
    assert kinds == set(FAULT_KINDS)
    seed = next(s for s in range(30) if resolve_kind(s, "all") == "byzantine")
    via_all = run_seed(seed, "all")
    assert via_all.faults == "byzantine"
    assert run_seed(seed, "byzantine") == via_all
    assert via_all.replay_command() == (
        f"wulian simulate --seeds 1 --seed-start {seed} --faults byzantine"
    )
    with pytest.raises(ValueError):
        resolve_kind(1, "meteor")


@pytest.mark.parametrize(
    ("seed", "kind"), [(5, "crash"), (7, "network"), (2, "byzantine"), (9, "crash")]
)
def test_same_seed_same_trace(seed: int, kind: str) -> None:
    first, second = run_seed(seed, kind), run_seed(seed, kind)
    assert first == second
    assert first.trace_hash == second.trace_hash
    assert first.events > 100


def test_trace_does_not_depend_on_the_string_hash_seed() -> None:
    """No set/dict-order dependence: other PYTHONHASHSEEDs give the same trace."""
    code = (
        "from consensus.sim.runner import run_seed; "
        "r = run_seed(11, 'byzantine', behaviour='twins'); print(r.trace_hash, r.ok)"
    )
    outputs = set()
    for hash_seed in ("0", "1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        outputs.add(done.stdout.strip())
    assert len(outputs) == 1, outputs
    assert outputs.pop().endswith(" True")


def test_different_seeds_give_different_traces() -> None:
    hashes = {run_seed(s, "network").trace_hash for s in range(4)}
    assert len(hashes) == 4


def test_run_many_streams_in_order() -> None:
    results = list(run_many(range(3), "none", config=SimConfig(txs_per_client=1)))
    assert [r.seed for r in results] == [0, 1, 2]


# ---------------------------------------------------------------------------------------
# The checkers catch deliberately broken replicas
# ---------------------------------------------------------------------------------------


class Tampered:
    """A real replica whose Ready output (or inputs) a test function rewrites."""

    def __init__(
        self,
        inner: ReplicaLike,
        config: ReplicaConfig,
        rewrite: Callable[[Tampered, Ready], Ready],
    ) -> None:
        self.inner = inner
        self.config = config
        self.rewrite = rewrite
        self.now = 0
        self._taken: Ready | None = None

    @property
    def view(self) -> int:
        return self.inner.view

    def step(self, msg: Message) -> None:
        self.inner.step(msg)

    def submit(self, txs: Sequence[Transaction]) -> list[SubmitResult]:
        return self.inner.submit(txs)

    def tick(self, now_ms: int) -> None:
        self.now = now_ms - EPOCH_MS
        self.inner.tick(now_ms)

    def has_ready(self) -> bool:
        return self.inner.has_ready()

    def ready(self) -> Ready:
        self._taken = self.inner.ready()
        return self.rewrite(self, self._taken)

    def advance(self, ready: Ready) -> None:
        assert self._taken is not None
        self.inner.advance(self._taken)


def tampering(
    nodes: set[str], rewrite: Callable[[Tampered, Ready], Ready]
) -> Callable[[ReplicaConfig, SimApplication, DurableState | None], ReplicaLike]:
    def factory(
        config: ReplicaConfig, app: SimApplication, durable: DurableState | None
    ) -> ReplicaLike:
        inner = real_replica(config, app, durable)
        return Tampered(inner, config, rewrite) if config.node_id in nodes else inner

    return factory


def _other_block(block: Block) -> Block:
    h = block.header
    return build_block(
        channel=h.channel,
        height=h.height,
        prev_hash=h.prev_hash,
        transactions=block.transactions,
        state_height=h.state_height,
        state_root=h.state_root,
        proposer=h.proposer,
        view=h.view,
        time_ms=h.time_ms + 1,
    )


def test_checker_catches_a_replica_committing_a_different_block() -> None:
    def fork_at_2(t: Tampered, rd: Ready) -> Ready:
        committed = tuple(
            (_other_block(b), c) if b.height == 2 else (b, c) for b, c in rd.committed
        )
        return replace(rd, committed=committed)

    result = run_seed(0, "none", replica_factory=tampering({"v3"}, fork_at_2))
    kinds = {v.kind for v in result.violations}
    assert {"agreement", "certificate"} <= kinds, result.violations
    assert all(v.node == "v3" for v in result.violations)
    assert not result.ok


def test_checker_catches_a_forged_transaction_in_a_committed_block() -> None:
    def smuggle(t: Tampered, rd: Ready) -> Ready:
        out = []
        for b, c in rd.committed:
            if b.transactions:
                forged = replace(b.transactions[0], nonce=99_999)  # signature no longer fits
                h = b.header
                b = build_block(
                    channel=h.channel, height=h.height, prev_hash=h.prev_hash,
                    transactions=(*b.transactions, forged), state_height=h.state_height,
                    state_root=h.state_root, proposer=h.proposer, view=h.view,
                    time_ms=h.time_ms,
                )  # fmt: skip
            out.append((b, c))
        return replace(rd, committed=tuple(out))

    result = run_seed(1, "none", replica_factory=tampering({"v1"}, smuggle))
    assert "validity" in {v.kind for v in result.violations}, result.violations
    assert any("signature" in v.detail for v in result.violations)


def test_checker_catches_an_honest_replica_signing_two_votes_for_one_slot() -> None:
    def double_prepare(t: Tampered, rd: Ready) -> Ready:
        extra = []
        for out in rd.messages:
            m = out.message
            if isinstance(m, Prepare) and m.height == 3:
                other = sign(replace(m, block_hash=bytes(32)), t.config.signer)
                extra.append(Outbound(None, other))
        return replace(rd, messages=(*rd.messages, *extra))

    result = run_seed(2, "none", replica_factory=tampering({"v2"}, double_prepare))
    assert [v.kind for v in result.violations] == ["equivocation"], result.violations
    assert result.violations[0].node == "v2"
    assert "prepare" in result.violations[0].detail


def test_checker_catches_lost_liveness() -> None:
    def mute_after_1500(t: Tampered, rd: Ready) -> Ready:
        return replace(rd, messages=()) if t.now >= 1500 else rd

    result = run_seed(3, "none", replica_factory=tampering(set(NODES), mute_after_1500))
    assert {v.kind for v in result.violations} == {"liveness"}, result.violations
    # the run ends at the liveness deadline, not at the horizon
    bound = liveness_bound_ms(DEFAULT_CONFIG.base_timeout_ms, result.max_view)
    assert result.end_ms <= DEFAULT_CONFIG.submit_window_ms + bound + 200
    assert result.end_ms < DEFAULT_CONFIG.horizon_ms


def test_checker_reports_an_exception_from_the_core() -> None:
    def explode(t: Tampered, rd: Ready) -> Ready:
        if t.now >= 700:
            raise InternalError("boom")
        return rd

    result = run_seed(4, "none", replica_factory=tampering({"v4"}, explode))
    assert [v.kind for v in result.violations] == ["exception"]
    assert "InternalError: boom" in result.violations[0].detail


def test_durability_matters_an_amnesiac_restart_is_caught() -> None:
    """Restarting replicas WITHOUT their durable state must break a crash seed."""

    def amnesiac(
        config: ReplicaConfig, app: SimApplication, durable: DurableState | None
    ) -> ReplicaLike:
        return real_replica(config, app, None)

    caught = None
    for seed in AMNESIA_SEEDS:  # stops at the first seed that notices
        result = run_seed(seed, "crash", replica_factory=amnesiac)
        if not result.ok:
            caught = result
            break
    assert caught is not None, "no crash seed noticed that restarted replicas forgot their votes"
    assert "equivocation" in {v.kind for v in caught.violations}, caught.violations


# ---------------------------------------------------------------------------------------
# The CLI
# ---------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wulian")
    simulate_cmd.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_parses_and_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(
        ["simulate", "--seeds", "3", "--seed-start", "7", "--faults", "crash", "--jobs", "2"]
    )
    assert (args.seeds, args.seed_start, args.faults, args.jobs) == (3, 7, "crash", 2)
    for bad in (["--seeds", "0"], ["--seeds", "x"], ["--seeds", "1", "--faults", "fire"]):
        with pytest.raises(SystemExit) as exc:
            _parser().parse_args(["simulate", *bad])
        assert exc.value.code == 2
    capsys.readouterr()


def test_cli_passing_run_prints_only_the_summary() -> None:
    out = io.StringIO()
    assert simulate_cmd.simulate(range(20, 23), "all", 1, out=out) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("simulated 3 seeds (20..22, faults=all")
    assert "3 passed, 0 failed" in lines[0]


def test_cli_prints_each_failing_seed_with_its_replay_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def mute(t: Tampered, rd: Ready) -> Ready:
        return replace(rd, messages=()) if t.now >= 500 else rd

    def broken_run_seed(seed: int, faults: str) -> SeedResult:
        factory = tampering(set(NODES), mute) if seed % 2 else real_replica
        return run_seed(seed, faults, replica_factory=factory)

    monkeypatch.setattr(simulate_cmd, "run_seed", broken_run_seed)
    out = io.StringIO()
    assert simulate_cmd.simulate(range(4, 8), "network", 1, out=out) == 1
    lines = out.getvalue().splitlines()
    fails = [line for line in lines if line.startswith("FAIL")]
    assert [int(line.split()[2]) for line in fails] == [5, 7]
    assert fails[0].endswith("replay: wulian simulate --seeds 1 --seed-start 5 --faults network")
    assert lines[-1].startswith("simulated 4 seeds") and "2 passed, 2 failed" in lines[-1]


def test_cli_jobs_give_the_same_results_as_one_process() -> None:
    one, two = io.StringIO(), io.StringIO()
    simulate_cmd.simulate(range(30, 34), "byzantine", 1, verbose=True, out=one)
    simulate_cmd.simulate(range(30, 34), "byzantine", 2, verbose=True, out=two)
    assert one.getvalue().splitlines()[:-1] == two.getvalue().splitlines()[:-1]
    assert len(one.getvalue().splitlines()) == 5


# ---------------------------------------------------------------------------------------
# Soak (make soak)
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("start", range(0, 3000, 100))
def test_soak_thousands_of_seeds(start: int) -> None:
    results = list(run_many(range(10_000 + start, 10_000 + start + 100), "all"))
    assert not _failures(results), _failures(results)
