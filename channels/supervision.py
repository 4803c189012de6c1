"""监管链 — the supervision channel, run by the finance regulator bureau.

Transaction types (roles; rejection codes in ``docs/channels.md``):

* ``lender_admit`` / ``lender_update`` / ``lender_suspend`` / ``lender_reinstate``
  (bureau) — the lender registry: licence id, name, signing keys, limits, status.
* ``loan_event`` (lender) — one loan event report; ``loan_event_batch`` (lender) — many
  events in one transaction, atomic (all valid or the whole transaction invalid); each
  event's identity is ``(tx id, index)``.
* ``periodic_report`` (lender) — digest of a periodic regulatory report file.

State layout (``<h>`` = 12-digit height, ``<n>`` = 6-digit index). Keys marked *fact*
are append-only and height-stamped: written only while applying block ``h`` and never
changed afterwards, so other channels can read them "as of height H"::

    sup/lender/<org>                         lender record (current)
    sup/lenderlog/<org>/<h>/<tx>             status changes            fact
    sup/loan/<org>/<loan>                    loan summary (current)
    sup/ev/<org>/<loan>/<seq>                loan event history        fact
    sup/hx/<h>/<tx>/<i>                      facts by height           fact
    sup/bx/<borrower hex>/<org>/<loan>       borrower → loans          fact
    sup/lx/<org>/<loan>                      lender → loans            fact
    sup/lact/<org>/<h>/<tx>/<i>              lender activity           fact
    sup/lagg/<org>/<h>                       lender book after block h fact
    sup/lcur/<org>                           lender book (current)
    sup/rid/<org>/<report id>                report ids seen
    sup/prep/<org>/<kind>/<period>/<rev>     periodic reports
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from channels.base import TxType, config_update_type, extension_point, make_rules
from channels.context import TxContext
from channels.errors import TxRejected
from channels.fields import PayloadReader
from channels.loans import (
    DELINQUENT_STATES,
    EVENTS,
    EventFact,
    EventRef,
    LoanEvent,
    LoanSummary,
    fold_event,
)
from channels.roles import BUREAU, LENDER, NODE
from channels.state import WriteSet, height_part, seq_part
from ledger.errors import SchemaError

CHANNEL: Final = "supervision"
MAX_BATCH_EVENTS: Final = 1000
MAX_LENDER_KEYS: Final = 8
MAX_RATE_BP: Final = 1_000_000  # 10,000% a year: anything above is a typo, not a loan
MAX_TERM_MONTHS: Final = 600

LENDER_STATUSES: Final = ("admitted", "suspended")
PERIODIC_KINDS: Final = ("monthly", "quarterly", "annual", "special")
_PERIOD_RE: Final = {
    "monthly": re.compile(r"\d{4}-(0[1-9]|1[0-2])"),
    "quarterly": re.compile(r"\d{4}-Q[1-4]"),
    "annual": re.compile(r"\d{4}"),
    "special": re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}"),
}


# -- keys -----------------------------------------------------------------------


def _k(*parts: str | bytes) -> bytes:
    return b"/".join([p if isinstance(p, bytes) else p.encode() for p in parts])


# The keys written for every reported event are built by concatenation: the same bytes
# as _k's generic join (tests/channels/test_hot_path_encoding.py), 0.27 µs instead of
# 0.65 for a loan key.


def lender_key(org: str) -> bytes:
    return b"sup/lender/" + org.encode()


def lender_log_prefix(org: str) -> bytes:
    return _k(b"sup/lenderlog", org) + b"/"


def loan_key(org: str, loan_id: str) -> bytes:
    return b"sup/loan/" + org.encode() + b"/" + loan_id.encode()


def event_prefix(org: str, loan_id: str) -> bytes:
    return b"sup/ev/" + org.encode() + b"/" + loan_id.encode() + b"/"


HX_PREFIX: Final = b"sup/hx/"


def hx_key(height: int, tx_index: int, i: int) -> bytes:
    return HX_PREFIX + height_part(height) + b"/" + seq_part(tx_index) + b"/" + seq_part(i)


def borrower_prefix(borrower_ref: bytes) -> bytes:
    return b"sup/bx/" + borrower_ref.hex().encode() + b"/"


def lender_loans_prefix(org: str) -> bytes:
    return b"sup/lx/" + org.encode() + b"/"


def activity_prefix(org: str) -> bytes:
    return b"sup/lact/" + org.encode() + b"/"


def book_prefix(org: str) -> bytes:
    return b"sup/lagg/" + org.encode() + b"/"


def book_current_key(org: str) -> bytes:
    return b"sup/lcur/" + org.encode()


def report_id_key(org: str, report_id: str) -> bytes:
    return b"sup/rid/" + org.encode() + b"/" + report_id.encode()


def periodic_prefix(org: str, kind: str, period: str) -> bytes:
    return _k(b"sup/prep", org, kind, period) + b"/"


#: In canonical key order, as every map these rules write (:func:`ledger.encoding.encode`
#: then packs it as it is, with no sorted copy).
EMPTY_BOOK: Final = {"dlq": 0, "dout": 0, "open": 0, "out": 0}


# -- payloads -------------------------------------------------------------------


@dataclass(frozen=True)
class LenderLimits:
    max_principal_cents: int
    max_outstanding_cents: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "max_principal_cents": self.max_principal_cents,
            "max_outstanding_cents": self.max_outstanding_cents,
        }


@dataclass(frozen=True)
class LenderAdmit:
    lender: str
    licence_id: str
    name: str
    public_keys: tuple[bytes, ...]
    limits: LenderLimits


@dataclass(frozen=True)
class LenderUpdate:
    lender: str
    name: str | None
    public_keys: tuple[bytes, ...] | None
    limits: LenderLimits | None


@dataclass(frozen=True)
class LenderStatusChange:
    lender: str
    reason: str


@dataclass(frozen=True)
class LoanEventBatch:
    events: tuple[LoanEvent, ...]


@dataclass(frozen=True)
class PeriodicReport:
    report_id: str
    kind: str
    period: str
    file_digest: bytes
    file_size: int
    revision: int


def _parse_keys(p: PayloadReader) -> tuple[bytes, ...]:
    raw = p.items("public_keys", min_len=1, max_len=MAX_LENDER_KEYS)
    keys = []
    for i, k in enumerate(raw):
        if not isinstance(k, bytes) or len(k) != 32:
            raise SchemaError(f"field 'public_keys'[{i}]: expected 32 bytes")
        keys.append(k)
    if len(set(keys)) != len(keys):
        raise SchemaError("field 'public_keys': duplicate key")
    return tuple(keys)


def _parse_limits(p: PayloadReader) -> LenderLimits:
    lp = PayloadReader(p.submap("limits"), "limits")
    lim = LenderLimits(
        lp.amount("max_principal_cents", lo=1), lp.amount("max_outstanding_cents", lo=1)
    )
    lp.done()
    return lim


def parse_lender_admit(raw: dict[str, Any]) -> LenderAdmit:
    p = PayloadReader(raw, "lender_admit")
    v = LenderAdmit(
        lender=p.name("lender"),
        licence_id=p.ref("licence_id"),
        name=p.text("name", max_len=128, min_len=1),
        public_keys=_parse_keys(p),
        limits=_parse_limits(p),
    )
    p.done()
    return v


def parse_lender_update(raw: dict[str, Any]) -> LenderUpdate:
    p = PayloadReader(raw, "lender_update")
    lender = p.name("lender")
    name = p.text("name", max_len=128, min_len=1) if p.optional("name") else None
    keys = _parse_keys(p) if p.optional("public_keys") else None
    limits = _parse_limits(p) if p.optional("limits") else None
    p.done()
    if name is None and keys is None and limits is None:
        raise SchemaError("lender_update: nothing to update (name, public_keys or limits)")
    return LenderUpdate(lender, name, keys, limits)


def parse_lender_status_change(raw: dict[str, Any]) -> LenderStatusChange:
    p = PayloadReader(raw, "lender status change")
    v = LenderStatusChange(p.name("lender"), p.text("reason", max_len=500, min_len=1))
    p.done()
    return v


def parse_event_map(raw: Any, what: str = "loan_event") -> LoanEvent:
    p = PayloadReader(raw, what)
    ev = LoanEvent(
        report_id=p.ref("report_id"),
        loan_id=p.ref("loan_id"),
        borrower_ref=p.digest("borrower_ref"),
        event=p.enum("event", EVENTS),
        amount_cents=p.amount("amount_cents"),
        rate_bp=p.integer("rate_bp", hi=MAX_RATE_BP),
        term_months=p.integer("term_months", lo=1, hi=MAX_TERM_MONTHS),
        event_time_ms=p.integer("event_time_ms", lo=1),
        commitment=p.digest("c"),
    )
    p.done()
    return ev


def _parse_records(raw: dict[str, Any], what: str, max_len: int) -> tuple[LoanEvent, ...]:
    """Loan events travel as ``"records"`` (ledger.blocks' convention): each record map
    holds the regulatory fields and its salted commitment ``"c"``, so every event becomes
    one record leaf of the block's ``record_root`` and gets its own evidence code."""
    p = PayloadReader(raw, what)
    items = p.items("records", min_len=1, max_len=max_len)
    p.done()
    events = []
    for i, item in enumerate(items):
        try:
            events.append(parse_event_map(item, f"records[{i}]"))
        except SchemaError as exc:
            raise SchemaError(f"records[{i}]: {exc.message}") from None
    return tuple(events)


def parse_loan_event(raw: dict[str, Any]) -> LoanEvent:
    return _parse_records(raw, "loan_event", 1)[0]


def parse_loan_event_batch(raw: dict[str, Any]) -> LoanEventBatch:
    return LoanEventBatch(_parse_records(raw, "loan_event_batch", MAX_BATCH_EVENTS))


def parse_periodic_report(raw: dict[str, Any]) -> PeriodicReport:
    p = PayloadReader(raw, "periodic_report")
    v = PeriodicReport(
        report_id=p.ref("report_id"),
        kind=p.enum("kind", PERIODIC_KINDS),
        period=p.text("period", max_len=64, min_len=1),
        file_digest=p.digest("file_digest"),
        file_size=p.integer("file_size"),
        revision=p.integer("revision", hi=9999),
    )
    p.done()
    if _PERIOD_RE[v.kind].fullmatch(v.period) is None:
        raise SchemaError(f"field 'period': {v.period!r} is not a {v.kind} period")
    return v


# -- lender registry ------------------------------------------------------------


def _log_lender(state: WriteSet, ctx: TxContext, org: str, status: str) -> None:
    fact = {"status": status, "h": ctx.height, "t": ctx.block_time_ms}
    state.put_value(
        lender_log_prefix(org) + height_part(ctx.height) + b"/" + seq_part(ctx.tx_index), fact
    )
    state.put_value(
        hx_key(ctx.height, ctx.tx_index, 0), {"k": "lender", "l": org, "status": status}
    )


def _lender_record(state: WriteSet, org: str) -> dict[str, Any]:
    rec = state.get_value(lender_key(org))
    if rec is None:
        raise TxRejected("lender_unknown", f"lender {org!r} is not registered")
    return dict(rec)


def apply_lender_admit(state: WriteSet, p: LenderAdmit, ctx: TxContext) -> None:
    if state.get(lender_key(p.lender)) is not None:
        raise TxRejected("lender_exists", f"lender {p.lender!r} is already registered")
    state.put_value(
        lender_key(p.lender),
        {
            "lender": p.lender,
            "licence_id": p.licence_id,
            "name": p.name,
            "public_keys": list(p.public_keys),
            "limits": p.limits.to_wire(),
            "status": "admitted",
            "admitted_h": ctx.height,
            "updated_h": ctx.height,
        },
    )
    _log_lender(state, ctx, p.lender, "admitted")


def apply_lender_update(state: WriteSet, p: LenderUpdate, ctx: TxContext) -> None:
    rec = _lender_record(state, p.lender)
    if p.name is not None:
        rec["name"] = p.name
    if p.public_keys is not None:
        rec["public_keys"] = list(p.public_keys)
    if p.limits is not None:
        rec["limits"] = p.limits.to_wire()
    rec["updated_h"] = ctx.height
    state.put_value(lender_key(p.lender), rec)


def _status_change(frm: str, to: str) -> Any:
    def _apply(state: WriteSet, p: LenderStatusChange, ctx: TxContext) -> None:
        rec = _lender_record(state, p.lender)
        if rec["status"] != frm:
            raise TxRejected("bad_status", f"lender {p.lender!r} is {rec['status']}, not {frm}")
        rec["status"] = to
        rec["updated_h"] = ctx.height
        rec["status_reason"] = p.reason
        state.put_value(lender_key(p.lender), rec)
        _log_lender(state, ctx, p.lender, to)

    return _apply


def reporting_lender(state: WriteSet, ctx: TxContext) -> dict[str, Any]:
    """The sender's lender record; rejects unregistered lenders and unregistered keys."""
    rec = state.get_value(lender_key(ctx.sender))
    if rec is None:
        raise TxRejected("lender_not_admitted", f"{ctx.sender!r} is not an admitted lender")
    if ctx.sender_key not in rec["public_keys"]:
        raise TxRejected(
            "key_not_registered", f"the signing key is not registered for lender {ctx.sender!r}"
        )
    return dict(rec)


# -- loan events ----------------------------------------------------------------


def _book_delta(before: LoanSummary | None, after: LoanSummary) -> dict[str, int]:
    def vec(s: LoanSummary | None) -> tuple[int, int, int, int]:
        if s is None:
            return (0, 0, 0, 0)
        return (
            s.outstanding_cents,
            s.delinquent_outstanding,
            1 if s.is_open else 0,
            1 if s.state in DELINQUENT_STATES else 0,
        )

    b, a = vec(before), vec(after)
    return {"out": a[0] - b[0], "dout": a[1] - b[1], "open": a[2] - b[2], "dlq": a[3] - b[3]}


def _apply_event_inner(
    state: WriteSet,
    lender: dict[str, Any],
    book: dict[str, int],
    ev: LoanEvent,
    index: int,
    ctx: TxContext,
) -> dict[str, int]:
    """Apply one event of the sender; returns the lender's book after it: ``book`` (the
    book before it) itself if the event left it unchanged, else a new map. The caller
    writes the book (:func:`_write_book`) once per transaction, not once per event of
    a batch — the same state as writing it after every event that changed it.
    Raises :class:`TxRejected`."""
    org = ctx.sender
    if state.get(report_id_key(org, ev.report_id)) is not None:
        raise TxRejected("duplicate_report_id", f"report id {ev.report_id!r} was already used")
    if ev.event_time_ms > ctx.block_time_ms + ctx.params.event_time_skew_ms:
        raise TxRejected(
            "event_time_in_future",
            f"event time {ev.event_time_ms} is after the block time {ctx.block_time_ms}",
        )
    raw = state.get_value(loan_key(org, ev.loan_id))
    before = None if raw is None else LoanSummary.from_wire(raw)
    if ev.event == "contract":
        if lender["status"] != "admitted":
            raise TxRejected(
                "lender_suspended",
                f"lender {org!r} is suspended: it may report on existing loans but not new ones",
            )
        limits = lender["limits"]
        if before is None and ev.amount_cents > limits["max_principal_cents"]:
            raise TxRejected(
                "over_lender_limit",
                f"principal {ev.amount_cents} exceeds the lender's single-loan limit "
                f"{limits['max_principal_cents']}",
            )
        if before is None and book["out"] + ev.amount_cents > limits["max_outstanding_cents"]:
            raise TxRejected(
                "over_lender_limit",
                f"outstanding {book['out']} plus principal {ev.amount_cents} exceeds the "
                f"lender's limit {limits['max_outstanding_cents']}",
            )
    after = fold_event(before, org, ev, ctx.height)
    seq = 0 if before is None else before.events
    ref = EventRef(ctx.tx_id, index)
    fact = EventFact(org, seq, ctx.height, ctx.block_time_ms, ref, ev)
    state.put_value(loan_key(org, ev.loan_id), after.to_wire())
    state.put_value(event_prefix(org, ev.loan_id) + seq_part(seq), fact.to_wire())
    state.put_value(
        hx_key(ctx.height, ctx.tx_index, index),
        {"k": "loan", "l": org, "loan": ev.loan_id, "seq": seq},
    )
    state.put_value(
        activity_prefix(org) + height_part(ctx.height) + b"/" + seq_part(ctx.tx_index) + b"/"
        + seq_part(index),
        {"loan": ev.loan_id, "seq": seq},
    )  # fmt: skip
    if before is None:
        state.put_value(
            borrower_prefix(ev.borrower_ref) + org.encode() + b"/" + ev.loan_id.encode(),
            {"h": ctx.height},
        )
        state.put_value(lender_loans_prefix(org) + ev.loan_id.encode(), {"h": ctx.height})
    state.put_value(report_id_key(org, ev.report_id), ref.to_wire())
    delta = _book_delta(before, after)
    if any(delta.values()):
        book = {k: book[k] + delta[k] for k in EMPTY_BOOK}
    return book


def _read_book(state: WriteSet, org: str) -> dict[str, int]:
    return dict(state.get_value(book_current_key(org)) or EMPTY_BOOK)


def _write_book(
    state: WriteSet, ctx: TxContext, before: dict[str, int], after: dict[str, int]
) -> None:
    """Record the lender's book (current, and as of this height) if an event changed
    it (``after is not before`` — even if the changes cancel out, as when written per
    event)."""
    if after is not before:
        state.put_value(book_current_key(ctx.sender), after)
        state.put_value(book_prefix(ctx.sender) + height_part(ctx.height), after)


def apply_loan_event(state: WriteSet, ev: LoanEvent, ctx: TxContext) -> None:
    lender = reporting_lender(state, ctx)
    book = _read_book(state, ctx.sender)
    _write_book(state, ctx, book, _apply_event_inner(state, lender, book, ev, 0, ctx))


def apply_loan_event_batch(
    state: WriteSet, batch: LoanEventBatch, ctx: TxContext
) -> Mapping[str, Any]:
    lender = reporting_lender(state, ctx)
    first = book = _read_book(state, ctx.sender)
    for i, ev in enumerate(batch.events):
        try:
            book = _apply_event_inner(state, lender, book, ev, i, ctx)
        except TxRejected as exc:
            raise TxRejected(
                exc.code, f"event {i} (report {ev.report_id}): {exc.message}"
            ) from None
    _write_book(state, ctx, first, book)
    return {"events": len(batch.events)}


def apply_periodic_report(state: WriteSet, p: PeriodicReport, ctx: TxContext) -> None:
    reporting_lender(state, ctx)
    org = ctx.sender
    if state.get(report_id_key(org, p.report_id)) is not None:
        raise TxRejected("duplicate_report_id", f"report id {p.report_id!r} was already used")
    prefix = periodic_prefix(org, p.kind, p.period)
    latest = -1
    for key, _ in state.iter_prefix(prefix):
        latest = int(key[len(prefix) :])
    if p.revision != latest + 1:
        raise TxRejected(
            "bad_revision",
            f"{p.kind} report for {p.period}: expected revision {latest + 1}, got {p.revision}",
        )
    state.put_value(
        prefix + seq_part(p.revision),
        {
            "report_id": p.report_id,
            "file_digest": p.file_digest,
            "file_size": p.file_size,
            "h": ctx.height,
            "t": ctx.block_time_ms,
            "tx": ctx.tx_id,
        },
    )
    state.put_value(report_id_key(org, p.report_id), EventRef(ctx.tx_id, 0).to_wire())


TX_TYPES: Final = (
    config_update_type(),
    TxType(
        "lender_admit",
        frozenset({BUREAU}),
        parse_lender_admit,
        apply_lender_admit,
        "Register a lender (licence id, name, signing keys, limits) as admitted.",
    ),
    TxType(
        "lender_update",
        frozenset({BUREAU}),
        parse_lender_update,
        apply_lender_update,
        "Change a registered lender's name, signing keys or limits.",
    ),
    TxType(
        "lender_suspend",
        frozenset({BUREAU}),
        parse_lender_status_change,
        _status_change("admitted", "suspended"),
        "Suspend an admitted lender: no new loans; existing loans are still reported.",
    ),
    TxType(
        "lender_reinstate",
        frozenset({BUREAU}),
        parse_lender_status_change,
        _status_change("suspended", "admitted"),
        "Lift a lender's suspension.",
    ),
    TxType(
        "loan_event",
        frozenset({LENDER}),
        parse_loan_event,
        apply_loan_event,
        "Report one loan event: contract, disbursement, repayment, overdue, collection "
        "or settlement.",
    ),
    TxType(
        "loan_event_batch",
        frozenset({LENDER}),
        parse_loan_event_batch,
        apply_loan_event_batch,
        "Report up to 1000 loan events atomically; event i is identified by (tx id, i).",
    ),
    TxType(
        "periodic_report",
        frozenset({LENDER}),
        parse_periodic_report,
        apply_periodic_report,
        "Record the digest of a periodic regulatory report file (monthly, quarterly…).",
    ),
    extension_point(
        "anchor_receipt",
        frozenset({NODE}),
        "The relay's return leg: evidence codes issued by the court chain for anchored "
        "supervision digests (rule installed by the cross-chain layer).",
    ),
)

RULES: Final = make_rules(CHANNEL, TX_TYPES)
