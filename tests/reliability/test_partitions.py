"""Network faults between five real node processes.

Partitions: each node runs as its own host in a Linux network namespace (netns.py:
veth pairs on a bridge, addresses 10.231.x.0/24, skipped with a message when not
root). Under continuous load:

- the primary's link goes down: the four others (a quorum, n=5 f=1 quorum 4) change
  view and keep committing; back up, it catches up;
- a 2|3 split (two hosts moved to a second bridge): neither side holds a quorum, so
  neither commits past the height reached before the split (safety over liveness);
  healed, progress resumes;
- finally every node holds the same chain (same tip hash at the same height: blocks
  are hash-linked, so the whole prefix agrees) — nobody committed a conflicting block.

Latency and loss: nodes on loopback reach each other only through a test-side TCP
proxy (tcpproxy.py) adding delay and cutting connections at random; commits continue
and the nodes converge.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from ledger.genesis import Genesis, genesis_document, genesis_from_document, write_genesis
from node.localnet import NodeProcess
from tests.node.netfixture import (
    FAST_CONSENSUS,
    Client,
    TestNetwork,
    add_lenders,
    free_base_port,
)
from tests.reliability.netns import NetnsLab, NetnsUnavailable, unavailable_reason
from tests.reliability.tcpproxy import FaultyProxy

pytestmark = [pytest.mark.network]

CH = "supervision"
NODE_PORT = 7001
T = TypeVar("T")


# ---------------------------------------------------------------------------- helpers


class Load:
    """Lenders submitting small batches, without waiting, to the nodes in ``targets``
    (changed by the test as the network is cut); errors are expected and ignored."""

    def __init__(self, net: TestNetwork, targets: list[int]) -> None:
        self.net = net
        self.targets = list(targets)
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        http = httpx.Client(timeout=5.0)
        clients = {}
        n = 0
        try:
            while not self._stop.is_set():
                n += 1
                i = random.choice(self.targets)
                if i not in clients:
                    node = self.net.nodes[i]
                    signer = self.net.signer_of("lender1")
                    clients[i] = Client(node.url, self.net.genesis.hash, "lender1", signer, http)
                c = clients[i]
                txs = [c.tx(CH, "loan_event", {"k": f"p{n}-{j}", "v": j}) for j in range(5)]
                try:
                    r = c.submit_batch(CH, txs)
                    if r.status_code == 200:
                        self.accepted += sum(
                            x["status"] in ("pending", "committed") for x in r.json()["results"]
                        )
                except httpx.HTTPError:
                    pass
                self._stop.wait(0.05)
        finally:
            http.close()

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


_HTTP: list[httpx.Client] = []


def status(net: TestNetwork, i: int) -> dict[str, Any]:
    """The channel status from node ``i`` (5 s timeout: a cut-off node does not hang us)."""
    if not _HTTP:
        _HTTP.append(httpx.Client(timeout=5.0))
    r = _HTTP[0].get(
        net.nodes[i].url + f"/v1/channels/{CH}",
        headers=net.client(i, "bureau").headers("GET", f"/v1/channels/{CH}"),
    )
    r.raise_for_status()
    doc: dict[str, Any] = r.json()
    return doc


def heights(net: TestNetwork, indexes: list[int]) -> dict[int, int]:
    return {i: int(status(net, i)["height"]) for i in indexes}


def wait_for(cond: Callable[[], bool], what: str, timeout_s: float) -> float:
    t0 = time.monotonic()
    while True:
        try:
            if cond():
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        assert time.monotonic() - t0 < timeout_s, f"timed out after {timeout_s:.0f} s: {what}"
        time.sleep(0.2)


def retry(fn: Callable[[], T], what: str, timeout_s: float = 60.0) -> T:
    """``fn()``, retried while a (busy or just reconnected) node times out."""
    box: list[T] = []

    def attempt() -> bool:
        box.append(fn())
        return True

    wait_for(attempt, what, timeout_s)
    return box[-1]


def wait_progress(net: TestNetwork, indexes: list[int], blocks: int, timeout_s: float) -> int:
    """Wait until every node of ``indexes`` is ``blocks`` past the highest of them now."""
    target = retry(lambda: max(heights(net, indexes).values()), "heights") + blocks
    wait_for(
        lambda: min(heights(net, indexes).values()) >= target,
        f"nodes {indexes} to commit {blocks} more blocks (to {target})",
        timeout_s,
    )
    return target


def primary_index(net: TestNetwork, via: int) -> int:
    doc = retry(lambda: status(net, via), f"the status of node {via}")
    primary = doc["validators"][doc["view"] % len(doc["validators"])]
    return [n.node_id for n in net.nodes].index(primary)


def wait_converged(net: TestNetwork, timeout_s: float) -> tuple[int, str]:
    """Wait until all nodes report the same height and tip hash (load stopped)."""
    seen: dict[int, tuple[int, str]] = {}

    def same() -> bool:
        for i in range(len(net.nodes)):
            doc = status(net, i)
            seen[i] = (int(doc["height"]), doc["last_hash"]["$hex"])
        return len(set(seen.values())) == 1

    wait_for(same, f"all nodes to converge (now {seen})", timeout_s)
    return seen[0]


def assert_same_chain(net: TestNetwork, upto: int) -> None:
    """Spot-check block hashes across every node (the tip check already covers the
    whole prefix through the hash links)."""
    bureau = [net.client(i, "bureau") for i in range(len(net.nodes))]
    for h in sorted({1, max(1, upto // 3), max(1, 2 * upto // 3), upto}):
        hashes = {c.block(CH, h)["hash"]["$hex"] for c in bureau}
        assert len(hashes) == 1, f"conflicting blocks at height {h}: {hashes}"


# ---------------------------------------------------------------------------- netns network


class NetnsNetwork(TestNetwork):
    """A test network whose node ``i`` runs in ``lab``'s namespace ``i``."""

    __test__ = False
    lab: NetnsLab

    def _command(self, node: NodeProcess) -> list[str]:
        return self.lab.command(self.nodes.index(node), super()._command(node))


