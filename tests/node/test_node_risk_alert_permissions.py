"""Who reads the risk alerts follows the risk channel's read permissions, as its blocks
do (until session 27 a fixed list, the bureau and the risk centre, saw every alert):
here the bureau's read of the risk channel is withdrawn in the genesis, as governance's
``set_permissions`` would, and an auditor org has full read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from channels.risk import alert_key
from ledger.crypto import Ed25519Signer
from ledger.encoding import encode
from ledger.genesis import org_key_path
from ledger.keyfile import load_key_file
from tests.node.single_node import SingleNode, org_entry

AUDITOR = Ed25519Signer.generate()
ALERTS = "/v1/channels/risk/alerts"
ALERT_ID = b"\xaa" * 32


@pytest.fixture()
def node(tmp_path: Path) -> Iterator[SingleNode]:
    def edit(doc: dict[str, Any]) -> None:
        doc["orgs"].append(org_entry("audit-firm", "auditor", AUDITOR))
        (risk,) = [ch for ch in doc["channels"] if ch["id"] == "risk"]
        risk["read"] = sorted(r for r in risk["read"] if r != "bureau")

    n = SingleNode(tmp_path, edit)
    alert = {
        "alert_id": ALERT_ID, "rule": "rate_cap", "status": "open", "round": 0,
        "respondent": None, "subject": {"lender": "acme", "loan_id": "L-7"},
        "from_height": 0, "source_height": 5, "evidence": [], "details": {"rate_bp": 4200},
        "opened_h": 1, "steps": 0, "last_followup": None,
    }  # fmt: skip
    n.commit("risk", writes={alert_key(ALERT_ID): encode(alert)})
    try:
        yield n
    finally:
        n.close()


def test_the_alerts_follow_the_risk_channels_read_permissions(node: SingleNode) -> None:
    bureau = load_key_file(org_key_path(node.net, "bureau")).signer
    for path in ("/v1/channels/risk", ALERTS):  # the channel and its alerts alike
        r = node.get(bureau, "bureau", path)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", path
    r = node.get(AUDITOR, "audit-firm", ALERTS)
    assert r.status_code == 200, r.text
    assert [a["alert_id"]["$hex"] for a in r.json()["alerts"]] == [ALERT_ID.hex()]
