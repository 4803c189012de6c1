"""The transaction-type → roles table, its agreement with the genesis, and the docs."""

from __future__ import annotations

import re
from pathlib import Path

from channels.registry import CHANNEL_IDS, CHANNEL_RULES, READS_FROM, TX_TYPE_ROLES

INST = frozenset({"bureau", "court", "risk_centre", "credit_agency", "service_platform"})
ROOT = Path(__file__).resolve().parents[2]

#: The table, written out literally so that any change to it is deliberate.
EXPECTED = {
    "supervision": {
        "config_update": INST,
        "lender_admit": {"bureau"},
        "lender_update": {"bureau"},
        "lender_suspend": {"bureau"},
        "lender_reinstate": {"bureau"},
        "loan_event": {"lender"},
        "loan_event_batch": {"lender"},
        "periodic_report": {"lender"},
        "anchor_receipt": {"node"},
    },
    "risk": {
        "config_update": INST,
        "alert": {"risk_centre"},
        "alert_disposition": {"bureau"},
        "alert_feedback": {"lender"},
        "alert_followup": {"risk_centre"},
        "alert_close": {"bureau"},
    },
    "judicial": {
        "config_update": INST,
        "anchor": {"court", "node"},
        "evidence_ack": {"court", "node"},
        "case_file": {"lender"},
        "case_file_batch": {"lender"},
        "court_publication": {"court"},
    },
    "credit": {
        "config_update": INST,
        "credit_sync": {"credit_agency"},
        "credit_entry": {"credit_agency"},
        "credit_entry_revoke": {"credit_agency"},
        "firm_profile": {"credit_agency"},
        "credit_query": {"lender"},
    },
    "service": {
        "config_update": INST,
        "asset_register": {"lender"},
        "asset_deregister": {"lender"},
        "financing_request": {"lender"},
        "financing_cancel": {"lender"},
        "financing_match": {"service_platform"},
        "financing_release": {"service_platform"},
        "disposal_list": {"lender"},
        "disposal_status": {"service_platform", "lender"},
    },
}


def test_role_table_is_exactly_the_expected_one() -> None:
    assert {ch: {t: set(r) for t, r in types.items()} for ch, types in TX_TYPE_ROLES.items()} == {
        ch: {t: set(r) for t, r in types.items()} for ch, types in EXPECTED.items()
    }
    assert tuple(CHANNEL_RULES) == CHANNEL_IDS
    assert all(CHANNEL_RULES[ch].channel_id == ch for ch in CHANNEL_IDS)


def test_cross_channel_reads_form_a_dag() -> None:
    """Waiting for another channel can never deadlock: the reads have no cycle (the
    judicial channel reads nothing; supervision its accepted anchors; the rest
    supervision)."""
    assert READS_FROM["judicial"] == ()
    assert READS_FROM["supervision"] == ("judicial",)
    done: set[str] = set()
    while len(done) < len(READS_FROM):  # peel off channels whose sources are all done
        ready = {ch for ch, src in READS_FROM.items() if ch not in done and set(src) <= done}
        assert ready, f"a cycle among {set(READS_FROM) - done}"
        done |= ready


def test_the_judicial_facts_other_channels_read_are_its_anchor_entries() -> None:
    from channels.context import FACT_PREFIXES
    from crosschain.anchor_rules import anchor_key

    assert anchor_key("supervision", 7).startswith(FACT_PREFIXES["judicial"])


def test_genesis_default_permissions_equal_the_table() -> None:
    from ledger.genesis import DEFAULT_SUBMIT

    assert {ch: dict(t) for ch, t in DEFAULT_SUBMIT.items()} == {
        ch: dict(t) for ch, t in TX_TYPE_ROLES.items()
    }


def _source_codes() -> set[str]:
    codes: set[str] = set()
    for path in (ROOT / "channels").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        codes |= set(re.findall(r'TxRejected\(\s*"([a-z_]+)"', text))
    return codes


def test_docs_cover_every_tx_type_and_rejection_code() -> None:
    doc = (ROOT / "docs" / "channels.md").read_text(encoding="utf-8")
    for ch, types in TX_TYPE_ROLES.items():
        for name in types:
            assert f"`{name}`" in doc, f"{ch}.{name} is not documented"
    codes = _source_codes()
    assert len(codes) > 40
    missing = sorted(c for c in codes if f"`{c}`" not in doc)
    assert not missing, f"rejection codes not documented: {missing}"
