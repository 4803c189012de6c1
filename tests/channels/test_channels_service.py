"""服务链: asset authenticity against supervision, financing, disposal of NPLs."""

from __future__ import annotations

from typing import Any

import pytest

from channels.context import DAY_MS
from channels.errors import NotYetCommitted
from channels.service import asset_key, listing_key, request_key
from channels.state import read_value
from tests.channels.helpers import Harness

SVC = "service"
SUP = "supervision"


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    for lender in ("lender-a", "lender-b"):
        harness.admit(lender)
    harness.lend("lender-a", "A1", 300_000, borrower=1)
    harness.lend("lender-a", "A2", 200_000, borrower=2)
    harness.lend("lender-a", "A3", 100_000, borrower=3)
    harness.ok(SUP, "lender-a", "loan_event", harness.event("A3", "overdue", 40_000, borrower=3))
    return harness


def reg(
    h: Harness,
    asset_id: str,
    loan_id: str,
    state: str = "active",
    outstanding: int | None = None,
    **kw: Any,
) -> dict[str, Any]:
    amounts = {"A1": 300_000, "A2": 200_000, "A3": 100_000}
    return {
        "asset_id": asset_id,
        "loan_id": loan_id,
        "source_height": h.height(SUP),
        "claimed_state": state,
        "claimed_outstanding_cents": amounts.get(loan_id, 1)
        if outstanding is None
        else outstanding,
        "purpose": "financing",
    } | kw


def asset_state(h: Harness, org: str, asset_id: str) -> str:
    return str(read_value(h.net.states[SVC], asset_key(org, asset_id))["state"])


def test_asset_register_checks_the_loan_on_supervision(h: Harness) -> None:
    out = h.ok(SVC, "lender-a", "asset_register", reg(h, "X1", "A1"))
    assert out.result == {"asset_id": "X1"}
    rec = read_value(h.net.states[SVC], asset_key("lender-a", "X1"))
    assert (rec["state"], rec["principal_cents"], rec["source_height"]) == (
        "registered",
        300_000,
        h.height(SUP),
    )
    h.rejected(SVC, "lender-a", "asset_register", reg(h, "X1", "A2"), "duplicate_asset_id")
    h.rejected(SVC, "lender-a", "asset_register", reg(h, "X2", "NOPE"), "loan_not_found")
    h.rejected(
        SVC, "lender-b", "asset_register", reg(h, "X2", "A2"), "loan_not_found"
    )  # not its loan
    h.rejected(SVC, "lender-a", "asset_register", reg(h, "X2", "A3"), "state_mismatch")
    h.rejected(
        SVC,
        "lender-a",
        "asset_register",
        reg(h, "X2", "A2", outstanding=250_000),
        "amount_mismatch",
    )
    h.rejected(
        SVC, "lender-a", "asset_register", reg(h, "X2", "A2", source_height=2), "loan_not_found"
    )
    h.rejected(
        SVC, "lender-a", "asset_register", reg(h, "X2", "A2", source_height=0), "bad_payload"
    )
    h.rejected(SVC, "lender-a", "asset_register", reg(h, "X2", "A2", state="open"), "bad_payload")
    h.rejected(SVC, "svcp", "asset_register", reg(h, "X2", "A2"), "role_not_permitted")
    h.ok(SVC, "lender-a", "asset_register", reg(h, "X3", "A3", state="overdue"))


def test_no_double_financing(h: Harness) -> None:
    h.ok(SVC, "lender-a", "asset_register", reg(h, "X1", "A1"))
    out = h.rejected(
        SVC, "lender-a", "asset_register", reg(h, "X2", "A1"), "asset_already_registered"
    )
    assert "X1" in out.message and "registered" in out.message
    h.ok(
        SVC,
        "lender-a",
        "financing_request",
        {"request_id": "F1", "asset_ids": ["X1"], "amount_cents": 250_000, "term_months": 6},
    )
    h.ok(
        SVC,
        "svcp",
        "financing_match",
        {
            "lender": "lender-a",
            "request_id": "F1",
            "funder": "bank-x",
            "amount_cents": 250_000,
            "rate_bp": 600,
        },
    )
    assert asset_state(h, "lender-a", "X1") == "pledged"
    out = h.rejected(
        SVC, "lender-a", "asset_register", reg(h, "X2", "A1"), "asset_already_registered"
    )
    assert "pledged" in out.message
    h.rejected(SVC, "lender-a", "asset_deregister", {"asset_id": "X1"}, "bad_asset_state")


