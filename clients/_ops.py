"""The client's operations, written once as effect generators (see :mod:`clients._core`)
and run by both :class:`clients.Client` and :class:`clients.AsyncClient`.

Invariant: when a record store is configured, a transaction is stored (durably)
before its first byte is sent; its state then moves forward as answers arrive.
"""

from __future__ import annotations

import contextlib
import functools
import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final
from urllib.parse import quote

from channels.risk import parse_feedback
from channels.service import parse_asset_register
from clients._core import JSON, Blocking, Core, Op, Sleep, error_of, raise_for
from clients._errors import (
    EvidenceNotAnchored,
    NodeUnreachable,
    ReceiptInvalid,
    RecordStoreError,
    SubmitRejected,
    TransactionInvalid,
)
from clients._models import CreditReport, TxStatus, jsonable
from clients._records import (
    SUPERVISION,
    LoanEvent,
    PreparedTransaction,
    Record,
    UnsignedTransaction,
    build_loan_events,
    expected_evidence_codes,
    make_transaction,
)
from clients._store import Progress, RecordStore, StoredRecord, StoredTx
from crosschain.receipt import (
    FAIL,
    Check,
    Receipt,
    TrustRoot,
    VerificationReport,
    verify_receipt,
)
from ledger.blocks import Transaction
from ledger.errors import ConfigError, LedgerError, SchemaError
from ledger.evidence_code import parse as parse_code

CREDIT: Final = "credit"
SERVICE: Final = "service"
RISK: Final = "risk"
QUERY_PURPOSES: Final = ("loan_application", "post_loan_management", "guarantee_review")

#: What ``evidence()`` accepts: a tx id, a prepared transaction, or a stored record.
EvidenceTarget = bytes | str | PreparedTransaction | Record | StoredRecord


@dataclass(frozen=True)
class Evidence:
    """An anchored record's evidence code and its receipt, verified offline."""

    tx_id: bytes
    index: int
    code: str
    receipt: Mapping[str, Any] = field(hash=False)
    report: VerificationReport = field(hash=False)
    record: Record | None = field(default=None, repr=False)

    def record_document(self) -> dict[str, Any]:
        """The record file (``wulian-record/1``) to hand over with the receipt."""
        if self.record is None:
            raise RecordStoreError("the record is not in this client's store", tx_id=self.tx_id)
        return record_document(self.record, tx_id=self.tx_id, index=self.index)


@dataclass(frozen=True)
class EvidenceCheck:
    """A node's verification of one (evidence code, record or commitment) pair
    (``POST /v1/evidence/verify``): ``result`` is ``verified`` / ``mismatch`` /
    ``not_anchored`` / ``chain_failed`` (or ``bad_evidence_code``), with the anchoring
    times and every check ``{name, ok, status, reason, detail}``."""

    code: str
    result: str
    detail: str = ""
    supervision_height: int | None = None
    supervision_time_ms: int | None = None
    judicial_height: int | None = None
    judicial_time_ms: int | None = None
    checks: tuple[Mapping[str, Any], ...] = field(default=(), hash=False)

    @property
    def verified(self) -> bool:
        return self.result == "verified"

    @staticmethod
    def from_json(doc: Any) -> EvidenceCheck:
        """Raises SchemaError if ``doc`` is not a verification result."""
        if not isinstance(doc, dict) or not isinstance(doc.get("result"), str):
            raise SchemaError("verification answer: expected an object with 'result'")
        err = doc.get("error")
        detail = err.get("message", "") if isinstance(err, dict) else doc.get("detail", "")
        checks = doc.get("checks", [])
        return EvidenceCheck(
            code=str(doc.get("code", "")),
            result=doc["result"],
            detail=str(detail),
            supervision_height=doc.get("supervision_height"),
            supervision_time_ms=doc.get("supervision_time_ms"),
            judicial_height=doc.get("judicial_height"),
            judicial_time_ms=doc.get("judicial_time_ms"),
            checks=tuple(c for c in checks if isinstance(c, dict))
            if isinstance(checks, list)
            else (),
        )


#: Most items sent in one verification request (the node's limit).
VERIFY_CHUNK: Final = 256


