"""监管链: lender registry, loan event reports (single and batch), periodic reports."""

from __future__ import annotations

from typing import Any

import pytest

from channels.loans import LoanSummary
from channels.state import read_value
from channels.supervision import book_current_key, loan_key
from channels.supervision_view import SupervisionView
from tests.channels.helpers import DAY_MS, Harness, admit_payload, key_of

SUP = "supervision"


def loan(h: Harness, lender: str, loan_id: str) -> LoanSummary:
    return LoanSummary.from_wire(read_value(h.net.states[SUP], loan_key(lender, loan_id)))


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.admit("lender-a", max_principal=5_000_000, max_outstanding=20_000_000)
    return harness


# -- lender registry -------------------------------------------------------------


def test_lender_admit_and_duplicates(h: Harness) -> None:
    rec = read_value(h.net.states[SUP], b"sup/lender/lender-a")
    assert rec["status"] == "admitted" and rec["licence_id"] == "GZ-XD-lender-a"
    h.rejected(SUP, "gzjr", "lender_admit", admit_payload("lender-a"), "lender_exists")
    bad = admit_payload("lender-b") | {"name": ""}
    h.rejected(SUP, "gzjr", "lender_admit", bad, "bad_payload")
    bad = admit_payload("lender-b") | {"public_keys": [key_of("x"), key_of("x")]}
    h.rejected(SUP, "gzjr", "lender_admit", bad, "bad_payload")
    bad = admit_payload("lender-b") | {
        "limits": {"max_principal_cents": 0, "max_outstanding_cents": 1}
    }
    h.rejected(SUP, "gzjr", "lender_admit", bad, "bad_payload")


def test_lender_update_rotates_keys(h: Harness) -> None:
    new_key = key_of("lender-a", 1)
    h.ok(SUP, "gzjr", "lender_update", {"lender": "lender-a", "public_keys": [new_key]})
    ev = h.event("L1", "contract", 100_000)
    h.rejected(SUP, "lender-a", "loan_event", ev, "key_not_registered")
    h.ok(SUP, "lender-a", "loan_event", ev, key=new_key)
    h.rejected(SUP, "gzjr", "lender_update", {"lender": "nobody", "name": "x"}, "lender_unknown")
    h.rejected(SUP, "gzjr", "lender_update", {"lender": "lender-a"}, "bad_payload")


def test_suspension_blocks_new_loans_but_not_reporting_existing_ones(h: Harness) -> None:
    h.lend("lender-a", "L1", 100_000)
    h.ok(SUP, "gzjr", "lender_suspend", {"lender": "lender-a", "reason": "inspection"})
    h.rejected(
        SUP, "gzjr", "lender_suspend", {"lender": "lender-a", "reason": "again"}, "bad_status"
    )
    out = h.rejected(
        SUP, "lender-a", "loan_event", h.event("L2", "contract", 1000), "lender_suspended"
    )
    assert "existing loans" in out.message
    h.ok(SUP, "lender-a", "loan_event", h.event("L1", "repayment", 40_000))
    h.ok(SUP, "lender-a", "periodic_report", periodic("p1"))
    h.ok(SUP, "gzjr", "lender_reinstate", {"lender": "lender-a", "reason": "fixed"})
    h.rejected(SUP, "gzjr", "lender_reinstate", {"lender": "lender-a", "reason": "x"}, "bad_status")
    h.rejected(SUP, "gzjr", "lender_suspend", {"lender": "ghost", "reason": "x"}, "lender_unknown")
    h.ok(SUP, "lender-a", "loan_event", h.event("L2", "contract", 1000))
    view = SupervisionView(h.net.states[SUP], h.height(SUP))
    assert view.lender_status("lender-a") == "admitted"
    assert SupervisionView(h.net.states[SUP], 4).lender_status("lender-a") == "suspended"


# -- loan events ------------------------------------------------------------------


def test_full_life_of_a_loan(h: Harness) -> None:
    for event, amount in [
        ("contract", 1_000_000),
        ("disbursement", 600_000),
        ("disbursement", 400_000),
        ("repayment", 100_000),
        ("overdue", 50_000),
        ("repayment", 50_000),  # cures the arrears
        ("overdue", 200_000),
        ("collection", 300_000),
        ("repayment", 100_000),
        ("settlement", 750_000),
    ]:
        h.advance(60_000)
        h.ok(SUP, "lender-a", "loan_event", h.event("L1", event, amount))
        if (event, amount) == ("repayment", 50_000):
            assert loan(h, "lender-a", "L1").state == "active"
    s = loan(h, "lender-a", "L1")
    assert (s.state, s.disbursed_cents, s.repaid_cents, s.outstanding_cents) == (
        "settled", 1_000_000, 1_000_000, 0,
    )  # fmt: skip
    assert s.events == 10
    history = SupervisionView(h.net.states[SUP], h.height(SUP)).loan_history("lender-a", "L1")
    assert [f.ev.event for f in history][:2] == ["contract", "disbursement"]
    assert [f.height for f in history] == sorted(f.height for f in history)
    assert read_value(h.net.states[SUP], book_current_key("lender-a")) == {
        "out": 0, "dout": 0, "open": 0, "dlq": 0,
    }  # fmt: skip
    h.rejected(SUP, "lender-a", "loan_event", h.event("L1", "repayment", 1), "loan_closed")


