"""``wulian bench --quick --json``: a real five-node network driven by the SDK; every
figure of issue #9 is present and sane (correctness, not speed: the machine is shared)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from consensus.config import ReplicaConfig
from node.bench import QUIET_SAMPLE_S
from node.localnet import REPO_ROOT

FIGURES = (
    "ed25519_verify_us",
    "ceiling_signed_tx_per_s",
    "latency_idle_1tx_p50_ms",
    "latency_idle_10tx_p50_ms",
    "latency_idle_100tx_p50_ms",
    "idle_1tx_node_cpu_ms",
    "tx_per_s",
    "latency_full_p50_ms",
    "latency_full_p95_ms",
    "latency_full_p99_ms",
    "half_load_tx_per_s",
    "latency_half_p50_ms",
    "latency_half_p99_ms",
    "achieved_over_ceiling",
    "anchored_records_per_s",
    "anchoring_delay_p50_ms",
    "anchoring_node_cpu_ms_per_record",
    "api_evidence_per_s",
    "offline_receipt_verify_ms",
    "catch_up_blocks_per_s",
    "primary_kill_to_commit_ms",
    "node_peak_rss_mb_max",
    "ledger_bytes_per_record",
)


def _env() -> dict[str, str]:
    """The environment for a ``wulian bench`` subprocess: this checkout importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


