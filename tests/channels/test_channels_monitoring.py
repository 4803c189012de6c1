"""The risk-monitoring rules over supervision facts, and their persistence checks."""

from __future__ import annotations

from channels.context import DAY_MS, NetworkParams
from channels.monitoring import AlertPayload, Subject, persists, run_rules
from tests.channels.helpers import Harness, bref

SUP = "supervision"
PARAMS = NetworkParams(
    legal_rate_cap_bp=2400,
    multi_lender_threshold=2,
    concentration_share_bp=5000,
    concentration_min_book_cents=1_000_000,
    overdue_jump_bp=1000,
    overdue_min_loans=2,
    reporting_gap_ms=3 * DAY_MS,
    late_report_bound_ms=DAY_MS,
)


def make() -> Harness:
    h = Harness(PARAMS)
    for lender in ("lender-a", "lender-b", "lender-c"):
        h.admit(lender)
    return h


def alerts(h: Harness, lo: int, rule: str, hi: int | None = None) -> list[AlertPayload]:
    return run_rules(h.net.states[SUP], lo, hi or h.height(SUP), PARAMS, rules=(rule,))


def test_multi_lender_counts_lenders_with_open_loans() -> None:
    h = make()
    h.lend("lender-a", "A1", 100_000, borrower=7)
    h.lend("lender-b", "B1", 200_000, borrower=7)
    assert alerts(h, 0, "multi_lender") == []  # 2 lenders: not more than 2
    start = h.height(SUP)
    h.lend("lender-c", "C1", 300_000, borrower=7)
    h.lend("lender-c", "C2", 50_000, borrower=8)
    [a] = alerts(h, start, "multi_lender")
    assert a.subject == Subject(borrower_ref=bref(7))
    assert a.detail == {"lenders": 3, "open_loans": 3, "outstanding_cents": 600_000, "threshold": 2}
    assert len(a.evidence) == 3
    assert persists(h.net.states[SUP], a, h.height(SUP), PARAMS)
    h.ok(SUP, "lender-b", "loan_event", h.event("B1", "settlement", 200_000, borrower=7))
    assert not persists(h.net.states[SUP], a, h.height(SUP), PARAMS)
    assert persists(h.net.states[SUP], a, a.source_height, PARAMS)  # as of its own height


def test_rate_above_cap_only_in_window() -> None:
    h = make()
    h.lend("lender-a", "A1", 100_000, rate_bp=3600)
    start = h.height(SUP)
    h.lend("lender-a", "A2", 100_000, rate_bp=2400)  # at the cap: fine
    assert len(alerts(h, 0, "rate_above_cap")) == 1
    assert alerts(h, start, "rate_above_cap") == []


def test_lender_concentration() -> None:
    h = make()
    h.lend("lender-a", "A1", 400_000, borrower=1)
    h.lend("lender-a", "A2", 400_000, borrower=2)
    assert alerts(h, 0, "lender_concentration") == []  # book below the minimum
    start = h.height(SUP)
    h.lend("lender-a", "A3", 2_000_000, borrower=3)
    [a] = alerts(h, start, "lender_concentration")
    assert a.subject == Subject(lender="lender-a", borrower_ref=bref(3))
    assert a.detail["share_bp"] == 2_000_000 * 10_000 // 2_800_000
    h.ok(SUP, "lender-a", "loan_event", h.event("A3", "repayment", 1_900_000, borrower=3))
    assert not persists(h.net.states[SUP], a, h.height(SUP), PARAMS)


def test_overdue_jump() -> None:
    h = make()
    for i in range(4):
        h.lend("lender-a", f"A{i}", 100_000, borrower=i)
    start = h.height(SUP)
    h.ok(SUP, "lender-a", "loan_event", h.event("A0", "overdue", 10_000, borrower=0))
    assert alerts(h, start, "overdue_jump") == []  # one delinquent loan: below the minimum
    h.ok(SUP, "lender-a", "loan_event", h.event("A1", "overdue", 10_000, borrower=1))
    [a] = alerts(h, start, "overdue_jump")
    assert a.detail["ratio_before_bp"] == 0 and a.detail["ratio_after_bp"] == 5000
    assert len(a.evidence) == 2
    assert alerts(h, h.height(SUP) - 1, "overdue_jump")[0].detail["ratio_before_bp"] == 2500
    for i in (0, 1):
        h.ok(SUP, "lender-a", "loan_event", h.event(f"A{i}", "repayment", 10_000, borrower=i))
    assert not persists(h.net.states[SUP], a, h.height(SUP), PARAMS)


