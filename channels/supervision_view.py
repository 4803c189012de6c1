"""Read the supervision channel "as of height H" from its append-only facts.

Every validator of another channel that names supervision height H computes exactly
the same answers here, whatever its own supervision channel has applied beyond H:
only keys stamped with a height are read, and only those at heights <= H count.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from channels.base import block_meta_key
from channels.errors import TxRejected
from channels.loans import EventFact, LoanSummary, fold_event
from channels.state import (
    HEIGHT_DIGITS,
    StateReader,
    iter_height_range,
    last_at_or_below,
    read_value,
)
from channels.supervision import (
    CHANNEL,
    EMPTY_BOOK,
    HX_PREFIX,
    activity_prefix,
    book_prefix,
    borrower_prefix,
    event_prefix,
    lender_loans_prefix,
    lender_log_prefix,
)
from ledger.encoding import decode_own
from ledger.errors import CorruptLedgerError


@dataclass(frozen=True)
class LenderBook:
    """A lender's book: outstanding, delinquent outstanding, open and delinquent loans."""

    outstanding_cents: int
    delinquent_cents: int
    open_loans: int
    delinquent_loans: int

    @property
    def delinquent_ratio_bp(self) -> int:
        if self.outstanding_cents <= 0:
            return 0
        return self.delinquent_cents * 10_000 // self.outstanding_cents


