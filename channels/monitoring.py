"""Risk-monitoring rules over committed supervision facts (pure and deterministic).

The risk centre's worker calls :func:`run_rules` over a window of supervision heights
``(from_height, to_height]`` and posts each result as an ``alert`` transaction; every
risk-channel validator re-runs the same rule for the alert's subject over the same
window and accepts the alert only if it reproduces exactly. :func:`persists` answers a
follow-up's "does the condition still hold at height H?".

Rules (parameters from :class:`~channels.context.NetworkParams`):

``rate_above_cap``
    a ``contract`` in the window with ``rate_bp > legal_rate_cap_bp``.
    Subject: lender, borrower, loan. Evidence: the contract event.
``multi_lender`` (多头借贷)
    a borrower with a ``contract`` in the window who, at ``to_height``, has open loans
    at more than ``multi_lender_threshold`` lenders. Subject: borrower. Evidence: the
    contract events of the borrower's open loans.
``lender_concentration``
    a (lender, borrower) pair with a ``disbursement`` in the window where, at
    ``to_height``, the borrower's outstanding exceeds ``concentration_share_bp`` of the
    lender's outstanding book (books below ``concentration_min_book_cents`` exempt).
``overdue_jump``
    a lender with ``overdue``/``collection`` events in the window whose delinquent
    ratio (overdue + collection outstanding / outstanding, bp) rose by at least
    ``overdue_jump_bp`` from ``from_height`` to ``to_height``, with at least
    ``overdue_min_loans`` delinquent loans at the end.
``reporting_gap``
    an admitted lender whose last report (or admission) is more than
    ``reporting_gap_ms`` before the block time of ``to_height`` but was not yet so at
    ``from_height`` (the silence crossed the bound inside the window).
``late_report``
    events in the window whose block time is more than ``late_report_bound_ms`` after
    their event time; one alert per lender.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final

from channels.context import NetworkParams
from channels.fields import PayloadReader
from channels.loans import EventFact, EventRef
from channels.state import StateReader
from channels.supervision_view import SupervisionView
from ledger.errors import SchemaError

MAX_ALERT_EVIDENCE: Final = 64
RULE_NAMES: Final = (
    "rate_above_cap",
    "multi_lender",
    "lender_concentration",
    "overdue_jump",
    "reporting_gap",
    "late_report",
)


@dataclass(frozen=True)
class Subject:
    """Who or what an alert is about (at least one field set)."""

    lender: str | None = None
    borrower_ref: bytes | None = None
    loan_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        w: dict[str, Any] = {}
        if self.lender is not None:
            w["lender"] = self.lender
        if self.borrower_ref is not None:
            w["borrower_ref"] = self.borrower_ref
        if self.loan_id is not None:
            w["loan_id"] = self.loan_id
        return w

    @staticmethod
    def parse(raw: Any) -> Subject:
        p = PayloadReader(raw, "subject")
        s = Subject(
            lender=p.name("lender") if p.optional("lender") else None,
            borrower_ref=p.digest("borrower_ref") if p.optional("borrower_ref") else None,
            loan_id=p.ref("loan_id") if p.optional("loan_id") else None,
        )
        p.done()
        if s.lender is None and s.borrower_ref is None:
            raise SchemaError("subject: needs a lender or a borrower_ref")
        return s


@dataclass(frozen=True)
class AlertPayload:
    """An alert as posted on the risk channel (payload of an ``alert`` transaction)."""

    rule: str
    subject: Subject
    from_height: int
    source_height: int
    evidence: tuple[EventRef, ...]
    details: tuple[tuple[str, int], ...] = field(default=())

    def to_payload(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "subject": self.subject.to_wire(),
            "from_height": self.from_height,
            "source_height": self.source_height,
            "evidence": [r.to_wire() for r in self.evidence],
            "details": dict(self.details),
        }

    @property
    def detail(self) -> Mapping[str, int]:
        return dict(self.details)

    @staticmethod
    def parse(raw: dict[str, Any]) -> AlertPayload:
        p = PayloadReader(raw, "alert")
        rule = p.enum("rule", RULE_NAMES)
        subject = Subject.parse(p.submap("subject"))
        lo = p.integer("from_height")
        hi = p.integer("source_height", lo=1)
        evidence = []
        for i, item in enumerate(p.items("evidence", max_len=MAX_ALERT_EVIDENCE)):
            ep = PayloadReader(item, f"evidence[{i}]")
            evidence.append(EventRef(ep.digest("tx"), ep.integer("i", hi=1_000_000)))
            ep.done()
        details_raw = p.submap("details")
        p.done()
        if lo >= hi:
            raise SchemaError(f"from_height {lo} must be below source_height {hi}")
        if len(details_raw) > 16:
            raise SchemaError("field 'details': more than 16 entries")
        for k, v in details_raw.items():
            if not isinstance(v, int) or isinstance(v, bool):
                raise SchemaError(f"field 'details': {k!r} must be an integer")
        return AlertPayload(
            rule, subject, lo, hi, tuple(evidence), tuple(sorted(details_raw.items()))
        )


def _alert(
    rule: str,
    subject: Subject,
    scan: _Scan,
    evidence: Iterable[EventRef],
    details: Mapping[str, int],
) -> AlertPayload:
    return AlertPayload(
        rule,
        subject,
        scan.lo,
        scan.hi,
        tuple(evidence)[:MAX_ALERT_EVIDENCE],
        tuple(sorted(details.items())),
    )


class _Scan:
    """One evaluation window: views at both ends and the window's loan events."""

    def __init__(self, facts: StateReader, lo: int, hi: int, params: NetworkParams) -> None:
        self.facts = facts
        self.lo = lo
        self.hi = hi
        self.params = params
        self.at_hi = SupervisionView(facts, hi)

    @cached_property
    def at_lo(self) -> SupervisionView:
        return SupervisionView(self.facts, self.lo)

    @cached_property
    def events(self) -> list[EventFact]:
        return list(self.at_hi.loan_events_in_range(self.lo, self.hi))


