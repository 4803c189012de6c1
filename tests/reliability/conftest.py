"""Shared helpers of the reliability suite (crash, disk and soak tests).

* :class:`SdkLoad` — lenders submitting through the real SDK (:class:`clients.Client`,
  failover over every node) in background threads; remembers every transaction the
  SDK reported as committed (tx id and height).
* :func:`assert_agreement` — every pair of nodes agrees on every channel's blocks up to
  their common height (same block hash at the common height; hash links make that
  the whole prefix, which ``wulian ledger verify`` checks offline).
* :func:`ledger_verify_cli` — ``wulian ledger verify`` on a stopped node's data
  directory, as a separate process.
* :func:`rss_kb`, :func:`metric_samples` — a node's resident memory and its
  Prometheus metrics.
"""

from __future__ import annotations

import hashlib
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from clients import Client as SdkClient
from clients import ClientError, LoanEvent
from ledger.genesis import Genesis
from ledger.ledger_verify import verify_ledger
from ledger.store import BlockStore
from node.commands.ledger_cmd import node_config_of, state_digests
from node.localnet import REPO_ROOT
from tests.node.netfixture import TestNetwork

CHANNELS = ("supervision", "judicial", "risk", "credit", "service")
#: How long a restarted node may take to answer /healthz: seconds on an idle machine,
#: over a minute on a shared CI machine running several networks at once.
STARTUP_S = 180.0


def wait_until(
    cond: Callable[[], bool], timeout_s: float, what: str, *, every_s: float = 0.2
) -> float:
    """Poll ``cond`` until true; return the seconds it took. AssertionError naming
    ``what`` after ``timeout_s`` (exceptions of ``cond`` count as "not yet")."""
    t0 = time.monotonic()
    while True:
        try:
            if cond():
                return time.monotonic() - t0
        except (httpx.HTTPError, OSError, KeyError, ValueError):
            pass
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"{what}: not reached in {timeout_s:.0f} s")
        time.sleep(every_s)


@dataclass
class Acked:
    """A transaction the SDK reported committed, and where."""

    channel: str
    tx_id: bytes
    height: int
    #: The submitting thread's (lender, thread number): :meth:`SdkLoad.client` of it
    #: opens the record store the transaction's records are in.
    source: tuple[str, int] = ("", 0)


@dataclass
class SdkLoad:
    """Lenders submitting batches through the SDK until :meth:`stop`.

    ``rate_tx_s`` (None: as fast as the network takes them) caps the total rate.
    ``reports_dir`` (None: test-rules ``loan_event`` k/v writes) makes every
    transaction a real single-event loan report (the channel rules' ``contract`` event,
    salted and committed by the SDK, its records kept in a record store under that
    directory, one per thread) — the load of a ``rules="channels"`` network. Every
    committed status the SDK returns is appended to :attr:`acked`; submissions the SDK
    gave up on (node unreachable during a crash, not committed in time) are counted in
    :attr:`errors` — they were never acknowledged, so they promise nothing.
    """

    net: TestNetwork
    lenders: Sequence[str] = ("lender1", "lender2")
    channel: str = "supervision"
    batch: int = 10
    rate_tx_s: float | None = None
    reports_dir: Path | None = None
    commit_timeout_s: float = 20.0
    acked: list[Acked] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    submitted: int = 0
    #: transactions sent whose commit was not seen (their wait timed out, or their
    #: request failed): they may still sit in a mempool
    unresolved: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, lender: str, n: int = 0) -> SdkClient:
        store = None if self.reports_dir is None else self.reports_dir / f"{lender}-{n}"
        return SdkClient(
            nodes=self.net.urls,
            genesis=self.net.genesis,
            signer=self.net.signer_of(lender),
            org=lender,
            store=store,
            timeout=5.0,
            commit_timeout=self.commit_timeout_s,
            retries=3,
            batch_size=self.batch,
        )

    def start(self) -> SdkLoad:
        for n, lender in enumerate(self.lenders):
            t = threading.Thread(target=self._run, args=(lender, n), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.commit_timeout_s + 30)
        self._threads.clear()

    def committed_count(self) -> int:
        with self.lock:
            return len(self.acked)

    def _run(self, lender: str, n: int) -> None:
        per_thread = None if self.rate_tx_s is None else self.rate_tx_s / len(self.lenders)
        seq = 0
        with self.client(lender, n) as sdk:
            next_at = time.monotonic()
            while not self._stop.is_set():
                if per_thread is not None:
                    next_at += self.batch / per_thread
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        self._stop.wait(delay)
                    else:
                        next_at = time.monotonic()  # behind: do not burst to catch up
                tag = f"{lender}-{n}-{seq}"
                seq += 1
                try:
                    if self.reports_dir is None:
                        items = sdk.prepare_many(
                            [
                                sdk.build(self.channel, "loan_event", {"k": f"{tag}-{j}", "v": j})
                                for j in range(self.batch)
                            ]
                        )
                    else:
                        items = sdk.prepare_reports(
                            [contract_event(f"{tag}-{j}", j) for j in range(self.batch)]
                        )
                    statuses = sdk.submit_many(items)
                except ClientError as exc:
                    with self.lock:
                        self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
                        self.unresolved += self.batch  # the whole batch may be in a mempool
                    time.sleep(0.2)
                    continue
                with self.lock:
                    self.submitted += len(items)
                    for st in statuses:
                        if st.committed and st.height is not None:
                            self.acked.append(Acked(st.channel, st.tx_id, st.height, (lender, n)))
                        else:
                            self.errors[st.status] = self.errors.get(st.status, 0) + 1
                            self.unresolved += 1