def start_netns_network(tmp: Path, lab: NetnsLab) -> NetnsNetwork:
    def hook(data: Path) -> Genesis:
        genesis = add_lenders(data)
        doc = genesis_document(genesis)
        for i, node in enumerate(doc["nodes"]):
            node["address"] = f"http://{lab.ip(i)}:{NODE_PORT}"
        path = data / "genesis.json"
        new = genesis_from_document(doc, str(path))
        write_genesis(path, new)
        return new

    net = NetnsNetwork.prepare(tmp, rules="test", consensus=FAST_CONSENSUS, genesis_hook=hook)
    assert isinstance(net, NetnsNetwork)
    net.lab = lab
    net.start()
    try:
        net.wait_healthy(timeout_s=90)
    except BaseException:
        net.stop()
        raise
    return net


@pytest.fixture(scope="module")
def lab() -> Iterator[NetnsLab]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"partition tests skipped: {reason}")
    try:
        made = NetnsLab.create(5)
    except NetnsUnavailable as exc:
        pytest.skip(f"partition tests skipped: {exc}")
    try:
        yield made
    finally:
        made.destroy()


@pytest.fixture(scope="module")
def nsnet(lab: NetnsLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsNetwork]:
    net = start_netns_network(tmp_path_factory.mktemp("netns"), lab)
    try:
        yield net
    finally:
        net.stop()


def isolate_primary_round(net: NetnsNetwork, load: Load) -> None:
    lab = net.lab
    everyone = list(range(5))
    victim = primary_index(net, 0)
    rest = [i for i in everyone if i != victim]
    load.targets = rest
    lab.link_down(victim)
    t = time.monotonic()
    wait_progress(net, rest, 3, timeout_s=90)
    print(f"primary {victim} cut off: the other four committed 3 blocks in "
          f"{time.monotonic() - t:.1f} s")  # fmt: skip
    lab.link_up(victim)
    top = retry(lambda: max(heights(net, rest).values()), "heights")
    wait_for(lambda: heights(net, [victim])[victim] >= top, "the primary to catch up", 90)
    load.targets = everyone


def split_round(net: NetnsNetwork, load: Load, minority: list[int]) -> None:
    """A 2|3 split: nobody has a quorum, so no node goes past the height reached just
    after the split; healed, everyone moves on."""
    lab = net.lab
    everyone = list(range(5))
    lab.split(minority)
    load.targets = everyone  # both sides receive transactions
    # in-flight commits (quorum reached before the cut) and catch-up within a side may
    # still land: wait until the heights have stood still for a while
    last: dict[int, int] = {}
    still_since = [time.monotonic()]

    def settled() -> bool:
        now = heights(net, everyone)
        if now != last:
            last.clear()
            last.update(now)
            still_since[0] = time.monotonic()
        return time.monotonic() - still_since[0] > 3.0

    wait_for(settled, "heights to settle after the split", 60)
    frozen = max(last.values())
    observe_until = time.monotonic() + 4.0
    samples = 0
    while time.monotonic() < observe_until:
        for i in everyone:
            try:
                h = heights(net, [i])[i]
            except httpx.HTTPError:
                continue  # a busy node may miss the 5 s timeout; the next round asks again
            samples += 1
            assert h <= frozen, f"node {i} without quorum committed: {h} > {frozen}"
        time.sleep(0.3)
    assert samples >= len(everyone), "could not observe the nodes during the split"
    lab.heal()
    wait_progress(net, everyone, 3, timeout_s=120)