def _want(subject: Subject | None, candidate: Subject) -> bool:
    return subject is None or subject == candidate


def _rate_above_cap(scan: _Scan, subject: Subject | None) -> list[AlertPayload]:
    cap = scan.params.legal_rate_cap_bp
    out = []
    for e in scan.events:
        if e.ev.event != "contract" or e.ev.rate_bp <= cap:
            continue
        s = Subject(e.lender, e.ev.borrower_ref, e.ev.loan_id)
        if _want(subject, s):
            out.append(
                _alert("rate_above_cap", s, scan, [e.ref], {"rate_bp": e.ev.rate_bp, "cap_bp": cap})
            )
    return out


def _open_loans_of(view: SupervisionView, borrower_ref: bytes) -> list[tuple[str, str, int, int]]:
    """(lender, loan id, outstanding, contract height) of the borrower's open loans."""
    out = []
    for lender, loan_id in view.borrower_loans(borrower_ref):
        loan = view.loan(lender, loan_id)
        if loan is not None and loan.is_open:
            out.append((lender, loan_id, loan.outstanding_cents, loan.contract_height))
    return out


def _multi_lender_condition(
    view: SupervisionView, borrower_ref: bytes, params: NetworkParams
) -> tuple[bool, list[tuple[str, str, int, int]]]:
    loans = _open_loans_of(view, borrower_ref)
    return len({x[0] for x in loans}) > params.multi_lender_threshold, loans


