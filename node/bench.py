"""``wulian bench``'s engine: drive a five-node network with simulated lenders and
measure what it does for its users (issue #9; results in BENCHMARKS.md).

One run, in phases, against a fresh local network it starts in a temp dir (or, with
``target``, a running ``wulian up`` directory — then only the phases that need no
process control run):

1. ``ceiling``: the cost of one ed25519 verification of a signed single-event loan
   report on this machine; ``cores / (cost × replicas)`` is the best possible signed
   tx/s when every replica verifies every transaction on this machine.
2. ``throughput``: lenders (one :class:`clients.AsyncClient` each, spread over the
   nodes) submit single-event ``loan_event`` reports through the SDK's batch submit as
   fast as the network commits them (closed loop) for ``duration_s``; committed tx/s
   and the commit latency (send → committed answer) percentiles.
3. ``half_load``: once the network is idle, the same lenders paced (open loop) at half the
   achieved rate, with the full-load request size, for ``half_duration_s`` (30 s: ~75
   requests of 100, which the percentiles rest on; ``details.half_load``).
4. ``anchoring``: batch reports (``records_per_tx`` events per transaction) until
   every record has an evidence code; records/s end to end and anchoring delay.
5. ``evidence``: records verified by the court through the API's batch route
   (verifications/s), receipts fetched through the API (receipts/s), and a receipt
   verified offline by the SDK (ms per receipt).
6. ``primary_kill``: SIGKILL the supervision primary under a trickle of load; time
   to the next committed block on the survivors; ``primary_kills`` times (3), each
   once the last victim is back and level; the figure is the slowest.
7. ``catch_up`` (runs last): the network stopped, four nodes given ``catchup_blocks``
   (10,000) more certified supervision blocks of loan reports (:mod:`node.seed`),
   restarted; once their relays and workers are through that backlog (the four
   quiet: :data:`QUIET_CPU_SHARE`), the fifth is started; blocks/s until it is level.
8. ``memory`` (only when named in ``--phases``: minutes): every node's ledger seeded
   up to ``memory_records`` (10⁶) loan-event records in certified blocks of one
   ``records_per_tx``-event batch report (:mod:`node.seed`), the network restarted, and
   each node's peak RSS over ``memory_hold_s`` of a trickle of load while the relays
   and workers start on the new backlog.
9. ``resources``: each node's peak RSS (VmHWM) and the ledger's bytes per record.

Every figure is a plain number in :class:`BenchReport`'s ``figures`` (``None`` with a
reason in ``skipped`` when a phase could not run). Raises :class:`RuntimeError` when
the network cannot be started; failures inside a phase are recorded, not raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import resource
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

from clients import AsyncClient, LoanEvent, PreparedTransaction, TxStatus
from ledger.blocks import Transaction
from ledger.crypto import ED25519
from ledger.genesis import Genesis, load_genesis
from ledger.hashing import TAG_TX
from ledger.keyfile import load_key_file
from ledger.request_auth import sign_request
from node.channel import DRIVER_STAGES
from node.config import DEFAULT_ACK_DELAY_MS
from node.localnet import DEMO_LENDER, LocalNetwork, add_lender_orgs, admit_lenders, free_base_port
from node.seed import level_nodes

SUPERVISION = "supervision"
JUDICIAL = "judicial"
#: Consensus settings of the bench network (the node defaults, stated explicitly).
BENCH_CONSENSUS: dict[str, int] = {"batch_interval_ms": 20, "base_timeout_ms": 1000}


#: The phases of a run, in order (``--phases`` picks some).
PHASES: Final = (
    "idle_latency",
    "throughput",
    "half_load",
    "anchoring",
    "evidence",
    "catch_up",
    "primary_kill",
    "memory",
)
#: Phases run only when ``--phases`` names them (minutes long).
OPT_IN_PHASES: Final = frozenset({"memory"})
#: idle_latency: request sizes (signed single-event reports per request), requests of
#: each size (``--quick``: 3), and the pause before each (the network settles).
IDLE_SIZES: Final = (1, 10, 100)
IDLE_REQUESTS: Final = 10
IDLE_GAP_S: Final = 0.3
#: How long the idle phase measures the nodes' own idle CPU before its requests.
IDLE_BASELINE_S: Final = 3.0
#: The mempools stay empty this long before a phase counts the network as idle: longer
#: than acknowledgements wait before they are sent (node.config.DEFAULT_ACK_DELAY_MS).
SETTLE_HOLD_S: Final = DEFAULT_ACK_DELAY_MS / 1000 + 1.0
#: A phase that needs another's results.
PHASE_NEEDS: Final = {"half_load": "throughput", "evidence": "anchoring"}
#: Loan reports in each block of the catch-up backlog.
CATCH_UP_TXS_PER_BLOCK: Final = 2
#: Catch-up starts once the four up-to-date nodes are done with the seeded backlog: all
#: of them together below this share of one core over QUIET_SAMPLE_S seconds (four
#: idle nodes with a peer down use ~17 % here).
QUIET_CPU_SHARE: Final = 0.25
QUIET_SAMPLE_S: Final = 2.0


#: ed25519 verifications timed before each phase (the host's speed then; --quick: fewer).
HOST_SAMPLE_VERIFIES: Final = 1000
HOST_SAMPLE_VERIFIES_QUICK: Final = 200


def _host_range(host: Mapping[str, float] | None) -> str:
    """``"; before the phases 64.7–98.0 µs"`` from ``details.host_ed25519_us`` (phase →
    µs), or "" when there is none."""
    if not host:
        return ""
    lo, hi = min(host.values()), max(host.values())
    return f"; before the phases {lo}–{hi} µs"


def _signed_report() -> Transaction:
    """One signed single-event loan report (a fresh key), as the lenders send them."""
    from clients._records import build_loan_events
    from ledger.crypto import Ed25519Signer

    signer = Ed25519Signer.generate()
    ev = LoanEvent(
        report_id="r", loan_id="l", borrower_ref=b"\x01" * 32, event="contract",
        amount_cents=1, rate_bp=1, term_months=1, event_time_ms=1,
    )  # fmt: skip
    tx_type, payload, _records = build_loan_events("x", [ev])
    return Transaction(
        network=b"\x00" * 32, channel=SUPERVISION, type=tx_type, sender="x",
        public_key=signer.public_key, nonce=1, time_ms=1, payload=payload,
    ).signed(signer)  # fmt: skip


def _verify_seconds(tx: Transaction, n: int) -> float:
    """Seconds one ed25519 verification of ``tx``'s signature takes here (mean of
    ``n``)."""
    msg, sig, pk = tx.body_bytes, tx.signature, tx.public_key
    t = time.perf_counter()
    for _ in range(n):
        ED25519.verify(pk, TAG_TX, msg, sig)
    return (time.perf_counter() - t) / n


@dataclass(frozen=True)
class BenchConfig:
    """What to run. ``quick`` picks small sizes so the whole run takes < 60 s."""

    quick: bool = False
    target: Path | None = None
    duration_s: float = 30.0
    lenders: int = 8
    txs_per_request: int = 100
    half_duration_s: float = 30.0
    anchor_txs: int = 20
    records_per_tx: int = 1000
    evidence_s: float = 10.0
    catchup_blocks: int = 10_000
    primary_kills: int = 3
    memory_records: int = 1_000_000
    memory_hold_s: float = 60.0
    keep: bool = False
    #: Run only these phases (None: all of :data:`PHASES` but the opt-in ones,
    #: :data:`OPT_IN_PHASES`); a phase's prerequisite
    #: (throughput before half_load, anchoring before evidence) is added for it.
    phases: tuple[str, ...] | None = None

    def runs(self, phase: str) -> bool:
        if self.phases is None:
            return phase not in OPT_IN_PHASES
        needed = set(self.phases)
        for later, before in PHASE_NEEDS.items():
            if later in needed:
                needed.add(before)
        return phase in needed

    @staticmethod
    def make(quick: bool, **overrides: Any) -> BenchConfig:
        if quick:
            base = BenchConfig(
                quick=True, duration_s=5.0, lenders=4, txs_per_request=50,
                half_duration_s=3.0, anchor_txs=4, records_per_tx=100, evidence_s=2.0,
                catchup_blocks=200, primary_kills=1, memory_records=5_000, memory_hold_s=3.0,
            )  # fmt: skip
        else:
            base = BenchConfig()
        vals = {k: v for k, v in overrides.items() if v is not None}
        return BenchConfig(**{**base.__dict__, **vals})


@dataclass
class BenchReport:
    """The figures (flat name → number), per-phase details, and skipped phases."""

    figures: dict[str, float | int | None] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "wulian-bench/1",
            "machine": self.machine,
            "config": self.config,
            "figures": self.figures,
            "details": self.details,
            "skipped": self.skipped,
        }


TIMEOUTS_METRIC = "wulian_view_change_timeouts_total"
DRIVER_METRIC = "wulian_driver_seconds_total"
CATCHUP_METRIC = "wulian_catchup_total"
#: the catch-up events the phase reports (``wulian_catchup_total``; docs/node.md)
CATCHUP_EVENTS_SHOWN = frozenset({"blocks", "delta_blocks", "delta_refused"})


async def _samples(http: httpx.AsyncClient, url: str, metric: str) -> list[tuple[str, float]]:
    """The samples of ``metric`` on the node at ``url``, as (``name{labels}`` part,
    value). Raises :class:`httpx.HTTPError` if the node does not answer with 2xx."""
    r = await http.get(url + "/metrics", timeout=10.0)
    r.raise_for_status()
    prefix = metric + "{"
    out: list[tuple[str, float]] = []
    for line in r.text.splitlines():
        if line.startswith(prefix):
            labels, _, value = line.rpartition(" ")
            out.append((labels, float(value)))
    return out


def _cpu_above_idle_ms(
    cpu0: float | None, cpu1: float | None, idle_cores: float | None, wall_s: float, n: int
) -> float | None:
    """CPU milliseconds per request between two readings ``cpu0``/``cpu1`` (seconds)
    ``wall_s`` apart, less ``idle_cores`` × ``wall_s``; None if anything is unknown."""
    if cpu0 is None or cpu1 is None or idle_cores is None or n <= 0:
        return None
    return round(max(0.0, cpu1 - cpu0 - idle_cores * wall_s) / n * 1000, 1)


def _label(sample: str, name: str) -> str:
    """The value of label ``name`` in a Prometheus sample's ``name{a="x",…}`` part
    ("" if absent)."""
    _, found, rest = sample.partition(f'{name}="')
    return rest.split('"', 1)[0] if found else ""


def _pct(values: Sequence[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


async def _timed_submit(
    client: AsyncClient, batch: Sequence[PreparedTransaction], timeout_s: float
) -> tuple[list[TxStatus], float]:
    """Submit ``batch`` and wait until it is committed (the SDK's ``submit_many``);
    returns its statuses and the seconds from the request sent to the last answer."""
    t = time.monotonic()
    statuses = await client.submit_many(batch, timeout=timeout_s)
    return statuses, time.monotonic() - t


def machine_info() -> dict[str, Any]:
    """Cores, memory, CPU model, load average, Python — for the report's header."""
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_mb": mem_kb // 1024,
        "loadavg_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _status_mb(pid: int, *field_names: str) -> dict[str, float]:
    """``/proc/PID/status`` memory fields (``VmHWM:``, ``RssAnon:``…) in MB, from one
    read; fields not found (or an unreadable file) are left out."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            parts = line.split()
            if parts and parts[0] in field_names:
                out[parts[0]] = int(parts[1]) / 1024
    except (OSError, ValueError):
        return {}
    return out


def _peak_rss_mb(pid: int) -> float | None:
    return _status_mb(pid, "VmHWM:").get("VmHWM:")


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (None if unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / f).stat().st_size
    return total


class _Lenders:
    """The simulated lenders: one AsyncClient each (own record store), and a fresh
    stream of single-event ``contract`` reports (unique report and loan ids)."""

    def __init__(self, genesis: Genesis, data: Path, ids: Sequence[str], urls: Sequence[str]):
        self.genesis = genesis
        self.ids = list(ids)
        self.clients: list[AsyncClient] = []
        self.http = httpx.AsyncClient(
            timeout=60.0, limits=httpx.Limits(max_connections=200, max_keepalive_connections=100)
        )
        store_root = Path(tempfile.mkdtemp(prefix="wulian-bench-stores-"))
        self.store_root = store_root
        for i, lender in enumerate(self.ids):
            rotated = list(urls[i % len(urls) :]) + list(urls[: i % len(urls)])
            self.clients.append(
                AsyncClient(
                    rotated,
                    genesis=genesis,
                    key_file=data / "keys" / f"{lender}.key",
                    store=store_root / lender,
                    timeout=30.0,  # per HTTP request: a loaded node answers late
                    commit_timeout=300.0,
                    evidence_timeout=300.0,
                    batch_size=2000,
                    http=self.http,
                )
            )
        self._seq = 0
        self.run_tag = secrets.token_hex(3)

    def events(self, n: int) -> list[LoanEvent]:
        now = int(time.time() * 1000)
        out = []
        for _ in range(n):
            self._seq += 1
            loan = f"B{self.run_tag}-{self._seq}"
            out.append(
                LoanEvent(
                    report_id=f"{loan}-c",
                    loan_id=loan,
                    borrower_ref=secrets.token_bytes(32),
                    event="contract",
                    amount_cents=100_000 + self._seq % 1000,
                    rate_bp=1500,
                    term_months=12,
                    event_time_ms=now,
                )
            )
        return out

    async def prepare_single(self, client: AsyncClient, n: int) -> list[PreparedTransaction]:
        return await client.prepare_reports(self.events(n))

    async def close(self) -> None:
        for c in self.clients:
            await c.aclose()
        await self.http.aclose()
        shutil.rmtree(self.store_root, ignore_errors=True)


async def _height(http: httpx.AsyncClient, url: str, hdr: Callable[[str], dict[str, str]]) -> int:
    path = f"/v1/channels/{SUPERVISION}"
    r = await http.get(url + path, headers=hdr(path), timeout=5.0)
    r.raise_for_status()
    return int(r.json()["height"])


class Bench:
    """One benchmark run (see the module docstring)."""

    def __init__(self, config: BenchConfig, log: Callable[[str], None] = lambda s: None) -> None:
        self.config = config
        self.log = log
        self.report = BenchReport(machine=machine_info(), config=dict(config.__dict__))
        self.report.config["target"] = str(config.target) if config.target else None
        self.net: LocalNetwork | None = None
        self._tmp: Path | None = None
        # timed by the ceiling phase, then again before each phase (_aphase)
        self._sample_tx = _signed_report()

    # ------------------------------------------------------------------ setup

    def _start(self) -> tuple[Genesis, Path, list[str], list[str]]:
        cfg = self.config
        if cfg.target is not None:
            data = cfg.target.resolve()
            genesis = load_genesis(data / "genesis.json")
            if not (data / "keys" / f"{DEMO_LENDER}.key").exists():
                raise RuntimeError(f"{data}: no keys/{DEMO_LENDER}.key (not a `wulian up` dir?)")
            urls = [n.address for n in genesis.nodes]
            return genesis, data, [DEMO_LENDER], urls
        raise AssertionError("no target")  # pragma: no cover

    def _start_local(self) -> tuple[Genesis, Path, list[str], list[str]]:
        cfg = self.config
        self._tmp = Path(tempfile.mkdtemp(prefix="wulian-bench-"))
        self.report.details["data_dir"] = str(self._tmp / "net")
        lenders = [f"bench-lender-{i}" for i in range(cfg.lenders)]
        net = LocalNetwork.prepare(
            self._tmp / "net",
            base_port=free_base_port(),
            consensus=BENCH_CONSENSUS,
            genesis_hook=lambda d: add_lender_orgs(d, lenders, name=lambda i: f"Bench {i}"),
        )
        self.net = net
        net.start()
        net.wait_healthy(timeout_s=90)
        admit_lenders(net.data_dir, net.genesis, lenders, timeout_s=60)
        return net.genesis, net.data_dir, lenders, net.urls

    def _stop(self) -> None:
        if self.net is not None:
            self.net.stop()
        if self._tmp is not None and not self.config.keep:
            shutil.rmtree(self._tmp, ignore_errors=True)

    # ------------------------------------------------------------------ run

    def run(self) -> BenchReport:
        """Run every phase; always stops the network it started."""
        cfg = self.config
        t0 = time.monotonic()
        self._phase("ceiling", self._ceiling)
        try:
            if cfg.target is not None:
                genesis, data, lenders, urls = self._start()
            else:
                genesis, data, lenders, urls = self._start_local()
            self.report.details["setup_s"] = round(time.monotonic() - t0, 2)
            asyncio.run(self._run_async(genesis, data, lenders, urls))
        finally:
            self._resources()
            self._stop()
        self.report.details["total_s"] = round(time.monotonic() - t0, 2)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.report.details["load_generator_cpu_s"] = round(ru.ru_utime + ru.ru_stime, 2)
        return self.report

    def _phase(self, name: str, fn: Callable[[], None]) -> None:
        self.log(f"bench: {name}…")
        try:
            fn()
        except Exception as exc:  # recorded; the run goes on
            self.report.skipped[name] = f"{type(exc).__name__}: {exc}"
            self.log(f"bench: {name} failed: {exc}")

    async def _aphase(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
        self.log(f"bench: {name}…")
        # the host's speed as the phase starts: a shared VM's varies from one minute to
        # the next, and every figure of the phase with it (BENCHMARKS.md)
        self._sample_host(name)
        t = time.monotonic()
        before, pids = await self._timeouts(), self._pids()
        try:
            await fn()
        except Exception as exc:  # recorded; the run goes on
            self.report.skipped[name] = f"{type(exc).__name__}: {exc}"
            self.log(f"bench: {name} failed: {exc}")
        phase_s = self.report.details.setdefault("phase_s", {})
        phase_s[name] = round(time.monotonic() - t, 2)
        after = await self._timeouts()
        # view changes the nodes started in the phase (and prepared-grace waits), by
        # "node index/channel/timer": a phase's tail often is one (BENCHMARKS.md)
        restarted = {i for i, pid in self._pids().items() if pids.get(i) != pid}
        delta = {
            k: int(v - before.get(k, 0))
            for k, v in after.items()
            if v > before.get(k, 0) and int(k.split("/", 1)[0]) not in restarted
        }
        timeouts = self.report.details.setdefault("view_change_timeouts", {})
        timeouts[name] = dict(sorted(delta.items()))

    def _sample_host(self, phase: str) -> None:
        """Time an ed25519 verification in this process now and record it as
        ``details.host_ed25519_us[phase]`` (µs; replaces an earlier sample)."""
        n = HOST_SAMPLE_VERIFIES_QUICK if self.config.quick else HOST_SAMPLE_VERIFIES
        host = self.report.details.setdefault("host_ed25519_us", {})
        host[phase] = round(_verify_seconds(self._sample_tx, n) * 1e6, 1)

    def _pids(self) -> dict[int, int | None]:
        """Each local node's process id (None if not running); {} for a target network."""
        if self.net is None:
            return {}
        return {
            i: n.proc.pid if n.running and n.proc is not None else None
            for i, n in enumerate(self.net.nodes)
        }

    async def _node_samples(
        self, metric: str, indexes: Iterable[int]
    ) -> dict[int, list[tuple[str, float]]]:
        """``metric``'s samples on each of the given nodes (read concurrently), by node
        index; a node that does not answer is left out."""
        out: dict[int, list[tuple[str, float]]] = {}

        async def one(i: int) -> None:
            try:
                out[i] = await _samples(self._lenders.http, self._urls[i], metric)
            except httpx.HTTPError:
                return

        await asyncio.gather(*(one(i) for i in indexes))
        return out

    async def _timeouts(self) -> dict[str, float]:
        """Every reachable node's ``wulian_view_change_timeouts_total`` samples, keyed
        ``"<node index>/<channel>/<timer>"``; a node that does not answer is left out.
        (:meth:`_aphase` also leaves out a node whose process changed in the phase: its
        counters started again from zero.)"""
        read = await self._node_samples(TIMEOUTS_METRIC, range(len(self._urls)))
        return {
            f"{i}/{_label(labels, 'channel')}/{_label(labels, 'timer')}": value
            for i, samples in read.items()
            for labels, value in samples
        }

    async def _driver_seconds(
        self, indexes: Iterable[int]
    ) -> dict[int, dict[str, dict[str, float]]]:
        """``wulian_driver_seconds_total`` of the given nodes: node index → channel →
        stage → seconds. A diagnosis only: a node that does not answer is left out."""
        return await self._by_channel(DRIVER_METRIC, "stage", indexes)

    async def _by_channel(
        self, metric: str, label: str, indexes: Iterable[int]
    ) -> dict[int, dict[str, dict[str, float]]]:
        """``metric``'s samples on the given nodes: node index → channel → ``label``'s
        value → sample (a node that does not answer is left out)."""
        out: dict[int, dict[str, dict[str, float]]] = {}
        for i, samples in (await self._node_samples(metric, indexes)).items():
            node = out[i] = {}
            for labels, value in samples:
                node.setdefault(_label(labels, "channel"), {})[_label(labels, label)] = value
        return out

    async def _run_async(
        self, genesis: Genesis, data: Path, lender_ids: list[str], urls: list[str]
    ) -> None:
        lenders = _Lenders(genesis, data, lender_ids, urls)
        self._lenders = lenders
        self._genesis = genesis
        self._urls = urls
        bureau = load_key_file(data / "keys" / "bureau.key").signer

        def hdr(path: str) -> dict[str, str]:
            return sign_request(
                bureau, network=genesis.hash, org="bureau", method="GET", path=path, body=b"",
                time_ms=time.time_ns() // 1_000_000, nonce=secrets.token_bytes(16),
            )  # fmt: skip

        self._hdr = hdr
        try:
            cfg = self.config
            for name, fn in (
                ("idle_latency", self._idle_latency),
                ("throughput", self._throughput),
                ("half_load", self._half_load),
                ("anchoring", self._anchoring),
                ("evidence", self._evidence),
            ):
                if cfg.runs(name):
                    await self._aphase(name, fn)
            # catch-up last: it restarts the network on 10,000 seeded blocks
            for name, fn in (
                ("primary_kill", self._primary_kill),
                ("catch_up", self._catch_up),
                ("memory", self._memory),
            ):
                if not cfg.runs(name):
                    continue
                if self.net is None:
                    self.report.skipped[name] = "needs a network started by the bench"
                else:
                    await self._aphase(name, fn)
        finally:
            await lenders.close()

    # ------------------------------------------------------------------ phases

    def _ceiling(self) -> None:
        tx = self._sample_tx
        n = 500 if self.config.quick else 3000
        raw = _verify_seconds(tx, n)
        t = time.perf_counter()
        for _ in range(n):
            Transaction.decode(tx.encoded()).verify_signature()
        full = (time.perf_counter() - t) / n
        cores = os.cpu_count() or 1
        replicas = 5
        f = self.report.figures
        f["ed25519_verify_us"] = round(raw * 1e6, 1)
        f["tx_decode_verify_us"] = round(full * 1e6, 1)
        f["ceiling_signed_tx_per_s"] = round(cores / (raw * replicas))
        self.report.details["ceiling"] = {
            "formula": "cores / (ed25519 verify cost × replicas)",
            "cores": cores,
            "replicas": replicas,
        }

    async def _closed_loop(
        self, duration_s: float, per_request: int
    ) -> tuple[int, list[float], float, int]:
        """Every lender submits back-to-back batches for ``duration_s``; returns
        (committed, latencies_s, elapsed_s, invalid)."""
        lenders = self._lenders
        latencies: list[float] = []
        committed = 0
        invalid = 0
        start = time.monotonic()
        stop_at = start + duration_s

        async def lender(client: AsyncClient) -> None:
            nonlocal committed, invalid
            nxt = asyncio.ensure_future(lenders.prepare_single(client, per_request))
            while time.monotonic() < stop_at:
                batch = await nxt
                nxt = asyncio.ensure_future(lenders.prepare_single(client, per_request))
                statuses, dt = await _timed_submit(client, batch, 300.0)
                for st in statuses:
                    if st.status == "committed":
                        committed += 1
                        latencies.append(dt)
                        if not st.valid:
                            invalid += 1
            nxt.cancel()
            with contextlib.suppress(BaseException):
                await nxt

        await asyncio.gather(*(lender(c) for c in lenders.clients))
        return committed, latencies, time.monotonic() - start, invalid

    async def _idle_latency(self) -> None:
        """One lender, one request at a time, on a network with no other load: what a
        lender reporting events as they happen waits for (dissemination, the three
        phases, every replica's apply and fsyncs), before any backlog exists. One
        uncounted request first (connections, first identity checks), then the network
        settles and its idle CPU is measured."""
        cfg = self.config
        lenders = self._lenders
        client = lenders.clients[0]
        requests = 3 if cfg.quick else IDLE_REQUESTS
        await client.submit_many(await lenders.prepare_single(client, 1), timeout=60.0)
        # start from a settled network (start-up's and that request's anchors, syncs and
        # acks done), and measure what it uses idle: the baseline of the CPU figures
        await self._settle(60.0)
        idle_cores = await self._idle_cores(0.5 if cfg.quick else IDLE_BASELINE_S)
        per_size: dict[str, Any] = {}
        for size in IDLE_SIZES:
            latencies: list[float] = []
            cpu0, t0 = self._nodes_cpu_s(), time.monotonic()
            for _ in range(requests):
                batch = await lenders.prepare_single(client, size)
                await asyncio.sleep(IDLE_GAP_S)
                statuses, dt = await _timed_submit(client, batch, 60.0)
                if all(st.status == "committed" for st in statuses):
                    latencies.append(dt)
            cpu_ms = _cpu_above_idle_ms(
                cpu0, self._nodes_cpu_s(), idle_cores, time.monotonic() - t0, requests
            )
            self.report.figures[f"latency_idle_{size}tx_p50_ms"] = _ms(_pct(latencies, 50))
            if size == 1:
                self.report.figures["idle_1tx_node_cpu_ms"] = cpu_ms
            per_size[str(size)] = {
                "requests": requests,
                "committed": len(latencies),
                "min_ms": _ms(min(latencies, default=None)),
                "max_ms": _ms(max(latencies, default=None)),
                "node_cpu_ms_per_request": cpu_ms,
            }
        self.report.details["idle_latency"] = {
            "lender": lenders.ids[0],
            "latency": "client-side: request sent → its committed answer (wait_ms)",
            "node_cpu": "the five nodes' CPU during a size's requests, less what they used "
            "idle (idle_node_cores, measured just before), per request: what one request "
            "and the blocks it brings (its anchor, credit sync, acks) cost the network",
            "idle_node_cores": None if idle_cores is None else round(idle_cores, 3),
            "sizes": per_size,
        }

    async def _idle_cores(
        self, window_s: float, indexes: Sequence[int] | None = None
    ) -> float | None:
        """The cores the network's nodes (or the nodes ``indexes``) use over
        ``window_s`` (None: not ours, or one unreadable)."""
        c0 = self._nodes_cpu_s(indexes)
        await asyncio.sleep(window_s)
        c1 = self._nodes_cpu_s(indexes)
        return None if c0 is None or c1 is None else (c1 - c0) / window_s

    async def _throughput(self) -> None:
        cfg = self.config
        # warm-up: connections, identity checks, first blocks
        await self._closed_loop(1.0 if cfg.quick else 3.0, cfg.txs_per_request)
        h0 = max((await self._heights(range(len(self._urls)))).values(), default=0)
        nodes = range(len(self._urls))
        driver0 = await self._driver_seconds(nodes)
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        cpu0 = self._nodes_cpu_s()
        n, lat, elapsed, invalid = await self._closed_loop(cfg.duration_s, cfg.txs_per_request)
        cpu1 = self._nodes_cpu_s()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        driver1 = await self._driver_seconds(nodes)
        h1 = max((await self._heights(range(len(self._urls)))).values(), default=h0)
        f = self.report.figures
        rate = n / elapsed
        f["tx_per_s"] = round(rate, 1)
        f["tx_committed"] = n
        f["tx_invalid"] = invalid
        f["tx_window_s"] = round(elapsed, 2)
        f["latency_full_p50_ms"] = _ms(_pct(lat, 50))
        f["latency_full_p95_ms"] = _ms(_pct(lat, 95))
        f["latency_full_p99_ms"] = _ms(_pct(lat, 99))
        f["blocks_per_s"] = round((h1 - h0) / elapsed, 2)
        gen_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        f["load_generator_cpu_share"] = round(gen_cpu / elapsed / (os.cpu_count() or 1), 3)
        if cpu0 is not None and cpu1 is not None and n:
            # CPU the five nodes spent per committed tx: comparable across runs even
            # on a machine shared with other work (wall-clock rates are not)
            f["node_cpu_ms_per_tx"] = round((cpu1 - cpu0) * 1000 / n, 3)
        ceiling = f.get("ceiling_signed_tx_per_s")
        if isinstance(ceiling, (int, float)) and ceiling:
            f["achieved_over_ceiling"] = round(rate / ceiling, 3)
        self.report.details["throughput"] = {
            "lenders": cfg.lenders,
            "txs_per_request": cfg.txs_per_request,
            "events_per_tx": 1,
            "latency": "client-side: batch request sent → its committed answer",
            # the five nodes' drivers over the window, summed: channel → stage → seconds
            "driver_seconds": _rounded(_summed_deltas(driver0, driver1)),
        }

    async def _half_load(self) -> None:
        cfg = self.config
        full = self.report.figures.get("tx_per_s")
        if not isinstance(full, (int, float)) or full <= 0:
            raise RuntimeError("no full-load rate to halve")
        target = full / 2
        # measured on an idle network, not on the backlog the full-load phase left
        waited, idle = await self._settle(120.0)
        # The phase's host sample was taken while the nodes still worked through the
        # full load's backlog (session 25: 201.5 and 320.5 µs, against 64 as the
        # full-load phase began): it is kept here, and the host sampled again now.
        before = self.report.details.get("host_ed25519_us", {}).get("half_load")
        self.report.details["half_load_settle"] = {
            "waited_s": round(waited, 1),
            "idle": idle,
            "host_ed25519_us_before": before,
        }
        self._sample_host("half_load")
        lenders = self._lenders
        # The full-load phase's request shape at half its rate. (2-transaction requests
        # at ~60/s were an overload in requests even at half the transactions: the
        # per-request work — signed request, JSON, the SDK's fsynced record store —
        # then sets the latency; BENCHMARKS.md.)
        per_req = max(1, cfg.txs_per_request)
        interval = per_req * len(lenders.clients) / target
        latencies: list[float] = []
        committed = 0
        tasks: list[asyncio.Task[None]] = []
        start = time.monotonic()
        stop_at = start + cfg.half_duration_s

        request_s: list[float] = []
        # per request: seconds into the window it left, its latency (ms), the node it
        # went to (index into the network's nodes): a node slower than the others
        # shows as its lenders' requests (how a node left alone in a view was found)
        trace: list[tuple[float, float, int]] = []
        nodes = len(self._urls)

        async def one(k: int, client: AsyncClient, batch: list[PreparedTransaction]) -> None:
            nonlocal committed
            sent = time.monotonic() - start
            statuses, dt = await _timed_submit(client, batch, 300.0)
            request_s.append(dt)
            trace.append((round(sent, 3), round(dt * 1000, 1), k % nodes))
            for st in statuses:
                if st.status == "committed":
                    committed += 1
                    latencies.append(dt)

        async def lender(k: int, client: AsyncClient) -> None:
            nxt = start + interval * k / len(lenders.clients)
            while nxt < stop_at:
                batch = await lenders.prepare_single(client, per_req)
                await asyncio.sleep(max(0.0, nxt - time.monotonic()))
                tasks.append(asyncio.create_task(one(k, client, batch)))
                nxt += interval

        await asyncio.gather(*(lender(k, c) for k, c in enumerate(lenders.clients)))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - start
        f = self.report.figures
        f["half_load_target_tx_per_s"] = round(target, 1)
        f["half_load_tx_per_s"] = round(committed / elapsed, 1)
        f["latency_half_p50_ms"] = _ms(_pct(latencies, 50))
        f["latency_half_p95_ms"] = _ms(_pct(latencies, 95))
        f["latency_half_p99_ms"] = _ms(_pct(latencies, 99))
        # every transaction of a request has its latency: the percentiles rest on this
        # many requests (p99 of a few dozen is about their worst)
        self.report.details["half_load"] = {
            "requests": len(request_s),
            "txs_per_request": per_req,
            "window_s": cfg.half_duration_s,
            "worst_request_ms": _ms(max(request_s, default=None)),
            "trace": sorted(trace),
        }

    async def _anchoring(self) -> None:
        cfg = self.config
        lenders = self._lenders
        clients = lenders.clients
        per_client = max(1, cfg.anchor_txs // len(clients))
        prepared: list[tuple[AsyncClient, PreparedTransaction]] = []
        for c in clients:
            for _ in range(per_client):
                p = await c.prepare_report(lenders.events(cfg.records_per_tx))
                prepared.append((c, p))
        records = len(prepared) * cfg.records_per_tx
        cpu0 = self._nodes_cpu_s()
        start = time.monotonic()
        committed_at: dict[bytes, float] = {}
        anchored_at: dict[bytes, float] = {}

        async def follow(client: AsyncClient, p: PreparedTransaction) -> None:
            st: TxStatus = await client.submit(p, timeout=300.0)
            committed_at[p.tx_id] = time.monotonic()
            deadline = time.monotonic() + 300.0
            delay = 0.05
            while not st.evidence_codes:
                if time.monotonic() > deadline:
                    raise RuntimeError("no evidence codes within 300 s")
                await asyncio.sleep(delay)
                delay = min(0.5, delay * 1.5)
                st = await client.status(p.tx_id)
            if list(st.evidence_codes) != p.expected_evidence_codes():
                raise RuntimeError("node returned unexpected evidence codes")
            anchored_at[p.tx_id] = time.monotonic()

        await asyncio.gather(*(follow(c, p) for c, p in prepared))
        cpu1 = self._nodes_cpu_s()
        elapsed = max(anchored_at.values()) - start
        delays = [anchored_at[k] - committed_at[k] for k in anchored_at]
        f = self.report.figures
        f["anchored_records_per_s"] = round(records / elapsed, 1)
        f["anchored_records"] = records
        f["anchoring_delay_p50_ms"] = _ms(_pct(delays, 50))
        f["anchoring_delay_max_ms"] = _ms(max(delays))
        if cpu0 is not None and cpu1 is not None:
            f["anchoring_node_cpu_ms_per_record"] = round((cpu1 - cpu0) * 1000 / records, 3)
        self._anchored = prepared

    async def _evidence(self) -> None:
        cfg = self.config
        anchored: list[tuple[AsyncClient, PreparedTransaction]] = getattr(self, "_anchored", [])
        if not anchored:
            raise RuntimeError("no anchored records (anchoring phase failed)")
        client, p = anchored[0]
        # offline: the SDK's evidence() fetches one receipt and verifies it offline
        ev = await client.evidence(p, index=0, timeout=60.0)
        record = p.records[0]
        n = 50 if cfg.quick else 300
        t = time.perf_counter()
        for _ in range(n):
            rep = client.verify(ev.receipt, record)
        offline = (time.perf_counter() - t) / n
        if not rep.ok:
            raise RuntimeError(f"receipt does not verify offline: {rep.failures}")
        f = self.report.figures
        f["offline_receipt_verify_ms"] = round(offline * 1e3, 3)
        # API: the court verifies lenders' records (code + commitment from the lender's
        # store) in batches through POST /v1/evidence/verify; every item must verify
        items: list[dict[str, str]] = []
        for _c, q in anchored:
            codes = q.expected_evidence_codes()
            if len(codes) != len(q.records):
                raise RuntimeError("records and evidence codes differ in number")
            items += [
                {"code": code, "commitment": rec.commitment.hex()}
                for code, rec in zip(codes, q.records, strict=True)
            ]
        verify_batch, verifiers = 256, 8  # items per request (the route's maximum), callers
        http = self._lenders.http
        if cfg.target is not None:
            data = cfg.target.resolve()
        elif self.net is not None:
            data = self.net.data_dir
        else:
            raise RuntimeError("no network data directory")
        court = load_key_file(data / "keys" / "court.key").signer
        network = self._genesis.hash
        rng = secrets.SystemRandom()
        batch = min(verify_batch, len(items))
        path = "/v1/evidence/verify"
        verified = 0
        failures: Counter[str] = Counter()  # items not verified, by result or HTTP status

        async def verifier(k: int, stop_at: float) -> None:
            nonlocal verified
            url = self._urls[k % len(self._urls)]
            while time.monotonic() < stop_at:
                body = json.dumps({"items": rng.sample(items, batch)}).encode()
                headers = sign_request(
                    court, network=network, org="court", method="POST", path=path, body=body,
                    time_ms=time.time_ns() // 1_000_000, nonce=secrets.token_bytes(16),
                )  # fmt: skip
                headers["content-type"] = "application/json"
                r = await http.post(url + path, content=body, headers=headers, timeout=60.0)
                if r.status_code != 200:
                    failures[f"http {r.status_code}"] += batch
                    continue
                results = r.json().get("results", [])
                for x in results:
                    if x.get("result") == "verified":
                        verified += 1
                    else:
                        failures[str(x.get("result"))] += 1
                if len(results) < batch:  # items the node did not answer
                    failures["missing"] += batch - len(results)

        start = time.monotonic()
        await asyncio.gather(*(verifier(k, start + cfg.evidence_s) for k in range(verifiers)))
        elapsed = time.monotonic() - start
        f["api_evidence_per_s"] = round(verified / elapsed, 1)
        f["api_evidence_errors"] = sum(failures.values())
        # API: receipts (the node assembles and proves) fetched concurrently
        receipts = receipt_errors = 0

        async def fetcher(k: int, stop_at: float) -> None:
            nonlocal receipts, receipt_errors
            url = self._urls[k % len(self._urls)]
            while time.monotonic() < stop_at:
                rpath = f"/v1/evidence/{rng.choice(items)['code']}/receipt"
                r = await http.get(url + rpath, headers=self._hdr(rpath), timeout=30.0)
                if r.status_code == 200:
                    receipts += 1
                else:
                    receipt_errors += 1

        start = time.monotonic()
        await asyncio.gather(*(fetcher(k, start + cfg.evidence_s) for k in range(16)))
        elapsed = time.monotonic() - start
        f["api_receipts_per_s"] = round(receipts / elapsed, 1)
        f["api_receipts_errors"] = receipt_errors
        self.report.details["evidence"] = {
            "api_route": "POST /v1/evidence/verify as the court (code + commitment items)",
            "batch_items": batch,
            "concurrency": verifiers,
            "records": len(items),
            "receipts_route": "GET /v1/evidence/{code}/receipt as the bureau",
            "receipts_concurrency": 16,
            "verify_failures": dict(failures),  # result (or HTTP status) → items
        }

    async def _trickle(self, stop: asyncio.Event) -> None:
        """Light load (a small batch every 50 ms from one lender) until ``stop``."""
        lenders = self._lenders
        client = lenders.clients[0]
        pending: set[asyncio.Task[Any]] = set()
        while not stop.is_set():
            batch = await lenders.prepare_single(client, 5)
            task = asyncio.create_task(client.submit_many(batch, timeout=300.0))
            pending.add(task)
            task.add_done_callback(pending.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)
        for t in list(pending):
            with contextlib.suppress(BaseException):
                await t

    async def _settle(self, timeout_s: float) -> tuple[float, bool]:
        """Wait until no node has held a pending transaction on any channel for
        :data:`SETTLE_HOLD_S` (the previous phase's work — anchors, credit syncs, and
        the acknowledgements that wait ``[relay] ack_delay_ms`` — is done), at most
        ``timeout_s``; returns (seconds waited, whether the network got idle)."""
        start = time.monotonic()
        empty_since: float | None = None
        http = self._lenders.http

        async def pending(url: str) -> float:
            return sum(v for _, v in await _samples(http, url, "wulian_mempool_transactions"))

        while True:
            counts = await asyncio.gather(*(pending(u) for u in self._urls))
            now = time.monotonic()
            waited = now - start
            if any(counts):
                empty_since = None
            elif empty_since is None:
                empty_since = now
            elif now - empty_since >= SETTLE_HOLD_S:
                return waited, True
            if waited > timeout_s:
                self.log(f"bench: network not idle after {timeout_s:.0f} s: {counts}")
                return waited, False
            await asyncio.sleep(0.5)

    async def _heights(self, indexes: Sequence[int]) -> dict[int, int]:
        out: dict[int, int] = {}

        async def one(i: int) -> None:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                out[i] = await _height(self._lenders.http, self._urls[i], self._hdr)

        await asyncio.gather(*(one(i) for i in indexes))
        return out

    async def _wait_quiet(self, indexes: Sequence[int], timeout_s: float) -> tuple[float, bool]:
        """Wait until the nodes ``indexes`` together use less than
        :data:`QUIET_CPU_SHARE` of one core over :data:`QUIET_SAMPLE_S`, at most
        ``timeout_s``; returns (seconds waited, whether they got quiet)."""
        start = time.monotonic()
        while True:
            cores = await self._idle_cores(QUIET_SAMPLE_S, indexes)
            if cores is not None and cores < QUIET_CPU_SHARE:
                return time.monotonic() - start, True
            if time.monotonic() - start > timeout_s:
                return time.monotonic() - start, False

    def _nodes_cpu_s(self, indexes: Sequence[int] | None = None) -> float | None:
        """Total CPU seconds of the network's node processes, or of the nodes
        ``indexes`` (None: not ours, or one unreadable)."""
        if self.net is None:
            return None
        nodes = self.net.nodes if indexes is None else [self.net.nodes[i] for i in indexes]
        vals = [_cpu_s(n.proc.pid) for n in nodes if n.proc is not None]
        return None if not vals or None in vals else sum(v for v in vals if v is not None)

    def _primary_index(self, view: int) -> int:
        assert self.net is not None
        node_id = self._genesis.channel(SUPERVISION).validators.primary(view)
        return next(i for i, n in enumerate(self.net.nodes) if n.node_id == node_id)

    async def _primary_kill(self) -> None:
        """Kill the supervision primary ``primary_kills`` times, each once the previous
        victim is back and level (one slow replacement — a doubled view-change timeout
        left over from an earlier phase — must not hide behind one quick run); the
        figure is the slowest, each run is in the details."""
        runs: list[dict[str, Any]] = []
        for _ in range(self.config.primary_kills):
            runs.append(await self._kill_primary_once())
        times = [r["ms"] for r in runs]
        f = self.report.figures
        f["primary_kill_to_commit_ms"] = None if None in times else max(times)
        f["primary_kill_runs"] = len(runs)
        self.report.details["primary_kill"] = {"runs": runs}

    async def _kill_primary_once(self) -> dict[str, Any]:
        """SIGKILL the current primary under a trickle of load; time to a block of a
        later view on a survivor; restart the victim and wait until it is level."""
        net = self.net
        assert net is not None
        path = f"/v1/channels/{SUPERVISION}"
        r = await self._lenders.http.get(self._urls[0] + path, headers=self._hdr(path))
        view = int(r.json().get("view", 0))
        victim = self._primary_index(view)
        others = [i for i in range(len(net.nodes)) if i != victim]
        stop = asyncio.Event()
        trickle = asyncio.create_task(self._trickle(stop))
        try:
            await asyncio.sleep(1.0)
            t_kill = time.monotonic()
            await asyncio.to_thread(net.kill, victim)
            elapsed = None
            mark: int | None = None  # height when a survivor had moved to a new view
            while time.monotonic() - t_kill < 60.0:
                states = await self._states(others)
                moved = [h for h, v in states if v > view]
                if mark is None and moved:
                    mark = max(h for h, _v in states)
                elif mark is not None and max(h for h, _v in states) > mark:
                    elapsed = time.monotonic() - t_kill  # a block of the new view
                    break
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            await trickle
        await asyncio.to_thread(net.start, [victim])
        await asyncio.to_thread(net.wait_healthy, 60.0, [victim])
        await self._wait_level(victim, others, 120.0)
        return {"victim": net.nodes[victim].node_id, "view": view, "ms": _ms(elapsed)}

    async def _wait_level(self, node: int, others: Sequence[int], timeout_s: float) -> None:
        """Wait until ``node``'s supervision height reaches the others' (as read once
        now). Raises RuntimeError after ``timeout_s``."""
        goal = max((await self._heights(others)).values(), default=0)
        deadline = time.monotonic() + timeout_s
        while (await self._heights([node])).get(node, -1) < goal:
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {node} not level at {goal} in {timeout_s:.0f} s")
            await asyncio.sleep(0.1)

    async def _states(self, indexes: Sequence[int]) -> list[tuple[int, int]]:
        """(height, view) of the supervision channel at each answering node."""
        path = f"/v1/channels/{SUPERVISION}"
        out: list[tuple[int, int]] = []

        async def one(i: int) -> None:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                r = await self._lenders.http.get(
                    self._urls[i] + path, headers=self._hdr(path), timeout=2.0
                )
                doc = r.json()
                out.append((int(doc["height"]), int(doc.get("view", 0))))

        await asyncio.gather(*(one(i) for i in indexes))
        return out or [(0, 0)]

    async def _catch_up(self) -> None:
        """Stop the network, bring the five level on supervision (nodes stopped while
        committing can be a block apart), give four of them ``catchup_blocks`` more blocks
        (certified offline with the validators' keys and applied by each node's own
        driver: :mod:`node.seed`; single-event loan reports of a bench lender), start
        them, then the fifth, and time how fast it fetches, checks and applies them."""
        net = self.net
        assert net is not None
        cfg = self.config
        path = f"/v1/channels/{SUPERVISION}"
        r = await self._lenders.http.get(self._urls[0] + path, headers=self._hdr(path))
        primary = self._primary_index(int(r.json().get("view", 0)))
        lag = next(i for i in range(len(net.nodes) - 1, -1, -1) if i != primary)
        others = [i for i in range(len(net.nodes)) if i != lag]
        goal, seed_s = await self._stop_and_seed(
            others, cfg.catchup_blocks, CATCH_UP_TXS_PER_BLOCK, 1
        )
        await asyncio.to_thread(net.start, others)
        await asyncio.to_thread(net.wait_healthy, 90.0, others)
        # the seeded blocks are new to the four nodes' relays and workers: they anchor,
        # acknowledge, sync and scan them first, as they would have block by block
        settle_s, quiet = await self._wait_quiet(others, 30.0 if cfg.quick else 300.0)
        t0 = time.monotonic()
        await asyncio.to_thread(net.start, [lag])
        proc = net.nodes[lag].proc
        self.log(f"bench: catching up: {net.nodes[lag].node_id}, pid {proc and proc.pid}")
        await asyncio.to_thread(net.wait_healthy, 90.0, [lag])
        t_healthy = time.monotonic()
        h_lag0 = (await self._heights([lag])).get(lag, 0)
        while True:
            h = (await self._heights([lag])).get(lag, 0)
            if h >= goal:
                break
            if time.monotonic() - t0 > 600:
                raise RuntimeError(f"node {lag} at {h} did not reach {goal} in 600 s")
            await asyncio.sleep(0.05)
        t_done = time.monotonic()
        # where the restarted node's channel drivers spent the catch-up (its counters
        # started with the process): checking answers, applying, writing, waiting
        driver = _rounded((await self._driver_seconds([lag])).get(lag, {}))
        # and how it caught up: blocks committed from answers, of them taken from their
        # state deltas (not applied), deltas refused
        events = (await self._by_channel(CATCHUP_METRIC, "event", [lag])).get(lag, {})
        behind = goal - h_lag0
        f = self.report.figures
        f["catch_up_blocks"] = behind
        f["catch_up_blocks_per_s"] = round(behind / max(1e-3, t_done - t_healthy), 1)
        f["catch_up_total_s"] = round(t_done - t0, 2)
        self.report.details["catch_up"] = {
            "node": net.nodes[lag].node_id,
            "blocks_seeded": cfg.catchup_blocks,
            "txs_per_block": CATCH_UP_TXS_PER_BLOCK,
            "seed_s": round(seed_s, 1),
            "others_settle_s": round(settle_s, 1),
            "others_quiet": quiet,
            "note": "blocks/s counted from the restarted node answering /healthz",
            "seconds": round(t_done - t_healthy, 2),
            "driver_seconds": driver,
            "catchup_events": {
                ch: {k: int(v) for k, v in ev.items() if k in CATCHUP_EVENTS_SHOWN}
                for ch, ev in events.items()
            },
        }

    async def _stop_and_seed(
        self, seed: Iterable[int], n_blocks: int, txs_per_block: int, events_per_tx: int
    ) -> tuple[int, float]:
        """Stop the network (each node's peak RSS kept: the restart resets VmHWM), bring
        the nodes level on supervision and give the nodes ``seed`` ``n_blocks`` more
        blocks (:meth:`_seed`). Returns the new supervision height and the seconds it
        took. On failure the network is started again (the next phase needs it) and
        the error raised; on success the caller starts it."""
        net = self.net
        assert net is not None
        self._peak_rss = self._peaks()
        await asyncio.to_thread(net.stop)
        t = time.monotonic()
        try:
            paths = [n.config_path for n in net.nodes]
            # judicial first: supervision blocks holding evidence acknowledgements read
            # the court chain's anchor entries, and would wait for them for ever here
            await asyncio.to_thread(level_nodes, paths, JUDICIAL)
            await asyncio.to_thread(level_nodes, paths, SUPERVISION)
            height = await asyncio.to_thread(
                self._seed, [paths[i] for i in seed], n_blocks, txs_per_block, events_per_tx
            )
        except BaseException:
            await asyncio.to_thread(net.start)
            raise
        return height, time.monotonic() - t

    def _seed(
        self,
        config_paths: list[Path],
        n_blocks: int,
        txs_per_block: int,
        events_per_tx: int,
    ) -> int:
        """Seed ``n_blocks`` certified supervision blocks of ``txs_per_block`` reports of
        ``events_per_tx`` events (blocking); returns the new supervision height."""
        from clients._records import build_loan_events
        from node.seed import seed_blocks

        net = self.net
        assert net is not None
        lenders = self._lenders
        lender = lenders.ids[0]
        signer = load_key_file(net.data_dir / "keys" / f"{lender}.key").signer
        validators = net.genesis.channel(SUPERVISION).validators.validators
        keys = {
            v.node_id: load_key_file(net.data_dir / "keys" / f"{v.node_id}.key").signer
            for v in validators
        }

        def txs(_h: int) -> list[Transaction]:
            out = []
            for _ in range(txs_per_block):
                tx_type, payload, _records = build_loan_events(
                    lender, lenders.events(events_per_tx)
                )
                out.append(
                    Transaction(
                        network=net.genesis.hash, channel=SUPERVISION, type=tx_type,
                        sender=lender, public_key=signer.public_key,
                        nonce=secrets.randbits(62), time_ms=int(time.time() * 1000),
                        payload=payload,
                    ).signed(signer)
                )  # fmt: skip
            return out

        return seed_blocks(config_paths, SUPERVISION, n_blocks, txs, keys)

    async def _memory(self) -> None:
        """Seed every stopped node up to ``memory_records`` records on the ledger (blocks
        of one batch report of ``records_per_tx`` events), restart the network, and read
        each node's VmHWM — its peak since the restart — after ``memory_hold_s`` of a
        trickle of load, sampling its anonymous and file-backed memory each second."""
        net = self.net
        assert net is not None
        cfg = self.config
        lenders = self._lenders
        per_tx = max(1, min(cfg.records_per_tx, 1000))
        blocks = max(0, -(-(cfg.memory_records - lenders._seq) // per_tx))
        _height, seed_s = await self._stop_and_seed(range(len(net.nodes)), blocks, 1, per_tx)
        await asyncio.to_thread(net.start)
        await asyncio.to_thread(net.wait_healthy, 120.0)
        # VmRSS counts LevelDB's memory-mapped table files (clean file pages the kernel
        # reclaims under pressure) beside the process's own (anonymous) memory
        samples: dict[str, list[tuple[float, float]]] = {n.node_id: [] for n in net.nodes}
        stop = asyncio.Event()
        trickle = asyncio.create_task(self._trickle(stop))
        try:
            deadline = time.monotonic() + cfg.memory_hold_s
            while True:
                for n in net.nodes:
                    mem = _status_mb(n.proc.pid, "RssAnon:", "RssFile:") if n.proc else {}
                    if len(mem) == 2:
                        samples[n.node_id].append((mem["RssAnon:"], mem["RssFile:"]))
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        finally:
            stop.set()
            await trickle
        hwm = {
            n.node_id: (_peak_rss_mb(n.proc.pid) if n.proc is not None else None) for n in net.nodes
        }
        vals = [v for v in hwm.values() if v is not None]
        f = self.report.figures
        anon = {k: max((a for a, _f in v), default=None) for k, v in samples.items()}
        anon_vals = [v for v in anon.values() if v is not None]
        f["memory_records_on_ledger"] = lenders._seq
        f["memory_peak_rss_mb_max"] = round(max(vals), 1) if vals else None
        f["memory_anon_mb_max"] = round(max(anon_vals), 1) if anon_vals else None
        self.report.details["memory"] = {
            "blocks_seeded": blocks,
            "records_per_block": per_tx,
            "seed_s": round(seed_s, 1),
            "hold_s": cfg.memory_hold_s,
            "peak_rss_mb": {k: (round(v, 1) if v is not None else None) for k, v in hwm.items()},
            "anon_mb_max": {k: (round(v, 1) if v is not None else None) for k, v in anon.items()},
            "file_mb_last": {k: (round(v[-1][1], 1) if v else None) for k, v in samples.items()},
            "note": "VmHWM since the restart with the seeded ledger: start-up, the relays "
            "and workers starting on the backlog, a trickle of reports",
        }

    def _peaks(self) -> dict[str, float | None]:
        """Each node's peak RSS (VmHWM) in MB, and not below what it was before the
        catch-up phase restarted it."""
        net = self.net
        assert net is not None
        before = getattr(self, "_peak_rss", {})
        out: dict[str, float | None] = {}
        for n in net.nodes:
            now = _peak_rss_mb(n.proc.pid) if n.proc is not None else None
            vals = [v for v in (now, before.get(n.node_id)) if v is not None]
            out[n.node_id] = max(vals) if vals else None
        return out

    def _resources(self) -> None:
        net = self.net
        f = self.report.figures
        if net is None:
            self.report.skipped["resources"] = "needs a network started by the bench"
            return
        rss = self._peaks()
        vals = [v for v in rss.values() if v is not None]
        f["node_peak_rss_mb_max"] = round(max(vals), 1) if vals else None
        self.report.details["node_peak_rss_mb"] = {
            k: (round(v, 1) if v is not None else None) for k, v in rss.items()
        }
        lenders = getattr(self, "_lenders", None)
        records = lenders._seq if lenders is not None else 0
        ledger = net.nodes[0].config_path.parent / "ledger"
        size = _dir_bytes(ledger)
        f["ledger_bytes"] = size
        f["records_reported"] = records
        f["ledger_bytes_per_record"] = round(size / records, 1) if records else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def run_bench(config: BenchConfig, log: Callable[[str], None] = lambda s: None) -> BenchReport:
    """Run the benchmark; see :class:`Bench`. Raises RuntimeError if the network
    cannot be started (``LedgerError`` from a bad ``target`` directory)."""
    return Bench(config, log).run()


def _summed_deltas(
    before: Mapping[int, Mapping[str, Mapping[str, float]]],
    after: Mapping[int, Mapping[str, Mapping[str, float]]],
) -> dict[str, dict[str, float]]:
    """Per channel and stage, the growth of each node's counters from ``before`` to
    ``after``, summed over the nodes read both times."""
    out: dict[str, dict[str, float]] = {}
    for i, channels in after.items():
        if i not in before:
            continue
        for channel, stages in channels.items():
            total = out.setdefault(channel, {})
            for stage, value in stages.items():
                was = before[i].get(channel, {}).get(stage, 0.0)
                total[stage] = total.get(stage, 0.0) + value - was
    return out


def _rounded(seconds: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    return {ch: {k: round(v, 2) for k, v in st.items()} for ch, st in seconds.items()}


def _catch_up_stages(details: Mapping[str, Any] | None) -> str:
    """``"; the supervision driver since its start: step 11.8 s, apply 9.0 s, write 10.3
    s (window 31.5 s)"`` from the catch-up phase's details ("" without them): where the
    restarted node's supervision driver spent its time (``wulian_driver_seconds_total``)."""
    if not details:
        return ""
    stages = details.get("driver_seconds", {}).get(SUPERVISION)
    if not stages:
        return ""
    order = {stage: i for i, stage in enumerate(DRIVER_STAGES)}
    spent = ", ".join(
        f"{k} {v} s" for k, v in sorted(stages.items(), key=lambda kv: order.get(kv[0], 99))
    )
    window = details.get("seconds")
    line = f"; the {SUPERVISION} driver since its start: {spent} (window {window} s)"
    events = details.get("catchup_events", {}).get(SUPERVISION, {})
    if events.get("blocks"):
        line += (
            f"; {events.get('delta_blocks', 0)} of its {events['blocks']} blocks from state deltas"
        )
    return line


def summary_lines(report: BenchReport) -> list[str]:
    """Human-readable lines for the terminal."""
    f = report.figures
    m = report.machine

    def g(k: str, unit: str = "") -> str:
        v = f.get(k)
        return "—" if v is None else f"{v}{unit}"

    lines = [
        f"machine: {m.get('cores')} cores, {m.get('memory_mb')} MB, {m.get('cpu')}",
        f"ceiling: ed25519 verify {g('ed25519_verify_us', ' µs')} → "
        f"{g('ceiling_signed_tx_per_s')} signed tx/s (cores / (verify × 5 replicas))"
        + _host_range(report.details.get("host_ed25519_us")),
        f"signed tx committed: {g('tx_per_s')} tx/s over {g('tx_window_s', ' s')} "
        f"({g('blocks_per_s')} blocks/s); achieved/ceiling {g('achieved_over_ceiling')}; "
        f"node CPU {g('node_cpu_ms_per_tx', ' ms')}/tx",
        f"  latency on an idle network, one request at a time (p50): 1 tx "
        f"{g('latency_idle_1tx_p50_ms', ' ms')}, 10 txs {g('latency_idle_10tx_p50_ms', ' ms')}, "
        f"100 txs {g('latency_idle_100tx_p50_ms', ' ms')}; node CPU per one-report "
        f"request {g('idle_1tx_node_cpu_ms', ' ms')} (above idle)",
        f"  latency at full load: p50 {g('latency_full_p50_ms', ' ms')}, "
        f"p95 {g('latency_full_p95_ms', ' ms')}, p99 {g('latency_full_p99_ms', ' ms')}",
        f"  latency at half load ({g('half_load_tx_per_s')} tx/s): "
        f"p50 {g('latency_half_p50_ms', ' ms')}, p95 {g('latency_half_p95_ms', ' ms')}, "
        f"p99 {g('latency_half_p99_ms', ' ms')}",
        f"anchored records: {g('anchored_records_per_s')} records/s; anchoring delay "
        f"p50 {g('anchoring_delay_p50_ms', ' ms')}, max {g('anchoring_delay_max_ms', ' ms')}; "
        f"node CPU {g('anchoring_node_cpu_ms_per_record', ' ms')}/record",
        f"evidence via API: {g('api_evidence_per_s')} verifications/s (batch verify); "
        f"{g('api_receipts_per_s')} receipts/s; offline receipt verify "
        f"{g('offline_receipt_verify_ms', ' ms')}",
        f"catch-up: {g('catch_up_blocks_per_s')} blocks/s ({g('catch_up_blocks')} blocks)"
        + _catch_up_stages(report.details.get("catch_up")),
        f"primary kill → next commit: {g('primary_kill_to_commit_ms', ' ms')} "
        f"(slowest of {g('primary_kill_runs')})",
        f"memory with {g('memory_records_on_ledger')} records on the ledger: peak RSS "
        f"{g('memory_peak_rss_mb_max', ' MB')}, of it anonymous at most "
        f"{g('memory_anon_mb_max', ' MB')} (max over nodes; the rest LevelDB's mapped files)",
        f"peak RSS per node (max): {g('node_peak_rss_mb_max', ' MB')}; ledger "
        f"{g('ledger_bytes_per_record', ' B')}/record",
    ]
    for name, why in report.skipped.items():
        lines.append(f"skipped {name}: {why}")
    return lines
