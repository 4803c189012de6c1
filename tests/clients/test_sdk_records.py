"""Records, commitments, borrower references and offline signing (pure, no network)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

import nacl.signing
import pytest

from channels.pseudonym import record_commitment as channel_commitment
from channels.registry import CHANNEL_RULES
from clients import (
    LoanEvent,
    PseudonymKey,
    Record,
    build_loan_events,
    load_pseudonym_key_file,
    loan_event_record,
    write_pseudonym_key_file,
)
from clients._records import expected_evidence_codes, make_transaction
from crosschain.receipt import record_commitment as receipt_commitment
from ledger.blocks import record_leaves
from ledger.crypto import Ed25519Signer
from ledger.encoding import decode, encode
from ledger.errors import ConfigError, SchemaError, SignatureError

ID = "11010519491231002X"
KEY = PseudonymKey(bytes(range(32)))


def event(i: int = 0, **kw: object) -> LoanEvent:
    fields: dict[str, object] = {
        "report_id": f"r-{i}",
        "loan_id": f"L-{i}",
        "borrower_ref": KEY.borrower_ref(ID),
        "event": "contract",
        "amount_cents": 500_000,
        "rate_bp": 1800,
        "term_months": 12,
        "event_time_ms": 1_700_000_000_000,
        "details": {"contract_no": f"HT-{i}", "channel": "app"},
    }
    fields.update(kw)
    return LoanEvent(**fields)  # type: ignore[arg-type]


def test_borrower_ref_is_hmac_of_the_normalised_id() -> None:
    want = hmac.new(KEY.key, ID.encode(), hashlib.sha256).digest()
    assert KEY.borrower_ref(ID) == want
    # spaces, hyphens and a lower-case check letter normalise to the same reference
    assert KEY.borrower_ref(" 110105-19491231-002x ") == want
    assert PseudonymKey(bytes(32)).borrower_ref(ID) != want


def test_bad_id_number_is_refused_without_echoing_it() -> None:
    bad = ID[:-1] + "3"  # wrong check character
    with pytest.raises(SchemaError) as err:
        KEY.borrower_ref(bad)
    assert bad not in str(err.value) and bad[:17] not in str(err.value)
    with pytest.raises(ConfigError):
        PseudonymKey(b"short")


def test_pseudonym_key_file_round_trip_and_permissions(tmp_path: Path) -> None:
    p = tmp_path / "pseudonym.key"
    write_pseudonym_key_file(p, KEY)
    assert (os.stat(p).st_mode & 0o777) == 0o600
    assert load_pseudonym_key_file(p) == KEY
    with pytest.raises(ConfigError):
        write_pseudonym_key_file(p, KEY)  # never overwritten
    os.chmod(p, 0o644)
    with pytest.raises(ConfigError, match="0600"):
        load_pseudonym_key_file(p)


def test_commitment_matches_the_channel_and_the_receipt_verifier() -> None:
    value = loan_event_record("lender1", event())
    rec = Record.new(value)
    assert len(rec.salt) == 32
    assert rec.data == encode(value) and rec.value == value
    assert rec.commitment == channel_commitment(rec.salt, value)
    assert rec.commitment == receipt_commitment(rec.salt, rec.data)
    again = Record.new(value)
    assert again.salt != rec.salt and again.commitment != rec.commitment


def test_records_refuse_raw_id_numbers() -> None:
    with pytest.raises(SchemaError, match=r"details\.note") as err:
        build_loan_events("lender1", [event(details={"note": f"borrower {ID}"[9:]})])
    assert ID not in str(err.value)
    with pytest.raises(SchemaError):
        Record.new({"x": [{"y": ID.lower()}]})


def test_single_event_payload_passes_the_supervision_schema() -> None:
    tx_type, payload, records = build_loan_events("lender1", [event()])
    assert tx_type == "loan_event" and len(records) == 1
    (item,) = payload["records"]
    assert item["c"] == records[0].commitment
    assert "details" not in item  # the rest of the record stays local
    signer = Ed25519Signer(b"\x01" * 32)
    tx = make_transaction(
        network=b"\x00" * 32, channel="supervision", tx_type=tx_type, sender="lender1",
        public_key=signer.public_key, payload=payload, time_ms=1,
    ).sign_with(signer).tx  # fmt: skip
    assert CHANNEL_RULES["supervision"].check_stateless(tx, "lender") is None


def test_batch_payload_passes_the_supervision_schema() -> None:
    tx_type, payload, records = build_loan_events("lender1", [event(i) for i in range(3)])
    assert tx_type == "loan_event_batch" and len(payload["records"]) == 3
    assert [e["c"] for e in payload["records"]] == [r.commitment for r in records]
    signer = Ed25519Signer(b"\x01" * 32)
    tx = make_transaction(
        network=b"\x00" * 32, channel="supervision", tx_type=tx_type, sender="lender1",
        public_key=signer.public_key, payload=payload, time_ms=1,
    ).sign_with(signer).tx  # fmt: skip
    assert CHANNEL_RULES["supervision"].check_stateless(tx, "lender") is None
    # one record leaf per event, so each gets its own evidence code once anchored
    leaves = record_leaves(tx)
    assert len(leaves) == 3
    assert len(set(expected_evidence_codes(tx))) == 3


def test_invalid_event_is_refused_naming_the_event_and_field() -> None:
    with pytest.raises(SchemaError, match=r"events\[1\].*event"):
        build_loan_events("lender1", [event(0), event(1, event="refund")])
    with pytest.raises(SchemaError, match="term_months"):
        build_loan_events("lender1", [event(term_months=0)])
    with pytest.raises(SchemaError):
        build_loan_events("lender1", [])


def test_event_from_json_computes_the_reference_and_drops_the_id() -> None:
    doc = {
        "report_id": "r-9", "loan_id": "L-9", "id_number": ID, "event": "contract",
        "amount_cents": 100, "rate_bp": 100, "term_months": 3, "event_time_ms": 5,
        "details": {"product": "microloan"},
    }  # fmt: skip
    ev = LoanEvent.from_json(doc, pseudonym=KEY)
    assert ev.borrower_ref == KEY.borrower_ref(ID)
    _tx_type, payload, records = build_loan_events("lender1", [ev])
    blob = encode(payload) + records[0].data + json.dumps(doc).encode()
    assert ID.encode() not in encode(payload) and ID.encode() not in records[0].data
    assert ID.encode() in blob  # (sanity: the check above would see it)
    with pytest.raises(SchemaError, match="pseudonym key"):
        LoanEvent.from_json(doc)
    with pytest.raises(SchemaError, match="exactly one"):
        LoanEvent.from_json({**doc, "borrower_ref": "00" * 32}, pseudonym=KEY)
    with pytest.raises(SchemaError, match="amount_cents"):
        LoanEvent.from_json({**doc, "amount_cents": 1.5}, pseudonym=KEY)


def test_offline_signing_with_a_raw_ed25519_key() -> None:
    """An HSM signs the exact ``signing_message`` with pure Ed25519."""
    hsm = nacl.signing.SigningKey(b"\x05" * 32)
    pk = bytes(hsm.verify_key)
    _, payload, records = build_loan_events("lender1", [event()])
    unsigned = make_transaction(
        network=b"\x00" * 32, channel="supervision", tx_type="loan_event", sender="lender1",
        public_key=pk, payload=payload, time_ms=7, records=records,
    )  # fmt: skip
    tx_id = unsigned.tx_id
    assert unsigned.digest == tx_id
    sig = hsm.sign(unsigned.signing_message).signature
    prepared = unsigned.attach(sig)
    assert prepared.tx_id == tx_id  # the id does not depend on the signature
    prepared.tx.verify_signature()
    assert prepared.records == records
    with pytest.raises(SignatureError):
        unsigned.attach(bytes(64))
    other = nacl.signing.SigningKey(b"\x06" * 32)
    with pytest.raises(SignatureError):
        unsigned.attach(other.sign(unsigned.signing_message).signature)
    # sign_with takes any ledger.crypto.Signer and gives the same signature
    assert unsigned.sign_with(Ed25519Signer(b"\x05" * 32)).tx.signature == sig
    # a key other than the transaction's is still refused (the signature is checked)
    with pytest.raises(SignatureError):
        unsigned.sign_with(Ed25519Signer(b"\x06" * 32))

    class WrongSigner:  # e.g. a faulty HSM adapter: its output is always checked
        public_key = pk

        def sign(self, tag: str, message: bytes) -> bytes:
            return bytes(64)

    with pytest.raises(SignatureError):
        unsigned.sign_with(WrongSigner())
    assert decode(prepared.tx.body_bytes)["p"] == payload
