"""Who the peer transport talks to: the validators of the node's channels, following
governance.

The peers of a node are the union, over its channels, of the validator sets in force
at the next height and at ``next + CONFIG_ACTIVATION_DELAY`` (so a validator added by a
committed ``config_update`` is dialled, and its frames accepted, before its effective
height; one removed stays a peer until its removal takes effect). Addresses and node
keys come from the committed configuration (:meth:`ValidatorTracker.node_info`: the
genesis for the initial validators, the ``add_validator`` change for later ones).

:func:`current_peers` computes it; :func:`run` keeps the runtime's ``node_keys`` (what
inbound frames are authenticated against) and the transport's links equal to it,
re-checking every :data:`REFRESH_S`. A node that is no validator of any channel any
more (removed by governance everywhere) is neither dialled nor accepted: its frames
are refused as ``unknown_sender``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

from ledger.governance import CONFIG_ACTIVATION_DELAY, ChannelGovernance
from ledger.identity import NodeInfo

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

log = logging.getLogger("wulian.peers")

REFRESH_S: Final = 0.5


def current_peers(
    channels: Iterable[tuple[ChannelGovernance, int]],
    genesis_nodes: Iterable[NodeInfo],
    self_id: str,
) -> dict[str, NodeInfo]:
    """``node id → NodeInfo`` of every validator (other than ``self_id``) at the next
    height or ``CONFIG_ACTIVATION_DELAY`` later, over ``(governance, next height)`` of
    each channel. A validator without a known address (should not happen) is taken
    from ``genesis_nodes`` or left out."""
    known = {n.node_id: n for n in genesis_nodes}
    out: dict[str, NodeInfo] = {}
    for gov, height in channels:
        for h in (height, height + CONFIG_ACTIVATION_DELAY):
            for v in gov.validators_at(h).validators:
                if v.node_id == self_id or v.node_id in out:
                    continue
                info = gov.validators.node_info(v.node_id, h) or known.get(v.node_id)
                if info is not None and info.public_key == v.public_key:
                    out[v.node_id] = info
    return out


def runtime_peers(runtime: NodeRuntime) -> dict[str, NodeInfo]:
    return current_peers(
        ((svc.governance, svc.height + 1) for svc in runtime.channels.values()),
        runtime.genesis.nodes,
        runtime.config.node_id,
    )


async def refresh(runtime: NodeRuntime) -> bool:
    """Make ``runtime.node_keys`` and the transport's links follow :func:`runtime_peers`.
    Returns True if anything changed."""
    peers = runtime_peers(runtime)
    keys: Mapping[str, bytes] = {pid: info.public_key for pid, info in peers.items()}
    addresses = {pid: info.address.rstrip("/") for pid, info in peers.items()}
    links = {pid: link.address for pid, link in runtime.transport.links.items()}
    if keys == dict(runtime.node_keys) and addresses == links:
        return False
    # the genesis keys the runtime starts with include its own node, never a peer
    me = {runtime.config.node_id}
    added = sorted(set(keys) - set(runtime.node_keys) - me)
    removed = sorted(set(runtime.node_keys) - set(keys) - me)
    runtime.node_keys = keys
    await runtime.transport.update_peers(addresses)
    if added or removed:
        log.info(
            "peers changed by governance: +%s -%s",
            ",".join(added) or "none",
            ",".join(removed) or "none",
        )
    return True


async def run(runtime: NodeRuntime) -> None:
    """Follow governance until cancelled (one refresh at once, then every REFRESH_S)."""
    while True:
        try:
            await refresh(runtime)
        except asyncio.CancelledError:
            raise
        except Exception:  # never let a bug here stop the node; log and retry
            log.exception("peer membership refresh failed")
        await asyncio.sleep(REFRESH_S)
