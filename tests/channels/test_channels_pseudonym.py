"""Borrower pseudonyms (HMAC of the normalised ID number) and record commitments."""

from __future__ import annotations

import hashlib

import pytest

from channels.pseudonym import (
    borrower_ref,
    id_check_char,
    normalise_id_number,
    record_commitment,
)
from ledger.encoding import encode
from ledger.errors import SchemaError
from ledger.hashing import TAG_RECORD, tagged_hash

KEY = hashlib.sha256(b"k1").digest()
#: The sample number of the GB 11643-1999 standard (check character X).
SAMPLE = "11010519491231002X"


def test_check_character_of_the_standard_sample() -> None:
    assert id_check_char(SAMPLE[:17]) == "X"
    assert normalise_id_number(" 110105 19491231 002x ") == SAMPLE


def test_normalisation_refuses_malformed_numbers() -> None:
    with pytest.raises(SchemaError, match="check character"):
        normalise_id_number("110105194912310021")
    with pytest.raises(SchemaError, match="17 digits"):
        normalise_id_number("11010519491231002")
    with pytest.raises(SchemaError, match="17 digits"):
        normalise_id_number("1101051949123100AX")


def test_borrower_ref_is_keyed_and_stable_across_spellings() -> None:
    ref = borrower_ref(KEY, SAMPLE)
    assert len(ref) == 32
    assert borrower_ref(KEY, SAMPLE.lower()) == ref
    assert borrower_ref(hashlib.sha256(b"k2").digest(), SAMPLE) != ref
    # not a plain hash of the number: without the key it cannot be recomputed
    assert ref != hashlib.sha256(SAMPLE.encode()).digest()
    with pytest.raises(SchemaError, match="at least 32"):
        borrower_ref(b"short", SAMPLE)


def test_record_commitment_is_salted() -> None:
    record = {"loan_id": "L1", "amount_cents": 100_000, "borrower": "张三"}
    salt = b"\x01" * 32
    c = record_commitment(salt, record)
    assert c == tagged_hash(TAG_RECORD, salt + encode(record))
    assert record_commitment(b"\x02" * 32, record) != c
    with pytest.raises(SchemaError):
        record_commitment(b"\x01" * 16, record)
