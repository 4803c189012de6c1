"""The SDK's exception tree (documented in docs/sdk.md).

Every error the SDK raises on purpose derives from :class:`ClientError`, itself a
:class:`ledger.errors.LedgerError`, so it has a machine ``code``, a one-line
``message`` and the ``wulian`` CLI prints it as one line. Each also says which
``stage`` failed and, when a transaction is involved, carries its ``tx_id``::

    ClientError
    ├── NodeUnreachable        no node answered (every attempt is listed)
    ├── WrongNetwork           a node serves another genesis than ours
    ├── NodeError              a node answered with an error the SDK does not map
    │   ├── AuthenticationFailed   401: the request signature / key was refused
    │   ├── PermissionDenied       403: our role may not do that
    │   └── NotFound               404: no such transaction / block / receipt
    ├── TransactionError       about one transaction (``tx_id`` set)
    │   ├── SubmitRejected         refused before ordering (``reason``: the node's code)
    │   ├── TransactionInvalid     committed, but the channel rules marked it INVALID
    │   ├── NotCommitted           not committed before the timeout (may still commit)
    │   └── EvidenceError
    │       ├── EvidenceNotAnchored    no evidence code before the timeout
    │       └── ReceiptInvalid         the node's receipt does not verify offline
    └── RecordStoreError       the local record store is unusable or lacks a record

Configuration problems (bad key file, bad genesis, malformed record) are raised as the
ledger's own :class:`~ledger.errors.ConfigError` / :class:`~ledger.errors.SchemaError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ledger.errors import LedgerError

if TYPE_CHECKING:
    from clients._models import TxStatus


@dataclass(frozen=True)
class Attempt:
    """One failed attempt to reach a node: its URL and why it failed."""

    url: str
    problem: str

    def __str__(self) -> str:
        return f"{self.url}: {self.problem}"


def _short(tx_id: bytes | None) -> str:
    return "" if tx_id is None else f" {tx_id.hex()[:16]}…"


class ClientError(LedgerError):
    """Base of every error the SDK raises on purpose.

    ``stage`` names what failed: ``connect``, ``build``, ``store``, ``submit``,
    ``commit``, ``query``, ``stream``, ``evidence`` or ``verify``.
    """

    code = "client_error"

    def __init__(self, message: str, *, stage: str = "query", tx_id: bytes | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.tx_id = tx_id


class NodeUnreachable(ClientError):
    """Every node tried failed (connection refused, timeout, 5xx, overloaded).

    ``attempts`` lists each failure. For a transaction this means it may or may not
    have reached a node: resubmitting it is safe (same tx id, committed at most once).
    """

    code = "node_unreachable"

    def __init__(
        self,
        attempts: tuple[Attempt, ...],
        *,
        stage: str = "query",
        tx_id: bytes | None = None,
        what: str = "request",
    ) -> None:
        last = f" (last: {attempts[-1]})" if attempts else ""
        super().__init__(
            f"{stage}{_short(tx_id)}: no node answered the {what} after "
            f"{len(attempts)} attempt(s){last}",
            stage=stage,
            tx_id=tx_id,
        )
        self.attempts = attempts


class WrongNetwork(ClientError):
    """A node's ``/v1/info`` names another genesis (or a node the genesis lacks)."""

    code = "wrong_network"

    def __init__(self, url: str, problem: str) -> None:
        super().__init__(f"node {url} is not a node of our network: {problem}", stage="connect")
        self.url = url


class NodeError(ClientError):
    """A node answered with an error: HTTP ``status`` and the node's ``reason`` code."""

    code = "node_error"

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        stage: str = "query",
        tx_id: bytes | None = None,
        url: str = "",
    ) -> None:
        super().__init__(
            f"{stage}{_short(tx_id)}: node answered {status} {reason}: {message}",
            stage=stage,
            tx_id=tx_id,
        )
        self.status = status
        self.reason = reason
        self.detail = message
        self.url = url


class AuthenticationFailed(NodeError):
    """401: the node refused the request signature or does not know our key."""

    code = "authentication_failed"


class PermissionDenied(NodeError):
    """403: our role may not read this or submit that."""

    code = "permission_denied"


