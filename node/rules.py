"""What a channel's transactions mean, as the node needs it: a stateless check before
ordering and a deterministic ``apply`` of each committed block.

:func:`channel_logic` returns the production logic (the channel rules of
:mod:`channels`, adapted in :mod:`node.channel_rules`) or, with ``rules = "test"`` in
the node config, :class:`TestLogic`: a minimal key/value rule for the node's own
integration tests — every permitted transaction type is accepted with payload
``{"k": <str>, "v": <any>}``; a transaction is committed INVALID (code ``exists``, no
effect) if key ``k`` is already set (write-once), so outcomes can be observed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ledger.blocks import Block, Transaction
from ledger.encoding import encode
from ledger.hashing import TAG_STATE, tagged_hash
from ledger.store import BlockStore

if TYPE_CHECKING:
    # what a block is applied on: the store's state, or a WriteSet of unwritten blocks
    from channels.state import StateReader

OK = "ok"


@dataclass(frozen=True)
class TxOutcome:
    """The channel rules' verdict on one committed transaction."""

    code: str = OK
    message: str = ""
    result: Mapping[str, Any] | None = field(default=None, hash=False)

    @property
    def valid(self) -> bool:
        return self.code == OK

    def to_wire(self) -> dict[str, Any]:
        w: dict[str, Any] = {"valid": self.valid, "code": self.code, "message": self.message}
        if self.result is not None:
            w["result"] = dict(self.result)
        return w

    @staticmethod
    def from_wire(raw: Any) -> TxOutcome:
        if not isinstance(raw, dict):
            return TxOutcome("unknown", "outcome record malformed")
        result = raw.get("result")
        return TxOutcome(
            str(raw.get("code", "")),
            str(raw.get("message", "")),
            result if isinstance(result, dict) else None,
        )


@dataclass(frozen=True)
class BlockEffects:
    """What applying one block does: per-transaction outcomes, state writes, new root."""

    outcomes: tuple[TxOutcome, ...]
    writes: Mapping[bytes, bytes | None] = field(hash=False)
    state_root: bytes
    #: What ``state_root`` covers beyond the previous root (the block's state delta:
    #: :meth:`ChannelLogic.effects_from_delta` rebuilds these effects from it); empty
    #: if the logic has none
    delta: bytes = b""


class StoreState:
    """A channel's committed state in the store, as a ``channels.state.StateReader``."""

    def __init__(self, store: BlockStore, channel: str) -> None:
        self._store = store
        self._channel = channel

    def get(self, key: bytes) -> bytes | None:
        return self._store.get_state(self._channel, key)

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        yield from self._store.iter_state(self._channel, prefix)

    def last_below(self, prefix: bytes, stop: bytes) -> tuple[bytes, bytes] | None:
        return self._store.last_state_below(self._channel, prefix, stop)


class StoreCrossReader:
    """Other channels' committed data on this node (``channels.context.CrossChannelReader``)."""

    def __init__(self, store: BlockStore) -> None:
        self._store = store

    def committed_height(self, channel: str) -> int:
        return self._store.height(channel)

    def facts(self, channel: str) -> StoreState:
        return StoreState(self._store, channel)


@dataclass(frozen=True)
class Rejected:
    """A transaction refused before ordering (stateless check)."""

    code: str
    message: str


class NeedsOtherChannel(Exception):
    """Applying the block needs ``channel`` at ``height``, not applied here yet."""

    def __init__(self, channel: str, height: int) -> None:
        super().__init__(f"needs {channel} at height {height}")
        self.channel = channel
        self.height = height


