"""征信链: syncing from supervision, agency entries, firm profiles, scoped queries."""

from __future__ import annotations

from typing import Any

import pytest

from channels.context import DAY_MS, NetworkParams
from channels.credit import answer_key, synced_height
from channels.state import read_value
from tests.channels.helpers import Harness, bref

CR = "credit"
SUP = "supervision"


def make(**params: int) -> Harness:
    h = Harness(NetworkParams(**params))
    for lender in ("lender-a", "lender-b", "lender-c"):
        h.admit(lender)
    return h


def sync(h: Harness) -> dict[str, Any]:
    out = h.ok(CR, "credit", "credit_sync", {"source_height": h.height(SUP)})
    assert out.result is not None
    return dict(out.result)


def query(h: Harness, lender: str, qid: str, borrower: int = 7) -> dict[str, Any]:
    out = h.ok(
        CR,
        lender,
        "credit_query",
        {"query_id": qid, "borrower_ref": bref(borrower), "purpose": "loan_application"},
    )
    assert out.result is not None
    return dict(out.result)


def test_sync_and_multi_lender_answer_has_counts_only() -> None:
    h = make()
    h.lend("lender-a", "A1", 100_000, borrower=7)
    h.lend("lender-b", "B1", 250_000, borrower=7)
    h.lend("lender-b", "B2", 50_000, borrower=7)
    h.ok(SUP, "lender-b", "loan_event", h.event("B2", "overdue", 10_000, borrower=7))
    h.lend("lender-c", "C1", 70_000, borrower=8)
    result = sync(h)
    assert result == {"from_height": 0, "to_height": h.height(SUP), "facts": 3 + 8 + 1}
    ans = query(h, "lender-c", "q1")
    assert ans["lenders_with_open_loans"] == 2
    assert ans["other_lenders_with_open_loans"] == 2 and ans["asker_has_open_loans"] is False
    assert (ans["open_loans"], ans["overdue_loans"], ans["total_outstanding_cents"]) == (
        3,
        1,
        400_000,
    )
    assert ans["as_of_supervision_height"] == h.height(SUP)
    # never another lender's identity
    flat = repr(ans)
    assert "lender-a" not in flat and "lender-b" not in flat
    stored = read_value(h.net.states[CR], answer_key("lender-c", "q1"))
    assert stored == ans


def test_incremental_sync_and_stale_sync() -> None:
    h = make()
    h.lend("lender-a", "A1", 100_000, borrower=7)
    sync(h)
    h.rejected(CR, "credit", "credit_sync", {"source_height": h.height(SUP)}, "stale_sync")
    h.ok(SUP, "lender-a", "loan_event", h.event("A1", "settlement", 100_000, borrower=7))
    second = sync(h)
    assert second["facts"] == 1 and second["from_height"] == h.height(SUP) - 1
    assert query(h, "lender-b", "q")["lenders_with_open_loans"] == 0
    assert synced_height(h.net.states[CR]) == h.height(SUP)


def test_sync_waits_for_supervision_and_is_bounded() -> None:
    h = make(credit_sync_max_facts=5)
    from channels.errors import NotYetCommitted

    with pytest.raises(NotYetCommitted):
        h.send(CR, "credit", "credit_sync", {"source_height": h.height(SUP) + 1})
    h.rejected(CR, "credit", "credit_sync", {"source_height": 0}, "bad_payload")
    h.lend("lender-a", "A1", 100_000)
    h.lend("lender-a", "A2", 100_000)
    out = h.rejected(
        CR, "credit", "credit_sync", {"source_height": h.height(SUP)}, "sync_range_too_large"
    )
    assert "smaller steps" in out.message
    h.ok(CR, "credit", "credit_sync", {"source_height": 3})
    h.ok(CR, "credit", "credit_sync", {"source_height": h.height(SUP)})
    h.rejected(CR, "lender-a", "credit_sync", {"source_height": 99}, "role_not_permitted")


