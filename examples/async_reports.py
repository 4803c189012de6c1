"""The async client: report several loans concurrently.

python examples/async_reports.py --network network [--org lender1] [--loans 5]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time

from clients import AsyncClient, LoanEvent


async def report_one(client: AsyncClient, ref: bytes, n: int) -> int:
    loan = f"L-{secrets.token_hex(4)}-{n}"
    event = LoanEvent(
        report_id=f"{loan}-1", loan_id=loan, borrower_ref=ref, event="contract",
        amount_cents=100_000 + n, rate_bp=1200, term_months=3,
        event_time_ms=int(time.time() * 1000),
    )  # fmt: skip
    status = await client.report(event)
    return status.height or 0


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--network", required=True)
    ap.add_argument("--org")
    ap.add_argument("--loans", type=int, default=5)
    args = ap.parse_args()
    async with AsyncClient.from_network(args.network, org=args.org) as client:
        ref = client.borrower_ref("44030419900307123X")
        heights = await asyncio.gather(*(report_one(client, ref, n) for n in range(args.loans)))
        print(f"{len(heights)} loans committed at heights {sorted(heights)}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