def test_closed_loans_and_stale_or_future_heights(h: Harness) -> None:
    h.ok(SUP, "lender-a", "loan_event", h.event("A2", "settlement", 200_000, borrower=2))
    h.rejected(
        SVC,
        "lender-a",
        "asset_register",
        reg(h, "X1", "A2", state="settled", outstanding=0),
        "loan_closed",
    )
    h.rejected(SVC, "lender-a", "asset_register", reg(h, "X1", "A2"), "state_mismatch")
    with pytest.raises(NotYetCommitted):
        h.send(
            SVC, "lender-a", "asset_register", reg(h, "X1", "A1", source_height=h.height(SUP) + 1)
        )
    old = reg(h, "X1", "A1")
    h.advance(DAY_MS + 1)
    out = h.rejected(SVC, "lender-a", "asset_register", old, "stale_source_height")
    assert "ms old" in out.message


def test_suspended_lender_cannot_register(h: Harness) -> None:
    h.ok(SUP, "gzjr", "lender_suspend", {"lender": "lender-a", "reason": "x"})
    h.rejected(SVC, "lender-a", "asset_register", reg(h, "X1", "A1"), "lender_not_admitted")


def test_financing_lifecycle(h: Harness) -> None:
    h.ok(SVC, "lender-a", "asset_register", reg(h, "X1", "A1"))
    h.ok(SVC, "lender-a", "asset_register", reg(h, "X2", "A2"))
    req = {"request_id": "F1", "asset_ids": ["X1", "X2"], "amount_cents": 400_000, "term_months": 6}
    h.rejected(
        SVC,
        "lender-a",
        "financing_request",
        req | {"amount_cents": 500_001},
        "over_collateral_value",
    )
    h.rejected(
        SVC, "lender-a", "financing_request", req | {"asset_ids": ["X1", "X9"]}, "asset_not_found"
    )
    h.rejected(
        SVC, "lender-a", "financing_request", req | {"asset_ids": ["X1", "X1"]}, "bad_payload"
    )
    h.rejected(SVC, "lender-b", "financing_request", req, "asset_not_found")
    h.ok(SVC, "lender-a", "financing_request", req)
    assert asset_state(h, "lender-a", "X1") == "offered"
    h.rejected(SVC, "lender-a", "financing_request", req | {"request_id": "F2"}, "bad_asset_state")
    h.rejected(SVC, "lender-a", "financing_request", req, "duplicate_request_id")
    h.ok(SVC, "lender-a", "financing_cancel", {"request_id": "F1"})
    assert asset_state(h, "lender-a", "X2") == "registered"
    h.rejected(SVC, "lender-a", "financing_cancel", {"request_id": "F1"}, "bad_request_state")
    h.rejected(SVC, "lender-a", "financing_cancel", {"request_id": "F9"}, "request_not_found")
    h.ok(SVC, "lender-a", "financing_request", req | {"request_id": "F2"})
    match = {
        "lender": "lender-a",
        "request_id": "F2",
        "funder": "广州某银行",
        "amount_cents": 400_000,
        "rate_bp": 550,
    }
    h.rejected(
        SVC, "svcp", "financing_match", match | {"amount_cents": 400_001}, "amount_exceeds_request"
    )
    h.rejected(SVC, "lender-a", "financing_match", match, "role_not_permitted")
    h.ok(SVC, "svcp", "financing_match", match)
    h.rejected(SVC, "svcp", "financing_match", match, "bad_request_state")
    h.rejected(SVC, "lender-a", "financing_cancel", {"request_id": "F2"}, "bad_request_state")
    assert (
        read_value(h.net.states[SVC], request_key("lender-a", "F2"))["match"]["funder"]
        == "广州某银行"
    )
    release = {"lender": "lender-a", "request_id": "F2", "reason": "repaid"}
    h.ok(SVC, "svcp", "financing_release", release)
    h.rejected(SVC, "svcp", "financing_release", release, "bad_request_state")
    assert asset_state(h, "lender-a", "X1") == asset_state(h, "lender-a", "X2") == "registered"
    h.ok(SVC, "lender-a", "asset_deregister", {"asset_id": "X1"})
    h.rejected(SVC, "lender-a", "asset_deregister", {"asset_id": "X1"}, "bad_asset_state")
    h.rejected(SVC, "lender-a", "asset_deregister", {"asset_id": "nope"}, "asset_not_found")
    h.ok(SVC, "lender-a", "asset_register", reg(h, "X1b", "A1"))  # free to register again


