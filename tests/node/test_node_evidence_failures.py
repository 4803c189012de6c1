"""Evidence verification over five real node processes: the failure matrix, the
verification API and case filing with per-code verification results.

One network (module scope). A lender reports records; their receipts are then checked
(a) offline by the ``wulian verify`` process (exit code + one line naming the failing
check) and (b) by a node through ``POST /v1/evidence/{code}/verify`` and the batch
route ``POST /v1/evidence/verify`` — genuine, tampered record, flipped proof byte,
forged certificate signature, and a receipt certified by another network's
validators. Case filings on the judicial channel record verified / not_anchored /
mismatch per cited code (a 50-case batch here; the 2,000-case measurement is slow).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clients import Client, Evidence, LoanEvent, PseudonymKey, Record, write_pseudonym_key_file
from crosschain.receipt import record_commitment
from ledger.certificate import commit_vote_message
from ledger.evidence_code import code_for_leaf
from ledger.hashing import TAG_COMMIT_VOTE
from ledger.keyfile import load_key_file
from node.localnet import LocalNetwork, admit_lenders
from tests.node.netfixture import TestNetwork, free_base_port, start_network

pytestmark = [
    pytest.mark.network,
    pytest.mark.xdist_group("evidence-failures-network"),
    pytest.mark.timeout(600),  # the module network's setup counts toward the first test
]

PSEUDONYM = PseudonymKey(bytes(range(96, 128)))
ID_A = "11010519491231002X"
N_RECORDS = 6
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Anchored:
    net: TestNetwork
    evidence: list[Evidence]
    other_genesis: Path
    other_keys: Path


@pytest.fixture(scope="module")
def anchored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anchored]:
    root = tmp_path_factory.mktemp("evfail")
    network = start_network(root / "net", rules="channels")
    try:
        write_pseudonym_key_file(network.data_dir / "keys" / "pseudonym.key", PSEUDONYM)
        admit_lenders(network.data_dir, network.genesis, ["lender1", "lender2"])
        with lender(network, root / "store") as c:
            st = c.report([event(c, f"EF-{i}") for i in range(N_RECORDS)])
            assert st.valid
            evidence = [c.evidence(st.tx_id, index=i) for i in range(N_RECORDS)]
        # another network (never started): its genesis and validator keys
        other = LocalNetwork.prepare(root / "other", base_port=free_base_port())
        yield Anchored(network, evidence, other.data_dir / "genesis.json", other.data_dir / "keys")
    finally:
        network.stop()


def lender(net: TestNetwork, store: Path, org: str = "lender1") -> Client:
    return Client(
        genesis=net.genesis,
        key_file=net.data_dir / "keys" / f"{org}.key",
        store=store,
        pseudonym_key=PSEUDONYM,
        evidence_timeout=90.0,
    )


def event(client: Client, loan: str) -> LoanEvent:
    return LoanEvent(
        report_id=f"{loan}-contract", loan_id=loan, borrower_ref=client.borrower_ref(ID_A),
        event="contract", amount_cents=100_000, rate_bp=1500, term_months=12,
        event_time_ms=int(time.time() * 1000), details={"contract_no": f"HT-{loan}"},
    )  # fmt: skip


# -- receipt mutations ---------------------------------------------------------------


def flip_hex(s: str, at: int = 0) -> str:
    return s[:at] + ("0" if s[at] != "0" else "1") + s[at + 1 :]


def flipped_proof(receipt: dict[str, Any]) -> dict[str, Any]:
    r = copy.deepcopy(receipt)
    assert r["record"]["proof"], "needs a record proof (several records per block)"
    r["record"]["proof"][0] = flip_hex(r["record"]["proof"][0])
    return r


def forged_signature(receipt: dict[str, Any]) -> dict[str, Any]:
    r = copy.deepcopy(receipt)
    votes = r["judicial"]["certificate"]["votes"]
    votes[0][1] = flip_hex(votes[0][1], 10)
    return r


def other_network_certificate(receipt: dict[str, Any], keys: Path) -> dict[str, Any]:
    """The judicial certificate re-signed by another network's validators (same ids):
    what a receipt made on another network looks like to this one."""
    r = copy.deepcopy(receipt)
    cert = r["judicial"]["certificate"]
    msg = commit_vote_message(cert["ch"], cert["h"], cert["view"], bytes.fromhex(cert["b"]))
    cert["votes"] = [
        [vid, load_key_file(keys / f"{vid}.key").signer.sign(TAG_COMMIT_VOTE, msg).hex()]
        for vid, _ in cert["votes"]
    ]
    return r


def tampered(record: Record) -> Record:
    data = bytearray(record.data)
    data[-1] ^= 1
    return Record(bytes(data), record.salt)


# -- offline: the `wulian verify` process -----------------------------------------------


WULIAN = Path(sys.executable).with_name("wulian")


def wulian_verify(
    tmp: Path,
    receipt: dict[str, Any],
    record: Record,
    genesis: Path,
    capsys: pytest.CaptureFixture[str] | None = None,
) -> tuple[int, str]:
    """``wulian verify --receipt R.json --data RECORD.json --genesis G``: the installed
    command as a real process, or (with ``capsys``: a process start costs seconds on a
    loaded machine) the same CLI entry point in-process. Returns the exit code and the
    single output line."""
    rpath, dpath = tmp / "R.json", tmp / "RECORD.json"
    rpath.write_text(json.dumps(receipt))
    dpath.write_text(json.dumps({"format": "wulian-record/1", "data": record.data.hex(),
                                 "salt": record.salt.hex()}))  # fmt: skip
    argv = ["verify", "--receipt", str(rpath), "--data", str(dpath), "--genesis", str(genesis)]
    if capsys is None:
        done = subprocess.run(
            [str(WULIAN), *argv], capture_output=True, text=True, timeout=120, cwd=ROOT
        )
        code, text = done.returncode, done.stdout + done.stderr
    else:
        from clients.cli import main

        capsys.readouterr()
        code = main(argv)
        out, err = capsys.readouterr()
        text = out + err
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return code, lines[0]


def test_offline_cli_failure_matrix(
    anchored: Anchored, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ev = anchored.evidence[1]
    assert ev.record is not None
    genesis = anchored.net.data_dir / "genesis.json"
    receipt = dict(ev.receipt)
    code, line = wulian_verify(tmp_path, receipt, ev.record, genesis)
    assert code == 0 and "receipt and record verified" in line, line
    cases = [
        (receipt, tampered(ev.record), genesis, "commitment: commitment_mismatch"),
        (flipped_proof(receipt), ev.record, genesis, "record_inclusion: bad_proof"),
        (forged_signature(receipt), ev.record, genesis, "judicial_certificate: bad_certificate"),
        (
            other_network_certificate(receipt, anchored.other_keys),
            ev.record,
            genesis,
            "judicial_certificate: bad_certificate",
        ),
        (receipt, ev.record, anchored.other_genesis, "judicial_certificate: bad_certificate"),
    ]
    for bad_receipt, record, trust, expected in cases:
        code, line = wulian_verify(tmp_path, bad_receipt, record, trust, capsys)
        assert code == 1 and line.startswith("wulian: error: verification failed: "), line
        assert expected in line, (expected, line)


# -- the node's verification API ---------------------------------------------------------


def post_json(net: TestNetwork, i: int, org: str, path: str, doc: Any) -> Any:
    client = net.client(i, org)
    return client.request("POST", path, json.dumps(doc).encode(), content_type="application/json")


def with_record(record: Record) -> dict[str, str]:
    return {"record": record.data.hex(), "salt": record.salt.hex()}


def failing(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["name"], c["reason"]) for c in result["checks"] if not c["ok"]]


def test_verify_api_answers_verified_mismatch_not_anchored(anchored: Anchored) -> None:
    net = anchored.net
    ev = anchored.evidence[0]
    assert ev.record is not None
    path = f"/v1/evidence/{ev.code}/verify"

    r = post_json(net, 2, "court", path, with_record(ev.record))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["result"] == "verified" and doc["code"] == ev.code
    assert doc["supervision_time_ms"] == ev.report.supervision_time_ms
    assert doc["judicial_time_ms"] == ev.report.anchored_time_ms
    assert doc["judicial_time_ms"] >= doc["supervision_time_ms"] > 0
    assert [c["name"] for c in doc["checks"]][-1] == "commitment"
    assert all(c["ok"] for c in doc["checks"]) and len(doc["checks"]) == 9

    # the commitment alone, from the bureau and from the owning lender
    for i, org in ((0, "bureau"), (3, "lender1")):
        r = post_json(net, i, org, path, {"commitment": ev.record.commitment.hex()})
        assert r.status_code == 200 and r.json()["result"] == "verified", (org, r.text)

    r = post_json(net, 1, "court", path, with_record(tampered(ev.record)))
    doc = r.json()
    assert doc["result"] == "mismatch" and failing(doc) == [("commitment", "commitment_mismatch")]
    assert doc["anchored_commitment"] == ev.record.commitment.hex()

    # a well-formed code no record has; another lender's record (not visible to it)
    unknown = str(code_for_leaf(b"no such record leaf"))
    r = post_json(net, 1, "court", f"/v1/evidence/{unknown}/verify", with_record(ev.record))
    assert r.status_code == 200 and r.json()["result"] == "not_anchored", r.text
    r = post_json(net, 4, "lender2", path, with_record(ev.record))
    assert r.status_code == 200 and r.json()["result"] == "not_anchored", r.text


def test_verify_api_failure_matrix_on_held_receipts(anchored: Anchored) -> None:
    """A receipt the caller holds, checked by the node against its genesis."""
    net = anchored.net
    ev = anchored.evidence[2]
    assert ev.record is not None
    receipt = dict(ev.receipt)
    path = f"/v1/evidence/{ev.code}/verify"
    cases = [
        (receipt, ev.record, "verified", []),
        (receipt, tampered(ev.record), "mismatch", [("commitment", "commitment_mismatch")]),
        (flipped_proof(receipt), ev.record, "chain_failed", [("record_inclusion", "bad_proof")]),
        (
            forged_signature(receipt),
            ev.record,
            "chain_failed",
            [("judicial_certificate", "bad_certificate")],
        ),
        (
            other_network_certificate(receipt, anchored.other_keys),
            ev.record,
            "chain_failed",
            [("judicial_certificate", "bad_certificate")],
        ),
    ]
    for bad_receipt, record, result, failures in cases:
        r = post_json(net, 0, "court", path, {**with_record(record), "receipt": bad_receipt})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert (doc["result"], failing(doc)) == (result, failures), doc
    # the same checks in one batch call, results in order
    items = [{"code": ev.code, **with_record(rec), "receipt": rc} for rc, rec, _, _ in cases] + [
        {"code": "WL-NOT-A-CODE", "commitment": "00" * 32}
    ]
    r = post_json(net, 1, "court", "/v1/evidence/verify", {"items": items})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [d["result"] for d in results] == [
        "verified", "mismatch", "chain_failed", "chain_failed", "chain_failed",
        "bad_evidence_code",
    ]  # fmt: skip


def test_verify_api_input_errors(anchored: Anchored) -> None:
    net = anchored.net
    ev = anchored.evidence[0]
    assert ev.record is not None
    path = f"/v1/evidence/{ev.code}/verify"
    bad_bodies = [
        ({"record": ev.record.data.hex()}, "bad_schema"),  # no salt
        ({}, "bad_schema"),
        ({"commitment": "zz" * 32}, "bad_schema"),
        ({"commitment": "00" * 32, **with_record(ev.record)}, "bad_schema"),  # both forms
        ({"commitment": "00" * 32, "extra": 1}, "bad_schema"),
    ]
    for body, code in bad_bodies:
        r = post_json(net, 0, "court", path, body)
        assert r.status_code == 400 and r.json()["error"]["code"] == code, (body, r.text)
    client = net.client(0, "court")
    r = client.request("POST", path, b"{not json", content_type="application/json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_json"
    nested = b"[" * 100_000 + b"]" * 100_000  # json.loads: RecursionError, was a 500
    for route in (path, "/v1/evidence/verify"):
        r = client.request("POST", route, nested, content_type="application/json")
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_json", route
    typo = ev.code[:-1] + ("0" if ev.code[-1] != "0" else "1")
    r = post_json(net, 0, "court", f"/v1/evidence/{typo}/verify", {"commitment": "00" * 32})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_evidence_code"
    r = post_json(net, 0, "court", "/v1/evidence/verify", {"items": []})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_schema"
    too_many = [{"code": ev.code, "commitment": "00" * 32}] * 257
    r = post_json(net, 0, "court", "/v1/evidence/verify", {"items": too_many})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_schema"
    r = client.request("POST", path, b"\x80", content_type="application/msgpack")
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    # unsigned: refused
    r = client.request("POST", path, b'{"commitment": "' + b"00" * 32 + b'"}', sign=False,
                       content_type="application/json")  # fmt: skip
    assert r.status_code == 401


def test_sdk_check_evidence(anchored: Anchored, tmp_path: Path) -> None:
    ev, ev2 = anchored.evidence[3], anchored.evidence[4]
    assert ev.record is not None and ev2.record is not None
    with lender(anchored.net, tmp_path / "s") as c:
        one = c.check_evidence(ev.code, ev.record)
        assert one.verified and one.judicial_time_ms is not None
        assert len(one.checks) == 9
        many = c.check_evidence_batch(
            [(ev.code, ev.record.commitment), (ev2.code, tampered(ev2.record))]
        )
        assert [m.result for m in many] == ["verified", "mismatch"]


# -- case filing: per-code verification results -------------------------------------------


def cases_payload(
    anchored: Anchored, n: int, prefix: str, *, bad_every: int = 0
) -> tuple[dict[str, Any], list[list[str]]]:
    """``n`` cases citing the anchored records; with ``bad_every``, every such case
    also cites a tampered digest and an unanchored code. Returns the payload and the
    expected results per case."""
    pool = anchored.evidence
    unknown = str(code_for_leaf(b"never anchored"))
    cases, expected = [], []
    for i in range(n):
        ev = pool[i % len(pool)]
        assert ev.record is not None
        evidence: list[dict[str, Any]] = [{"code": ev.code, "digest": ev.record.commitment}]
        want = ["verified"]
        if bad_every and i % bad_every == 0:
            other = pool[(i + 1) % len(pool)]
            evidence.append({"code": other.code, "digest": record_commitment(b"x", b"y")})
            evidence.append({"code": unknown})
            want += ["mismatch", "not_anchored"]
        cases.append({
            "case_id": f"{prefix}-{i}", "loan_id": f"L-{i}", "defendant_ref": bytes(32),
            "claim_cents": 100_000 + i, "cause": "小额借款合同纠纷", "evidence": evidence,
        })  # fmt: skip
        expected.append(want)
    return {"cases": cases}, expected


def test_case_filing_batch_records_each_codes_result(anchored: Anchored) -> None:
    net = anchored.net
    client = net.client(1, "lender1")
    payload, expected = cases_payload(anchored, 50, "CF", bad_every=10)
    tx = client.tx("judicial", "case_file_batch", payload)
    r = client.submit("judicial", tx, wait_ms=60_000)
    assert r.status_code == 200, r.text
    outcome = r.json()["outcome"]
    assert outcome["valid"], outcome
    result = outcome["result"]
    assert result["cases"] == 50 and result["verified"] == 45
    got = [[e["result"] for e in c["evidence"]] for c in result["results"]]
    assert got == expected
    assert [c["evidence_status"] for c in result["results"]][:2] == ["failed", "verified"]

    # a single filing; a mistyped code refuses the filing (nothing kept)
    ev = anchored.evidence[0]
    assert ev.record is not None
    single = {"case_id": "CF-single", "loan_id": "L", "defendant_ref": bytes(32),
              "claim_cents": 1, "cause": "借款", "evidence": [{"code": ev.code}]}  # fmt: skip
    r = client.submit("judicial", client.tx("judicial", "case_file", single), wait_ms=60_000)
    assert r.json()["outcome"]["result"]["evidence_status"] == "verified", r.text
    typo = ev.code[:-1] + ("0" if ev.code[-1] != "0" else "1")
    bad = single | {"case_id": "CF-typo", "evidence": [{"code": typo}]}
    r = client.submit("judicial", client.tx("judicial", "case_file", bad), wait_ms=60_000)
    body = r.json()
    assert body.get("outcome", {}).get("code") == "bad_evidence_code" or (
        body.get("error", {}).get("code") == "invalid_transaction"
    ), body


@pytest.mark.slow
def test_case_filing_2000_cases_throughput(
    anchored: Anchored, record_property: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """2,000 cases (the Laoshan court's batch) in one call: four case_file_batch
    transactions of 500 through the batch route, waited for until committed."""
    net = anchored.net
    client = net.client(2, "lender1")
    txs, expected = [], []
    for k in range(4):
        payload, want = cases_payload(anchored, 500, f"BIG{k}", bad_every=50)
        txs.append(client.tx("judicial", "case_file_batch", payload))
        expected += want
    start = time.monotonic()
    r = client.submit_batch("judicial", txs, wait_ms=60_000)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    deadline = time.monotonic() + 300
    while any(x.get("status") != "committed" for x in results):
        assert time.monotonic() < deadline, results
        time.sleep(0.2)
        results = [
            client.get(f"/v1/channels/judicial/transactions/{t.tx_id.hex()}").json() for t in txs
        ]
    elapsed = time.monotonic() - start
    got = [
        [e["result"] for e in case["evidence"]]
        for x in results
        for case in x["outcome"]["result"]["results"]
    ]
    assert got == expected
    record_property("case_filing_2000_seconds", round(elapsed, 2))
    with capsys.disabled():
        print(f"\n2,000 cases filed and verified in {elapsed:.2f} s ({2000 / elapsed:.0f} cases/s)")
