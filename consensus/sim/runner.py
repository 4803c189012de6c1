"""Run one seed: n replicas, clients, faults, virtual time, checkers. ``run_seed`` is pure.

A seed fixes everything: which fault kind (for ``faults="all"``), the fault plan, keys,
the signature scheme (real ed25519 for every :attr:`SimConfig.ed25519_every`-th seed,
the fast keyed-hash stand-in otherwise), clock skews, client traffic and every network
decision. The same ``(seed, faults, config)`` gives the same :class:`SeedResult`,
including :attr:`SeedResult.trace_hash`, a digest of every event in order.

The loop follows the Replica contract in the node's order: after every input
(``tick``/``step``/``submit``) the host drains ``ready()``: it stores ``persist`` (as
bytes, the way a node would), sends the FETCHes, proposals and votes through the
network model (and, for a faulty replica, through its
:class:`~consensus.sim.byzantine.Adversary`), stores and applies ``committed`` blocks
(the checkers see each commit of an honest replica), sends the rest of ``messages``,
then calls ``advance``.

A crash throws away the replica object (volatile state) and keeps the persisted bytes
and the committed chain; a restart rebuilds the replica from them. Crashes may hit
between events or in the middle of a Ready (after persisting; after the votes left,
before the committed blocks are stored; or after storing them, before the rest is
sent).

Phases: clients submit valid (and a few invalid) transactions during
``submit_window_ms``, resubmitting to another replica every ``retry_ms`` until one
honest replica has committed them; faults happen and are healed by the plan's
``heal_ms``; the run ends once every valid transaction is committed on every honest
replica (plus ``settle_ms``), or at the liveness deadline, or at ``horizon_ms``.

Every ``reconfig_every``-th seed also changes the validator set at
``reconfig_height`` (v0 leaves, a sixth replica joins), so quorums, primaries and
certificates must follow ``validators_at(height)``. Broadcasts (``Outbound.to=None``)
reach every replica of the channel, members of the current set or not.

Checks (a failed one is a :class:`~consensus.sim.checkers.Violation` in the result):
the safety checks of :class:`~consensus.sim.checkers.SafetyChecker` on every commit
and every PRE-PREPARE/PREPARE/COMMIT an honest replica sends; ``false-evidence``
(an honest replica reports misbehaviour by another honest one); ``admission`` (an
honest replica accepts an invalid transaction); ``exception`` (the core raised);
``wire`` (a message does not survive encode/decode); ``runaway`` (more than
``max_events`` events); liveness at the end; and ``forced-view-change`` (a lone
faulty backup on a calm network moved an honest replica out of view 0).
"""

from __future__ import annotations

import hashlib
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

from consensus.config import ReplicaConfig
from consensus.durable import DurableState
from consensus.mempool import SubmitResult
from consensus.messages import (
    Commit,
    Message,
    NewView,
    Prepare,
    PrePrepare,
    decode_message,
    encode_message,
)
from consensus.replica import (
    SEND_AFTER_STORE,
    SEND_BEFORE_PERSIST,
    SEND_BEFORE_STORE,
    Ready,
    Replica,
    send_stage,
)
from consensus.sim.app import TX_TYPE, SimApplication, ValidatorSchedule, check_sim_tx
from consensus.sim.byzantine import (
    Adversary,
    AdversaryContext,
    TwinRouting,
    make_adversary,
)
from consensus.sim.checkers import LivenessChecker, SafetyChecker, Violation
from consensus.sim.faults import (
    CRASH_POINTS,
    FAULT_KINDS,
    CrashFault,
    FaultPlan,
    FaultWindow,
    make_plan,
)
from consensus.sim.network import Network
from consensus.sim.prng import Prng
from consensus.sim.scheduler import Scheduler
from consensus.verification import SignatureCache
from consensus.viewchange import Context
from ledger.blocks import Transaction, channel_genesis_hash
from ledger.certificate import Validator, ValidatorSet
from ledger.crypto import ED25519, FastScheme, SignatureScheme, Signer
from ledger.hashing import TAG_TX

CHANNEL: Final = "sim"
#: Virtual clocks start here (so skewed clocks never go below zero).
EPOCH_MS: Final = 1_000_000
TWIN_SUFFIX: Final = "~twin"
#: Byzantine behaviours that, run by a backup on a calm network, must not cause a view
#: change ("no view change is forced by one faulty node").
BACKUP_ONLY_BEHAVIOURS: Final = frozenset({"double_vote", "forge_signature", "replay"})


class ReplicaLike(Protocol):
    """What the simulator drives: :class:`consensus.replica.Replica`, or a test double."""

    @property
    def view(self) -> int: ...

    def step(self, msg: Message) -> None: ...

    def submit(self, txs: Sequence[Transaction]) -> list[SubmitResult]: ...

    def tick(self, now_ms: int) -> None: ...

    def has_ready(self) -> bool: ...

    def ready(self) -> Ready: ...

    def advance(self, ready: Ready) -> None: ...


