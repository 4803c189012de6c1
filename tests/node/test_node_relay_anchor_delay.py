"""When the node's anchor leg is due (``NodeRelays._anchor_needed``), on a real store:
after ``anchor_delay_ms`` from the oldest supervision block not anchored yet, at once
for a backlog of blocks or of record leaves, a half-anchored block or a frozen link,
never with nothing to anchor (the delay's config and bounds:
tests/node/test_node_relay_acks.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from crosschain.relay import AnchorProgress
from node.relays import ANCHOR_BACKLOG_BLOCKS, NodeRelays
from node.runtime import NodeRuntime
from tests.node.test_node_commit_batches import CH, Chain, commit
from tests.node.test_node_relay_acks import block_time, relays


def anchored_up_to(r: NodeRelays, monkeypatch: pytest.MonkeyPatch, p: AnchorProgress) -> None:
    monkeypatch.setattr(r.anchor_sink, "progress", lambda: p)


def test_anchors_are_due_once_the_oldest_unanchored_block_is_old_enough(
    runtime: NodeRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = runtime.channels[CH]
    chain = Chain(tmp_path, svc)
    r = relays(runtime, anchor_delay_ms=1000)
    assert not r._anchor_needed(10**15)  # nothing committed: nothing to anchor
    commit(svc, [chain.block(["first"]), chain.block(["second"])])
    t1, t2 = block_time(runtime, 1), block_time(runtime, 2)
    assert not r._anchor_needed(t1 + 999)
    assert r._anchor_needed(t1 + 1000)
    assert relays(runtime, anchor_delay_ms=0)._anchor_needed(t1)
    # block 1 anchored: the wait runs from block 2's time
    anchored_up_to(r, monkeypatch, AnchorProgress(1))
    assert not r._anchor_needed(t2 + 999)
    assert r._anchor_needed(t2 + 1000)
    # every block anchored: never due, however late
    anchored_up_to(r, monkeypatch, AnchorProgress(2))
    assert not r._anchor_needed(10**15)


def test_a_backlog_makes_anchors_due_at_once(runtime: NodeRuntime, tmp_path: Path) -> None:
    svc = runtime.channels[CH]
    chain = Chain(tmp_path, svc)
    r = relays(runtime, anchor_delay_ms=60_000)
    commit(svc, [chain.block([f"r{i}"]) for i in range(ANCHOR_BACKLOG_BLOCKS - 1)])
    t = block_time(runtime, 1)
    assert not r._anchor_needed(t)
    commit(svc, [chain.block(["one more"])])
    assert r._anchor_needed(t)


def test_blocks_holding_a_full_step_of_record_leaves_go_at_once(
    runtime: NodeRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks of batch reports: once the waiting blocks hold a full relay step's leaves,
    waiting longer would only make another step."""
    svc = runtime.channels[CH]
    chain = Chain(tmp_path, svc)
    commit(svc, [chain.block(["a"]), chain.block(["b"])])
    real_header = runtime.store.header
    leaves = {1: 0, 2: 0}  # record leaves per supervision height, as headers say

    def header(channel: str, height: int) -> Any:
        h = real_header(channel, height)
        return None if h is None else dataclasses.replace(h, record_count=leaves[height])

    monkeypatch.setattr(runtime.store, "header", header)
    r = relays(runtime, anchor_delay_ms=60_000)
    step = r.anchor.config.max_leaves_per_step
    t = block_time(runtime, 1)
    assert not r._anchor_needed(t)
    leaves.update({1: step // 2, 2: step - step // 2 - 1})
    assert not r._anchor_needed(t)  # one leaf short of a step
    leaves[2] += 1
    assert r._anchor_needed(t)
    leaves.update({1: step, 2: 0})
    assert r._anchor_needed(t)  # the oldest block alone


@pytest.mark.parametrize(
    "progress", [AnchorProgress(1, next_chunk=2), AnchorProgress(1, frozen=True)]
)
def test_a_half_anchored_block_or_a_frozen_link_goes_at_once(
    runtime: NodeRuntime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    progress: AnchorProgress,
) -> None:
    """Chunks owed for an anchored header finish at once (the block's later leaves
    would otherwise wait a full delay each step); a frozen link is left to the relay
    step, which reports it."""
    svc = runtime.channels[CH]
    chain = Chain(tmp_path, svc)
    commit(svc, [chain.block(["big"])])
    r = relays(runtime, anchor_delay_ms=60_000)
    anchored_up_to(r, monkeypatch, progress)
    assert r._anchor_needed(block_time(runtime, 1))
