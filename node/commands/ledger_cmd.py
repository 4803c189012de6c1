"""``wulian ledger verify``: check a stopped node's whole ledger offline.

Walks every block of every channel (hash links, transaction roots, indexes, commit
certificates against the validator set in force at each height, transaction
signatures). Exit 0 with one summary line per channel when all is well; exit 1 with
one line naming the channel and height of the first mismatch; exit 1 with one line
(no traceback) if the data directory is missing, locked by a running node, or not a
ledger.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ledger.genesis import load_genesis
from ledger.ledger_verify import verify_ledger


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ledger", help="inspect and check a node's ledger")
    ledger_sub = p.add_subparsers(dest="ledger_command", metavar="SUBCOMMAND")
    ledger_sub.required = True
    v = ledger_sub.add_parser(
        "verify",
        help="verify every block, certificate and index of a stopped node's ledger",
    )
    v.add_argument("--data", required=True, help="the node's data directory")
    v.add_argument("--genesis", help="genesis file (default: DATA/genesis.json)")
    v.add_argument(
        "--skip-tx-signatures",
        action="store_true",
        help="do not re-verify transaction signatures (faster; hashes are still checked)",
    )
    v.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    data = Path(args.data)
    genesis_path = Path(args.genesis) if args.genesis else data / "genesis.json"
    genesis = load_genesis(genesis_path)
    reports = verify_ledger(data, genesis, tx_signatures=not args.skip_tx_signatures)
    failed = False
    for report in reports:
        if report.ok:
            print(report.line())
        else:
            failed = True
            print(f"wulian: ledger verify: {report.line()}", file=sys.stderr)
    return 1 if failed else 0
