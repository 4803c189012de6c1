"""风控链: alerts must reproduce; the disposition-feedback-monitoring-close loop."""

from __future__ import annotations

import pytest

from channels.context import NetworkParams
from channels.errors import NotYetCommitted
from channels.monitoring import AlertPayload, run_rules
from channels.risk import alert_key
from channels.state import read_value
from tests.channels.helpers import Harness

RISK = "risk"
SUP = "supervision"


def sup_alerts(h: Harness, lo: int = 0, **kw: object) -> list[AlertPayload]:
    return run_rules(h.net.states[SUP], lo, h.height(SUP), h.params, **kw)  # type: ignore[arg-type]


@pytest.fixture
def h() -> Harness:
    harness = Harness(NetworkParams(legal_rate_cap_bp=2400, multi_lender_threshold=2))
    for lender in ("lender-a", "lender-b", "lender-c"):
        harness.admit(lender)
    harness.lend("lender-a", "A1", 500_000, borrower=7, rate_bp=3600)
    return harness


def post(h: Harness, alert: AlertPayload) -> bytes:
    out = h.ok(RISK, "riskc", "alert", alert.to_payload())
    assert out.result is not None
    alert_id: bytes = out.result["alert_id"]
    assert alert_id == out.tx_id
    return alert_id


def test_alert_accepted_only_if_it_reproduces(h: Harness) -> None:
    [alert] = sup_alerts(h, rules=("rate_above_cap",))
    assert alert.detail == {"rate_bp": 3600, "cap_bp": 2400}
    wrong_rate = alert.to_payload() | {"details": {"rate_bp": 3000, "cap_bp": 2400}}
    h.rejected(RISK, "riskc", "alert", wrong_rate, "not_reproduced")
    other = alert.to_payload()
    other["subject"] = dict(other["subject"]) | {"lender": "lender-b"}
    h.rejected(RISK, "riskc", "alert", other, "not_reproduced")
    no_evidence = alert.to_payload() | {"evidence": []}
    h.rejected(RISK, "riskc", "alert", no_evidence, "not_reproduced")
    invented = alert.to_payload() | {"rule": "late_report"}
    h.rejected(RISK, "riskc", "alert", invented, "not_reproduced")
    alert_id = post(h, alert)
    rec = read_value(h.net.states[RISK], alert_key(alert_id))
    assert rec["status"] == "open" and rec["rule"] == "rate_above_cap"
    h.rejected(RISK, "riskc", "alert", alert.to_payload(), "duplicate_alert")
    h.rejected(RISK, "gzjr", "alert", alert.to_payload(), "role_not_permitted")


def test_alert_payload_checks(h: Harness) -> None:
    [alert] = sup_alerts(h, rules=("rate_above_cap",))
    p = alert.to_payload()
    h.rejected(RISK, "riskc", "alert", p | {"from_height": p["source_height"]}, "bad_payload")
    h.rejected(RISK, "riskc", "alert", p | {"source_height": 0, "from_height": 0}, "bad_payload")
    h.rejected(RISK, "riskc", "alert", p | {"subject": {}}, "bad_payload")
    h.rejected(RISK, "riskc", "alert", p | {"details": {"x": "y"}}, "bad_payload")
    h.rejected(RISK, "riskc", "alert", p | {"rule": "astrology"}, "bad_payload")


def test_alert_about_uncommitted_height_waits(h: Harness) -> None:
    [alert] = sup_alerts(h, rules=("rate_above_cap",))
    ahead = alert.to_payload() | {"source_height": h.height(SUP) + 5}
    with pytest.raises(NotYetCommitted):
        h.send(RISK, "riskc", "alert", ahead)
    assert h.height(RISK) == 0


