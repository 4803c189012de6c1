"""Records, commitments and the transactions that carry them (pure: no I/O).

A **record** is the lender's full account of one loan event: a canonical map (see
:func:`loan_event_record`) whose exact bytes ``data = ledger.encoding.encode(map)``
the lender keeps, with a fresh 32-byte ``salt``. Only the salted **commitment**

    commitment = tagged_hash(TAG_RECORD, salt + data)

goes on chain (``channels.pseudonym.record_commitment``; the receipt verifier's
``crosschain.receipt.record_commitment(salt, data)``), next to the regulatory fields the
supervision channel checks. To prove the record later (e.g. to the court) the lender
reveals ``data`` and ``salt``.

Building is split so keys can live in an HSM: :class:`UnsignedTransaction` exposes the
exact bytes to sign (:attr:`UnsignedTransaction.signing_message`) and
:meth:`UnsignedTransaction.attach` checks and attaches the signature.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from channels.pseudonym import SALT_SIZE
from channels.supervision import MAX_BATCH_EVENTS, parse_loan_event, parse_loan_event_batch
from clients._pseudonym import PseudonymKey, is_id_number
from ledger.blocks import MAX_TX_PAYLOAD_BYTES, Transaction, record_leaves
from ledger.crypto import ED25519, Ed25519Signer, SignatureScheme, Signer, signing_payload
from ledger.encoding import decode, encode
from ledger.errors import SchemaError, SignatureError
from ledger.evidence_code import code_for_leaf
from ledger.hashing import TAG_RECORD, TAG_TX, tagged_hash

SUPERVISION: Final = "supervision"
LOAN_EVENT: Final = "loan_event"
LOAN_EVENT_BATCH: Final = "loan_event_batch"
RECORD_KIND: Final = "loan_event"


def commitment_of(salt: bytes, data: bytes) -> bytes:
    """``tagged_hash(TAG_RECORD, salt + data)``."""
    if len(salt) != SALT_SIZE:
        raise SchemaError(f"salt must be {SALT_SIZE} bytes")
    return tagged_hash(TAG_RECORD, salt + data)


def _refuse_raw_ids(value: Any, where: str) -> None:
    if isinstance(value, str):
        if is_id_number(value):
            raise SchemaError(
                f"{where}: looks like a resident ID number; records carry borrower_ref only"
            )
    elif isinstance(value, Mapping):
        for k, v in value.items():
            _refuse_raw_ids(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _refuse_raw_ids(v, f"{where}[{i}]")


@dataclass(frozen=True)
class Record:
    """A committed record: its exact bytes and salt (both secret until revealed)."""

    data: bytes = field(repr=False)
    salt: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.salt) != SALT_SIZE:
            raise SchemaError(f"salt must be {SALT_SIZE} bytes")

    @property
    def commitment(self) -> bytes:
        return commitment_of(self.salt, self.data)

    @property
    def value(self) -> Any:
        """The record map (decoded from the committed bytes)."""
        return decode(self.data)

    @staticmethod
    def new(value: Mapping[str, Any], *, salt: bytes | None = None) -> Record:
        """Encode ``value`` canonically and salt it (32 fresh random bytes by default).

        Raises :class:`SchemaError` if the value cannot be encoded (floats…) or if any
        text in it is a resident ID number (records name borrowers by reference only).
        """
        _refuse_raw_ids(value, "record")
        return Record(encode(dict(value)), secrets.token_bytes(SALT_SIZE) if salt is None else salt)


@dataclass(frozen=True)
class LoanEvent:
    """One loan event as the lender reports it.

    The first eight fields are the regulatory fields the supervision channel checks
    (``channels.loans``: ``event`` is one of contract, disbursement, repayment, overdue,
    collection, settlement; amounts in cents, rate in basis points a year).
    ``details`` is the rest of the lender's record (contract number, channel,
    repayment schedule…): committed, kept locally, never sent. ``borrower_ref`` is the
    pseudonymous reference (:meth:`PseudonymKey.borrower_ref`), never a raw ID number.
    """

    report_id: str
    loan_id: str
    borrower_ref: bytes
    event: str
    amount_cents: int
    rate_bp: int
    term_months: int
    event_time_ms: int
    details: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def regulatory_fields(self) -> dict[str, Any]:
        return {
            "report_id": self.report_id,
            "loan_id": self.loan_id,
            "borrower_ref": self.borrower_ref,
            "event": self.event,
            "amount_cents": self.amount_cents,
            "rate_bp": self.rate_bp,
            "term_months": self.term_months,
            "event_time_ms": self.event_time_ms,
        }

    @staticmethod
    def from_json(
        doc: Any, *, pseudonym: PseudonymKey | None = None, where: str = "event"
    ) -> LoanEvent:
        """Read an event from JSON (the CLI's file format, see docs/sdk.md).

        ``borrower_ref`` is 64 hex digits, or give ``id_number`` and a pseudonym key:
        the reference is computed here and the number dropped. Raises SchemaError.
        """
        if not isinstance(doc, dict):
            raise SchemaError(f"{where}: expected a JSON object")
        allowed = {
            "report_id", "loan_id", "borrower_ref", "id_number", "event", "amount_cents",
            "rate_bp", "term_months", "event_time_ms", "details",
        }  # fmt: skip
        extra = set(doc) - allowed
        if extra:
            raise SchemaError(f"{where}: unknown field(s) {sorted(extra)}")
        if ("borrower_ref" in doc) == ("id_number" in doc):
            raise SchemaError(f"{where}: give exactly one of borrower_ref and id_number")
        if "id_number" in doc:
            if pseudonym is None:
                raise SchemaError(f"{where}: id_number needs the bureau's pseudonym key")
            raw_id = doc["id_number"]
            if not isinstance(raw_id, str):
                raise SchemaError(f"{where}.id_number: expected a string")
            try:
                ref = pseudonym.borrower_ref(raw_id)
            except SchemaError as exc:
                raise SchemaError(f"{where}.id_number: {exc.message}") from None
        else:
            ref_hex = doc["borrower_ref"]
            try:
                ref = bytes.fromhex(ref_hex) if isinstance(ref_hex, str) else b""
            except ValueError:
                ref = b""
            if len(ref) != 32:
                raise SchemaError(f"{where}.borrower_ref: expected 64 hex digits")

        def integer(name: str) -> int:
            v = doc.get(name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise SchemaError(f"{where}.{name}: expected an integer")
            return v

        def text(name: str) -> str:
            v = doc.get(name)
            if not isinstance(v, str):
                raise SchemaError(f"{where}.{name}: expected a string")
            return v

        details = doc.get("details", {})
        if not isinstance(details, dict):
            raise SchemaError(f"{where}.details: expected an object")
        return LoanEvent(
            report_id=text("report_id"),
            loan_id=text("loan_id"),
            borrower_ref=ref,
            event=text("event"),
            amount_cents=integer("amount_cents"),
            rate_bp=integer("rate_bp"),
            term_months=integer("term_months"),
            event_time_ms=integer("event_time_ms"),
            details=details,
        )


def loan_event_record(lender: str, ev: LoanEvent) -> dict[str, Any]:
    """The record map committed for ``ev``: ``{"v": 1, "kind": "loan_event", "lender",
    <the eight regulatory fields>, "details"}``."""
    return {"v": 1, "kind": RECORD_KIND, "lender": lender, **ev.regulatory_fields(),
            "details": dict(ev.details)}  # fmt: skip


def loan_event_item(ev: LoanEvent, commitment: bytes) -> dict[str, Any]:
    """One event as it travels on chain: the regulatory fields plus the record
    commitment ``"c"`` (``channels.supervision.parse_event_map``)."""
    return {**ev.regulatory_fields(), "c": commitment}


def loan_events_payload(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The payload of ``loan_event`` (one item) and ``loan_event_batch``: the events as
    the payload's ``"records"`` list, so each becomes one record leaf of the block's
    ``record_root`` (ledger.blocks) and gets its own evidence code once anchored."""
    return {"records": list(items)}


def build_loan_events(
    lender: str, events: Sequence[LoanEvent], *, salts: Sequence[bytes] | None = None
) -> tuple[str, dict[str, Any], tuple[Record, ...]]:
    """``(tx type, payload, records)`` for one event (``loan_event``) or a batch
    (``loan_event_batch``, atomic, at most 1000 events).

    Raises :class:`SchemaError` naming the event and field if an event would be refused
    by the supervision channel's schema, or a record holds a raw ID number.
    """
    if not events:
        raise SchemaError("no events to report")
    if len(events) > MAX_BATCH_EVENTS:
        raise SchemaError(f"at most {MAX_BATCH_EVENTS} events per transaction")
    if salts is not None and len(salts) != len(events):
        raise SchemaError("one salt per event")
    records: list[Record] = []
    items: list[dict[str, Any]] = []
    for i, ev in enumerate(events):
        where = f"events[{i}] (report {ev.report_id})" if len(events) > 1 else "event"
        try:
            rec = Record.new(
                loan_event_record(lender, ev), salt=None if salts is None else salts[i]
            )
        except SchemaError as exc:
            raise SchemaError(f"{where}: {exc.message}") from None
        item = loan_event_item(ev, rec.commitment)
        try:
            parse_loan_event(loan_events_payload([item]))
        except SchemaError as exc:
            raise SchemaError(f"{where}: {_strip_index(exc.message)}") from None
        records.append(rec)
        items.append(item)
    payload = loan_events_payload(items)
    if len(events) == 1:
        return LOAN_EVENT, payload, tuple(records)
    parse_loan_event_batch(payload)
    return LOAN_EVENT_BATCH, payload, tuple(records)


def _strip_index(message: str) -> str:
    """``records[0]: field 'x': …`` → ``field 'x': …`` (we name the event ourselves)."""
    head, sep, rest = message.partition(": ")
    return rest if sep and head.startswith("records[") else message


@dataclass(frozen=True)
class PreparedTransaction:
    """A signed transaction and the records it commits to (index ``i`` ↔ record ``i``)."""

    tx: Transaction
    records: tuple[Record, ...] = ()

    @property
    def tx_id(self) -> bytes:
        return self.tx.tx_id

    @property
    def channel(self) -> str:
        return self.tx.channel

    def expected_evidence_codes(self) -> list[str]:
        """The evidence codes this transaction's record leaves will get once anchored
        (deterministic; empty if the payload carries no ``"records"`` list)."""
        return expected_evidence_codes(self.tx)


@dataclass(frozen=True)
class UnsignedTransaction:
    """A built transaction awaiting its signature (offline / HSM signing).

    ``tx_id`` is final already (it covers the body, not the signature).
    """

    tx: Transaction
    records: tuple[Record, ...] = ()

    @property
    def tx_id(self) -> bytes:
        return self.tx.tx_id

    @property
    def digest(self) -> bytes:
        """The transaction id: SHA-256 (tagged) of the body; names what is signed."""
        return self.tx.tx_id

    @property
    def signing_message(self) -> bytes:
        """The exact bytes to sign with Ed25519 (pure EdDSA, not pre-hashed):
        ``b"wulian-sig:tx/v1\\x00" + body``."""
        return signing_payload(TAG_TX, self.tx.body_bytes)

    def sign_with(self, signer: Signer) -> PreparedTransaction:
        """Sign with any :class:`ledger.crypto.Signer` (e.g. an HSM adapter). The
        signature is verified before use, except one made here by libsodium
        (:class:`~ledger.crypto.Ed25519Signer`) with the transaction's own key, which is
        valid by construction (the check would double a lender's signing cost)."""
        signature = signer.sign(TAG_TX, self.tx.body_bytes)
        if type(signer) is Ed25519Signer and signer.public_key == self.tx.public_key:
            return PreparedTransaction(self._with_signature(signature), self.records)
        return self.attach(signature)

    def _with_signature(self, signature: bytes) -> Transaction:
        t = self.tx
        return Transaction(
            t.network, t.channel, t.type, t.sender, t.public_key, t.nonce, t.time_ms,
            t.payload, bytes(signature),
        )  # fmt: skip

    def attach(self, signature: bytes, *, scheme: SignatureScheme = ED25519) -> PreparedTransaction:
        """Attach a signature made elsewhere. Raises :class:`SignatureError` unless it
        verifies with the transaction's public key."""
        t = self.tx
        signed = self._with_signature(signature)
        if not scheme.verify(t.public_key, TAG_TX, t.body_bytes, signed.signature):
            raise SignatureError(
                f"signature does not verify for transaction {t.tx_id.hex()[:16]}… "
                "with the sender's public key"
            )
        return PreparedTransaction(signed, self.records)


def expected_evidence_codes(tx: Transaction) -> list[str]:
    """Evidence codes of ``tx``'s record leaves, in record order."""
    return [str(code_for_leaf(leaf)) for leaf in record_leaves(tx)]


def make_transaction(
    *,
    network: bytes,
    channel: str,
    tx_type: str,
    sender: str,
    public_key: bytes,
    payload: Mapping[str, Any],
    time_ms: int,
    nonce: int | None = None,
    records: Iterable[Record] = (),
) -> UnsignedTransaction:
    """An unsigned transaction (fresh random 62-bit nonce unless given). Raises
    :class:`SchemaError` if the payload cannot be encoded or is too large."""
    tx = Transaction(
        network=network,
        channel=channel,
        type=tx_type,
        sender=sender,
        public_key=public_key,
        nonce=secrets.randbits(62) if nonce is None else nonce,
        time_ms=time_ms,
        payload=dict(payload),
    )
    if len(tx.body_bytes) > MAX_TX_PAYLOAD_BYTES:
        raise SchemaError(f"transaction larger than {MAX_TX_PAYLOAD_BYTES} bytes")
    return UnsignedTransaction(tx, tuple(records))