class ChannelLogic(Protocol):
    """The node's view of one channel's rules."""

    channel: str

    def initial_state_root(self) -> bytes: ...

    def check_stateless(self, tx: Transaction, sender_role: str | None) -> Rejected | None:
        """None if ``tx`` is acceptable for ordering, else why not."""
        ...

    def apply_block(
        self,
        block: Block,
        roles: Sequence[str | None],
        state: StateReader,
        cross: StoreCrossReader,
        prev_root: bytes,
    ) -> BlockEffects:
        """Apply a committed block (``roles[i]``: role of tx i's sender at this height,
        None if its key is not active). Raises :class:`NeedsOtherChannel` to be retried
        once that channel has caught up."""
        ...

    def delta_root(self, block: Block, prev_root: bytes, delta: bytes) -> bytes:
        """The state root that applying ``block`` after ``prev_root`` would give if
        its effects' ``delta`` were ``delta`` (a hash: ``delta`` is not decoded)."""
        ...

    def effects_from_delta(
        self, block: Block, delta: bytes, state_root: bytes
    ) -> BlockEffects | None:
        """``block``'s effects rebuilt from its ``delta``, which the caller has found to
        chain to a certified ``state_root`` (:meth:`delta_root`): the block need not be
        applied. None if the delta cannot stand in for applying it: a transaction was
        rejected (its message is not in the delta), or the delta does not decode."""
        ...


def effects_from_parsed_delta(block: Block, delta: bytes, state_root: bytes) -> BlockEffects | None:
    """:meth:`ChannelLogic.effects_from_delta` for a :func:`channels.state.state_delta`
    (both logics below use that format)."""
    from channels.state import parse_state_delta
    from ledger.errors import EncodingError

    try:
        parsed = parse_state_delta(delta, len(block.transactions))
    except EncodingError:
        return None
    if any(code != OK for code in parsed.codes):
        return None
    outcomes = tuple(TxOutcome(OK, "", result) for result in parsed.results)
    return BlockEffects(outcomes, dict(parsed.writes), state_root, delta)


class TestLogic:
    """Write-once key/value rules for the node's own tests (see the module docstring)."""

    __test__ = False  # not a pytest class

    def __init__(self, channel: str) -> None:
        self.channel = channel

    def initial_state_root(self) -> bytes:
        return tagged_hash(TAG_STATE, b"node-test-rules\x00" + self.channel.encode())

    def check_stateless(self, tx: Transaction, sender_role: str | None) -> Rejected | None:
        if sender_role is None:
            return Rejected("unknown_sender", f"{tx.sender!r} has no active key here")
        k = tx.payload.get("k")
        if not isinstance(k, str) or not 0 < len(k) <= 200:
            return Rejected("bad_payload", "payload must be {'k': non-empty string, 'v': any}")
        if set(tx.payload) - {"k", "v"}:
            return Rejected("bad_payload", "payload has unknown fields")
        return None

    def apply_block(
        self,
        block: Block,
        roles: Sequence[str | None],
        state: StateReader,
        cross: StoreCrossReader,
        prev_root: bytes,
    ) -> BlockEffects:
        writes: dict[bytes, bytes | None] = {}
        outcomes: list[TxOutcome] = []
        for tx, role in zip(block.transactions, roles, strict=True):
            rejected = self.check_stateless(tx, role)
            if rejected is not None:
                outcomes.append(TxOutcome(rejected.code, rejected.message))
                continue
            key = ("kv/" + str(tx.payload["k"])).encode()
            if key in writes or state.get(key) is not None:
                outcomes.append(TxOutcome("exists", f"key {tx.payload['k']!r} is already set"))
                continue
            writes[key] = encode({"v": tx.payload.get("v"), "by": tx.sender})
            outcomes.append(TxOutcome())
        from channels.state import state_delta

        delta = state_delta(list(writes.items()), [o.code for o in outcomes])
        return BlockEffects(
            tuple(outcomes), writes, self.delta_root(block, prev_root, delta), delta
        )

    def delta_root(self, block: Block, prev_root: bytes, delta: bytes) -> bytes:
        return tagged_hash(TAG_STATE, prev_root + block.hash + delta)

    def effects_from_delta(
        self, block: Block, delta: bytes, state_root: bytes
    ) -> BlockEffects | None:
        return effects_from_parsed_delta(block, delta, state_root)


def channel_logic(channel: str, mode: str, params: Mapping[str, int | str]) -> ChannelLogic:
    """The logic for ``channel``: ``mode`` is ``"channels"`` (production) or ``"test"``.

    Raises :class:`ledger.errors.ConfigError` if the production rules are unavailable.
    """
    if mode == "test":
        return TestLogic(channel)
    from node import channel_rules  # the adapter to the channels layer

    return channel_rules.production_logic(channel, params)
