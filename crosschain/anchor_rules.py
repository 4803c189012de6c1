"""The judicial channel's rule for ``anchor`` transactions, and readers of what it writes.

The rule (:class:`AnchorRule`) loads the light client state, runs
:func:`crosschain.light_client.check_anchor` and on success writes (keys below,
``<h>`` a 12-digit height, values canonical maps)::

    xc/lc/<source>                       light client state (LightClientState wire)
    xc/anchor/<source>/<h>               header anchor of source block h:
                                         {"jh", "ti", "tx", "hash", "t", "rn"}
    xc/cfg/<source>/<h>                  ConfigStep of source block h (only blocks with
                                         config_update transactions; receipts use them)
    xc/ev/<code key hex>                 evidence index: [{"jh", "ti", "sh", "li", "leaf"}]
    xc/mis/<source>/<judicial h>/<ti>    misbehaviour evidence that froze the link

``jh``/``ti`` are the judicial height and transaction index of the anchor transaction
that carried the entry, ``sh`` the supervision height, ``li`` the leaf's index in that
block's record tree, ``leaf`` the record leaf; the evidence code is
``code_for_leaf(leaf)`` (:mod:`ledger.evidence_code`). Evidence is never overwritten:
a (practically impossible) 80-bit code collision appends a second entry.

A rejected anchor raises :class:`channels.errors.TxRejected` with the light client's
code, so the transaction is INVALID and leaves no writes. A conflicting certified
header is VALID: it freezes the link and records the evidence (result
``{"frozen": true}``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from channels.base import ChannelRules, TxType
from channels.context import TxContext
from channels.errors import Rejection, TxRejected
from channels.judicial import MISMATCH, NOT_ANCHORED, VERIFIED, CaseEvidence, EvidenceResult
from channels.state import StateReader, WriteSet, height_part, iter_height_range, read_value
from crosschain.anchor import (
    ANCHOR_TX_TYPE,
    SOURCE_CHANNEL,
    TARGET_CHANNEL,
    Anchor,
    HeaderAnchor,
    LeafChunk,
    parse_anchor,
)
from crosschain.errors import AnchorRejected
from crosschain.evidence_index import AnchorEntry, EvidenceEntry
from crosschain.light_client import (
    DEFAULT_MAX_DRIFT_MS,
    DEFAULT_MAX_LAG_MS,
    LightClientState,
    check_anchor,
)
from crosschain.validator_history import ConfigStep
from ledger.crypto import ED25519, SignatureScheme
from ledger.encoding import decode
from ledger.errors import LedgerError
from ledger.evidence_code import EvidenceCode, EvidenceCodeError, code_for_leaf
from ledger.evidence_code import parse as parse_code
from ledger.genesis import Genesis

PREFIX: Final = b"xc/"


def lc_key(source: str) -> bytes:
    return PREFIX + b"lc/" + source.encode()


def anchor_prefix(source: str) -> bytes:
    return PREFIX + b"anchor/" + source.encode() + b"/"


def anchor_key(source: str, height: int) -> bytes:
    return anchor_prefix(source) + height_part(height)


def config_prefix(source: str) -> bytes:
    return PREFIX + b"cfg/" + source.encode() + b"/"


def evidence_key(code: EvidenceCode) -> bytes:
    return PREFIX + b"ev/" + code.key.hex().encode()


def misbehaviour_prefix(source: str) -> bytes:
    return PREFIX + b"mis/" + source.encode() + b"/"


@dataclass(frozen=True)
class AnchorRule:
    """The ``anchor`` rule of the judicial channel for one source channel.

    ``initial`` is the light client state before the first anchor (from the genesis:
    :meth:`from_genesis`). Bounds: ``max_lag_ms``/``max_drift_ms`` (see
    :func:`check_anchor`).
    """

    initial: LightClientState
    max_lag_ms: int = DEFAULT_MAX_LAG_MS
    max_drift_ms: int = DEFAULT_MAX_DRIFT_MS
    scheme: SignatureScheme = ED25519

    @staticmethod
    def from_genesis(genesis: Genesis, *, source: str = SOURCE_CHANNEL) -> AnchorRule:
        """The rule for ``genesis``: the source channel's genesis validators, and the
        judicial channel's ``max_time_drift_ms`` parameter as the drift bound."""
        drift = genesis.channel(TARGET_CHANNEL).params.get("max_time_drift_ms")
        return AnchorRule(
            LightClientState.genesis(source, genesis.hash, genesis.channel(source).validators),
            max_drift_ms=drift if isinstance(drift, int) else DEFAULT_MAX_DRIFT_MS,
        )

    @property
    def source(self) -> str:
        return self.initial.channel

    def parse(self, raw: dict[str, Any]) -> Anchor:
        """Payload schema (raises SchemaError naming the field)."""
        return parse_anchor(raw)

    def state(self, reader: StateReader) -> LightClientState:
        return read_light_client(reader, self.initial)

    def apply(self, state: WriteSet, anchor: Anchor, ctx: TxContext) -> Mapping[str, Any] | None:
        """Apply one anchor (see module docstring). Raises :class:`TxRejected`."""
        source = self.source
        lc = self.state(state)

        def anchored_hash(h: int) -> bytes | None:
            entry = read_anchor_entry(state, source, h)
            return None if entry is None else entry.header_hash

        try:
            new = check_anchor(
                lc,
                anchor,
                judicial_block_time_ms=ctx.block_time_ms,
                max_lag_ms=self.max_lag_ms,
                max_drift_ms=self.max_drift_ms,
                anchored_hash=anchored_hash,
                scheme=self.scheme,
            )
        except AnchorRejected as exc:
            raise TxRejected(exc.code, exc.message) from None
        state.put(lc_key(source), new.encode())
        if new.frozen and not lc.frozen:
            evidence = new.evidence[-1]
            state.put_value(
                misbehaviour_prefix(source)
                + height_part(ctx.height)
                + b"/"
                + height_part(ctx.tx_index),
                evidence.to_wire(),
            )
            return {"frozen": True, "height": evidence.height}
        if isinstance(anchor, HeaderAnchor):
            header = anchor.header
            entry = AnchorEntry(
                header.height,
                ctx.height,
                ctx.tx_index,
                ctx.tx_id,
                header.hash,
                header.time_ms,
                header.record_count,
            )
            state.put_value(anchor_key(source, header.height), entry.to_wire())
            if anchor.config:
                step = ConfigStep(header, anchor.certificate, anchor.config)
                state.put_value(config_prefix(source) + height_part(header.height), step.to_wire())
            chunk = anchor.chunk
        else:
            chunk = anchor
        if chunk is not None:
            _index_leaves(state, chunk, ctx, new.chunk_size)
        return {"height": anchor.height, "leaves": 0 if chunk is None else len(chunk.leaves)}

    def tx_type(self, roles: frozenset[str], *, name: str = ANCHOR_TX_TYPE) -> TxType:
        return TxType(
            name=name,
            roles=roles,
            parse=self.parse,
            apply=self.apply,
            summary=f"anchor a committed {self.source} block (light-client checked)",
            extension=True,
        )

    def install(self, rules: ChannelRules, *, name: str = ANCHOR_TX_TYPE) -> ChannelRules:
        """``rules`` with this rule installed at the ``anchor`` extension point (keeps the
        roles the channel registered). Raises ValueError if there is no such point."""
        current = rules.tx_types.get(name)
        if current is None:
            raise ValueError(f"{rules.channel_id}: no {name!r} extension point")
        return rules.with_tx_type(self.tx_type(current.roles, name=name))


