"""Soak: five real nodes under steady SDK load at half the measured throughput.

No BENCHMARKS.md figure applies to this loader on a shared machine, so the test first
measures what the network sustains with the same SDK load unthrottled (``measure``),
then runs at half of it (``LOAD_SHARE``), with the node's bounded caches made small (see
``SMALL_CACHES``). After a warm-up (three minutes, and until every node's LevelDB has
flushed its first memtable), every node's resident memory is sampled
(``/proc/PID/status``: VmRSS and its parts RssAnon and RssFile) and its queues read
from ``/metrics`` (``wulian_mempool_transactions``, ``wulian_peer_queue_messages``).
Pass: each node's anonymous resident memory (``RssAnon``: everything the process
itself holds — Python objects, C heap, LevelDB's caches and memtables) grows less than
``rss_mb_per_min`` (least-squares slope over the soak), and so does VmRSS, the
issue's figure, which also counts ``RssFile`` — pages of the ledger's table files
that LevelDB maps for reading, i.e. the kernel's page cache, reclaimable at any time
and growing with the ledger, not with the process (docs/reliability.md, "Load
(soak)"); the queues stay under their limits, the load's channel's mempool holds no
more than the closed-loop load can have in flight, the other channels' mempools do not
trend upwards, and the load keeps committing. Both run in ``make soak``: the long
variant soaks for twelve minutes; the quick one (about 30 s of load, loose memory
bound) checks the harness itself.

Each runs twice: on the test rules (write-once k/v), and on the five channels' rules
(``*_channels``: single-event loan reports through the SDK, the relays anchoring them
into the court chain with evidence codes — the last report's code must arrive soon
after the load — and the credit agency's worker syncing; six minutes of warm-up).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.config import load_node_config
from node.relays import ACK_BACKLOG_BLOCKS
from tests.node.netfixture import TestNetwork, start_network
from tests.reliability.conftest import (
    STARTUP_S,
    SdkLoad,
    assert_agreement,
    metric_samples,
    rss_kb,
    rss_parts_kb,
    wait_converged,
    wait_until,
)

pytestmark = [pytest.mark.network, pytest.mark.xdist_group("reliability-soak")]

#: Four SDK threads (two per lender), 50 transactions per batch.
LENDERS = ("lender1", "lender2", "lender1", "lender2")
BATCH = 50
MEMPOOL_LIMIT = 20_000  # consensus.config.ReplicaConfig.mempool_limit
PEER_QUEUE_LIMIT = 20_000  # node.config limits.peer_queue_messages
#: The node's caches are bounded but large (status and nonce memories 200,000 entries,
#: committed-id memory 200,000 per channel, signature caches 16,384 and 32,768): at this load
#: they take an hour to fill, and filling is growth a soak of minutes would call a
#: leak. Small caches fill during the warm-up, so what grows after it is not a cache.
SMALL_CACHES = {"status_cache": 1000, "nonce_cache": 1000}
SMALL_CONSENSUS_CACHES = {
    "recent_committed_limit": 2000,
    "signature_cache_size": 2000,
    "tx_cache_size": 2000,
}
#: The load, as a share of the burst measured at the start. It was 0.8; but ``make
#: soak`` runs the test-rules and the channels' soaks side by side on its two workers,
#: each measuring its burst alone or beside the other's warm-up: with uncompressed
#: tables the test rules' burst came out at 1,151.6 tx/s, and beside the other soak
#: the twelve minutes achieved 437.8 of the 921.2 asked, under the half the test
#: requires (docs/reliability.md, 2026-11-29 00:08), though 840.1 alone. At half the
#: burst both soaks still keep hundreds of transactions a second going.
LOAD_SHARE = 0.5


@dataclass(frozen=True)
class SoakProfile:
    measure_s: float
    warmup_s: float
    soak_s: float
    sample_every_s: float
    rss_mb_per_min: float
    #: After ``warmup_s``, wait up to this long more for every node's first LevelDB
    #: memtable flush (0: do not wait).
    flush_wait_s: float = 0.0


QUICK = SoakProfile(measure_s=8, warmup_s=6, soak_s=20, sample_every_s=2, rss_mb_per_min=30.0)
#: LevelDB's own caches (8 MB block cache, two 4 MB memtables, table index blocks) fill
#: in the first minutes too: the warm-up lasts three, and longer if a node's first
#: memtable has not been flushed yet. Its 4 MB write buffer fills with the ledger's
#: writes (≈ 0.5 MB/min at 10 tx/s: eight minutes). While it filled, RSS still grew
#: 0.7–1.0 MB/min at 10 tx/s with Python's objects flat, most of the 1 MB/min
#: allowed; after the first flush RSS was flat (the next memtable reuses the memory).
#: Twelve minutes of soak: over five, the mapped ledger pages faulted in after the
#: warm-up still lifted VmRSS past 1 MB/min (anonymous memory within it); over twelve
#: both stayed under it (docs/reliability.md, 08:06 run).
SLOW = SoakProfile(
    measure_s=30, warmup_s=180, soak_s=720, sample_every_s=5, rss_mb_per_min=1.0,
    flush_wait_s=480,
)  # fmt: skip

#: The five channels' rules hold more warm-up state than the test rules (the relays'
#: proven-block and verification memories, the receipts' caches, Python's arenas for
#: the larger transactions): over a twelve-minute soak after a three-minute warm-up
#: anonymous memory rose +0.5–0.7 MB/min, +0.1–0.3 in the second half (filling, not
#: growing). Six minutes of warm-up, then the same twelve-minute soak and bounds.
SLOW_CHANNELS = dataclasses.replace(SLOW, warmup_s=360)


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return 60.0 * sum((t - mt) * (v - mv) for t, v in points) / var


def measure_throughput(
    net: TestNetwork, seconds: float, reports_dir: Path | None
) -> tuple[float, int]:
    """Committed transactions per second with the SDK load unthrottled, and how many
    transactions it sent were not seen committed (:attr:`SdkLoad.unresolved`)."""
    load = SdkLoad(net, lenders=LENDERS, batch=BATCH, reports_dir=reports_dir).start()
    try:
        wait_until(lambda: load.committed_count() > 0, 60, "first commit")
        n0, t0 = load.committed_count(), time.monotonic()
        time.sleep(seconds)
        n1, t1 = load.committed_count(), time.monotonic()
    finally:
        load.stop()
    return (n1 - n0) / (t1 - t0), load.unresolved


def memtable_flushed(net: TestNetwork) -> bool:
    """True once every node's LevelDB has written a table file (its first memtable
    flush): until then its write buffer is still filling."""
    return all(
        any(load_node_config(node.config_path).ledger_dir.glob("*.ldb")) for node in net.nodes
    )


def queue_sizes(net: TestNetwork, i: int, load_channel: str) -> tuple[float, float, float]:
    """Node ``i``'s mempool on ``load_channel``, its largest on the other channels, and
    its largest peer queue."""
    text = net.metrics_text(i)
    mempools = metric_samples(text, "wulian_mempool_transactions")
    label = f'channel="{load_channel}"'
    loaded = max((v for k, v in mempools.items() if label in k), default=0.0)
    others = max((v for k, v in mempools.items() if label not in k), default=0.0)
    peerq = max(metric_samples(text, "wulian_peer_queue_messages").values(), default=0.0)
    return loaded, others, peerq


def run_soak(tmp: Path, p: SoakProfile, *, rules: str = "test") -> None:
    """Soak a ``rules`` network: ``"test"`` (write-once k/v) or ``"channels"`` (the five
    channels' rules: loan reports through the SDK, relays anchoring them into the court
    chain, the credit agency's worker syncing) — see the module docstring."""
    net = start_network(
        tmp, rules=rules, limits=SMALL_CACHES, consensus=SMALL_CONSENSUS_CACHES,
        timeout_s=STARTUP_S,
    )  # fmt: skip
    reports_dir = tmp / "lender-stores" if rules == "channels" else None
    try:
        tput, measure_not_committed = measure_throughput(net, p.measure_s, reports_dir)
        assert tput > 0
        rate = LOAD_SHARE * tput
        load = SdkLoad(
            net, lenders=LENDERS, batch=BATCH, rate_tx_s=rate, reports_dir=reports_dir
        ).start()
        rss: list[list[tuple[float, float]]] = [[] for _ in net.nodes]
        anon: list[list[tuple[float, float]]] = [[] for _ in net.nodes]
        mapped: list[list[tuple[float, float]]] = [[] for _ in net.nodes]
        queues: list[list[tuple[float, float, float]]] = [[] for _ in net.nodes]
        try:
            time.sleep(p.warmup_s)
            flush_note = ""
            if p.flush_wait_s > 0:
                try:
                    waited = wait_until(
                        lambda: memtable_flushed(net), p.flush_wait_s, "first memtable flush",
                        every_s=5,
                    )  # fmt: skip
                    flush_note = f"first memtable flush {waited:.0f} s after the warm-up; "
                except AssertionError:  # a very slow machine: soak anyway, and say so
                    flush_note = "first memtable flush not seen: its filling counts as growth; "
            committed0 = load.committed_count()
            t0 = time.monotonic()
            while (now := time.monotonic() - t0) < p.soak_s:
                for i, node in enumerate(net.nodes):
                    assert node.proc is not None and node.running, f"{node.node_id} died"
                    rss[i].append((now, rss_kb(node.proc.pid) / 1024))
                    a_kb, f_kb = rss_parts_kb(node.proc.pid)
                    anon[i].append((now, a_kb / 1024))
                    mapped[i].append((now, f_kb / 1024))
                    queues[i].append(queue_sizes(net, i, load.channel))
                time.sleep(p.sample_every_s)
            committed = load.committed_count() - committed0
            elapsed = time.monotonic() - t0
        finally:
            load.stop()
        anchor_note = ""
        if reports_dir is not None:
            # the relays kept up: the last report acknowledged gets its evidence code
            # (anchored in the court chain, receipt verified offline) soon after the load
            last = load.acked[-1]
            t_stop = time.monotonic()
            with load.client(*last.source) as sdk:
                sdk.evidence(last.tx_id, index=0, timeout=180)
            anchor_note = (
                f"last report's evidence code {time.monotonic() - t_stop:.1f} s after the load; "
            )
        wait_converged(net, timeout_s=120)
        assert_agreement(net)
        achieved = committed / elapsed
        # The load is a closed loop: each thread waits for its batch to commit (or time
        # out) before the next. Its channel's mempool can hold only what is in flight —
        # a batch per thread, those sent whose commit was not seen (here or in the
        # measurement), and the relays' evidence acknowledgements (a step acknowledges
        # up to ACK_BACKLOG_BLOCKS blocks, and a backup relay may send the same a
        # STAGGER_MS later) — so more than that is piling up. (A trend test of that
        # bounded noise over ten samples failed healthy runs.)
        with load.lock:
            not_committed = load.unresolved + measure_not_committed
        in_flight_bound = len(LENDERS) * BATCH + not_committed + 2 * ACK_BACKLOG_BLOCKS
        report, problems = [], []
        for i, node in enumerate(net.nodes):
            growth = slope_per_min(anon[i])
            late = slope_per_min(anon[i][len(anon[i]) // 2 :])
            rss_growth = slope_per_min(rss[i])
            mp = [m for m, _, _ in queues[i]]
            other = [o for _, o, _ in queues[i]]
            pq = [q for _, _, q in queues[i]]
            report.append(
                f"{node.node_id}: anonymous {anon[i][0][1]:.1f}→{anon[i][-1][1]:.1f} MB "
                f"({growth:+.2f} MB/min; second half {late:+.2f}); VmRSS "
                f"{rss[i][0][1]:.1f}→{rss[i][-1][1]:.1f} MB ({rss_growth:+.2f}, "
                f"of which mapped ledger file pages {slope_per_min(mapped[i]):+.2f}), "
                f"mempool max {max(mp):.0f} ({load.channel}), {max(other):.0f} (others), "
                f"peer queue max {max(pq):.0f}"
            )
            if growth >= p.rss_mb_per_min:
                problems.append(f"{node.node_id}: anonymous memory grows {growth:.2f} MB/min")
            if rss_growth >= p.rss_mb_per_min:
                # the issue's own figure; mapped ledger pages count in it (see above)
                problems.append(f"{node.node_id}: VmRSS grows {rss_growth:.2f} MB/min")
            if max(mp + other) >= MEMPOOL_LIMIT or max(pq) >= PEER_QUEUE_LIMIT:
                problems.append(f"{node.node_id}: a queue reached its limit")
            if max(mp) > in_flight_bound:
                problems.append(
                    f"{node.node_id}: the {load.channel} mempool held {max(mp):.0f} "
                    f"transactions, more than the load can have in flight ({in_flight_bound})"
                )
            third = max(1, len(other) // 3)
            # the relays' and workers' channels: the last third is not piling up over
            # the first (slack: 2 batches)
            if sum(other[-third:]) / third > 2 * sum(other[:third]) / third + 2 * BATCH:
                problems.append(f"{node.node_id}: a mempool of another channel keeps growing")
        summary = (
            f"{flush_note}{anchor_note}{rules} rules soak: measured {tput:.1f} tx/s, ran "
            f"{rate:.1f} tx/s target, achieved {achieved:.1f} tx/s over {elapsed:.0f} s; "
            + "; ".join(report)
        )
        print(summary)
        assert achieved >= 0.5 * rate, f"load fell behind: {summary}"
        assert not problems, f"{problems}: {summary}"
    finally:
        net.stop()


@pytest.mark.slow
def test_soak_quick(tmp_path: Path) -> None:
    """About 30 s at half load, loose memory bound: a smoke run of the harness (about
    70 s with the network's start, too dear for ``make test``)."""
    run_soak(tmp_path, QUICK)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_soak_minutes(tmp_path: Path) -> None:
    """Twelve minutes at half load: anonymous RSS and VmRSS < 1 MB/min per node,
    queues bounded (``make soak``)."""
    run_soak(tmp_path, SLOW)


@pytest.mark.slow
def test_soak_quick_channels(tmp_path: Path) -> None:
    """The quick soak on the five channels' rules (reports, relays, workers)."""
    run_soak(tmp_path, QUICK, rules="channels")


@pytest.mark.slow
@pytest.mark.timeout(2700)
def test_soak_minutes_channels(tmp_path: Path) -> None:
    """Twelve minutes at half load on the five channels' rules: loan reports, the
    relays anchoring them with evidence codes, the credit worker — the same bounds."""
    run_soak(tmp_path, SLOW_CHANNELS, rules="channels")