#: Builds a replica from its config, its app (committed chain) and its durable state.
ReplicaFactory = Callable[[ReplicaConfig, SimApplication, "DurableState | None"], ReplicaLike]


def real_replica(
    config: ReplicaConfig, app: SimApplication, durable: DurableState | None
) -> ReplicaLike:
    """The production replica, restarted from ``app``'s committed head and ``durable``."""
    return Replica(
        config,
        app,
        committed_height=app.height,
        committed_hash=app.head_hash,
        committed_time_ms=app.head_time_ms,
        durable=durable,
    )


@dataclass(frozen=True)
class SimConfig:
    """The shape of every seed's scenario (tune the lengths for speed)."""

    n: int = 5
    clients: int = 3
    txs_per_client: int = 5
    invalid_txs: int = 2
    submit_window_ms: int = 3_000
    fault_window: FaultWindow = field(default_factory=FaultWindow)
    tick_ms: int = 20
    base_timeout_ms: int = 1_000
    retry_ms: int = 2_000
    settle_ms: int = 600
    horizon_ms: int = 120_000
    #: A run that needs more events than this is a message storm: reported, then stopped.
    max_events: int = 300_000
    clock_skew_ms: int = 40
    #: Every k-th seed (seed % k == k − 1) signs with real ed25519; 0 = never.
    ed25519_every: int = 10
    #: Seeds with seed % k == 2 change the validator set at ``reconfig_height``: v0
    #: leaves, a sixth replica joins (0 = never).
    reconfig_every: int = 5
    reconfig_height: int = 6
    #: Liveness also requires replicas outside the latest validator set (one that left)
    #: to catch up with every committed transaction.
    followers_must_catch_up: bool = False
    #: Every k-th seed (seed % k == 0) sends every message as bytes through
    #: encode_message/decode_message (the others hand the frozen object over); 0 = never.
    wire_every: int = 3
    #: Every k-th seed (seed % k == 1) catches up in requests of two blocks, two in
    #: flight (``fetch_batch`` 2, ``fetch_parallel`` 2); 0 = never.
    parallel_fetch_every: int = 2
    #: Every k-th seed (seed % k == 0) ticks a quiescent replica only when its STATUS
    #: is due, as the node's driver does (``Replica.quiescent``); 0 = never.
    quiet_ticks_every: int = 2
    #: Every k-th seed (seed % k == 3) runs its replicas with window 2 and
    #: ``activation_delay`` 2, every block (null blocks too) taken for one that may
    #: change the validator set, and applications that learn the schedule only as the
    #: chain reaches it (``SimApplication.known_ahead``): votes, VIEW-CHANGEs,
    #: NEW-VIEWs and catch-up blocks above the known sets wait for the blocks below;
    #: 0 = never.
    learn_sets_every: int = 4


DEFAULT_CONFIG: Final = SimConfig()
#: Window and activation delay of the seeds that learn the validator sets as they go.
LEARN_SETS_DELAY: Final = 2


@dataclass(frozen=True)
class SeedResult:
    """What one seed did, and what (if anything) it broke."""

    seed: int
    faults: str
    detail: str
    scheme: str
    violations: tuple[Violation, ...]
    trace_hash: str
    end_ms: int
    committed_height: int
    txs_submitted: int
    txs_committed: int
    max_view: int
    events: int
    messages: int
    evidence: int
    #: Messages the Byzantine replica(s) rewrote, dropped or injected.
    adversary_actions: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def replay_command(self) -> str:
        return f"wulian simulate --seeds 1 --seed-start {self.seed} --faults {self.faults}"

    def summary(self) -> str:
        status = "ok" if self.ok else f"FAILED ({len(self.violations)} violations)"
        return (
            f"seed {self.seed} [{self.faults}: {self.detail}; {self.scheme}] {status}: "
            f"height {self.committed_height}, {self.txs_committed}/{self.txs_submitted} txs, "
            f"view {self.max_view}, {self.events} events, {self.messages} messages, "
            f"{self.evidence} evidence, ended at {self.end_ms} ms"
        )


def resolve_kind(seed: int, faults: str) -> str:
    """``all`` picks a fault kind from the seed; a named kind is returned as is."""
    if faults == "all":
        return FAULT_KINDS[Prng(seed).fork("kind").below(len(FAULT_KINDS))]
    if faults not in (*FAULT_KINDS, "none"):
        raise ValueError(f"unknown fault kind {faults!r}")
    return faults