def record_document(
    record: Record, *, tx_id: bytes | None = None, index: int = 0
) -> dict[str, Any]:
    """A record as a JSON file: exact bytes and salt in hex (what ``verify`` needs),
    plus a readable copy of the record's fields."""
    doc: dict[str, Any] = {
        "format": "wulian-record/1",
        "data": record.data.hex(),
        "salt": record.salt.hex(),
        "commitment": record.commitment.hex(),
    }
    if tx_id is not None:
        doc["tx_id"] = tx_id.hex()
        doc["index"] = index
    with contextlib.suppress(LedgerError):
        doc["record"] = jsonable(record.value)
    return doc


def record_from_document(doc: Any, where: str = "record file") -> Record:
    """Read a ``wulian-record/1`` document. Raises SchemaError naming the field."""
    if not isinstance(doc, dict) or doc.get("format") != "wulian-record/1":
        raise SchemaError(f"{where}: not a wulian-record/1 document")
    out: dict[str, bytes] = {}
    for name in ("data", "salt"):
        v = doc.get(name)
        try:
            out[name] = bytes.fromhex(v) if isinstance(v, str) else b""
        except ValueError:
            raise SchemaError(f"{where}: {name}: not hexadecimal") from None
    if len(out["salt"]) != 32:
        raise SchemaError(f"{where}: salt: expected 32 bytes (64 hex digits)")
    return Record(out["data"], out["salt"])


def verify_offline(
    receipt: Mapping[str, Any] | Receipt,
    record: Record | None,
    trust: TrustRoot,
    *,
    commitment: bytes | None = None,
) -> VerificationReport:
    """Check a receipt (and, if given, the record it should prove) with no network."""
    return verify_receipt(
        receipt,
        trust,
        record_bytes=None if record is None else record.data,
        salt=None if record is None else record.salt,
        commitment=commitment,
    )


