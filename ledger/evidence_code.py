"""Evidence codes (存证编码): short, typeable, deterministic locators with a check symbol.

An evidence code names one anchored record. It is derived from the record's anchored
leaf (see docs/receipts.md), so every court node computes the same code:

    value  = first 80 bits of tagged_hash(TAG_EVIDENCE_CODE, leaf)
    body   = value in Crockford base32, 16 symbols, most significant first
    check  = value mod 37, as a Crockford check symbol (0-9 A-Z without I L O U, then * ~ $ = U)
    code   = "WL-" + body in four groups of four + "-" + check   e.g. WL-7F3K-0QMZ-R2D8-X9AB-K

The mod-37 check detects every single mistyped symbol and every swap of two adjacent
symbols (37 is prime and larger than the alphabet). The code is a locator, not a
proof: the proof is the receipt.

Parsing is forgiving the way Crockford base32 intends: case-insensitive, hyphens and
whitespace ignored, full-width forms folded (NFKC), ``I``/``L`` read as ``1`` and ``O``
as ``0``, the ``WL`` prefix optional.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Final

from ledger.errors import LedgerError
from ledger.hashing import tagged_hash

TAG_EVIDENCE_CODE: Final = "evidence-code/v1"
ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CHECK_ALPHABET: Final = ALPHABET + "*~$=U"
BODY_SYMBOLS: Final = 16
PREFIX: Final = "WL"
_DECODE: Final = {c: i for i, c in enumerate(ALPHABET)} | {"I": 1, "L": 1, "O": 0}
_CHECK_DECODE: Final = {c: i for i, c in enumerate(CHECK_ALPHABET)} | {"I": 1, "L": 1, "O": 0}


class EvidenceCodeError(LedgerError):
    """Text that is not a well-formed evidence code (or whose check symbol fails)."""

    code = "bad_evidence_code"


@dataclass(frozen=True)
class EvidenceCode:
    """A parsed evidence code: its 80-bit value."""

    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.value < 1 << (5 * BODY_SYMBOLS):
            raise EvidenceCodeError("evidence code value out of range")

    @property
    def body(self) -> str:
        v, out = self.value, []
        for _ in range(BODY_SYMBOLS):
            out.append(ALPHABET[v & 31])
            v >>= 5
        return "".join(reversed(out))

    @property
    def check(self) -> str:
        return CHECK_ALPHABET[self.value % 37]

    def __str__(self) -> str:
        b = self.body
        groups = "-".join(b[i : i + 4] for i in range(0, BODY_SYMBOLS, 4))
        return f"{PREFIX}-{groups}-{self.check}"

    @property
    def key(self) -> bytes:
        """10-byte big-endian value: the lookup key in the judicial channel's index."""
        return self.value.to_bytes(10, "big")


def code_for_leaf(leaf: bytes) -> EvidenceCode:
    """The evidence code of an anchored record leaf (deterministic)."""
    digest = tagged_hash(TAG_EVIDENCE_CODE, leaf)
    return EvidenceCode(int.from_bytes(digest[:10], "big"))


def _normalise(text: str) -> str:
    # NFKC folds full-width forms (a Chinese IME's "ＷＬ－７Ｆ３Ｋ") to ASCII; every kind of
    # whitespace (a pasted trailing newline) and hyphens are ignored.
    folded = unicodedata.normalize("NFKC", text).upper()
    s = "".join(ch for ch in folded if ch != "-" and not ch.isspace())
    if s.startswith(PREFIX) and len(s) == len(PREFIX) + BODY_SYMBOLS + 1:
        s = s[len(PREFIX) :]
    return s


def _value_of(body: str) -> int:
    v = 0
    for ch in body:
        d = _DECODE.get(ch)
        if d is None:
            raise EvidenceCodeError(f"{ch!r} is not a Crockford base32 symbol")
        v = (v << 5) | d
    return v


def parse(text: str) -> EvidenceCode:
    """Parse an evidence code as typed by a person.

    Raises :class:`EvidenceCodeError` if the text has the wrong length, a symbol outside
    the alphabet, or a check symbol that does not match (a typo).
    """
    s = _normalise(text)
    if len(s) != BODY_SYMBOLS + 1:
        raise EvidenceCodeError(
            f"an evidence code has {BODY_SYMBOLS} symbols and a check symbol, got {len(s)}"
        )
    value = _value_of(s[:BODY_SYMBOLS])
    check = _CHECK_DECODE.get(s[-1])
    if check is None:
        raise EvidenceCodeError(f"{s[-1]!r} is not a check symbol")
    if value % 37 != check:
        raise EvidenceCodeError("check symbol does not match: the code has a typo")
    return EvidenceCode(value)


def suggestions(text: str) -> list[EvidenceCode]:
    """Codes one typo away from ``text`` whose check symbol matches ("did you mean").

    Considers every single-symbol substitution in the body or check (including a body
    symbol mistyped as one outside the alphabet, such as ``U``), every swap of two
    adjacent body symbols, and the swap of the last body symbol with the check symbol.
    Returns them sorted by value; the caller keeps those that exist. Text of the wrong
    length, or with more than one symbol outside the alphabet, yields no suggestions.
    """
    s = _normalise(text)
    if len(s) != BODY_SYMBOLS + 1:
        return []
    body, last = s[:BODY_SYMBOLS], s[-1]
    bad = [i for i, ch in enumerate(body) if ch not in _DECODE]
    if len(bad) > 1:
        return []
    check = _CHECK_DECODE.get(last)
    found: set[int] = set()

    def consider(candidate: str, want: int | None) -> None:
        if all(ch in _DECODE for ch in candidate):
            v = _value_of(candidate)
            if want is None or v % 37 == want:
                found.add(v)

    # The check symbol itself mistyped: the body is right.
    consider(body, None)
    if check is not None:
        for i in bad or range(BODY_SYMBOLS):
            for sym in ALPHABET:
                if sym != body[i]:
                    consider(body[:i] + sym + body[i + 1 :], check)
        if not bad:
            for i in range(BODY_SYMBOLS - 1):
                if body[i] != body[i + 1]:
                    consider(body[:i] + body[i + 1] + body[i] + body[i + 2 :], check)
    # The last body symbol and the check symbol swapped.
    swapped_check = _CHECK_DECODE.get(body[-1])
    if swapped_check is not None and last != body[-1]:
        consider(body[:-1] + last, swapped_check)
    return [EvidenceCode(v) for v in sorted(found)]
