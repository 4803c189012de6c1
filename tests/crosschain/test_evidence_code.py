"""Evidence codes (ledger/evidence_code.py): format, determinism, typo detection and
"did you mean" suggestions."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tests.independent_verifier as independent
from ledger.evidence_code import (
    ALPHABET,
    CHECK_ALPHABET,
    TAG_EVIDENCE_CODE,
    EvidenceCode,
    EvidenceCodeError,
    code_for_leaf,
    parse,
    suggestions,
)
from ledger.hashing import tagged_hash

FORMAT = re.compile(
    rf"WL-[{ALPHABET}]{{4}}-[{ALPHABET}]{{4}}-[{ALPHABET}]{{4}}-[{ALPHABET}]{{4}}-"
    rf"[{re.escape(CHECK_ALPHABET)}]"
)
LEAVES = [b"", b"leaf", bytes(range(200))]


def body_and_check(code: EvidenceCode) -> tuple[str, str]:
    s = str(code).replace("-", "")[2:]
    return s[:16], s[16]


@given(leaf=st.binary(max_size=300))
def test_format_and_value(leaf: bytes) -> None:
    code = code_for_leaf(leaf)
    assert FORMAT.fullmatch(str(code))
    assert code.value == int.from_bytes(tagged_hash(TAG_EVIDENCE_CODE, leaf)[:10], "big")
    assert code.key == code.value.to_bytes(10, "big")
    assert code_for_leaf(leaf) == code  # deterministic
    assert parse(str(code)) == code
    assert str(code) == independent.evidence_code(leaf)  # the spec's definition


@pytest.mark.parametrize("leaf", LEAVES)
def test_forgiving_parse(leaf: bytes) -> None:
    code = code_for_leaf(leaf)
    s = str(code)
    body, check = body_and_check(code)
    variants = [
        s.lower(),
        s.replace("-", ""),
        s.replace("-", " "),
        body + check,
        f"  {s}\n",  # pasted with a newline
        s.translate({ord(c): ord(c) + 0xFEE0 for c in "WL-0123456789ABCDEFGHJKMNPQRSTVXYZ"}),
    ]
    for v in variants:
        assert parse(v) == code, v
    aliased = s.replace("1", "I").replace("0", "O")
    assert parse(aliased) == code


@pytest.mark.parametrize("leaf", LEAVES)
def test_every_single_substitution_is_caught_and_suggested(leaf: bytes) -> None:
    code = code_for_leaf(leaf)
    body, check = body_and_check(code)
    for i in range(16):
        for sym in [*ALPHABET, "U", "*"]:
            if sym == body[i]:
                continue
            typo = body[:i] + sym + body[i + 1 :] + check
            with pytest.raises(EvidenceCodeError):
                parse(typo)
            if sym in (ALPHABET[(ALPHABET.index(body[i]) + 7) % 32], "U", "*"):
                assert code in suggestions(typo), typo  # (a sample: suggestions are slower)
    for sym in CHECK_ALPHABET:
        if sym != check:
            typo = body + sym
            with pytest.raises(EvidenceCodeError):
                parse(typo)
            assert code in suggestions(typo)


@pytest.mark.parametrize("leaf", LEAVES)
def test_every_adjacent_swap_is_caught_and_suggested(leaf: bytes) -> None:
    code = code_for_leaf(leaf)
    body, check = body_and_check(code)
    s = body + check
    for i in range(16):
        if s[i] == s[i + 1]:
            continue
        typo = s[:i] + s[i + 1] + s[i] + s[i + 2 :]
        with pytest.raises(EvidenceCodeError):
            parse(typo)
        assert code in suggestions(typo), typo


@settings(max_examples=40)
@given(leaf=st.binary(max_size=64), data=st.data())
def test_suggestions_all_parse(leaf: bytes, data: st.DataObject) -> None:
    code = code_for_leaf(leaf)
    body, check = body_and_check(code)
    i = data.draw(st.integers(0, 15))
    sym = data.draw(st.sampled_from(ALPHABET))
    typo = body[:i] + sym + body[i + 1 :] + check
    found = suggestions(typo)
    assert code in found or sym == body[i]
    for c in found:
        assert parse(str(c)) == c


@pytest.mark.parametrize(
    "text", ["", "WL-", "WL-7F3K-0QMZ-R2D8-X9AB", "WL-7F3K-0QMZ-R2D8-X9AB-K-K", "!" * 17]
)
def test_garbage_is_refused_with_a_code(text: str) -> None:
    with pytest.raises(EvidenceCodeError) as info:
        parse(text)
    assert info.value.code == "bad_evidence_code"


def test_no_suggestions_for_hopeless_text() -> None:
    assert suggestions("WL-7F3K") == []
    assert suggestions("U" * 16 + "0") == []  # more than one symbol outside the alphabet
    with pytest.raises(EvidenceCodeError):
        EvidenceCode(1 << 80)
