"""Transaction types, channel rule sets, and applying a committed block.

The Fabric-style contract: consensus orders blocks; after commit every transaction of
a block is applied in order and is deterministically VALID (its writes kept) or
INVALID (none kept; a machine code and a human message). :func:`apply_block` returns
the outcomes, the block's writes (for the store to persist atomically with the block)
and the chained state digest.

Checks made for every transaction, before its type's rule (codes in order):

``wrong_channel`` · ``unknown_tx_type`` · ``unknown_sender`` (no role) ·
``role_not_permitted`` · ``bad_payload`` (schema) — these are :meth:`check_stateless`,
also used at mempool admission and by backups before PREPARE — then, at apply time,
``tx_expired`` / ``tx_from_future`` (the tx's own time vs the block time) and
``duplicate_tx`` (the same tx id was already VALID on this channel).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Final

from channels.context import BlockContext, NetworkParams, TxContext
from channels.errors import Rejection, TxRejected
from channels.roles import INSTITUTION_ROLES
from channels.state import (
    OK,
    ReadMemo,
    StateReader,
    WriteSet,
    height_part,
    root_after_delta,
    state_delta,
)
from ledger.blocks import Transaction
from ledger.errors import SchemaError

#: Parses a payload map strictly into the type's payload object; raises SchemaError
#: (or TxRejected for stateless business checks).
ParseFn = Callable[[dict[str, Any]], Any]
#: Applies a parsed payload; raises TxRejected / NotYetCommitted; returns an optional
#: result map carried in the outcome (e.g. a credit answer).
ApplyFn = Callable[[WriteSet, Any, TxContext], "Mapping[str, Any] | None"]

TX_KEY_PREFIX: Final = b"tx/"
BLOCK_META_PREFIX: Final = b"meta/block/"


def tx_key(tx_id: bytes) -> bytes:
    return TX_KEY_PREFIX + tx_id.hex().encode()


def block_meta_key(height: int) -> bytes:
    return BLOCK_META_PREFIX + height_part(height)


@dataclass(frozen=True)
class TxType:
    """One transaction type of a channel: who may send it, its schema and its rule.

    ``extension=True`` marks a registered extension point whose rule another layer
    installs (:meth:`ChannelRules.with_tx_type`); the default rule rejects with
    ``rule_not_installed``.
    """

    name: str
    roles: frozenset[str]
    parse: ParseFn
    apply: ApplyFn
    summary: str
    extension: bool = False


@dataclass(frozen=True)
class TxOutcome:
    """The verdict on one transaction of a committed block."""

    tx_id: bytes
    code: str
    message: str = ""
    result: Mapping[str, Any] | None = None

    @property
    def valid(self) -> bool:
        return self.code == OK

    def to_wire(self) -> dict[str, Any]:
        w: dict[str, Any] = {"tx": self.tx_id, "code": self.code, "msg": self.message}
        if self.result is not None:
            w["result"] = dict(self.result)
        return w


@dataclass(frozen=True)
class ChannelRules:
    """The transaction types of one channel and how they are applied."""

    channel_id: str
    tx_types: Mapping[str, TxType]

    def check_stateless(self, tx: Transaction, sender_role: str | None) -> Rejection | None:
        """Channel, type, role and payload-schema checks; ``None`` if they pass."""
        try:
            self._parse(tx, sender_role, keep=True)
        except TxRejected as exc:
            return exc.rejection
        return None

    def _parse(self, tx: Transaction, sender_role: str | None, *, keep: bool) -> tuple[TxType, Any]:
        """The checks of :meth:`check_stateless`; returns the type and the parsed
        payload, or raises :class:`TxRejected`. The payload is parsed once per
        transaction object and type: ``keep`` leaves the result on ``tx`` for the next
        call (admission, then the proposal check and apply — parse results are frozen
        values); without it the remembered result is used and dropped."""
        if tx.channel != self.channel_id:
            raise TxRejected(
                "wrong_channel",
                f"transaction is for channel {tx.channel!r}, not {self.channel_id!r}",
            )
        tt = self.tx_types.get(tx.type)
        if tt is None:
            raise TxRejected(
                "unknown_tx_type", f"channel {self.channel_id} has no transaction type {tx.type!r}"
            )
        if sender_role is None:
            raise TxRejected("unknown_sender", f"sender {tx.sender!r} has no role on this network")
        if sender_role not in tt.roles:
            raise TxRejected(
                "role_not_permitted",
                f"role {sender_role!r} may not send {tx.type} "
                f"(allowed: {', '.join(sorted(tt.roles))})",
            )
        parse = tt.parse
        try:
            payload = tx.derived(parse, lambda: parse(tx.payload))
        except SchemaError as exc:
            raise TxRejected("bad_payload", f"{tx.type}: {exc.message}") from None
        if not keep:
            tx.forget_derived()
        return tt, payload

    def apply(self, state: WriteSet, tx: Transaction, ctx: TxContext) -> TxOutcome:
        """Apply ``tx`` to ``state`` (the block overlay): all its writes or none.

        Returns the outcome; raises :class:`~channels.errors.NotYetCommitted` (``state``
        untouched) when the tx reads another channel above its locally applied height.
        """
        child = state.child()
        try:
            tt, payload = self._parse(tx, ctx.sender_role, keep=False)
            _check_time(tx, ctx.block_time_ms, ctx.params)
            if child.get(tx_key(ctx.tx_id)) is not None:
                raise TxRejected("duplicate_tx", "this transaction is already on the channel")
            result = tt.apply(child, payload, ctx)
        except TxRejected as exc:
            child.discard()
            return TxOutcome(ctx.tx_id, exc.code, exc.message)
        child.put_value(tx_key(ctx.tx_id), {"h": ctx.height, "i": ctx.tx_index})
        child.merge_into_parent()
        return TxOutcome(ctx.tx_id, OK, "", result)

    def with_tx_type(self, tx_type: TxType) -> ChannelRules:
        """A copy with an extension point's rule installed.

        Raises ValueError unless ``tx_type.name`` is a registered extension point and its
        roles are unchanged (the role table is part of the genesis).
        """
        current = self.tx_types.get(tx_type.name)
        if current is None or not current.extension:
            raise ValueError(f"{self.channel_id}: {tx_type.name!r} is not an extension point")
        if tx_type.roles != current.roles:
            raise ValueError(
                f"{self.channel_id}: {tx_type.name!r} must keep roles {sorted(current.roles)}"
            )
        types = dict(self.tx_types)
        types[tx_type.name] = replace(tx_type, extension=True)
        return replace(self, tx_types=MappingProxyType(types))

    def roles(self) -> Mapping[str, frozenset[str]]:
        return {name: tt.roles for name, tt in sorted(self.tx_types.items())}


def _check_time(tx: Transaction, block_time_ms: int, params: NetworkParams) -> None:
    if tx.time_ms < block_time_ms - params.tx_max_age_ms:
        raise TxRejected(
            "tx_expired",
            f"transaction time {tx.time_ms} is more than {params.tx_max_age_ms} ms before "
            f"the block time {block_time_ms}",
        )
    if tx.time_ms > block_time_ms + params.tx_max_skew_ms:
        raise TxRejected(
            "tx_from_future",
            f"transaction time {tx.time_ms} is more than {params.tx_max_skew_ms} ms after "
            f"the block time {block_time_ms}",
        )


def make_rules(channel_id: str, tx_types: Sequence[TxType]) -> ChannelRules:
    by_name = {t.name: t for t in tx_types}
    if len(by_name) != len(tx_types):
        raise ValueError(f"{channel_id}: duplicate transaction type names")
    return ChannelRules(channel_id, MappingProxyType(by_name))


@dataclass(frozen=True)
class BlockTx:
    """A transaction of a committed block with what the caller established about it.

    ``sender_role`` is the sender org's role (``None``: unknown sender). If the caller
    found the transaction invalid itself (bad signature, key not the sender's), it sets
    ``rejection`` and the rules are not run.
    """

    tx: Transaction
    sender_role: str | None
    rejection: Rejection | None = None


@dataclass(frozen=True)
class BlockResult:
    outcomes: tuple[TxOutcome, ...]
    #: The block's writes in key order (``None`` = delete), to persist with the block.
    writes: tuple[tuple[bytes, bytes | None], ...]
    state_root: bytes
    #: What the root covers beyond the previous one (:func:`channels.state.state_delta`)
    delta: bytes = b""


def apply_block(
    rules: ChannelRules,
    state: StateReader,
    block_txs: Sequence[BlockTx],
    ctx: BlockContext,
    *,
    prev_root: bytes,
) -> BlockResult:
    """Apply a committed block's transactions in order over ``state``.

    ``state`` is not modified: the result's ``writes`` are what the store must apply.
    Raises :class:`~channels.errors.NotYetCommitted` (nothing applied) if a transaction
    reads another channel above its locally applied height; the node retries later.
    """
    if ctx.channel != rules.channel_id:
        raise ValueError(f"block of {ctx.channel} applied with {rules.channel_id} rules")
    # ``state`` does not change while the block is applied: its repeated reads are
    # memoised (ReadMemo)
    overlay = WriteSet(ReadMemo(state))
    overlay.put_value(block_meta_key(ctx.height), {"n": len(block_txs), "t": ctx.block_time_ms})
    outcomes: list[TxOutcome] = []
    for index, btx in enumerate(block_txs):
        tx = btx.tx
        if btx.rejection is not None:
            outcomes.append(TxOutcome(tx.tx_id, btx.rejection.code, btx.rejection.message))
            continue
        tctx = TxContext(
            channel=ctx.channel,
            height=ctx.height,
            block_time_ms=ctx.block_time_ms,
            tx_index=index,
            tx_id=tx.tx_id,
            sender=tx.sender,
            sender_role=btx.sender_role,
            sender_key=tx.public_key,
            params=ctx.params,
            cross=ctx.cross,
        )
        outcomes.append(rules.apply(overlay, tx, tctx))
    writes = overlay.writes()
    delta = state_delta(
        writes,
        [o.code for o in outcomes],
        [dict(o.result) if o.valid and o.result is not None else None for o in outcomes],
    )
    return BlockResult(tuple(outcomes), writes, root_after_delta(prev_root, delta), delta)


def rejected_extension(name: str) -> ApplyFn:
    """The default rule of an extension point: always INVALID ``rule_not_installed``."""

    def _apply(state: WriteSet, payload: Any, ctx: TxContext) -> Mapping[str, Any] | None:
        raise TxRejected(
            "rule_not_installed",
            f"{name} is a registered extension point whose rule is not installed on this node",
        )

    return _apply


def any_payload(raw: dict[str, Any]) -> dict[str, Any]:
    """Schema of an extension point before its rule is installed: any map."""
    return raw


def extension_point(name: str, roles: frozenset[str], summary: str) -> TxType:
    """A registered transaction type whose rule another layer installs."""
    return TxType(name, roles, any_payload, rejected_extension(name), summary, extension=True)


#: Governance changes (m-of-n approved, see ``ledger.governance``) travel on every
#: channel as ``config_update``; the node installs the rule that checks the approvals
#: against its governance trackers.
CONFIG_UPDATE: Final = "config_update"


def config_update_type() -> TxType:
    """The ``config_update`` extension point every channel registers."""
    return extension_point(
        CONFIG_UPDATE,
        INSTITUTION_ROLES,
        "A governance change approved by m of n institutions (rule installed by the node).",
    )
