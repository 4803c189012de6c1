"""Evidence acknowledgements: the return leg, judicial → supervision.

After the court chain anchors supervision block ``s``, a relay writes one
``anchor_receipt`` transaction to the supervision channel. Its payload::

    {"v": 1, "sh": s, "shh": <supervision header hash of s>,
     "jheader": <judicial header wire>, "jcert": <its commit certificate wire>,
     "atx": <anchor tx id>, "li": <index of the anchor's record leaf in the judicial
     block's record tree>, "proof": [hash, ...],
     "jcfg": [<judicial ConfigStep wire>, ...]}

Supervision validators check it as a light client of the judicial channel — the same
code path a receipt verifier follows (:class:`ValidatorHistory`,
:func:`ledger.certificate.verify_certificate`, RFC 9162 inclusion): the judicial
config steps since the last ack bring the judicial validator history up to date; the
judicial header is certified by the set in force at its height; and the anchor's
record leaf ``record_leaf("anchor", atx, 0, shh)`` is in that header's
``record_root``. ``shh`` must be the supervision channel's own header hash of ``s``,
and acks come exactly once per block, in height order.

An anchor is ordered whether or not the court's light client accepts it (a rejected
one is INVALID, its record leaf still in the block), so inclusion alone would let a
relay acknowledge an anchor the court refused — the court then holds no evidence for
block ``s`` while the supervision chain shows its codes. So the ack must also name the
anchor the court chain *accepted*: the anchor entry of ``s`` in the judicial state
(``xc/anchor/supervision/<s>``, written once by the VALID anchor) must say judicial
height ``jheader.h`` and transaction ``atx``. Every node holds the judicial channel:
the rule reads that entry as a cross-channel fact once this node has applied the
judicial chain to ``jheader.h`` (until then the block waits, ``NotYetCommitted``; the
entry is write-once, so every node decides alike). Until session 27 this check was
missing.

Once ``s`` is acknowledged, every record of block ``s`` has its evidence code,
``code_for_leaf(leaf)`` (:func:`evidence_codes`): the lender's status query shows it.

:func:`check_ack` raises :class:`~crosschain.errors.AckRejected` with one of the codes
``duplicate_ack``, ``out_of_sequence``, ``unknown_block``, ``header_mismatch``,
``wrong_channel``, ``bad_config_step``, ``bad_proof``, ``bad_certificate``,
``anchor_not_accepted`` (checked in that order: duplicates cost no hashing and no
signature check, and the court chain's entry is read only for a certified judicial
block — one every honest node will apply — so an ack naming a forged height is refused
at once instead of stalling the channel).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from channels.base import BLOCK_META_PREFIX, ChannelRules, TxType
from channels.context import CrossChannelReader, TxContext, committed_facts
from channels.errors import TxRejected
from channels.state import StateReader, WriteSet, height_part, read_value
from crosschain.anchor import SOURCE_CHANNEL, TARGET_CHANNEL, anchor_record_leaf
from crosschain.anchor_rules import read_anchor_entry
from crosschain.errors import AckRejected
from crosschain.evidence_index import AnchorEntry
from crosschain.last_decoded import LastDecoded
from crosschain.validator_history import (
    MAX_CONFIG_TXS,
    MAX_PROOF_HASHES,
    ConfigStep,
    ConfigStepError,
    ValidatorHistory,
)
from ledger.blocks import (
    Block,
    BlockHeader,
    Transaction,
    block_record_leaves,
    record_leaves,
)
from ledger.certificate import CommitCertificate, ValidatorSet, verify_certificate
from ledger.crypto import ED25519, SignatureScheme, Signer
from ledger.encoding import decode, encode
from ledger.errors import CertificateError, ProofError, SchemaError
from ledger.evidence_code import EvidenceCode, code_for_leaf
from ledger.genesis import Genesis
from ledger.merkle import inclusion_proof, verify_inclusion
from ledger.schema import as_map, check_keys, get_bytes, get_int, get_list

#: The supervision channel's transaction type for acknowledgements (its extension point).
ACK_TX_TYPE: Final = "anchor_receipt"
ACK_STATE_KEY: Final = b"xc/ack/state"
ACK_PREFIX: Final = b"xc/ack/h/"
_KEYS: Final = frozenset({"v", "sh", "shh", "jheader", "jcert", "atx", "li", "proof", "jcfg"})


def evidence_codes(tx: Transaction) -> list[EvidenceCode]:
    """The evidence codes of ``tx``'s records, in record order (once its block is anchored)."""
    return [code_for_leaf(leaf) for leaf in record_leaves(tx)]


