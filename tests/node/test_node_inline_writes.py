"""Small synced writes on the event loop, large or slow ones in a worker thread
(``ChannelService._io``), in process on a real store: which thread wrote, what the
moving average of write times does, and that a failed write still raises."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from consensus.replica import Ready
from ledger.store import BlockCommit, StoreError
from node import channel as channel_module
from node.channel import (
    INLINE_WRITE_MAX_BYTES,
    INLINE_WRITE_MAX_S,
    ChannelService,
    _commit_bytes,
)
from node.durable_wal import DurableWal
from node.runtime import NodeRuntime
from tests.node.test_node_commit_batches import CH, Chain, commit


class Clock:
    """``node.channel``'s ``time`` module with a ``perf_counter`` that only moves when
    told: write times independent of this machine's disk."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class WriterThreads:
    """Wraps ``commit_blocks``: records the thread of every write; each write takes
    ``delay_s`` on the channel's clock (a slow disk when large); ``fail`` makes the
    next one raise."""

    def __init__(self, svc: ChannelService, monkeypatch: pytest.MonkeyPatch) -> None:
        self.threads: list[int] = []
        self.delay_s = 0.0001
        self.fail = False
        self.clock = Clock()
        monkeypatch.setattr(channel_module, "time", self.clock)
        real = svc.store.commit_blocks

        def wrapped(channel: str, commits: Sequence[BlockCommit]) -> None:
            self.threads.append(threading.get_ident())
            self.clock.now += self.delay_s
            if self.fail:
                self.fail = False
                raise StoreError("disk full")
            real(channel, commits)

        monkeypatch.setattr(svc.store, "commit_blocks", wrapped)

    def on_loop(self) -> list[bool]:
        main = threading.get_ident()  # asyncio.run runs the loop in this thread
        return [t == main for t in self.threads]


def test_a_small_write_runs_on_the_loop_and_a_large_one_in_a_worker_thread(
    runtime: NodeRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = runtime.channels[CH]
    chain = Chain(tmp_path, svc)
    writes = WriterThreads(svc, monkeypatch)
    commit(svc, [chain.block(["a"])])
    assert writes.on_loop() == [True]
    assert svc.write_s == pytest.approx(0.2 * 0.0001)
    # the same block size, but over a lower bound: a worker thread writes it
    monkeypatch.setattr(channel_module, "INLINE_WRITE_MAX_BYTES", 100)
    commit(svc, [chain.block(["b"])])
    assert writes.on_loop() == [True, False]
    assert svc.store.height(CH) == 2
    assert [o.code for o in svc.outcomes(2)] == ["ok"]


def test_writes_leave_the_loop_while_the_disk_is_slow_and_come_back_after(
    runtime: NodeRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slow writes (10 ms each) push the moving average past INLINE_WRITE_MAX_S:
    the next small writes go to a worker thread; quick ones (0.1 ms) bring it back
    down."""
    svc = runtime.channels[CH]
    chain = Chain(tmp_path, svc)
    writes = WriterThreads(svc, monkeypatch)
    writes.delay_s = 0.01
    for i in range(3):
        commit(svc, [chain.block([f"slow{i}"])])
    assert svc.write_s > INLINE_WRITE_MAX_S
    slow = len(writes.threads)
    writes.delay_s = 0.0001
    for i in range(30):
        commit(svc, [chain.block([f"quick{i}"])])
    flags = writes.on_loop()
    # the average before each write: 0, 2.0 (not above the bound), 3.6 ms…
    assert flags[:slow] == [True, True, False]
    # …4.9, 3.9, 3.2, 2.5, 2.1, then 1.7 ms: back on the loop, and there it stays
    assert flags[slow:] == [False] * 5 + [True] * 25
    assert svc.write_s <= INLINE_WRITE_MAX_S
    assert svc.store.height(CH) == 33


def test_a_failed_write_on_the_loop_raises_and_writes_nothing(
    runtime: NodeRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = runtime.channels[CH]
    chain = Chain(tmp_path, svc)
    writes = WriterThreads(svc, monkeypatch)
    writes.fail = True
    with pytest.raises(StoreError, match="disk full"):
        commit(svc, [chain.block(["a"])])
    assert writes.on_loop() == [True]
    assert svc.store.height(CH) == 0
    assert svc._unwritten == []


def test_the_durable_state_alone_is_written_on_the_loop(
    runtime: NodeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ready that only persists (votes, a new view) writes its WAL entry on the loop."""
    svc = runtime.channels[CH]
    assert svc.replica is not None
    durable = svc.replica.durable_state()
    threads: list[int] = []
    real = svc.store.put_wal

    def wrapped(channel: str, entries: Any) -> None:
        threads.append(threading.get_ident())
        real(channel, entries)

    monkeypatch.setattr(svc.store, "put_wal", wrapped)
    asyncio.run(svc._persist_and_commit(Ready(durable, (), (), ())))
    assert threads == [threading.get_ident()]
    assert DurableWal.load(svc.store, CH)[0] == durable


def test_commit_bytes_counts_blocks_state_writes_and_wal_until_past_the_limit(
    runtime: NodeRuntime, tmp_path: Path
) -> None:
    svc = runtime.channels[CH]
    block, cert = Chain(tmp_path, svc).block(["a"])
    root = svc.logic.initial_state_root()
    c = BlockCommit(block, cert, {b"k1": b"v" * 10, b"k2": None}, root, {"w": b"x" * 7})
    exact = len(block.encoded()) + (2 + 10) + 2 + 7
    assert _commit_bytes([c], INLINE_WRITE_MAX_BYTES) == exact
    assert _commit_bytes([c, c], INLINE_WRITE_MAX_BYTES) == 2 * exact
    big = BlockCommit(block, cert, {b"k%d" % i: b"v" * 1000 for i in range(1000)}, root)
    counted = _commit_bytes([big, c], INLINE_WRITE_MAX_BYTES)
    assert INLINE_WRITE_MAX_BYTES < counted < INLINE_WRITE_MAX_BYTES + 1100