def test_settlement_with_remainder_is_a_write_off(h: Harness) -> None:
    h.lend("lender-a", "L1", 100_000)
    h.ok(SUP, "lender-a", "loan_event", h.event("L1", "overdue", 100_000))
    h.ok(SUP, "lender-a", "loan_event", h.event("L1", "collection", 100_000))
    h.ok(SUP, "lender-a", "loan_event", h.event("L1", "settlement", 30_000))
    s = loan(h, "lender-a", "L1")
    assert (s.state, s.written_off_cents, s.outstanding_cents) == ("written_off", 70_000, 0)


@pytest.mark.parametrize(
    ("setup", "event", "amount", "kw", "code"),
    [
        ([], "repayment", 100, {}, "loan_not_found"),
        ([("contract", 1000)], "contract", 1000, {}, "loan_exists"),
        ([("contract", 1000)], "repayment", 100, {}, "bad_transition"),
        ([("contract", 1000)], "overdue", 100, {}, "bad_transition"),
        ([("contract", 1000), ("disbursement", 1000)], "collection", 100, {}, "bad_transition"),
        ([("contract", 1000)], "disbursement", 1001, {}, "over_disbursed"),
        ([("contract", 1000)], "disbursement", 0, {}, "bad_amount"),
        ([], "contract", 0, {}, "bad_amount"),
        ([("contract", 1000), ("disbursement", 500)], "repayment", 501, {}, "overpayment"),
        ([("contract", 1000), ("disbursement", 500)], "repayment", 0, {}, "bad_amount"),
        ([("contract", 1000), ("disbursement", 500)], "overdue", 501, {}, "bad_amount"),
        ([("contract", 1000), ("disbursement", 500)], "settlement", 501, {}, "overpayment"),
        ([("contract", 1000)], "disbursement", 10, {"borrower": 2}, "borrower_mismatch"),
        ([("contract", 1000)], "disbursement", 10, {"rate_bp": 1}, "terms_mismatch"),
        ([("contract", 1000)], "disbursement", 10, {"term": 6}, "terms_mismatch"),
        ([("contract", 1000)], "disbursement", 10, {"event_time": 1}, "event_time_regressed"),
        ([], "contract", 10, {"event_time": 10**14}, "event_time_in_future"),
        ([], "contract", 5_000_001, {}, "over_lender_limit"),
    ],
)
def test_loan_event_rejections(
    h: Harness, setup: list[tuple[str, int]], event: str, amount: int, kw: dict[str, Any], code: str
) -> None:
    for ev, amt in setup:
        h.ok(SUP, "lender-a", "loan_event", h.event("L1", ev, amt))
    h.advance(1000)
    h.rejected(SUP, "lender-a", "loan_event", h.event("L1", event, amount, **kw), code)


def test_outstanding_limit_counts_the_whole_book(h: Harness) -> None:
    for i in range(4):
        h.lend("lender-a", f"L{i}", 5_000_000)
    out = h.rejected(
        SUP, "lender-a", "loan_event", h.event("L9", "contract", 1), "over_lender_limit"
    )
    assert "20000000" in out.message


def test_report_ids_are_unique_per_lender(h: Harness) -> None:
    h.admit("lender-b")
    h.ok(SUP, "lender-a", "loan_event", h.event("L1", "contract", 1000, report_id="R1"))
    h.rejected(
        SUP,
        "lender-a",
        "loan_event",
        h.event("L2", "contract", 1000, report_id="R1"),
        "duplicate_report_id",
    )
    h.ok(SUP, "lender-b", "loan_event", h.event("L1", "contract", 1000, report_id="R1"))


def test_unadmitted_lender_and_payload_checks(h: Harness) -> None:
    h.rejected(
        SUP, "lender-c", "loan_event", h.event("L1", "contract", 1000), "lender_not_admitted"
    )
    bad = h.event("L1", "contract", 1000) | {"event": "refund"}
    h.rejected(SUP, "lender-a", "loan_event", bad, "bad_payload")
    bad = h.event("L1", "contract", -5)
    h.rejected(SUP, "lender-a", "loan_event", bad, "bad_payload")
    bad = h.event("L/1", "contract", 5)
    out = h.rejected(SUP, "lender-a", "loan_event", bad, "bad_payload")
    assert "loan_id" in out.message
    bad = h.event("L1", "contract", 5) | {"borrower_ref": b"\x00" * 31}
    h.rejected(SUP, "lender-a", "loan_event", bad, "bad_payload")
    bad = h.event("L1", "contract", 5) | {"amount_cents": True}
    h.rejected(SUP, "lender-a", "loan_event", bad, "bad_payload")


# -- batches ------------------------------------------------------------------------


