"""What the explorer needs from a node: the :class:`ExplorerBackend` port and the plain
values it returns.

The explorer never reaches into the node's runtime: everything it shows comes through
this port, so the pages can be tested over an in-memory backend and the node adapter
(:mod:`node.explorer.backend`) is the one place that knows the runtime.

Every value is a frozen dataclass of plain data (bytes, ints, strings). The backend
returns what the *node* knows; the explorer decides what the viewer may see
(:mod:`node.explorer.access`) and redacts before rendering — a backend never needs to
know who is asking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ledger.evidence_code import EvidenceCode

#: The statuses of one verification, best first.
VERIFIED = "verified"  # anchored, every chain check passed, the digest matches
MISMATCH = "mismatch"  # anchored and genuine on chain, but the digest differs: tampered
NOT_ANCHORED = "not_anchored"  # no anchored record has this evidence code
CHAIN_FAILED = "chain_failed"  # a receipt check failed: the node's data does not verify
VERIFICATION_STATUSES = (VERIFIED, MISMATCH, NOT_ANCHORED, CHAIN_FAILED)


@dataclass(frozen=True)
class NodeSummary:
    network: str
    node_id: str
    org_id: str
    genesis_hash: bytes


@dataclass(frozen=True)
class OrgView:
    org_id: str
    name: str
    role: str


@dataclass(frozen=True)
class ChannelSummary:
    """One channel as this node sees it now."""

    channel: str
    height: int
    last_block_hash: bytes | None
    last_block_time_ms: int | None
    validators: int
    quorum: int
    view: int | None = None  # this node's consensus view (None: not a validator here)
    primary: str | None = None
    ready: bool | None = None
    status: str = ""  # why not ready / driver failure, "" when fine


@dataclass(frozen=True)
class ValidatorChannel:
    """A validator's activity on one channel, judged from recent commit certificates."""

    channel: str
    is_primary: bool
    last_signed_height: int | None
    signed_recent: int  # certificates among the last ``window`` that carry its vote
    window: int


@dataclass(frozen=True)
class ValidatorHealth:
    node_id: str
    org_id: str
    address: str
    is_self: bool
    link: str  # "self" | "up" | "down" | "unknown": this node's link to it
    last_error: str
    channels: tuple[ValidatorChannel, ...]

    @property
    def health(self) -> str:
        """``ok``, ``degraded`` (reachable but not signing lately) or ``down``."""
        if self.link == "down":
            return "down"
        if any(c.window and c.signed_recent == 0 for c in self.channels):
            return "degraded"
        return "ok"


@dataclass(frozen=True)
class BlockSummary:
    channel: str
    height: int
    hash: bytes
    time_ms: int
    tx_count: int
    proposer: str
    view: int


@dataclass(frozen=True)
class ViewChange:
    """Blocks ``height - 1`` and ``height`` were committed in different views: the
    primary changed. ``in_progress`` marks a change this node is in right now."""

    channel: str
    height: int
    from_view: int
    to_view: int
    time_ms: int | None
    new_primary: str
    in_progress: bool = False


@dataclass(frozen=True)
class VoteView:
    validator: str
    signature: bytes
    valid: bool  # the signature verifies with the validator's key


@dataclass(frozen=True)
class CertificateView:
    view: int
    block_hash: bytes
    votes: tuple[VoteView, ...]
    validators: int
    quorum: int

    @property
    def valid_votes(self) -> int:
        return sum(1 for v in self.votes if v.valid)

    @property
    def complete(self) -> bool:
        return self.valid_votes >= self.quorum


@dataclass(frozen=True)
class TxSummary:
    index: int
    tx_id: bytes
    type: str
    sender: str
    time_ms: int
    valid: bool | None  # the channel rules' verdict (None: unknown)
    code: str


@dataclass(frozen=True)
class BlockDetail:
    channel: str
    height: int
    hash: bytes
    prev_hash: bytes
    time_ms: int
    proposer: str
    view: int
    tx_root: bytes
    tx_count: int
    record_root: bytes
    record_count: int
    state_height: int
    state_root: bytes
    certificate: CertificateView | None
    txs: tuple[TxSummary, ...]
    tip_height: int


@dataclass(frozen=True)
class FieldView:
    """One decoded payload field: a dotted path and its display text."""

    path: str
    value: str
    kind: str  # "str" | "int" | "bytes" | "bool" | "null" | "list" | "map"


@dataclass(frozen=True)
class RecordRef:
    """A record a transaction commits: its index in the tx, commitment, evidence code."""

    index: int
    commitment: bytes
    evidence_code: str