def test_closed_loop(h: Harness) -> None:
    [alert] = sup_alerts(h, rules=("rate_above_cap",))
    aid = post(h, alert)
    disp = {"alert_id": aid, "action": "rectification", "note": "reduce the rate"}
    fb = {"alert_id": aid, "measures": "repricing the loan book", "document_digest": b"\x05" * 32}
    close = {"alert_id": aid, "conclusion": "done"}
    h.rejected(RISK, "gzjr", "alert_close", close, "bad_alert_state")
    h.rejected(RISK, "lender-a", "alert_feedback", fb, "bad_alert_state")
    h.rejected(
        RISK, "gzjr", "alert_disposition", disp | {"respondent": "lender-b"}, "respondent_mismatch"
    )
    h.rejected(
        RISK, "gzjr", "alert_disposition", disp | {"alert_id": b"\x00" * 32}, "alert_not_found"
    )
    h.rejected(RISK, "gzjr", "alert_disposition", disp | {"action": "shrug"}, "bad_payload")
    h.ok(RISK, "gzjr", "alert_disposition", disp | {"deadline_ms": h.now + 10**9})
    h.rejected(RISK, "gzjr", "alert_disposition", disp, "bad_alert_state")
    h.rejected(RISK, "lender-b", "alert_feedback", fb, "not_respondent")
    h.rejected(RISK, "gzjr", "alert_feedback", fb, "role_not_permitted")
    h.ok(RISK, "lender-a", "alert_feedback", fb)
    h.rejected(RISK, "gzjr", "alert_close", close, "bad_alert_state")
    sh = h.height(SUP)
    # the loan is still open: the condition persists, and a follow-up saying otherwise fails
    follow = {"alert_id": aid, "source_height": sh, "persists": False}
    h.rejected(RISK, "riskc", "alert_followup", follow, "not_reproduced")
    h.rejected(
        RISK,
        "riskc",
        "alert_followup",
        follow | {"source_height": 1, "persists": True},
        "bad_source_height",
    )
    h.ok(RISK, "riskc", "alert_followup", follow | {"persists": True})
    # another round: the lender settles the loan
    h.ok(RISK, "gzjr", "alert_disposition", disp | {"action": "warning"})
    h.ok(RISK, "lender-a", "alert_feedback", fb | {"measures": "loan settled early"})
    h.ok(
        SUP,
        "lender-a",
        "loan_event",
        h.event("A1", "settlement", 500_000, borrower=7, rate_bp=3600),
    )
    follow2 = {"alert_id": aid, "source_height": h.height(SUP), "persists": False}
    h.ok(RISK, "riskc", "alert_followup", follow2)
    h.ok(RISK, "gzjr", "alert_close", close)
    h.rejected(RISK, "gzjr", "alert_close", close, "bad_alert_state")
    rec = read_value(h.net.states[RISK], alert_key(aid))
    assert (rec["status"], rec["round"], rec["steps"]) == ("closed", 2, 8)
    steps = [
        read_value(h.net.states[RISK], k)["step"]
        for k, _ in h.net.states[RISK].iter_prefix(b"risk/step/")
    ]
    assert steps == [
        "alert",
        "disposition",
        "feedback",
        "followup",
        "disposition",
        "feedback",
        "followup",
        "close",
    ]


def test_followup_beyond_committed_height_waits(h: Harness) -> None:
    [alert] = sup_alerts(h, rules=("rate_above_cap",))
    aid = post(h, alert)
    h.ok(RISK, "gzjr", "alert_disposition", {"alert_id": aid, "action": "inquiry", "note": "n"})
    h.ok(RISK, "lender-a", "alert_feedback", {"alert_id": aid, "measures": "m"})
    with pytest.raises(NotYetCommitted):
        h.send(
            RISK,
            "riskc",
            "alert_followup",
            {"alert_id": aid, "source_height": 99, "persists": True},
        )


def test_borrower_alert_needs_a_named_respondent(h: Harness) -> None:
    h.lend("lender-b", "B1", 100_000, borrower=7)
    h.lend("lender-c", "C1", 100_000, borrower=7)
    [alert] = sup_alerts(h, rules=("multi_lender",))
    assert alert.subject.borrower_ref is not None and alert.subject.lender is None
    aid = post(h, alert)
    disp = {"alert_id": aid, "action": "inquiry", "note": "who lent last?"}
    h.rejected(RISK, "gzjr", "alert_disposition", disp, "respondent_required")
    h.ok(RISK, "gzjr", "alert_disposition", disp | {"respondent": "lender-c"})
    h.rejected(
        RISK, "lender-a", "alert_feedback", {"alert_id": aid, "measures": "m"}, "not_respondent"
    )
    h.ok(RISK, "lender-c", "alert_feedback", {"alert_id": aid, "measures": "m"})