def test_batch_events_each_get_an_identity(h: Harness) -> None:
    events = [h.event(f"L{i}", "contract", 1000 + i, borrower=i) for i in range(5)]
    events += [h.event(f"L{i}", "disbursement", 1000 + i, borrower=i) for i in range(5)]
    out = h.ok(SUP, "lender-a", "loan_event_batch", {"records": events})
    assert out.result == {"events": 10}
    view = SupervisionView(h.net.states[SUP], h.height(SUP))
    refs = [f.ref for f in view.loan_events_in_range(0, h.height(SUP))]
    assert [(r.tx_id, r.index) for r in refs] == [(out.tx_id, i) for i in range(10)]
    assert loan(h, "lender-a", "L3").outstanding_cents == 1003


def test_batch_is_atomic(h: Harness) -> None:
    events = [
        h.event("L1", "contract", 1000),
        h.event("L1", "disbursement", 1000),
        h.event("L1", "repayment", 2000),  # overpayment
    ]
    out = h.rejected(SUP, "lender-a", "loan_event_batch", {"records": events}, "overpayment")
    assert out.message.startswith("event 2")
    dup = [
        h.event("L1", "contract", 1000, report_id="X"),
        h.event("L2", "contract", 1000, report_id="X"),
    ]
    h.rejected(SUP, "lender-a", "loan_event_batch", {"records": dup}, "duplicate_report_id")
    h.rejected(SUP, "lender-a", "loan_event_batch", {"records": []}, "bad_payload")
    too_many = [h.event(f"L{i}", "contract", 1) for i in range(1001)]
    h.rejected(SUP, "lender-a", "loan_event_batch", {"records": too_many}, "bad_payload")
    bad = [h.event("L1", "contract", 1000), {"loan_id": "L2"}]
    out = h.rejected(SUP, "lender-a", "loan_event_batch", {"records": bad}, "bad_payload")
    assert "records[1]" in out.message


# -- periodic reports ----------------------------------------------------------------


def periodic(
    report_id: str, kind: str = "monthly", period: str = "2020-07", revision: int = 0
) -> dict[str, Any]:
    return {
        "report_id": report_id,
        "kind": kind,
        "period": period,
        "file_digest": b"\x11" * 32,
        "file_size": 12_345,
        "revision": revision,
    }


def test_periodic_reports_and_revisions(h: Harness) -> None:
    h.ok(SUP, "lender-a", "periodic_report", periodic("P1"))
    h.ok(SUP, "lender-a", "periodic_report", periodic("P2", revision=1))
    h.rejected(SUP, "lender-a", "periodic_report", periodic("P3", revision=1), "bad_revision")
    h.rejected(
        SUP, "lender-a", "periodic_report", periodic("P1", revision=2), "duplicate_report_id"
    )
    h.ok(SUP, "lender-a", "periodic_report", periodic("Q3", "quarterly", "2020-Q3"))
    h.rejected(
        SUP, "lender-a", "periodic_report", periodic("Q4", "quarterly", "2020-07"), "bad_payload"
    )
    h.rejected(SUP, "lender-a", "periodic_report", periodic("M13", period="2020-13"), "bad_payload")
    h.rejected(SUP, "lender-c", "periodic_report", periodic("Z"), "lender_not_admitted")
    h.rejected(SUP, "gzjr", "periodic_report", periodic("Z"), "role_not_permitted")


def test_as_of_views_ignore_later_heights(h: Harness) -> None:
    h.lend("lender-a", "L1", 100_000)  # height 2
    h.advance(DAY_MS)
    h.ok(SUP, "lender-a", "loan_event", h.event("L1", "repayment", 30_000))  # height 3
    at2 = SupervisionView(h.net.states[SUP], 2)
    at3 = SupervisionView(h.net.states[SUP], 3)
    assert at2.loan("lender-a", "L1").outstanding_cents == 100_000  # type: ignore[union-attr]
    assert at3.loan("lender-a", "L1").outstanding_cents == 70_000  # type: ignore[union-attr]
    assert SupervisionView(h.net.states[SUP], 1).loan("lender-a", "L1") is None
    assert at2.book("lender-a").outstanding_cents == 100_000
    assert at3.book("lender-a").outstanding_cents == 70_000
    assert at2.block_time(2) == at3.block_time(3) - DAY_MS


def test_a_batch_writes_the_book_history_even_when_its_changes_cancel_out() -> None:
    """The book is written once per transaction (not per event); the state must be what
    per-event writes gave: a history entry at the height whenever an event changed
    the book, even if the batch's changes cancel out."""
    from channels.state import OK, height_part, read_value
    from channels.supervision import book_current_key, book_prefix

    h = Harness()
    h.admit("lender-a")
    h.lend("lender-a", "L-0", 50_000)
    before = read_value(h.net.states[SUP], book_current_key("lender-a"))
    assert before["out"] == 50_000 and before["open"] == 1
    out = h.report(
        "lender-a",
        h.event("L-1", "contract", 20_000),
        h.event("L-1", "disbursement", 20_000),
        h.event("L-1", "repayment", 20_000),
        h.event("L-1", "settlement", 0),
    )
    assert out.code == OK, out.message
    state = h.net.states[SUP]
    assert read_value(state, book_current_key("lender-a")) == before
    at = read_value(state, book_prefix("lender-a") + height_part(h.height(SUP)))
    assert at == before