@dataclass(frozen=True)
class EvidenceAck:
    """The payload of an ``anchor_receipt`` transaction (see module docstring)."""

    source_height: int
    source_hash: bytes
    judicial_header: BlockHeader
    judicial_certificate: CommitCertificate
    anchor_tx: bytes
    leaf_index: int
    proof: tuple[bytes, ...]
    judicial_config: tuple[ConfigStep, ...] = ()

    def to_payload(self) -> dict[str, Any]:
        return {
            "v": 1,
            "sh": self.source_height,
            "shh": self.source_hash,
            "jheader": self.judicial_header.to_wire(),
            "jcert": self.judicial_certificate.to_wire(),
            "atx": self.anchor_tx,
            "li": self.leaf_index,
            "proof": list(self.proof),
            "jcfg": [s.to_wire() for s in self.judicial_config],
        }

    @staticmethod
    def from_payload(raw: Any) -> EvidenceAck:
        """Raises :class:`SchemaError` naming the bad field."""
        m = as_map(raw, "anchor_receipt")
        check_keys(m, _KEYS, "anchor_receipt")
        if get_int(m, "v") != 1:
            raise SchemaError("evidence_ack: unsupported version")
        proof = get_list(m, "proof", max_len=MAX_PROOF_HASHES)
        if any(not isinstance(p, bytes) or len(p) != 32 for p in proof):
            raise SchemaError("field 'proof': each hash must be 32 bytes")
        return EvidenceAck(
            source_height=get_int(m, "sh", lo=1),
            source_hash=get_bytes(m, "shh", 32),
            judicial_header=BlockHeader.from_wire(m.get("jheader")),
            judicial_certificate=CommitCertificate.from_wire(m.get("jcert")),
            anchor_tx=get_bytes(m, "atx", 32),
            leaf_index=get_int(m, "li"),
            proof=tuple(proof),
            judicial_config=tuple(
                ConfigStep.from_wire(s) for s in get_list(m, "jcfg", max_len=MAX_CONFIG_TXS)
            ),
        )


@dataclass(frozen=True)
class AckState:
    """What the supervision channel knows about the judicial channel and its acks."""

    judicial: ValidatorHistory
    acked: int = 0
    judicial_height: int = 0

    @staticmethod
    def genesis(judicial_validators: ValidatorSet, channel: str = TARGET_CHANNEL) -> AckState:
        return AckState(ValidatorHistory.genesis(channel, judicial_validators))

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": 1,
            "jvals": self.judicial.to_wire(),
            "acked": self.acked,
            "jh": self.judicial_height,
        }

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @staticmethod
    def from_wire(raw: Any) -> AckState:
        m = as_map(raw, "ack state")
        check_keys(m, frozenset({"v", "jvals", "acked", "jh"}), "ack state")
        if get_int(m, "v") != 1:
            raise SchemaError("ack state: unsupported version")
        return AckState(
            ValidatorHistory.from_wire(m.get("jvals")), get_int(m, "acked"), get_int(m, "jh")
        )

    @staticmethod
    def decode(data: bytes) -> AckState:
        """Decode (raises like :meth:`from_wire`); the last bytes decoded are
        remembered (:class:`~crosschain.last_decoded.LastDecoded`)."""
        return _decode_state(data)


_decode_state = LastDecoded(lambda data: AckState.from_wire(decode(data)))


#: ``court_anchor(s, j)``: the court chain's accepted anchor of supervision block ``s``
#: as that chain stands after judicial block ``j`` (None if there is none); raises
#: :class:`~channels.errors.NotYetCommitted` if this node has not applied ``j`` yet.
CourtAnchor = Callable[[int, int], AnchorEntry | None]


def court_anchor_of(cross: CrossChannelReader) -> CourtAnchor:
    """:data:`CourtAnchor` over this node's other channels (the judicial channel's
    anchor entries, read as cross-channel facts)."""

    def court_anchor(s: int, judicial_height: int) -> AnchorEntry | None:
        court = committed_facts(cross, TARGET_CHANNEL, judicial_height)
        return read_anchor_entry(court, SOURCE_CHANNEL, s)

    return court_anchor


