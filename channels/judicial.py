"""司法链 — the judicial channel, run by the internet court.

* ``anchor`` and ``evidence_ack`` — registered extension points. The cross-chain layer
  installs their rules (anchoring supervision digests after checking the supervision
  block's commit certificate; issuing evidence codes) with
  :meth:`ChannelRules.with_tx_type`; until then they are INVALID ``rule_not_installed``.
* ``case_file`` / ``case_file_batch`` (lender) — 立案 / 批量立案: each case cites
  evidence codes with the digest the lender claims was anchored. The evidence issue
  installs an :data:`EvidenceVerifier` via :func:`judicial_rules`; without one the
  evidence is stored as ``unverified``. A batch is atomic.
* ``court_publication`` (court) — shared rules, typical cases and notices (digest +
  metadata).

State::

    jud/case/<lender>/<case id>     a filed case
    jud/pub/<publication id>        a publication
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from channels.base import ChannelRules, TxType, config_update_type, extension_point, make_rules
from channels.context import TxContext
from channels.errors import Rejection, TxRejected
from channels.fields import PayloadReader, str_map
from channels.roles import COURT, LENDER, NODE
from channels.state import StateReader, WriteSet
from ledger.errors import SchemaError

CHANNEL: Final = "judicial"
MAX_BATCH_CASES: Final = 500
MAX_CASE_EVIDENCE: Final = 32
PUBLICATION_KINDS: Final = ("rule", "typical_case", "notice")
#: Who may carry anchors across: the court itself or any genesis node's relay.
RELAY_ROLES: Final = frozenset({COURT, NODE})


@dataclass(frozen=True)
class CaseEvidence:
    code: str
    digest: bytes

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "digest": self.digest}


@dataclass(frozen=True)
class Case:
    case_id: str
    loan_id: str
    defendant_ref: bytes
    claim_cents: int
    cause: str
    evidence: tuple[CaseEvidence, ...]


@dataclass(frozen=True)
class CaseBatch:
    cases: tuple[Case, ...]


@dataclass(frozen=True)
class Publication:
    pub_id: str
    kind: str
    title: str
    digest: bytes
    metadata: Mapping[str, str]


#: Checks one cited evidence item against the judicial state (anchors and evidence
#: codes written by the cross-chain rules); returns a Rejection if it does not verify.
EvidenceVerifier = Callable[[StateReader, str, CaseEvidence, TxContext], "Rejection | None"]


def case_key(lender: str, case_id: str) -> bytes:
    return f"jud/case/{lender}/{case_id}".encode()


def publication_key(pub_id: str) -> bytes:
    return f"jud/pub/{pub_id}".encode()


def _parse_case_map(raw: Any, what: str) -> Case:
    p = PayloadReader(raw, what)
    items = p.items("evidence", min_len=1, max_len=MAX_CASE_EVIDENCE)
    case = Case(
        case_id=p.ref("case_id"),
        loan_id=p.ref("loan_id"),
        defendant_ref=p.digest("defendant_ref"),
        claim_cents=p.amount("claim_cents", lo=1),
        cause=p.text("cause", max_len=128, min_len=1),
        evidence=(),
    )
    p.done()
    evidence = []
    for i, item in enumerate(items):
        ep = PayloadReader(item, f"evidence[{i}]")
        evidence.append(CaseEvidence(ep.code("code"), ep.digest("digest")))
        ep.done()
    if len({e.code for e in evidence}) != len(evidence):
        raise SchemaError(f"{what}: an evidence code is cited twice")
    return Case(
        case.case_id,
        case.loan_id,
        case.defendant_ref,
        case.claim_cents,
        case.cause,
        tuple(evidence),
    )


def parse_case_file(raw: dict[str, Any]) -> Case:
    return _parse_case_map(raw, "case_file")


def parse_case_file_batch(raw: dict[str, Any]) -> CaseBatch:
    p = PayloadReader(raw, "case_file_batch")
    items = p.items("cases", min_len=1, max_len=MAX_BATCH_CASES)
    p.done()
    cases = []
    for i, item in enumerate(items):
        try:
            cases.append(_parse_case_map(item, f"cases[{i}]"))
        except SchemaError as exc:
            raise SchemaError(f"cases[{i}]: {exc.message}") from None
    return CaseBatch(tuple(cases))


def parse_publication(raw: dict[str, Any]) -> Publication:
    p = PayloadReader(raw, "court_publication")
    v = Publication(
        pub_id=p.ref("pub_id"),
        kind=p.enum("kind", PUBLICATION_KINDS),
        title=p.text("title", max_len=256, min_len=1),
        digest=p.digest("digest"),
        metadata=str_map(p.submap("metadata"), "field 'metadata'"),
    )
    p.done()
    return v


def _file_case(
    state: WriteSet, case: Case, ctx: TxContext, index: int, verify: EvidenceVerifier | None
) -> None:
    key = case_key(ctx.sender, case.case_id)
    if state.get(key) is not None:
        raise TxRejected("duplicate_case_id", f"case {case.case_id!r} was already filed")
    status = "unverified"
    if verify is not None:
        for ev in case.evidence:
            rejection = verify(state, ctx.sender, ev, ctx)
            if rejection is not None:
                raise TxRejected(rejection.code, f"evidence {ev.code}: {rejection.message}")
        status = "verified"
    state.put_value(
        key,
        {
            "case_id": case.case_id,
            "lender": ctx.sender,
            "loan_id": case.loan_id,
            "defendant_ref": case.defendant_ref,
            "claim_cents": case.claim_cents,
            "cause": case.cause,
            "evidence": [e.to_wire() for e in case.evidence],
            "evidence_status": status,
            "status": "filed",
            "h": ctx.height,
            "t": ctx.block_time_ms,
            "tx": ctx.tx_id,
            "i": index,
        },
    )


def case_file_apply(verify: EvidenceVerifier | None) -> Callable[[WriteSet, Case, TxContext], None]:
    def _apply(state: WriteSet, case: Case, ctx: TxContext) -> None:
        _file_case(state, case, ctx, 0, verify)

    return _apply


def case_file_batch_apply(
    verify: EvidenceVerifier | None,
) -> Callable[[WriteSet, CaseBatch, TxContext], Mapping[str, Any]]:
    def _apply(state: WriteSet, batch: CaseBatch, ctx: TxContext) -> Mapping[str, Any]:
        for i, case in enumerate(batch.cases):
            try:
                _file_case(state, case, ctx, i, verify)
            except TxRejected as exc:
                raise TxRejected(exc.code, f"case {i} ({case.case_id}): {exc.message}") from None
        return {"cases": len(batch.cases)}

    return _apply


def apply_publication(state: WriteSet, p: Publication, ctx: TxContext) -> None:
    key = publication_key(p.pub_id)
    if state.get(key) is not None:
        raise TxRejected("duplicate_publication", f"publication {p.pub_id!r} already exists")
    state.put_value(
        key,
        {
            "pub_id": p.pub_id,
            "kind": p.kind,
            "title": p.title,
            "digest": p.digest,
            "metadata": dict(p.metadata),
            "by": ctx.sender,
            "h": ctx.height,
            "t": ctx.block_time_ms,
        },
    )


def judicial_rules(evidence_verifier: EvidenceVerifier | None = None) -> ChannelRules:
    """The judicial rules, with case evidence checked by ``evidence_verifier`` if given."""
    return make_rules(
        CHANNEL,
        (
            config_update_type(),
            extension_point(
                "anchor",
                RELAY_ROLES,
                "Anchor supervision digests (rule installed by the cross-chain layer).",
            ),
            extension_point(
                "evidence_ack",
                RELAY_ROLES,
                "Acknowledge evidence codes (rule installed by the cross-chain layer).",
            ),
            TxType(
                "case_file",
                frozenset({LENDER}),
                parse_case_file,
                case_file_apply(evidence_verifier),
                "File one case citing evidence codes (立案).",
            ),
            TxType(
                "case_file_batch",
                frozenset({LENDER}),
                parse_case_file_batch,
                case_file_batch_apply(evidence_verifier),
                "File up to 500 cases atomically (批量立案).",
            ),
            TxType(
                "court_publication",
                frozenset({COURT}),
                parse_publication,
                apply_publication,
                "Publish a shared rule, typical case or notice (digest + metadata).",
            ),
        ),
    )


RULES: Final = judicial_rules()
