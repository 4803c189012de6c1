"""When the node's ack leg is due (``NodeRelays._ack_needed``), on a real store: after
``ack_delay_ms`` from the oldest block with a non-ack transaction, at once for a
backlog, never for ack-only blocks; and each relay delay (acks', anchors') comes from
the node's config and may not be negative."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from node.channel_rules import ACK_EXTENSION_POINT
from node.config import load_node_config
from node.relays import ACK_BACKLOG_BLOCKS, NodeRelays
from node.runtime import NodeRuntime
from tests.node.test_node_commit_batches import CH, Chain, commit
from tests.node.test_node_runtime import write_config


def relays(rt: NodeRuntime, **delays_ms: int) -> NodeRelays:
    """The runtime's relays with the delays given (``ack_delay_ms``, ``anchor_delay_ms``)."""
    return NodeRelays(
        genesis=rt.genesis,
        store=rt.store,
        node_id=rt.config.node_id,
        signer=rt.signer,
        channels=rt.channels,
        clock_ms=lambda: 0,
        **delays_ms,
    )


def block_time(rt: NodeRuntime, height: int) -> int:
    block = rt.store.block(CH, height)
    assert block is not None
    return block.header.time_ms


def test_acks_are_due_once_the_oldest_reported_block_is_old_enough(
    runtime: NodeRuntime, tmp_path: Path
) -> None:
    svc = runtime.channels[CH]
    chain = Chain(tmp_path, svc)
    r = relays(runtime, ack_delay_ms=2000)
    assert not r._ack_needed(10**15)  # nothing committed
    commit(svc, [chain.block(["ack"], tx_type=ACK_EXTENSION_POINT)])
    assert not r._ack_needed(10**15)  # an ack-only block never makes acks due
    commit(svc, [chain.block(["report"]), chain.block(["later"])])
    t = block_time(runtime, 2)  # the oldest block with a non-ack transaction
    assert not r._ack_needed(t + 1999)
    assert r._ack_needed(t + 2000)
    assert relays(runtime, ack_delay_ms=0)._ack_needed(t)


def test_a_backlog_makes_acks_due_at_once(runtime: NodeRuntime, tmp_path: Path) -> None:
    svc = runtime.channels[CH]
    chain = Chain(tmp_path, svc)
    r = relays(runtime, ack_delay_ms=60_000)
    commit(svc, [chain.block(["report"])])
    t = block_time(runtime, 1)
    commit(
        svc, [chain.block([f"a{i}"], ACK_EXTENSION_POINT) for i in range(ACK_BACKLOG_BLOCKS - 1)]
    )
    assert not r._ack_needed(t)
    commit(svc, [chain.block(["one more"], ACK_EXTENSION_POINT)])
    assert r._ack_needed(t)


@pytest.mark.parametrize("delay", ["ack_delay_ms", "anchor_delay_ms"])
def test_a_negative_delay_is_refused(runtime: NodeRuntime, delay: str) -> None:
    with pytest.raises(ValueError, match=delay):
        relays(runtime, **{delay: -1})


@pytest.mark.parametrize(("delay", "value"), [("ack_delay_ms", 750), ("anchor_delay_ms", 250)])
def test_the_runtime_gives_its_relays_the_configured_delay(
    tmp_path: Path, delay: str, value: int
) -> None:
    cfg = load_node_config(write_config(tmp_path, rules="channels"))
    rt = NodeRuntime.open(dataclasses.replace(cfg, **{delay: value}))
    try:
        assert rt.relays is not None
        assert getattr(rt.relays, delay) == value
    finally:
        rt.store.close()
