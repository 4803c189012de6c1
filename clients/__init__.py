"""wulian lender SDK (layer 5): report loan events, follow them, fetch and verify evidence.

The public names live here (httpx-style: implementation in private ``_modules``)::

    from clients import Client, AsyncClient, LoanEvent

    with Client.from_network("network") as client:          # a `wulian up` directory
        ref = client.borrower_ref("11010519491231002X")      # computed locally
        status = client.report(LoanEvent(report_id="r-1", loan_id="L-1",
                                         borrower_ref=ref, event="contract",
                                         amount_cents=5_000_00, rate_bp=1800,
                                         term_months=12, event_time_ms=now_ms))

A walk-through is in docs/sdk.md. The CLI commands (``wulian submit`` …) are in
:mod:`clients.cli`.
"""

from clients._async import AsyncClient, AsyncSubmitHandle
from clients._config import Settings, make_settings, settings_from_network_dir
from clients._errors import (
    Attempt,
    AuthenticationFailed,
    ClientError,
    EvidenceError,
    EvidenceNotAnchored,
    NodeError,
    NodeUnreachable,
    NotCommitted,
    NotFound,
    PermissionDenied,
    ReceiptInvalid,
    RecordStoreError,
    SubmitRejected,
    TransactionError,
    TransactionInvalid,
    WrongNetwork,
)
from clients._models import CommittedTx, CreditReport, Outcome, TxStatus
from clients._ops import (
    Evidence,
    EvidenceCheck,
    record_document,
    record_from_document,
    verify_offline,
)
from clients._pseudonym import (
    PseudonymKey,
    load_pseudonym_key_file,
    write_pseudonym_key_file,
)
from clients._records import (
    LoanEvent,
    PreparedTransaction,
    Record,
    UnsignedTransaction,
    build_loan_events,
    loan_event_record,
)
from clients._store import RecordStore, StoredRecord, StoredTx
from clients._sync import Client, SubmitHandle

__all__ = [
    "AsyncClient",
    "AsyncSubmitHandle",
    "Attempt",
    "AuthenticationFailed",
    "Client",
    "ClientError",
    "CommittedTx",
    "CreditReport",
    "Evidence",
    "EvidenceCheck",
    "EvidenceError",
    "EvidenceNotAnchored",
    "LoanEvent",
    "NodeError",
    "NodeUnreachable",
    "NotCommitted",
    "NotFound",
    "Outcome",
    "PermissionDenied",
    "PreparedTransaction",
    "PseudonymKey",
    "ReceiptInvalid",
    "Record",
    "RecordStore",
    "RecordStoreError",
    "Settings",
    "StoredRecord",
    "StoredTx",
    "SubmitHandle",
    "SubmitRejected",
    "TransactionError",
    "TransactionInvalid",
    "TxStatus",
    "UnsignedTransaction",
    "WrongNetwork",
    "build_loan_events",
    "load_pseudonym_key_file",
    "loan_event_record",
    "make_settings",
    "record_document",
    "record_from_document",
    "settings_from_network_dir",
    "verify_offline",
    "write_pseudonym_key_file",
]