def run_seed(
    seed: int,
    faults: str = "all",
    *,
    config: SimConfig = DEFAULT_CONFIG,
    behaviour: str | None = None,
    plan: FaultPlan | None = None,
    trace: list[str] | None = None,
    replica_factory: ReplicaFactory = real_replica,
) -> SeedResult:
    """Run one deterministic scenario.

    ``behaviour`` picks the Byzantine behaviour (else the seed does); ``plan`` replaces
    the drawn fault plan; ``trace`` receives the notable events as text lines;
    ``replica_factory`` substitutes the replica (tests feed the checkers broken ones).
    """
    kind = resolve_kind(seed, faults) if plan is None else plan.kind
    sim = _Simulation(seed, kind, config, behaviour, plan, trace, replica_factory)
    return sim.run()


def run_many(
    seeds: Iterable[int],
    faults: str = "all",
    *,
    config: SimConfig = DEFAULT_CONFIG,
) -> Iterator[SeedResult]:
    """Run seeds one after another, yielding each result as it is ready (streaming)."""
    for seed in seeds:
        yield run_seed(seed, faults, config=config)


# ---------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tick:
    inst: str


@dataclass(frozen=True, slots=True)
class _Deliver:
    src: str
    inst: str
    message: Message


@dataclass(frozen=True, slots=True)
class _Submit:
    tx_index: int
    attempt: int


@dataclass(frozen=True, slots=True)
class _Crash:
    inst: str
    point: str
    force: bool = False


@dataclass(frozen=True, slots=True)
class _Restart:
    inst: str


@dataclass(frozen=True, slots=True)
class _SpawnTwin:
    node: str


@dataclass(frozen=True, slots=True)
class _NetChange:
    """Re-apply the network faults in force at this time."""


_Event = _Tick | _Deliver | _Submit | _Crash | _Restart | _SpawnTwin | _NetChange


def _ticker(clock_ms: int) -> Callable[[ReplicaLike], None]:
    return lambda r: r.tick(clock_ms)


def _event_key(event: _Event) -> bytes:
    """A compact, deterministic fingerprint of an event for the trace hash."""
    if isinstance(event, _Deliver):
        m = event.message
        return f"D{event.src}>{event.inst}:{m.kind}:{m.signature[:6].hex()};".encode()
    if isinstance(event, _Tick):
        return f"T{event.inst};".encode()
    return f"{event!r};".encode()


@dataclass
class _Host:
    """One running copy of a replica (twins: two hosts share a node id and key)."""

    inst: str
    node: str
    config: ReplicaConfig
    app: SimApplication
    honest: bool
    skew_ms: int
    adversary: Adversary | None = None
    replica: ReplicaLike | None = None
    durable: bytes | None = None
    pending_crash: str | None = None
    crashes: int = 0


@dataclass
class _ClientTx:
    tx: Transaction
    valid: bool
    first_submit_ms: int | None = None
    done: bool = False


class _StopRun(Exception):
    pass