class Operations:
    """Everything a client does, as effect generators over one :class:`Core`."""

    def __init__(self, core: Core, store: RecordStore | None) -> None:
        self.core = core
        self.store = store
        self._trust: TrustRoot | None = None

    @property
    def settings(self) -> Any:
        return self.core.settings

    @property
    def trust(self) -> TrustRoot:
        if self._trust is None:
            self._trust = TrustRoot.from_genesis(self.core.settings.genesis)
        return self._trust

    # ------------------------------------------------------------------ building

    def build(
        self,
        channel: str,
        tx_type: str,
        payload: Mapping[str, Any],
        *,
        records: Sequence[Record] = (),
        nonce: int | None = None,
    ) -> UnsignedTransaction:
        s = self.core.settings
        return make_transaction(
            network=s.genesis.hash,
            channel=channel,
            tx_type=tx_type,
            sender=s.org,
            public_key=s.signer.public_key,
            payload=payload,
            time_ms=self.core.now_ms(),
            nonce=nonce,
            records=records,
        )

    def build_report(self, events: LoanEvent | Sequence[LoanEvent]) -> UnsignedTransaction:
        evs = [events] if isinstance(events, LoanEvent) else list(events)
        tx_type, payload, records = build_loan_events(self.core.settings.org, evs)
        return self.build(SUPERVISION, tx_type, payload, records=records)

    def sign(self, unsigned: UnsignedTransaction) -> PreparedTransaction:
        return unsigned.sign_with(self.core.settings.signer)

    def _need_store(self, what: str) -> RecordStore:
        if self.store is None:
            raise ConfigError("client", "store", f"{what} needs a record store (store=DIR)")
        return self.store

    def keep(self, item: PreparedTransaction | UnsignedTransaction) -> Op[StoredTx | None]:
        """Store ``item`` durably (if the client has a store). Records need one."""
        if self.store is None:
            if item.records:
                self._need_store("committing records")
            return None
        stored: StoredTx = yield Blocking(functools.partial(self.store.put, item))
        return stored

    def prepare(self, item: UnsignedTransaction) -> Op[PreparedTransaction]:
        prepared = self.sign(item)
        yield from self.keep(prepared)
        return prepared

    def prepare_many(self, items: Sequence[UnsignedTransaction]) -> Op[list[PreparedTransaction]]:
        """Sign several transactions and store them in one durable write."""
        prepared = [self.sign(i) for i in items]
        if self.store is not None:
            yield Blocking(functools.partial(self.store.put_many, prepared))
        elif any(p.records for p in prepared):
            self._need_store("committing records")
        return prepared

    def keep_unsigned(self, item: UnsignedTransaction) -> Op[UnsignedTransaction]:
        self._need_store("offline signing")
        yield from self.keep(item)
        return item

    def attach(self, item: UnsignedTransaction, signature: bytes) -> Op[PreparedTransaction]:
        prepared = item.attach(signature)
        yield from self.keep(prepared)
        return prepared

    # ------------------------------------------------------------------ sending

    def _mark(self, st: TxStatus) -> Op[None]:
        change = progress_of(st)
        if self.store is not None and change is not None:
            yield Blocking(functools.partial(self.store.mark_many, [change]))

    def _mark_sent(self, tx_id: bytes) -> Callable[[], None]:
        store = self.store

        def mark() -> None:
            if store is not None:
                store.mark(tx_id, "sent")

        return mark

    def _mark_rejected(self, channel: str, tx_id: bytes, exc: SubmitRejected) -> Op[None]:
        """Record a refusal, if final (enough nodes refused it; else it stays pending)."""
        if exc.final:
            reason = f"{exc.reason}: {exc.detail}"
            yield from self._mark(TxStatus(tx_id, channel, "rejected", reason=reason))

    def _confirmed(self, channel: str, node: int, st: TxStatus) -> Op[TxStatus]:
        """``st`` if not a commit claim; else the verified status, or an ``unknown``
        one saying why the claim did not verify (:meth:`Core.confirm_commits`)."""
        if st.status != "committed":
            return st
        ok, bad = yield from self.core.confirm_commits(channel, [st], claimer=node, deadline=None)
        return ok[0] if ok else bad[0]

    def send(self, item: PreparedTransaction) -> Op[TxStatus]:
        """Store (if not yet), then submit once without waiting (``submit_async``); a
        commit claim is recorded only once verified."""
        yield from self.keep(item)
        try:
            i, st = yield from self.core.submit_tx_at(item.tx)
        except SubmitRejected as exc:
            yield from self._mark_rejected(item.channel, item.tx_id, exc)
            raise
        st = yield from self._confirmed(item.channel, i, st)
        yield from self._mark(st)
        return st

    def follow(
        self,
        channel: str,
        tx_id: bytes,
        tx: Transaction | None,
        *,
        timeout: float | None,
        check: bool,
        post_wait: bool = True,
    ) -> Op[TxStatus]:
        """Wait for commit; record the result; raise TransactionInvalid if ``check``."""
        t = self.core.settings.commit_timeout if timeout is None else timeout
        try:
            st = yield from self.core.wait(
                channel,
                tx_id,
                tx=tx,
                timeout=t,
                post_wait=post_wait,
                on_sent=self._mark_sent(tx_id) if tx is not None else None,
            )
        except SubmitRejected as exc:
            yield from self._mark_rejected(channel, tx_id, exc)
            raise
        yield from self._mark(st)
        if check and not st.valid:
            raise TransactionInvalid(st)
        return st

    def submit(
        self,
        item: PreparedTransaction,
        *,
        timeout: float | None,
        check: bool,
        post_wait: bool = True,
    ) -> Op[TxStatus]:
        yield from self.keep(item)
        st = yield from self.follow(
            item.channel, item.tx_id, item.tx, timeout=timeout, check=check, post_wait=post_wait
        )
        return st

    def wait(
        self, channel: str, tx_id: bytes, *, timeout: float | None, check: bool
    ) -> Op[TxStatus]:
        """Follow a transaction by id; resubmits it if the store holds it signed."""
        tx: Transaction | None = None
        if self.store is not None:
            stored = yield Blocking(functools.partial(self.store.find, tx_id))
            if stored is not None and stored.signed:
                tx = stored.tx
                channel = stored.tx.channel
        st = yield from self.follow(channel, tx_id, tx, timeout=timeout, check=check)
        return st

    def status(self, channel: str, tx_id: bytes) -> Op[TxStatus]:
        """The status at one node. A commit claim is verified (one block fetch) unless
        the store already records that commit; a refusal is returned, not recorded
        (one node's word: the submit paths confirm refusals with other nodes)."""
        i, st = yield from self.core.status_at(channel, tx_id)
        if st.status != "committed":
            return st
        if self.store is not None:
            known = yield Blocking(functools.partial(self.store.state_of, tx_id))
            recorded = ("committed" if st.valid else "invalid", st.height)
            if known == recorded:
                return st  # the same commit and verdict, verified when it was recorded
        st = yield from self._confirmed(channel, i, st)
        yield from self._mark(st)
        return st

    def submit_many(
        self,
        items: Sequence[PreparedTransaction],
        *,
        timeout: float | None,
        progress: Callable[[int, int], None] | None,
    ) -> Op[list[TxStatus]]:
        """Store every transaction first, then submit them in batches (per channel)."""
        if self.store is not None:
            yield Blocking(functools.partial(self.store.put_many, items))
        elif any(i.records for i in items):
            self._need_store("committing records")
        t = self.core.settings.commit_timeout if timeout is None else timeout
        results: dict[bytes, TxStatus] = {}
        channels = sorted({i.channel for i in items})
        done_before = 0

        def on_final(statuses: list[TxStatus]) -> None:
            changes = [c for c in map(progress_of, statuses) if c is not None]
            if self.store is not None and changes:
                self.store.mark_many(changes)

        for ch in channels:
            txs = [i.tx for i in items if i.channel == ch]
            base = done_before

            def prog(done: int, total: int, base: int = base) -> None:
                if progress is not None:
                    progress(base + done, len(items))

            statuses = yield from self.core.submit_many(
                txs, timeout=t, progress=prog, on_final=on_final
            )
            for st in statuses:
                results[st.tx_id] = st
            done_before += len(txs)
        return [results[i.tx_id] for i in items]

    def recover(
        self, *, timeout: float | None, progress: Callable[[int, int], None] | None
    ) -> Op[list[TxStatus]]:
        """Resubmit every stored transaction not known to be final (after a crash).
        Raises :class:`RecordStoreError` if the store is damaged (``quick_check``)."""
        store = self._need_store("recovery")
        yield Blocking(store.check_integrity)
        pending: list[StoredTx] = yield Blocking(store.unfinished)
        items = [p.prepared() for p in pending]
        if not items:
            return []
        statuses = yield from self.submit_many(items, timeout=timeout, progress=progress)
        return statuses

    # ------------------------------------------------------------------ evidence

    def _resolve(
        self, target: EvidenceTarget, index: int
    ) -> Op[tuple[bytes, int, Transaction | None, Record | None]]:
        store = self.store
        if isinstance(target, str):
            try:
                target = bytes.fromhex(target)
            except ValueError:
                raise SchemaError("tx id must be 64 hex digits") from None
        if isinstance(target, PreparedTransaction):
            rec = target.records[index] if index < len(target.records) else None
            return target.tx_id, index, target.tx, rec
        if isinstance(target, StoredRecord):
            target = target.record
        if isinstance(target, Record):
            if store is None:
                raise ConfigError("client", "store", "finding a record needs the record store")
            found: StoredRecord | None = yield Blocking(
                functools.partial(store.find_record, target.commitment)
            )
            if found is None:
                raise RecordStoreError("this record is not in the record store")
            stored_tx: StoredTx = yield Blocking(functools.partial(store.get, found.tx_id))
            return found.tx_id, found.index, stored_tx.tx, found.record
        if len(target) != 32:
            raise SchemaError("tx id must be 32 bytes")
        if store is not None:
            st: StoredTx | None = yield Blocking(functools.partial(store.find, target))
            if st is not None:
                rec = st.records[index] if index < len(st.records) else None
                return target, index, st.tx, rec
        return target, index, None, None

    def evidence(
        self, target: EvidenceTarget, *, index: int, timeout: float | None
    ) -> Op[Evidence]:
        """Wait until record ``index`` of a supervision transaction is anchored, fetch
        its receipt and verify it offline (with the record, when the store has it).

        Routes: ``GET /v1/channels/supervision/transactions/{tx}`` (its
        ``evidence_codes`` once acknowledged) and ``GET /v1/evidence/{code}/receipt``.
        Raises :class:`EvidenceNotAnchored` on timeout, :class:`ReceiptInvalid` if the
        receipt does not verify or proves another evidence code than the one the node
        named (the returned code is always the one the verified receipt proves).
        """
        tx_id, index, tx, record = yield from self._resolve(target, index)
        total = self.core.settings.evidence_timeout if timeout is None else timeout
        deadline = self.core.monotonic() + total
        channel = tx.channel if tx is not None else SUPERVISION
        st = yield from self.follow(channel, tx_id, tx, timeout=total, check=False, post_wait=False)
        local = expected_evidence_codes(tx) if tx is not None else []
        if tx is not None and index >= len(local):
            if not local:
                raise EvidenceNotAnchored(
                    tx_id, index, 0, "the transaction carries no record leaves "
                    "(its payload has no 'records' list), so nothing of it is anchored",
                )  # fmt: skip
            raise SchemaError(f"the transaction has {len(local)} record(s); no record {index}")
        poll = 0.5
        detail = "no evidence code yet"
        while True:
            codes = st.evidence_codes
            if codes and local and tuple(codes) != tuple(local):
                raise SchemaError(
                    "the node's evidence codes differ from those computed from the "
                    "transaction: refusing them"
                )
            code = codes[index] if index < len(codes) else (local[index] if local else None)
            if code is not None:
                receipt = yield from self._fetch_receipt(code, tx_id, index)
                if receipt is not None:
                    report = verify_offline(receipt, record, self.trust)
                    bad = not report.ok or (record is not None and not report.data_verified)
                    leaf = receipt.get("record", {}).get("leaf", {})
                    if leaf.get("tx") != tx_id.hex() or leaf.get("i") != index:
                        raise SchemaError("the node's receipt is for another record")
                    if bad:
                        raise ReceiptInvalid(tx_id, report)
                    code = _proven_code(report, code, tx_id)
                    if self.store is not None and tx is not None:
                        yield Blocking(
                            functools.partial(self.store.set_evidence_code, tx_id, index, code)
                        )
                    return Evidence(tx_id, index, code, receipt, report, record)
                detail = f"code {code}: no receipt yet"
            if self.core.monotonic() + poll > deadline:
                raise EvidenceNotAnchored(tx_id, index, total, detail)
            yield Sleep(poll)
            poll = min(poll * 1.5, 5.0)
            try:
                st = yield from self.core.status(channel, tx_id)
            except NodeUnreachable:
                continue

    def _fetch_receipt(self, code: str, tx_id: bytes, index: int) -> Op[dict[str, Any] | None]:
        canonical = str(parse_code(code))
        i, resp = yield from self.core.call(
            "GET",
            f"/v1/evidence/{quote(canonical, safe='-')}/receipt",
            accept=JSON,
            stage="evidence",
            tx_id=tx_id,
            what="receipt request",
        )
        if resp.status == 404:
            return None
        raise_for(resp, stage="evidence", tx_id=tx_id, url=self.core.pool.urls[i])
        try:
            doc = json.loads(resp.body)
        except ValueError:
            raise SchemaError("receipt answer is not JSON") from None
        candidates = doc.get("receipts") if isinstance(doc, dict) and "receipts" in doc else [doc]
        if not isinstance(candidates, list):
            raise SchemaError("receipt answer: 'receipts' must be a list")
        for c in candidates:
            leaf = c.get("record", {}).get("leaf", {}) if isinstance(c, dict) else {}
            if leaf.get("tx") == tx_id.hex() and leaf.get("i") == index:
                return dict(c)
        return dict(candidates[0]) if candidates and isinstance(candidates[0], dict) else None

    def check_evidence(
        self, items: Sequence[tuple[str, Record | bytes]]
    ) -> Op[list[EvidenceCheck]]:
        """Have a node verify each ``(evidence code, record or 32-byte commitment)``
        against the chain (``POST /v1/evidence/verify``, in chunks of
        :data:`VERIFY_CHUNK`); one :class:`EvidenceCheck` per item, in order. The
        record's bytes and salt are sent to the node."""
        out: list[EvidenceCheck] = []
        for start in range(0, len(items), VERIFY_CHUNK):
            wire = []
            for code, data in items[start : start + VERIFY_CHUNK]:
                if isinstance(data, Record):
                    wire.append({"code": code, "record": data.data.hex(), "salt": data.salt.hex()})
                elif len(data) == 32:
                    wire.append({"code": code, "commitment": data.hex()})
                else:
                    raise SchemaError("a commitment must be 32 bytes")
            i, resp = yield from self.core.call(
                "POST",
                "/v1/evidence/verify",
                body=json.dumps({"items": wire}).encode(),
                content_type=JSON,
                accept=JSON,
                stage="evidence",
                what="verification request",
            )
            raise_for(resp, stage="evidence", url=self.core.pool.urls[i])
            try:
                results = json.loads(resp.body)["results"]
            except (ValueError, KeyError, TypeError):
                raise SchemaError("verification answer: expected {'results': [...]}") from None
            if not isinstance(results, list) or len(results) != len(wire):
                raise SchemaError("verification answer: one result per item expected")
            out.extend(EvidenceCheck.from_json(r) for r in results)
        return out

    # ------------------------------------------------------------------ other channels

    def credit_check(
        self, borrower_ref: bytes, *, purpose: str, query_id: str | None, timeout: float | None
    ) -> Op[CreditReport]:
        """A multi-lender credit query (a ``credit_query`` transaction on the credit
        channel); returns the counts-only answer from its outcome."""
        if len(borrower_ref) != 32:
            raise SchemaError("borrower_ref must be 32 bytes")
        if purpose not in QUERY_PURPOSES:
            raise SchemaError(f"purpose must be one of {', '.join(QUERY_PURPOSES)}")
        qid = query_id or f"q-{secrets.token_hex(12)}"
        payload = {"query_id": qid, "borrower_ref": borrower_ref, "purpose": purpose}
        prepared = yield from self.prepare(self.build(CREDIT, "credit_query", payload))
        # post_wait=False: the answer carries bytes, read it from the msgpack status route
        st = yield from self.submit(prepared, timeout=timeout, check=True, post_wait=False)
        if st.outcome is None or st.outcome.result is None:
            st = yield from self.core.status(CREDIT, prepared.tx_id)
        result = st.outcome.result if st.outcome is not None else None
        if result is None:
            raise SchemaError("the credit query committed without an answer")
        return CreditReport(prepared.tx_id, st.height or 0, dict(result))

    def register_asset(
        self,
        *,
        asset_id: str,
        loan_id: str,
        claimed_state: str,
        claimed_outstanding_cents: int,
        purpose: str,
        source_height: int | None,
        timeout: float | None,
    ) -> Op[TxStatus]:
        """Register one of our loans as an asset on the service channel
        (``asset_register``); ``source_height`` defaults to the current supervision
        height."""
        if source_height is None:
            source_height = yield from self.core.channel_height(SUPERVISION)
        payload = {
            "asset_id": asset_id,
            "loan_id": loan_id,
            "source_height": source_height,
            "claimed_state": claimed_state,
            "claimed_outstanding_cents": claimed_outstanding_cents,
            "purpose": purpose,
        }
        parse_asset_register(payload)
        prepared = yield from self.prepare(self.build(SERVICE, "asset_register", payload))
        st = yield from self.submit(prepared, timeout=timeout, check=True)
        return st

    def risk_alerts(self, *, status: str | None) -> Op[list[dict[str, Any]]]:
        """Risk alerts about this lender (``GET /v1/channels/risk/alerts``)."""
        target = "/v1/channels/risk/alerts" + (f"?status={quote(status)}" if status else "")
        doc = yield from self.core.get_doc(target, what="alert query")
        alerts = doc.get("alerts") if isinstance(doc, dict) else None
        if not isinstance(alerts, list):
            raise SchemaError("alerts answer: expected {'alerts': [...]}")
        return [dict(a) for a in alerts if isinstance(a, dict)]

    def risk_feedback(
        self,
        alert_id: bytes,
        measures: str,
        *,
        document_digest: bytes | None,
        timeout: float | None,
    ) -> Op[TxStatus]:
        """Answer a disposed alert with the measures taken (``alert_feedback``)."""
        payload: dict[str, Any] = {"alert_id": alert_id, "measures": measures}
        if document_digest is not None:
            payload["document_digest"] = document_digest
        parse_feedback(payload)
        prepared = yield from self.prepare(self.build(RISK, "alert_feedback", payload))
        st = yield from self.submit(prepared, timeout=timeout, check=True)
        return st


