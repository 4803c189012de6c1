"""风控链 — the risk channel, run by the risk-monitoring centre.

The closed loop 监测预警 → 处置反馈 → 持续监测 as a state machine per alert::

    alert (risk_centre)               → open
    open       --alert_disposition (bureau)-->          disposed
    disposed   --alert_feedback (the respondent lender)--> feedback
    feedback   --alert_followup (risk_centre)-->         monitoring
    monitoring --alert_disposition (bureau)-->          disposed   (another round)
    monitoring --alert_close (bureau)-->                closed

Any other step is rejected with ``bad_alert_state``. An ``alert`` is accepted only if
the named rule, re-run over the supervision window it names, reproduces it exactly
(``not_reproduced`` otherwise); a follow-up's ``persists`` flag is recomputed the same
way. Both read supervision only through committed, height-stamped facts.

State::

    risk/alert/<alert id hex>          the alert and its loop state (alert id = tx id)
    risk/step/<alert id hex>/<n>       every step, append-only
    risk/dedup/<digest hex>            (rule, subject, evidence) already alerted
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from channels.base import TxType, config_update_type, make_rules
from channels.context import TxContext, committed_facts
from channels.errors import TxRejected
from channels.fields import PayloadReader
from channels.monitoring import AlertPayload, persists, run_rules
from channels.roles import BUREAU, LENDER, RISK_CENTRE
from channels.state import WriteSet, seq_part
from ledger.encoding import encode
from ledger.hashing import tagged_hash

CHANNEL: Final = "risk"
SOURCE_CHANNEL: Final = "supervision"
#: Domain-separation tag of the alert de-duplication digest (local to this channel).
TAG_ALERT_DEDUP: Final = "risk-alert-dedup/v1"
DISPOSITION_ACTIONS: Final = (
    "inquiry",
    "warning",
    "rectification",
    "suspension_proposed",
    "no_action",
)
ALERT_STATUSES: Final = ("open", "disposed", "feedback", "monitoring", "closed")


def alert_key(alert_id: bytes) -> bytes:
    return b"risk/alert/" + alert_id.hex().encode()


def step_prefix(alert_id: bytes) -> bytes:
    return b"risk/step/" + alert_id.hex().encode() + b"/"


def dedup_digest(alert: AlertPayload) -> bytes:
    body = {
        "rule": alert.rule,
        "subject": alert.subject.to_wire(),
        "evidence": [r.to_wire() for r in alert.evidence],
    }
    return tagged_hash(TAG_ALERT_DEDUP, encode(body))


def dedup_key(alert: AlertPayload) -> bytes:
    return b"risk/dedup/" + dedup_digest(alert).hex().encode()


def already_alerted(state: Any, alert: AlertPayload) -> bool:
    """Whether an identical finding is on the channel (the worker skips those)."""
    return state.get(dedup_key(alert)) is not None


# -- payloads -------------------------------------------------------------------


@dataclass(frozen=True)
class Disposition:
    alert_id: bytes
    action: str
    note: str
    respondent: str | None
    deadline_ms: int | None


@dataclass(frozen=True)
class Feedback:
    alert_id: bytes
    measures: str
    document_digest: bytes | None


@dataclass(frozen=True)
class Followup:
    alert_id: bytes
    source_height: int
    persists: bool


@dataclass(frozen=True)
class Close:
    alert_id: bytes
    conclusion: str


def parse_alert(raw: dict[str, Any]) -> AlertPayload:
    return AlertPayload.parse(raw)


def parse_disposition(raw: dict[str, Any]) -> Disposition:
    p = PayloadReader(raw, "alert_disposition")
    v = Disposition(
        alert_id=p.digest("alert_id"),
        action=p.enum("action", DISPOSITION_ACTIONS),
        note=p.text("note", min_len=1),
        respondent=p.name("respondent") if p.optional("respondent") else None,
        deadline_ms=p.integer("deadline_ms", lo=1) if p.optional("deadline_ms") else None,
    )
    p.done()
    return v


def parse_feedback(raw: dict[str, Any]) -> Feedback:
    p = PayloadReader(raw, "alert_feedback")
    v = Feedback(
        alert_id=p.digest("alert_id"),
        measures=p.text("measures", min_len=1),
        document_digest=p.digest("document_digest") if p.optional("document_digest") else None,
    )
    p.done()
    return v


def parse_followup(raw: dict[str, Any]) -> Followup:
    p = PayloadReader(raw, "alert_followup")
    v = Followup(p.digest("alert_id"), p.integer("source_height", lo=1), p.flag("persists"))
    p.done()
    return v


def parse_close(raw: dict[str, Any]) -> Close:
    p = PayloadReader(raw, "alert_close")
    v = Close(p.digest("alert_id"), p.text("conclusion", min_len=1))
    p.done()
    return v


# -- rules ----------------------------------------------------------------------


def _step(
    state: WriteSet, alert_id: bytes, rec: dict[str, Any], ctx: TxContext, step: dict[str, Any]
) -> None:
    n = rec["steps"]
    step.update({"by": ctx.sender, "h": ctx.height, "t": ctx.block_time_ms, "tx": ctx.tx_id})
    state.put_value(step_prefix(alert_id) + seq_part(n), step)
    rec["steps"] = n + 1
    state.put_value(alert_key(alert_id), rec)


def _load(state: WriteSet, alert_id: bytes, step: str, expected: tuple[str, ...]) -> dict[str, Any]:
    rec = state.get_value(alert_key(alert_id))
    if rec is None:
        raise TxRejected("alert_not_found", f"no alert {alert_id.hex()}")
    rec = dict(rec)
    if rec["status"] not in expected:
        raise TxRejected(
            "bad_alert_state",
            f"alert is {rec['status']}: {step} needs it {' or '.join(expected)}",
        )
    return rec


def apply_alert(state: WriteSet, alert: AlertPayload, ctx: TxContext) -> Mapping[str, Any]:
    if already_alerted(state, alert):
        raise TxRejected(
            "duplicate_alert", "the same finding (rule, subject, evidence) was already alerted"
        )
    facts = committed_facts(ctx.cross, SOURCE_CHANNEL, alert.source_height)
    reproduced = run_rules(
        facts,
        alert.from_height,
        alert.source_height,
        ctx.params,
        rules=(alert.rule,),
        subject=alert.subject,
    )
    if alert not in reproduced:
        raise TxRejected(
            "not_reproduced",
            f"rule {alert.rule} over supervision heights ({alert.from_height}, "
            f"{alert.source_height}] does not produce this alert",
        )
    rec = alert.to_payload()
    rec.update(
        {
            "alert_id": ctx.tx_id,
            "status": "open",
            "round": 0,
            "respondent": None,
            "opened_h": ctx.height,
            "steps": 0,
            "last_followup": None,
        }
    )
    state.put_value(dedup_key(alert), {"alert_id": ctx.tx_id})
    _step(state, ctx.tx_id, rec, ctx, {"step": "alert"})
    return {"alert_id": ctx.tx_id}


def apply_disposition(state: WriteSet, p: Disposition, ctx: TxContext) -> None:
    rec = _load(state, p.alert_id, "alert_disposition", ("open", "monitoring"))
    subject_lender = rec["subject"].get("lender")
    if subject_lender is not None and p.respondent not in (None, subject_lender):
        raise TxRejected(
            "respondent_mismatch",
            f"the alert is about lender {subject_lender!r}; it must be the respondent",
        )
    respondent = p.respondent or subject_lender
    if respondent is None:
        raise TxRejected("respondent_required", "the alert names no lender: name a respondent")
    rec.update({"status": "disposed", "round": rec["round"] + 1, "respondent": respondent})
    step: dict[str, Any] = {
        "step": "disposition",
        "action": p.action,
        "note": p.note,
        "respondent": respondent,
    }
    if p.deadline_ms is not None:
        step["deadline_ms"] = p.deadline_ms
    _step(state, p.alert_id, rec, ctx, step)


def apply_feedback(state: WriteSet, p: Feedback, ctx: TxContext) -> None:
    rec = _load(state, p.alert_id, "alert_feedback", ("disposed",))
    if ctx.sender != rec["respondent"]:
        raise TxRejected(
            "not_respondent", f"only the respondent {rec['respondent']!r} may give feedback"
        )
    rec["status"] = "feedback"
    step: dict[str, Any] = {"step": "feedback", "measures": p.measures}
    if p.document_digest is not None:
        step["document_digest"] = p.document_digest
    _step(state, p.alert_id, rec, ctx, step)


def apply_followup(state: WriteSet, p: Followup, ctx: TxContext) -> None:
    rec = _load(state, p.alert_id, "alert_followup", ("feedback",))
    alert = AlertPayload.parse(
        {
            k: rec[k]
            for k in ("rule", "subject", "from_height", "source_height", "evidence", "details")
        }
    )
    if p.source_height < alert.source_height:
        raise TxRejected(
            "bad_source_height",
            f"follow-up must read supervision at or after the alert's height {alert.source_height}",
        )
    facts = committed_facts(ctx.cross, SOURCE_CHANNEL, p.source_height)
    actual = persists(facts, alert, p.source_height, ctx.params)
    if actual != p.persists:
        raise TxRejected(
            "not_reproduced",
            f"at supervision height {p.source_height} the condition "
            f"{'persists' if actual else 'no longer holds'}",
        )
    rec["status"] = "monitoring"
    rec["last_followup"] = {"source_height": p.source_height, "persists": p.persists}
    _step(
        state,
        p.alert_id,
        rec,
        ctx,
        {"step": "followup", "source_height": p.source_height, "persists": p.persists},
    )


def apply_close(state: WriteSet, p: Close, ctx: TxContext) -> None:
    rec = _load(state, p.alert_id, "alert_close", ("monitoring",))
    rec["status"] = "closed"
    _step(state, p.alert_id, rec, ctx, {"step": "close", "conclusion": p.conclusion})


TX_TYPES: Final = (
    config_update_type(),
    TxType(
        "alert",
        frozenset({RISK_CENTRE}),
        parse_alert,
        apply_alert,
        "Post a monitoring rule's finding; accepted only if it reproduces.",
    ),
    TxType(
        "alert_disposition",
        frozenset({BUREAU}),
        parse_disposition,
        apply_disposition,
        "The bureau's disposition of an open (or still-monitored) alert.",
    ),
    TxType(
        "alert_feedback",
        frozenset({LENDER}),
        parse_feedback,
        apply_feedback,
        "The respondent lender's feedback on a disposition.",
    ),
    TxType(
        "alert_followup",
        frozenset({RISK_CENTRE}),
        parse_followup,
        apply_followup,
        "Continued monitoring: whether the condition still holds at a later height.",
    ),
    TxType(
        "alert_close",
        frozenset({BUREAU}),
        parse_close,
        apply_close,
        "Close a monitored alert.",
    ),
)

RULES: Final = make_rules(CHANNEL, TX_TYPES)
