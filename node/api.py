"""The node's HTTP API (FastAPI): client routes under ``/v1``, the peer route, and the
operations endpoints. Route table and error codes: docs/node.md.

Every ``/v1/channels/...`` request is authenticated (:mod:`node.auth`) and checked
against the channel's permissions: ``submit`` roles per transaction type for writes,
``read`` (full) and ``scoped_read`` (own transactions only) for reads. Bodies larger
than ``limits.max_body_bytes`` are refused before they are parsed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from crosschain.anchor import SOURCE_CHANNEL
from ledger.blocks import MAX_TXS_PER_BLOCK, Transaction
from ledger.encoding import decode, encode
from ledger.errors import LedgerError
from ledger.identity import INSTITUTION_ROLES
from ledger.schema import decimal_value, is_decimal
from node.auth import NODE_ROLE, Caller
from node.channel import ChannelService, TxStatus
from node.errors import ApiError, api_error
from node.evidence_routes import anchored_evidence_codes, install_evidence_routes
from node.jsonwire import json_to_wire, wire_to_json
from node.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from node.peers import (
    FRAME_CONTENT_TYPE,
    FRAME_PATH,
    LENGTH_PREFIX,
    MAX_FRAME_BYTES,
    STREAM_CONTENT_TYPE,
    STREAM_PATH,
    FrameError,
)
from node.risk_routes import install_risk_routes
from node.runtime import NodeRuntime
from node.views import block_view

log = logging.getLogger("wulian.api")

MSGPACK = "application/msgpack"
#: Longest ``wait_ms`` a submission may ask for.
MAX_WAIT_MS = 60_000
#: SSE keep-alive comment interval.
SSE_KEEPALIVE_S = 15.0
MAX_STATE_ITEMS = 1000

_TX_BODY = {
    "requestBody": {
        "required": True,
        "description": "A signed transaction: its canonical msgpack wire map "
        '(application/msgpack) or the same map as JSON with bytes as {"$hex": …}.',
        "content": {
            MSGPACK: {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}
_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "description": 'A map {"txs": [<tx wire map>, ...]} (msgpack or JSON).',
        "content": {
            MSGPACK: {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


# ---------------------------------------------------------------------------- helpers


def wants_msgpack(request: Request) -> bool:
    return MSGPACK in request.headers.get("accept", "")


def respond(request: Request, doc: Any, status: int = 200) -> Response:
    if wants_msgpack(request):
        return Response(encode(doc), status_code=status, media_type=MSGPACK)
    return JSONResponse(wire_to_json(doc), status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) more than ``limit`` bytes before parsing."""
    declared = (request.headers.get("content-length") or "").strip()
    # digits, but more than decimal_value takes: far over any limit
    if is_decimal(declared) and ((given := decimal_value(declared)) is None or given > limit):
        raise api_error("body_too_large", f"body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise api_error("body_too_large", f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def request_target(request: Request) -> str:
    """Path plus query exactly as sent (what the client signed)."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    target = bytes(raw).decode("latin-1")
    qs = request.scope.get("query_string") or b""
    return f"{target}?{bytes(qs).decode('latin-1')}" if qs else target


def _reject_float(text: str) -> Any:
    raise ValueError("floats are not allowed; use integers")


def parse_body(request: Request, body: bytes, max_size: int) -> Any:
    """Decode a msgpack (canonical) or JSON body to a wire value; 400/415 otherwise."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == MSGPACK:
        try:
            return decode(body, max_size=max_size)
        except LedgerError as exc:
            raise api_error("bad_encoding", f"body is not canonical msgpack: {exc}") from None
    if ctype in ("application/json", ""):
        try:
            doc = json.loads(body, parse_float=_reject_float, parse_constant=_reject_float)
            return json_to_wire(doc)
        except (ValueError, RecursionError, LedgerError) as exc:
            raise api_error("bad_json", f"body is not valid JSON for this API: {exc}") from None
    raise api_error("unsupported_media_type", f"content type {ctype!r}: use {MSGPACK} or JSON")


def parse_hex(text: str, size: int, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise api_error("bad_request", f"{what} must be hexadecimal") from None
    if len(raw) != size:
        raise api_error("bad_request", f"{what} must be {size} bytes ({2 * size} hex digits)")
    return raw


def parse_int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = decimal_value(raw)
    if value is None or not lo <= value <= hi:
        raise api_error("bad_request", f"query parameter {name!r} must be an integer {lo}..{hi}")
    return value


def read_scope(svc: ChannelService, caller: Caller) -> str | None:
    """None for a full reader of ``svc``'s channel (genesis nodes read everything), the
    caller's org for a scoped reader; raises 403 ``forbidden`` otherwise."""
    if caller.role == NODE_ROLE:
        return None
    access = svc.permissions().read_access(caller.role)
    if access == "full":
        return None
    if access == "scoped":
        return caller.org
    raise api_error("forbidden", f"role {caller.role!r} may not read channel {svc.channel!r}")


def rejection_code(reason: str) -> str:
    """Map the replica's refusal reason to an API error code."""
    text = reason.lower()
    if "signature" in text:
        return "bad_transaction_signature"
    if "full" in text or "quota" in text or "transactions waiting" in text:
        return "overloaded"
    return "invalid_transaction"


# ---------------------------------------------------------------------------- app


def create_app(runtime: NodeRuntime, *, manage_lifecycle: bool = True) -> FastAPI:
    """The FastAPI app of ``runtime``. With ``manage_lifecycle`` the app's lifespan
    starts the runtime's drivers and peers and stops them (closing the store)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            runtime.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await runtime.stop()

    app = FastAPI(
        title="wulian node",
        version="0.1.0",
        description="Client API of a wulian (五链) node. Every /v1/channels request is "
        "signed by the caller (X-Wulian-* headers; see docs/node.md).",
        lifespan=lifespan,
    )
    lim = runtime.config.limits
    metrics = runtime.metrics

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        metrics.rejected_requests.inc(1, exc.code)
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        metrics.rejected_requests.inc(1, "bad_request")
        err = ApiError(400, "bad_request", f"invalid request: {exc.errors()[0].get('msg', '')}")
        return JSONResponse(err.body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        metrics.rejected_requests.inc(1, code)
        return JSONResponse(
            {"error": {"code": code, "message": str(exc.detail)}}, status_code=exc.status_code
        )

    def service(name: str) -> ChannelService:
        svc = runtime.channels.get(name)
        if svc is None:
            raise api_error("unknown_channel", f"no channel {name!r}")
        return svc

    async def authenticate(request: Request, svc: ChannelService, body: bytes) -> Caller:
        return runtime.auth.authenticate(
            request.headers,
            method=request.method,
            path=request_target(request),
            body=body,
            resolve=svc.role_of,
        )

    async def reader(request: Request, channel: str) -> tuple[ChannelService, str | None]:
        svc, caller = await reader_caller(request, channel)
        return svc, read_scope(svc, caller)

    async def reader_caller(request: Request, channel: str) -> tuple[ChannelService, Caller]:
        svc = service(channel)
        body = await read_body(request, 0 if request.method == "GET" else lim.max_body_bytes)
        return svc, await authenticate(request, svc, body)

    def scope_now(svc: ChannelService, caller: Caller) -> ApiError | str | None:
        """The caller's read scope as governance stands now (:func:`read_scope`), or the
        error if its key is no longer active or its role may no longer read."""
        if svc.role_of(caller.org, caller.public_key) != caller.role:
            return api_error("unknown_key", f"the key is not an active key of {caller.org!r}")
        try:
            return read_scope(svc, caller)
        except ApiError as exc:
            return exc

    # ------------------------------------------------------------------ operations

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, Any]:
        """Liveness: the process serves and its store is open."""
        if runtime.store.closed:
            raise ApiError(503, "not_ready", "store closed")
        return {"status": "ok", "node": runtime.config.node_id}

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> Response:
        """Readiness: every validated channel caught up and in a view with a primary."""
        ok, report = runtime.ready_report()
        return JSONResponse(
            {"ready": ok, "node": runtime.config.node_id, "channels": report},
            status_code=200 if ok else 503,
        )

    @app.get("/metrics", tags=["operations"])
    async def metrics_route() -> Response:
        """Prometheus metrics (text exposition format 0.0.4)."""
        return PlainTextResponse(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    @app.get("/v1/info", tags=["network"])
    async def info() -> dict[str, Any]:
        """Public facts about this node and network (no authentication)."""
        g = runtime.genesis
        return {
            "node": runtime.config.node_id,
            "network": g.network,
            "genesis_hash": g.hash.hex(),
            "channels": {
                name: {"height": svc.height, "validator": svc.is_validator}
                for name, svc in runtime.channels.items()
            },
        }

    # ------------------------------------------------------------------ peers

    # Peer frames (POST /v1/peer/frames) are served by PeerFrameASGI in front of
    # this app, without FastAPI's per-request machinery (see create_asgi).

    # ------------------------------------------------------------------ channels

    @app.get("/v1/channels/{channel}", tags=["channels"])
    async def channel_status(request: Request, channel: str) -> Response:
        """Height, last block hash and consensus view of a channel."""
        svc, _scope = await reader(request, channel)
        tip = runtime.store.tip(channel)
        doc: dict[str, Any] = {
            "channel": channel,
            "height": tip.height,
            "last_hash": tip.hash,
            "validators": [
                v.node_id for v in svc.governance.validators_at(tip.height + 1).validators
            ],
        }
        if svc.replica is not None:
            doc["view"] = svc.replica.view
        return respond(request, doc)

    async def _submit(
        request: Request, svc: ChannelService, caller: Caller, txs: list[Transaction]
    ) -> list[dict[str, Any]]:
        """Check and submit; one result per transaction (``error`` set if refused)."""
        if svc.replica is None:
            raise api_error("not_validator", f"this node does not validate {svc.channel!r}")
        # every parameter is checked before anything is submitted
        wait_ms = parse_int_param(request, "wait_ms", 0, 0, MAX_WAIT_MS)
        results: list[dict[str, Any] | None] = [None] * len(txs)
        to_submit: list[tuple[int, Transaction]] = []
        perms = svc.permissions()
        for i, tx in enumerate(txs):
            tx_id = tx.tx_id
            base: dict[str, Any] = {"tx_id": tx_id.hex()}
            err: ApiError | None = None
            if tx.network != runtime.genesis.hash:
                err = api_error("wrong_network", "transaction is for another network")
            elif tx.channel != svc.channel:
                err = api_error("wrong_channel", f"transaction is for channel {tx.channel!r}")
            elif (
                caller.org != tx.sender
                and caller.role not in INSTITUTION_ROLES
                and caller.role != NODE_ROLE
            ):
                err = api_error("forbidden", "callers may submit only their own transactions")
            else:
                role = svc.role_of(tx.sender, tx.public_key)
                if role is None:
                    err = api_error(
                        "not_permitted", f"the key is not an active key of {tx.sender!r}"
                    )
                elif not perms.may_submit(tx.type, role):
                    err = api_error(
                        "not_permitted",
                        f"role {role!r} may not submit {tx.type!r} on {svc.channel!r}",
                    )
            if err is not None:
                results[i] = {**base, "status": "rejected", "error": err.body()["error"]}
                continue
            status = svc.tx_status(tx_id)
            if status is not None and status.status == "committed":
                results[i] = {**base, **status.to_json(svc.channel, tx_id)}
                continue
            to_submit.append((i, tx))
        if to_submit:
            try:
                outcomes = await svc.submit([tx for _, tx in to_submit])
            except OverflowError:
                raise ApiError(503, "overloaded", "the node is overloaded; retry later") from None
            for (i, _tx), out in zip(to_submit, outcomes, strict=True):
                base = {"tx_id": out.tx_id.hex()}
                if out.accepted:
                    st = out.committed
                    doc = st.to_json(svc.channel, out.tx_id) if st else {"status": "pending"}
                    results[i] = {**base, **doc}
                else:
                    reason = out.reason or "rejected"
                    code = rejection_code(reason)
                    results[i] = {
                        **base,
                        "status": "rejected",
                        "error": {"code": code, "message": reason},
                    }
        if wait_ms:
            pending = [
                bytes.fromhex(r["tx_id"])
                for r in results
                if r is not None and r.get("status") == "pending"
            ]
            await asyncio.gather(*(svc.wait_committed(t, wait_ms / 1000) for t in pending))
            for i, r in enumerate(results):
                if r is not None and r.get("status") == "pending":
                    tx_id = bytes.fromhex(r["tx_id"])
                    st = svc.tx_status(tx_id)
                    if st is not None:
                        results[i] = {"tx_id": r["tx_id"], **st.to_json(svc.channel, tx_id)}
        final = [r for r in results if r is not None]
        for r in final:
            metrics.submitted.inc(1, str(r.get("status", "unknown")))
        return final

    @app.post("/v1/channels/{channel}/transactions", tags=["transactions"], openapi_extra=_TX_BODY)
    async def submit_tx(request: Request, channel: str) -> Response:
        """Submit one signed transaction. 202 pending, 200 already committed (with
        ``wait_ms``: waits up to that long for the commit). Idempotent by tx id."""
        svc = service(channel)
        body = await read_body(request, lim.max_body_bytes)
        caller = await authenticate(request, svc, body)
        raw = parse_body(request, body, lim.max_body_bytes)
        try:
            tx = Transaction.from_wire(raw)
        except LedgerError as exc:
            raise api_error("bad_schema", f"not a transaction: {exc}") from None
        (result,) = await _submit(request, svc, caller, [tx])
        if result.get("status") == "rejected":
            err = result["error"]
            raise api_error(err["code"], err["message"])
        status = 200 if result.get("status") == "committed" else 202
        return JSONResponse(result, status_code=status)

    @app.post(
        "/v1/channels/{channel}/transactions/batch",
        tags=["transactions"],
        openapi_extra=_BATCH_BODY,
    )
    async def submit_batch(request: Request, channel: str) -> Response:
        """Submit up to ``limits.max_batch_txs`` signed transactions; one result each."""
        svc = service(channel)
        body = await read_body(request, lim.max_body_bytes)
        caller = await authenticate(request, svc, body)
        raw = parse_body(request, body, lim.max_body_bytes)
        if not isinstance(raw, dict) or set(raw) != {"txs"} or not isinstance(raw["txs"], list):
            raise api_error("bad_schema", 'a batch is a map {"txs": [...]}')
        limit = min(lim.max_batch_txs, MAX_TXS_PER_BLOCK)
        if len(raw["txs"]) > limit:
            raise api_error("too_many_transactions", f"at most {limit} transactions per batch")
        txs: list[Transaction] = []
        for i, item in enumerate(raw["txs"]):
            try:
                txs.append(Transaction.from_wire(item))
            except LedgerError as exc:
                raise api_error("bad_schema", f"txs[{i}]: not a transaction: {exc}") from None
        ids = [t.tx_id for t in txs]
        if len(set(ids)) != len(ids):
            raise api_error("bad_request", "a transaction appears twice in the batch")
        results = await _submit(request, svc, caller, txs)
        return JSONResponse({"results": results})

    @app.get("/v1/channels/{channel}/transactions/{tx_id}", tags=["transactions"])
    async def tx_status(request: Request, channel: str, tx_id: str) -> Response:
        """Status of a transaction: pending, committed (height, index, outcome) or
        rejected (reason). Scoped readers see only their own transactions."""
        svc, scope = await reader(request, channel)
        tid = parse_hex(tx_id, 32, "transaction id")
        st: TxStatus | None = svc.tx_status(tid)
        if st is None or (scope is not None and st.sender != scope):
            raise api_error("not_found", "no such transaction known to this node")
        doc = st.to_json(channel, tid)
        if channel == SOURCE_CHANNEL and st.status == "committed" and st.height is not None:
            codes = await asyncio.to_thread(anchored_evidence_codes, runtime, tid, st.height)
            if codes:
                doc["evidence_codes"] = codes
        return respond(request, doc)

    def _block_response(
        request: Request, svc: ChannelService, height: int | None, scope: str | None
    ) -> Response:
        if height is None:
            raise api_error("not_found", "no such block")
        block = runtime.store.block(svc.channel, height)
        cert = runtime.store.certificate(svc.channel, height)
        if block is None or cert is None:
            raise api_error("not_found", f"no block at height {height}")
        view = block_view(block, cert, svc.outcomes(height), only_sender=scope)
        return respond(request, view)

    @app.get("/v1/channels/{channel}/blocks/by-hash/{block_hash}", tags=["blocks"])
    async def block_by_hash(request: Request, channel: str, block_hash: str) -> Response:
        """A block by header hash, with its commit certificate and tx outcomes."""
        svc, scope = await reader(request, channel)
        h = runtime.store.height_of(channel, parse_hex(block_hash, 32, "block hash"))
        return _block_response(request, svc, h, scope)

    @app.get("/v1/channels/{channel}/blocks/{height}", tags=["blocks"])
    async def block_by_height(request: Request, channel: str, height: str) -> Response:
        """A block by height, with its commit certificate and tx outcomes."""
        svc, scope = await reader(request, channel)
        if not is_decimal(height) or len(height) > 18:
            raise api_error("bad_request", "height must be a positive integer")
        return _block_response(request, svc, int(height), scope)

    @app.get("/v1/channels/{channel}/state", tags=["state"])
    async def state(request: Request, channel: str) -> Response:
        """State query: ``key=<hex>`` (one value) or ``prefix=<hex>&limit=N`` (key
        order). Full readers only: state mixes every lender's data."""
        svc, scope = await reader(request, channel)
        if scope is not None:
            raise api_error("forbidden", "scoped readers cannot query raw state")
        key_hex = request.query_params.get("key")
        prefix_hex = request.query_params.get("prefix")
        if (key_hex is None) == (prefix_hex is None):
            raise api_error("bad_request", "give exactly one of key= or prefix=")
        if key_hex is not None:
            try:
                key = bytes.fromhex(key_hex)
            except ValueError:
                raise api_error("bad_request", "key must be hexadecimal") from None
            value = runtime.store.get_state(channel, key)
            if value is None:
                raise api_error("not_found", "no such key")
            return respond(request, {"key": key, "value": value, "height": svc.height})
        try:
            prefix = bytes.fromhex(prefix_hex or "")
        except ValueError:
            raise api_error("bad_request", "prefix must be hexadecimal") from None
        limit = parse_int_param(request, "limit", 100, 1, MAX_STATE_ITEMS)
        items: list[list[bytes]] = []
        for k, v in runtime.store.iter_state(channel, prefix):
            if len(items) >= limit:
                break
            items.append([k, v])
        return respond(request, {"items": items, "height": svc.height})

    @app.get("/v1/channels/{channel}/stream", tags=["blocks"])
    async def stream(request: Request, channel: str) -> Response:
        """Server-sent events: one ``block`` event per committed block from height
        ``from`` (default: next block; resumable with ``Last-Event-ID``). Data is the
        JSON block view (scoped for lender callers). The caller's key and read
        permission are checked again before each block: a key revoked or a permission
        withdrawn by governance ends the stream."""
        svc, caller = await reader_caller(request, channel)
        read_scope(svc, caller)  # a 403 before the stream opens (rechecked per block)
        start = parse_int_param(request, "from", svc.height + 1, 1, 2**62)
        last_id = request.headers.get("last-event-id")
        if last_id is not None and (last := decimal_value(last_id)) is not None:
            start = last + 1

        async def events() -> AsyncIterator[bytes]:
            nxt = start
            yield b": wulian block stream\n\n"
            while True:
                if await request.is_disconnected():
                    return
                tip = svc.height
                while nxt <= tip:
                    now_scope = scope_now(svc, caller)
                    if isinstance(now_scope, ApiError):
                        err = json.dumps(now_scope.body(), separators=(",", ":"))
                        yield f"event: error\ndata: {err}\n\n".encode()
                        return
                    block = runtime.store.block(channel, nxt)
                    cert = runtime.store.certificate(channel, nxt)
                    if block is None or cert is None:
                        return
                    view = block_view(block, cert, svc.outcomes(nxt), only_sender=now_scope)
                    data = json.dumps(wire_to_json(view), separators=(",", ":"))
                    yield f"id: {nxt}\nevent: block\ndata: {data}\n\n".encode()
                    nxt += 1
                before = svc.height
                await svc.wait_block(max(before, nxt - 1), SSE_KEEPALIVE_S)
                if svc.height == before:
                    yield b": keep-alive\n\n"

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # ------------------------------------------------------------------ evidence, explorer

    from node.explorer import mount_explorer
    from node.explorer.backend import RuntimeBackend

    backend = RuntimeBackend(runtime)
    install_evidence_routes(app, runtime, backend)
    install_risk_routes(app, runtime)
    mount_explorer(app, backend)
    return app


class PeerFrameASGI:
    """ASGI front: the peer routes handled directly (hot path: every consensus message
    travels through them); every other request goes to the FastAPI ``app``.

    ``POST /v1/peer/stream`` (length-prefixed frames, :mod:`node.peers`) answers when
    the sender ends the stream — 200 msgpack ``{"ok", "frames"}`` — or at the first
    refused frame. ``POST /v1/peer/frames`` (one frame) answers 200 msgpack ``{"ok",
    "delivered", "duplicate"}``. Errors: 400/401 JSON ``bad_frame`` for a frame that is
    malformed or not authentic; 413/415 as the client API. Nothing reaches consensus
    unless its frame authenticated; frames before a refused one were delivered.
    """

    def __init__(self, app: FastAPI, runtime: NodeRuntime) -> None:
        self.app = app
        self.runtime = runtime
        #: Set when the server shuts down: open streams end at their next frame (503).
        self.closing = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in (FRAME_PATH, STREAM_PATH):
            await self.app(scope, receive, send)
            return
        headers = []
        if scope["path"] == STREAM_PATH:
            answer = await self._handle_stream(scope, receive)
            if answer is None:
                return  # the sender hung up: nobody to answer
            status, body, ctype = answer
            # An answer ends the stream, also when it came before the body did: close
            # the connection, or the server would go on reading (and discarding) the
            # frames still coming, and the sender would never learn of the answer.
            headers.append((b"connection", b"close"))
        else:
            status, body, ctype = await self._handle(scope, receive)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", ctype),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _error(self, status: int, code: str, message: str) -> tuple[int, bytes, bytes]:
        self.runtime.metrics.rejected_requests.inc(1, code)
        doc = {"error": {"code": code, "message": message}}
        return status, json.dumps(doc).encode(), b"application/json"

    async def _handle_stream(self, scope: Any, receive: Any) -> tuple[int, bytes, bytes] | None:
        """Read length-prefixed frames from a streaming body and hand each to the
        runtime as it completes. Returns the answer when the stream ends or a frame is
        refused (the rest of the body is not read), None if the sender disconnected."""
        error = self._error
        if scope["method"] != "POST":
            return error(405, "method_not_allowed", "peer streams are POSTed")
        headers = dict(scope["headers"])
        if not headers.get(b"content-type", b"").startswith(STREAM_CONTENT_TYPE.encode()):
            return error(415, "unsupported_media_type", f"peer streams are {STREAM_CONTENT_TYPE}")
        buf = bytearray()
        frames = 0
        more = True
        while more:
            try:
                message = await receive()
            except asyncio.CancelledError:
                if not self.closing:
                    raise
                message = {"type": "http.request", "more_body": True}  # answered below
            if message["type"] == "http.disconnect":
                return None
            if self.closing:
                return error(503, "shutting_down", "the node is shutting down")
            buf += message.get("body", b"")
            more = message.get("more_body", False)
            while len(buf) >= LENGTH_PREFIX:
                size = int.from_bytes(buf[:LENGTH_PREFIX], "big")
                if size > MAX_FRAME_BYTES:
                    too_large = f"frames are at most {MAX_FRAME_BYTES} bytes"
                    return error(413, "body_too_large", too_large)
                end = LENGTH_PREFIX + size
                if len(buf) < end:
                    break
                data = bytes(buf[LENGTH_PREFIX:end])
                del buf[:end]
                try:
                    self.runtime.receive_frame(data)
                except FrameError as exc:
                    status = 401 if exc.reason == "signature" else 400
                    return error(status, "bad_frame", f"frame {frames + 1}: {exc}")
                frames += 1
        if buf:
            return error(400, "bad_frame", "the stream ended inside a frame")
        return 200, encode({"ok": True, "frames": frames}), MSGPACK.encode()

    async def _handle(self, scope: Any, receive: Any) -> tuple[int, bytes, bytes]:
        error = self._error
        if scope["method"] != "POST":
            return error(405, "method_not_allowed", "peer frames are POSTed")
        headers = dict(scope["headers"])
        if not headers.get(b"content-type", b"").startswith(FRAME_CONTENT_TYPE.encode()):
            return error(415, "unsupported_media_type", "peer frames are application/msgpack")
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return error(400, "bad_frame", "client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_FRAME_BYTES:
                return error(413, "body_too_large", f"frames are at most {MAX_FRAME_BYTES} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        try:
            _sender, delivered, duplicate = self.runtime.receive_frame(b"".join(chunks))
        except FrameError as exc:
            return error(401 if exc.reason == "signature" else 400, "bad_frame", str(exc))
        body = encode({"ok": True, "delivered": delivered, "duplicate": duplicate})
        return 200, body, MSGPACK.encode()


def create_asgi(runtime: NodeRuntime) -> PeerFrameASGI:
    """The node's full ASGI application (peer fast path + FastAPI client API)."""
    return PeerFrameASGI(create_app(runtime), runtime)