@dataclass(frozen=True)
class TxDetail:
    channel: str
    tx_id: bytes
    height: int
    index: int
    block_hash: bytes
    block_time_ms: int
    type: str
    sender: str
    sender_role: str | None  # the signer's role at that height (None: key not active)
    public_key: bytes
    signature: bytes
    signature_valid: bool
    nonce: int
    time_ms: int
    fields: tuple[FieldView, ...]
    valid: bool | None
    code: str
    message: str
    records: tuple[RecordRef, ...] = ()


@dataclass(frozen=True)
class SupervisionDetail:
    """What the supervision channel says about an anchored record (shown only to
    viewers who may read the supervision channel)."""

    lender: str
    tx_time_ms: int  # the time the lender stamped on its transaction
    tx_index: int  # the transaction's index in its supervision block
    loan_id: str | None = None
    event: str | None = None
    fields: tuple[FieldView, ...] = ()


@dataclass(frozen=True)
class AnchorInfo:
    """Where a supervision block was anchored on the court (judicial) chain."""

    judicial_height: int
    judicial_hash: bytes
    judicial_time_ms: int
    anchor_tx_id: bytes
    anchor_tx_index: int


@dataclass(frozen=True)
class EvidenceRecord:
    """One record and its lineage: lender tx → supervision block → anchor → court block.

    ``anchor`` is None while the record is committed but not yet anchored (lookups by
    tx id / loan id can find such records); ``supervision`` is None if the backend has
    no supervision data for it.
    """

    evidence_code: str
    commitment: bytes
    tx_id: bytes
    tx_type: str
    record_index: int  # index of the record in its transaction
    leaf_index: int  # index of the leaf in the supervision block's record tree
    supervision_height: int
    supervision_hash: bytes
    supervision_time_ms: int
    anchor: AnchorInfo | None
    supervision: SupervisionDetail | None = None


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # "pass" | "fail" | "skip"
    reason: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Verification:
    """The outcome of checking a digest against an evidence code."""

    evidence_code: str
    status: str  # one of VERIFICATION_STATUSES
    submitted_commitment: bytes
    anchored_commitment: bytes | None = None
    checks: tuple[CheckResult, ...] = ()
    supervision_height: int | None = None
    supervision_time_ms: int | None = None
    judicial_height: int | None = None
    anchored_time_ms: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class Account:
    """An explorer sign-in: a person, the org whose role and permissions apply."""

    username: str
    org_id: str
    password_hash: str
    display_name: str = ""
    disabled: bool = False
    created_ms: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)


class ExplorerBackend(Protocol):
    """What the explorer asks of a node. Methods return ``None`` / empty for "not
    found" and raise only for bugs; they never check who is asking."""

    def node_summary(self) -> NodeSummary: ...

    def channel_ids(self) -> Sequence[str]:
        """Every channel of the network, in display order."""
        ...

    def read_roles(self, channel: str) -> frozenset[str]:
        """Roles that read the whole ``channel`` now (genesis ``read``, as governed)."""
        ...

    def org(self, org_id: str) -> OrgView | None:
        """The org now (genesis or registered by governance); None if unknown."""
        ...

    def channel_summaries(self) -> list[ChannelSummary]: ...

    def validators(self) -> list[ValidatorHealth]: ...

    def recent_blocks(
        self, channel: str, limit: int, before: int | None = None
    ) -> list[BlockSummary]:
        """Up to ``limit`` blocks of ``channel`` below height ``before`` (default: the
        newest), newest first."""
        ...

    def view_changes(self, channel: str, limit: int) -> list[ViewChange]:
        """The most recent view changes seen in ``channel``'s recent blocks, newest first."""
        ...

    def block(self, channel: str, height: int) -> BlockDetail | None: ...

    def block_by_hash(self, channel: str, block_hash: bytes) -> BlockDetail | None: ...

    def transaction(self, channel: str, tx_id: bytes) -> TxDetail | None: ...

    def evidence_by_code(self, code: EvidenceCode) -> list[EvidenceRecord]:
        """Anchored records with evidence code ``code`` (normally zero or one)."""
        ...

    def evidence_by_tx(self, tx_id: bytes) -> list[EvidenceRecord]:
        """The records of supervision transaction ``tx_id`` (anchored or not)."""
        ...

    def evidence_by_loan(self, loan_id: str, lender: str | None) -> list[EvidenceRecord]:
        """The records of a loan's reported events (``lender`` None: any lender)."""
        ...

    def verify(self, code: EvidenceCode, commitment: bytes) -> Verification:
        """Assemble the receipt for ``code`` and verify it offline-style against the
        genesis trust root, comparing ``commitment`` with the anchored one."""
        ...

    def find_account(self, username: str) -> Account | None: ...

    def append_audit(self, entry: Mapping[str, Any]) -> None:
        """Append one entry to the audit log durably (fsynced) before returning."""
        ...
