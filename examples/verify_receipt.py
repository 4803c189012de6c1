"""Offline verification of an evidence receipt (no network, no node).

    python examples/verify_receipt.py GENESIS.json RECEIPT.json RECORD.json

RECORD.json is the ``wulian-record/1`` file ``wulian evidence --record-out`` writes.
Prints every check; exits 0 only if the receipt and the record both verify.
"""

from __future__ import annotations

import json
import sys

from clients import record_from_document, verify_offline
from crosschain.receipt import TrustRoot
from ledger.genesis import load_genesis


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    genesis_path, receipt_path, record_path = argv
    trust = TrustRoot.from_genesis(load_genesis(genesis_path))
    with open(receipt_path, encoding="utf-8") as fh:
        receipt = json.load(fh)
    with open(record_path, encoding="utf-8") as fh:
        record = record_from_document(json.load(fh))
    report = verify_offline(receipt, record, trust)
    for check in report.checks:
        print(f"{check.name:<24} {check.status:<5} {check.reason}")
    print(f"evidence code {report.evidence_code}: data verified = {report.data_verified}")
    return 0 if report.data_verified else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
