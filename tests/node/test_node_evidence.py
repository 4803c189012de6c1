"""Cross-chain evidence end to end, across five real node processes (production rules).

A lender reports loan events through the SDK; every node's relays anchor the committed
supervision blocks on the judicial chain and acknowledge them back; the status then
carries the evidence codes, the receipt route serves the receipt, and the receipt
verifies offline against the genesis (and fails its ``commitment`` check for a
tampered record). The explorer is mounted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clients import Client, LoanEvent, PseudonymKey, write_pseudonym_key_file
from crosschain.receipt import verify_receipt
from ledger.evidence_code import parse as parse_code
from node.localnet import admit_lenders
from tests.node.netfixture import TestNetwork, start_network

pytestmark = [pytest.mark.network, pytest.mark.xdist_group("evidence-network")]

PSEUDONYM = PseudonymKey(bytes(range(64, 96)))
ID_A = "11010519491231002X"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNetwork]:
    network = start_network(tmp_path_factory.mktemp("evnet"), rules="channels")
    try:
        write_pseudonym_key_file(network.data_dir / "keys" / "pseudonym.key", PSEUDONYM)
        admit_lenders(network.data_dir, network.genesis, ["lender1", "lender2"])
        yield network
    finally:
        network.stop()


def lender(net: TestNetwork, store: Path, org: str = "lender1") -> Client:
    return Client(
        genesis=net.genesis,
        key_file=net.data_dir / "keys" / f"{org}.key",
        store=store,
        pseudonym_key=PSEUDONYM,
        evidence_timeout=60.0,
    )


def event(client: Client, loan: str, kind: str = "contract") -> LoanEvent:
    return LoanEvent(
        report_id=f"{loan}-{kind}", loan_id=loan, borrower_ref=client.borrower_ref(ID_A),
        event=kind, amount_cents=100_000, rate_bp=1500, term_months=12,
        event_time_ms=int(time.time() * 1000), details={"contract_no": f"HT-{loan}"},
    )  # fmt: skip


def test_loan_events_get_verifiable_receipts(net: TestNetwork, tmp_path: Path) -> None:
    with lender(net, tmp_path / "s") as c:
        single = c.report(event(c, "EV-1"))
        batch = c.report([event(c, "EV-2"), event(c, "EV-3")])
        assert single.valid and batch.valid

        ev = c.evidence(single.tx_id, index=0)
        assert ev.report.ok, ev.report.to_json()
        ev_b = c.evidence(batch.tx_id, index=1)
        assert ev_b.report.ok, ev_b.report.to_json()
        assert ev_b.index == 1 and ev_b.code != ev.code

        # the status carries every record's evidence code, in record order
        st = c.status(batch.tx_id)
        assert len(st.evidence_codes) == 2
        assert st.evidence_codes[1] == ev_b.code
        assert c.status(single.tx_id).evidence_codes == (ev.code,)

    # offline, with nothing but the genesis
    record = ev.record
    assert record is not None
    good = verify_receipt(ev.receipt, net.genesis, record_bytes=record.data, salt=record.salt)
    assert good.ok
    tampered = bytearray(record.data)
    tampered[-1] ^= 1
    bad = verify_receipt(ev.receipt, net.genesis, record_bytes=bytes(tampered), salt=record.salt)
    assert not bad.ok
    failed = [ch for ch in bad.checks if ch.status == "fail"]
    assert [ch.name for ch in failed] == ["commitment"]


def test_receipt_route_errors_and_permissions(net: TestNetwork, tmp_path: Path) -> None:
    with lender(net, tmp_path / "s") as c:
        st = c.report(event(c, "EV-9"))
        code = c.evidence(st.tx_id, index=0).code
    canonical = str(parse_code(code))
    path = f"/v1/evidence/{canonical}/receipt"
    # every node must have applied the anchor (a node behind answers not_anchored)
    net.wait_heights("judicial", max(net.heights("judicial")), timeout_s=60)

    owner = net.client(1, "lender1")
    r = owner.http.get(owner.url + path, headers=owner.headers("GET", path))
    assert r.status_code == 200, r.text
    assert r.json()["receipts"][0]["evidence_code"] == canonical

    court = net.client(2, "court")
    r = court.http.get(court.url + path, headers=court.headers("GET", path))
    assert r.status_code == 200, r.text

    other = net.client(0, "lender2")  # another lender's record: not visible
    r = other.http.get(other.url + path, headers=other.headers("GET", path))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_anchored"

    # a typo (one symbol changed) is refused with suggestions that include the code
    body = canonical.replace("-", "")
    typo_body = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    typo = f"/v1/evidence/{typo_body}/receipt"
    r = owner.http.get(owner.url + typo, headers=owner.headers("GET", typo))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "bad_evidence_code"
    assert canonical in err["suggestions"]

    # unsigned requests are refused
    assert httpx.get(owner.url + path).status_code == 401


def test_an_idle_network_stops_making_blocks(net: TestNetwork, tmp_path: Path) -> None:
    """Acks of ack-only blocks are deferred: relaying does not ping-pong forever."""
    with lender(net, tmp_path / "s") as c:
        c.evidence(c.report(event(c, "EV-20")).tx_id, index=0)
    probe = net.client(0, "bureau")
    deadline = time.monotonic() + 20
    last = (-1, -1)
    while time.monotonic() < deadline:
        now = (probe.height("supervision"), probe.height("judicial"))
        if now == last:
            break
        last = now
        time.sleep(1.5)
    else:
        pytest.fail(f"the chains kept growing while idle: {last}")


def test_explorer_is_mounted(net: TestNetwork) -> None:
    r = httpx.get(net.urls[0] + "/explorer/", follow_redirects=False)
    assert r.status_code in (200, 302, 303, 307), r.status_code


def test_local_network_demo_lender_is_admitted_and_can_report(tmp_path: Path) -> None:
    """``wulian up``'s preparation: a demo lender with its keys, admitted by the bureau
    once the nodes answer (only once: the next start does not admit it again)."""
    from node.localnet import DEMO_LENDER, LocalNetwork
    from tests.node.netfixture import FAST_CONSENSUS, free_base_port

    data = tmp_path / "network"
    port = free_base_port()
    net = LocalNetwork.prepare(data, base_port=port, consensus=FAST_CONSENSUS)
    assert net.admit_when_healthy == (DEMO_LENDER,)
    assert (data / "keys" / "pseudonym.key").exists()
    assert net.genesis.org(DEMO_LENDER).role == "lender"
    net.start()
    try:
        net.wait_healthy(timeout_s=60)
        assert (data / "keys" / f"{DEMO_LENDER}.admitted").exists()
        with Client(
            genesis=net.genesis,
            key_file=data / "keys" / f"{DEMO_LENDER}.key",
            store=tmp_path / "s",
            pseudonym_key=data / "keys" / "pseudonym.key",
        ) as c:
            assert c.report(event(c, "DEMO-1")).valid
    finally:
        net.stop()
    again = LocalNetwork.prepare(data, base_port=port, consensus=FAST_CONSENSUS)
    assert again.genesis.hash == net.genesis.hash
    assert again.admit_when_healthy == ()
