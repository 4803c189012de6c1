"""Fault schedules: what goes wrong, when, and when it is all healed.

A :class:`FaultPlan` is plain data drawn from a seed's ``faults`` stream by
:func:`make_plan`. Kinds:

* ``crash`` — one replica (sometimes a few, one at a time) crashes and restarts,
  possibly in the middle of handling a Ready (after persisting, or after storing
  committed blocks, but before sending). A crash-restarted replica is *honest*: the
  safety checks (including "never signs conflicting votes") apply to it.
* ``network`` — partitions (minority cut off, the primary isolated, a 2–3 split) and
  lossy, duplicating, long-tailed links, in episodes, all healed by ``heal_ms``.
* ``byzantine`` — one replica runs a Byzantine behaviour for the whole run
  (:data:`BYZANTINE_BEHAVIOURS`, see :mod:`consensus.sim.byzantine`); the network is
  calm, except that when the faulty replica is the primary of view 1 the first primary
  is cut off for a while (then healed) so that the faulty one gets its turn.
* ``none`` — nothing goes wrong (a baseline).

With n = 5 at most f = 1 replica is faulty at any moment; ``faulty`` names the
replicas the checkers must not rely on (Byzantine ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from consensus.sim.network import LinkProfile
from consensus.sim.prng import Prng

FAULT_KINDS: Final = ("crash", "byzantine", "network")
ALL_KINDS: Final = ("none", *FAULT_KINDS)

BYZANTINE_BEHAVIOURS: Final = (
    "equivocate",  # primary sends two different proposals for one height
    "double_vote",  # PREPARE/COMMIT for two blocks at one (view, height)
    "forge_signature",  # messages with bad signatures or another validator's name
    "replay",  # resends old messages (its own and others') later
    "silent_primary",  # as primary proposes nothing; otherwise honest
    "twins",  # two copies with the same key, each talking to half the network
    "forged_tx",  # primary proposes a client transaction with a forged signature
    "restart_twin",  # crashes, restarts from its durable state next to an equivocating twin
)

#: Where a crash interrupts a replica.
CRASH_POINTS: Final = (
    "idle",  # between events: nothing of the current Ready is lost
    "after_persist",  # Ready.persist stored; committed blocks and messages lost
    "after_votes",  # persist stored, proposals and votes sent; blocks and the rest lost
    "after_store",  # persist and committed blocks stored; the rest of the messages lost
)


@dataclass(frozen=True)
class CrashFault:
    node: str
    at_ms: int
    restart_ms: int
    point: str = "idle"


@dataclass(frozen=True)
class PartitionFault:
    at_ms: int
    until_ms: int
    groups: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class LinkFault:
    """Links of ``node`` (or every link, if None) get ``profile`` during the episode."""

    at_ms: int
    until_ms: int
    node: str | None
    profile: LinkProfile


@dataclass(frozen=True)
class ByzantineFault:
    node: str
    behaviour: str


@dataclass(frozen=True)
class FaultPlan:
    kind: str
    crashes: tuple[CrashFault, ...] = ()
    partitions: tuple[PartitionFault, ...] = ()
    links: tuple[LinkFault, ...] = ()
    byzantine: ByzantineFault | None = None
    #: Baseline link profile for the whole run (the faults above override it).
    baseline: LinkProfile = field(default_factory=LinkProfile)
    #: Time by which every fault except a Byzantine replica is over.
    heal_ms: int = 0

    @property
    def faulty(self) -> frozenset[str]:
        """Replicas whose behaviour the checkers must not vouch for."""
        return frozenset({self.byzantine.node} if self.byzantine else set())

    def describe(self) -> list[str]:
        lines = [f"kind={self.kind} heal_ms={self.heal_ms}"]
        lines += [
            f"crash {c.node} at {c.at_ms} ({c.point}) restart {c.restart_ms}" for c in self.crashes
        ]
        lines += [
            f"partition {[list(g) for g in p.groups]} {p.at_ms}..{p.until_ms}"
            for p in self.partitions
        ]
        lines += [
            f"links {lf.node or '*'} {lf.profile} {lf.at_ms}..{lf.until_ms}" for lf in self.links
        ]
        if self.byzantine:
            lines.append(f"byzantine {self.byzantine.node}: {self.byzantine.behaviour}")
        return lines


@dataclass(frozen=True)
class FaultWindow:
    """Faults start at or after ``start_ms`` and are healed by ``end_ms``."""

    start_ms: int = 200
    end_ms: int = 4_000


def make_plan(
    kind: str,
    prng: Prng,
    nodes: Sequence[str],
    window: FaultWindow = FaultWindow(),
    *,
    behaviour: str | None = None,
) -> FaultPlan:
    """Draw a plan of ``kind`` (one of :data:`ALL_KINDS`); raises ValueError otherwise."""
    if kind == "none":
        return FaultPlan(kind="none")
    if kind == "crash":
        return _crash_plan(prng, nodes, window)
    if kind == "network":
        return _network_plan(prng, nodes, window)
    if kind == "byzantine":
        return _byzantine_plan(prng, nodes, behaviour)
    raise ValueError(f"unknown fault kind {kind!r} (expected one of {', '.join(ALL_KINDS)})")


def _crash_plan(prng: Prng, nodes: Sequence[str], window: FaultWindow) -> FaultPlan:
    crashes: list[CrashFault] = []
    rolling = prng.chance(0.3)  # several replicas, one at a time
    victim = nodes[0] if prng.chance(0.4) else prng.choice(nodes)  # nodes[0]: first primary
    t = prng.between(window.start_ms, window.start_ms + 1_000)
    for _ in range(prng.between(1, 3)):
        if t >= window.end_ms - 100:
            break
        down = prng.between(100, 2_500)
        restart = min(t + down, window.end_ms)
        crashes.append(CrashFault(victim, t, restart, prng.choice(CRASH_POINTS)))
        t = restart + prng.between(100, 1_200)
        if rolling:
            victim = prng.choice(nodes)
    heal = max((c.restart_ms for c in crashes), default=0)
    baseline = LinkProfile(1, 20, duplicate=0.01, tail=0.01, tail_ms=100)
    return FaultPlan(kind="crash", crashes=tuple(crashes), baseline=baseline, heal_ms=heal)


def _network_plan(prng: Prng, nodes: Sequence[str], window: FaultWindow) -> FaultPlan:
    partitions: list[PartitionFault] = []
    links: list[LinkFault] = []
    t = prng.between(window.start_ms, window.start_ms + 800)
    for _ in range(prng.between(1, 3)):
        if t >= window.end_ms - 100:
            break
        end = min(t + prng.between(200, 2_500), window.end_ms)
        shape = prng.below(5)
        if shape == 0:  # the current or first primary cut off
            cut = nodes[0] if prng.chance(0.5) else prng.choice(nodes)
            rest = tuple(n for n in nodes if n != cut)
            partitions.append(PartitionFault(t, end, (rest, (cut,))))
        elif shape == 1:  # a 2–3 split: no side has a quorum
            order = list(nodes)
            prng.shuffle(order)
            partitions.append(PartitionFault(t, end, (tuple(order[:2]), tuple(order[2:]))))
        elif shape == 2:  # everything lossy
            profile = LinkProfile(
                1, 40, drop=prng.between(5, 35) / 100, duplicate=0.05, tail=0.05, tail_ms=300
            )
            links.append(LinkFault(t, end, None, profile))
        elif shape == 3:  # one very slow / lossy replica
            profile = LinkProfile(50, 400, drop=prng.between(10, 60) / 100, tail=0.1, tail_ms=800)
            links.append(LinkFault(t, end, prng.choice(nodes), profile))
        else:  # heavy duplication and reordering
            profile = LinkProfile(1, 80, duplicate=0.3, tail=0.3, tail_ms=600)
            links.append(LinkFault(t, end, None, profile))
        t = end + prng.between(0, 700)
    heal = max([p.until_ms for p in partitions] + [lf.until_ms for lf in links], default=0)
    baseline = LinkProfile(1, 25, duplicate=0.02, tail=0.02, tail_ms=150)
    return FaultPlan(
        kind="network",
        partitions=tuple(partitions),
        links=tuple(links),
        baseline=baseline,
        heal_ms=heal,
    )


_PRIMARY_BEHAVIOURS: Final = frozenset(
    {"equivocate", "silent_primary", "twins", "forged_tx", "restart_twin"}
)


def _byzantine_plan(prng: Prng, nodes: Sequence[str], behaviour: str | None) -> FaultPlan:
    drawn = prng.choice(BYZANTINE_BEHAVIOURS)  # drawn even if overridden: same nodes
    if behaviour is None:
        behaviour = drawn
    elif behaviour not in BYZANTINE_BEHAVIOURS:
        raise ValueError(
            f"unknown Byzantine behaviour {behaviour!r} "
            f"(expected one of {', '.join(BYZANTINE_BEHAVIOURS)})"
        )
    partitions: tuple[PartitionFault, ...] = ()
    links: tuple[LinkFault, ...] = ()
    if behaviour in _PRIMARY_BEHAVIOURS:
        # The primary of view 0, or of view 1: then the first primary is cut off (or its
        # links made very lossy, so that backups end up holding different prepared
        # values) for a while, so that the view changes to the Byzantine one.
        node = nodes[0] if prng.chance(0.7) else nodes[1]
        if node != nodes[0]:
            start = prng.between(500, 1_500)
            end = start + prng.between(1_200, 2_000)
            if prng.chance(0.5):
                rest = tuple(n for n in nodes if n != nodes[0])
                partitions = (PartitionFault(start, end, (rest, (nodes[0],))),)
            else:
                lossy = LinkProfile(1, 60, drop=prng.between(50, 90) / 100, tail=0.2, tail_ms=300)
                links = (LinkFault(start, end, nodes[0], lossy),)
    else:
        node = prng.choice(nodes)
    baseline = LinkProfile(1, 15)
    return FaultPlan(
        kind="byzantine",
        byzantine=ByzantineFault(node, behaviour),
        partitions=partitions,
        links=links,
        baseline=baseline,
        heal_ms=max([p.until_ms for p in partitions] + [lf.until_ms for lf in links], default=0),
    )