def test_reporting_gap_fires_once_when_the_silence_crosses_the_bound() -> None:
    h = make()
    h.lend("lender-a", "A1", 100_000)
    h.lend("lender-b", "B1", 100_000)
    first = h.height(SUP)
    h.advance(2 * DAY_MS)
    h.lend("lender-a", "A2", 100_000)
    mid = h.height(SUP)
    h.advance(2 * DAY_MS)
    h.lend("lender-a", "A3", 100_000)
    gaps = alerts(h, mid, "reporting_gap")
    # lender-b went silent after `first` (4 days ago); lender-c never reported since admission
    assert sorted(a.subject.lender or "" for a in gaps) == ["lender-b", "lender-c"]
    b = next(a for a in gaps if a.subject.lender == "lender-b")
    assert b.detail["silent_ms"] == 4 * DAY_MS and len(b.evidence) == 1
    c = next(a for a in gaps if a.subject.lender == "lender-c")
    assert c.evidence == ()
    h.advance(DAY_MS)
    h.lend("lender-a", "A4", 100_000)
    assert alerts(h, h.height(SUP) - 1, "reporting_gap") == []  # already past the bound
    assert alerts(h, first, "reporting_gap", hi=mid) == []
    assert persists(h.net.states[SUP], b, h.height(SUP), PARAMS)
    h.lend("lender-b", "B2", 100_000)
    assert not persists(h.net.states[SUP], b, h.height(SUP), PARAMS)


def test_suspended_lenders_are_not_gap_alerted() -> None:
    h = make()
    h.ok(SUP, "gzjr", "lender_suspend", {"lender": "lender-c", "reason": "x"})
    start = h.height(SUP)
    h.advance(4 * DAY_MS)
    h.lend("lender-a", "A1", 100_000)
    h.lend("lender-b", "B1", 100_000)
    assert alerts(h, start, "reporting_gap") == []


def test_late_report() -> None:
    h = make()
    h.advance(10 * DAY_MS)
    start = h.height(SUP)
    h.ok(SUP, "lender-a", "loan_event_batch", {"records": [
        h.event("A1", "contract", 1000, event_time=h.now - 3 * DAY_MS),
        h.event("A1", "disbursement", 1000, event_time=h.now - 2 * DAY_MS),
        h.event("A2", "contract", 1000, event_time=h.now - DAY_MS),  # exactly the bound: fine
    ]})  # fmt: skip
    [a] = alerts(h, start, "late_report")
    assert a.subject == Subject(lender="lender-a")
    assert a.detail == {"late_events": 2, "max_delay_ms": 3 * DAY_MS, "bound_ms": DAY_MS}
    assert not persists(h.net.states[SUP], a, h.height(SUP), PARAMS)


def test_rules_are_deterministic_and_payloads_round_trip() -> None:
    h = make()
    for i in range(30):
        h.lend(
            ("lender-a", "lender-b", "lender-c")[i % 3],
            f"L{i}",
            10_000 * (i + 1),
            borrower=i % 4,
            rate_bp=2000 + 100 * i,
        )
    first = run_rules(h.net.states[SUP], 0, h.height(SUP), PARAMS)
    second = run_rules(h.net.states[SUP], 0, h.height(SUP), PARAMS)
    assert first == second and first
    for a in first:
        assert AlertPayload.parse(a.to_payload()) == a
    later = h.height(SUP)
    h.lend("lender-a", "Z", 10_000, rate_bp=9000)
    assert run_rules(h.net.states[SUP], 0, later, PARAMS) == first  # later facts ignored
