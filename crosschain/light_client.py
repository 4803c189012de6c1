"""The judicial channel's light client of the supervision channel (pure).

State (:class:`LightClientState`, canonical wire form kept in the judicial state):
the tracked source channel; the last anchored height, header hash and header time;
the source channel's validator history (:class:`ValidatorHistory`); the leaf chunks
still owed for the last anchored block; and the misbehaviour evidence that froze the
link, if any.

:func:`check_anchor` is the whole acceptance rule. It returns the new state or raises
:class:`~crosschain.errors.AnchorRejected` with a code, checking in this order — so a
duplicate or replayed anchor costs no signature check:

1. ``frozen`` — the link is frozen: nothing more is accepted.
2. ``wrong_channel`` — the anchor (or its header) names another source channel.
3. Header anchors: height ``≤`` last anchored → ``duplicate_anchor`` when the header is
   the one anchored there (or that height's header is not known); a *different*
   header there whose certificate is valid is misbehaviour of the source validators:
   the state comes back **frozen** with both as evidence (no more anchors are
   accepted); with an invalid certificate it is ``bad_certificate``. Height ``>``
   last + 1 → ``out_of_sequence``. Leaf chunks: already-anchored chunk →
   ``duplicate_anchor``; not the next chunk owed → ``out_of_sequence``.
4. ``leaves_pending`` — a header anchor while chunks of the previous block are owed.
5. ``prev_hash_mismatch`` — the header does not extend the last anchored header.
6. ``header_from_future`` / ``header_too_old`` — the header time is after the judicial
   block time + ``max_drift_ms``, or before it − ``max_lag_ms``.
7. ``bad_config_proof`` — a carried config transaction is not in the header's tx_root.
8. ``leaves_mismatch`` — the leaves are not exactly the chunk under record_root/count.
9. ``bad_certificate`` — the certificate is not a quorum of valid distinct signatures
   of the validator set in force at that height over the exact header hash
   (:func:`ledger.certificate.verify_certificate`).

Config transactions of an accepted header update the validator history from their
effective heights. A header anchor only carries ``config_update`` transactions; a
relay that leaves one out cannot be caught here (see :mod:`validator_history`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

from crosschain.anchor import Anchor, HeaderAnchor, LeafChunk
from crosschain.chunks import CHUNK_LEAVES, chunk_count, verify_chunk
from crosschain.errors import AnchorRejected
from crosschain.last_decoded import LastDecoded
from crosschain.validator_history import ConfigStepError, ValidatorHistory, verify_config_txs
from ledger.blocks import BlockHeader, channel_genesis_hash
from ledger.certificate import CommitCertificate, ValidatorSet, verify_certificate
from ledger.crypto import ED25519, SignatureScheme
from ledger.encoding import decode, encode
from ledger.errors import CertificateError, ProofError, SchemaError
from ledger.merkle import EMPTY_ROOT
from ledger.schema import as_map, check_keys, get_bytes, get_int, get_list, get_str

#: Default bound on how far a source header's time may be ahead of the judicial block.
DEFAULT_MAX_DRIFT_MS: Final = 5_000
#: Default bound on how old a source header may be when anchored (30 days). A link
#: left unrelayed longer than this stops; see docs/receipts.md "Operations".
DEFAULT_MAX_LAG_MS: Final = 30 * 86_400_000
MAX_EVIDENCE: Final = 4


@dataclass(frozen=True)
class PendingLeaves:
    """Leaf chunks still owed for the block at ``height``: chunks ``next_chunk ..``."""

    height: int
    record_root: bytes
    record_count: int
    next_chunk: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "h": self.height,
            "rr": self.record_root,
            "rn": self.record_count,
            "k": self.next_chunk,
        }

    @staticmethod
    def from_wire(raw: Any) -> PendingLeaves:
        m = as_map(raw, "pending")
        check_keys(m, frozenset({"h", "rr", "rn", "k"}), "pending")
        return PendingLeaves(
            get_int(m, "h", lo=1), get_bytes(m, "rr", 32), get_int(m, "rn"), get_int(m, "k")
        )


@dataclass(frozen=True)
class Misbehaviour:
    """Two different certified headers of the source channel at one height.

    ``anchored_hash`` is the header anchored first (its header and certificate are in
    the judicial anchor transaction that the anchor index names); ``header`` and
    ``certificate`` are the conflicting one, kept whole.
    """

    height: int
    anchored_hash: bytes
    header: BlockHeader
    certificate: CommitCertificate

    def to_wire(self) -> dict[str, Any]:
        return {
            "h": self.height,
            "first": self.anchored_hash,
            "header": self.header.to_wire(),
            "cert": self.certificate.to_wire(),
        }

    @staticmethod
    def from_wire(raw: Any) -> Misbehaviour:
        m = as_map(raw, "misbehaviour")
        check_keys(m, frozenset({"h", "first", "header", "cert"}), "misbehaviour")
        return Misbehaviour(
            get_int(m, "h", lo=1),
            get_bytes(m, "first", 32),
            BlockHeader.from_wire(m.get("header")),
            CommitCertificate.from_wire(m.get("cert")),
        )


@dataclass(frozen=True)
class LightClientState:
    """What the judicial channel knows about the source channel (see module docstring)."""

    channel: str
    height: int
    header_hash: bytes
    time_ms: int
    validators: ValidatorHistory
    pending: PendingLeaves | None = None
    chunk_size: int = CHUNK_LEAVES
    evidence: tuple[Misbehaviour, ...] = ()

    @property
    def frozen(self) -> bool:
        return bool(self.evidence)

    @staticmethod
    def genesis(
        channel: str,
        genesis_hash: bytes,
        validators: ValidatorSet,
        *,
        chunk_size: int = CHUNK_LEAVES,
    ) -> LightClientState:
        """The state before any anchor: height 0, ``prev_hash`` of block 1 expected."""
        return LightClientState(
            channel=channel,
            height=0,
            header_hash=channel_genesis_hash(genesis_hash, channel),
            time_ms=0,
            validators=ValidatorHistory.genesis(channel, validators),
            chunk_size=chunk_size,
        )

    def validators_at(self, height: int) -> ValidatorSet:
        return self.validators.at(height)

    @property
    def anchored_through(self) -> int:
        """Highest height whose header *and* every leaf are anchored."""
        return self.height - 1 if self.pending is not None else self.height

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": 1,
            "ch": self.channel,
            "h": self.height,
            "hash": self.header_hash,
            "t": self.time_ms,
            "vals": self.validators.to_wire(),
            "pend": None if self.pending is None else self.pending.to_wire(),
            "chunk": self.chunk_size,
            "evidence": [e.to_wire() for e in self.evidence],
        }

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @staticmethod
    def from_wire(raw: Any) -> LightClientState:
        m = as_map(raw, "light client")
        check_keys(
            m,
            frozenset({"v", "ch", "h", "hash", "t", "vals", "pend", "chunk", "evidence"}),
            "light client",
        )
        if get_int(m, "v") != 1:
            raise SchemaError("light client: unsupported version")
        chunk = get_int(m, "chunk", lo=1, hi=1 << 20)
        if chunk & (chunk - 1):
            raise SchemaError("field 'chunk': not a power of two")
        pend = m.get("pend")
        return LightClientState(
            channel=get_str(m, "ch", name=True),
            height=get_int(m, "h"),
            header_hash=get_bytes(m, "hash", 32),
            time_ms=get_int(m, "t"),
            validators=ValidatorHistory.from_wire(m.get("vals")),
            pending=None if pend is None else PendingLeaves.from_wire(pend),
            chunk_size=chunk,
            evidence=tuple(
                Misbehaviour.from_wire(e) for e in get_list(m, "evidence", max_len=MAX_EVIDENCE)
            ),
        )

    @staticmethod
    def decode(data: bytes) -> LightClientState:
        """Decode (raises like :meth:`from_wire`); the last bytes decoded are
        remembered (:class:`~crosschain.last_decoded.LastDecoded`)."""
        return _decode_state(data)


_decode_state = LastDecoded(lambda data: LightClientState.from_wire(decode(data)))


def _verify_cert(
    state: LightClientState,
    header: BlockHeader,
    cert: CommitCertificate,
    scheme: SignatureScheme,
) -> None:
    try:
        verify_certificate(
            cert,
            channel=state.channel,
            height=header.height,
            block_hash=header.hash,
            validators=state.validators_at(header.height),
            scheme=scheme,
        )
    except CertificateError as exc:
        raise AnchorRejected(
            "bad_certificate", f"{state.channel} block {header.height}: {exc.message}"
        ) from None


def check_anchor(
    state: LightClientState,
    anchor: Anchor,
    *,
    judicial_block_time_ms: int,
    max_lag_ms: int = DEFAULT_MAX_LAG_MS,
    max_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
    anchored_hash: Callable[[int], bytes | None] | None = None,
    scheme: SignatureScheme = ED25519,
) -> LightClientState:
    """Check ``anchor`` against ``state``; return the new state.

    ``anchored_hash(h)`` answers the header hash anchored at an older height ``h`` (the
    judicial anchor index); without it, every older height counts as a duplicate.
    Raises :class:`AnchorRejected` (``state`` is immutable, so nothing changes). A
    conflicting certified header is *not* rejected: the returned state is frozen.
    """
    if state.frozen:
        raise AnchorRejected("frozen", f"the {state.channel} link is frozen by misbehaviour")
    if anchor.source != state.channel:
        raise AnchorRejected(
            "wrong_channel", f"anchor is from {anchor.source!r}, this link tracks {state.channel!r}"
        )
    if isinstance(anchor, LeafChunk):
        return _check_chunk(state, anchor)
    return _check_header(
        state,
        anchor,
        judicial_block_time_ms=judicial_block_time_ms,
        max_lag_ms=max_lag_ms,
        max_drift_ms=max_drift_ms,
        anchored_hash=anchored_hash,
        scheme=scheme,
    )


def _check_header(
    state: LightClientState,
    anchor: HeaderAnchor,
    *,
    judicial_block_time_ms: int,
    max_lag_ms: int,
    max_drift_ms: int,
    anchored_hash: Callable[[int], bytes | None] | None,
    scheme: SignatureScheme,
) -> LightClientState:
    header = anchor.header
    h = header.height
    if header.channel != state.channel:
        raise AnchorRejected(
            "wrong_channel", f"header is of channel {header.channel!r}, not {state.channel!r}"
        )
    if h <= state.height:
        known = state.header_hash if h == state.height else None
        if known is None and anchored_hash is not None:
            known = anchored_hash(h)
        if known is None or known == header.hash:
            raise AnchorRejected(
                "duplicate_anchor", f"{state.channel} block {h} is already anchored"
            )
        # A different header at an anchored height: misbehaviour if it is certified.
        _verify_cert(state, header, anchor.certificate, scheme)
        evidence = Misbehaviour(h, known, header, anchor.certificate)
        return replace(state, evidence=(*state.evidence, evidence)[-MAX_EVIDENCE:])
    if h != state.height + 1:
        raise AnchorRejected(
            "out_of_sequence",
            f"{state.channel} block {h} is not the next one to anchor ({state.height + 1})",
        )
    if state.pending is not None:
        raise AnchorRejected(
            "leaves_pending",
            f"leaf chunks {state.pending.next_chunk}.. of block {state.pending.height} "
            "must be anchored first",
        )
    if header.prev_hash != state.header_hash:
        raise AnchorRejected(
            "prev_hash_mismatch",
            f"{state.channel} block {h} does not extend the anchored block {state.height}",
        )
    if header.time_ms > judicial_block_time_ms + max_drift_ms:
        raise AnchorRejected(
            "header_from_future",
            f"header time {header.time_ms} is more than {max_drift_ms} ms after the "
            f"judicial block time {judicial_block_time_ms}",
        )
    if header.time_ms < judicial_block_time_ms - max_lag_ms:
        raise AnchorRejected(
            "header_too_old",
            f"header time {header.time_ms} is more than {max_lag_ms} ms before the "
            f"judicial block time {judicial_block_time_ms}",
        )
    try:
        payloads = verify_config_txs(header, anchor.config, state.channel)
    except ConfigStepError as exc:
        raise AnchorRejected("bad_config_proof", exc.message) from None
    next_chunk = 0
    if header.record_count == 0:
        if anchor.chunk is not None or header.record_root != EMPTY_ROOT:
            raise AnchorRejected("leaves_mismatch", f"block {h} has no records")
    elif anchor.chunk is not None:
        _verify_leaves(state, header.record_root, header.record_count, anchor.chunk)
        next_chunk = 1
    _verify_cert(state, header, anchor.certificate, scheme)
    history = state.validators
    if anchor.config:
        try:
            history = history.with_config(h, payloads)
        except ConfigStepError as exc:  # pragma: no cover - needs > MAX_CHANGES changes
            raise AnchorRejected("bad_config_proof", exc.message) from None
    pending = None
    if next_chunk < chunk_count(header.record_count, state.chunk_size):
        pending = PendingLeaves(h, header.record_root, header.record_count, next_chunk)
    return replace(
        state,
        height=h,
        header_hash=header.hash,
        time_ms=header.time_ms,
        validators=history,
        pending=pending,
    )


def _verify_leaves(state: LightClientState, root: bytes, count: int, chunk: LeafChunk) -> None:
    try:
        verify_chunk(chunk.leaves, chunk.index, count, chunk.proof, root, state.chunk_size)
    except ProofError as exc:
        raise AnchorRejected(
            "leaves_mismatch", f"{state.channel} block {chunk.height}: {exc.message}"
        ) from None


def _check_chunk(state: LightClientState, chunk: LeafChunk) -> LightClientState:
    p = state.pending
    if p is None or chunk.height != p.height:
        if chunk.height <= state.height:
            raise AnchorRejected(
                "duplicate_anchor", f"the leaves of block {chunk.height} are already anchored"
            )
        raise AnchorRejected(
            "out_of_sequence", f"block {chunk.height} is not anchored yet: its header comes first"
        )
    if chunk.index < p.next_chunk:
        raise AnchorRejected(
            "duplicate_anchor", f"leaf chunk {chunk.index} of block {p.height} is already anchored"
        )
    if chunk.index > p.next_chunk:
        raise AnchorRejected(
            "out_of_sequence",
            f"leaf chunk {chunk.index} of block {p.height} before chunk {p.next_chunk}",
        )
    _verify_leaves(state, p.record_root, p.record_count, chunk)
    nxt = chunk.index + 1
    if nxt >= chunk_count(p.record_count, state.chunk_size):
        return replace(state, pending=None)
    return replace(state, pending=replace(p, next_chunk=nxt))