class _Simulation:
    def __init__(
        self,
        seed: int,
        kind: str,
        config: SimConfig,
        behaviour: str | None,
        plan: FaultPlan | None,
        trace: list[str] | None,
        replica_factory: ReplicaFactory,
    ) -> None:
        self.factory = replica_factory
        self.seed = seed
        every = config.parallel_fetch_every
        self._parallel_fetch = every > 0 and seed % every == 1 % every
        self.kind = kind
        self.cfg = config
        self.root = Prng(seed)
        self.trace = trace
        self._hash = hashlib.sha256(f"wulian-sim/{seed}/{kind}".encode())
        self.sched: Scheduler[_Event] = Scheduler(0)
        self.violations: list[Violation] = []
        self.messages_sent = 0
        self.evidence = 0

        use_ed25519 = config.ed25519_every > 0 and seed % config.ed25519_every == (
            config.ed25519_every - 1
        )
        self.scheme: SignatureScheme = ED25519 if use_ed25519 else FastScheme()
        self.wire = config.wire_every > 0 and seed % config.wire_every == 0
        self.quiet_ticks = config.quiet_ticks_every > 0 and seed % config.quiet_ticks_every == 0
        every = config.learn_sets_every
        self.learn_sets = every > 0 and seed % every == 3 % every
        self.reconfig = config.reconfig_every > 0 and seed % config.reconfig_every == 2
        # With a reconfiguration, replica v{n} starts outside the set and replaces v0
        # from reconfig_height on (v0 then follows the chain without voting).
        self.nodes = tuple(f"v{i}" for i in range(config.n + (1 if self.reconfig else 0)))
        keys = self.root.fork("keys")
        signers: dict[str, Signer] = {
            n: self.scheme.signer_from_seed(keys.draw_bytes(32)) for n in self.nodes
        }
        self.signers = signers

        def vset(names: Iterable[str]) -> ValidatorSet:
            return ValidatorSet(tuple(Validator(n, signers[n].public_key) for n in names))

        first = self.nodes[: config.n]
        if self.reconfig:
            later = (*first[1:], self.nodes[config.n])
            self.schedule = ValidatorSchedule(
                ((0, vset(first)), (config.reconfig_height, vset(later)))
            )
        else:
            self.schedule = ValidatorSchedule.fixed(vset(first))
        self.client_signers = {
            f"c{i}": self.scheme.signer_from_seed(keys.draw_bytes(32))
            for i in range(config.clients)
        }
        self.clients = {c: s.public_key for c, s in self.client_signers.items()}
        self.network_id = hashlib.sha256(b"wulian-sim-network" + seed.to_bytes(8, "big")).digest()
        self.genesis_prev = channel_genesis_hash(self.network_id, CHANNEL)

        self.plan = plan or make_plan(
            kind, self.root.fork("faults"), self.nodes, config.fault_window, behaviour=behaviour
        )
        self.faulty = self.plan.faulty
        self.net = Network(self.nodes, self.root.fork("network"), self.plan.baseline)
        self.prng_clients = self.root.fork("clients")

        def tx_rule(tx: Transaction) -> str | None:
            return check_sim_tx(tx, network=self.network_id, channel=CHANNEL, clients=self.clients)

        self.safety = SafetyChecker(
            channel=CHANNEL,
            genesis_prev_hash=self.genesis_prev,
            validators_at=self.schedule.at,
            scheme=self.scheme,
            tx_rule=tx_rule,
        )
        self.liveness = LivenessChecker(config.base_timeout_ms)

        self.hosts: dict[str, _Host] = {}
        self.instances: dict[str, list[str]] = {n: [] for n in self.nodes}
        skews = self.root.fork("skew")
        for node in self.nodes:
            self._add_host(node, node, self._new_app(), skews.between(0, 2 * config.clock_skew_ms))
        self.txs: list[_ClientTx] = []
        self.last_heal_ms = self.plan.heal_ms
        self.stop_at: int | None = None
        self._check_due = 0

    # -- setup ---------------------------------------------------------------------

    def _new_app(self) -> SimApplication:
        return SimApplication(
            channel=CHANNEL,
            network=self.network_id,
            schedule=self.schedule,
            clients=self.clients,
            known_ahead=LEARN_SETS_DELAY + 1 if self.learn_sets else None,
        )

    def _replica_config(self, node: str) -> ReplicaConfig:
        return ReplicaConfig(
            node_id=node,
            channel=CHANNEL,
            signer=self.signers[node],
            scheme=self.scheme,
            genesis_prev_hash=self.genesis_prev,
            base_timeout_ms=self.cfg.base_timeout_ms,
            fetch_batch=2 if self._parallel_fetch else ReplicaConfig.fetch_batch,
            fetch_parallel=2 if self._parallel_fetch else ReplicaConfig.fetch_parallel,
            **self._learn_sets_options(),
        )

    def _learn_sets_options(self) -> dict[str, Any]:
        if not self.learn_sets:
            return {}
        return {
            "window": LEARN_SETS_DELAY,
            "activation_delay": LEARN_SETS_DELAY,
            "config_tx_types": None,  # the app learns from null blocks too
        }

    def _add_host(self, inst: str, node: str, app: SimApplication, skew: int) -> _Host:
        host = _Host(
            inst=inst,
            node=node,
            config=self._replica_config(node),
            app=app,
            honest=node not in self.faulty,
            skew_ms=skew,
        )
        self.hosts[inst] = host
        self.instances[node].append(inst)
        return host

    def _adversary_context(self, node: str) -> AdversaryContext:
        host = self.hosts[node]
        return AdversaryContext(
            node_id=node,
            channel=CHANNEL,
            signer=self.signers[node],
            peers=tuple(n for n in self.nodes if n != node),
            network_id=self.network_id,
            clients=self.clients,
            view_context=Context(
                channel=CHANNEL,
                genesis_prev_hash=self.genesis_prev,
                window=host.config.window,
                validators_at=host.app.validators_at,
                state_root_at=host.app.state_root_at,
                sigs=SignatureCache(self.scheme, 4096),
            ),
        )

    def _setup(self) -> None:
        plan = self.plan
        byz = plan.byzantine
        if byz is not None:
            host = self.hosts[byz.node]
            ctx = self._adversary_context(byz.node)
            prng = self.root.fork("adversary", byz.node)
            if byz.behaviour == "twins":
                peers = list(ctx.peers)
                prng.shuffle(peers)
                overlap = 1 if prng.chance(0.5) else 0
                half = len(peers) // 2
                side_a = frozenset(peers[: half + overlap])
                side_b = frozenset(peers[half:])
                host.adversary = TwinRouting(ctx, prng.fork("a"), side_a, equivocate=0.3)
                twin = self._add_host(
                    byz.node + TWIN_SUFFIX, byz.node, self._new_app(), host.skew_ms + 7
                )
                twin.adversary = TwinRouting(ctx, prng.fork("b"), side_b, equivocate=0.3)
            else:
                host.adversary = make_adversary(byz.behaviour, ctx, prng)
            if byz.behaviour == "restart_twin":
                at = prng.between(400, 2_500)
                back = at + prng.between(200, 1_500)
                self.sched.at(at, _Crash(byz.node, prng.choice(CRASH_POINTS)))
                self.sched.at(back, _Restart(byz.node))
                self.sched.at(back, _SpawnTwin(byz.node))
        for crash in plan.crashes:
            self._schedule_crash(crash)
        change_points = sorted(
            {t for p in plan.partitions for t in (p.at_ms, p.until_ms)}
            | {t for lf in plan.links for t in (lf.at_ms, lf.until_ms)}
        )
        for t in change_points:
            self.sched.at(t, _NetChange())
        for inst, host in sorted(self.hosts.items()):
            host.replica = self._build_replica(host)
            self.sched.at(self.prng_clients.below(self.cfg.tick_ms), _Tick(inst))
        self._make_client_txs()

    def _schedule_crash(self, crash: CrashFault) -> None:
        self.sched.at(crash.at_ms, _Crash(crash.node, crash.point))
        self.sched.at(crash.restart_ms, _Restart(crash.node))

    def _make_client_txs(self) -> None:
        cfg, prng = self.cfg, self.prng_clients
        for client, signer in sorted(self.client_signers.items()):
            for k in range(cfg.txs_per_client):
                tx = Transaction(
                    self.network_id, CHANNEL, TX_TYPE, client, signer.public_key, k, 0, {"seq": k}
                ).signed(signer)
                self.txs.append(_ClientTx(tx, valid=True))
        for k in range(cfg.invalid_txs):
            client = prng.choice(sorted(self.client_signers))
            signer = self.client_signers[client]
            base = Transaction(
                self.network_id, CHANNEL, TX_TYPE, client, signer.public_key, 10_000 + k, 0,
                {"seq": k},
            )  # fmt: skip
            if k % 2 == 0:  # signature by another key
                other = self.client_signers[prng.choice(sorted(self.client_signers))]
                bad = replace(base, signature=other.sign(TAG_TX, base.body_bytes + b"x"))
            else:  # a sender nobody registered
                bad = replace(base, sender="mallory").signed(signer)
            self.txs.append(_ClientTx(bad, valid=False))
        for index in range(len(self.txs)):
            self.sched.at(prng.between(0, cfg.submit_window_ms), _Submit(index, 0))

    # -- replica lifecycle ---------------------------------------------------------------

    def _build_replica(self, host: _Host) -> ReplicaLike:
        durable = DurableState.from_bytes(host.durable) if host.durable is not None else None
        return self.factory(host.config, host.app, durable)

    def _crash(self, host: _Host) -> None:
        if host.replica is None:
            return
        self._record(f"crash {host.inst}")
        host.replica = None
        host.pending_crash = None
        host.crashes += 1

    # -- main loop -----------------------------------------------------------------------

    def run(self) -> SeedResult:
        try:
            self._setup()
            self._loop()
        except _StopRun:
            pass
        if not self.violations:
            self.violations.extend(
                self.liveness.finish(last_heal_ms=self.last_heal_ms, honest=self._obliged())
            )
        if not self.violations:
            self._check_no_forced_view_change()
        return self._result()

    def _obliged(self) -> list[str]:
        """The replicas liveness speaks for: honest validators of the set in force at
        the next height (and, with ``followers_must_catch_up``, every honest replica)."""
        final_set = self.schedule.at(self.safety.max_height + 1).by_id
        return sorted(
            {
                h.node
                for h in self.hosts.values()
                if h.honest and (h.node in final_set or self.cfg.followers_must_catch_up)
            }
        )

    def _check_no_forced_view_change(self) -> None:
        """One faulty *backup* on a calm network must not move anyone out of view 0."""
        byz = self.plan.byzantine
        if byz is None or byz.behaviour not in BACKUP_ONLY_BEHAVIOURS:
            return
        if any(vs.primary(0) == byz.node for _, vs in self.schedule.entries):
            return  # a faulty primary may rightly be replaced
        for host in sorted(self.hosts.values(), key=lambda h: h.inst):
            if host.honest and host.replica is not None and host.replica.view > 0:
                self.violations.append(
                    Violation(
                        "forced-view-change",
                        self.sched.now_ms,
                        host.inst,
                        f"in view {host.replica.view}: a lone faulty backup ({byz.node}: "
                        f"{byz.behaviour}) forced a view change on a calm network",
                    )
                )
                return

    def _loop(self) -> None:
        cfg = self.cfg
        while True:
            item = self.sched.pop()
            if item is None:
                return
            now, event = item
            if self.stop_at is not None and now > self.stop_at:
                return
            if now > cfg.horizon_ms:
                return
            if self.sched.popped > cfg.max_events:
                self.violations.append(
                    Violation(
                        "runaway",
                        now,
                        "-",
                        f"more than {cfg.max_events} events by {now} ms "
                        f"({self.messages_sent} messages sent): a message storm or livelock",
                    )
                )
                return
            self._dispatch(now, event)
            if self.violations:
                return
            if now >= self._check_due:
                self._check_due = now + 50
                self._check_progress(now)

    def _check_progress(self, now: int) -> None:
        if self.stop_at is not None:
            return
        if now < self.cfg.submit_window_ms or now < self.last_heal_ms:
            return
        if any(t.first_submit_ms is None for t in self.txs):
            return
        if self.liveness.pending(self._obliged()) == 0:
            self.stop_at = now + self.cfg.settle_ms
            return
        # give up once the last deadline has passed (liveness then reports it)
        latest = max(max(t.first_submit_ms or 0, self.last_heal_ms) for t in self.txs if t.valid)
        if now > latest + self.liveness.bound_ms() + self.cfg.tick_ms:
            self.stop_at = now

    def _dispatch(self, now: int, event: _Event) -> None:
        self._hash.update(b"%d" % now + _event_key(event))
        if isinstance(event, _Deliver):
            self._on_deliver(now, event)
        elif isinstance(event, _Tick):
            self._on_tick(now, event)
        elif isinstance(event, _Submit):
            self._on_submit(now, event)
        elif isinstance(event, _Crash):
            self._on_crash(now, event)
        elif isinstance(event, _Restart):
            self._on_restart(now, event)
        elif isinstance(event, _SpawnTwin):
            self._on_spawn_twin(now, event)
        else:
            self._apply_network(now)

    def _record(self, line: str) -> None:
        text = f"{self.sched.now_ms} {line}"
        self._hash.update(text.encode() + b"\n")
        if self.trace is not None:
            self.trace.append(text)

    def _guard(self, host: _Host, what: str, fn: Callable[[ReplicaLike], None]) -> None:
        """Run one replica call; an exception out of the core is a violation."""
        replica = host.replica
        if replica is None:
            return
        try:
            fn(replica)
            self._drain(host)
        except _StopRun:
            raise
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            self.violations.append(
                Violation(
                    "exception",
                    self.sched.now_ms,
                    host.inst,
                    f"{what} raised {type(exc).__name__}: {exc} "
                    f"(at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})",
                )
            )
            raise _StopRun() from None

    # -- events --------------------------------------------------------------------------

    def _on_tick(self, now: int, event: _Tick) -> None:
        host = self.hosts[event.inst]
        self.sched.after(self.cfg.tick_ms, event)
        if host.replica is None:
            return
        clock = EPOCH_MS + now + host.skew_ms
        quiet = self._quiet(host)
        if quiet is None or clock >= quiet.next_status_ms:
            self._guard(host, "tick", _ticker(clock))
        if host.adversary is not None and host.replica is not None:
            for to, msg in host.adversary.inject(now):
                self._send(host, to, msg)
        if host.honest and host.replica is not None:
            self.liveness.view_seen(host.replica.view)

    def _quiet(self, host: _Host) -> Replica | None:
        """On a quiet-ticks seed, the host's honest replica if it is quiescent (ticked
        only when its STATUS is due, as the node does); None otherwise."""
        r = host.replica
        return r if self.quiet_ticks and isinstance(r, Replica) and r.quiescent() else None

    def _wake(self, host: _Host, now: int) -> None:
        """Before an input reaches a quiescent replica, tick it to the present, as the
        node's driver does: its clock stamps block and arrival times."""
        if self._quiet(host) is not None:
            self._guard(host, "tick", _ticker(EPOCH_MS + now + host.skew_ms))

    def _on_deliver(self, now: int, event: _Deliver) -> None:
        host = self.hosts[event.inst]
        if host.replica is None:
            return
        msg = event.message
        if host.adversary is not None and not host.adversary.incoming(now, msg):
            return
        self._wake(host, now)
        if host.replica is None:  # a crash point may fire on that tick
            return
        self._guard(host, f"step({type(msg).__name__} from {event.src})", lambda r: r.step(msg))
        if host.honest and host.replica is not None:
            self.liveness.view_seen(host.replica.view)

    def _on_submit(self, now: int, event: _Submit) -> None:
        ctx = self.txs[event.tx_index]
        if ctx.done:
            return
        if ctx.valid and self.liveness.first_commit_ms(ctx.tx.tx_id) is not None:
            ctx.done = True
            return
        if ctx.first_submit_ms is None:
            ctx.first_submit_ms = now
            if ctx.valid:
                self.liveness.submitted(ctx.tx.tx_id, now)
        inst = self.prng_clients.choice(sorted(self.hosts))
        host = self.hosts[inst]
        self._record(f"submit tx{event.tx_index} try {event.attempt} -> {inst}")
        if not ctx.valid:
            ctx.done = True  # an invalid transaction is submitted once
        if ctx.valid:
            self.sched.after(self.cfg.retry_ms, _Submit(event.tx_index, event.attempt + 1))
        self._wake(host, now)
        if host.replica is None:  # crashed, or a crash point fired on that tick
            return
        results: list[SubmitResult] = []
        self._guard(host, "submit", lambda r: results.extend(r.submit([ctx.tx])))
        for res in results:
            self._record(f"submitted tx{event.tx_index} to {inst}: {res.status}")
            if not ctx.valid and res.accepted and host.honest:
                self.violations.append(
                    Violation(
                        "admission",
                        now,
                        inst,
                        f"accepted invalid tx{event.tx_index} ({ctx.tx.tx_id.hex()[:16]}) "
                        f"into its mempool: {res.status}",
                    )
                )

    def _on_crash(self, now: int, event: _Crash) -> None:
        for inst in self._instances_of(event.inst):
            host = self.hosts[inst]
            if host.replica is None:
                continue
            if event.force:  # the mid-Ready crash has not happened yet: crash now
                if host.pending_crash is not None:
                    self._crash(host)
            elif event.point == "idle":
                self._crash(host)
            else:
                host.pending_crash = event.point  # hit in the middle of the next Ready
                self.sched.after(300, _Crash(inst, event.point, force=True))

    def _on_restart(self, now: int, event: _Restart) -> None:
        for inst in self._instances_of(event.inst):
            host = self.hosts[inst]
            if host.pending_crash is not None:
                self._crash(host)  # the crash never hit a Ready: it happens now
            if host.replica is not None:
                continue
            self._record(f"restart {inst} at height {host.app.height}")
            try:
                host.replica = self._build_replica(host)
            except Exception as exc:
                self.violations.append(
                    Violation(
                        "exception",
                        now,
                        inst,
                        f"restart raised {type(exc).__name__}: {exc}",
                    )
                )
                raise _StopRun() from None
            self._guard(host, "tick after restart", _ticker(EPOCH_MS + now + host.skew_ms))

    def _on_spawn_twin(self, now: int, event: _SpawnTwin) -> None:
        """restart_twin: a copy started from the same durable state and chain."""
        original = self.hosts[event.node]
        app = self._new_app()
        for block, cert in original.app.chain():
            app.store(block, cert)
        twin = self._add_host(event.node + TWIN_SUFFIX, event.node, app, original.skew_ms + 3)
        twin.durable = original.durable
        ctx = self._adversary_context(event.node)
        prng = self.root.fork("adversary", "restart-twin")
        peers = list(ctx.peers)
        prng.shuffle(peers)
        twin.adversary = TwinRouting(ctx, prng, frozenset(peers[:2]), equivocate=0.5)
        self._record(f"spawn twin of {event.node} at height {app.height}")
        twin.replica = self._build_replica(twin)
        self.sched.after(1, _Tick(twin.inst))

    def _instances_of(self, name: str) -> list[str]:
        if name in self.instances:
            return list(self.instances[name])
        return [name] if name in self.hosts else []

    def _apply_network(self, now: int) -> None:
        """Put in force exactly the partitions and link faults active at ``now``."""
        self.net.heal()
        active = [p for p in self.plan.partitions if p.at_ms <= now < p.until_ms]
        if active:
            self.net.partition(active[-1].groups)
        for lf in self.plan.links:
            if lf.at_ms <= now < lf.until_ms:
                if lf.node is None:
                    self.net.set_all(lf.profile)
                else:
                    self.net.set_node(lf.node, lf.profile)
        self._record(f"network partitioned={self.net.partitioned}")

    # -- Ready handling ------------------------------------------------------------------

    def _drain(self, host: _Host) -> None:
        now = self.sched.now_ms
        while host.replica is not None and host.replica.has_ready():
            replica = host.replica
            rd = replica.ready()
            if rd.persist is not None:
                host.durable = rd.persist.to_bytes()
            if host.pending_crash == "after_persist" and (
                rd.persist is not None or rd.committed or rd.messages
            ):
                self._crash(host)
                return
            # the node's order (docs/node.md): FETCH, proposals and votes leave once
            # persist is durable, before the committed blocks are stored; the rest after
            self._send_ready(host, rd, (SEND_BEFORE_PERSIST, SEND_BEFORE_STORE), now)
            if host.pending_crash == "after_votes" and (rd.committed or rd.messages):
                self._crash(host)
                return
            for block, cert in rd.committed:
                self._record(f"commit {host.inst} h{block.height} {block.hash.hex()[:16]}")
                if host.honest:
                    self.violations.extend(self.safety.on_commit(host.node, block, cert, now))
                    self.liveness.committed(
                        host.node, (tx.tx_id for tx in block.transactions), now, cert.view
                    )
                if block.height != host.app.height + 1:
                    self.violations.append(
                        Violation(
                            "chain",
                            now,
                            host.inst,
                            f"Ready.committed height {block.height} after stored height "
                            f"{host.app.height}",
                        )
                    )
                    raise _StopRun()
                host.app.store(block, cert)
            if self.violations:
                raise _StopRun()
            if host.pending_crash == "after_store" and (rd.committed or rd.messages):
                self._crash(host)
                return
            self._send_ready(host, rd, (SEND_AFTER_STORE,), now)
            for ev in rd.evidence:
                self.evidence += 1
                self._record(f"evidence {host.inst} against {ev.offender}: {ev.kind}")
                if host.honest and ev.offender not in self.faulty:
                    self.violations.append(
                        Violation(
                            "false-evidence",
                            now,
                            host.inst,
                            f"accused honest {ev.offender} of {ev.kind} (view {ev.view}, "
                            f"height {ev.height}): {ev.detail}",
                        )
                    )
            replica.advance(rd)
            if self.violations:
                raise _StopRun()

    def _send_ready(self, host: _Host, rd: Ready, stages: tuple[int, ...], now: int) -> None:
        """Send ``rd``'s messages of these :func:`~consensus.replica.send_stage` stages."""
        for out in rd.messages:
            if send_stage(out.message) not in stages:
                continue
            if host.honest:
                self._check_votes(host, out.message, now)
            if host.adversary is not None:
                sends = host.adversary.outgoing(now, out.to, out.message)
            else:
                sends = [(out.to, out.message)]
            for to, msg in sends:
                self._send(host, to, msg)

    def _check_votes(self, host: _Host, msg: Message, now: int) -> None:
        votes: list[tuple[str, int, int, bytes]] = []
        if isinstance(msg, Prepare):
            votes.append(("prepare", msg.view, msg.height, msg.block_hash))
        elif isinstance(msg, Commit):
            votes.append(("commit", msg.view, msg.height, msg.block_hash))
        elif isinstance(msg, PrePrepare):
            votes.append(("pre-prepare", msg.view, msg.height, msg.block_hash))
        elif isinstance(msg, NewView):
            votes.extend(("pre-prepare", p.view, p.height, p.block_hash) for p in msg.proposals)
        for kind, view, height, block_hash in votes:
            self.violations.extend(
                self.safety.on_vote(host.node, kind, view, height, block_hash, now)
            )

    def _send(self, host: _Host, to: str | None, msg: Message) -> None:
        now = self.sched.now_ms
        self.messages_sent += 1
        try:
            wire = decode_message(encode_message(msg)) if self.wire else msg
        except Exception as exc:
            if host.honest:
                self.violations.append(
                    Violation(
                        "wire",
                        now,
                        host.inst,
                        f"{type(msg).__name__} does not survive encode/decode: {exc}",
                    )
                )
            return
        targets = [n for n in self.nodes if n != host.node] if to is None else [to]
        for dst in targets:
            if dst == host.node or dst not in self.instances:
                continue
            for inst in self.instances[dst]:
                for at in self.net.transmit(host.node, dst, now):
                    self.sched.at(at, _Deliver(host.inst, inst, wire))

    # -- result --------------------------------------------------------------------------

    def _result(self) -> SeedResult:
        honest_hosts = [h for h in self.hosts.values() if h.honest]
        committed_height = max((h.app.height for h in honest_hosts), default=0)
        valid = [t for t in self.txs if t.valid]
        committed = sum(1 for t in valid if self.liveness.first_commit_ms(t.tx.tx_id) is not None)
        views = [h.replica.view for h in self.hosts.values() if h.replica is not None]
        end = f"end {self.sched.now_ms} {committed_height} {committed} {len(self.violations)}"
        self._hash.update(end.encode())
        detail = self.kind
        if self.plan.byzantine is not None:
            detail = f"{self.plan.byzantine.behaviour} by {self.plan.byzantine.node}"
        elif self.plan.crashes:
            detail = f"{len(self.plan.crashes)} crashes, healed at {self.plan.heal_ms} ms"
        elif self.plan.partitions or self.plan.links:
            detail = (
                f"{len(self.plan.partitions)} partitions, {len(self.plan.links)} link faults, "
                f"healed at {self.plan.heal_ms} ms"
            )
        if self.reconfig:
            detail += f"; validator set changes at height {self.cfg.reconfig_height}"
        if self.quiet_ticks:
            detail += "; quiet ticks"
        if self.learn_sets:
            detail += f"; validator sets learnt as the chain grows (delay {LEARN_SETS_DELAY})"
        return SeedResult(
            seed=self.seed,
            faults=self.kind,
            detail=detail,
            scheme=self.scheme.name + ("+wire" if self.wire else ""),
            violations=tuple(self.violations),
            trace_hash=self._hash.hexdigest(),
            end_ms=self.sched.now_ms,
            committed_height=committed_height,
            txs_submitted=len(valid),
            txs_committed=committed,
            max_view=max(views, default=0),
            events=self.sched.popped,
            messages=self.messages_sent,
            evidence=self.evidence,
            adversary_actions=sum(
                h.adversary.injected + h.adversary.tampered
                for h in self.hosts.values()
                if h.adversary is not None
            ),
        )
