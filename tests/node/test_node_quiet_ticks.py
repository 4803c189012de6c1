"""An idle channel's driver does not wake 50 times a second for nothing.

A replica with nothing in flight, queued or pending (``Replica.quiescent``) is ticked
only when its next STATUS is due; an input that gives it work brings the regular
``tick_ms`` cadence back at once (``ChannelService._next_tick``). Five channels on
each of five nodes ticking every 20 ms were about a tenth of a 2-core machine while
the network was idle.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

from ledger.blocks import Transaction
from ledger.keyfile import load_key_file
from node.config import load_node_config
from node.runtime import NodeRuntime
from tests.node.test_node_runtime import write_config


def test_an_idle_channel_ticks_when_status_is_due_and_work_brings_the_ticks_back(
    tmp_path: Path,
) -> None:
    runtime = NodeRuntime.open(load_node_config(write_config(tmp_path)))
    ticks: dict[str, list[float]] = {c: [] for c in runtime.channels}
    for name, svc in runtime.channels.items():
        replica = svc.replica
        assert replica is not None
        real_tick = replica.tick

        def spy(now_ms: int, real_tick=real_tick, log=ticks[name]) -> None:
            log.append(time.monotonic())
            real_tick(now_ms)

        replica.tick = spy  # type: ignore[method-assign]
    lender = load_key_file(tmp_path / "net" / "keys" / "bureau.key").signer
    sup = runtime.channels["supervision"]
    tx = Transaction(
        network=runtime.genesis.hash, channel="supervision", type="lender_admit",
        sender="bureau", public_key=lender.public_key, nonce=secrets.randbits(62),
        time_ms=time.time_ns() // 1_000_000, payload={"k": "quiet", "v": 1},
    ).signed(lender)  # fmt: skip

    async def scenario() -> tuple[dict[str, int], bool, int]:
        runtime.start()
        try:
            await asyncio.sleep(0.5)  # the first ticks; nothing to do: every replica is quiet
            quiet_now = all(
                s.replica is not None and s.replica.quiescent() for s in runtime.channels.values()
            )
            t0 = time.monotonic()
            await asyncio.sleep(1.5)
            quiet = {c: sum(t >= t0 for t in log) for c, log in ticks.items()}
            t1 = time.monotonic()
            wall_ms = time.time_ns() // 1_000_000
            (outcome,) = await sup.submit([tx])
            assert outcome.accepted, outcome.reason
            # the replica was ticked before it saw the transaction: the times it
            # stamps (here the block it proposed at once, as the idle primary) are now,
            # not its last tick's, up to a STATUS interval ago
            assert sup.replica is not None and sup.replica.primary == "bureau-node"
            slot = sup.replica._slots[sup.replica.committed_height + 1]
            assert slot.preprepare is not None
            stamped.append(slot.preprepare.block.header.time_ms - wall_ms)
            await asyncio.sleep(0.3)  # the transaction waits (no peers): ticks every 20 ms
            return quiet, quiet_now, sum(t >= t1 for t in ticks["supervision"])
        finally:
            await runtime.stop()

    stamped: list[int] = []
    quiet, quiet_now, busy = asyncio.run(scenario())
    assert quiet_now
    assert len(stamped) == 1 and -50 <= stamped[0] <= 500, stamped
    # STATUS every 1 s: one or two ticks in 1.5 s per channel (75 at 20 ms)
    assert set(quiet) == {"supervision", "judicial", "risk", "credit", "service"}
    assert all(1 <= n <= 3 for n in quiet.values()), quiet
    assert busy >= 8, busy
