"""Certified blocks made offline: a backlog for a node to catch up on, in seconds.

:func:`seed_blocks` appends blocks to the ledgers of STOPPED nodes exactly as their
running selves would have committed them: each block carries a commit certificate
signed by a quorum of the channel's validators (their key files), and is applied and
written by each node's own channel driver (:meth:`ChannelService.commit_certified`:
the configured rules, roles from governance at that height, one synced batch per
64 blocks). The restarted network cannot tell these blocks from ones it ordered.

Only whoever holds the validators' keys can do this — the operator of a whole local
network: ``wulian bench`` (the catch-up phase puts a node 10,000 blocks behind) and
the tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ledger.blocks import Block, Transaction, build_block
from ledger.certificate import CommitCertificate, Vote, commit_vote_message
from ledger.crypto import Signer
from ledger.errors import ConfigError
from ledger.hashing import TAG_COMMIT_VOTE
from node.config import load_node_config
from node.runtime import NodeRuntime

#: Blocks built, certified and committed per step (each node writes them in one batch).
SEED_BATCH = 64


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

    Raises :class:`ConfigError` if the nodes disagree on the tip or a quorum of the
    validators' keys is missing, and whatever the nodes' stores raise; the blocks of a
    step are written by each node in one batch, so a failure leaves whole blocks.
    """
    runtimes: list[NodeRuntime] = []
    try:
        for path in config_paths:
            runtimes.append(NodeRuntime.open(load_node_config(path)))
        services = [rt.channels[channel] for rt in runtimes]
        tips = {(s.store.height(channel), s.store.last_hash(channel)) for s in services}
        if len(tips) != 1:
            raise ConfigError("seed", channel, f"the nodes disagree on the tip: {sorted(tips)}")
        ref = services[0]
        replica = ref.replica
        window = replica.config.window if replica is not None else 8
        height, prev_hash = tips.pop()
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
    finally:
        for rt in runtimes:
            rt.store.close()
