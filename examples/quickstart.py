"""Quick start: a lender reports a loan, follows it and checks a borrower.

    python examples/quickstart.py --network network [--org lender1]

``--network`` is a ``wulian up`` data directory (genesis, node URLs, the lender's key,
``keys/pseudonym.key``). Walk-through: docs/sdk.md.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from typing import Any

from clients import (
    Client,
    EvidenceNotAnchored,
    LoanEvent,
    TransactionInvalid,
)

# A made-up resident ID number (valid check digit). It is used to compute the borrower
# reference locally and goes nowhere else.
DEMO_ID_NUMBER = "11010519491231002X"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--network", required=True, help="a `wulian up` data directory")
    ap.add_argument("--org", help="which lender of that directory")
    args = ap.parse_args()

    with Client.from_network(args.network, org=args.org) as client:
        info = client.info()
        print(f"connected to {info['node']} ({info['url']}) as {client.org}")

        # 1. The borrower reference: HMAC with the bureau's pseudonym key, computed here.
        ref = client.borrower_ref(DEMO_ID_NUMBER)
        print(f"borrower reference {ref.hex()[:16]}…")

        # 2. Report the contract, then disbursement + first repayment as one atomic batch.
        loan = f"L-{secrets.token_hex(4)}"
        now = int(time.time() * 1000)
        terms: dict[str, Any] = {"borrower_ref": ref, "rate_bp": 1800, "term_months": 12}
        contract = LoanEvent(
            report_id=f"{loan}-1", loan_id=loan, event="contract", amount_cents=2_000_000,
            event_time_ms=now, details={"contract_no": f"HT-{loan}", "product": "micro"},
            **terms,
        )  # fmt: skip
        status = client.report(contract)
        print(f"contract committed at height {status.height} (tx {status.tx_id.hex()[:16]}…)")

        later = [
            LoanEvent(report_id=f"{loan}-2", loan_id=loan, event="disbursement",
                      amount_cents=2_000_000, event_time_ms=now + 1, **terms),
            LoanEvent(report_id=f"{loan}-3", loan_id=loan, event="repayment",
                      amount_cents=180_000, event_time_ms=now + 2, **terms),
        ]  # fmt: skip
        handle = client.submit_async(client.prepare_report(later))
        print(f"batch sent: {handle.first_status.status}")
        status = handle.wait()
        print(f"batch committed at height {status.height}")

        # 3. Multi-lender check before lending again to the same borrower.
        try:
            report = client.credit_check(ref)
            print(
                f"credit check: {report.lenders_with_open_loans} lender(s) with open loans, "
                f"{report.other_lenders_with_open_loans} besides us"
            )
        except TransactionInvalid as exc:
            print(f"credit check refused: {exc.reason}")

        # 4. Our committed transactions, resumable from a checkpoint in the record store.
        for n, event in enumerate(client.events(start=status.height, checkpoint="quickstart")):
            print(f"event: height {event.height} {event.tx_type} valid={event.valid}")
            if n == 0:
                break

        # 5. Evidence: wait (briefly here) for the court chain's evidence code.
        try:
            ev = client.evidence(status.tx_id, index=0, timeout=3)
            print(f"evidence code {ev.code}")
        except EvidenceNotAnchored as exc:
            print(f"not anchored yet: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
