"""司法链 — the judicial channel, run by the internet court.

* ``anchor`` and ``evidence_ack`` — registered extension points. The cross-chain layer
  installs their rules (anchoring supervision digests after checking the supervision
  block's commit certificate; issuing evidence codes) with
  :meth:`ChannelRules.with_tx_type`; until then they are INVALID ``rule_not_installed``.
* ``case_file`` / ``case_file_batch`` (lender) — 立案 / 批量立案: each case cites
  evidence codes, optionally with the record digest (commitment) the lender claims
  was anchored. With an :data:`EvidenceVerifier` installed (:func:`judicial_rules`;
  the node installs :func:`crosschain.anchor_rules.case_evidence_verifier`) every
  validator resolves each cited code against the channel's own anchored evidence
  index and the case records one result per code — ``verified``, ``not_anchored`` or
  ``mismatch`` (digest given and not the anchored one) — and a summary
  ``evidence_status`` (``verified`` iff every code verified, else ``failed``). The
  filing is kept either way; only an unreadable code (a typo the check symbol
  catches) rejects it. Without a verifier every result is ``unverified``. The
  transaction's result lists each case's results, so one batch call verifies up to
  :data:`MAX_BATCH_CASES` cases. A batch is atomic.
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
    """A cited evidence code and, optionally, the digest the lender claims for it."""

    code: str
    digest: bytes | None = None

    def to_wire(self) -> dict[str, Any]:
        return (
            {"code": self.code}
            if self.digest is None
            else {"code": self.code, "digest": self.digest}
        )


#: Results of one cited code (recorded in the case).
VERIFIED: Final = "verified"
NOT_ANCHORED: Final = "not_anchored"
MISMATCH: Final = "mismatch"
UNVERIFIED: Final = "unverified"


@dataclass(frozen=True)
class EvidenceResult:
    """The verification result of one cited code: ``result`` is :data:`VERIFIED`,
    :data:`NOT_ANCHORED` or :data:`MISMATCH`; when anchored, ``source_height`` /
    ``source_time_ms`` are the supervision block's and ``judicial_height`` the anchor's."""

    result: str
    detail: str = ""
    source_height: int | None = None
    source_time_ms: int | None = None
    judicial_height: int | None = None

    def to_wire(self) -> dict[str, Any]:
        w: dict[str, Any] = {"result": self.result}
        if self.detail:
            w["detail"] = self.detail
        for k, v in (
            ("sh", self.source_height),
            ("st", self.source_time_ms),
            ("jh", self.judicial_height),
        ):
            if v is not None:
                w[k] = v
        return w


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


#: Resolves one cited evidence item against the judicial state (anchors and evidence
#: codes written by the cross-chain rules): its :class:`EvidenceResult`, or a
#: Rejection if the code cannot be read at all (the filing is then INVALID).
EvidenceVerifier = Callable[
    [StateReader, str, CaseEvidence, TxContext], "EvidenceResult | Rejection"
]


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
        code = ep.code("code")
        evidence.append(CaseEvidence(code, ep.digest("digest") if ep.optional("digest") else None))
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
) -> dict[str, Any]:
    key = case_key(ctx.sender, case.case_id)
    if state.get(key) is not None:
        raise TxRejected("duplicate_case_id", f"case {case.case_id!r} was already filed")
    results: list[EvidenceResult] = []
    for ev in case.evidence:
        if verify is None:
            results.append(EvidenceResult(UNVERIFIED))
            continue
        got = verify(state, ctx.sender, ev, ctx)
        if isinstance(got, Rejection):
            raise TxRejected(got.code, f"evidence {ev.code}: {got.message}")
        results.append(got)
    if verify is None:
        status = UNVERIFIED
    else:
        status = VERIFIED if all(r.result == VERIFIED for r in results) else "failed"
    state.put_value(
        key,
        {
            "case_id": case.case_id,
            "lender": ctx.sender,
            "loan_id": case.loan_id,
            "defendant_ref": case.defendant_ref,
            "claim_cents": case.claim_cents,
            "cause": case.cause,
            "evidence": [
                {**e.to_wire(), **r.to_wire()} for e, r in zip(case.evidence, results, strict=True)
            ],
            "evidence_status": status,
            "status": "filed",
            "h": ctx.height,
            "t": ctx.block_time_ms,
            "tx": ctx.tx_id,
            "i": index,
        },
    )
    return {
        "case_id": case.case_id,
        "evidence_status": status,
        "evidence": [
            {"code": e.code, "result": r.result}
            for e, r in zip(case.evidence, results, strict=True)
        ],
    }


def case_file_apply(
    verify: EvidenceVerifier | None,
) -> Callable[[WriteSet, Case, TxContext], Mapping[str, Any]]:
    """Result: ``{"case_id", "evidence_status", "evidence": [{"code", "result"}]}``."""

    def _apply(state: WriteSet, case: Case, ctx: TxContext) -> Mapping[str, Any]:
        return _file_case(state, case, ctx, 0, verify)

    return _apply


def case_file_batch_apply(
    verify: EvidenceVerifier | None,
) -> Callable[[WriteSet, CaseBatch, TxContext], Mapping[str, Any]]:
    """Result: ``{"cases": n, "verified": <cases whose every code verified>,
    "results": [<case_file result>, ...]}`` in case order."""

    def _apply(state: WriteSet, batch: CaseBatch, ctx: TxContext) -> Mapping[str, Any]:
        results = []
        for i, case in enumerate(batch.cases):
            try:
                results.append(_file_case(state, case, ctx, i, verify))
            except TxRejected as exc:
                raise TxRejected(exc.code, f"case {i} ({case.case_id}): {exc.message}") from None
        verified = sum(1 for r in results if r["evidence_status"] == VERIFIED)
        return {"cases": len(batch.cases), "verified": verified, "results": results}

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
