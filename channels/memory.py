"""The five channels applied in memory — for tests, examples and simulations.

:class:`MemoryNetwork` keeps one :class:`~channels.state.MemoryState` per channel,
applies committed blocks with :func:`~channels.base.apply_block`, and is itself the
:class:`~channels.context.CrossChannelReader` (a channel's committed height is the
number of blocks applied to it). No consensus, no signatures: the caller states each
sender's role.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from channels.base import BlockResult, BlockTx, ChannelRules, apply_block
from channels.context import DEFAULT_PARAMS, BlockContext, NetworkParams
from channels.errors import Rejection
from channels.registry import CHANNEL_IDS, CHANNEL_RULES
from channels.state import GENESIS_STATE_ROOT, MemoryState, StateReader
from ledger.blocks import Transaction


class MemoryNetwork:
    """In-memory ledgers of the five channels (or those in ``rules``)."""

    def __init__(
        self,
        roles: Mapping[str, str],
        *,
        params: NetworkParams = DEFAULT_PARAMS,
        rules: Mapping[str, ChannelRules] = CHANNEL_RULES,
    ) -> None:
        self.roles = dict(roles)
        self.params = params
        self.rules = dict(rules)
        self.states = {ch: MemoryState() for ch in self.rules}
        self.heights = dict.fromkeys(self.rules, 0)
        self.roots = dict.fromkeys(self.rules, GENESIS_STATE_ROOT)
        self.outcomes: dict[bytes, tuple[str, int, str, str]] = {}
        #: Every committed block in commit order: (channel, transactions, time, rejections).
        self.log: list[tuple[str, tuple[Transaction, ...], int, dict[bytes, Rejection]]] = []

    # CrossChannelReader
    def committed_height(self, channel: str) -> int:
        return self.heights[channel]

    def facts(self, channel: str) -> StateReader:
        return self.states[channel]

    def commit(
        self,
        channel: str,
        txs: Sequence[Transaction],
        time_ms: int,
        *,
        rejections: Mapping[bytes, Rejection] | None = None,
    ) -> BlockResult:
        """Apply ``txs`` as the next block of ``channel``; NotYetCommitted leaves all as is."""
        height = self.heights[channel] + 1
        ctx = BlockContext(channel, height, time_ms, self.params, self)
        block = [
            BlockTx(tx, self.roles.get(tx.sender), (rejections or {}).get(tx.tx_id)) for tx in txs
        ]
        result = apply_block(
            self.rules[channel], self.states[channel], block, ctx, prev_root=self.roots[channel]
        )
        self.states[channel].apply_writes(result.writes)
        self.log.append((channel, tuple(txs), time_ms, dict(rejections or {})))
        self.heights[channel] = height
        self.roots[channel] = result.state_root
        for o in result.outcomes:
            self.outcomes[o.tx_id] = (channel, height, o.code, o.message)
        return result


__all__ = ["CHANNEL_IDS", "MemoryNetwork"]
