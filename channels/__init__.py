"""Layer 2: the five channel ledgers' transaction types and rules.

Deterministic functions of (channel state, transaction, context): see
``docs/channels.md``. Public entry points:

* :data:`CHANNEL_RULES`, :data:`TX_TYPE_ROLES` (:mod:`channels.registry`)
* :func:`apply_block`, :class:`BlockTx`, :class:`BlockResult`, :class:`TxOutcome`,
  :class:`ChannelRules`, :class:`TxType` (:mod:`channels.base`)
* :class:`StateReader`, :class:`WriteSet`, :class:`MemoryState`,
  :func:`state_root_after`, :func:`state_delta`, :func:`root_after_delta`,
  :func:`parse_state_delta`, :data:`GENESIS_STATE_ROOT` (:mod:`channels.state`)
* :class:`BlockContext`, :class:`TxContext`, :class:`NetworkParams`,
  :class:`CrossChannelReader` (:mod:`channels.context`)
* :class:`Rejection`, :class:`TxRejected`, :class:`NotYetCommitted` (:mod:`channels.errors`)
* :func:`run_rules` (:mod:`channels.monitoring`) for the risk centre's worker
"""

from channels.base import BlockResult, BlockTx, ChannelRules, TxOutcome, TxType, apply_block
from channels.context import (
    DEFAULT_PARAMS,
    BlockContext,
    CrossChannelReader,
    NetworkParams,
    TxContext,
)
from channels.errors import NotYetCommitted, Rejection, TxRejected
from channels.monitoring import AlertPayload, run_rules
from channels.registry import CHANNEL_IDS, CHANNEL_RULES, TX_TYPE_ROLES
from channels.state import (
    GENESIS_STATE_ROOT,
    MemoryState,
    StateReader,
    WriteSet,
    parse_state_delta,
    root_after_delta,
    state_delta,
    state_root_after,
)

__all__ = [
    "CHANNEL_IDS",
    "CHANNEL_RULES",
    "DEFAULT_PARAMS",
    "GENESIS_STATE_ROOT",
    "TX_TYPE_ROLES",
    "AlertPayload",
    "BlockContext",
    "BlockResult",
    "BlockTx",
    "ChannelRules",
    "CrossChannelReader",
    "MemoryState",
    "NetworkParams",
    "NotYetCommitted",
    "Rejection",
    "StateReader",
    "TxContext",
    "TxOutcome",
    "TxRejected",
    "TxType",
    "WriteSet",
    "apply_block",
    "parse_state_delta",
    "root_after_delta",
    "run_rules",
    "state_delta",
    "state_root_after",
]