def test_disposal_of_non_performing_loans(h: Harness) -> None:
    h.ok(SVC, "lender-a", "asset_register", reg(h, "P1", "A1"))
    h.ok(SVC, "lender-a", "asset_register", reg(h, "N1", "A3", state="overdue"))
    listing = {
        "listing_id": "D1",
        "asset_id": "N1",
        "reserve_price_cents": 30_000,
        "description": "逾期消费贷",
    }
    h.rejected(SVC, "lender-a", "disposal_list", listing | {"asset_id": "P1"}, "not_non_performing")
    h.ok(SVC, "lender-a", "disposal_list", listing)
    assert asset_state(h, "lender-a", "N1") == "listed"
    h.rejected(SVC, "lender-a", "disposal_list", listing, "duplicate_listing_id")
    st = {"lender": "lender-a", "listing_id": "D1"}
    h.rejected(
        SVC, "svcp", "disposal_status", st | {"status": "sold"}, "bad_payload"
    )  # buyer, price
    h.rejected(
        SVC,
        "svcp",
        "disposal_status",
        st | {"status": "sold", "buyer": "amc", "price_cents": 1},
        "bad_listing_state",
    )
    h.rejected(SVC, "lender-a", "disposal_status", st | {"status": "bidding"}, "not_permitted")
    h.rejected(SVC, "lender-b", "disposal_status", st | {"status": "withdrawn"}, "not_permitted")
    h.rejected(
        SVC,
        "svcp",
        "disposal_status",
        {"lender": "lender-a", "listing_id": "D9", "status": "bidding"},
        "listing_not_found",
    )
    h.ok(SVC, "svcp", "disposal_status", st | {"status": "bidding"})
    h.ok(
        SVC,
        "svcp",
        "disposal_status",
        st | {"status": "sold", "buyer": "广东某资产管理公司", "price_cents": 35_000},
    )
    assert asset_state(h, "lender-a", "N1") == "disposed"
    assert read_value(h.net.states[SVC], listing_key("lender-a", "D1"))["price_cents"] == 35_000
    h.rejected(SVC, "svcp", "disposal_status", st | {"status": "failed"}, "bad_listing_state")
    # a disposed loan cannot be registered again by the seller
    h.rejected(
        SVC,
        "lender-a",
        "asset_register",
        reg(h, "N2", "A3", state="overdue"),
        "asset_already_registered",
    )


def test_lender_withdraws_own_listing(h: Harness) -> None:
    h.ok(SVC, "lender-a", "asset_register", reg(h, "N1", "A3", state="overdue"))
    h.ok(
        SVC,
        "lender-a",
        "disposal_list",
        {"listing_id": "D1", "asset_id": "N1", "reserve_price_cents": 1},
    )
    h.ok(
        SVC,
        "lender-a",
        "disposal_status",
        {"lender": "lender-a", "listing_id": "D1", "status": "withdrawn"},
    )
    assert asset_state(h, "lender-a", "N1") == "registered"
