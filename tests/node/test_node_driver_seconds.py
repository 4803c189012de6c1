"""Where a channel's driver spends its time (``wulian_driver_seconds_total``), in
process on a real store: stepping the replica's inputs, applying committed blocks,
writing them, and waiting for another channel. The bench's catch-up phase reads these
from the restarted node (BENCHMARKS.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from channels.state import StateReader
from consensus.messages import Commit, Status, encode_message, sign
from ledger.blocks import Block
from ledger.keyfile import load_key_file
from node.channel import DRIVER_STAGES, ChannelService
from node.rules import NeedsOtherChannel
from node.runtime import NodeRuntime
from tests.node.test_node_commit_batches import CH, Chain, commit

APPLY_S = 0.03


def spent(svc: ChannelService) -> dict[str, float]:
    return {s: svc.metrics.driver_seconds.value(CH, s) for s in DRIVER_STAGES}


class SlowRules:
    """The channel's rules, taking at least ``APPLY_S`` a block; block ``wait_at`` needs
    "another channel" for its first ``waits`` attempts."""

    def __init__(self, inner: Any, wait_at: int = 0, waits: int = 0) -> None:
        self.inner, self.wait_at, self.waits = inner, wait_at, waits

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def apply_block(
        self, block: Block, roles: Sequence[str | None], state: StateReader, cross: Any,
        prev_root: bytes,
    ) -> Any:  # fmt: skip
        time.sleep(APPLY_S)
        if block.height == self.wait_at and self.waits > 0:
            self.waits -= 1
            raise NeedsOtherChannel("judicial", 1)
        return self.inner.apply_block(block, roles, state, cross, prev_root)


def test_committed_blocks_count_their_apply_and_write_time(
    runtime: NodeRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = runtime.channels[CH]
    chain = Chain(tmp_path, svc)
    monkeypatch.setattr(svc, "logic", SlowRules(svc.logic))
    assert spent(svc) == dict.fromkeys(DRIVER_STAGES, 0.0)
    commit(svc, [chain.block(["a"]), chain.block(["b"]), chain.block(["c"])])
    after = spent(svc)
    assert after["apply"] >= 3 * APPLY_S
    assert after["write"] > 0
    assert after["step"] == after["wait_channel"] == 0  # no replica stepped, none waited
    assert svc.store.height(CH) == 3


def test_a_block_waiting_for_another_channel_counts_the_wait_apart(
    runtime: NodeRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Block 1 needs another channel twice (nothing before it to write: the driver
    sleeps 20 ms each time): those sleeps are ``wait_channel``, the attempts ``apply``."""
    svc = runtime.channels[CH]
    chain = Chain(tmp_path, svc)
    monkeypatch.setattr(svc, "logic", SlowRules(svc.logic, wait_at=1, waits=2))
    commit(svc, [chain.block(["a"])])
    after = spent(svc)
    assert after["wait_channel"] >= 2 * 0.02
    assert after["apply"] >= 3 * APPLY_S  # two refused attempts and the one that applied
    assert svc.store.height(CH) == 1


def test_stepping_messages_counts_as_step(tmp_path: Path, runtime: NodeRuntime) -> None:
    """A bulk message (STATUS) and an urgent one (COMMIT), each taking its replica
    ``APPLY_S`` to step, are both counted."""
    svc = runtime.channels[CH]
    assert svc.replica is not None
    court = load_key_file(tmp_path / "net" / "keys" / "court-node.key").signer
    stepped: list[str] = []

    def slow_step(msg: Any) -> None:
        time.sleep(APPLY_S)
        stepped.append(msg.kind)

    svc.replica.step = slow_step  # type: ignore[method-assign]
    status = sign(Status(CH, "court-node", 0, True, 0, b"\x00" * 32), court)
    vote = sign(Commit(CH, "court-node", 0, 1, b"\x01" * 32), court)

    async def scenario() -> None:
        runtime.start()
        try:
            assert svc.deliver("court-node", encode_message(status))
            assert svc.deliver("court-node", encode_message(vote))
            for _ in range(200):
                if len(stepped) == 2:
                    break
                await asyncio.sleep(0.01)
        finally:
            await runtime.stop()

    asyncio.run(scenario())
    assert sorted(stepped) == ["commit", "status"]
    assert spent(svc)["step"] >= 2 * APPLY_S
