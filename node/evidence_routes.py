"""Evidence routes: receipts of anchored records, and evidence codes in tx status.

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
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from crosschain.ack import evidence_codes, read_ack
from crosschain.anchor import SOURCE_CHANNEL, TARGET_CHANNEL
from crosschain.anchor_rules import read_anchor_entry
from crosschain.receipt import Receipt, ReceiptUnavailable, assemble_receipt
from ledger.errors import LedgerError
from ledger.evidence_code import EvidenceCodeError, suggestions
from ledger.evidence_code import parse as parse_code
from node.auth import NODE_ROLE
from node.errors import api_error
from node.rules import StoreState

if TYPE_CHECKING:
    from node.explorer.backend import RuntimeBackend
    from node.runtime import NodeRuntime


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


def _owner(runtime: NodeRuntime, receipt: Receipt) -> str | None:
    located = runtime.store.transaction(SOURCE_CHANNEL, receipt.record.tx_id)
    return None if located is None else located.transaction.sender


def install_evidence_routes(app: FastAPI, runtime: NodeRuntime, backend: RuntimeBackend) -> None:
    """Add ``GET /v1/evidence/{code}/receipt`` to ``app``."""

    @app.get("/v1/evidence/{code}/receipt", tags=["evidence"])
    async def evidence_receipt(request: Request, code: str) -> Response:
        """The receipt(s) of the anchored record with evidence code ``code``."""
        svc = runtime.channels.get(SOURCE_CHANNEL)
        if svc is None:
            raise api_error("unknown_channel", f"no channel {SOURCE_CHANNEL!r}")
        from node.api import read_body, request_target

        caller = runtime.auth.authenticate(
            request.headers,
            method=request.method,
            path=request_target(request),
            body=await read_body(request, 0),
            resolve=svc.role_of,
        )
        scope = _reader_scope(runtime, caller.org, caller.role)
        try:
            parsed = parse_code(code)
        except EvidenceCodeError as exc:
            near = [str(c) for c in suggestions(code)]
            raise api_error("bad_evidence_code", exc.message, {"suggestions": near}) from None
        not_anchored = api_error("not_anchored", f"no anchored record has code {parsed}")
        try:
            receipts = await asyncio.to_thread(assemble_receipt, parsed, backend._receipt_source())
        except ReceiptUnavailable:
            raise not_anchored from None
        if scope is not None:
            receipts = [r for r in receipts if _owner(runtime, r) == scope]
        if not receipts:
            raise not_anchored
        doc: dict[str, Any] = {"code": str(parsed), "receipts": [r.to_json() for r in receipts]}
        return JSONResponse(doc)