def _multi_lender(scan: _Scan, subject: Subject | None) -> list[AlertPayload]:
    borrowers = sorted({e.ev.borrower_ref for e in scan.events if e.ev.event == "contract"})
    out = []
    for b in borrowers:
        s = Subject(borrower_ref=b)
        if not _want(subject, s):
            continue
        hit, loans = _multi_lender_condition(scan.at_hi, b, scan.params)
        if not hit:
            continue
        refs = sorted(
            ((h, scan.at_hi.event(lender, loan_id, 0).ref) for lender, loan_id, _, h in loans),
            key=lambda x: (x[0], x[1].sort_key()),
        )
        details = {
            "lenders": len({x[0] for x in loans}),
            "open_loans": len(loans),
            "outstanding_cents": sum(x[2] for x in loans),
            "threshold": scan.params.multi_lender_threshold,
        }
        out.append(_alert("multi_lender", s, scan, [r for _, r in refs], details))
    return out


def _concentration(
    view: SupervisionView, lender: str, borrower_ref: bytes, params: NetworkParams
) -> tuple[bool, int, int, list[str]]:
    book = view.book(lender).outstanding_cents
    loan_ids = []
    share = 0
    for loan_id in view.lender_borrower_loans(lender, borrower_ref):
        loan = view.loan(lender, loan_id)
        if loan is not None and loan.is_open:
            loan_ids.append(loan_id)
            share += loan.outstanding_cents
    hit = (
        book >= params.concentration_min_book_cents
        and book > 0
        and share * 10_000 > params.concentration_share_bp * book
    )
    return hit, share, book, loan_ids


def _lender_concentration(scan: _Scan, subject: Subject | None) -> list[AlertPayload]:
    pairs = sorted(
        {(e.lender, e.ev.borrower_ref) for e in scan.events if e.ev.event == "disbursement"}
    )
    out = []
    for lender, b in pairs:
        s = Subject(lender=lender, borrower_ref=b)
        if not _want(subject, s):
            continue
        hit, share, book, loan_ids = _concentration(scan.at_hi, lender, b, scan.params)
        if not hit:
            continue
        refs = [scan.at_hi.event(lender, loan_id, 0).ref for loan_id in sorted(loan_ids)]
        details = {
            "borrower_outstanding_cents": share,
            "book_outstanding_cents": book,
            "share_bp": share * 10_000 // book,
            "threshold_bp": scan.params.concentration_share_bp,
        }
        out.append(_alert("lender_concentration", s, scan, refs, details))
    return out


def _overdue_jump(scan: _Scan, subject: Subject | None) -> list[AlertPayload]:
    by_lender: dict[str, list[EventRef]] = {}
    for e in scan.events:
        if e.ev.event in ("overdue", "collection"):
            by_lender.setdefault(e.lender, []).append(e.ref)
    out = []
    for lender in sorted(by_lender):
        s = Subject(lender=lender)
        if not _want(subject, s):
            continue
        after = scan.at_hi.book(lender)
        before = scan.at_lo.book(lender)
        jump = after.delinquent_ratio_bp - before.delinquent_ratio_bp
        if (
            jump < scan.params.overdue_jump_bp
            or after.delinquent_loans < scan.params.overdue_min_loans
        ):
            continue
        details = {
            "ratio_before_bp": before.delinquent_ratio_bp,
            "ratio_after_bp": after.delinquent_ratio_bp,
            "delinquent_loans": after.delinquent_loans,
            "jump_threshold_bp": scan.params.overdue_jump_bp,
        }
        out.append(_alert("overdue_jump", s, scan, by_lender[lender], details))
    return out


def _last_report(view: SupervisionView, lender: str) -> tuple[int | None, EventFact | None]:
    """Block time of the lender's last report (or admission) as of the view, and the event."""
    last = view.last_activity(lender)
    admitted = view.lender_admitted_time(lender)
    times = [t for t in (admitted, last.block_time_ms if last else None) if t is not None]
    return (max(times) if times else None), last


