"""A realistic month on the five channels, in memory (used by the scenario tests).

Three lenders report ~4 new loans a day each for 30 days (360 loans); short loans are
settled; the risk centre's worker scans every new supervision block and posts what
the rules find; the credit agency syncs daily; lenders query credit before lending.
Planted on purpose:

* day 5 — lender-c contracts a loan at 36% a year (above the 24% cap);
* days 10/12/14 — borrower 999 borrows from lender-a, lender-b, then lender-c
  (lender-c runs a credit query first and sees two other lenders);
* day 8/9 — a repayment before disbursement and a reused report id (rejected);
* day 17 — lender-a reports five 3-day-old contracts late;
* day 20 — 15 of lender-b's loans fall overdue at once;
* day 22/23 — lender-a finances a loan on the service channel, then tries to register
  the same loan again (double financing) and lender-b tries to register lender-a's loan;
* the rate alert goes round the closed loop and is closed after the loan is settled.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from channels.base import TxOutcome
from channels.context import DAY_MS, NetworkParams
from channels.credit import synced_height
from channels.monitoring import AlertPayload, run_rules
from channels.risk import already_alerted
from channels.state import OK, read_value
from channels.supervision import loan_key
from tests.channels.helpers import T0, Harness, admit_payload, bref

LENDERS3 = ("lender-a", "lender-b", "lender-c")
PARAMS = NetworkParams(
    legal_rate_cap_bp=2400,
    multi_lender_threshold=2,
    concentration_min_book_cents=100_000_000,
)
SPECIAL_BORROWER = 999
OVER_CAP_LOAN = ("lender-c", "c-over-cap")


@dataclass(frozen=True)
class LoanInfo:
    borrower: int
    principal: int
    rate_bp: int
    term: int


@dataclass
class MonthResult:
    h: Harness
    alerts: list[tuple[AlertPayload, TxOutcome]] = field(default_factory=list)
    rejections: dict[str, str] = field(default_factory=dict)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    loans: dict[tuple[str, str], LoanInfo] = field(default_factory=dict)
    outcomes: list[TxOutcome] = field(default_factory=list)


def run_month(seed: int = 2020_08_12) -> MonthResult:
    """Play the month; deterministic for a given seed."""
    rng = random.Random(seed)
    h = Harness(PARAMS)
    res = MonthResult(h)
    scanned = 0
    seq = dict.fromkeys(LENDERS3, 0)
    settle_on: dict[int, list[tuple[str, str]]] = {}
    admits = [h.tx("supervision", "gzjr", "lender_admit", admit_payload(x)) for x in LENDERS3]
    res.outcomes += h.block("supervision", admits)

    def ev(lender: str, lid: str, event: str, amount: int, **kw: Any) -> dict[str, Any]:
        info = res.loans[(lender, lid)]
        return h.event(
            lid, event, amount, borrower=info.borrower, rate_bp=info.rate_bp, term=info.term, **kw
        )

    def new_loan(lender: str, day: int, *, borrower: int | None = None, rate: int | None = None,
                 term: int | None = None, loan_id: str | None = None,
                 event_time: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
        seq[lender] += 1
        lid = loan_id or f"{lender[-1]}-{day:02d}-{seq[lender]:03d}"
        info = LoanInfo(
            borrower=LENDERS3.index(lender) * 10_000 + seq[lender]
            if borrower is None
            else borrower,
            principal=rng.randrange(1_000, 50_000) * 100,
            rate_bp=rng.choice((1200, 1500, 1800, 2000, 2400)) if rate is None else rate,
            term=rng.choice((1, 3, 6, 12)) if term is None else term,
        )
        res.loans[(lender, lid)] = info
        if info.term == 1 and day + 20 < 30:
            settle_on.setdefault(day + 20, []).append((lender, lid))
        return [
            ev(lender, lid, "contract", info.principal, event_time=event_time),
            ev(lender, lid, "disbursement", info.principal, event_time=event_time),
        ]

    def submit(channel: str, txs: list[Any], labels: dict[bytes, str]) -> list[TxOutcome]:
        outs = h.block(channel, txs)
        res.outcomes += outs
        for o in outs:
            if o.code != OK:
                res.rejections[labels.get(o.tx_id, f"{channel}:{o.tx_id.hex()[:8]}")] = o.code
        return outs

    for day in range(30):
        h.now = T0 + day * DAY_MS + 10 * 3_600_000
        batches: dict[str, list[dict[str, Any]]] = {lender: [] for lender in LENDERS3}
        extra: list[Any] = []
        labels: dict[bytes, str] = {}
        for lender in LENDERS3:
            for _ in range(4):
                batches[lender] += new_loan(lender, day)
        for lender, lid in settle_on.pop(day, []):
            batches[lender].append(
                ev(lender, lid, "settlement", res.loans[(lender, lid)].principal)
            )
        if day == 5:
            batches["lender-c"] += new_loan(
                "lender-c", day, rate=3600, term=12, loan_id=OVER_CAP_LOAN[1]
            )
        if day in (10, 12, 14):
            lender = {10: "lender-a", 12: "lender-b", 14: "lender-c"}[day]
            if day == 14:
                _sync(h, res)
                res.answers["before"] = _query(h, "lender-c", "pre-loan-999", SPECIAL_BORROWER)
            batches[lender] += new_loan(
                lender, day, borrower=SPECIAL_BORROWER, term=12, loan_id=f"{lender[-1]}-999"
            )
        if day == 8:
            orphan = h.event("b-orphan", "contract", 10_000, borrower=77_777)
            early = h.event("b-orphan", "repayment", 1_000, borrower=77_777)
            t1 = h.tx("supervision", "lender-b", "loan_event", orphan)
            t2 = h.tx("supervision", "lender-b", "loan_event", early)
            extra += [t1, t2]
            labels[t2.tx_id] = "repayment_before_disbursement"
        if day == 9:
            reused = h.event("a-dup", "contract", 10_000, borrower=88_888, report_id="r0000001")
            t = h.tx("supervision", "lender-a", "loan_event", reused)
            extra.append(t)
            labels[t.tx_id] = "reused_report_id"
        if day == 17:
            for _ in range(5):
                batches["lender-a"] += new_loan("lender-a", day, event_time=h.now - 3 * DAY_MS)
        if day == 20:
            longer = [
                lid
                for (lender, lid), info in res.loans.items()
                if lender == "lender-b" and info.term > 1
            ]
            for lid in longer[:15]:
                batches["lender-b"].append(
                    ev("lender-b", lid, "overdue", res.loans[("lender-b", lid)].principal // 2)
                )
        if day == 25:
            batches["lender-c"].append(
                ev(*OVER_CAP_LOAN, "settlement", res.loans[OVER_CAP_LOAN].principal)
            )
        txs = [
            h.tx("supervision", lender, "loan_event_batch", {"records": evs})
            for lender, evs in batches.items()
        ]
        submit("supervision", txs + extra, labels)

        # the risk centre's worker: scan the new supervision heights, post what is new
        top = h.height("supervision")
        found = run_rules(h.net.states["supervision"], scanned, top, PARAMS)
        scanned = top
        fresh = [a for a in found if not already_alerted(h.net.states["risk"], a)]
        if fresh:
            outs = submit(
                "risk", [h.tx("risk", "riskc", "alert", a.to_payload()) for a in fresh], {}
            )
            res.alerts += list(zip(fresh, outs, strict=True))
        _sync(h, res)
        _closed_loop(h, res, day)
        if day == 22:
            _finance(h, res)
        if day == 23:
            _double_finance(h, res)
    res.answers["after"] = _query(h, "lender-a", "month-end-999", SPECIAL_BORROWER)
    return res


def _loan(h: Harness, lender: str, lid: str) -> dict[str, Any]:
    return dict(read_value(h.net.states["supervision"], loan_key(lender, lid)))


def _sync(h: Harness, res: MonthResult) -> None:
    if synced_height(h.net.states["credit"]) < h.height("supervision"):
        res.outcomes.append(
            h.ok("credit", "credit", "credit_sync", {"source_height": h.height("supervision")})
        )


def _query(h: Harness, lender: str, qid: str, borrower: int) -> dict[str, Any]:
    q = {"query_id": qid, "borrower_ref": bref(borrower), "purpose": "loan_application"}
    out = h.ok("credit", lender, "credit_query", q)
    assert out.result is not None
    return dict(out.result)


def _alert_id(res: MonthResult, rule: str) -> bytes | None:
    for alert, out in res.alerts:
        if alert.rule == rule and out.code == OK:
            return out.tx_id
    return None


def _closed_loop(h: Harness, res: MonthResult, day: int) -> None:
    aid = _alert_id(res, "rate_above_cap")
    if aid is None:
        return
    sh = h.height("supervision")
    steps: dict[int, tuple[str, str, dict[str, Any]]] = {
        6: (
            "gzjr",
            "alert_disposition",
            {"action": "rectification", "note": "rate above the legal cap"},
        ),
        7: ("lender-c", "alert_feedback", {"measures": "will reprice and settle early"}),
        8: ("riskc", "alert_followup", {"source_height": sh, "persists": True}),
        9: ("gzjr", "alert_disposition", {"action": "warning", "note": "settle within the month"}),
        10: ("lender-c", "alert_feedback", {"measures": "settlement scheduled for day 25"}),
        25: ("riskc", "alert_followup", {"source_height": sh, "persists": False}),
        26: ("gzjr", "alert_close", {"conclusion": "loan settled; no further action"}),
    }
    if day in steps:
        sender, type_, payload = steps[day]
        res.outcomes.append(h.ok("risk", sender, type_, payload | {"alert_id": aid}))


def _finance(h: Harness, res: MonthResult) -> None:
    lender, lid = "lender-a", "a-00-001"
    loan = _loan(h, lender, lid)
    reg = {
        "asset_id": "asset-a-001",
        "loan_id": lid,
        "source_height": h.height("supervision"),
        "claimed_state": loan["state"],
        "claimed_outstanding_cents": loan["outstanding_cents"],
        "purpose": "financing",
    }
    res.outcomes.append(h.ok("service", lender, "asset_register", reg))
    req = {
        "request_id": "fin-1",
        "asset_ids": ["asset-a-001"],
        "amount_cents": loan["outstanding_cents"] // 2,
        "term_months": 3,
    }
    res.outcomes.append(h.ok("service", lender, "financing_request", req))
    match = {
        "lender": lender,
        "request_id": "fin-1",
        "funder": "广州某商业银行",
        "amount_cents": req["amount_cents"],
        "rate_bp": 650,
    }
    res.outcomes.append(h.ok("service", "svcp", "financing_match", match))


def _double_finance(h: Harness, res: MonthResult) -> None:
    lender, lid = "lender-a", "a-00-001"
    loan = _loan(h, lender, lid)
    reg = {
        "asset_id": "asset-a-001-again",
        "loan_id": lid,
        "source_height": h.height("supervision"),
        "claimed_state": loan["state"],
        "claimed_outstanding_cents": loan["outstanding_cents"],
        "purpose": "financing",
    }
    t1 = h.tx("service", lender, "asset_register", reg)
    t2 = h.tx("service", "lender-b", "asset_register", reg | {"asset_id": "stolen"})
    outs = h.block("service", [t1, t2])
    res.outcomes.extend(outs)
    res.rejections["double_financing"] = outs[0].code
    res.rejections["someone_elses_loan"] = outs[1].code
