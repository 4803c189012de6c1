"""Consensus messages: frozen dataclasses, canonical wire forms, what each signature covers.

Every message names its ``channel`` and ``sender`` and is signed by the sender. The
signature covers :attr:`signing_bytes`: the canonical encoding (ledger.encoding) of a
small map that starts with the message kind ``"k"`` and the channel, and carries
digests instead of bulky content:

* a block is represented by its header hash (which commits to the transaction ids) and
  a digest of the transactions' signatures (which the header hash does not cover), so
  a relay cannot swap a client signature in a signed proposal;
* a nested signed message (a PREPARE inside a prepared certificate, a VIEW-CHANGE
  inside a NEW-VIEW) is represented by its :attr:`fingerprint`, which covers its own
  signing bytes *and* its signature.

Signatures use :data:`ledger.hashing.TAG_CONSENSUS_MSG`, except COMMIT, which signs
``ledger.certificate.commit_vote_message(channel, height, view, block_hash)`` under
``TAG_COMMIT_VOTE`` so that a quorum of COMMITs *is* a commit certificate.

Wire form: ``{"k": kind, "ch": channel, "from": sender, …fields…, "sig": signature}``.
:func:`encode_message` / :func:`decode_message` convert to and from bytes;
:func:`decode_message` raises :class:`ledger.errors.EncodingError` or
:class:`ledger.errors.SchemaError` (never anything else) on bad input, and bounds the
size of every list it reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Final, TypeAlias, TypeVar

from ledger.blocks import Block, BlockHeader, Transaction
from ledger.certificate import CommitCertificate, Vote, commit_vote_message
from ledger.crypto import Signer
from ledger.encoding import decode, encode, encode_list_of_encoded, encode_map_of_encoded
from ledger.errors import EncodingError, SchemaError
from ledger.hashing import TAG_COMMIT_VOTE, TAG_CONSENSUS_MSG, tagged_hash
from ledger.schema import (
    as_map,
    check_keys,
    get_bytes,
    get_int,
    get_list,
    get_str,
    get_str_bytes_pairs,
)

KIND_PRE_PREPARE: Final = "pre-prepare"
KIND_PREPARE: Final = "prepare"
KIND_COMMIT: Final = "commit"
KIND_VIEW_CHANGE: Final = "view-change"
KIND_NEW_VIEW: Final = "new-view"
KIND_FORWARD: Final = "forward"
KIND_STATUS: Final = "status"
KIND_FETCH: Final = "fetch"
KIND_BLOCKS: Final = "blocks"

#: Default bound on an encoded message (a NEW-VIEW carries up to Q·W blocks).
MAX_MESSAGE_BYTES: Final = 64 << 20
#: Bounds on the lists a decoded message may hold.
MAX_VALIDATORS: Final = 1024
MAX_PREPARED: Final = 64
MAX_FORWARD_TXS: Final = 20_000
MAX_BLOCKS_ENTRIES: Final = 1024

_HASH = 32
_SIG_MAX = 128


def _digest(value: Any) -> bytes:
    return tagged_hash(TAG_CONSENSUS_MSG, encode(value))


def _digest_parts(parts: Sequence[bytes]) -> bytes:
    """Digest of a sequence of byte strings (each length-prefixed: unambiguous)."""
    return tagged_hash(TAG_CONSENSUS_MSG, b"".join(len(p).to_bytes(4, "big") + p for p in parts))


def tx_signatures_digest(transactions: Sequence[Transaction]) -> bytes:
    """Digest of the client signatures of ``transactions`` (in order)."""
    return _digest_parts([tx.signature for tx in transactions])


def certificate_digest(cert: CommitCertificate) -> bytes:
    return _digest(cert.to_wire())


def _fingerprint(tag: str, signing_bytes: bytes, signature: bytes) -> bytes:
    return _digest([tag, signing_bytes, signature])


def _head(m: dict[str, Any], kind: str, keys: frozenset[str]) -> tuple[str, str, bytes]:
    check_keys(m, keys | {"k", "ch", "from", "sig"}, kind)
    return (
        get_str(m, "ch", name=True),
        get_str(m, "from", name=True),
        get_bytes(m, "sig", max_size=_SIG_MAX),
    )


def _opt(m: dict[str, Any], key: str) -> Any:
    return m.get(key)


# ---------------------------------------------------------------------------------------
# Normal case
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrePrepare:
    """The primary of ``view`` proposes ``block`` at height ``block.height``.

    In a NEW-VIEW, the new primary re-proposes a block prepared in an earlier view: the
    block (and its header's ``view``/``proposer``) is unchanged, only this message's
    ``view`` is the new one.
    """

    channel: str
    sender: str
    view: int
    block: Block
    signature: bytes = b""

    kind: ClassVar[str] = KIND_PRE_PREPARE
    tag: ClassVar[str] = TAG_CONSENSUS_MSG

    @property
    def height(self) -> int:
        return self.block.height

    @property
    def block_hash(self) -> bytes:
        return self.block.hash

    @cached_property
    def signing_bytes(self) -> bytes:
        return encode(
            {
                "k": self.kind,
                "ch": self.channel,
                "from": self.sender,
                "v": self.view,
                "h": self.block.height,
                "b": self.block.hash,
                "ts": tx_signatures_digest(self.block.transactions),
            }
        )

    @cached_property
    def fingerprint(self) -> bytes:
        return _fingerprint(self.tag, self.signing_bytes, self.signature)

    def to_wire(self) -> dict[str, Any]:
        return {
            "k": self.kind,
            "ch": self.channel,
            "from": self.sender,
            "v": self.view,
            "block": self.block.to_wire(),
            "sig": self.signature,
        }

    @staticmethod
    def from_wire(raw: Any) -> PrePrepare:
        m = as_map(raw, KIND_PRE_PREPARE)
        ch, sender, sig = _head(m, KIND_PRE_PREPARE, frozenset({"v", "block"}))
        return PrePrepare(ch, sender, get_int(m, "v"), Block.from_wire(m.get("block")), sig)


@dataclass(frozen=True)
class Prepare:
    """``sender`` accepts the proposal ``block_hash`` at ``(view, height)``."""

    channel: str
    sender: str
    view: int
    height: int
    block_hash: bytes
    signature: bytes = b""

    kind: ClassVar[str] = KIND_PREPARE
    tag: ClassVar[str] = TAG_CONSENSUS_MSG

    @cached_property
    def signing_bytes(self) -> bytes:
        return encode(
            {
                "k": self.kind,
                "ch": self.channel,
                "from": self.sender,
                "v": self.view,
                "h": self.height,
                "b": self.block_hash,
            }
        )

    @cached_property
    def fingerprint(self) -> bytes:
        return _fingerprint(self.tag, self.signing_bytes, self.signature)

    def to_wire(self) -> dict[str, Any]:
        return {
            "k": self.kind,
            "ch": self.channel,
            "from": self.sender,
            "v": self.view,
            "h": self.height,
            "b": self.block_hash,
            "sig": self.signature,
        }

    @staticmethod
    def from_wire(raw: Any) -> Prepare:
        m = as_map(raw, KIND_PREPARE)
        ch, sender, sig = _head(m, KIND_PREPARE, frozenset({"v", "h", "b"}))
        return Prepare(
            ch, sender, get_int(m, "v"), get_int(m, "h", lo=1), get_bytes(m, "b", _HASH), sig
        )


@dataclass(frozen=True)
class Commit:
    """``sender``'s commit vote; its signature is a certificate vote (TAG_COMMIT_VOTE)."""

    channel: str
    sender: str
    view: int
    height: int
    block_hash: bytes
    signature: bytes = b""

    kind: ClassVar[str] = KIND_COMMIT
    tag: ClassVar[str] = TAG_COMMIT_VOTE

    @cached_property
    def signing_bytes(self) -> bytes:
        return commit_vote_message(self.channel, self.height, self.view, self.block_hash)

    @cached_property
    def fingerprint(self) -> bytes:
        return _fingerprint(self.tag, self.signing_bytes + self.sender.encode(), self.signature)

    def vote(self) -> Vote:
        return Vote(self.sender, self.signature)

    def to_wire(self) -> dict[str, Any]:
        return {
            "k": self.kind,
            "ch": self.channel,
            "from": self.sender,
            "v": self.view,
            "h": self.height,
            "b": self.block_hash,
            "sig": self.signature,
        }

    @staticmethod
    def from_wire(raw: Any) -> Commit:
        m = as_map(raw, KIND_COMMIT)
        ch, sender, sig = _head(m, KIND_COMMIT, frozenset({"v", "h", "b"}))
        return Commit(
            ch, sender, get_int(m, "v"), get_int(m, "h", lo=1), get_bytes(m, "b", _HASH), sig
        )


# ---------------------------------------------------------------------------------------
# View change
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedCertificate:
    """Proof that ``preprepare``'s block was prepared in ``preprepare.view``: the signed
    PRE-PREPARE plus signed matching PREPAREs from a quorum of distinct validators.

    Not a message on its own; carried in VIEW-CHANGE and kept in the durable state.
    On the wire the PREPAREs are ``[sender, signature]`` pairs (the rest is the
    PRE-PREPARE's).
    """

    preprepare: PrePrepare
    prepares: tuple[Prepare, ...]

    @property
    def view(self) -> int:
        return self.preprepare.view

    @property
    def height(self) -> int:
        return self.preprepare.height

    @property
    def block(self) -> Block:
        return self.preprepare.block

    @property
    def block_hash(self) -> bytes:
        return self.preprepare.block_hash

    @cached_property
    def fingerprint(self) -> bytes:
        return _digest([self.preprepare.fingerprint, [p.fingerprint for p in self.prepares]])

    def to_wire(self) -> dict[str, Any]:
        return {
            "pp": self.preprepare.to_wire(),
            "ps": [[p.sender, p.signature] for p in self.prepares],
        }

    @cached_property
    def encoded(self) -> bytes:
        """``encode(self.to_wire())``, with the PRE-PREPARE's block spliced in from its
        cached encoding (:func:`encode_message`)."""
        ps = encode([[p.sender, p.signature] for p in self.prepares])
        return encode_map_of_encoded({"pp": encode_message(self.preprepare), "ps": ps})

    @staticmethod
    def from_wire(raw: Any) -> PreparedCertificate:
        m = as_map(raw, "prepared certificate")
        check_keys(m, frozenset({"pp", "ps"}), "prepared certificate")
        pp = PrePrepare.from_wire(m.get("pp"))
        pairs = get_str_bytes_pairs(
            m,
            "ps",
            max_len=MAX_VALIDATORS,
            max_bytes=_SIG_MAX,
            error="prepared certificate: prepare must be [sender, signature]",
        )
        prepares = tuple(
            Prepare(pp.channel, sender, pp.view, pp.height, pp.block_hash, sig)
            for sender, sig in pairs
        )
        return PreparedCertificate(pp, prepares)


@dataclass(frozen=True)
class ViewChange:
    """``sender`` moves to ``new_view``.

    It reports its stable point (its highest committed height, with that block's header
    and commit certificate; none at height 0) and, for each height above it, the
    prepared certificate of the highest view it holds (ascending heights).
    """

    channel: str
    sender: str
    new_view: int
    stable_height: int
    stable_header: BlockHeader | None
    stable_cert: CommitCertificate | None
    prepared: tuple[PreparedCertificate, ...]
    signature: bytes = b""

    kind: ClassVar[str] = KIND_VIEW_CHANGE
    tag: ClassVar[str] = TAG_CONSENSUS_MSG

    @cached_property
    def signing_bytes(self) -> bytes:
        return encode(
            {
                "k": self.kind,
                "ch": self.channel,
                "from": self.sender,
                "v": self.new_view,
                "sh": self.stable_height,
                "sb": self.stable_header.hash if self.stable_header else b"",
                "sc": certificate_digest(self.stable_cert) if self.stable_cert else b"",
                "p": [pc.fingerprint for pc in self.prepared],
            }
        )

    @cached_property
    def fingerprint(self) -> bytes:
        return _fingerprint(self.tag, self.signing_bytes, self.signature)

    def to_wire(self) -> dict[str, Any]:
        return {
            "k": self.kind,
            "ch": self.channel,
            "from": self.sender,
            "v": self.new_view,
            "sh": self.stable_height,
            "shdr": self.stable_header.to_wire() if self.stable_header else None,
            "cert": self.stable_cert.to_wire() if self.stable_cert else None,
            "p": [pc.to_wire() for pc in self.prepared],
            "sig": self.signature,
        }

    @staticmethod
    def from_wire(raw: Any) -> ViewChange:
        m = as_map(raw, KIND_VIEW_CHANGE)
        ch, sender, sig = _head(m, KIND_VIEW_CHANGE, frozenset({"v", "sh", "shdr", "cert", "p"}))
        raw_header, raw_cert = _opt(m, "shdr"), _opt(m, "cert")
        return ViewChange(
            channel=ch,
            sender=sender,
            new_view=get_int(m, "v"),
            stable_height=get_int(m, "sh"),
            stable_header=None if raw_header is None else BlockHeader.from_wire(raw_header),
            stable_cert=None if raw_cert is None else CommitCertificate.from_wire(raw_cert),
            prepared=tuple(
                PreparedCertificate.from_wire(p) for p in get_list(m, "p", max_len=MAX_PREPARED)
            ),
            signature=sig,
        )


@dataclass(frozen=True)
class NewView:
    """The primary of ``view`` starts it: the quorum of VIEW-CHANGEs it used and its
    re-proposals (PRE-PREPAREs of ``view``), which every backup recomputes."""

    channel: str
    sender: str
    view: int
    view_changes: tuple[ViewChange, ...]
    proposals: tuple[PrePrepare, ...]
    signature: bytes = b""

    kind: ClassVar[str] = KIND_NEW_VIEW
    tag: ClassVar[str] = TAG_CONSENSUS_MSG

    @cached_property
    def signing_bytes(self) -> bytes:
        return encode(
            {
                "k": self.kind,
                "ch": self.channel,
                "from": self.sender,
                "v": self.view,
                "vc": [vc.fingerprint for vc in self.view_changes],
                "pp": [pp.fingerprint for pp in self.proposals],
            }
        )

    @cached_property
    def fingerprint(self) -> bytes:
        return _fingerprint(self.tag, self.signing_bytes, self.signature)

    def to_wire(self) -> dict[str, Any]:
        return {
            "k": self.kind,
            "ch": self.channel,
            "from": self.sender,
            "v": self.view,
            "vc": [vc.to_wire() for vc in self.view_changes],
            "pp": [pp.to_wire() for pp in self.proposals],
            "sig": self.signature,
        }

    @staticmethod
    def from_wire(raw: Any) -> NewView:
        m = as_map(raw, KIND_NEW_VIEW)
        ch, sender, sig = _head(m, KIND_NEW_VIEW, frozenset({"v", "vc", "pp"}))
        return NewView(
            channel=ch,
            sender=sender,
            view=get_int(m, "v"),
            view_changes=tuple(
                ViewChange.from_wire(x) for x in get_list(m, "vc", max_len=MAX_VALIDATORS)
            ),
            proposals=tuple(
                PrePrepare.from_wire(x) for x in get_list(m, "pp", max_len=MAX_PREPARED)
            ),
            signature=sig,
        )


# ---------------------------------------------------------------------------------------
# Dissemination, status and catch-up
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Forward:
    """Client transactions ``sender`` admitted, passed on to every other validator."""

    channel: str
    sender: str
    transactions: tuple[Transaction, ...]
    signature: bytes = b""

    kind: ClassVar[str] = KIND_FORWARD
    tag: ClassVar[str] = TAG_CONSENSUS_MSG

    @cached_property
    def signing_bytes(self) -> bytes:
        return encode(
            {
                "k": self.kind,
                "ch": self.channel,
                "from": self.sender,
                "txs": _digest_parts(
                    [part for tx in self.transactions for part in (tx.tx_id, tx.signature)]
                ),
            }
        )

    @cached_property
    def fingerprint(self) -> bytes:
        return _fingerprint(self.tag, self.signing_bytes, self.signature)

    def to_wire(self) -> dict[str, Any]:
        return {
            "k": self.kind,
            "ch": self.channel,
            "from": self.sender,
            "txs": [tx.to_wire() for tx in self.transactions],
            "sig": self.signature,
        }

    @staticmethod
    def from_wire(raw: Any) -> Forward:
        m = as_map(raw, KIND_FORWARD)
        ch, sender, sig = _head(m, KIND_FORWARD, frozenset({"txs"}))
        txs = tuple(Transaction.from_wire(t) for t in get_list(m, "txs", max_len=MAX_FORWARD_TXS))
        return Forward(ch, sender, txs, sig)


@dataclass(frozen=True)
class Status:
    """Periodic: ``sender``'s view (and whether it is active in it) and committed head."""

    channel: str
    sender: str
    view: int
    view_active: bool
    committed_height: int
    committed_hash: bytes
    signature: bytes = b""

    kind: ClassVar[str] = KIND_STATUS
    tag: ClassVar[str] = TAG_CONSENSUS_MSG

    @cached_property
    def signing_bytes(self) -> bytes:
        return encode(
            {
                "k": self.kind,
                "ch": self.channel,
                "from": self.sender,
                "v": self.view,
                "act": self.view_active,
                "h": self.committed_height,
                "b": self.committed_hash,
            }
        )

    @cached_property
    def fingerprint(self) -> bytes:
        return _fingerprint(self.tag, self.signing_bytes, self.signature)

    def to_wire(self) -> dict[str, Any]:
        return {
            "k": self.kind,
            "ch": self.channel,
            "from": self.sender,
            "v": self.view,
            "act": self.view_active,
            "h": self.committed_height,
            "b": self.committed_hash,
            "sig": self.signature,
        }

    @staticmethod
    def from_wire(raw: Any) -> Status:
        m = as_map(raw, KIND_STATUS)
        ch, sender, sig = _head(m, KIND_STATUS, frozenset({"v", "act", "h", "b"}))
        active = m.get("act")
        if not isinstance(active, bool):
            raise SchemaError("field 'act': expected a boolean")
        return Status(
            ch, sender, get_int(m, "v"), active, get_int(m, "h"), get_bytes(m, "b", _HASH), sig
        )


@dataclass(frozen=True)
class Fetch:
    """Catch-up request: committed blocks ``from_height`` … ``to_height`` (inclusive)."""

    channel: str
    sender: str
    from_height: int
    to_height: int
    signature: bytes = b""

    kind: ClassVar[str] = KIND_FETCH
    tag: ClassVar[str] = TAG_CONSENSUS_MSG

    @cached_property
    def signing_bytes(self) -> bytes:
        return encode(
            {
                "k": self.kind,
                "ch": self.channel,
                "from": self.sender,
                "lo": self.from_height,
                "hi": self.to_height,
            }
        )

    @cached_property
    def fingerprint(self) -> bytes:
        return _fingerprint(self.tag, self.signing_bytes, self.signature)

    def to_wire(self) -> dict[str, Any]:
        return {
            "k": self.kind,
            "ch": self.channel,
            "from": self.sender,
            "lo": self.from_height,
            "hi": self.to_height,
            "sig": self.signature,
        }

    @staticmethod
    def from_wire(raw: Any) -> Fetch:
        m = as_map(raw, KIND_FETCH)
        ch, sender, sig = _head(m, KIND_FETCH, frozenset({"lo", "hi"}))
        lo = get_int(m, "lo", lo=1)
        hi = get_int(m, "hi", lo=lo, hi=lo + MAX_BLOCKS_ENTRIES - 1)
        return Fetch(ch, sender, lo, hi, sig)


@dataclass(frozen=True)
class Blocks:
    """Catch-up answer: consecutive committed blocks, each with its certificate.

    ``extras`` is empty or holds one opaque byte string per entry (empty: none for
    that block): what the application keeps beside each block for nodes that catch
    up (the node layer: the block's state delta). Consensus passes them on
    (:attr:`consensus.replica.Ready.extras`) without checking them; the sender's
    signature covers them, the application checks them against what it can verify.
    """

    channel: str
    sender: str
    entries: tuple[tuple[Block, CommitCertificate], ...]
    signature: bytes = b""
    extras: tuple[bytes, ...] = ()

    kind: ClassVar[str] = KIND_BLOCKS
    tag: ClassVar[str] = TAG_CONSENSUS_MSG

    def __post_init__(self) -> None:
        if self.extras and len(self.extras) != len(self.entries):
            raise ValueError("blocks: extras must be empty or one per entry")

    @cached_property
    def signing_bytes(self) -> bytes:
        m: dict[str, Any] = {
            "k": self.kind,
            "ch": self.channel,
            "from": self.sender,
            "e": _digest(
                [
                    [b.hash, tx_signatures_digest(b.transactions), certificate_digest(c)]
                    for b, c in self.entries
                ]
            ),
        }
        if self.extras:
            m["x"] = _digest_parts(self.extras)
        return encode(m)

    @cached_property
    def fingerprint(self) -> bytes:
        return _fingerprint(self.tag, self.signing_bytes, self.signature)

    def to_wire(self) -> dict[str, Any]:
        w: dict[str, Any] = {
            "k": self.kind,
            "ch": self.channel,
            "from": self.sender,
            "e": [[b.to_wire(), c.to_wire()] for b, c in self.entries],
            "sig": self.signature,
        }
        if self.extras:
            w["x"] = list(self.extras)
        return w

    @staticmethod
    def from_wire(raw: Any) -> Blocks:
        m = as_map(raw, KIND_BLOCKS)
        ch, sender, sig = _head(m, KIND_BLOCKS, frozenset({"e", "x"}))
        entries = []
        for item in get_list(m, "e", max_len=MAX_BLOCKS_ENTRIES):
            if not isinstance(item, list) or len(item) != 2:
                raise SchemaError("blocks: entry must be [block, certificate]")
            entries.append((Block.from_wire(item[0]), CommitCertificate.from_wire(item[1])))
        extras: tuple[bytes, ...] = ()
        if "x" in m:
            raw_extras = get_list(m, "x", max_len=MAX_BLOCKS_ENTRIES)
            if (
                not raw_extras
                or len(raw_extras) != len(entries)
                or not all(isinstance(x, bytes) for x in raw_extras)
            ):
                raise SchemaError("blocks: extras, if present, must be one byte string per entry")
            extras = tuple(raw_extras)
        return Blocks(ch, sender, tuple(entries), sig, extras)


Message: TypeAlias = (
    PrePrepare | Prepare | Commit | ViewChange | NewView | Forward | Status | Fetch | Blocks
)

_M = TypeVar("_M", PrePrepare, Prepare, Commit, ViewChange, NewView, Forward, Status, Fetch, Blocks)

_DECODERS: Final[dict[str, Callable[[Any], Message]]] = {
    KIND_PRE_PREPARE: PrePrepare.from_wire,
    KIND_PREPARE: Prepare.from_wire,
    KIND_COMMIT: Commit.from_wire,
    KIND_VIEW_CHANGE: ViewChange.from_wire,
    KIND_NEW_VIEW: NewView.from_wire,
    KIND_FORWARD: Forward.from_wire,
    KIND_STATUS: Status.from_wire,
    KIND_FETCH: Fetch.from_wire,
    KIND_BLOCKS: Blocks.from_wire,
}


def sign(message: _M, signer: Signer) -> _M:
    """Return a copy of ``message`` signed by ``signer`` (its ``sender``'s key)."""
    signature = signer.sign(message.tag, message.signing_bytes)
    return dataclasses.replace(message, signature=signature)


def message_from_wire(raw: Any) -> Message:
    """Build a message from its wire map; raises :class:`SchemaError`."""
    m = as_map(raw, "message")
    kind = m.get("k")
    if not isinstance(kind, str) or kind not in _DECODERS:
        raise SchemaError(f"field 'k': unknown message kind {kind!r}")
    try:
        return _DECODERS[kind](m)
    except (SchemaError, EncodingError):
        raise
    except Exception as exc:  # e.g. a malformed nested object tripping a constructor
        raise SchemaError(f"{kind}: malformed ({type(exc).__name__})") from None


def encode_message(message: Message) -> bytes:
    """Canonical bytes of ``message`` (its wire form).

    The messages that carry blocks or transactions — PRE-PREPARE, FORWARD, BLOCKS,
    VIEW-CHANGE (prepared certificates), NEW-VIEW — splice in the cached canonical
    bytes of those (:meth:`Block.encoded`, :meth:`Transaction.encoded`,
    :attr:`PreparedCertificate.encoded`) instead of normalising every payload again;
    the bytes are the same."""
    if isinstance(message, PrePrepare | Forward | Blocks | ViewChange | NewView):
        fields = {
            "k": encode(message.kind),
            "ch": encode(message.channel),
            "from": encode(message.sender),
            "sig": encode(message.signature),
        }
        if isinstance(message, ViewChange):
            fields["v"] = encode(message.new_view)
            fields["sh"] = encode(message.stable_height)
            hdr, cert = message.stable_header, message.stable_cert
            fields["shdr"] = encode(None) if hdr is None else hdr.encoded
            fields["cert"] = encode(None if cert is None else cert.to_wire())
            fields["p"] = encode_list_of_encoded([pc.encoded for pc in message.prepared])
        elif isinstance(message, NewView):
            fields["v"] = encode(message.view)
            fields["vc"] = encode_list_of_encoded([encode_message(m) for m in message.view_changes])
            fields["pp"] = encode_list_of_encoded([encode_message(m) for m in message.proposals])
        elif isinstance(message, PrePrepare):
            fields["v"] = encode(message.view)
            fields["block"] = message.block.encoded()
        elif isinstance(message, Forward):
            fields["txs"] = encode_list_of_encoded([tx.encoded() for tx in message.transactions])
        else:
            fields["e"] = encode_list_of_encoded(
                [
                    encode_list_of_encoded([b.encoded(), encode(c.to_wire())])
                    for b, c in message.entries
                ]
            )
            if message.extras:
                fields["x"] = encode(list(message.extras))
        return encode_map_of_encoded(fields)
    return encode(message.to_wire())


def decode_message(data: bytes, *, max_size: int = MAX_MESSAGE_BYTES) -> Message:
    """Decode bytes from a peer.

    Raises :class:`EncodingError` (not canonical, too large) or :class:`SchemaError`
    (unknown kind, missing or extra fields, lists over their bounds). Signatures are
    NOT checked here; the replica checks them against the validator set.
    """
    return message_from_wire(decode(data, max_size=max_size))


def short_hash(h: bytes) -> str:
    """First 8 hex digits, for logs and transcripts."""
    return h.hex()[:8]


def describe(message: Message) -> str:
    """A one-line, deterministic, human-readable summary (for logs and transcripts)."""
    if isinstance(message, PrePrepare):
        b = message.block
        return (
            f"PRE-PREPARE v{message.view} h{b.height} {short_hash(b.hash)} "
            f"txs={len(b.transactions)} prev={short_hash(b.header.prev_hash)}"
        )
    if isinstance(message, Prepare | Commit):
        name = "PREPARE" if isinstance(message, Prepare) else "COMMIT"
        return f"{name} v{message.view} h{message.height} {short_hash(message.block_hash)}"
    if isinstance(message, ViewChange):
        prepared = ",".join(
            f"{pc.height}@v{pc.view}:{short_hash(pc.block_hash)}" for pc in message.prepared
        )
        return (
            f"VIEW-CHANGE v{message.new_view} stable={message.stable_height} prepared=[{prepared}]"
        )
    if isinstance(message, NewView):
        senders = ",".join(vc.sender for vc in message.view_changes)
        props = ",".join(f"{pp.height}:{short_hash(pp.block_hash)}" for pp in message.proposals)
        return f"NEW-VIEW v{message.view} from=[{senders}] proposals=[{props}]"
    if isinstance(message, Forward):
        return f"FORWARD txs={len(message.transactions)}"
    if isinstance(message, Status):
        active = "" if message.view_active else " (changing)"
        return f"STATUS v{message.view}{active} h{message.committed_height}"
    if isinstance(message, Fetch):
        return f"FETCH {message.from_height}..{message.to_height}"
    heights = [b.height for b, _ in message.entries]
    span = f"{heights[0]}..{heights[-1]}" if heights else "none"
    return f"BLOCKS {span}"