class NotFound(NodeError):
    """404: the node knows no such transaction, block, receipt or channel."""

    code = "not_found"


class TransactionError(ClientError):
    """An error about one transaction; ``tx_id`` is always set."""

    code = "transaction_error"

    def __init__(self, message: str, *, stage: str, tx_id: bytes) -> None:
        super().__init__(message, stage=stage, tx_id=tx_id)
        self.tx_id: bytes = tx_id


class SubmitRejected(TransactionError):
    """The node refused the transaction before ordering it. ``reason`` is the node's
    code (``invalid_transaction``, ``not_permitted``, ``bad_transaction_signature``,
    ``wrong_network``, ``bad_schema``…). ``final``: enough distinct nodes refused it
    (f + 1 of the channel's validators, or every node the client knows) that it will
    never commit as sent, and the record store says ``rejected``; if False, only one
    node's word (no other node could be asked): the store keeps it pending for
    ``recover()``."""

    code = "submit_rejected"

    def __init__(
        self, tx_id: bytes, reason: str, message: str, *, status: int = 0, final: bool = True
    ) -> None:
        super().__init__(
            f"submit{_short(tx_id)}: rejected by the node ({reason}): {message}",
            stage="submit",
            tx_id=tx_id,
        )
        self.reason = reason
        self.detail = message
        self.status = status
        self.final = final


class TransactionInvalid(TransactionError):
    """The transaction was committed (ordered, in a block) but the channel rules
    marked it INVALID: it had no effect. ``reason`` is the rules' code
    (``duplicate_report_id``, ``bad_transition``, ``lender_not_admitted``…)."""

    code = "transaction_invalid"

    def __init__(self, status: TxStatus) -> None:
        outcome = status.outcome
        reason = outcome.code if outcome is not None else "unknown"
        detail = outcome.message if outcome is not None else ""
        super().__init__(
            f"commit{_short(status.tx_id)}: committed at height {status.height} but INVALID "
            f"({reason}): {detail}",
            stage="commit",
            tx_id=status.tx_id,
        )
        self.reason = reason
        self.detail = detail
        self.status = status


class NotCommitted(TransactionError):
    """The transaction was not seen committed before the timeout. It may still commit:
    wait again or resubmit (same tx id — never committed twice)."""

    code = "not_committed"

    def __init__(self, tx_id: bytes, timeout_s: float, last_status: str) -> None:
        super().__init__(
            f"commit{_short(tx_id)}: not committed within {timeout_s:g} s "
            f"(last status: {last_status})",
            stage="commit",
            tx_id=tx_id,
        )
        self.timeout_s = timeout_s
        self.last_status = last_status


class EvidenceError(TransactionError):
    """Base of the evidence-stage errors."""

    code = "evidence_error"


class EvidenceNotAnchored(EvidenceError):
    """The record has no evidence code (or no receipt) yet after the timeout: its block
    has not been anchored on the court chain and acknowledged back."""

    code = "evidence_not_anchored"

    def __init__(self, tx_id: bytes, index: int, timeout_s: float, detail: str = "") -> None:
        extra = f": {detail}" if detail else ""
        super().__init__(
            f"evidence{_short(tx_id)}[{index}]: not anchored within {timeout_s:g} s{extra}",
            stage="evidence",
            tx_id=tx_id,
        )
        self.index = index
        self.timeout_s = timeout_s


class ReceiptInvalid(EvidenceError):
    """A receipt fetched from a node does not verify offline (``report`` says which
    check failed)."""

    code = "receipt_invalid"

    def __init__(self, tx_id: bytes, report: Any) -> None:
        failures = ", ".join(f"{c.name}: {c.reason}" for c in report.failures) or "incomplete"
        super().__init__(
            f"evidence{_short(tx_id)}: the node's receipt does not verify ({failures})",
            stage="verify",
            tx_id=tx_id,
        )
        self.report = report


class RecordStoreError(ClientError):
    """The local record store cannot be opened or used, or lacks a record."""

    code = "record_store_error"

    def __init__(self, message: str, *, tx_id: bytes | None = None) -> None:
        super().__init__(message, stage="store", tx_id=tx_id)
