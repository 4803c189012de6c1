"""An in-memory network model: per-link delay, loss, duplication, reordering, partitions.

The model only decides *when* (if ever) each copy of a message arrives;
the runner schedules the deliveries. For one send from ``src`` to ``dst`` at ``now``:

* a partition that separates ``src`` and ``dst`` drops it (like a broken TCP
  connection whose buffer is lost);
* otherwise it is lost with the link's ``drop`` probability;
* otherwise it arrives after ``uniform[min_delay_ms, max_delay_ms]``, plus, with
  probability ``tail``, an extra ``uniform[0, tail_ms]`` (a long tail that reorders it
  behind later messages);
* with probability ``duplicate`` a second copy arrives after its own independent delay.

All randomness comes from the injected :class:`~consensus.sim.prng.Prng`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from consensus.sim.prng import Prng


@dataclass(frozen=True)
class LinkProfile:
    """How one directed link behaves. Probabilities in ``[0, 1]``, delays in ms."""

    min_delay_ms: int = 1
    max_delay_ms: int = 15
    drop: float = 0.0
    duplicate: float = 0.0
    tail: float = 0.0
    tail_ms: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.min_delay_ms <= self.max_delay_ms:
            raise ValueError("link delays need 0 <= min_delay_ms <= max_delay_ms")
        for name in ("drop", "duplicate", "tail"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"link {name} probability {p} outside [0, 1]")
        if self.tail_ms < 0:
            raise ValueError("tail_ms must be >= 0")


#: A well-behaved LAN: 1–15 ms, nothing lost.
CALM = LinkProfile()


@dataclass
class NetworkStats:
    sent: int = 0
    delivered: int = 0
    dropped_loss: int = 0
    dropped_partition: int = 0
    duplicated: int = 0
    delayed_tail: int = 0


@dataclass
class Network:
    """The links between ``nodes``; every directed link starts with ``default``."""

    nodes: tuple[str, ...]
    prng: Prng
    default: LinkProfile = CALM
    stats: NetworkStats = field(default_factory=NetworkStats)
    _links: dict[tuple[str, str], LinkProfile] = field(default_factory=dict)
    _group: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(set(self.nodes)) != len(self.nodes):
            raise ValueError("network nodes must be distinct")

    # -- configuration -----------------------------------------------------------------

    def set_link(self, src: str, dst: str, profile: LinkProfile) -> None:
        self._check(src)
        self._check(dst)
        self._links[(src, dst)] = profile

    def set_node(self, node: str, profile: LinkProfile) -> None:
        """Give every link into and out of ``node`` the profile."""
        for other in self.nodes:
            if other != node:
                self.set_link(node, other, profile)
                self.set_link(other, node, profile)

    def set_all(self, profile: LinkProfile) -> None:
        for src in self.nodes:
            for dst in self.nodes:
                if src != dst:
                    self._links[(src, dst)] = profile

    def partition(self, groups: Sequence[Iterable[str]]) -> None:
        """Cut the network into ``groups``; a node in no group is isolated on its own."""
        self._group = {}
        for index, group in enumerate(groups):
            for node in group:
                self._check(node)
                if node in self._group:
                    raise ValueError(f"node {node!r} is in two partition groups")
                self._group[node] = index
        next_index = len(groups)
        for node in self.nodes:
            if node not in self._group:
                self._group[node] = next_index
                next_index += 1

    def heal(self) -> None:
        """Remove every partition and restore every link to ``default``."""
        self._group = {}
        self._links = {}

    @property
    def partitioned(self) -> bool:
        return bool(self._group)

    def link(self, src: str, dst: str) -> LinkProfile:
        return self._links.get((src, dst), self.default)

    def connected(self, src: str, dst: str) -> bool:
        a, b = self._group.get(src), self._group.get(dst)
        return a is None or b is None or a == b

    # -- transmission ------------------------------------------------------------------

    def transmit(self, src: str, dst: str, now_ms: int) -> tuple[int, ...]:
        """Arrival times of the copies of one message sent now (empty: it is lost).

        ``src``/``dst`` need not be in ``nodes`` (clients): unknown endpoints use
        ``default`` and are never partitioned.
        """
        self.stats.sent += 1
        if not self.connected(src, dst):
            self.stats.dropped_partition += 1
            return ()
        profile = self.link(src, dst)
        if self.prng.chance(profile.drop):
            self.stats.dropped_loss += 1
            return ()
        arrivals = [now_ms + self._delay(profile)]
        if self.prng.chance(profile.duplicate):
            self.stats.duplicated += 1
            arrivals.append(now_ms + self._delay(profile))
        self.stats.delivered += len(arrivals)
        return tuple(arrivals)

    def _delay(self, profile: LinkProfile) -> int:
        delay = self.prng.between(profile.min_delay_ms, profile.max_delay_ms)
        if profile.tail > 0.0 and self.prng.chance(profile.tail):
            self.stats.delayed_tail += 1
            delay += self.prng.between(0, profile.tail_ms)
        return delay

    def _check(self, node: str) -> None:
        if node not in self.nodes:
            raise ValueError(f"unknown node {node!r}")