class SupervisionView:
    """Supervision facts as of height ``as_of`` (cached per instance; cheap to make)."""

    def __init__(self, facts: StateReader, as_of: int) -> None:
        self.facts = facts
        self.as_of = as_of
        self._loans: dict[tuple[str, str], LoanSummary | None] = {}

    def _corrupt(self, what: str) -> CorruptLedgerError:
        return CorruptLedgerError(f"supervision facts: {what}", channel=CHANNEL, height=self.as_of)

    def block_time(self, height: int) -> int:
        """Block time of ``height`` (<= as_of); CorruptLedgerError if it is missing."""
        if not 1 <= height <= self.as_of:
            raise ValueError(f"height {height} outside 1..{self.as_of}")
        meta = read_value(self.facts, block_meta_key(height))
        if meta is None:
            raise self._corrupt(f"no block metadata at height {height}")
        t: int = meta["t"]
        return t

    # -- facts by height ----------------------------------------------------------
    def facts_in_range(self, lo_exclusive: int, hi_inclusive: int) -> Iterator[dict[str, Any]]:
        """Index entries (``k`` = ``loan`` or ``lender``) of heights in (lo, min(hi, as_of)]."""
        hi = min(hi_inclusive, self.as_of)
        for key, raw in iter_height_range(self.facts, HX_PREFIX, lo_exclusive, hi):
            entry = dict(decode_own(raw))
            entry["h"] = _fact_height(key)
            yield entry

    def fact_heights(self, lo_exclusive: int, hi_inclusive: int) -> Iterator[int]:
        """The height of each fact of :meth:`facts_in_range`, in order (keys only: no
        entry is decoded)."""
        hi = min(hi_inclusive, self.as_of)
        for key, _raw in iter_height_range(self.facts, HX_PREFIX, lo_exclusive, hi):
            yield _fact_height(key)

    def loan_events_in_range(self, lo_exclusive: int, hi_inclusive: int) -> Iterator[EventFact]:
        for entry in self.facts_in_range(lo_exclusive, hi_inclusive):
            if entry["k"] == "loan":
                yield self.event(entry["l"], entry["loan"], entry["seq"])

    def count_facts_in_range(self, lo_exclusive: int, hi_inclusive: int, limit: int) -> int:
        """Number of facts in the range, counting at most ``limit + 1`` (keys only: no
        entry is decoded)."""
        n = 0
        for _ in self.fact_heights(lo_exclusive, hi_inclusive):
            n += 1
            if n > limit:
                break
        return n

    # -- loans --------------------------------------------------------------------
    def event(self, lender: str, loan_id: str, seq: int) -> EventFact:
        raw = self.facts.get(event_prefix(lender, loan_id) + b"%06d" % seq)
        if raw is None:
            raise self._corrupt(f"missing event {lender}/{loan_id}/{seq}")
        return EventFact.from_wire(decode_own(raw))

    def loan_history(self, lender: str, loan_id: str) -> list[EventFact]:
        out = []
        for _, raw in self.facts.iter_prefix(event_prefix(lender, loan_id)):
            fact = EventFact.from_wire(decode_own(raw))
            if fact.height > self.as_of:
                break
            out.append(fact)
        return out

    def loan(self, lender: str, loan_id: str) -> LoanSummary | None:
        """The loan's state as of ``as_of`` (``None``: not contracted by then)."""
        key = (lender, loan_id)
        if key not in self._loans:
            summary: LoanSummary | None = None
            for fact in self.loan_history(lender, loan_id):
                try:
                    summary = fold_event(summary, lender, fact.ev, fact.height)
                except TxRejected as exc:
                    raise self._corrupt(f"committed event does not replay: {exc.message}") from None
            self._loans[key] = summary
        return self._loans[key]

    def borrower_loans(self, borrower_ref: bytes) -> list[tuple[str, str]]:
        """(lender, loan id) of every loan of the borrower contracted by ``as_of``."""
        prefix = borrower_prefix(borrower_ref)
        out = []
        for key, raw in self.facts.iter_prefix(prefix):
            if decode_own(raw)["h"] <= self.as_of:
                lender, loan_id = key[len(prefix) :].decode().split("/", 1)
                out.append((lender, loan_id))
        return out

    def lender_borrower_loans(self, lender: str, borrower_ref: bytes) -> list[str]:
        prefix = borrower_prefix(borrower_ref) + lender.encode() + b"/"
        return [
            key[len(prefix) :].decode()
            for key, raw in self.facts.iter_prefix(prefix)
            if decode_own(raw)["h"] <= self.as_of
        ]

    def lender_loan_ids(self, lender: str) -> list[str]:
        prefix = lender_loans_prefix(lender)
        return [
            key[len(prefix) :].decode()
            for key, raw in self.facts.iter_prefix(prefix)
            if decode_own(raw)["h"] <= self.as_of
        ]

    # -- lenders ------------------------------------------------------------------
    def book(self, lender: str) -> LenderBook:
        item = last_at_or_below(self.facts, book_prefix(lender), self.as_of)
        b = EMPTY_BOOK if item is None else decode_own(item[1])
        return LenderBook(b["out"], b["dout"], b["open"], b["dlq"])

    def lender_status(self, lender: str) -> str | None:
        """``admitted`` / ``suspended`` as of ``as_of``, or ``None`` if not yet registered."""
        item = last_at_or_below(self.facts, lender_log_prefix(lender), self.as_of)
        return None if item is None else str(decode_own(item[1])["status"])

    def lender_admitted_time(self, lender: str) -> int | None:
        """Block time of the lender's first admission, if by ``as_of``."""
        for _, raw in self.facts.iter_prefix(lender_log_prefix(lender)):
            fact = decode_own(raw)
            if fact["h"] > self.as_of:
                return None
            t: int = fact["t"]
            return t
        return None

    def lenders(self) -> list[str]:
        """Every lender registered by ``as_of``, sorted."""
        seen: list[str] = []
        prefix = b"sup/lenderlog/"
        last = None
        for key, raw in self.facts.iter_prefix(prefix):
            org = key[len(prefix) :].split(b"/", 1)[0].decode()
            if org != last and decode_own(raw)["h"] <= self.as_of:
                seen.append(org)
                last = org
        return seen

    def last_activity(self, lender: str) -> EventFact | None:
        """The lender's latest loan event at or below ``as_of``."""
        item = last_at_or_below(self.facts, activity_prefix(lender), self.as_of)
        if item is None:
            return None
        a = decode_own(item[1])
        return self.event(lender, a["loan"], a["seq"])

    def activity_in_range(self, lender: str, lo_exclusive: int, hi_inclusive: int) -> bool:
        hi = min(hi_inclusive, self.as_of)
        for _ in iter_height_range(self.facts, activity_prefix(lender), lo_exclusive, hi):
            return True
        return False


def _fact_height(key: bytes) -> int:
    """The height stamped in a facts-index key (``HX_PREFIX`` + height + …)."""
    return int(key[len(HX_PREFIX) : len(HX_PREFIX) + HEIGHT_DIGITS])
