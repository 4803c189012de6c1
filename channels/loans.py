"""A loan's life as a state machine over reported events (shared by every channel).

The supervision channel validates each reported event with :func:`fold_event`; the
credit, risk and service channels replay committed events with the same function, so
"the state of loan X as of supervision height H" means the same everywhere.

States and the events allowed in each (anything else is ``bad_transition``)::

    (none)      --contract-->                         contracted
    contracted  --disbursement-->                     active
    active      --disbursement (up to principal)-->   active
    active      --repayment-->                        active
    active      --overdue-->                          overdue
    overdue     --overdue (new amount)-->             overdue
    overdue     --collection-->                       collection
    collection  --collection (new amount)-->          collection
    overdue/collection --repayment-->                 same state, or active when the
                                                      overdue amount is fully repaid
    any open    --settlement-->                       settled (nothing left) or
                                                      written_off (remainder written off)

Amounts: ``contract`` = principal (> 0); ``disbursement`` > 0, total disbursed <=
principal; ``repayment`` > 0 and <= outstanding; ``overdue``/``collection`` = the amount
overdue / under collection (> 0, <= outstanding); ``settlement`` = the final payment
received (>= 0, <= outstanding); what remains is written off. Outstanding never goes
negative. Every event repeats the contract's borrower reference, rate and term.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

from channels.errors import TxRejected

EVENTS: Final = ("contract", "disbursement", "repayment", "overdue", "collection", "settlement")
OPEN_STATES: Final = frozenset({"contracted", "active", "overdue", "collection"})
CLOSED_STATES: Final = frozenset({"settled", "written_off"})
LOAN_STATES: Final = tuple(sorted(OPEN_STATES | CLOSED_STATES))
#: States counted as "overdue" exposure (overdue ratio, credit records).
DELINQUENT_STATES: Final = frozenset({"overdue", "collection"})


@dataclass(frozen=True)
class EventRef:
    """The identity of one reported event: the transaction and its index in it."""

    tx_id: bytes
    index: int

    def to_wire(self) -> dict[str, Any]:
        return {"i": self.index, "tx": self.tx_id}

    @staticmethod
    def from_wire(raw: dict[str, Any]) -> EventRef:
        return EventRef(raw["tx"], raw["i"])

    def sort_key(self) -> tuple[bytes, int]:
        return (self.tx_id, self.index)


@dataclass(frozen=True)
class LoanEvent:
    """One reported loan event (the fields a lender signs)."""

    report_id: str
    loan_id: str
    borrower_ref: bytes
    event: str
    amount_cents: int
    rate_bp: int
    term_months: int
    event_time_ms: int
    commitment: bytes

    def to_wire(self) -> dict[str, Any]:
        return {
            "amount_cents": self.amount_cents,
            "borrower_ref": self.borrower_ref,
            "commitment": self.commitment,
            "event": self.event,
            "event_time_ms": self.event_time_ms,
            "loan_id": self.loan_id,
            "rate_bp": self.rate_bp,
            "report_id": self.report_id,
            "term_months": self.term_months,
        }


@dataclass(frozen=True)
class EventFact:
    """A committed loan event as stored on the supervision channel (append-only)."""

    lender: str
    seq: int
    height: int
    block_time_ms: int
    ref: EventRef
    ev: LoanEvent

    def to_wire(self) -> dict[str, Any]:
        ev = self.ev
        return {
            "amount_cents": ev.amount_cents,
            "borrower_ref": ev.borrower_ref,
            "commitment": ev.commitment,
            "event": ev.event,
            "event_time_ms": ev.event_time_ms,
            "h": self.height,
            "i": self.ref.index,
            "lender": self.lender,
            "loan_id": ev.loan_id,
            "rate_bp": ev.rate_bp,
            "report_id": ev.report_id,
            "seq": self.seq,
            "t": self.block_time_ms,
            "term_months": ev.term_months,
            "tx": self.ref.tx_id,
        }

    @staticmethod
    def from_wire(w: dict[str, Any]) -> EventFact:
        return EventFact(
            lender=w["lender"],
            seq=w["seq"],
            height=w["h"],
            block_time_ms=w["t"],
            ref=EventRef(w["tx"], w["i"]),
            ev=LoanEvent(
                report_id=w["report_id"],
                loan_id=w["loan_id"],
                borrower_ref=w["borrower_ref"],
                event=w["event"],
                amount_cents=w["amount_cents"],
                rate_bp=w["rate_bp"],
                term_months=w["term_months"],
                event_time_ms=w["event_time_ms"],
                commitment=w["commitment"],
            ),
        )


@dataclass(frozen=True)
class LoanSummary:
    """A loan's state after folding its events."""

    lender: str
    loan_id: str
    borrower_ref: bytes
    state: str
    principal_cents: int
    rate_bp: int
    term_months: int
    disbursed_cents: int = 0
    repaid_cents: int = 0
    outstanding_cents: int = 0
    overdue_cents: int = 0
    written_off_cents: int = 0
    last_event_time_ms: int = 0
    events: int = 0
    contract_height: int = 0

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    @property
    def delinquent_outstanding(self) -> int:
        return self.outstanding_cents if self.state in DELINQUENT_STATES else 0

    def to_wire(self) -> dict[str, Any]:
        return {
            "borrower_ref": self.borrower_ref,
            "contract_height": self.contract_height,
            "disbursed_cents": self.disbursed_cents,
            "events": self.events,
            "last_event_time_ms": self.last_event_time_ms,
            "lender": self.lender,
            "loan_id": self.loan_id,
            "outstanding_cents": self.outstanding_cents,
            "overdue_cents": self.overdue_cents,
            "principal_cents": self.principal_cents,
            "rate_bp": self.rate_bp,
            "repaid_cents": self.repaid_cents,
            "state": self.state,
            "term_months": self.term_months,
            "written_off_cents": self.written_off_cents,
        }

    @staticmethod
    def from_wire(w: dict[str, Any]) -> LoanSummary:
        return LoanSummary(**w)