def contract_event(loan_id: str, j: int) -> LoanEvent:
    """A fresh loan contract report (``loan_id`` unique per run)."""
    return LoanEvent(
        report_id=f"{loan_id}-c",
        loan_id=loan_id,
        borrower_ref=hashlib.sha256(loan_id.encode()).digest(),
        event="contract",
        amount_cents=100_000 + j,
        rate_bp=1500,
        term_months=12,
        event_time_ms=int(time.time() * 1000),
    )


def tip_hash(net: TestNetwork, i: int, channel: str, height: int) -> str:
    return str(net.client(i, "bureau").block(channel, height)["hash"]["$hex"])


def assert_agreement(
    net: TestNetwork, indexes: Iterable[int] | None = None, channels: Sequence[str] = CHANNELS
) -> dict[str, int]:
    """Every channel: the nodes hold the same block at their common height (and, spot
    checked, at a random height below). Returns the common height per channel."""
    idx = list(range(len(net.nodes)) if indexes is None else indexes)
    common: dict[str, int] = {}
    rng = random.Random()
    for ch in channels:
        h = min(net.heights(ch, indexes=idx))
        common[ch] = h
        for height in {h, rng.randint(1, h)} if h >= 1 else set():
            hashes = {i: tip_hash(net, i, ch, height) for i in idx}
            assert len(set(hashes.values())) == 1, f"{ch} height {height} differs: {hashes}"
    return common


def wait_converged(net: TestNetwork, timeout_s: float, channels: Sequence[str] = CHANNELS) -> None:
    """Wait until every node reaches every channel's highest height seen now."""
    for ch in channels:
        top = max(net.heights(ch))
        net.wait_heights(ch, top, timeout_s=timeout_s)


def ledger_verify_cli(
    data_dirs: Sequence[Path], genesis: Path, *, timeout_s: float = 240.0
) -> list[subprocess.CompletedProcess[str]]:
    """Run ``wulian ledger verify --data DIR --genesis FILE`` on each stopped data
    directory, as separate processes in parallel."""
    verify = [sys.executable, "-m", "node.cli", "ledger", "verify", "--genesis", str(genesis)]
    procs = [
        subprocess.Popen(
            [*verify, "--data", str(d)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for d in data_dirs
    ]
    out = []
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        out.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return out


def verify_in_process(data_dir: Path, genesis: Genesis) -> list[str]:
    """:func:`ledger.ledger_verify.verify_ledger` on a stopped data directory (what
    ``wulian ledger verify`` runs, without a process start): the problem lines."""
    digests = state_digests(node_config_of(data_dir), genesis)
    return [r.line() for r in verify_ledger(data_dir, genesis, state_digests=digests) if not r.ok]


def node_dir(net: TestNetwork, i: int) -> Path:
    return net.nodes[i].config_path.parent


def missing_acked(net: TestNetwork, i: int, acked: Sequence[Acked]) -> list[Acked]:
    """The acknowledged transactions that node ``i``'s (stopped) ledger lacks, or holds
    at another height than the SDK was told."""
    with BlockStore.open(
        node_dir(net, i) / "ledger", net.genesis.hash, create=False, verify_recent=0
    ) as store:
        out = []
        for a in acked:
            loc = store.tx_location(a.channel, a.tx_id)
            if loc is None or loc.height != a.height:
                out.append(a)
        return out


def rss_kb(pid: int) -> int:
    """VmRSS of a process in KiB (from /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"no VmRSS for pid {pid}")


def rss_parts_kb(pid: int) -> tuple[int, int]:
    """(RssAnon, RssFile) of a process in KiB: anonymous memory (heaps, caches) and
    file pages mapped into it (LevelDB maps its table files: page cache that grows as
    the ledger grows and is read, and that the kernel can reclaim)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            fields[key] = int(rest.split()[0])
    return fields["RssAnon"], fields["RssFile"]


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def metric_samples(text: str, name: str) -> dict[str, float]:
    """The samples of metric ``name`` in Prometheus text: ``{labels: value}``."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1) == name:
            out[m.group(2) or ""] = float(m.group(3))
    return out
