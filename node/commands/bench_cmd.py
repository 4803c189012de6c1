"""``wulian bench``: measure a five-node network under simulated lenders (issue #9).

Starts a fresh local network in a temp dir (or drives ``--target DIR``, a running
``wulian up``), runs the phases of :mod:`node.bench`, prints the figures, and with
``--json FILE`` writes them (format ``wulian-bench/1``). ``--quick`` takes < 60 s.
Exit 0 when every phase ran, 1 when one was skipped or failed (named on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="benchmark a local five-node network (throughput, latency…)")
    p.add_argument("--quick", action="store_true", help="small sizes: finishes in under a minute")
    p.add_argument("--target", type=Path, help="drive a running `wulian up` data directory")
    p.add_argument("--json", dest="json_out", type=Path, help="write the figures to FILE")
    p.add_argument("--duration", type=float, help="full-load window in seconds (default 30)")
    p.add_argument("--lenders", type=int, help="concurrent simulated lenders (default 8)")
    p.add_argument("--per-request", type=int, help="signed txs per batch request (default 100)")
    p.add_argument("--records-per-tx", type=int, help="events per anchoring batch tx (1000)")
    p.add_argument("--anchor-txs", type=int, help="batch txs in the anchoring phase (20)")
    p.add_argument(
        "--catchup-blocks", type=int,
        help="blocks the restarted node is behind (default 10000; --quick 200)",
    )  # fmt: skip
    p.add_argument(
        "--primary-kills", type=int,
        help="primary kills, each after the last victim is level (default 3; --quick 1)",
    )  # fmt: skip
    p.add_argument(
        "--memory-records",
        type=int,
        help="records on the ledger in the memory phase (default 1000000; --quick 5000)",
    )
    p.add_argument(
        "--memory-hold", type=float,
        help="seconds of light load the memory phase watches RSS (default 60; --quick 3)",
    )  # fmt: skip
    p.add_argument("--keep", action="store_true", help="keep the temp network directory")
    p.add_argument(
        "--phases",
        help="comma-separated phases to run (default all but memory): idle_latency, "
        "throughput, half_load, anchoring, evidence, catch_up, primary_kill, memory",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from node.bench import PHASES, BenchConfig, run_bench, summary_lines

    phases = None
    if args.phases:
        phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
        unknown = [p for p in phases if p not in PHASES]
        if unknown or not phases:
            bad = ", ".join(unknown) or repr(args.phases)
            known = ", ".join(PHASES)
            print(f"wulian: error: unknown phase {bad} (known: {known})", file=sys.stderr)
            return 2
    sizes = {
        "--duration": args.duration, "--lenders": args.lenders,
        "--per-request": args.per_request, "--records-per-tx": args.records_per_tx,
        "--anchor-txs": args.anchor_txs, "--catchup-blocks": args.catchup_blocks,
        "--primary-kills": args.primary_kills, "--memory-records": args.memory_records,
        "--memory-hold": args.memory_hold,
    }  # fmt: skip
    for flag, value in sizes.items():
        if value is not None and value <= 0:
            print(f"wulian: error: {flag} must be positive, not {value}", file=sys.stderr)
            return 2
    config = BenchConfig.make(
        args.quick,
        target=args.target,
        duration_s=args.duration,
        lenders=args.lenders,
        txs_per_request=args.per_request,
        records_per_tx=args.records_per_tx,
        anchor_txs=args.anchor_txs,
        catchup_blocks=args.catchup_blocks,
        primary_kills=args.primary_kills,
        memory_records=args.memory_records,
        memory_hold_s=args.memory_hold,
        keep=args.keep or None,
        phases=phases,
    )
    try:
        report = run_bench(config, log=lambda s: print(s, file=sys.stderr, flush=True))
    except RuntimeError as exc:
        print(f"wulian: error: {exc}", file=sys.stderr)
        return 1
    for line in summary_lines(report):
        print(line)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    return 1 if report.skipped else 0
