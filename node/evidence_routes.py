"""Evidence routes: receipts of anchored records, verification of records against
them, and evidence codes in tx status.

``GET /v1/evidence/{code}/receipt`` answers ``{"code": <canonical code>, "receipts":
[<receipt JSON>, ...]}`` (docs/receipts.md; normally one receipt), assembled from this
node's committed data by :func:`crosschain.receipt.assemble_receipt` over the
explorer's receipt source. Errors: 400 ``bad_evidence_code`` (with ``suggestions``,
codes one typo away), 404 ``not_anchored`` (no anchored record has this code yet, or
the caller may not see it), 403 ``forbidden``.

Who may read: node keys and roles with *full* read access to the supervision or the
judicial channel (genesis permissions: court, bureau, …) see every receipt; roles
with *scoped* supervision access (lenders) see receipts of their own records only.
Requests are signed like every ``/v1/channels`` request.

``POST /v1/evidence/{code}/verify`` (body ``{"record": hex, "salt": hex}`` or
``{"commitment": hex}``, optionally with ``"receipt"``: a receipt the caller holds, to
verify instead of the node's own) and ``POST /v1/evidence/verify`` (body ``{"items": [{"code",
…}, …]}``, at most :data:`MAX_VERIFY_ITEMS`) check records against the chain: the
node assembles each code's receipt and runs the offline verifier
(:func:`crosschain.receipt.verify_receipt`, through
:func:`node.explorer.verification.verification_from_receipts`) against its genesis,
and answers ``result``: ``verified`` / ``mismatch`` / ``not_anchored`` /
``chain_failed`` with the anchoring times and every check (docs/node.md). Same
readers as receipts; a lender's verification of another lender's code answers
``not_anchored``. Errors: 400 ``bad_json``/``bad_schema`` (body), 400
``bad_evidence_code`` (single route; in a batch the item carries the error).

Cost: blocks come proven from the backend's :class:`~crosschain.receipt.ProvenBlockCache`
and certificates are checked through its :class:`~crosschain.receipt.CertificateMemo`
(every check still runs); a batch is checked grouped by supervision block through one
receipt source, and answered in the request's order.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from crosschain.ack import evidence_codes, read_ack
from crosschain.anchor import SOURCE_CHANNEL, TARGET_CHANNEL
from crosschain.anchor_rules import read_anchor_entry
from crosschain.receipt import (
    Receipt,
    ReceiptSource,
    ReceiptUnavailable,
    TrustRoot,
    assemble_receipt,
    record_commitment,
)
from ledger.errors import LedgerError
from ledger.evidence_code import EvidenceCode, EvidenceCodeError, suggestions
from ledger.evidence_code import parse as parse_code
from node.auth import NODE_ROLE
from node.errors import ApiError, api_error
from node.explorer.port import NOT_ANCHORED, Verification
from node.explorer.verification import verification_from_receipts
from node.rules import StoreState

if TYPE_CHECKING:
    from node.explorer.backend import RuntimeBackend
    from node.runtime import NodeRuntime


#: Most items one ``POST /v1/evidence/verify`` checks.
MAX_VERIFY_ITEMS: Final = 256
#: Largest record (bytes) a verification request may carry.
MAX_RECORD_BYTES: Final = 256 * 1024
_HEX: Final = r"^([0-9a-fA-F]{2})*$"


class VerifyData(BaseModel):
    """What to check against a code: the record bytes and salt, or its commitment."""

    model_config = ConfigDict(extra="forbid", strict=True)
    record: str | None = Field(default=None, max_length=2 * MAX_RECORD_BYTES, pattern=_HEX)
    salt: str | None = Field(default=None, min_length=64, max_length=64, pattern=_HEX)
    commitment: str | None = Field(default=None, min_length=64, max_length=64, pattern=_HEX)
    #: Optional: a receipt the caller holds, verified instead of the node's own.
    receipt: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> VerifyData:
        full = self.record is not None and self.salt is not None
        if (self.record is None) != (self.salt is None):
            raise ValueError("give both 'record' and 'salt'")
        if full == (self.commitment is not None):
            raise ValueError("give either 'record' + 'salt' or 'commitment'")
        return self

    def digest(self) -> bytes:
        if self.commitment is not None:
            return bytes.fromhex(self.commitment)
        assert self.record is not None and self.salt is not None
        return record_commitment(bytes.fromhex(self.salt), bytes.fromhex(self.record))


class VerifyItem(VerifyData):
    code: str = Field(max_length=64)


class VerifyBatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    items: list[VerifyItem] = Field(min_length=1, max_length=MAX_VERIFY_ITEMS)


def _parse_json_body(body: bytes, model: type[BaseModel]) -> Any:
    """``body`` as ``model``; raises ApiError ``bad_json`` / ``bad_schema``."""
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise api_error("bad_json", "the body is not JSON") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        msg = first.get("msg", "invalid")
        raise api_error("bad_schema", f"{where}: {msg}" if where else msg) from None


def verification_json(v: Verification) -> dict[str, Any]:
    """The API form of one verification (docs/node.md, "Evidence verification")."""
    return {
        "code": v.evidence_code,
        "result": v.status,
        "detail": v.detail,
        "commitment": v.submitted_commitment.hex(),
        "anchored_commitment": None
        if v.anchored_commitment is None
        else v.anchored_commitment.hex(),
        "supervision_height": v.supervision_height,
        "supervision_time_ms": v.supervision_time_ms,
        "judicial_height": v.judicial_height,
        "judicial_time_ms": v.anchored_time_ms,
        "checks": [
            {
                "name": c.name,
                "ok": c.status == "pass",
                "status": c.status,
                "reason": c.reason,
                "detail": c.detail,
            }
            for c in v.checks
        ],
    }


def anchored_evidence_codes(runtime: NodeRuntime, tx_id: bytes, height: int) -> list[str]:
    """The evidence codes of supervision transaction ``tx_id`` (committed at ``height``),
    once that block is acknowledged (or anchored) on the court chain; ``[]`` before."""
    store = runtime.store
    if read_ack(StoreState(store, SOURCE_CHANNEL), height) is None and (
        read_anchor_entry(StoreState(store, TARGET_CHANNEL), SOURCE_CHANNEL, height) is None
    ):
        return []
    located = store.transaction(SOURCE_CHANNEL, tx_id)
    if located is None:
        return []
    try:
        return [str(c) for c in evidence_codes(located.transaction)]
    except LedgerError:
        return []


def _reader_scope(runtime: NodeRuntime, org: str, role: str) -> str | None:
    """None for a full reader, ``org`` for a scoped one; raises 403 otherwise."""
    if role == NODE_ROLE:
        return None
    access = [
        svc.permissions().read_access(role)
        for name in (SOURCE_CHANNEL, TARGET_CHANNEL)
        if (svc := runtime.channels.get(name)) is not None
    ]
    if "full" in access:
        return None
    if "scoped" in access:
        return org
    raise api_error("forbidden", f"role {role!r} may not read evidence receipts")


def install_evidence_routes(app: FastAPI, runtime: NodeRuntime, backend: RuntimeBackend) -> None:
    """Add the evidence routes (receipt, verify, batch verify) to ``app``."""
    trust = TrustRoot.from_genesis(runtime.genesis)

    async def caller_scope(request: Request, body: bytes) -> str | None:
        svc = runtime.channels.get(SOURCE_CHANNEL)
        if svc is None:
            raise api_error("unknown_channel", f"no channel {SOURCE_CHANNEL!r}")
        from node.api import request_target

        caller = runtime.auth.authenticate(
            request.headers,
            method=request.method,
            path=request_target(request),
            body=body,
            resolve=svc.role_of,
        )
        return _reader_scope(runtime, caller.org, caller.role)

    def parse(raw_code: str) -> EvidenceCode:
        """Raises ApiError ``bad_evidence_code`` (with suggestions)."""
        try:
            return parse_code(raw_code)
        except EvidenceCodeError as exc:
            near = [str(c) for c in suggestions(raw_code)]
            raise api_error("bad_evidence_code", exc.message, {"suggestions": near}) from None

    def visible(receipts: list[Receipt], scope: str | None) -> list[Receipt]:
        """The receipts a caller of ``scope`` may see (a scoped reader: its own)."""
        if scope is None:
            return receipts
        return [r for r in receipts if backend.record_owner(r) == scope]

    def verify_one(
        raw_code: str, data: VerifyData, scope: str | None, source: ReceiptSource | None = None
    ) -> Verification:
        """Blocking (LevelDB reads). Raises ApiError ``bad_evidence_code``, or
        ``bad_request`` if a given receipt is for another code. ``source``: a receipt
        source shared by the items of one batch (default: a fresh one)."""
        parsed = parse(raw_code)
        code = str(parsed)
        digest = data.digest()
        if data.receipt is not None:
            if data.receipt.get("evidence_code") != code:
                raise api_error("bad_request", f"the receipt is not for code {code}")
            return verification_from_receipts(code, digest, [data.receipt], trust)
        try:
            receipts = assemble_receipt(parsed, source or backend._receipt_source())
        except ReceiptUnavailable as exc:
            return Verification(code, NOT_ANCHORED, digest, detail=exc.message)
        receipts = visible(receipts, scope)
        if not receipts:
            detail = f"no anchored record has code {code}"
            return Verification(code, NOT_ANCHORED, digest, detail=detail)
        return backend.verify_receipts(code, digest, receipts)

    def verify_batch(items: Sequence[VerifyItem], scope: str | None) -> list[dict[str, Any]]:
        """Blocking. One result per item, in order; the items are checked grouped by
        supervision block, through one receipt source (each block fetched once)."""
        source = backend._receipt_source()
        order: list[tuple[int, int]] = []
        for i, item in enumerate(items):
            try:
                entries = source.evidence(parse_code(item.code))
            except EvidenceCodeError:
                entries = []  # answered by verify_one, with suggestions
            order.append((min((e.source_height for e in entries), default=0), i))
        out: list[dict[str, Any] | None] = [None] * len(items)
        for _height, i in sorted(order):
            item = items[i]
            try:
                out[i] = verification_json(verify_one(item.code, item, scope, source))
            except ApiError as exc:
                out[i] = {"code": item.code, "result": exc.code, **exc.body()}
        return [r for r in out if r is not None]

    async def verify_body(request: Request) -> bytes:
        """The JSON body (415 for another declared media type, 413 over the limit)."""
        from node.api import read_body

        media = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if media.lower() != "application/json":
            raise api_error("unsupported_media_type", f"send JSON, not {media!r}")
        return await read_body(request, runtime.config.limits.max_body_bytes)

    @app.post("/v1/evidence/{code}/verify", tags=["evidence"])
    async def evidence_verify(request: Request, code: str) -> Response:
        """Check a record (bytes + salt) or its commitment against evidence code ``code``."""
        body = await verify_body(request)
        scope = await caller_scope(request, body)
        data: VerifyData = _parse_json_body(body, VerifyData)
        v = await asyncio.to_thread(verify_one, code, data, scope)
        return JSONResponse(verification_json(v))

    @app.post("/v1/evidence/verify", tags=["evidence"])
    async def evidence_verify_batch(request: Request) -> Response:
        """Check up to MAX_VERIFY_ITEMS (code, record or commitment) items; one result
        each, in order (an unreadable code gives that item an ``error``)."""
        body = await verify_body(request)
        scope = await caller_scope(request, body)
        batch: VerifyBatch = _parse_json_body(body, VerifyBatch)
        results = await asyncio.to_thread(verify_batch, batch.items, scope)
        return JSONResponse({"results": results})

    @app.get("/v1/evidence/{code}/receipt", tags=["evidence"])
    async def evidence_receipt(request: Request, code: str) -> Response:
        """The receipt(s) of the anchored record with evidence code ``code``."""
        from node.api import read_body

        scope = await caller_scope(request, await read_body(request, 0))
        parsed = parse(code)
        not_anchored = api_error("not_anchored", f"no anchored record has code {parsed}")

        def assemble() -> list[Receipt]:
            return visible(assemble_receipt(parsed, backend._receipt_source()), scope)

        try:
            receipts = await asyncio.to_thread(assemble)
        except ReceiptUnavailable:
            raise not_anchored from None
        if not receipts:
            raise not_anchored
        doc: dict[str, Any] = {"code": str(parsed), "receipts": [r.to_json() for r in receipts]}
        return JSONResponse(doc)
