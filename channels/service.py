"""服务链 — the service channel, run by the service platform.

* ``asset_register`` (lender) — register one of the sender's loans as an asset for
  financing or transfer. The rule reads the supervision channel as of the height the
  transaction names (committed on this node, else NotYetCommitted; no older than
  ``source_max_age_ms`` by block time): the loan exists, belongs to the sender, is in
  the claimed state with the claimed outstanding, the lender is admitted, and the loan
  is not already registered, offered, pledged or disposed (no double financing).
* ``asset_deregister`` (lender) — withdraw a registered (unencumbered) asset.
* ``financing_request`` / ``financing_cancel`` (lender), ``financing_match`` /
  ``financing_release`` (service platform) — 融资对接: assets are offered, pledged to a
  funder on a match, and released when the financing ends.
* ``disposal_list`` (lender), ``disposal_status`` (service platform; a lender may only
  withdraw its own listing) — 不良资产处置 of non-performing (overdue / collection)
  loans.

Asset states::

    registered --financing_request--> offered --financing_match--> pledged
    offered    --financing_cancel-->  registered
    pledged    --financing_release--> registered
    registered --disposal_list-->     listed --sold--> disposed
    listed     --withdrawn / failed-->  registered
    registered --asset_deregister-->  deregistered (the loan may be registered again)

State::

    svc/asset/<org>/<asset id>       asset
    svc/loanreg/<org>/<loan id>      the loan's live registration (asset id)
    svc/freq/<org>/<request id>      financing request
    svc/listing/<org>/<listing id>   disposal listing
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from channels.base import TxType, config_update_type, make_rules
from channels.context import TxContext, committed_facts
from channels.errors import TxRejected
from channels.fields import PayloadReader, is_ref
from channels.loans import LOAN_STATES, OPEN_STATES
from channels.roles import LENDER, SERVICE_PLATFORM
from channels.state import WriteSet
from channels.supervision_view import SupervisionView
from ledger.errors import SchemaError

CHANNEL: Final = "service"
SOURCE_CHANNEL: Final = "supervision"
PURPOSES: Final = ("financing", "transfer")
NON_PERFORMING: Final = frozenset({"overdue", "collection"})
MAX_REQUEST_ASSETS: Final = 100
DISPOSAL_STATUSES: Final = ("bidding", "sold", "withdrawn", "failed")
_DISPOSAL_NEXT: Final = {
    "listed": ("bidding", "withdrawn"),
    "bidding": ("sold", "failed", "withdrawn"),
}


def asset_key(org: str, asset_id: str) -> bytes:
    return f"svc/asset/{org}/{asset_id}".encode()


def loan_registration_key(org: str, loan_id: str) -> bytes:
    return f"svc/loanreg/{org}/{loan_id}".encode()


def request_key(org: str, request_id: str) -> bytes:
    return f"svc/freq/{org}/{request_id}".encode()


def listing_key(org: str, listing_id: str) -> bytes:
    return f"svc/listing/{org}/{listing_id}".encode()


# -- payloads -------------------------------------------------------------------


@dataclass(frozen=True)
class AssetRegister:
    asset_id: str
    loan_id: str
    source_height: int
    claimed_state: str
    claimed_outstanding_cents: int
    purpose: str


@dataclass(frozen=True)
class AssetRef:
    asset_id: str


@dataclass(frozen=True)
class FinancingRequest:
    request_id: str
    asset_ids: tuple[str, ...]
    amount_cents: int
    term_months: int


@dataclass(frozen=True)
class RequestRef:
    request_id: str


@dataclass(frozen=True)
class FinancingMatch:
    lender: str
    request_id: str
    funder: str
    amount_cents: int
    rate_bp: int


@dataclass(frozen=True)
class FinancingRelease:
    lender: str
    request_id: str
    reason: str


@dataclass(frozen=True)
class DisposalList:
    listing_id: str
    asset_id: str
    reserve_price_cents: int
    description: str


@dataclass(frozen=True)
class DisposalStatus:
    lender: str
    listing_id: str
    status: str
    buyer: str | None
    price_cents: int | None


def parse_asset_register(raw: dict[str, Any]) -> AssetRegister:
    p = PayloadReader(raw, "asset_register")
    v = AssetRegister(
        asset_id=p.ref("asset_id"),
        loan_id=p.ref("loan_id"),
        source_height=p.integer("source_height", lo=1),
        claimed_state=p.enum("claimed_state", LOAN_STATES),
        claimed_outstanding_cents=p.amount("claimed_outstanding_cents"),
        purpose=p.enum("purpose", PURPOSES),
    )
    p.done()
    return v


def parse_asset_ref(raw: dict[str, Any]) -> AssetRef:
    p = PayloadReader(raw, "asset_deregister")
    v = AssetRef(p.ref("asset_id"))
    p.done()
    return v


def parse_financing_request(raw: dict[str, Any]) -> FinancingRequest:
    p = PayloadReader(raw, "financing_request")
    request_id = p.ref("request_id")
    items = p.items("asset_ids", min_len=1, max_len=MAX_REQUEST_ASSETS)
    v = FinancingRequest(
        request_id,
        tuple(items),
        p.amount("amount_cents", lo=1),
        p.integer("term_months", lo=1, hi=600),
    )
    p.done()
    for i, a in enumerate(v.asset_ids):
        if not isinstance(a, str) or not is_ref(a):
            raise SchemaError(f"field 'asset_ids'[{i}]: expected an asset id")
    if len(set(v.asset_ids)) != len(v.asset_ids):
        raise SchemaError("field 'asset_ids': an asset is listed twice")
    return v


def parse_request_ref(raw: dict[str, Any]) -> RequestRef:
    p = PayloadReader(raw, "financing_cancel")
    v = RequestRef(p.ref("request_id"))
    p.done()
    return v


def parse_financing_match(raw: dict[str, Any]) -> FinancingMatch:
    p = PayloadReader(raw, "financing_match")
    v = FinancingMatch(
        lender=p.name("lender"),
        request_id=p.ref("request_id"),
        funder=p.text("funder", min_len=1, max_len=128),
        amount_cents=p.amount("amount_cents", lo=1),
        rate_bp=p.integer("rate_bp", hi=1_000_000),
    )
    p.done()
    return v


def parse_financing_release(raw: dict[str, Any]) -> FinancingRelease:
    p = PayloadReader(raw, "financing_release")
    v = FinancingRelease(
        p.name("lender"), p.ref("request_id"), p.text("reason", min_len=1, max_len=500)
    )
    p.done()
    return v


def parse_disposal_list(raw: dict[str, Any]) -> DisposalList:
    p = PayloadReader(raw, "disposal_list")
    v = DisposalList(
        listing_id=p.ref("listing_id"),
        asset_id=p.ref("asset_id"),
        reserve_price_cents=p.amount("reserve_price_cents"),
        description=p.text("description", max_len=1000) if p.optional("description") else "",
    )
    p.done()
    return v


def parse_disposal_status(raw: dict[str, Any]) -> DisposalStatus:
    p = PayloadReader(raw, "disposal_status")
    v = DisposalStatus(
        lender=p.name("lender"),
        listing_id=p.ref("listing_id"),
        status=p.enum("status", DISPOSAL_STATUSES),
        buyer=p.text("buyer", min_len=1, max_len=128) if p.optional("buyer") else None,
        price_cents=p.amount("price_cents") if p.optional("price_cents") else None,
    )
    p.done()
    if (v.status == "sold") != (v.buyer is not None and v.price_cents is not None):
        raise SchemaError("'buyer' and 'price_cents' are required for 'sold' and only then")
    return v


# -- rules ----------------------------------------------------------------------


def _asset(state: WriteSet, org: str, asset_id: str, expected: tuple[str, ...]) -> dict[str, Any]:
    rec = state.get_value(asset_key(org, asset_id))
    if rec is None:
        raise TxRejected("asset_not_found", f"lender {org!r} has no asset {asset_id!r}")
    if rec["state"] not in expected:
        raise TxRejected(
            "bad_asset_state", f"asset {asset_id!r} is {rec['state']}, not {' or '.join(expected)}"
        )
    return dict(rec)


def _set_asset_state(state: WriteSet, rec: dict[str, Any], new: str, ctx: TxContext) -> None:
    rec["state"] = new
    rec["updated_h"] = ctx.height
    state.put_value(asset_key(rec["lender"], rec["asset_id"]), rec)


def apply_asset_register(state: WriteSet, p: AssetRegister, ctx: TxContext) -> Mapping[str, Any]:
    org = ctx.sender
    if state.get(asset_key(org, p.asset_id)) is not None:
        raise TxRejected("duplicate_asset_id", f"asset id {p.asset_id!r} was already used")
    facts = committed_facts(ctx.cross, SOURCE_CHANNEL, p.source_height)
    view = SupervisionView(facts, p.source_height)
    age = ctx.block_time_ms - view.block_time(p.source_height)
    if age > ctx.params.source_max_age_ms:
        raise TxRejected(
            "stale_source_height",
            f"supervision height {p.source_height} is {age} ms old; at most "
            f"{ctx.params.source_max_age_ms} ms allowed",
        )
    if view.lender_status(org) != "admitted":
        raise TxRejected(
            "lender_not_admitted",
            f"{org!r} is not an admitted lender at supervision height {p.source_height}",
        )
    loan = view.loan(org, p.loan_id)
    if loan is None:
        raise TxRejected(
            "loan_not_found",
            f"no loan {p.loan_id!r} of {org!r} at supervision height {p.source_height}",
        )
    if loan.state != p.claimed_state:
        raise TxRejected(
            "state_mismatch",
            f"loan {p.loan_id!r} is {loan.state} at supervision height {p.source_height}, "
            f"not {p.claimed_state}",
        )
    if loan.state not in OPEN_STATES:
        raise TxRejected("loan_closed", f"loan {p.loan_id!r} is {loan.state}: not an asset")
    if loan.outstanding_cents != p.claimed_outstanding_cents:
        raise TxRejected(
            "amount_mismatch",
            f"loan {p.loan_id!r} has {loan.outstanding_cents} outstanding, not "
            f"{p.claimed_outstanding_cents}",
        )
    live = state.get_value(loan_registration_key(org, p.loan_id))
    if live is not None:
        other = state.get_value(asset_key(org, live["asset_id"]))
        raise TxRejected(
            "asset_already_registered",
            f"loan {p.loan_id!r} is already asset {live['asset_id']!r} ({other['state']}): "
            "no double financing",
        )
    state.put_value(
        asset_key(org, p.asset_id),
        {
            "asset_id": p.asset_id,
            "lender": org,
            "loan_id": p.loan_id,
            "borrower_ref": loan.borrower_ref,
            "purpose": p.purpose,
            "claimed_state": p.claimed_state,
            "claimed_outstanding_cents": p.claimed_outstanding_cents,
            "principal_cents": loan.principal_cents,
            "rate_bp": loan.rate_bp,
            "source_height": p.source_height,
            "state": "registered",
            "registered_h": ctx.height,
            "updated_h": ctx.height,
        },
    )
    state.put_value(loan_registration_key(org, p.loan_id), {"asset_id": p.asset_id})
    return {"asset_id": p.asset_id}


def apply_asset_deregister(state: WriteSet, p: AssetRef, ctx: TxContext) -> None:
    rec = _asset(state, ctx.sender, p.asset_id, ("registered",))
    _set_asset_state(state, rec, "deregistered", ctx)
    state.delete(loan_registration_key(ctx.sender, rec["loan_id"]))


def apply_financing_request(state: WriteSet, p: FinancingRequest, ctx: TxContext) -> None:
    org = ctx.sender
    if state.get(request_key(org, p.request_id)) is not None:
        raise TxRejected("duplicate_request_id", f"request id {p.request_id!r} was already used")
    value = 0
    for asset_id in p.asset_ids:
        rec = _asset(state, org, asset_id, ("registered",))
        value += rec["claimed_outstanding_cents"]
        _set_asset_state(state, rec, "offered", ctx)
    if p.amount_cents > value:
        raise TxRejected(
            "over_collateral_value",
            f"requested {p.amount_cents} exceeds the assets' outstanding value {value}",
        )
    state.put_value(
        request_key(org, p.request_id),
        {
            "request_id": p.request_id,
            "lender": org,
            "asset_ids": list(p.asset_ids),
            "amount_cents": p.amount_cents,
            "term_months": p.term_months,
            "state": "open",
            "h": ctx.height,
        },
    )


def _request(state: WriteSet, org: str, request_id: str, expected: str) -> dict[str, Any]:
    rec = state.get_value(request_key(org, request_id))
    if rec is None:
        raise TxRejected(
            "request_not_found", f"lender {org!r} has no financing request {request_id!r}"
        )
    if rec["state"] != expected:
        raise TxRejected(
            "bad_request_state", f"request {request_id!r} is {rec['state']}, not {expected}"
        )
    return dict(rec)


def _move_assets(state: WriteSet, req: dict[str, Any], frm: str, to: str, ctx: TxContext) -> None:
    for asset_id in req["asset_ids"]:
        _set_asset_state(state, _asset(state, req["lender"], asset_id, (frm,)), to, ctx)


def _close_request(
    state: WriteSet, req: dict[str, Any], new: str, ctx: TxContext, **extra: Any
) -> None:
    req.update({"state": new, "updated_h": ctx.height, **extra})
    state.put_value(request_key(req["lender"], req["request_id"]), req)


def apply_financing_cancel(state: WriteSet, p: RequestRef, ctx: TxContext) -> None:
    req = _request(state, ctx.sender, p.request_id, "open")
    _move_assets(state, req, "offered", "registered", ctx)
    _close_request(state, req, "cancelled", ctx)


def apply_financing_match(state: WriteSet, p: FinancingMatch, ctx: TxContext) -> None:
    req = _request(state, p.lender, p.request_id, "open")
    if p.amount_cents > req["amount_cents"]:
        raise TxRejected(
            "amount_exceeds_request",
            f"matched {p.amount_cents} exceeds the requested {req['amount_cents']}",
        )
    _move_assets(state, req, "offered", "pledged", ctx)
    _close_request(
        state,
        req,
        "matched",
        ctx,
        match={"funder": p.funder, "amount_cents": p.amount_cents, "rate_bp": p.rate_bp},
    )


def apply_financing_release(state: WriteSet, p: FinancingRelease, ctx: TxContext) -> None:
    req = _request(state, p.lender, p.request_id, "matched")
    _move_assets(state, req, "pledged", "registered", ctx)
    _close_request(state, req, "released", ctx, release_reason=p.reason)


def apply_disposal_list(state: WriteSet, p: DisposalList, ctx: TxContext) -> None:
    org = ctx.sender
    if state.get(listing_key(org, p.listing_id)) is not None:
        raise TxRejected("duplicate_listing_id", f"listing id {p.listing_id!r} was already used")
    rec = _asset(state, org, p.asset_id, ("registered",))
    if rec["claimed_state"] not in NON_PERFORMING:
        raise TxRejected(
            "not_non_performing",
            f"asset {p.asset_id!r} was registered as {rec['claimed_state']}: only overdue or "
            "collection loans are disposed",
        )
    _set_asset_state(state, rec, "listed", ctx)
    state.put_value(
        listing_key(org, p.listing_id),
        {
            "listing_id": p.listing_id,
            "lender": org,
            "asset_id": p.asset_id,
            "reserve_price_cents": p.reserve_price_cents,
            "description": p.description,
            "state": "listed",
            "h": ctx.height,
        },
    )


def apply_disposal_status(state: WriteSet, p: DisposalStatus, ctx: TxContext) -> None:
    if ctx.sender_role == LENDER and (ctx.sender != p.lender or p.status != "withdrawn"):
        raise TxRejected("not_permitted", "a lender may only withdraw its own listing")
    rec = state.get_value(listing_key(p.lender, p.listing_id))
    if rec is None:
        raise TxRejected(
            "listing_not_found", f"lender {p.lender!r} has no listing {p.listing_id!r}"
        )
    rec = dict(rec)
    allowed = _DISPOSAL_NEXT.get(rec["state"], ())
    if p.status not in allowed:
        raise TxRejected(
            "bad_listing_state",
            f"listing {p.listing_id!r} is {rec['state']}: cannot become {p.status}",
        )
    rec.update({"state": p.status, "updated_h": ctx.height})
    asset = _asset(state, p.lender, rec["asset_id"], ("listed",))
    if p.status == "sold":
        rec.update({"buyer": p.buyer, "price_cents": p.price_cents})
        _set_asset_state(state, asset, "disposed", ctx)
    elif p.status in ("withdrawn", "failed"):
        _set_asset_state(state, asset, "registered", ctx)
    state.put_value(listing_key(p.lender, p.listing_id), rec)


TX_TYPES: Final = (
    config_update_type(),
    TxType(
        "asset_register",
        frozenset({LENDER}),
        parse_asset_register,
        apply_asset_register,
        "Register a loan as an asset after checking it on the supervision channel.",
    ),
    TxType(
        "asset_deregister",
        frozenset({LENDER}),
        parse_asset_ref,
        apply_asset_deregister,
        "Withdraw an unencumbered registered asset.",
    ),
    TxType(
        "financing_request",
        frozenset({LENDER}),
        parse_financing_request,
        apply_financing_request,
        "Offer registered assets for financing.",
    ),
    TxType(
        "financing_cancel",
        frozenset({LENDER}),
        parse_request_ref,
        apply_financing_cancel,
        "Cancel an unmatched financing request.",
    ),
    TxType(
        "financing_match",
        frozenset({SERVICE_PLATFORM}),
        parse_financing_match,
        apply_financing_match,
        "Record a funder's match: the offered assets become pledged.",
    ),
    TxType(
        "financing_release",
        frozenset({SERVICE_PLATFORM}),
        parse_financing_release,
        apply_financing_release,
        "End a matched financing: the pledged assets are released.",
    ),
    TxType(
        "disposal_list",
        frozenset({LENDER}),
        parse_disposal_list,
        apply_disposal_list,
        "List a non-performing loan asset for disposal.",
    ),
    TxType(
        "disposal_status",
        frozenset({SERVICE_PLATFORM, LENDER}),
        parse_disposal_status,
        apply_disposal_status,
        "Advance a disposal listing (bidding, sold, failed, withdrawn).",
    ),
)

RULES: Final = make_rules(CHANNEL, TX_TYPES)