def _proven_code(report: VerificationReport, code: str, tx_id: bytes) -> str:
    """``code`` in canonical form if the verified receipt proves exactly that code (a
    node's status could name another record's code and serve our receipt under it).
    Raises :class:`ReceiptInvalid` (with a failing ``requested_code`` check) if not."""
    asked = str(parse_code(code))
    try:
        proven = str(parse_code(report.evidence_code or ""))
    except LedgerError:
        proven = str(report.evidence_code)
    if proven == asked:
        return asked
    check = Check(
        "requested_code", FAIL, "code_mismatch", f"asked for {asked}; the receipt proves {proven}"
    )
    raise ReceiptInvalid(tx_id, replace(report, checks=(*report.checks, check)))


def progress_of(st: TxStatus) -> Progress | None:
    """The store change a status implies (None: nothing to record)."""
    if st.status == "committed":
        o = st.outcome
        return Progress(
            st.tx_id, "committed" if st.valid else "invalid", st.height, st.index,
            o.code if o else None, o.message if o else None,
        )  # fmt: skip
    if st.status == "rejected":
        return Progress(st.tx_id, "rejected", message=st.reason)
    if st.status == "pending":
        return Progress(st.tx_id, "sent")
    return None


__all__ = ["Evidence", "Operations", "error_of", "record_document", "verify_offline"]