def test_query_rules() -> None:
    h = make(credit_query_daily_limit=2)
    q = {"query_id": "q1", "borrower_ref": bref(7), "purpose": "loan_application"}
    h.rejected(CR, "lender-a", "credit_query", q, "lender_not_admitted")  # nothing synced yet
    sync(h)
    h.ok(CR, "lender-a", "credit_query", q)
    h.rejected(CR, "lender-a", "credit_query", q, "duplicate_query_id")
    h.ok(CR, "lender-a", "credit_query", q | {"query_id": "q2"})
    h.rejected(CR, "lender-a", "credit_query", q | {"query_id": "q3"}, "query_limit_exceeded")
    h.advance(DAY_MS)
    h.ok(CR, "lender-a", "credit_query", q | {"query_id": "q3"})
    h.rejected(
        CR,
        "lender-a",
        "credit_query",
        q | {"query_id": "q4", "purpose": "curiosity"},
        "bad_payload",
    )
    h.rejected(CR, "gzjr", "credit_query", q | {"query_id": "q5"}, "role_not_permitted")
    h.ok(SUP, "gzjr", "lender_suspend", {"lender": "lender-b", "reason": "x"})
    sync(h)
    h.rejected(CR, "lender-b", "credit_query", q | {"query_id": "q6"}, "lender_not_admitted")


def test_recent_queries_by_other_lenders_are_counted() -> None:
    h = make()
    sync(h)
    query(h, "lender-a", "a1")
    query(h, "lender-a", "a2")
    query(h, "lender-b", "b1")
    assert query(h, "lender-c", "c1")["recent_queries_by_others"] == 3
    assert query(h, "lender-a", "a3")["recent_queries_by_others"] == 2
    h.advance(31 * DAY_MS)
    assert query(h, "lender-b", "b2")["recent_queries_by_others"] == 0


def entry(eid: str, kind: str = "court_judgment", borrower: int = 7) -> dict[str, Any]:
    return {
        "entry_id": eid,
        "borrower_ref": bref(borrower),
        "kind": kind,
        "amount_cents": 20_000,
        "digest": b"\x03" * 32,
        "effective_ms": 1_590_000_000_000,
    }


def test_agency_entries_and_revocation() -> None:
    h = make()
    sync(h)
    h.ok(CR, "credit", "credit_entry", entry("E1"))
    h.ok(CR, "credit", "credit_entry", entry("E2", "dishonest_debtor"))
    h.rejected(CR, "credit", "credit_entry", entry("E1"), "duplicate_entry_id")
    h.rejected(CR, "credit", "credit_entry", entry("E3", "rumour"), "bad_payload")
    h.rejected(CR, "lender-a", "credit_entry", entry("E4"), "role_not_permitted")
    assert query(h, "lender-a", "q1")["agency_entries"] == {
        "court_judgment": 1,
        "dishonest_debtor": 1,
    }
    h.ok(CR, "credit", "credit_entry_revoke", {"entry_id": "E2", "reason": "dispute upheld"})
    h.rejected(
        CR, "credit", "credit_entry_revoke", {"entry_id": "E2", "reason": "x"}, "already_revoked"
    )
    h.rejected(
        CR, "credit", "credit_entry_revoke", {"entry_id": "E9", "reason": "x"}, "entry_not_found"
    )
    assert query(h, "lender-a", "q2")["agency_entries"] == {"court_judgment": 1}


def firm(version: int, rating: str = "BBB") -> dict[str, Any]:
    return {
        "firm_id": "91440101MA5CXXXX1X",
        "name": "广州某某贸易有限公司",
        "size": "micro",
        "rating": rating,
        "score": 640,
        "report_digest": b"\x04" * 32,
        "valid_until_ms": 1_640_000_000_000,
        "version": version,
    }


def test_firm_profiles_are_versioned() -> None:
    h = make()
    h.ok(CR, "credit", "firm_profile", firm(1))
    h.rejected(CR, "credit", "firm_profile", firm(1, "A"), "version_conflict")
    h.rejected(CR, "credit", "firm_profile", firm(3, "A"), "version_conflict")
    h.ok(CR, "credit", "firm_profile", firm(2, "A"))
    assert read_value(h.net.states[CR], b"cred/firm/91440101MA5CXXXX1X")["rating"] == "A"
    h.rejected(CR, "credit", "firm_profile", firm(3) | {"firm_id": "123"}, "bad_payload")
    h.rejected(CR, "credit", "firm_profile", firm(3) | {"score": 1001}, "bad_payload")
    h.rejected(CR, "lender-a", "firm_profile", firm(3), "role_not_permitted")
