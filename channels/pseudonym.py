"""Borrower pseudonyms and record commitments, as the lender SDK computes them.

* ``borrower_ref = HMAC-SHA256(network pseudonym key, normalised ID number)``. The key
  is issued by the bureau to admitted lenders (through the SDK) and never goes on
  chain, so nobody reading the chain can test candidate ID numbers (a plain hash of an
  18-digit resident ID is brute-forced in seconds: the space is ~10^9 per region once
  the birth date is bounded, and the last digit is a checksum). See docs/channels.md.
* ``commitment = tagged_hash(TAG_RECORD, salt + encode(record))`` with a fresh 32-byte
  salt per record; the lender keeps the record and the salt and reveals both only to
  prove the record (e.g. to the court).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Final

from ledger.encoding import encode
from ledger.errors import SchemaError
from ledger.hashing import TAG_RECORD, tagged_hash
from ledger.schema import is_decimal

SALT_SIZE: Final = 32
MIN_KEY_SIZE: Final = 32
_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK: Final = "10X98765432"


def id_check_char(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character of a GB 11643 resident ID number."""
    total = sum(int(c) * w for c, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK[total % 11]


def normalise_id_number(raw: str) -> str:
    """Strip spaces/hyphens, upper-case the check ``x``; SchemaError unless it is an
    18-character resident ID number with a valid check character."""
    s = "".join(raw.split()).replace("-", "").upper()
    if len(s) != 18 or not is_decimal(s[:17]) or not (is_decimal(s[17]) or s[17] == "X"):
        raise SchemaError("ID number: expected 17 digits and a check digit or X")
    if id_check_char(s[:17]) != s[17]:
        raise SchemaError("ID number: check character does not match")
    return s


def borrower_ref(pseudonym_key: bytes, id_number: str) -> bytes:
    """The 32-byte pseudonymous borrower reference of a (normalised) ID number."""
    if len(pseudonym_key) < MIN_KEY_SIZE:
        raise SchemaError(f"pseudonym key must be at least {MIN_KEY_SIZE} bytes")
    normal = normalise_id_number(id_number)
    return hmac.new(pseudonym_key, normal.encode("ascii"), hashlib.sha256).digest()


def record_commitment(salt: bytes, record: Any) -> bytes:
    """Salted commitment to a full loan record (any canonical-encodable value)."""
    if len(salt) != SALT_SIZE:
        raise SchemaError(f"salt must be {SALT_SIZE} bytes")
    return tagged_hash(TAG_RECORD, salt + encode(record))
