"""Risk routes: the alerts of the risk channel (风控链), scoped by the caller.

``GET /v1/channels/risk/alerts[?status=S]`` answers ``{"alerts": [<alert>, ...],
"height": <risk height>}`` (msgpack with ``Accept: application/msgpack``, else JSON
with bytes as ``{"$hex": …}``), oldest first. ``S`` is one of
:data:`channels.risk.ALERT_STATUSES`. Each alert::

    alert_id        the alert transaction's id (what alert_feedback names)
    rule, status, round, respondent
    subject         {"lender"?, "borrower_ref"?, "loan_id"?}
    from_height, source_height   the supervision window (from, source] it was found in
    evidence        [{"tx": <supervision tx id>, "i": <record index>}, ...]
    details         the rule's figures (integers)
    opened_height   risk height of the alert; last_followup; steps (the closed loop)

Who sees what follows the risk channel's read permissions, as its blocks do: a role
with full read access (by default the five institutions and auditors; and genesis
nodes) sees every alert; a role with scoped access (lenders) sees the
alerts whose subject lender or respondent is itself, with the evidence cut to its own
supervision transactions (a multi-lender alert must not name the other lenders'
reports). Others, and a role governance has withdrawn the channel from: 403
``forbidden``. (Until session 27 a fixed list, the bureau and the risk centre, saw
every alert whatever the channel's permissions said.) Bad ``status``: 400
``bad_request``. Requests are signed like every ``/v1/channels`` request.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

from fastapi import FastAPI, Request
from fastapi.responses import Response

from channels.risk import ALERT_STATUSES, CHANNEL, step_prefix
from ledger.encoding import decode
from ledger.store import BlockStore
from node.errors import api_error
from node.rules import StoreState

if TYPE_CHECKING:
    from node.runtime import NodeRuntime

ALERT_PREFIX: Final = b"risk/alert/"


def _own_evidence(store: BlockStore, evidence: list[Any], org: str) -> list[Any]:
    out = []
    for ref in evidence:
        located = store.transaction("supervision", bytes(ref["tx"]))
        if located is not None and located.transaction.sender == org:
            out.append(ref)
    return out


def list_alerts(store: BlockStore, status: str | None, scope: str | None) -> list[dict[str, Any]]:
    """The alerts on the risk channel (``scope``: only those about that lender)."""
    state = StoreState(store, CHANNEL)
    out: list[dict[str, Any]] = []
    for _key, raw in state.iter_prefix(ALERT_PREFIX):
        rec = dict(decode(raw))
        if status is not None and rec["status"] != status:
            continue
        subject = dict(rec["subject"])
        if scope is not None and scope not in (subject.get("lender"), rec.get("respondent")):
            continue
        steps = [dict(decode(v)) for _k, v in state.iter_prefix(step_prefix(rec["alert_id"]))]
        evidence = list(rec["evidence"])
        if scope is not None:
            evidence = _own_evidence(store, evidence, scope)
        out.append(
            {
                "alert_id": rec["alert_id"],
                "rule": rec["rule"],
                "status": rec["status"],
                "round": rec["round"],
                "respondent": rec.get("respondent"),
                "subject": subject,
                "from_height": rec["from_height"],
                "source_height": rec["source_height"],
                "evidence": evidence,
                "details": dict(rec["details"]),
                "opened_height": rec["opened_h"],
                "last_followup": rec.get("last_followup"),
                "steps": steps,
            }
        )
    out.sort(key=lambda a: (a["opened_height"], a["alert_id"]))
    return out


def install_risk_routes(app: FastAPI, runtime: NodeRuntime) -> None:
    """Add ``GET /v1/channels/risk/alerts`` to ``app``."""

    @app.get("/v1/channels/risk/alerts", tags=["risk"])
    async def risk_alerts(request: Request) -> Response:
        """Alerts of the risk channel visible to the caller (see module docstring)."""
        from node.api import read_body, read_scope, request_target, respond

        svc = runtime.channels.get(CHANNEL)
        if svc is None:
            raise api_error("unknown_channel", f"no channel {CHANNEL!r}")
        caller = runtime.auth.authenticate(
            request.headers,
            method=request.method,
            path=request_target(request),
            body=await read_body(request, 0),
            resolve=svc.role_of,
        )
        scope = read_scope(svc, caller)
        status = request.query_params.get("status")
        if status is not None and status not in ALERT_STATUSES:
            raise api_error(
                "bad_request", f"status must be one of {', '.join(ALERT_STATUSES)}; got {status!r}"
            )
        alerts = await asyncio.to_thread(list_alerts, runtime.store, status, scope)
        return respond(request, {"alerts": alerts, "height": svc.height})
