"""Golden transcripts: deterministic lockstep runs, printed one line per event.

Each line is ``<virtual ms> <event>``: a message delivered (``src->dst`` and a summary
with short hashes), a block committed, a view entered, evidence recorded. The test
diffs the run against ``testdata/<name>.txt``; any change in the protocol's behaviour
shows up as a readable diff. After an intended change, regenerate with::

    WULIAN_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/consensus/test_golden.py
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from test_replica_harness import CHANNEL, Cluster

from consensus import PrePrepare, Ready, sign
from ledger.blocks import build_block

TESTDATA = Path(__file__).parent / "testdata"
QUIET = {"status_interval_ms": 60_000}  # one STATUS round at start, then quiet


def normal_case() -> Cluster:
    c = Cluster(5, transcript=True, max_batch_txs=3, batch_interval_ms=20, **QUIET)
    c.tick(0)
    c.submit("n2", c.clients.txs(5))
    c.run(100)
    assert c.check_chains() == 2
    return c


def view_change_after_primary_crash() -> Cluster:
    c = Cluster(5, transcript=True, max_batch_txs=3, batch_interval_ms=20, **QUIET)
    c.tick(0)
    c.submit("n0", c.clients.txs(3))
    c.run(100)
    c._log("--- n0 (primary of view 0) crashes ---")
    c.crash("n0")
    c.submit("n3", c.clients.txs(2))
    c.run_until(lambda: all(c.apps[n].height == 2 for n in c.live()), 5000)
    c.run(50)
    assert c.replicas["n1"].view == 1
    assert c.check_chains(c.live()) == 2
    return c


def equivocating_primary() -> Cluster:
    """n0 sends block A to n1 and n2, and a conflicting block B to n2, n3 and n4."""
    c = Cluster(5, transcript=True, max_batch_txs=3, batch_interval_ms=20, **QUIET)
    c.tick(0)
    sent_b: list[bytes] = []

    def equivocate(name: str, rd: Ready, height: int) -> None:
        if name != "n0" or sent_b:
            return
        for out in rd.messages:
            pp = out.message
            if isinstance(pp, PrePrepare):
                a = pp.block
                b = build_block(
                    channel=CHANNEL,
                    height=a.height,
                    prev_hash=a.header.prev_hash,
                    transactions=a.transactions[:1],
                    state_height=a.header.state_height,
                    state_root=a.header.state_root,
                    proposer="n0",
                    view=0,
                    time_ms=a.header.time_ms,
                )
                other = sign(PrePrepare(CHANNEL, "n0", 0, b), c.node_signers["n0"])
                sent_b.append(b.hash)
                for dst in ("n2", "n3", "n4"):
                    c.queue.append(("n0", dst, other))

    c.on_ready = equivocate
    c.drop = lambda src, dst, m: (
        isinstance(m, PrePrepare)
        and m.view == 0
        and dst in ("n3", "n4")
        and m.block_hash not in sent_b
    )
    c.submit("n0", c.clients.txs(2))
    c.run_until(lambda: all(c.apps[n].height == 1 for n in c.names), 5000)
    c.run(50)
    assert c.replicas["n2"].view == 1
    assert {who for who, ev in c.evidence if ev.kind == "equivocation"} == {"n2"}
    assert c.check_chains() == 1
    return c


def catch_up_across_many_heights() -> Cluster:
    c = Cluster(
        5,
        transcript=True,
        max_batch_txs=1,
        batch_interval_ms=0,
        fetch_batch=16,
        status_interval_ms=200,
    )
    c.tick(0)
    c.crash("n4")
    c.submit("n1", c.clients.txs(40))
    c.run(100)
    assert c.apps["n0"].height == 40
    assert c.lines is not None
    c.lines.clear()  # the transcript starts when the lagging replica comes back
    c.restart("n4")
    c.run_until(lambda: c.apps["n4"].height == 40, 5000)
    assert c.check_chains() == 40
    assert c.replicas["n4"].metrics["catchup.fetches"] == 3
    return c


SCENARIOS: dict[str, Callable[[], Cluster]] = {
    "normal_case": normal_case,
    "view_change_after_primary_crash": view_change_after_primary_crash,
    "equivocating_primary": equivocating_primary,
    "catch_up": catch_up_across_many_heights,
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_golden_transcript(name: str) -> None:
    got = SCENARIOS[name]().transcript()
    again = SCENARIOS[name]().transcript()
    assert got == again, "the run is not deterministic"
    path = TESTDATA / f"{name}.txt"
    if os.environ.get("WULIAN_UPDATE_GOLDEN") == "1":
        TESTDATA.mkdir(exist_ok=True)
        path.write_text(got, encoding="utf-8")
        return
    assert path.exists(), f"{path} missing: run with WULIAN_UPDATE_GOLDEN=1"
    want = path.read_text(encoding="utf-8")
    if got != want:
        diff = difflib.unified_diff(
            want.splitlines(), got.splitlines(), f"{name}.txt", "this run", lineterm="", n=2
        )
        shown = "\n".join(list(diff)[:80])
        pytest.fail(f"transcript {name} changed (WULIAN_UPDATE_GOLDEN=1 to accept):\n{shown}")
