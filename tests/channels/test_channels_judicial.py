"""司法链: case filing (single, batch, with an installed evidence verifier), publications."""

from __future__ import annotations

from typing import Any

from channels.errors import Rejection
from channels.judicial import CaseEvidence, case_key, judicial_rules, publication_key
from channels.registry import CHANNEL_RULES
from channels.state import StateReader, read_value
from tests.channels.helpers import Harness, bref

JUD = "judicial"


def case(case_id: str, *codes: str, claim: int = 150_000) -> dict[str, Any]:
    return {
        "case_id": case_id,
        "loan_id": f"loan-{case_id}",
        "defendant_ref": bref(3),
        "claim_cents": claim,
        "cause": "小额借款合同纠纷",
        "evidence": [
            {"code": c, "digest": bytes([i]) * 32} for i, c in enumerate(codes or ("EV-0001",))
        ],
    }


def test_case_file_single() -> None:
    h = Harness()
    h.ok(JUD, "lender-a", "case_file", case("C1", "EV-AAAA-0001", "EV-AAAA-0002"))
    rec = read_value(h.net.states[JUD], case_key("lender-a", "C1"))
    assert rec["evidence_status"] == "unverified" and rec["status"] == "filed"
    assert [e["code"] for e in rec["evidence"]] == ["EV-AAAA-0001", "EV-AAAA-0002"]
    h.rejected(JUD, "lender-a", "case_file", case("C1"), "duplicate_case_id")
    h.ok(JUD, "lender-b", "case_file", case("C1"))  # case ids are per lender
    h.rejected(JUD, "gzjr", "case_file", case("C2"), "role_not_permitted")
    h.rejected(JUD, "lender-a", "case_file", case("C2") | {"evidence": []}, "bad_payload")
    h.rejected(JUD, "lender-a", "case_file", case("C2", "EV 1"), "bad_payload")
    h.rejected(JUD, "lender-a", "case_file", case("C2", "EV-1", "EV-1"), "bad_payload")
    h.rejected(JUD, "lender-a", "case_file", case("C2", claim=0), "bad_payload")


def test_case_file_batch_is_atomic() -> None:
    h = Harness()
    out = h.ok(JUD, "lender-a", "case_file_batch", {"cases": [case(f"B{i}") for i in range(200)]})
    assert out.result == {"cases": 200}
    assert read_value(h.net.states[JUD], case_key("lender-a", "B199"))["i"] == 199
    mixed = [case("N1"), case("B5")]
    out = h.rejected(JUD, "lender-a", "case_file_batch", {"cases": mixed}, "duplicate_case_id")
    assert out.message.startswith("case 1 (B5)")
    h.rejected(
        JUD, "lender-a", "case_file_batch", {"cases": [case("D"), case("D")]}, "duplicate_case_id"
    )
    h.rejected(JUD, "lender-a", "case_file_batch", {"cases": []}, "bad_payload")
    h.rejected(
        JUD,
        "lender-a",
        "case_file_batch",
        {"cases": [case(f"X{i}") for i in range(501)]},
        "bad_payload",
    )


def test_installed_evidence_verifier_is_applied() -> None:
    def verify(state: StateReader, lender: str, ev: CaseEvidence, ctx: object) -> Rejection | None:
        anchored = state.get(b"jud/evidence/" + ev.code.encode())
        if anchored is None:
            return Rejection("evidence_not_found", "no such evidence code")
        if anchored != ev.digest:
            return Rejection("evidence_mismatch", "digest differs from the anchored one")
        return None

    rules = {**CHANNEL_RULES, JUD: judicial_rules(verify)}
    h = Harness(rules=rules)
    h.net.states[JUD].apply_writes([(b"jud/evidence/EV-1", b"\x00" * 32)])
    h.ok(JUD, "lender-a", "case_file", case("C1", "EV-1"))
    assert (
        read_value(h.net.states[JUD], case_key("lender-a", "C1"))["evidence_status"] == "verified"
    )
    out = h.rejected(JUD, "lender-a", "case_file", case("C2", "EV-2"), "evidence_not_found")
    assert "EV-2" in out.message
    tampered = case("C3", "EV-1")
    tampered["evidence"][0]["digest"] = b"\x09" * 32
    h.rejected(JUD, "lender-a", "case_file", tampered, "evidence_mismatch")
    h.rejected(
        JUD,
        "lender-a",
        "case_file_batch",
        {"cases": [case("C4", "EV-1"), case("C5", "EV-9")]},
        "evidence_not_found",
    )


def test_court_publication() -> None:
    h = Harness()
    pub = {
        "pub_id": "TC-2020-01",
        "kind": "typical_case",
        "title": "互联网小额借款合同纠纷典型案例",
        "digest": b"\x07" * 32,
        "metadata": {"court": "广州互联网法院", "year": "2020"},
    }
    h.ok(JUD, "gzcourt", "court_publication", pub)
    assert read_value(h.net.states[JUD], publication_key("TC-2020-01"))["by"] == "gzcourt"
    h.rejected(JUD, "gzcourt", "court_publication", pub, "duplicate_publication")
    h.rejected(JUD, "gzjr", "court_publication", pub | {"pub_id": "x"}, "role_not_permitted")
    h.rejected(
        JUD, "gzcourt", "court_publication", pub | {"pub_id": "y", "kind": "gossip"}, "bad_payload"
    )
    h.rejected(
        JUD,
        "gzcourt",
        "court_publication",
        pub | {"pub_id": "y", "metadata": {"Bad Key": "v"}},
        "bad_payload",
    )
    h.rejected(
        JUD, "gzcourt", "court_publication", pub | {"pub_id": "y", "digest": b"1"}, "bad_payload"
    )
