"""Five "hosts" in Linux network namespaces, for partition tests (root only).

    lab = NetnsLab.create(5)          # namespaces, veth pairs, bridge; skip if impossible
    lab.command(i, ["python", ...])   # run inside host i's namespace
    lab.link_down(i) / lab.link_up(i) # cut host i off completely (and back)
    lab.split([0, 1])                 # hosts 0,1 on a second bridge: a 2|3 partition
    lab.heal()                        # everybody back on the main bridge
    lab.destroy()                     # always (fixture finalizer); idempotent

Layout: namespace ``wl<tag>n<i>`` holds ``eth0`` = ``10.231.<x>.<i+1>/24``; its veth
peer ``wl<tag>h<i>`` sits in the root namespace on bridge ``wl<tag>b0``, which carries
the test's own address ``10.231.<x>.254``. The second bridge ``wl<tag>b1`` (address
``10.231.<x>.253/32`` plus a host route per member) takes the minority of a split: its
members reach each other and the test, not the rest (the root namespace does not
forward between the bridges: no address of a node is local to it, so nothing answers
ARP across). ``<tag>`` is random and ``<x>`` is chosen unused, so runs do not collide.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field


class NetnsUnavailable(Exception):
    """Network namespaces cannot be used here (message says why)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


def unavailable_reason() -> str | None:
    """None if this process can create namespaces, veths and bridges; else why not."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (run the suite as root to test partitions)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"wlprobe{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"`ip netns add` failed: {getattr(exc, 'stderr', exc)}".strip()
    finally:
        _ip("netns", "del", probe, check=False)
    return None


def _used_subnets() -> set[int]:
    out = _ip("-4", "-o", "addr", "show", check=False).stdout
    return {int(p.split(".")[2]) for p in out.split() if p.startswith("10.231.")}


@dataclass
class NetnsLab:
    n: int
    tag: str
    subnet: int
    created: list[tuple[str, str]] = field(default_factory=list)
    minority: tuple[int, ...] = ()
    down: set[int] = field(default_factory=set)

    # ------------------------------------------------------------------ names

    def ns(self, i: int) -> str:
        return f"wl{self.tag}n{i}"

    def veth(self, i: int) -> str:
        return f"wl{self.tag}h{i}"

    def bridge(self, k: int) -> str:
        return f"wl{self.tag}b{k}"

    def ip(self, i: int) -> str:
        return f"10.231.{self.subnet}.{i + 1}"

    @property
    def host_ip(self) -> str:
        return f"10.231.{self.subnet}.254"

    def command(self, i: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside host ``i``'s namespace (``ip netns exec`` execs it: the
        child's pid is the command's)."""
        return ["ip", "netns", "exec", self.ns(i), *argv]

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def create(cls, n: int) -> NetnsLab:
        """Build the namespaces and bridges. Raises :class:`NetnsUnavailable` when not
        possible here; on any other failure destroys what was made and re-raises."""
        reason = unavailable_reason()
        if reason is not None:
            raise NetnsUnavailable(reason)
        used = _used_subnets()
        free = [x for x in range(1, 250) if x not in used]
        if not free:
            raise NetnsUnavailable("no free 10.231.x.0/24 subnet")
        lab = cls(n, secrets.token_hex(2), secrets.choice(free))
        try:
            lab._build()
        except BaseException:
            lab.destroy()
            raise
        return lab

    def _build(self) -> None:
        for k in (0, 1):
            br = self.bridge(k)
            _ip("link", "add", br, "type", "bridge")
            self.created.append(("link", br))
            _ip("link", "set", br, "up")
        _ip("addr", "add", f"{self.host_ip}/24", "dev", self.bridge(0))
        _ip("addr", "add", f"10.231.{self.subnet}.253/32", "dev", self.bridge(1))
        for i in range(self.n):
            ns, host_end, ns_end = self.ns(i), self.veth(i), f"wl{self.tag}p{i}"
            _ip("netns", "add", ns)
            self.created.append(("netns", ns))
            _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            self.created.append(("link", host_end))
            _ip("link", "set", ns_end, "netns", ns)
            _ip("link", "set", host_end, "master", self.bridge(0), "up")
            inside = ["netns", "exec", ns, "ip"]
            _ip(*inside, "link", "set", "lo", "up")
            _ip(*inside, "link", "set", ns_end, "name", "eth0")
            _ip(*inside, "addr", "add", f"{self.ip(i)}/24", "dev", "eth0")
            _ip(*inside, "link", "set", "eth0", "up")

    def destroy(self) -> None:
        """Delete every namespace and link this lab made (errors ignored)."""
        for kind, name in reversed(self.created):
            if kind == "netns":
                _ip("netns", "del", name, check=False)
            else:
                _ip("link", "del", name, check=False)
        self.created.clear()

    # ------------------------------------------------------------------ faults

    def link_down(self, i: int) -> None:
        """Cut host ``i`` off from everyone (its cable pulled)."""
        _ip("link", "set", self.veth(i), "down")
        self.down.add(i)

    def link_up(self, i: int) -> None:
        _ip("link", "set", self.veth(i), "up")
        self.down.discard(i)

    def split(self, minority: Sequence[int]) -> None:
        """Move ``minority`` to the second bridge: they reach each other (and the test),
        not the others."""
        for i in minority:
            _ip("link", "set", self.veth(i), "master", self.bridge(1))
            _ip("route", "add", f"{self.ip(i)}/32", "dev", self.bridge(1))
        self.minority = tuple(minority)

    def heal(self) -> None:
        """Undo :meth:`split` and :meth:`link_down`."""
        for i in self.minority:
            _ip("route", "del", f"{self.ip(i)}/32", "dev", self.bridge(1), check=False)
            _ip("link", "set", self.veth(i), "master", self.bridge(0))
        self.minority = ()
        for i in sorted(self.down):
            self.link_up(i)
