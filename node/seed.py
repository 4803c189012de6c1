"""Certified blocks made offline: a backlog for a node to catch up on, in seconds.

:func:`seed_blocks` appends blocks to the ledgers of STOPPED nodes exactly as their
running selves would have committed them: each block carries a commit certificate
signed by a quorum of the channel's validators (their key files), and is applied and
written by each node's own channel driver (:meth:`ChannelService.commit_certified`:
the configured rules, roles from governance at that height, one synced batch per
64 blocks). The restarted network cannot tell these blocks from ones it ordered.
:func:`level_nodes` first brings stopped nodes that are a block or two apart level
with the others' stored blocks, so no node keeps a block the seeded ones replace.

Only whoever holds the validators' keys can do this — the operator of a whole local
network: ``wulian bench`` (the catch-up phase puts a node 10,000 blocks behind) and
the tests. A block that waits for another channel's height would wait for ever here,
with no driver running to bring that channel along: seed channels whose rules read no
other (judicial, the test rules), or blocks that do not read one (supervision's loan
reports: only its evidence acknowledgements read the judicial channel), and level the
channels read first (``wulian bench`` levels judicial before supervision).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from ledger.blocks import Block, Transaction, build_block
from ledger.certificate import CommitCertificate, Vote, commit_vote_message
from ledger.crypto import Signer
from ledger.errors import ConfigError
from ledger.hashing import TAG_COMMIT_VOTE
from node.channel import ChannelService
from node.config import load_node_config
from node.runtime import NodeRuntime

#: Blocks built, certified and committed per step (each node writes them in one batch).
SEED_BATCH = 64


def _level(services: Sequence[ChannelService], channel: str) -> None:
    """Bring every node up to the highest tip among them with that node's stored
    blocks and certificates (nodes stopped while committing are often a block or two
    apart). A node whose chain is not a prefix of the highest one is left as it is
    (the caller then refuses the disagreement)."""
    top = max(services, key=lambda s: s.store.height(channel))
    top_h = top.store.height(channel)
    for svc in services:
        h = svc.store.height(channel)
        if h >= top_h:
            continue
        header = top.store.header(channel, h) if h else None
        if header is not None and header.hash != svc.store.last_hash(channel):
            continue
        while h < top_h:
            entries = []
            for k in range(h + 1, min(top_h, h + SEED_BATCH) + 1):
                block, cert = top.store.block(channel, k), top.store.certificate(channel, k)
                if block is None or cert is None:
                    raise ConfigError("seed", channel, f"block {k} missing below the tip")
                entries.append((block, cert))
            asyncio.run(svc.commit_certified(entries))
            h = entries[-1][0].height


@contextlib.contextmanager
def _levelled(
    config_paths: Sequence[Path], channel: str
) -> Iterator[tuple[list[ChannelService], int, bytes]]:
    """Open the stopped nodes, bring them level (:func:`_level`), and yield their
    channel services and the common tip (height, hash); close them afterwards.
    Raises :class:`ConfigError` if their chains disagree."""
    runtimes: list[NodeRuntime] = []
    try:
        for path in config_paths:
            runtimes.append(NodeRuntime.open(load_node_config(path)))
        services = [rt.channels[channel] for rt in runtimes]
        _level(services, channel)
        tips = {(s.store.height(channel), s.store.last_hash(channel)) for s in services}
        if len(tips) != 1:
            raise ConfigError("seed", channel, f"the nodes disagree on the tip: {sorted(tips)}")
        height, tip_hash = tips.pop()
        yield services, height, tip_hash
    finally:
        for rt in runtimes:
            rt.store.close()


def level_nodes(config_paths: Sequence[Path], channel: str) -> int:
    """Bring the stopped nodes of ``config_paths`` level on ``channel`` (see
    :func:`_level`) before seeding some of them: a node left out of the seeding must
    not keep a block the seeded ones then replace. Returns the common height; raises
    :class:`ConfigError` if their chains disagree."""
    with _levelled(config_paths, channel) as (_services, height, _hash):
        return height


def seed_blocks(
    config_paths: Sequence[Path],
    channel: str,
    n_blocks: int,
    make_txs: Callable[[int], Sequence[Transaction]],
    validator_keys: Mapping[str, Signer],
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Append ``n_blocks`` certified blocks to ``channel`` on the stopped nodes of
    ``config_paths`` (which must agree on its tip); ``make_txs(height)`` gives each
    block's signed transactions. Returns the new height.

    Nodes a few blocks behind the others are first brought level with the others'
    stored (certified) blocks. Raises :class:`ConfigError` if the nodes' chains
    disagree or a quorum of the validators' keys is missing, and whatever the nodes'
    stores raise; the blocks of a step are written by each node in one batch, so a
    failure leaves whole blocks.
    """
    with _levelled(config_paths, channel) as (services, height, prev_hash):
        ref = services[0]
        replica = ref.replica
        window = replica.config.window if replica is not None else 8
        last = ref.store.header(channel, height) if height else None
        view = last.view if last is not None else 0
        prev_time = last.time_ms if last is not None else 0
        top = height + n_blocks
        while height < top:
            step: list[tuple[Block, CommitCertificate]] = []
            for h in range(height + 1, min(top, height + SEED_BATCH) + 1):
                now = max(time.time_ns() // 1_000_000, prev_time)
                sh = max(0, h - window)
                if sh == 0:
                    sroot: bytes | None = ref.logic.initial_state_root()
                elif sh <= height:
                    sroot = ref.store.state_root_at(channel, sh)
                else:
                    sroot = None  # in this step: not applied yet
                if sroot is None:
                    break
                validators = ref.governance.validators_at(h)
                block = build_block(
                    channel=channel, height=h, prev_hash=prev_hash,
                    transactions=tuple(make_txs(h)), state_height=sh, state_root=sroot,
                    proposer=validators.primary(view), view=view, time_ms=now,
                )  # fmt: skip
                message = commit_vote_message(channel, h, view, block.hash)
                voters = [v for v in validators.validators if v.node_id in validator_keys]
                if len(voters) < validators.quorum:
                    raise ConfigError(
                        "seed", channel, f"keys of {len(voters)} validators, quorum is "
                        f"{validators.quorum}",
                    )  # fmt: skip
                votes = tuple(
                    Vote(v.node_id, validator_keys[v.node_id].sign(TAG_COMMIT_VOTE, message))
                    for v in voters[: validators.quorum]
                )
                step.append((block, CommitCertificate(channel, h, view, block.hash, votes)))
                prev_hash, prev_time = block.hash, now
            for svc in services:
                asyncio.run(svc.commit_certified(step))
            height = step[-1][0].height
            if progress is not None:
                progress(height)
        return height