def fold_event(loan: LoanSummary | None, lender: str, ev: LoanEvent, height: int) -> LoanSummary:
    """The loan after ``ev``; raises :class:`TxRejected` if ``ev`` may not happen now.

    Pure: checks the life-cycle order, amounts, and consistency with the contract.
    """
    what = f"loan {ev.loan_id}"
    if loan is None:
        if ev.event != "contract":
            raise TxRejected("loan_not_found", f"{what}: no contract reported before {ev.event}")
        if ev.amount_cents <= 0:
            raise TxRejected("bad_amount", f"{what}: contract principal must be positive")
        if ev.term_months <= 0:
            raise TxRejected("bad_amount", f"{what}: term must be at least one month")
        return LoanSummary(
            lender=lender,
            loan_id=ev.loan_id,
            borrower_ref=ev.borrower_ref,
            state="contracted",
            principal_cents=ev.amount_cents,
            rate_bp=ev.rate_bp,
            term_months=ev.term_months,
            last_event_time_ms=ev.event_time_ms,
            events=1,
            contract_height=height,
        )
    if ev.event == "contract":
        raise TxRejected("loan_exists", f"{what}: a contract was already reported")
    if loan.state in CLOSED_STATES:
        raise TxRejected("loan_closed", f"{what} is {loan.state}: no events after settlement")
    if ev.borrower_ref != loan.borrower_ref:
        raise TxRejected(
            "borrower_mismatch", f"{what}: borrower reference differs from the contract"
        )
    if ev.rate_bp != loan.rate_bp or ev.term_months != loan.term_months:
        raise TxRejected("terms_mismatch", f"{what}: rate or term differs from the contract")
    if ev.event_time_ms < loan.last_event_time_ms:
        raise TxRejected(
            "event_time_regressed",
            f"{what}: event time {ev.event_time_ms} is before the previous event's "
            f"{loan.last_event_time_ms}",
        )
    amt = ev.amount_cents
    nxt = replace(loan, last_event_time_ms=ev.event_time_ms, events=loan.events + 1)

    def transition_error() -> TxRejected:
        return TxRejected("bad_transition", f"{what}: {ev.event} is not allowed when {loan.state}")

    if ev.event == "disbursement":
        if loan.state not in ("contracted", "active"):
            raise transition_error()
        if amt <= 0:
            raise TxRejected("bad_amount", f"{what}: disbursement must be positive")
        if loan.disbursed_cents + amt > loan.principal_cents:
            raise TxRejected(
                "over_disbursed",
                f"{what}: disbursing {amt} would exceed the principal {loan.principal_cents} "
                f"(already disbursed {loan.disbursed_cents})",
            )
        return replace(
            nxt,
            state="active",
            disbursed_cents=loan.disbursed_cents + amt,
            outstanding_cents=loan.outstanding_cents + amt,
        )
    if ev.event == "repayment":
        if loan.state not in ("active", "overdue", "collection"):
            raise transition_error()
        if amt <= 0:
            raise TxRejected("bad_amount", f"{what}: repayment must be positive")
        if amt > loan.outstanding_cents:
            raise TxRejected(
                "overpayment",
                f"{what}: repayment {amt} exceeds outstanding {loan.outstanding_cents}",
            )
        overdue = max(0, loan.overdue_cents - amt)
        state = loan.state if overdue > 0 else "active"
        return replace(
            nxt,
            state=state,
            repaid_cents=loan.repaid_cents + amt,
            outstanding_cents=loan.outstanding_cents - amt,
            overdue_cents=overdue,
        )
    if ev.event in ("overdue", "collection"):
        allowed = ("active", "overdue") if ev.event == "overdue" else ("overdue", "collection")
        if loan.state not in allowed:
            raise transition_error()
        if amt <= 0 or amt > loan.outstanding_cents:
            raise TxRejected(
                "bad_amount",
                f"{what}: {ev.event} amount must be positive and at most the outstanding "
                f"{loan.outstanding_cents}",
            )
        return replace(nxt, state=ev.event, overdue_cents=amt)
    if ev.event == "settlement":
        if amt > loan.outstanding_cents:
            raise TxRejected(
                "overpayment",
                f"{what}: final payment {amt} exceeds outstanding {loan.outstanding_cents}",
            )
        remainder = loan.outstanding_cents - amt
        return replace(
            nxt,
            state="written_off" if remainder else "settled",
            repaid_cents=loan.repaid_cents + amt,
            outstanding_cents=0,
            overdue_cents=0,
            written_off_cents=remainder,
        )
    raise TxRejected("bad_payload", f"unknown event {ev.event!r}")  # schema prevents this
