"""Plain values the SDK returns: transaction status, outcomes, stream events, answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger.errors import SchemaError

#: Status values (``unknown``: the node asked knows nothing of the transaction).
STATUSES = ("unknown", "pending", "committed", "rejected")


@dataclass(frozen=True)
class Outcome:
    """The channel rules' verdict on a committed transaction."""

    valid: bool
    code: str
    message: str = ""
    result: Mapping[str, Any] | None = field(default=None, hash=False)

    @staticmethod
    def from_wire(raw: Any) -> Outcome | None:
        if not isinstance(raw, dict):
            return None
        result = raw.get("result")
        return Outcome(
            valid=raw.get("valid") is True,
            code=str(raw.get("code", "")),
            message=str(raw.get("message", raw.get("msg", ""))),
            result=result if isinstance(result, dict) else None,
        )

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"valid": self.valid, "code": self.code, "message": self.message}
        if self.result is not None:
            doc["result"] = _jsonable(self.result)
        return doc


@dataclass(frozen=True)
class TxStatus:
    """What the network says about a transaction.

    ``status`` is ``unknown`` (the node asked has not seen it), ``pending`` (accepted,
    not in a block yet), ``committed`` (in block ``height`` at ``index``, with the
    rules' ``outcome``) or ``rejected`` (refused before ordering: ``reason``).
    ``evidence_codes`` lists the evidence codes of the transaction's records once its
    block is anchored on the court chain (empty before).
    """

    tx_id: bytes
    channel: str
    status: str
    height: int | None = None
    index: int | None = None
    outcome: Outcome | None = None
    reason: str | None = None
    evidence_codes: tuple[str, ...] = ()

    @property
    def committed(self) -> bool:
        return self.status == "committed"

    @property
    def valid(self) -> bool:
        """Committed and VALID."""
        return self.committed and self.outcome is not None and self.outcome.valid

    @staticmethod
    def from_wire(raw: Any, *, tx_id: bytes, channel: str) -> TxStatus:
        """Parse a node's status document (msgpack or JSON-converted)."""
        if not isinstance(raw, dict):
            raise SchemaError("transaction status: expected a map")
        status = raw.get("status")
        if status not in STATUSES:
            raise SchemaError(f"transaction status: unknown status {status!r}")
        reported = raw.get("tx_id")
        if isinstance(reported, str) and reported != tx_id.hex():
            raise SchemaError("transaction status: the node answered about another tx id")
        codes = raw.get("evidence_codes") or ()
        if not isinstance(codes, list | tuple) or not all(isinstance(c, str) for c in codes):
            raise SchemaError("transaction status: evidence_codes must be a list of strings")
        height = raw.get("height")
        index = raw.get("index")
        reason = raw.get("reason")
        if reason is None and isinstance(raw.get("error"), dict):
            err = raw["error"]
            reason = f"{err.get('code', '')}: {err.get('message', '')}"
        return TxStatus(
            tx_id=tx_id,
            channel=str(raw.get("channel", channel)),
            status=str(status),
            height=height if isinstance(height, int) else None,
            index=index if isinstance(index, int) else None,
            outcome=Outcome.from_wire(raw.get("outcome")),
            reason=str(reason) if reason is not None else None,
            evidence_codes=tuple(codes),
        )

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "tx_id": self.tx_id.hex(),
            "channel": self.channel,
            "status": self.status,
        }
        if self.height is not None:
            doc["height"] = self.height
            doc["index"] = self.index
        if self.outcome is not None:
            doc["outcome"] = self.outcome.to_json()
        if self.reason is not None:
            doc["reason"] = self.reason
        if self.evidence_codes:
            doc["evidence_codes"] = list(self.evidence_codes)
        return doc


@dataclass(frozen=True)
class CommittedTx:
    """One of the lender's committed transactions, as delivered by the event stream."""

    channel: str
    height: int
    index: int
    tx_id: bytes
    tx_type: str
    block_hash: bytes
    block_time_ms: int
    outcome: Outcome | None
    payload: Mapping[str, Any] = field(hash=False)

    @property
    def valid(self) -> bool:
        return self.outcome is not None and self.outcome.valid


@dataclass(frozen=True)
class CreditReport:
    """The counts-only answer of a multi-lender credit check (征信 多头借贷查询)."""

    tx_id: bytes
    height: int
    answer: Mapping[str, Any] = field(hash=False)

    @property
    def lenders_with_open_loans(self) -> int:
        return int(self.answer.get("lenders_with_open_loans", 0))

    @property
    def other_lenders_with_open_loans(self) -> int:
        return int(self.answer.get("other_lenders_with_open_loans", 0))

    @property
    def multi_lender(self) -> bool:
        """True if another lender already has an open loan to this borrower."""
        return self.other_lenders_with_open_loans > 0

    def to_json(self) -> dict[str, Any]:
        return {"tx_id": self.tx_id.hex(), "height": self.height, "answer": _jsonable(self.answer)}


def _jsonable(value: Any) -> Any:
    """Wire value → JSON value with bytes as lowercase hex strings (for display)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


jsonable = _jsonable
