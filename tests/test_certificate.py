"""Validator sets, quorum arithmetic and commit-certificate verification (real ed25519)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from ledger.certificate import (
    CommitCertificate,
    Validator,
    ValidatorSet,
    Vote,
    commit_vote_message,
    fault_tolerance,
    quorum_size,
    verify_certificate,
)
from ledger.crypto import Ed25519Signer
from ledger.encoding import decode, encode
from ledger.errors import CertificateError, SchemaError
from ledger.hashing import TAG_COMMIT_VOTE, TAG_TX

CHANNEL = "supervision"
HEIGHT = 7
VIEW = 2
BLOCK = bytes(range(32))
NAMES = ["bureau", "court", "risk", "credit", "service"]


@pytest.fixture(scope="module")
def signers() -> dict[str, Ed25519Signer]:
    return {name: Ed25519Signer.generate() for name in NAMES}


@pytest.fixture(scope="module")
def vset(signers: dict[str, Ed25519Signer]) -> ValidatorSet:
    return ValidatorSet(tuple(Validator(name, signers[name].public_key) for name in NAMES))


def vote(
    signer: Ed25519Signer,
    name: str,
    *,
    channel: str = CHANNEL,
    height: int = HEIGHT,
    view: int = VIEW,
    block: bytes = BLOCK,
    tag: str = TAG_COMMIT_VOTE,
) -> Vote:
    return Vote(name, signer.sign(tag, commit_vote_message(channel, height, view, block)))


def cert_from(votes: list[Vote], **over: Any) -> CommitCertificate:
    fields: dict[str, Any] = {
        "channel": CHANNEL,
        "height": HEIGHT,
        "view": VIEW,
        "block_hash": BLOCK,
        "votes": tuple(votes),
    }
    fields.update(over)
    return CommitCertificate(**fields)


def good_votes(signers: dict[str, Ed25519Signer], names: list[str]) -> list[Vote]:
    return [vote(signers[n], n) for n in names]


def check(cert: CommitCertificate, vset: ValidatorSet, **over: Any) -> None:
    kwargs: dict[str, Any] = {
        "channel": CHANNEL,
        "height": HEIGHT,
        "block_hash": BLOCK,
        "validators": vset,
    }
    kwargs.update(over)
    verify_certificate(cert, **kwargs)


# --------------------------------------------------------------------------------------
# Quorum arithmetic.


@pytest.mark.parametrize("n", range(1, 21))
def test_quorum_formula(n: int) -> None:
    f = (n - 1) // 3
    assert fault_tolerance(n) == f
    q = quorum_size(n)
    # Q = ceil((n + f + 1) / 2), computed exactly with integers.
    assert q == -(-(n + f + 1) // 2)
    # Safety: two quorums intersect in at least f + 1 validators (so in an honest one).
    assert 2 * q - n >= f + 1
    # Liveness: the n - f non-faulty validators can form a quorum alone.
    assert q <= n - f
    if n == 3 * f + 1:
        assert q == n - f


def test_quorum_known_values() -> None:
    assert [quorum_size(n) for n in (1, 2, 3, 4, 5, 6, 7)] == [1, 2, 2, 3, 4, 4, 5]
    assert quorum_size(4) == 3
    assert quorum_size(5) == 4  # not 3: two 3-of-5 quorums may overlap in one faulty node
    assert quorum_size(7) == 5


def test_validator_set_properties(vset: ValidatorSet) -> None:
    assert (vset.n, vset.f, vset.quorum) == (5, 1, 4)
    assert [vset.primary(v) for v in range(7)] == [*NAMES, NAMES[0], NAMES[1]]
    assert set(vset.by_id) == set(NAMES)


def test_validator_set_refuses_empty_and_duplicates(signers: dict[str, Ed25519Signer]) -> None:
    a = Validator("a", signers["bureau"].public_key)
    with pytest.raises(CertificateError):
        ValidatorSet(())
    with pytest.raises(CertificateError):
        ValidatorSet((a, Validator("a", signers["court"].public_key)))
    with pytest.raises(CertificateError):
        ValidatorSet((a, Validator("b", signers["bureau"].public_key)))


# --------------------------------------------------------------------------------------
# verify_certificate.


@pytest.mark.parametrize("count", [4, 5])
def test_accepts_quorum(signers: dict[str, Ed25519Signer], vset: ValidatorSet, count: int) -> None:
    cert = cert_from(good_votes(signers, NAMES[:count]))
    check(cert, vset)
    # Any 4 of the 5, in any order.
    check(cert_from(good_votes(signers, list(reversed(NAMES))[:count])), vset)


@pytest.mark.parametrize("count", [0, 1, 3])
def test_rejects_below_quorum(
    signers: dict[str, Ed25519Signer], vset: ValidatorSet, count: int
) -> None:
    with pytest.raises(CertificateError):
        check(cert_from(good_votes(signers, NAMES[:count])), vset)


def test_rejects_duplicate_voter(signers: dict[str, Ed25519Signer], vset: ValidatorSet) -> None:
    three = good_votes(signers, NAMES[:3])
    # Three distinct validators, one voting twice: four votes but no quorum.
    with pytest.raises(CertificateError, match="twice"):
        check(cert_from([*three, three[0]]), vset)
    # Even with a quorum present, a repeated vote makes the certificate malformed.
    four = good_votes(signers, NAMES[:4])
    with pytest.raises(CertificateError, match="twice"):
        check(cert_from([*four, four[1]]), vset)


def test_rejects_non_validator(signers: dict[str, Ed25519Signer], vset: ValidatorSet) -> None:
    outsider = Ed25519Signer.generate()
    votes = [*good_votes(signers, NAMES[:3]), vote(outsider, "mallory")]
    with pytest.raises(CertificateError, match="not a validator"):
        check(cert_from(votes), vset)
    # Also with a full quorum beside it.
    votes = [*good_votes(signers, NAMES[:4]), vote(outsider, "mallory")]
    with pytest.raises(CertificateError):
        check(cert_from(votes), vset)


def test_rejects_bad_signatures(signers: dict[str, Ed25519Signer], vset: ValidatorSet) -> None:
    four = good_votes(signers, NAMES[:4])
    sig = four[3].signature
    bad_sigs = [
        bytes([sig[0] ^ 1]) + sig[1:],
        sig[:-1] + bytes([sig[-1] ^ 0x80]),
        sig[:63],
        sig + b"\x00",
        b"",
        b"\x00" * 64,
        four[2].signature,  # another validator's valid signature
    ]
    for bad in bad_sigs:
        votes = [*four[:3], Vote(NAMES[3], bad)]
        with pytest.raises(CertificateError, match="signature"):
            check(cert_from(votes), vset)
    # A validator's name on a vote signed with someone else's key.
    votes = [*four[:3], vote(signers[NAMES[4]], NAMES[3])]
    with pytest.raises(CertificateError):
        check(cert_from(votes), vset)


@pytest.mark.parametrize(
    "other",
    [
        {"height": HEIGHT + 1},
        {"height": HEIGHT - 1},
        {"view": VIEW + 1},
        {"view": 0},
        {"block": bytes(32)},
        {"channel": "judicial"},
        {"tag": TAG_TX},
    ],
    ids=lambda d: next(iter(d)),
)
def test_rejects_vote_signed_over_other_message(
    signers: dict[str, Ed25519Signer], vset: ValidatorSet, other: dict[str, Any]
) -> None:
    votes = [*good_votes(signers, NAMES[:4]), vote(signers[NAMES[4]], NAMES[4], **other)]
    with pytest.raises(CertificateError, match="signature"):
        check(cert_from(votes), vset)
    # And when the odd vote is needed for the quorum.
    votes = [*good_votes(signers, NAMES[:3]), vote(signers[NAMES[4]], NAMES[4], **other)]
    with pytest.raises(CertificateError):
        check(cert_from(votes), vset)


def test_rejects_certificate_relabelled_after_signing(
    signers: dict[str, Ed25519Signer], vset: ValidatorSet
) -> None:
    cert = cert_from(good_votes(signers, NAMES))
    check(cert, vset)
    for change in (
        {"view": VIEW + 1},
        {"height": HEIGHT + 1},
        {"channel": "judicial"},
        {"block_hash": bytes(32)},
    ):
        moved = dataclasses.replace(cert, **change)
        # Asked about what the relabelled certificate claims, the votes do not match.
        with pytest.raises(CertificateError):
            check(
                moved,
                vset,
                channel=moved.channel,
                height=moved.height,
                block_hash=moved.block_hash,
            )


@pytest.mark.parametrize(
    "asked",
    [{"channel": "judicial"}, {"height": HEIGHT + 1}, {"block_hash": bytes(32)}],
    ids=lambda d: next(iter(d)),
)
def test_rejects_certificate_for_something_else(
    signers: dict[str, Ed25519Signer], vset: ValidatorSet, asked: dict[str, Any]
) -> None:
    cert = cert_from(good_votes(signers, NAMES))
    with pytest.raises(CertificateError):
        check(cert, vset, **asked)


def test_rejects_under_another_validator_set(signers: dict[str, Ed25519Signer]) -> None:
    others = {name: Ed25519Signer.generate() for name in NAMES}
    other_set = ValidatorSet(tuple(Validator(n, others[n].public_key) for n in NAMES))
    with pytest.raises(CertificateError):
        check(cert_from(good_votes(signers, NAMES)), other_set)


def test_vote_message_binds_every_field() -> None:
    base = commit_vote_message(CHANNEL, HEIGHT, VIEW, BLOCK)
    assert decode(base) == {"ch": CHANNEL, "h": HEIGHT, "v": VIEW, "b": BLOCK}
    variants = {
        commit_vote_message("judicial", HEIGHT, VIEW, BLOCK),
        commit_vote_message(CHANNEL, HEIGHT + 1, VIEW, BLOCK),
        commit_vote_message(CHANNEL, HEIGHT, VIEW + 1, BLOCK),
        commit_vote_message(CHANNEL, HEIGHT, VIEW, bytes(32)),
    }
    assert len(variants) == 4 and base not in variants


# --------------------------------------------------------------------------------------
# Wire forms.


def test_certificate_wire_round_trip(signers: dict[str, Ed25519Signer], vset: ValidatorSet) -> None:
    cert = cert_from(good_votes(signers, NAMES[:4]))
    data = encode(cert.to_wire())
    back = CommitCertificate.from_wire(decode(data))
    assert back == cert
    assert encode(back.to_wire()) == data
    check(back, vset)


def test_validator_set_wire_round_trip(vset: ValidatorSet) -> None:
    back = ValidatorSet.from_wire(decode(encode(vset.to_wire())))
    assert back == vset
    assert [back.primary(v) for v in range(5)] == NAMES


def _cert_wire(signers: dict[str, Ed25519Signer]) -> dict[str, Any]:
    w: dict[str, Any] = decode(encode(cert_from(good_votes(signers, NAMES[:4])).to_wire()))
    return w


@pytest.mark.parametrize(
    "mutate",
    [
        lambda w: w.update(extra=1),
        lambda w: w.pop("v"),
        lambda w: w.update(v=2),
        lambda w: w.update(v=True),
        lambda w: w.update(v="1"),
        lambda w: w.pop("ch"),
        lambda w: w.update(ch="Not A Name"),
        lambda w: w.update(ch=b"supervision"),
        lambda w: w.pop("h"),
        lambda w: w.update(h=-1),
        lambda w: w.update(h="7"),
        lambda w: w.update(h=True),
        lambda w: w.pop("view"),
        lambda w: w.update(view=-1),
        lambda w: w.pop("b"),
        lambda w: w.update(b=bytes(31)),
        lambda w: w.update(b=bytes(33)),
        lambda w: w.update(b="00" * 32),
        lambda w: w.pop("votes"),
        lambda w: w.update(votes={}),
        lambda w: w.update(votes=[["bureau"]]),
        lambda w: w.update(votes=[["bureau", b"s", b"x"]]),
        lambda w: w.update(votes=[[1, b"sig"]]),
        lambda w: w.update(votes=[["bureau", "sig"]]),
        lambda w: w.update(votes=[{"bureau": b"sig"}]),
        lambda w: w.update(votes=[["v", b"s"]] * 1025),
    ],
)
def test_certificate_from_wire_rejects_malformed(
    signers: dict[str, Ed25519Signer], mutate: Any
) -> None:
    w = _cert_wire(signers)
    mutate(w)
    with pytest.raises(SchemaError):
        CommitCertificate.from_wire(w)


@pytest.mark.parametrize("raw", [None, [], "cert", 1, b"x"], ids=repr)
def test_certificate_from_wire_rejects_non_maps(raw: Any) -> None:
    with pytest.raises(SchemaError):
        CommitCertificate.from_wire(raw)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        {},
        [],
        [{"id": "a"}],
        [{"id": "a", "pk": bytes(31)}],
        [{"id": "a", "pk": bytes(32), "x": 1}],
        [{"id": "A B", "pk": bytes(32)}],
        [{"id": "a", "pk": bytes(32)}, {"id": "a", "pk": b"\x01" * 32}],
        [{"id": "a", "pk": bytes(32)}, {"id": "b", "pk": bytes(32)}],
        ["a"],
    ],
    ids=repr,
)
def test_validator_set_from_wire_rejects_malformed(raw: Any) -> None:
    with pytest.raises(SchemaError):
        ValidatorSet.from_wire(raw)
