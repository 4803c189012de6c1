"""Adapter from the channels layer (:mod:`channels`) to :class:`node.rules.ChannelLogic`."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from ledger.blocks import Block, Transaction
from ledger.errors import ConfigError
from node.rules import (
    BlockEffects,
    NeedsOtherChannel,
    Rejected,
    StoreCrossReader,
    StoreState,
    TxOutcome,
)


def _registry() -> Mapping[str, Any]:
    for module_name in ("channels.registry", "channels"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        rules = getattr(module, "CHANNEL_RULES", None)
        if rules is not None:
            return rules  # type: ignore[no-any-return]
    raise ConfigError(
        "node config", "rules", "the channel rules (channels.CHANNEL_RULES) are not available"
    )


class ProductionLogic:
    """One channel's rules from :data:`channels.CHANNEL_RULES`."""

    def __init__(self, channel: str, rules: Any, params: Any) -> None:
        from channels.state import GENESIS_STATE_ROOT

        self.channel = channel
        self._rules = rules
        self._params = params
        self._genesis_root: bytes = GENESIS_STATE_ROOT

    def initial_state_root(self) -> bytes:
        return self._genesis_root

    def check_stateless(self, tx: Transaction, sender_role: str | None) -> Rejected | None:
        rejection = self._rules.check_stateless(tx, sender_role)
        if rejection is None:
            return None
        return Rejected(str(rejection.code), str(rejection.message))

    def apply_block(
        self,
        block: Block,
        roles: Sequence[str | None],
        state: StoreState,
        cross: StoreCrossReader,
        prev_root: bytes,
    ) -> BlockEffects:
        from channels.base import BlockTx, apply_block
        from channels.context import BlockContext
        from channels.errors import NotYetCommitted

        txs = [BlockTx(tx, role) for tx, role in zip(block.transactions, roles, strict=True)]
        ctx = BlockContext(
            channel=self.channel,
            height=block.height,
            block_time_ms=block.header.time_ms,
            params=self._params,
            cross=cross,
        )
        try:
            result = apply_block(self._rules, state, txs, ctx, prev_root=prev_root)
        except NotYetCommitted as exc:
            raise NeedsOtherChannel(exc.channel, exc.height) from None
        outcomes = tuple(
            TxOutcome(o.code, o.message, dict(o.result) if o.result is not None else None)
            for o in result.outcomes
        )
        return BlockEffects(outcomes, dict(result.writes), result.state_root)


def production_logic(channel: str, params: Mapping[str, int | str]) -> ProductionLogic:
    """Raises :class:`ConfigError` if the rules are missing or ``params`` are invalid."""
    from channels.context import NetworkParams

    registry = _registry()
    rules = registry.get(channel)
    if rules is None:
        raise ConfigError("genesis", f"channels.{channel}", "no channel rules for this channel")
    known = {f.name for f in dataclasses.fields(NetworkParams)}
    # Genesis params also carry consensus settings (max_block_txs …): pass only the
    # business parameters to the rules.
    business = {k: v for k, v in params.items() if k in known}
    return ProductionLogic(channel, rules, NetworkParams.from_mapping(business))
