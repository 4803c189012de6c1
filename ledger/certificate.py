"""Validator sets and commit certificates: the proof that a block is committed.

A commit certificate for block ``B`` at height ``h`` on channel ``c`` is a quorum of
COMMIT votes, each an ed25519 signature by a distinct validator over
``encode({"ch": c, "h": h, "v": view, "b": hash(B.header)})`` under the tag
:data:`ledger.hashing.TAG_COMMIT_VOTE`. With ``n`` validators, ``f = ⌊(n−1)/3⌋`` and
the quorum is ``Q = ⌈(n+f+1)/2⌉`` (4 of 5), so any two quorums intersect in at least
``f+1`` validators, one of them honest.

This check is shared by the consensus core, catch-up, the relay's light client, the
SDK and the offline receipt verifier.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ledger.crypto import ED25519, SignatureScheme
from ledger.encoding import encode
from ledger.errors import CertificateError, SchemaError
from ledger.hashing import TAG_COMMIT_VOTE
from ledger.schema import as_map, check_keys, get_bytes, get_int, get_list, get_str


def fault_tolerance(n: int) -> int:
    """f = ⌊(n−1)/3⌋."""
    return (n - 1) // 3


def quorum_size(n: int) -> int:
    """Q = ⌈(n+f+1)/2⌉; equals n−f when n = 3f+1, and 4 when n = 5."""
    f = fault_tolerance(n)
    return (n + f + 2) // 2


@dataclass(frozen=True)
class Validator:
    node_id: str
    public_key: bytes


@dataclass(frozen=True)
class ValidatorSet:
    """An ordered validator set; the order fixes primaries (view v → validators[v mod n])."""

    validators: tuple[Validator, ...]

    def __post_init__(self) -> None:
        ids = [v.node_id for v in self.validators]
        if not ids:
            raise CertificateError("validator set is empty")
        if len(set(ids)) != len(ids):
            raise CertificateError("validator set names a node twice")
        if len({v.public_key for v in self.validators}) != len(ids):
            raise CertificateError("validator set uses one public key twice")

    @property
    def n(self) -> int:
        return len(self.validators)

    @property
    def f(self) -> int:
        return fault_tolerance(self.n)

    @property
    def quorum(self) -> int:
        return quorum_size(self.n)

    @cached_property
    def by_id(self) -> Mapping[str, Validator]:
        return {v.node_id: v for v in self.validators}

    def primary(self, view: int) -> str:
        return self.validators[view % self.n].node_id

    def to_wire(self) -> list[dict[str, Any]]:
        return [{"id": v.node_id, "pk": v.public_key} for v in self.validators]

    @staticmethod
    def from_wire(raw: Any) -> ValidatorSet:
        if not isinstance(raw, list):
            raise SchemaError("validator set: expected a list")
        out = []
        for item in raw:
            m = as_map(item, "validator")
            check_keys(m, frozenset({"id", "pk"}), "validator")
            out.append(Validator(get_str(m, "id", name=True), get_bytes(m, "pk", 32)))
        try:
            return ValidatorSet(tuple(out))
        except CertificateError as exc:
            raise SchemaError(str(exc)) from None


def commit_vote_message(channel: str, height: int, view: int, block_hash: bytes) -> bytes:
    """The bytes a validator signs (under TAG_COMMIT_VOTE) to commit a block."""
    return encode({"ch": channel, "h": height, "v": view, "b": block_hash})


@dataclass(frozen=True)
class Vote:
    validator: str
    signature: bytes


@dataclass(frozen=True)
class CommitCertificate:
    channel: str
    height: int
    view: int
    block_hash: bytes
    votes: tuple[Vote, ...]

    def message(self) -> bytes:
        return commit_vote_message(self.channel, self.height, self.view, self.block_hash)

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": 1,
            "ch": self.channel,
            "h": self.height,
            "view": self.view,
            "b": self.block_hash,
            "votes": [[v.validator, v.signature] for v in self.votes],
        }

    @staticmethod
    def from_wire(raw: Any) -> CommitCertificate:
        m = as_map(raw, "certificate")
        check_keys(m, frozenset({"v", "ch", "h", "view", "b", "votes"}), "certificate")
        if get_int(m, "v") != 1:
            raise SchemaError("certificate: unsupported version")
        votes = []
        for item in get_list(m, "votes", max_len=1024):
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not isinstance(item[0], str)
                or not isinstance(item[1], bytes)
            ):
                raise SchemaError("certificate: vote must be [validator, signature]")
            votes.append(Vote(item[0], item[1]))
        return CommitCertificate(
            channel=get_str(m, "ch", name=True),
            height=get_int(m, "h"),
            view=get_int(m, "view"),
            block_hash=get_bytes(m, "b", 32),
            votes=tuple(votes),
        )


def verify_certificate(
    cert: CommitCertificate,
    *,
    channel: str,
    height: int,
    block_hash: bytes,
    validators: ValidatorSet,
    scheme: SignatureScheme = ED25519,
) -> None:
    """Check that ``cert`` commits exactly ``block_hash`` at ``(channel, height)``.

    Raises :class:`CertificateError` (with a reason) if the certificate names another
    channel, height or block; if any vote is by a non-validator, repeated, or has an
    invalid signature; or if fewer than ``validators.quorum`` distinct validators signed.
    Returns ``None`` on success.
    """
    if cert.channel != channel:
        raise CertificateError(f"certificate is for channel {cert.channel!r}, not {channel!r}")
    if cert.height != height:
        raise CertificateError(f"certificate is for height {cert.height}, not {height}")
    if cert.block_hash != block_hash:
        raise CertificateError(f"certificate does not commit this block at height {height}")
    message = cert.message()
    seen: set[str] = set()
    for vote in cert.votes:
        if vote.validator in seen:
            raise CertificateError(f"validator {vote.validator!r} voted twice")
        seen.add(vote.validator)
        member = validators.by_id.get(vote.validator)
        if member is None:
            raise CertificateError(f"{vote.validator!r} is not a validator at height {height}")
        if not scheme.verify(member.public_key, TAG_COMMIT_VOTE, message, vote.signature):
            raise CertificateError(f"invalid signature from validator {vote.validator!r}")
    if len(seen) < validators.quorum:
        raise CertificateError(f"only {len(seen)} of the {validators.quorum} votes a quorum needs")


def distinct_signers(votes: Iterable[Vote]) -> int:
    return len({v.validator for v in votes})
