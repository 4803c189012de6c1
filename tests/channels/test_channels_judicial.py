"""司法链: case filing (single, batch, with an installed evidence verifier), publications."""

from __future__ import annotations

from typing import Any

from channels.errors import Rejection
from channels.judicial import (
    CaseEvidence,
    EvidenceResult,
    case_key,
    judicial_rules,
    publication_key,
)
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
    assert out.result is not None
    assert (out.result["cases"], out.result["verified"], len(out.result["results"])) == (
        200,
        0,
        200,
    )
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


def test_installed_evidence_verifier_records_a_result_per_code() -> None:
    def verify(
        state: StateReader, lender: str, ev: CaseEvidence, ctx: object
    ) -> EvidenceResult | Rejection:
        if ev.code == "EV-BAD":
            return Rejection("bad_evidence_code", "not a code")
        anchored = state.get(b"jud/evidence/" + ev.code.encode())
        if anchored is None:
            return EvidenceResult("not_anchored", "no such evidence code")
        if ev.digest is not None and anchored != ev.digest:
            return EvidenceResult("mismatch", "digest differs from the anchored one", 3, 4, 5)
        return EvidenceResult("verified", "", 3, 4, 5)

    rules = {**CHANNEL_RULES, JUD: judicial_rules(verify)}
    h = Harness(rules=rules)
    h.net.states[JUD].apply_writes([(b"jud/evidence/EV-1", b"\x00" * 32)])
    out = h.ok(JUD, "lender-a", "case_file", case("C1", "EV-1"))
    assert out.result == {
        "case_id": "C1",
        "evidence_status": "verified",
        "evidence": [{"code": "EV-1", "result": "verified"}],
    }
    stored = read_value(h.net.states[JUD], case_key("lender-a", "C1"))
    assert stored["evidence_status"] == "verified"
    assert stored["evidence"][0] | {"digest": b""} == {
        "code": "EV-1", "digest": b"", "result": "verified", "sh": 3, "st": 4, "jh": 5,
    }  # fmt: skip

    # an unknown code and a tampered digest are recorded, not refused
    tampered = case("C2", "EV-1", "EV-2")
    tampered["evidence"][0]["digest"] = b"\x09" * 32
    out = h.ok(JUD, "lender-a", "case_file", tampered)
    assert out.result is not None and out.result["evidence_status"] == "failed"
    assert [e["result"] for e in out.result["evidence"]] == ["mismatch", "not_anchored"]
    stored = read_value(h.net.states[JUD], case_key("lender-a", "C2"))
    assert [e["result"] for e in stored["evidence"]] == ["mismatch", "not_anchored"]

    # no digest: anchored is enough
    no_digest = case("C3", "EV-1")
    del no_digest["evidence"][0]["digest"]
    assert h.ok(JUD, "lender-a", "case_file", no_digest).result["evidence_status"] == "verified"  # type: ignore[index]

    # a batch: one result per case, in order
    out = h.ok(
        JUD, "lender-a", "case_file_batch", {"cases": [case("C4", "EV-1"), case("C5", "EV-9")]}
    )
    assert out.result is not None
    assert out.result["cases"] == 2 and out.result["verified"] == 1
    assert [r["case_id"] for r in out.result["results"]] == ["C4", "C5"]
    assert [r["evidence_status"] for r in out.result["results"]] == ["verified", "failed"]

    # an unreadable code rejects the filing (atomic: nothing of the batch is kept)
    h.rejected(
        JUD,
        "lender-a",
        "case_file_batch",
        {"cases": [case("C6", "EV-1"), case("C7", "EV-BAD")]},
        "bad_evidence_code",
    )


def test_without_a_verifier_evidence_is_unverified() -> None:
    h = Harness()
    # every Crockford check symbol is accepted in a cited code (* ~ $ = included)
    stars = case("U0", *(f"WL-95P8-N4X9-ZTQF-YBKG-{c}" for c in "*~$=U7"))
    assert h.ok(JUD, "lender-a", "case_file", stars).result["evidence_status"] == "unverified"  # type: ignore[index]
    out = h.ok(JUD, "lender-a", "case_file", case("U1", "EV-1"))
    assert out.result is not None and out.result["evidence_status"] == "unverified"
    assert read_value(h.net.states[JUD], case_key("lender-a", "U1"))["evidence"][0]["result"] == (
        "unverified"
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