@pytest.mark.timeout(900)
def test_bench_quick_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = _env()
    proc = subprocess.run(
        # two kills: the loop (the quick default is one kill)
        [
            sys.executable,
            "-m",
            "node.cli",
            "bench",
            "--quick",
            "--json",
            str(out),
            "--primary-kills",
            "2",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=850,
    )
    assert out.exists(), proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["format"] == "wulian-bench/1"
    assert doc["skipped"] == {}, doc["skipped"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    f = doc["figures"]
    missing = [k for k in FIGURES if not isinstance(f.get(k), int | float)]
    assert not missing, f"figures missing: {missing}"
    assert all(f[k] > 0 for k in FIGURES), f
    # sane relations, whatever the speed
    assert f["latency_full_p50_ms"] <= f["latency_full_p95_ms"] <= f["latency_full_p99_ms"]
    assert f["latency_half_p50_ms"] <= f["latency_half_p99_ms"]
    half = doc["details"]["half_load"]  # the requests the percentiles rest on
    assert half["requests"] >= 1 and half["worst_request_ms"] >= f["latency_half_p99_ms"]
    trace = half["trace"]  # one [s into the window, ms, node index] per request, in order
    assert len(trace) == half["requests"]
    assert [t[0] for t in trace] == sorted(t[0] for t in trace)
    assert max(t[1] for t in trace) == half["worst_request_ms"]
    assert {t[2] for t in trace} <= set(range(5))
    # the host sampled on the settled network; the sample taken on the backlog kept aside
    settle = doc["details"]["half_load_settle"]
    assert 0 < settle["host_ed25519_us_before"] < 10_000, settle
    for size in ("1", "10", "100"):  # every idle request committed, min ≤ p50 ≤ max
        idle = doc["details"]["idle_latency"]["sizes"][size]
        assert idle["committed"] == idle["requests"] == 3, idle
        assert idle["min_ms"] <= f[f"latency_idle_{size}tx_p50_ms"] <= idle["max_ms"]
        assert idle["node_cpu_ms_per_request"] >= 0
    assert (
        f["idle_1tx_node_cpu_ms"]
        == doc["details"]["idle_latency"]["sizes"]["1"]["node_cpu_ms_per_request"]
    )
    assert 0 <= doc["details"]["idle_latency"]["idle_node_cores"] < doc["machine"]["cores"]
    assert f["tx_invalid"] == 0  # every report was valid under the real channel rules
    assert 0 < f["achieved_over_ceiling"] < 2
    assert f["ceiling_signed_tx_per_s"] == pytest.approx(
        doc["machine"]["cores"] * 1e6 / (f["ed25519_verify_us"] * 5), rel=0.01
    )
    assert f["tx_committed"] >= f["tx_per_s"]  # the window lasted at least a second
    assert f["catch_up_blocks"] > 0
    assert doc["details"]["catch_up"]["others_settle_s"] >= QUIET_SAMPLE_S  # it waited
    # the restarted node's supervision driver checked, applied and wrote the blocks
    stages = doc["details"]["catch_up"]["driver_seconds"]["supervision"]
    assert all(stages.get(s, 0) > 0 for s in ("step", "apply", "write")), stages
    # most of them from their state deltas, proven by the certified roots: only the
    # blocks whose roots no header among them certifies yet were applied
    events = doc["details"]["catch_up"]["catchup_events"]["supervision"]
    # the top window's blocks may instead come from the votes the peers queued for the
    # node while it was down (observed commits): since session 27 a block holding an
    # evidence acknowledgement waits until the node has applied the judicial block it
    # names, and the queued votes can win that race
    window = ReplicaConfig.__dataclass_fields__["window"].default
    assert events["blocks"] >= f["catch_up_blocks"] - window
    assert events["blocks"] // 2 <= events["delta_blocks"] < events["blocks"], events
    assert events.get("delta_refused", 0) == 0
    # and the five nodes' supervision drivers did all three in the full-load window
    stages = doc["details"]["throughput"]["driver_seconds"]["supervision"]
    assert all(stages.get(s, 0) > 0 for s in ("step", "apply", "write")), stages
    kills = doc["details"]["primary_kill"]["runs"]  # the figure is the slowest of the kills
    assert f["primary_kill_runs"] == len(kills) == 2
    assert f["primary_kill_to_commit_ms"] == max(k["ms"] for k in kills)
    # the view changes each phase saw, by node/channel/timer: killing the primary made
    # survivors start some on the supervision channel
    vct = doc["details"]["view_change_timeouts"]
    assert set(vct) == set(doc["details"]["phase_s"])
    # the host's signature speed, sampled as each phase started
    host = doc["details"]["host_ed25519_us"]
    assert set(host) == set(doc["details"]["phase_s"])
    assert all(0 < us < 10_000 for us in host.values()), host
    started = {
        k: n
        for k, n in vct["primary_kill"].items()
        if k.split("/")[1] == "supervision" and k.split("/")[2] != "prepared_grace"
    }
    assert started and all(n >= 1 for n in started.values()), vct
    assert f["records_reported"] > f["anchored_records"] > 0
    assert f["ledger_bytes"] > f["records_reported"]  # each record costs bytes
    # every evidence item that did not verify is accounted for by what it answered
    failures = doc["details"]["evidence"]["verify_failures"]
    assert sum(failures.values()) == f["api_evidence_errors"], failures
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["memory_mb"] > 0
    # the summary printed for people names the headline figures
    assert "signed tx committed" in proc.stdout and "anchored records" in proc.stdout
    assert "latency on an idle network" in proc.stdout
    # no node is left behind
    data_dir = doc["details"]["data_dir"]
    leftover = subprocess.run(["pgrep", "-f", f"{data_dir}/"], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""


def test_phases_select_what_runs_and_add_prerequisites() -> None:
    from node.bench import PHASES, BenchConfig

    every = BenchConfig.make(True)
    assert [p for p in PHASES if not every.runs(p)] == ["memory"]  # opt-in: minutes long
    assert BenchConfig.make(True, phases=("memory",)).runs("memory")
    only = BenchConfig.make(True, phases=("evidence",))
    assert [p for p in PHASES if only.runs(p)] == ["anchoring", "evidence"]
    half = BenchConfig.make(False, phases=("half_load", "primary_kill"))
    assert [p for p in PHASES if half.runs(p)] == ["throughput", "half_load", "primary_kill"]


def test_unknown_phase_is_a_one_line_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "node.cli", "bench", "--phases", "throughput,warp"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "wulian: error: unknown phase warp (known: idle_latency, throughput, half_load, "
        "anchoring, evidence, catch_up, primary_kill, memory)"
    ]


@pytest.mark.parametrize("flag", ["--primary-kills", "--lenders", "--duration"])
def test_a_size_that_is_not_positive_is_a_one_line_error(flag: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "node.cli", "bench", flag, "0"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    value = "0.0" if flag == "--duration" else "0"
    assert proc.stderr.strip().splitlines() == [
        f"wulian: error: {flag} must be positive, not {value}"
    ]


@pytest.mark.timeout(600)
def test_memory_phase_seeds_the_ledger_and_reads_each_nodes_peak(tmp_path: Path) -> None:
    """``--phases memory``: the records asked for are on every node's ledger (certified
    batch-report blocks), and each node's peak RSS after the restart is reported."""
    from ledger.genesis import load_genesis
    from ledger.store import BlockStore

    out = tmp_path / "bench.json"
    env = _env()
    cmd = [sys.executable, "-m", "node.cli", "bench", "--quick", "--phases", "memory"]
    cmd += ["--memory-records", "2000", "--json", str(out), "--keep"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=550)
    assert out.exists(), proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    data_dir = Path(doc["details"]["data_dir"])
    try:
        assert proc.returncode == 0 and doc["skipped"] == {}, (doc["skipped"], proc.stderr[-2000:])
        f, mem = doc["figures"], doc["details"]["memory"]
        assert mem["blocks_seeded"] == 20 and mem["records_per_block"] == 100
        assert f["memory_records_on_ledger"] >= 2000  # and the trickle's reports
        peaks = mem["peak_rss_mb"]
        assert len(peaks) == 5 and all(v > 20 for v in peaks.values()), peaks
        assert f["memory_peak_rss_mb_max"] == max(peaks.values())
        anon = mem["anon_mb_max"]  # sampled during the hold: below each node's peak RSS
        assert all(0 < anon[k] <= peaks[k] for k in peaks), (anon, peaks)
        assert f["memory_anon_mb_max"] == max(anon.values())
        assert "records on the ledger: peak RSS" in proc.stdout
        genesis = load_genesis(data_dir / "genesis.json")
        for node in sorted((data_dir / "nodes").iterdir()):
            with BlockStore.open(node / "ledger", genesis.hash, create=False) as store:
                seeded = 0
                for h in range(1, store.height("supervision") + 1):
                    block = store.block("supervision", h)
                    assert block is not None
                    sizes = [len(tx.payload.get("records", ())) for tx in block.transactions]
                    seeded += sizes == [100]  # one 100-event batch report: a seeded block
                assert seeded == 20, node.name
    finally:
        shutil.rmtree(data_dir.parent if data_dir.name == "net" else data_dir, ignore_errors=True)


def test_metric_samples_are_read_by_exact_name() -> None:
    """The bench's one reader of a node's /metrics (the settle check's mempools, the
    per-phase view-change timeouts): the named metric's samples only, values parsed,
    and an error status raised rather than read as no samples."""
    import asyncio

    import httpx

    from node.bench import _label, _samples

    text = (
        "# HELP wulian_mempool_transactions Transactions waiting\n"
        'wulian_mempool_transactions{channel="supervision"} 3.0\n'
        'wulian_mempool_transactions{channel="credit"} 0.0\n'
        'wulian_mempool_transactions_total{channel="credit"} 9.0\n'
        'wulian_view_change_timeouts_total{channel="risk",timer="progress"} 2.0\n'
    )

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "down":
            return httpx.Response(503)
        return httpx.Response(200, text=text)

    async def main() -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            pool = await _samples(http, "http://n", "wulian_mempool_transactions")
            vc = await _samples(http, "http://n", "wulian_view_change_timeouts_total")
            with pytest.raises(httpx.HTTPStatusError):
                await _samples(http, "http://down", "wulian_mempool_transactions")
            return pool, vc

    pool, vc = asyncio.run(main())
    assert [(_label(k, "channel"), v) for k, v in pool] == [("supervision", 3.0), ("credit", 0.0)]
    assert [(_label(k, "timer"), v) for k, v in vc] == [("progress", 2.0)]


def test_cpu_above_idle_is_per_request_and_never_negative() -> None:
    from node.bench import _cpu_above_idle_ms

    # 3 s of CPU over 10 s with the nodes idle at 0.2 cores: 1 s of it for 4 requests
    assert _cpu_above_idle_ms(10.0, 13.0, 0.2, 10.0, 4) == 250.0
    assert _cpu_above_idle_ms(10.0, 10.5, 0.2, 10.0, 4) == 0.0  # idle noise: not negative
    assert _cpu_above_idle_ms(None, 13.0, 0.2, 10.0, 4) is None  # not our network
    assert _cpu_above_idle_ms(10.0, 13.0, None, 10.0, 4) is None
    assert _cpu_above_idle_ms(10.0, 13.0, 0.2, 10.0, 0) is None


def test_driver_seconds_over_a_window_sum_each_nodes_growth() -> None:
    """The throughput window's driver time: each node's counters after less before,
    summed by channel and stage; a node missing from either reading is left out, and a
    stage a node first used in the window counts from zero."""
    from node.bench import _catch_up_stages, _rounded, _summed_deltas

    before = {
        0: {"supervision": {"step": 1.0, "apply": 2.0}},
        1: {"supervision": {"step": 5.0}},
        2: {"supervision": {"step": 9.0}},
    }
    after = {
        0: {"supervision": {"step": 1.5, "apply": 2.25, "write": 0.5}},
        1: {"supervision": {"step": 6.0}, "judicial": {"apply": 0.125}},
        3: {"supervision": {"step": 100.0}},  # not read before: left out
    }  # node 2 did not answer the second time: left out
    summed = _summed_deltas(before, after)
    assert summed == {
        "supervision": {"step": 1.5, "apply": 0.25, "write": 0.5},
        "judicial": {"apply": 0.125},
    }
    assert _rounded({"x": {"step": 1.23456}}) == {"x": {"step": 1.23}}
    line = _catch_up_stages({"seconds": 9.5, "driver_seconds": summed})
    assert line == (
        "; the supervision driver since its start: step 1.5 s, apply 0.25 s, write 0.5 s "
        "(window 9.5 s)"
    )
    assert _catch_up_stages(None) == _catch_up_stages({"driver_seconds": {}}) == ""
    events = {"supervision": {"blocks": 200, "delta_blocks": 192}}
    assert _catch_up_stages(
        {"seconds": 9.5, "driver_seconds": summed, "catchup_events": events}
    ).endswith("(window 9.5 s); 192 of its 200 blocks from state deltas")


def test_host_speed_before_the_phases_is_a_range_on_the_ceiling_line() -> None:
    from node.bench import BenchReport, _host_range, summary_lines

    assert _host_range(None) == _host_range({}) == ""
    assert _host_range({"idle_latency": 70.1, "throughput": 98.0, "catch_up": 64.7}) == (
        "; before the phases 64.7–98.0 µs"
    )
    report = BenchReport(machine={"cores": 2})
    report.figures["ed25519_verify_us"] = 66.0
    report.details["host_ed25519_us"] = {"throughput": 66.5, "anchoring": 91.25}
    ceiling = next(line for line in summary_lines(report) if line.startswith("ceiling:"))
    assert ceiling.endswith("; before the phases 66.5–91.25 µs")
