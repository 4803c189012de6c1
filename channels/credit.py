"""征信链 — the credit channel, run by the credit agency.

* ``credit_sync`` (credit agency) names a supervision height H and folds every
  supervision fact in (last synced height, H] into per-borrower credit records (one
  per lender and loan, keyed by the pseudonymous borrower reference) and the lender
  statuses. Deterministic: it reads only committed, height-stamped facts.
* ``credit_entry`` / ``credit_entry_revoke`` (credit agency) — entries the agency adds
  (defaults, write-offs, judgments… from outside the network) and corrections.
* ``firm_profile`` (credit agency) — credit profiles of small and micro firms (评估),
  versioned.
* ``credit_query`` (lender) — the multi-lender check (多头借贷查询): the outcome holds
  counts only (lenders with open loans, loans by state, total outstanding, agency
  entries by kind, recent queries by other lenders), never other lenders' identities.
  Every query is on chain with its lender and logged per borrower; the answer is also
  stored under ``cred/answer/<lender>/<query id>``. Scoping rule (enforced by the
  node): a lender reads only outcomes and answers of its own queries; raw reads of
  this channel are not served to lenders.

State::

    cred/sync                              last synced supervision height
    cred/lender/<org>                      lender status as of the last sync
    cred/rec/<borrower hex>/<org>/<loan>   credit record of one loan
    cred/entry/<entry id>                  agency entry
    cred/bentry/<borrower hex>/<entry id>  agency entries by borrower
    cred/firm/<firm id>                    firm profile (current)
    cred/firmlog/<firm id>/<version>       firm profile history
    cred/answer/<org>/<query id>           a query's answer (the asking lender's)
    cred/qlog/<borrower hex>/<h>/<tx>      query log by borrower
    cred/qcount/<org>/<day>                queries per lender per UTC day
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from channels.base import TxType, config_update_type, make_rules
from channels.context import DAY_MS, TxContext, committed_facts
from channels.errors import TxRejected
from channels.fields import PayloadReader
from channels.loans import LoanSummary, fold_event
from channels.roles import CREDIT_AGENCY, LENDER
from channels.state import StateReader, WriteSet, height_part, read_value, seq_part
from channels.supervision_view import SupervisionView
from ledger.encoding import decode_own
from ledger.errors import CorruptLedgerError, SchemaError

CHANNEL: Final = "credit"
SOURCE_CHANNEL: Final = "supervision"
ENTRY_KINDS: Final = (
    "default",
    "written_off",
    "court_judgment",
    "dishonest_debtor",
    "fraud",
    "dispute",
    "note",
)
QUERY_PURPOSES: Final = ("loan_application", "post_loan_management", "guarantee_review")
FIRM_SIZES: Final = ("micro", "small", "medium")
FIRM_RATINGS: Final = ("AAA", "AA", "A", "BBB", "BB", "B", "CCC", "CC", "C", "D")
_USCC_RE: Final = re.compile(r"[0-9A-Z]{18}")

SYNC_KEY: Final = b"cred/sync"


def lender_status_key(org: str) -> bytes:
    return f"cred/lender/{org}".encode()


def record_prefix(borrower_ref: bytes) -> bytes:
    return f"cred/rec/{borrower_ref.hex()}/".encode()


def entry_key(entry_id: str) -> bytes:
    return f"cred/entry/{entry_id}".encode()


def borrower_entry_prefix(borrower_ref: bytes) -> bytes:
    return f"cred/bentry/{borrower_ref.hex()}/".encode()


def firm_key(firm_id: str) -> bytes:
    return f"cred/firm/{firm_id}".encode()


def answer_key(org: str, query_id: str) -> bytes:
    return f"cred/answer/{org}/{query_id}".encode()


def query_log_prefix(borrower_ref: bytes) -> bytes:
    return f"cred/qlog/{borrower_ref.hex()}/".encode()


def query_count_key(org: str, day: int) -> bytes:
    return f"cred/qcount/{org}/{day}".encode()


# -- payloads -------------------------------------------------------------------


@dataclass(frozen=True)
class Sync:
    source_height: int


@dataclass(frozen=True)
class Entry:
    entry_id: str
    borrower_ref: bytes
    kind: str
    amount_cents: int
    digest: bytes
    effective_ms: int


@dataclass(frozen=True)
class EntryRevoke:
    entry_id: str
    reason: str


@dataclass(frozen=True)
class FirmProfile:
    firm_id: str
    name: str
    size: str
    rating: str
    score: int
    report_digest: bytes
    valid_until_ms: int
    version: int


@dataclass(frozen=True)
class Query:
    query_id: str
    borrower_ref: bytes
    purpose: str


def parse_sync(raw: dict[str, Any]) -> Sync:
    p = PayloadReader(raw, "credit_sync")
    v = Sync(p.integer("source_height", lo=1))
    p.done()
    return v


def parse_entry(raw: dict[str, Any]) -> Entry:
    p = PayloadReader(raw, "credit_entry")
    v = Entry(
        entry_id=p.ref("entry_id"),
        borrower_ref=p.digest("borrower_ref"),
        kind=p.enum("kind", ENTRY_KINDS),
        amount_cents=p.amount("amount_cents"),
        digest=p.digest("digest"),
        effective_ms=p.integer("effective_ms", lo=1),
    )
    p.done()
    return v


def parse_entry_revoke(raw: dict[str, Any]) -> EntryRevoke:
    p = PayloadReader(raw, "credit_entry_revoke")
    v = EntryRevoke(p.ref("entry_id"), p.text("reason", min_len=1, max_len=500))
    p.done()
    return v


def parse_firm_profile(raw: dict[str, Any]) -> FirmProfile:
    p = PayloadReader(raw, "firm_profile")
    v = FirmProfile(
        firm_id=p.text("firm_id", max_len=18),
        name=p.text("name", min_len=1, max_len=128),
        size=p.enum("size", FIRM_SIZES),
        rating=p.enum("rating", FIRM_RATINGS),
        score=p.integer("score", hi=1000),
        report_digest=p.digest("report_digest"),
        valid_until_ms=p.integer("valid_until_ms", lo=1),
        version=p.integer("version", lo=1),
    )
    p.done()
    if _USCC_RE.fullmatch(v.firm_id) is None:
        raise SchemaError("field 'firm_id': expected an 18-character unified social credit code")
    return v


def parse_query(raw: dict[str, Any]) -> Query:
    p = PayloadReader(raw, "credit_query")
    v = Query(p.ref("query_id"), p.digest("borrower_ref"), p.enum("purpose", QUERY_PURPOSES))
    p.done()
    return v


# -- rules ----------------------------------------------------------------------


def synced_height(state: StateReader) -> int:
    """The supervision height the credit records reflect (0 before the first sync)."""
    raw = read_value(state, SYNC_KEY)
    return 0 if raw is None else int(raw["h"])


def apply_sync(state: WriteSet, p: Sync, ctx: TxContext) -> Mapping[str, Any]:
    last = synced_height(state)
    if p.source_height <= last:
        raise TxRejected(
            "stale_sync", f"already synced to supervision height {last}; name a higher one"
        )
    facts = committed_facts(ctx.cross, SOURCE_CHANNEL, p.source_height)
    view = SupervisionView(facts, p.source_height)
    limit = ctx.params.credit_sync_max_facts
    if view.count_facts_in_range(last, p.source_height, limit) > limit:
        raise TxRejected(
            "sync_range_too_large",
            f"supervision heights ({last}, {p.source_height}] hold more than {limit} facts; "
            "sync in smaller steps",
        )
    n = 0
    for entry in view.facts_in_range(last, p.source_height):
        n += 1
        if entry["k"] == "lender":
            state.put_value(
                lender_status_key(entry["l"]), {"status": entry["status"], "h": entry["h"]}
            )
            continue
        fact = view.event(entry["l"], entry["loan"], entry["seq"])
        key = record_prefix(fact.ev.borrower_ref) + f"{fact.lender}/{fact.ev.loan_id}".encode()
        raw = state.get_value(key)
        before = None if raw is None else LoanSummary.from_wire(raw)
        try:
            after = fold_event(before, fact.lender, fact.ev, fact.height)
        except TxRejected as exc:
            raise CorruptLedgerError(
                f"committed supervision event does not replay: {exc.message}",
                channel=SOURCE_CHANNEL,
                height=fact.height,
            ) from None
        state.put_value(key, after.to_wire())
    state.put_value(SYNC_KEY, {"h": p.source_height, "at": ctx.height, "t": ctx.block_time_ms})
    return {"from_height": last, "to_height": p.source_height, "facts": n}


def apply_entry(state: WriteSet, p: Entry, ctx: TxContext) -> None:
    if state.get(entry_key(p.entry_id)) is not None:
        raise TxRejected("duplicate_entry_id", f"entry {p.entry_id!r} already exists")
    state.put_value(
        entry_key(p.entry_id),
        {
            "entry_id": p.entry_id,
            "borrower_ref": p.borrower_ref,
            "kind": p.kind,
            "amount_cents": p.amount_cents,
            "digest": p.digest,
            "effective_ms": p.effective_ms,
            "revoked": False,
            "h": ctx.height,
        },
    )
    state.put_value(
        borrower_entry_prefix(p.borrower_ref) + p.entry_id.encode(),
        {"kind": p.kind, "revoked": False},
    )


def apply_entry_revoke(state: WriteSet, p: EntryRevoke, ctx: TxContext) -> None:
    rec = state.get_value(entry_key(p.entry_id))
    if rec is None:
        raise TxRejected("entry_not_found", f"no entry {p.entry_id!r}")
    if rec["revoked"]:
        raise TxRejected("already_revoked", f"entry {p.entry_id!r} is already revoked")
    rec = dict(rec)
    rec.update({"revoked": True, "revoke_reason": p.reason, "revoked_h": ctx.height})
    state.put_value(entry_key(p.entry_id), rec)
    state.put_value(
        borrower_entry_prefix(rec["borrower_ref"]) + p.entry_id.encode(),
        {"kind": rec["kind"], "revoked": True},
    )


def apply_firm_profile(state: WriteSet, p: FirmProfile, ctx: TxContext) -> None:
    current = state.get_value(firm_key(p.firm_id))
    expected = 1 if current is None else current["version"] + 1
    if p.version != expected:
        raise TxRejected(
            "version_conflict", f"firm {p.firm_id}: expected version {expected}, got {p.version}"
        )
    rec = {
        "firm_id": p.firm_id,
        "name": p.name,
        "size": p.size,
        "rating": p.rating,
        "score": p.score,
        "report_digest": p.report_digest,
        "valid_until_ms": p.valid_until_ms,
        "version": p.version,
        "h": ctx.height,
        "t": ctx.block_time_ms,
    }
    state.put_value(firm_key(p.firm_id), rec)
    state.put_value(f"cred/firmlog/{p.firm_id}/".encode() + seq_part(p.version), rec)


def credit_answer(
    state: WriteSet, borrower_ref: bytes, asker: str, now_ms: int, window_ms: int
) -> dict[str, Any]:
    """The counts-only answer about ``borrower_ref`` for lender ``asker``."""
    open_lenders: set[str] = set()
    counts = {"open": 0, "overdue": 0, "collection": 0, "written_off": 0}
    outstanding = 0
    for _, raw in state.iter_prefix(record_prefix(borrower_ref)):
        loan = LoanSummary.from_wire(decode_own(raw))
        if loan.is_open:
            open_lenders.add(loan.lender)
            counts["open"] += 1
            outstanding += loan.outstanding_cents
        if loan.state in ("overdue", "collection", "written_off"):
            counts[loan.state] += 1
    entries: dict[str, int] = {}
    for _, raw in state.iter_prefix(borrower_entry_prefix(borrower_ref)):
        e = decode_own(raw)
        if not e["revoked"]:
            entries[e["kind"]] = entries.get(e["kind"], 0) + 1
    recent = 0
    for _, raw in state.iter_prefix(query_log_prefix(borrower_ref)):
        q = decode_own(raw)
        if q["lender"] != asker and q["t"] >= now_ms - window_ms:
            recent += 1
    return {
        "borrower_ref": borrower_ref,
        "lenders_with_open_loans": len(open_lenders),
        "other_lenders_with_open_loans": len(open_lenders - {asker}),
        "asker_has_open_loans": asker in open_lenders,
        "open_loans": counts["open"],
        "overdue_loans": counts["overdue"],
        "defaulted_loans": counts["collection"],
        "written_off_loans": counts["written_off"],
        "total_outstanding_cents": outstanding,
        "agency_entries": entries,
        "recent_queries_by_others": recent,
        "as_of_supervision_height": synced_height(state),
    }


def apply_query(state: WriteSet, p: Query, ctx: TxContext) -> Mapping[str, Any]:
    status = state.get_value(lender_status_key(ctx.sender))
    if status is None or status["status"] != "admitted":
        raise TxRejected(
            "lender_not_admitted",
            f"{ctx.sender!r} is not an admitted lender as of the last credit sync",
        )
    if state.get(answer_key(ctx.sender, p.query_id)) is not None:
        raise TxRejected("duplicate_query_id", f"query id {p.query_id!r} was already used")
    day = ctx.block_time_ms // DAY_MS
    count_key = query_count_key(ctx.sender, day)
    used = state.get_value(count_key) or 0
    if used >= ctx.params.credit_query_daily_limit:
        raise TxRejected(
            "query_limit_exceeded",
            f"daily limit of {ctx.params.credit_query_daily_limit} credit queries reached",
        )
    answer = credit_answer(
        state, p.borrower_ref, ctx.sender, ctx.block_time_ms, ctx.params.credit_query_window_ms
    )
    answer["query_id"] = p.query_id
    answer["purpose"] = p.purpose
    state.put_value(count_key, used + 1)
    state.put_value(answer_key(ctx.sender, p.query_id), answer)
    state.put_value(
        query_log_prefix(p.borrower_ref) + height_part(ctx.height) + b"/" + seq_part(ctx.tx_index),
        {
            "lender": ctx.sender,
            "query_id": p.query_id,
            "purpose": p.purpose,
            "t": ctx.block_time_ms,
        },
    )
    return answer


TX_TYPES: Final = (
    config_update_type(),
    TxType(
        "credit_sync",
        frozenset({CREDIT_AGENCY}),
        parse_sync,
        apply_sync,
        "Fold committed supervision facts up to a height into the credit records.",
    ),
    TxType(
        "credit_entry",
        frozenset({CREDIT_AGENCY}),
        parse_entry,
        apply_entry,
        "Add an agency entry (default, write-off, judgment…) for a borrower.",
    ),
    TxType(
        "credit_entry_revoke",
        frozenset({CREDIT_AGENCY}),
        parse_entry_revoke,
        apply_entry_revoke,
        "Revoke an agency entry (correction after a dispute).",
    ),
    TxType(
        "firm_profile",
        frozenset({CREDIT_AGENCY}),
        parse_firm_profile,
        apply_firm_profile,
        "Create or update (next version) a small/micro firm's credit profile.",
    ),
    TxType(
        "credit_query",
        frozenset({LENDER}),
        parse_query,
        apply_query,
        "Multi-lender check on a borrower: counts only; logged with the asking lender.",
    ),
)

RULES: Final = make_rules(CHANNEL, TX_TYPES)
