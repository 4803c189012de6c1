"""Test harness for channel rules: an in-memory network with named orgs and a clock."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from channels.base import TxOutcome
from channels.context import DAY_MS, NetworkParams
from channels.memory import MemoryNetwork
from channels.pseudonym import borrower_ref, id_check_char, record_commitment
from channels.state import OK
from ledger.blocks import Transaction

NET = hashlib.sha256(b"test-network").digest()
T0 = 1_596_240_000_000  # 2020-08-01T00:00:00Z
PSEUDONYM_KEY = hashlib.sha256(b"test pseudonym key").digest()

ROLES = {
    "gzjr": "bureau",
    "gzcourt": "court",
    "riskc": "risk_centre",
    "credit": "credit_agency",
    "svcp": "service_platform",
    "lender-a": "lender",
    "lender-b": "lender",
    "lender-c": "lender",
    "lender-d": "lender",
    "lender-e": "lender",
    "clerk1": "clerk",
    "audit": "auditor",
    "relay-node": "node",
}
LENDERS = ("lender-a", "lender-b", "lender-c", "lender-d", "lender-e")


def key_of(org: str, n: int = 0) -> bytes:
    return hashlib.sha256(f"pk:{org}:{n}".encode()).digest()


def id_number(n: int) -> str:
    """A syntactically valid 18-character resident ID (Guangzhou region code)."""
    first17 = f"440104{19800101 + (n % 28):08d}{n % 1000:03d}"
    return first17 + id_check_char(first17)


def bref(n: int) -> bytes:
    return borrower_ref(PSEUDONYM_KEY, id_number(n))


def commitment(*parts: Any) -> bytes:
    return record_commitment(hashlib.sha256(repr(parts).encode()).digest(), list(map(str, parts)))


class Harness:
    """A MemoryNetwork plus a clock and transaction construction by org name."""

    def __init__(self, params: NetworkParams | None = None, **kw: Any) -> None:
        self.params = params or NetworkParams()
        self.net = MemoryNetwork(ROLES, params=self.params, **kw)
        self.now = T0
        self._nonce = 0
        self._report = 0

    def advance(self, ms: int) -> None:
        self.now += ms

    def tx(
        self,
        channel: str,
        sender: str,
        type_: str,
        payload: dict[str, Any],
        *,
        key: bytes | None = None,
        time_ms: int | None = None,
    ) -> Transaction:
        self._nonce += 1
        if type_ == "loan_event" and "records" not in payload:
            # Tests name a single event by its map; on the wire a loan_event carries it
            # as its one record (ledger.blocks' "records" convention).
            payload = {"records": [payload]}
        return Transaction(
            network=NET,
            channel=channel,
            type=type_,
            sender=sender,
            public_key=key if key is not None else key_of(sender),
            nonce=self._nonce,
            time_ms=self.now if time_ms is None else time_ms,
            payload=payload,
        )

    def block(self, channel: str, txs: Iterable[Transaction]) -> list[TxOutcome]:
        return list(self.net.commit(channel, list(txs), self.now).outcomes)

    def send(
        self, channel: str, sender: str, type_: str, payload: dict[str, Any], **kw: Any
    ) -> TxOutcome:
        return self.block(channel, [self.tx(channel, sender, type_, payload, **kw)])[0]

    def ok(
        self, channel: str, sender: str, type_: str, payload: dict[str, Any], **kw: Any
    ) -> TxOutcome:
        out = self.send(channel, sender, type_, payload, **kw)
        assert out.code == OK, f"{type_} rejected: {out.code}: {out.message}"
        return out

    def rejected(
        self, channel: str, sender: str, type_: str, payload: dict[str, Any], code: str, **kw: Any
    ) -> TxOutcome:
        """Send; assert the code, and that nothing but the block's metadata was written."""
        before = self.snapshot(channel)
        out = self.send(channel, sender, type_, payload, **kw)
        assert out.code == code, f"expected {code}, got {out.code}: {out.message}"
        assert out.message
        assert self.snapshot(channel) == before
        return out

    def snapshot(self, channel: str) -> dict[bytes, bytes]:
        return {
            k: v
            for k, v in self.net.states[channel].snapshot().items()
            if not k.startswith(b"meta/block/")
        }

    def height(self, channel: str) -> int:
        return self.net.heights[channel]

    # -- business helpers -----------------------------------------------------------
    def admit(self, lender: str, **limits: int) -> None:
        self.ok("supervision", "gzjr", "lender_admit", admit_payload(lender, **limits))

    def next_report(self) -> str:
        self._report += 1
        return f"r{self._report:07d}"

    def event(
        self,
        loan_id: str,
        event: str,
        amount: int,
        *,
        borrower: int = 1,
        rate_bp: int = 1800,
        term: int = 12,
        event_time: int | None = None,
        report_id: str | None = None,
    ) -> dict[str, Any]:
        return {
            "report_id": report_id or self.next_report(),
            "loan_id": loan_id,
            "borrower_ref": bref(borrower),
            "event": event,
            "amount_cents": amount,
            "rate_bp": rate_bp,
            "term_months": term,
            "event_time_ms": self.now if event_time is None else event_time,
            "c": commitment(loan_id, event, amount),
        }

    def report(self, lender: str, *events: dict[str, Any]) -> TxOutcome:
        if len(events) == 1:
            return self.send("supervision", lender, "loan_event", events[0])
        return self.send("supervision", lender, "loan_event_batch", {"records": list(events)})

    def lend(
        self, lender: str, loan_id: str, amount: int, *, borrower: int = 1, rate_bp: int = 1800
    ) -> None:
        """Contract and disburse a loan in one batch."""
        out = self.report(
            lender,
            self.event(loan_id, "contract", amount, borrower=borrower, rate_bp=rate_bp),
            self.event(loan_id, "disbursement", amount, borrower=borrower, rate_bp=rate_bp),
        )
        assert out.code == OK, out.message


def admit_payload(
    lender: str, *, max_principal: int = 10**10, max_outstanding: int = 10**13
) -> dict[str, Any]:
    return {
        "lender": lender,
        "licence_id": f"GZ-XD-{lender}",
        "name": f"{lender} microcredit co.",
        "public_keys": [key_of(lender)],
        "limits": {"max_principal_cents": max_principal, "max_outstanding_cents": max_outstanding},
    }


__all__ = ["DAY_MS", "LENDERS", "NET", "ROLES", "T0", "Harness", "admit_payload", "bref", "key_of"]
