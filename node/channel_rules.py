"""Adapter from the channels layer (:mod:`channels`) to :class:`node.rules.ChannelLogic`."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from crosschain.ack import ACK_TX_TYPE
from ledger.blocks import Block, Transaction
from ledger.crypto import ED25519, SignatureScheme
from ledger.errors import ConfigError
from ledger.genesis import CONFIG_UPDATE, Genesis
from node.rules import (
    BlockEffects,
    NeedsOtherChannel,
    Rejected,
    StoreCrossReader,
    TxOutcome,
    effects_from_parsed_delta,
)

if TYPE_CHECKING:
    from channels.context import NetworkParams
    from channels.state import StateReader
    from ledger.governance import ChannelGovernance

#: ``header_hash(channel, height)``: the header hash of a committed block (None if absent).
HeaderHashFn = Callable[[str, int], "bytes | None"]


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
        state: StateReader,
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
        return BlockEffects(outcomes, dict(result.writes), result.state_root, result.delta)

    def delta_root(self, block: Block, prev_root: bytes, delta: bytes) -> bytes:
        from channels.state import root_after_delta

        return root_after_delta(prev_root, delta)

    def effects_from_delta(
        self, block: Block, delta: bytes, state_root: bytes
    ) -> BlockEffects | None:
        return effects_from_parsed_delta(block, delta, state_root)


#: The supervision channel's extension point for the relay's acknowledgements.
ACK_EXTENSION_POINT = ACK_TX_TYPE


def with_crosschain_rules(
    channel: str,
    rules: Any,
    genesis: Genesis,
    header_hash: HeaderHashFn,
    scheme: SignatureScheme = ED25519,
) -> Any:
    """``rules`` with the cross-chain rules installed: on the judicial channel the
    ``anchor`` rule (light client of supervision) and the case-evidence verifier; on the
    supervision channel the acknowledgement rule at its ``anchor_receipt`` extension
    point, reading block header hashes through ``header_hash(channel, height)`` (the
    channels layer does not keep header hashes in state: a block's hash is only known
    once it is built). Both rules check certificates with ``scheme`` (a node passes its
    :class:`node.signatures.MemoisedEd25519`: the votes its replicas verified already).
    Other channels are returned unchanged."""
    from crosschain.ack import AckRule
    from crosschain.anchor import SOURCE_CHANNEL, TARGET_CHANNEL
    from crosschain.anchor_rules import AnchorRule, case_evidence_verifier

    if channel == TARGET_CHANNEL:
        from channels.judicial import judicial_rules

        base = judicial_rules(case_evidence_verifier())
        anchor_rule = dataclasses.replace(AnchorRule.from_genesis(genesis), scheme=scheme)
        return anchor_rule.install(base)
    if channel == SOURCE_CHANNEL:
        rule = AckRule.from_genesis(genesis)
        rule = dataclasses.replace(
            rule, header_hash_of=lambda _reader, h: header_hash(SOURCE_CHANNEL, h), scheme=scheme
        )
        return rule.install(rules, name=ACK_EXTENSION_POINT)
    return rules


def production_logic(
    channel: str,
    params: Mapping[str, int | str],
    *,
    genesis: Genesis | None = None,
    header_hash: HeaderHashFn | None = None,
    governance: Callable[[], ChannelGovernance] | None = None,
    scheme: SignatureScheme = ED25519,
) -> ProductionLogic:
    """Raises :class:`ConfigError` if the rules are missing or ``params`` are invalid.

    With ``genesis`` and ``header_hash`` the cross-chain rules are installed
    (:func:`with_crosschain_rules`); with ``governance`` (the channel's trackers) the
    ``config_update`` rule (:mod:`node.governance_rule`); without them the extension
    points stay ``rule_not_installed``."""
    registry = _registry()
    rules = registry.get(channel)
    if rules is None:
        raise ConfigError("genesis", f"channels.{channel}", "no channel rules for this channel")
    if genesis is not None and header_hash is not None:
        rules = with_crosschain_rules(channel, rules, genesis, header_hash, scheme)
    if governance is not None and CONFIG_UPDATE in rules.tx_types:
        from node.governance_rule import config_update_tx_type

        roles = rules.tx_types[CONFIG_UPDATE].roles
        rules = rules.with_tx_type(config_update_tx_type(roles, governance))
    return ProductionLogic(channel, rules, business_params(params))


def business_params(params: Mapping[str, int | str]) -> NetworkParams:
    """The rules' :class:`~channels.context.NetworkParams` from a channel's genesis
    params. Genesis params also carry consensus settings (``max_block_txs`` …): only
    the business parameters are passed on. Raises :class:`ConfigError` for a bad value."""
    from channels.context import NetworkParams

    known = {f.name for f in dataclasses.fields(NetworkParams)}
    return NetworkParams.from_mapping({k: v for k, v in params.items() if k in known})