@pytest.mark.xdist_group("partitions")
def test_partitions_keep_safety_and_heal(nsnet: NetnsNetwork) -> None:
    """Quick variant: the primary cut off, then a 2|3 split, then healed."""
    everyone = list(range(5))
    with Load(nsnet, everyone) as load:
        wait_progress(nsnet, everyone, 2, timeout_s=60)
        isolate_primary_round(nsnet, load)
        primary = primary_index(nsnet, 0)
        split_round(nsnet, load, [primary, (primary + 1) % 5])
    assert load.accepted > 0
    top, _tip = wait_converged(nsnet, timeout_s=90)
    assert_same_chain(nsnet, top)


@pytest.mark.slow
@pytest.mark.xdist_group("partitions")
def test_random_partitions_for_minutes(nsnet: NetnsNetwork) -> None:
    """Long variant: random rounds (primary or random node cut off, random 2|3 and 1|4
    splits) for three minutes, converging after each."""
    rng = random.Random()
    everyone = list(range(5))
    deadline = time.monotonic() + 180
    rounds = 0
    with Load(nsnet, everyone) as load:
        while time.monotonic() < deadline:
            kind = rng.choice(["primary", "split2", "split1"])
            if kind == "primary":
                isolate_primary_round(nsnet, load)
            elif kind == "split2":
                split_round(nsnet, load, rng.sample(everyone, 2))
            else:
                lone = rng.choice(everyone)
                nsnet.lab.split([lone])
                rest = [i for i in everyone if i != lone]
                load.targets = rest
                wait_progress(nsnet, rest, 3, timeout_s=90)
                nsnet.lab.heal()
                load.targets = everyone
                wait_progress(nsnet, everyone, 2, timeout_s=120)
            rounds += 1
    top, _tip = wait_converged(nsnet, timeout_s=120)
    assert_same_chain(nsnet, top)
    print(f"{rounds} partition rounds, {load.accepted} transactions accepted, height {top}")


# ---------------------------------------------------------------------------- latency / loss


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[TestNetwork, FaultyProxy]]:
    """Five nodes on loopback; each node's genesis address is a proxy port, so every
    peer frame crosses the proxy (clients talk to the nodes directly)."""
    base = free_base_port(10)
    net = TestNetwork.prepare(
        tmp_path, base_port=base, rules="test", consensus=FAST_CONSENSUS, genesis_hook=add_lenders
    )
    assert isinstance(net, TestNetwork)
    proxy = FaultyProxy(delay_s=0.03, drop_every_s=3.0)
    for i, node in enumerate(net.nodes):
        real = base + 5 + i
        text = node.config_path.read_text("utf-8")
        assert f"port = {base + i}\n" in text
        node.config_path.write_text(text.replace(f"port = {base + i}\n", f"port = {real}\n"))
        node.url = f"http://127.0.0.1:{real}"
        proxy.add(base + i, real)
    proxy.start()
    try:
        net.start()
        net.wait_healthy(timeout_s=90)
        yield net, proxy
    finally:
        net.stop()
        proxy.stop()


@pytest.mark.slow
def test_latency_and_dropped_connections(proxied: tuple[TestNetwork, FaultyProxy]) -> None:
    net, proxy = proxied
    everyone = list(range(5))
    with Load(net, everyone) as load:
        t = time.monotonic()
        wait_progress(net, everyone, 10, timeout_s=120)
        took = time.monotonic() - t
        wait_for(lambda: proxy.stats.dropped >= 3, "the proxy to cut connections", 60)
        wait_progress(net, everyone, 3, timeout_s=120)
    top, _tip = wait_converged(net, timeout_s=90)
    assert_same_chain(net, top)
    print(
        f"30 ms one-way delay, a connection cut every ~3 s: 10 blocks in {took:.1f} s; "
        f"{proxy.stats.connections} connections, {proxy.stats.dropped} cut, "
        f"{load.accepted} transactions accepted"
    )
