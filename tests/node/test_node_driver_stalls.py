"""A channel driver that the event loop could not run pauses its replica's blame timers.

Under load a node's event loop is blocked for seconds at a time (another channel's
block applied on the loop, a worker thread holding the GIL, the machine's CPU taken by
other processes); the replica's progress and censorship timers must not count that
time against the primary (docs/consensus.md, "The node's own time is not the
primary's").
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from node.channel import stalled_ms
from node.config import load_node_config
from node.runtime import NodeRuntime
from tests.node.test_node_runtime import write_config


def test_lateness_is_counted_from_the_tick_due_or_what_was_already_paused() -> None:
    assert stalled_ms(10.5, 10.0, 0.0) == 500
    assert stalled_ms(10.5, 10.0, 10.4) == 100  # the driver paused its own work until 10.4
    assert stalled_ms(9.9, 10.0, 0.0) == 0
    assert stalled_ms(10.5, 10.0, 11.0) == 0


def test_a_blocked_event_loop_moves_the_replicas_timers(tmp_path: Path) -> None:
    runtime = NodeRuntime.open(load_node_config(write_config(tmp_path)))
    paused: dict[str, list[int]] = {c: [] for c in runtime.channels}
    for name, svc in runtime.channels.items():
        assert svc.replica is not None
        svc.replica.pause = paused[name].append  # type: ignore[method-assign,assignment]
        # as if work were in flight: a quiescent replica is ticked only when its STATUS
        # is due, and has no timer to pause (test_node_quiet_ticks.py)
        svc.replica.quiescent = lambda: False  # type: ignore[method-assign]

    async def scenario() -> tuple[dict[str, int], dict[str, int]]:
        runtime.start()
        try:
            await asyncio.sleep(0.3)  # the drivers tick
            before = {c: runtime.metrics.stalled_seconds.count(c) for c in runtime.channels}
            for p in paused.values():
                p.clear()
            time.sleep(0.6)  # the loop is blocked: no driver runs
            await asyncio.sleep(0.3)
            after = {c: runtime.metrics.stalled_seconds.count(c) for c in runtime.channels}
            return before, after
        finally:
            await runtime.stop()

    before, after = asyncio.run(scenario())
    assert set(after) == {"supervision", "judicial", "risk", "credit", "service"}
    assert all(after[c] == before[c] + 1 for c in after), (before, after)
    # each replica was paused once, by about the time the loop was blocked
    assert all(len(p) == 1 and 500 <= p[0] <= 900 for p in paused.values()), paused
