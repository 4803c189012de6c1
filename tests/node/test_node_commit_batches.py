"""Several committed blocks applied on top of each other and written in one batch
(``ChannelService._persist_and_commit``), in process on a real store, no consensus
running: the batch equals committing the blocks one by one; a block that waits for
another channel first writes the blocks before it; a FETCH leaves before the write,
votes once the durable state is on disk, STATUS once the blocks are."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from channels.state import MemoryState, StateReader
from consensus.durable import DurableState
from consensus.messages import Commit, Fetch, Status
from consensus.replica import Outbound, Ready
from ledger.blocks import Block, Transaction, build_block
from ledger.certificate import CommitCertificate, Vote, commit_vote_message
from ledger.encoding import decode
from ledger.errors import ConfigError
from ledger.hashing import TAG_COMMIT_VOTE
from ledger.keyfile import load_key_file
from ledger.store import BlockStore
from node import consensus_port as cport
from node.channel import COMMIT_BATCH_BLOCKS, ChannelService, outcomes_key
from node.config import load_node_config
from node.durable_wal import DurableWal
from node.rules import NeedsOtherChannel, StoreCrossReader, TxOutcome
from node.runtime import NodeRuntime
from node.seed import level_nodes
from tests.node.test_node_runtime import write_config

CH = "supervision"


class Chain:
    """Blocks of ``rules = "test"`` transactions (``{"k": K}``) sent by a node key,
    certified by a quorum of the genesis validators."""

    def __init__(self, tmp: Path, svc: ChannelService) -> None:
        keys = tmp / "net" / "keys"
        self.svc = svc
        self.validators = svc.config.validators
        self.signers = {
            v.node_id: load_key_file(keys / f"{v.node_id}.key").signer
            for v in self.validators.validators
        }
        self.sender = "bureau-node"
        self.prev = svc.store.last_hash(CH)
        self.height = svc.store.height(CH)

    def block(
        self, keys: Sequence[str], tx_type: str = "loan_event"
    ) -> tuple[Block, CommitCertificate]:
        signer = self.signers[self.sender]
        h = self.height + 1
        txs = tuple(
            Transaction(
                network=self.svc.genesis.hash, channel=CH, type=tx_type,
                sender=self.sender, public_key=signer.public_key,
                nonce=secrets.randbits(62), time_ms=1_700_000_000_000 + h, payload={"k": k},
            ).signed(signer)
            for k in keys
        )  # fmt: skip
        block = build_block(
            channel=CH, height=h, prev_hash=self.prev, transactions=txs, state_height=0,
            state_root=self.svc.logic.initial_state_root(),
            proposer=self.validators.primary(0), view=0, time_ms=1_700_000_000_000 + h,
        )  # fmt: skip
        msg = commit_vote_message(CH, h, 0, block.hash)
        votes = tuple(
            Vote(v.node_id, self.signers[v.node_id].sign(TAG_COMMIT_VOTE, msg))
            for v in self.validators.validators[: self.validators.quorum]
        )
        self.prev, self.height = block.hash, h
        return block, CommitCertificate(CH, h, 0, block.hash, votes)


def commit(svc: ChannelService, blocks: Sequence[tuple[Block, CommitCertificate]]) -> None:
    ready = Ready(persist=None, messages=(), committed=tuple(blocks), evidence=())
    asyncio.run(svc._persist_and_commit(ready))


def count_batches(svc: ChannelService, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the number of blocks of every ``commit_blocks`` write."""
    sizes: list[int] = []
    real = svc.store.commit_blocks

    def counted(channel: str, commits: Sequence[Any]) -> None:
        sizes.append(len(commits))
        real(channel, commits)

    monkeypatch.setattr(svc.store, "commit_blocks", counted)
    return sizes