def _index_leaves(state: WriteSet, chunk: LeafChunk, ctx: TxContext, chunk_size: int) -> None:
    base = chunk.index * chunk_size
    for i, leaf in enumerate(chunk.leaves):
        key = evidence_key(code_for_leaf(leaf))
        entry = EvidenceEntry(ctx.height, ctx.tx_index, chunk.height, base + i, leaf).to_wire()
        existing = state.get_value(key)
        if isinstance(existing, list):
            if entry not in existing:
                state.put_value(key, [*existing, entry])
        else:
            state.put_value(key, [entry])


# -- case evidence (the judicial channel's EvidenceVerifier) ----------------------


def case_evidence_verifier() -> Callable[
    [StateReader, str, CaseEvidence, TxContext], EvidenceResult | Rejection
]:
    """The :data:`channels.judicial.EvidenceVerifier` for ``judicial_rules``: resolves a
    cited code in this channel's evidence index. ``verified`` iff it names an anchored
    record (and, when a digest is cited, that record's commitment is the digest);
    ``not_anchored`` if no anchored record has the code (yet); ``mismatch`` if the
    cited digest is not the anchored commitment (tampered record). An unreadable code
    (a typo the check symbol catches) is a Rejection ``bad_evidence_code``."""

    def verify(
        reader: StateReader, lender: str, ev: CaseEvidence, ctx: TxContext
    ) -> EvidenceResult | Rejection:
        try:
            code = parse_code(ev.code)
        except EvidenceCodeError as exc:
            return Rejection("bad_evidence_code", exc.message)
        entries = read_evidence(reader, code)
        if not entries:
            return EvidenceResult(NOT_ANCHORED, f"no anchored record has code {code}")
        match = next(
            (e for e in entries if ev.digest is None or _commitment_of(e.leaf) == ev.digest),
            None,
        )
        if match is None:
            return EvidenceResult(
                MISMATCH,
                f"the record anchored as {code} has another digest",
                entries[0].source_height,
                None,
                entries[0].judicial_height,
            )
        anchor = read_anchor_entry(reader, SOURCE_CHANNEL, match.source_height)
        return EvidenceResult(
            VERIFIED,
            "",
            match.source_height,
            None if anchor is None else anchor.header_time_ms,
            match.judicial_height,
        )

    return verify


def _commitment_of(leaf: bytes) -> bytes | None:
    try:
        m = decode(leaf)
    except LedgerError:
        return None
    c = m.get("c") if isinstance(m, dict) else None
    return c if isinstance(c, bytes) else None


# -- readers (for the node, the relay and receipt assembly) ----------------------


def read_light_client(reader: StateReader, initial: LightClientState) -> LightClientState:
    """The light client state kept in judicial state (``initial`` before any anchor)."""
    raw = reader.get(lc_key(initial.channel))
    return initial if raw is None else LightClientState.decode(raw)


def read_anchor_entry(reader: StateReader, source: str, height: int) -> AnchorEntry | None:
    raw = read_value(reader, anchor_key(source, height))
    return None if raw is None else AnchorEntry.from_wire(height, raw)


def read_evidence(reader: StateReader, code: EvidenceCode) -> list[EvidenceEntry]:
    """Every anchored record with evidence code ``code`` (normally zero or one)."""
    raw = read_value(reader, evidence_key(code))
    if not isinstance(raw, list):
        return []
    return [EvidenceEntry.from_wire(e) for e in raw]


def read_config_steps(reader: StateReader, source: str, below: int) -> list[ConfigStep]:
    """The anchored config steps of ``source`` at heights ``< below``, in height order."""
    return [
        ConfigStep.from_wire(decode(raw))
        for _, raw in iter_height_range(reader, config_prefix(source), 0, below - 1)
    ]