def check_ack(
    state: AckState,
    ack: EvidenceAck,
    *,
    local_header_hash: Callable[[int], bytes | None],
    court_anchor: CourtAnchor,
    scheme: SignatureScheme = ED25519,
) -> AckState:
    """Check ``ack`` (see module docstring); return the new state or raise
    :class:`AckRejected` (or what ``court_anchor`` raises). ``local_header_hash(s)`` is
    this channel's own header hash of block ``s`` (None if it has no such block)."""
    s = ack.source_height
    if s <= state.acked:
        raise AckRejected("duplicate_ack", f"block {s} is already acknowledged")
    if s != state.acked + 1:
        raise AckRejected(
            "out_of_sequence", f"block {s} is not the next to acknowledge ({state.acked + 1})"
        )
    local = local_header_hash(s)
    if local is None:
        raise AckRejected("unknown_block", f"this channel has no block {s}")
    if local != ack.source_hash:
        raise AckRejected("header_mismatch", f"the acknowledged header is not block {s}")
    jh = ack.judicial_header
    channel = state.judicial.channel
    if jh.channel != channel:
        raise AckRejected("wrong_channel", f"header is of channel {jh.channel!r}, not {channel!r}")
    if jh.height < state.judicial_height:
        raise AckRejected(
            "out_of_sequence",
            f"{channel} block {jh.height} is below the last acknowledged {state.judicial_height}",
        )
    history = state.judicial
    for step in ack.judicial_config:
        if step.height >= jh.height:
            raise AckRejected(
                "bad_config_step", f"config step {step.height} is not below {jh.height}"
            )
    try:
        history = history.apply_steps(ack.judicial_config, scheme=scheme)
    except ConfigStepError as exc:
        raise AckRejected("bad_config_step", exc.message) from None
    leaf = anchor_record_leaf(ack.anchor_tx, ack.source_hash)
    try:
        verify_inclusion(leaf, ack.leaf_index, jh.record_count, ack.proof, jh.record_root)
    except ProofError as exc:
        raise AckRejected(
            "bad_proof", f"anchor not in {channel} block {jh.height}: {exc}"
        ) from None
    try:
        verify_certificate(
            ack.judicial_certificate,
            channel=channel,
            height=jh.height,
            block_hash=jh.hash,
            validators=history.at(jh.height),
            scheme=scheme,
        )
    except CertificateError as exc:
        raise AckRejected("bad_certificate", f"{channel} block {jh.height}: {exc}") from None
    # last: only a judicial block certified above is worth waiting for (every honest
    # node reaches it); a forged height checked first would stall the channel
    accepted = court_anchor(s, jh.height)
    if accepted is None or (accepted.judicial_height, accepted.tx_id) != (
        jh.height,
        ack.anchor_tx,
    ):
        where = (
            "none"
            if accepted is None
            else f"{accepted.tx_id.hex()[:16]}… at height {accepted.judicial_height}"
        )
        raise AckRejected(
            "anchor_not_accepted",
            f"the {channel} chain did not accept anchor {ack.anchor_tx.hex()[:16]}… of block "
            f"{s} at height {jh.height} (its accepted anchor of block {s}: {where})",
        )
    return AckState(history, s, jh.height)


def build_ack(
    source_height: int,
    source_hash: bytes,
    judicial_block: Block,
    judicial_certificate: CommitCertificate,
    anchor_tx_index: int,
    judicial_config: Sequence[ConfigStep] = (),
) -> EvidenceAck:
    """The ack for the header anchor at ``anchor_tx_index`` of ``judicial_block``.

    Raises :class:`SchemaError` if that transaction is not the header anchor of
    ``source_hash``."""
    txs = judicial_block.transactions
    if not 0 <= anchor_tx_index < len(txs):
        raise SchemaError(f"no transaction {anchor_tx_index} in judicial block")
    anchor = txs[anchor_tx_index]
    before = sum(len(record_leaves(t)) for t in txs[:anchor_tx_index])
    leaves = block_record_leaves(txs)
    leaf = anchor_record_leaf(anchor.tx_id, source_hash)
    if before >= len(leaves) or leaves[before] != leaf:
        raise SchemaError(f"transaction {anchor_tx_index} is not the anchor of that header")
    return EvidenceAck(
        source_height,
        source_hash,
        judicial_block.header,
        judicial_certificate,
        anchor.tx_id,
        before,
        tuple(inclusion_proof(leaves, before)),
        tuple(judicial_config),
    )


@dataclass(frozen=True)
class AckEntry:
    """The acknowledgement of supervision block ``height``."""

    height: int
    judicial_height: int
    judicial_time_ms: int
    anchor_tx: bytes

    @staticmethod
    def from_wire(height: int, raw: Any) -> AckEntry:
        m = as_map(raw, "ack entry")
        return AckEntry(height, get_int(m, "jh"), get_int(m, "t"), get_bytes(m, "atx", 32))