def test_blocks_of_one_ready_apply_on_each_other_and_share_one_write(
    runtime: NodeRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Block 2 sees block 1's unwritten writes (a key set in 1 is "exists" in 2), the
    roots chain, and the Ready's blocks reach the disk in one batch — or in batches
    of COMMIT_BATCH_BLOCKS."""
    svc = runtime.channels[CH]
    chain = Chain(tmp_path, svc)
    sizes = count_batches(svc, monkeypatch)
    blocks = [chain.block(["a", "b"]), chain.block(["b", "c"]), chain.block(["a", "d"])]
    commit(svc, blocks)
    assert sizes == [3]
    store = svc.store
    assert store.height(CH) == 3
    # cached as applied once written (no query has read them yet), equal to the WAL's
    assert list(svc._outcomes_cache) == [1, 2, 3]
    for h in (1, 2, 3):
        wal = store.get_wal(CH, outcomes_key(h))
        assert wal is not None
        assert svc.outcomes(h) == [TxOutcome.from_wire(o) for o in decode(wal)]
    assert [o.code for o in svc.outcomes(1)] == ["ok", "ok"]
    assert [o.code for o in svc.outcomes(2)] == ["exists", "ok"]
    assert [o.code for o in svc.outcomes(3)] == ["exists", "ok"]
    # the same roots as applying the blocks one at a time on their own state
    state, root = MemoryState(), svc.logic.initial_state_root()
    for block, _cert in blocks:
        roles = ["node"] * len(block.transactions)
        effects = svc.logic.apply_block(block, roles, state, StoreCrossReader(store), root)
        state.apply_writes(effects.writes.items())
        root = effects.state_root
        assert store.state_root_at(CH, block.height) == root
    many = [chain.block([f"k{i}"]) for i in range(COMMIT_BATCH_BLOCKS + 5)]
    commit(svc, many)
    assert sizes == [3, COMMIT_BATCH_BLOCKS, 5]
    assert store.height(CH) == 3 + COMMIT_BATCH_BLOCKS + 5
    top = store.height(CH)
    assert store.get_wal(CH, outcomes_key(top)) is not None
    assert [o.code for o in svc.outcomes(top)] == ["ok"]


def test_a_block_waiting_for_another_channel_writes_the_blocks_before_it(
    runtime: NodeRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Block 3 needs "another channel" that only moves once blocks 1–2 of this one are
    on disk (the judicial chain waits for supervision blocks, say): the driver writes
    1–2 first, then applies 3 — holding them back in the batch would wait forever."""
    svc = runtime.channels[CH]
    chain = Chain(tmp_path, svc)
    sizes = count_batches(svc, monkeypatch)
    inner = svc.logic
    waits: list[int] = []

    class Waiting:
        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

        def apply_block(
            self, block: Block, roles: Sequence[str | None], state: StateReader, cross: Any,
            prev_root: bytes,
        ) -> Any:  # fmt: skip
            if block.height == 3 and svc.store.height(CH) < 2:
                waits.append(block.height)
                if len(waits) > 50:  # a second of retries: it would wait forever
                    raise AssertionError("block 3 waits while blocks 1-2 are held back")
                raise NeedsOtherChannel("judicial", 1)
            return inner.apply_block(block, roles, state, cross, prev_root)

    svc.logic = Waiting()  # type: ignore[assignment]
    blocks = [chain.block(["a"]), chain.block(["b"]), chain.block(["a", "c"])]
    commit(svc, blocks)
    assert waits == [3]
    assert sizes == [2, 1]
    assert svc.store.height(CH) == 3
    assert [o.code for o in svc.outcomes(3)] == ["exists", "ok"]


class _OneReady:
    """A replica stand-in that hands out one Ready."""

    view = 0
    metrics: ClassVar[dict[str, int]] = {}

    def __init__(self, ready: Ready) -> None:
        self._ready: Ready | None = ready
        self.advanced = False

    def has_ready(self) -> bool:
        return self._ready is not None

    def ready(self) -> Ready:
        assert self._ready is not None
        rd, self._ready = self._ready, None
        return rd

    def advance(self, rd: Ready) -> None:
        self.advanced = True

    def pause(self, ms: int) -> None:
        pass

    def note_apply(self, ms: int, size: int) -> None:
        pass


@pytest.mark.parametrize("durable", [False, True])
def test_a_fetch_leaves_first_votes_once_persisted_and_status_once_stored(
    runtime: NodeRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool
) -> None:
    """The driver sends a Ready's FETCH before persisting it (the next catch-up answer
    travels while these blocks are written); proposals and votes once its durable state
    is on disk, before its committed blocks are applied and written (the next blocks'
    rounds need not wait for them); and what speaks of committed blocks — a STATUS
    claiming the new height — only once they are on disk."""
    svc = runtime.channels[CH]
    chain = Chain(tmp_path, svc)
    block, cert = chain.block(["a"])
    me = svc.node_id
    state = DurableState(view=3, votes=((2, 3, b"\x01" * 32),)) if durable else None
    # (message kind, committed height when sent, the durable state then on disk)
    sent: list[tuple[str, int, DurableState | None]] = []

    class Transport:
        def send(self, to: Any, channel: str, payload: bytes, kind: str, *_: Any) -> None:
            sent.append((kind, svc.store.height(CH), DurableWal.load(svc.store, CH)[0]))

        def unreachable(self) -> frozenset[str]:
            return frozenset()

    monkeypatch.setattr(svc, "transport", Transport())
    messages = (
        Outbound(None, Status(CH, me, 0, True, 1, block.hash)),
        Outbound("court-node", Fetch(CH, me, 2, 65)),
        Outbound(None, Commit(CH, me, 0, 2, b"\x01" * 32)),
    )
    ready = Ready(persist=state, messages=messages, committed=((block, cert),), evidence=())
    monkeypatch.setattr(cport, "mirror_counters", lambda *a: None)
    replica = _OneReady(ready)
    asyncio.run(svc._process_ready(replica))  # type: ignore[arg-type]
    assert sent == [("fetch", 0, None), ("commit", 0, state), ("status", 1, state)]
    assert replica.advanced and svc.store.height(CH) == 1


def test_without_committed_blocks_every_message_waits_for_the_durable_state(
    runtime: NodeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = runtime.channels[CH]
    me = svc.node_id
    state = DurableState(view=1)
    sent: list[tuple[str, DurableState | None]] = []

    class Transport:
        def send(self, to: Any, channel: str, payload: bytes, kind: str, *_: Any) -> None:
            sent.append((kind, DurableWal.load(svc.store, CH)[0]))

        def unreachable(self) -> frozenset[str]:
            return frozenset()

    monkeypatch.setattr(svc, "transport", Transport())
    messages = (
        Outbound(None, Commit(CH, me, 1, 2, b"\x01" * 32)),
        Outbound(None, Status(CH, me, 1, True, 0, svc.store.last_hash(CH))),
    )
    ready = Ready(persist=state, messages=messages, committed=(), evidence=())
    monkeypatch.setattr(cport, "mirror_counters", lambda *a: None)
    asyncio.run(svc._process_ready(_OneReady(ready)))  # type: ignore[arg-type]
    assert sent == [("commit", state), ("status", state)]


def test_level_nodes_fills_a_node_a_few_blocks_behind_and_refuses_a_fork(
    tmp_path: Path,
) -> None:
    """``node.seed.level_nodes``: a node stopped one or two blocks short gets the
    others' certified blocks (same hashes); a node holding a different block at a
    height is not overwritten, and the disagreement is refused."""
    paths = [
        write_config(tmp_path, node=n) for n in ("bureau-node", "court-node", "risk_centre-node")
    ]
    rts = [NodeRuntime.open(load_node_config(p)) for p in paths]
    try:
        bureau, court, risk = (rt.channels[CH] for rt in rts)
        chain = Chain(tmp_path, bureau)
        blocks = [chain.block([f"k{i}"]) for i in range(3)]
        commit(bureau, blocks)
        commit(court, blocks[:1])
        fork = Chain(tmp_path, risk)
        commit(risk, [fork.block(["other"])])
    finally:
        for rt in rts:
            rt.store.close()
    assert level_nodes(paths[:2], CH) == 3
    with BlockStore.open(
        load_node_config(paths[1]).ledger_dir, rts[0].genesis.hash, create=False
    ) as store:
        assert [store.block(CH, h) for h in (1, 2, 3)] == [b for b, _ in blocks]
    with pytest.raises(ConfigError, match="disagree"):
        level_nodes(paths, CH)
    with BlockStore.open(
        load_node_config(paths[2]).ledger_dir, rts[0].genesis.hash, create=False
    ) as store:
        assert store.height(CH) == 1 and store.block(CH, 1) != blocks[0][0]