def _reporting_gap(scan: _Scan, subject: Subject | None) -> list[AlertPayload]:
    view = scan.at_hi
    gap = scan.params.reporting_gap_ms
    t_hi = view.block_time(scan.hi)
    t_lo = view.block_time(scan.lo) if scan.lo >= 1 else None
    out = []
    for lender in view.lenders():
        s = Subject(lender=lender)
        if not _want(subject, s) or view.lender_status(lender) != "admitted":
            continue
        last_t, last = _last_report(view, lender)
        if last_t is None:
            continue
        silent = t_hi - last_t
        if silent <= gap or (t_lo is not None and t_lo - last_t > gap):
            continue
        details = {"last_report_ms": last_t, "silent_ms": silent, "gap_ms": gap}
        out.append(_alert("reporting_gap", s, scan, [last.ref] if last else [], details))
    return out


def _late_report(scan: _Scan, subject: Subject | None) -> list[AlertPayload]:
    bound = scan.params.late_report_bound_ms
    late: dict[str, list[EventFact]] = {}
    for e in scan.events:
        if e.block_time_ms - e.ev.event_time_ms > bound:
            late.setdefault(e.lender, []).append(e)
    out = []
    for lender in sorted(late):
        s = Subject(lender=lender)
        if not _want(subject, s):
            continue
        events = late[lender]
        details = {
            "late_events": len(events),
            "max_delay_ms": max(e.block_time_ms - e.ev.event_time_ms for e in events),
            "bound_ms": bound,
        }
        out.append(_alert("late_report", s, scan, [e.ref for e in events], details))
    return out


_RULES: Final[Mapping[str, Callable[[_Scan, Subject | None], list[AlertPayload]]]] = {
    "rate_above_cap": _rate_above_cap,
    "multi_lender": _multi_lender,
    "lender_concentration": _lender_concentration,
    "overdue_jump": _overdue_jump,
    "reporting_gap": _reporting_gap,
    "late_report": _late_report,
}


def run_rules(
    supervision: StateReader,
    from_height: int,
    to_height: int,
    params: NetworkParams,
    *,
    rules: Iterable[str] = RULE_NAMES,
    subject: Subject | None = None,
) -> list[AlertPayload]:
    """Alerts for the supervision window ``(from_height, to_height]``, deterministic order.

    ``supervision`` is the supervision channel's committed state with ``to_height``
    applied (later heights may be present; they are ignored). ``subject`` restricts the
    result to one subject (what validators use to reproduce an alert).
    """
    if not 0 <= from_height < to_height:
        raise ValueError(f"bad window ({from_height}, {to_height}]")
    scan = _Scan(supervision, from_height, to_height, params)
    out: list[AlertPayload] = []
    for name in rules:
        out.extend(_RULES[name](scan, subject))
    return out


def persists(
    supervision: StateReader, alert: AlertPayload, height: int, params: NetworkParams
) -> bool:
    """Whether the alert's condition still holds at supervision ``height`` (>= its source)."""
    view = SupervisionView(supervision, height)
    s = alert.subject
    if alert.rule == "rate_above_cap":
        assert s.lender is not None and s.loan_id is not None
        loan = view.loan(s.lender, s.loan_id)
        return loan is not None and loan.is_open
    if alert.rule == "multi_lender":
        assert s.borrower_ref is not None
        return _multi_lender_condition(view, s.borrower_ref, params)[0]
    if alert.rule == "lender_concentration":
        assert s.lender is not None and s.borrower_ref is not None
        return _concentration(view, s.lender, s.borrower_ref, params)[0]
    assert s.lender is not None
    if alert.rule == "overdue_jump":
        ratio = view.book(s.lender).delinquent_ratio_bp
        return ratio - alert.detail["ratio_before_bp"] >= params.overdue_jump_bp
    if alert.rule == "reporting_gap":
        return not view.activity_in_range(s.lender, alert.source_height, height)
    if alert.rule == "late_report":
        bound = params.late_report_bound_ms
        return any(
            e.lender == s.lender and e.block_time_ms - e.ev.event_time_ms > bound
            for e in view.loan_events_in_range(alert.source_height, height)
        )
    raise ValueError(f"unknown rule {alert.rule!r}")