def meta_header_hash(reader: StateReader, height: int) -> bytes | None:
    """The header hash of this channel's block ``height`` from its block meta record
    (``meta/block/<h>`` field ``"hash"``; None if absent)."""
    meta = read_value(reader, BLOCK_META_PREFIX + height_part(height))
    if not isinstance(meta, dict):
        return None
    value = meta.get("hash")
    return value if isinstance(value, bytes) and len(value) == 32 else None


@dataclass(frozen=True)
class AckRule:
    """The supervision channel's ``anchor_receipt`` rule.

    Writes ``xc/ack/state`` (AckState) and ``xc/ack/h/<s>`` =
    ``{"jh", "t", "atx"}`` per acknowledged block. ``header_hash_of(reader, s)`` reads
    the channel's own header hash of block ``s`` (default: :func:`meta_header_hash`).
    """

    initial: AckState
    header_hash_of: Callable[[StateReader, int], bytes | None] = meta_header_hash
    scheme: SignatureScheme = ED25519

    @staticmethod
    def from_genesis(genesis: Genesis) -> AckRule:
        return AckRule(AckState.genesis(genesis.channel(TARGET_CHANNEL).validators))

    def parse(self, raw: dict[str, Any]) -> EvidenceAck:
        return EvidenceAck.from_payload(raw)

    def state(self, reader: StateReader) -> AckState:
        raw = reader.get(ACK_STATE_KEY)
        return self.initial if raw is None else AckState.decode(raw)

    def apply(self, state: WriteSet, ack: EvidenceAck, ctx: TxContext) -> Mapping[str, Any] | None:
        current = self.state(state)
        try:
            new = check_ack(
                current,
                ack,
                local_header_hash=lambda h: self.header_hash_of(state, h),
                court_anchor=court_anchor_of(ctx.cross),
                scheme=self.scheme,
            )
        except AckRejected as exc:
            raise TxRejected(exc.code, exc.message) from None
        state.put(ACK_STATE_KEY, new.encode())
        state.put_value(
            ACK_PREFIX + height_part(ack.source_height),
            {
                "jh": ack.judicial_header.height,
                "t": ack.judicial_header.time_ms,
                "atx": ack.anchor_tx,
            },
        )
        return {"height": ack.source_height, "judicial_height": ack.judicial_header.height}

    def tx_type(self, roles: frozenset[str], *, name: str = ACK_TX_TYPE) -> TxType:
        return TxType(
            name=name,
            roles=roles,
            parse=self.parse,
            apply=self.apply,
            summary=f"acknowledge that a {SOURCE_CHANNEL} block is anchored on {TARGET_CHANNEL}",
            extension=True,
        )

    def install(self, rules: ChannelRules, *, name: str = ACK_TX_TYPE) -> ChannelRules:
        """``rules`` with this rule at the ``anchor_receipt`` extension point."""
        current = rules.tx_types.get(name)
        if current is None:
            raise ValueError(f"{rules.channel_id}: no {name!r} extension point")
        return rules.with_tx_type(self.tx_type(current.roles, name=name))


def read_ack_state(reader: StateReader, initial: AckState) -> AckState:
    raw = reader.get(ACK_STATE_KEY)
    return initial if raw is None else AckState.decode(raw)


def read_ack(reader: StateReader, height: int) -> AckEntry | None:
    raw = read_value(reader, ACK_PREFIX + height_part(height))
    return None if raw is None else AckEntry.from_wire(height, raw)


def ack_tx(
    ack: EvidenceAck,
    *,
    network: bytes,
    sender: str,
    signer: Signer,
    time_ms: int,
    channel: str = SOURCE_CHANNEL,
) -> Transaction:
    """The signed supervision ``anchor_receipt`` transaction carrying ``ack``."""
    tx = Transaction(
        network=network,
        channel=channel,
        type=ACK_TX_TYPE,
        sender=sender,
        public_key=signer.public_key,
        nonce=ack.source_height,
        time_ms=time_ms,
        payload=ack.to_payload(),
    )
    return tx.signed(signer)


__all__ = [
    "ACK_TX_TYPE",
    "AckEntry",
    "AckRule",
    "AckState",
    "EvidenceAck",
    "ack_tx",
    "anchor_record_leaf",
    "build_ack",
    "check_ack",
    "court_anchor_of",
    "evidence_codes",
    "read_ack",
    "read_ack_state",
]
