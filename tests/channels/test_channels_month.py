"""A realistic month in memory: alerts, credit answers and rejections (see month_scenario)."""

from __future__ import annotations

from collections import Counter

import pytest

from channels.memory import MemoryNetwork
from channels.monitoring import Subject
from channels.risk import alert_key
from channels.service import asset_key
from channels.state import OK, read_value
from channels.supervision_view import SupervisionView
from tests.channels.helpers import ROLES, bref
from tests.channels.month_scenario import OVER_CAP_LOAN, SPECIAL_BORROWER, MonthResult, run_month


@pytest.fixture(scope="module")
def month() -> MonthResult:
    return run_month()


def test_volume_is_realistic(month: MonthResult) -> None:
    assert len(month.loans) >= 360
    view = SupervisionView(month.h.net.states["supervision"], month.h.height("supervision"))
    events = Counter(f.ev.event for f in view.loan_events_in_range(0, view.as_of))
    assert events["contract"] == len(month.loans) + 1  # + the orphan of day 8
    assert events["settlement"] > 10 and events["overdue"] == 15
    assert month.h.height("supervision") == 31


def test_exactly_the_planted_alerts_are_raised_and_accepted(month: MonthResult) -> None:
    assert all(out.code == OK for _, out in month.alerts), [
        (a.rule, o.message) for a, o in month.alerts
    ]
    found = sorted((a.rule, a.subject) for a, _ in month.alerts)
    assert found == sorted(
        [
            (
                "rate_above_cap",
                Subject(
                    OVER_CAP_LOAN[0], bref(month.loans[OVER_CAP_LOAN].borrower), OVER_CAP_LOAN[1]
                ),
            ),
            ("multi_lender", Subject(borrower_ref=bref(SPECIAL_BORROWER))),
            ("late_report", Subject(lender="lender-a")),
            ("overdue_jump", Subject(lender="lender-b")),
        ],
        key=lambda x: (x[0], repr(x[1])),
    )
    by_rule = {a.rule: a for a, _ in month.alerts}
    assert by_rule["multi_lender"].detail["lenders"] == 3
    assert by_rule["late_report"].detail["late_events"] == 10  # 5 contracts + 5 disbursements
    assert by_rule["overdue_jump"].detail["delinquent_loans"] == 15
    assert by_rule["rate_above_cap"].detail["rate_bp"] == 3600


def test_the_rate_alert_went_round_the_closed_loop(month: MonthResult) -> None:
    [(_, out)] = [(a, o) for a, o in month.alerts if a.rule == "rate_above_cap"]
    rec = read_value(month.h.net.states["risk"], alert_key(out.tx_id))
    assert (rec["status"], rec["round"], rec["respondent"]) == ("closed", 2, "lender-c")
    assert rec["last_followup"]["persists"] is False


def test_credit_answers_show_the_multi_lender_borrower(month: MonthResult) -> None:
    before = month.answers["before"]
    assert before["lenders_with_open_loans"] == 2 and before["asker_has_open_loans"] is False
    expected_before = sum(
        info.principal for (lender, lid), info in month.loans.items()
        if info.borrower == SPECIAL_BORROWER and lender in ("lender-a", "lender-b")
    )  # fmt: skip
    assert before["total_outstanding_cents"] == expected_before
    after = month.answers["after"]
    assert after["lenders_with_open_loans"] == 3
    assert after["other_lenders_with_open_loans"] == 2 and after["asker_has_open_loans"] is True
    assert after["recent_queries_by_others"] == 1  # lender-c's pre-loan query
    assert "lender-" not in repr(after)


def test_the_rejections_users_see(month: MonthResult) -> None:
    assert month.rejections == {
        "repayment_before_disbursement": "bad_transition",
        "reused_report_id": "duplicate_report_id",
        "double_financing": "asset_already_registered",
        "someone_elses_loan": "loan_not_found",
    }
    asset = read_value(month.h.net.states["service"], asset_key("lender-a", "asset-a-001"))
    assert asset["state"] == "pledged"
    assert (
        read_value(month.h.net.states["service"], asset_key("lender-a", "asset-a-001-again"))
        is None
    )


def replay(month: MonthResult, order: list[int]) -> MemoryNetwork:
    """A second validator applying the same committed blocks, in ``order``."""
    other = MemoryNetwork(ROLES, params=month.h.params)
    for i in order:
        channel, txs, time_ms, rejections = month.h.net.log[i]
        other.commit(channel, txs, time_ms, rejections=rejections)
    return other


def test_every_validator_reaches_the_same_state_roots(month: MonthResult) -> None:
    log = month.h.net.log
    same = replay(month, list(range(len(log))))
    assert same.roots == month.h.net.roots
    assert all(
        same.states[ch].snapshot() == month.h.net.states[ch].snapshot() for ch in same.states
    )
    # a validator whose supervision channel ran ahead of the others reaches the same roots:
    # cross-channel reads see supervision only "as of" the height each transaction names
    sup_first = [i for i, b in enumerate(log) if b[0] == "supervision"]
    sup_first += [i for i, b in enumerate(log) if b[0] != "supervision"]
    assert replay(month, sup_first).roots == month.h.net.roots
    # a different order of transactions inside a block is a different digest
    channel, txs, time_ms, rej = log[5]
    assert channel == "supervision" and len(txs) > 1
    a, b = MemoryNetwork(ROLES), MemoryNetwork(ROLES)
    for net, order in ((a, txs), (b, tuple(reversed(txs)))):
        for ch, t, tm, r in log[:5]:
            net.commit(ch, t, tm, rejections=r)
        net.commit(channel, order, time_ms, rejections=rej)
    assert a.roots["supervision"] != b.roots["supervision"]
