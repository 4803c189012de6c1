"""``wulian simulate``: run the deterministic consensus simulator over many seeds.

Prints one line per failing seed, with the exact command that replays it, and a
summary line last; exits 1 if any seed broke a safety or liveness property. Results
stream as they finish (in seed order), so 100,000 seeds run in bounded memory;
``--jobs`` spreads the seeds over worker processes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import TextIO

from consensus.sim.faults import FAULT_KINDS
from consensus.sim.runner import SeedResult, run_seed

FAULT_CHOICES = ("all", *FAULT_KINDS)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"{value} is outside [0, 2^63)")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="run the deterministic PBFT simulator over many seeds",
        description=(
            "Run seeds of the consensus simulator (5 validators, clients, crash / "
            "Byzantine / network faults, virtual time) and check safety and liveness. "
            "Prints one line per failing seed with the command that replays it, then a "
            "summary; exits 1 if any seed failed."
        ),
    )
    p.add_argument("--seeds", type=_positive, required=True, help="how many seeds to run")
    p.add_argument("--seed-start", type=_non_negative, default=0, help="first seed (default 0)")
    p.add_argument(
        "--faults",
        choices=FAULT_CHOICES,
        default="all",
        help="fault kind; 'all' lets each seed pick one (default all)",
    )
    p.add_argument("--jobs", type=_positive, default=1, help="worker processes (default 1)")
    p.add_argument("--verbose", "-v", action="store_true", help="print a line for every seed")
    p.set_defaults(func=run)


def _one(job: tuple[int, str]) -> SeedResult:
    seed, faults = job
    return run_seed(seed, faults)


def _results(seeds: range, faults: str, jobs: int) -> Iterator[SeedResult]:
    if jobs == 1 or len(seeds) == 1:
        for seed in seeds:
            yield run_seed(seed, faults)
        return
    chunk = max(1, min(64, len(seeds) // (jobs * 8)))
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    with ctx.Pool(jobs) as pool:
        yield from pool.imap(_one, ((s, faults) for s in seeds), chunksize=chunk)


def failure_line(result: SeedResult) -> str:
    first = result.violations[0].line() if result.violations else "?"
    more = f" (+{len(result.violations) - 1} more)" if len(result.violations) > 1 else ""
    return (
        f"FAIL seed {result.seed} [{result.faults}: {result.detail}; {result.scheme}]: "
        f"{first}{more} — replay: {result.replay_command()}"
    )


def simulate(
    seeds: range, faults: str, jobs: int, *, verbose: bool = False, out: TextIO = sys.stdout
) -> int:
    """Run ``seeds``; print failures and a summary to ``out``; return the exit status."""
    started = time.monotonic()
    kinds: Counter[str] = Counter()
    failed = 0
    height = 0
    for result in _results(seeds, faults, jobs):
        kinds[result.faults] += 1
        height += result.committed_height
        if not result.ok:
            failed += 1
            print(failure_line(result), file=out, flush=True)
        elif verbose:
            print(result.summary(), file=out, flush=True)
    elapsed = time.monotonic() - started
    total = sum(kinds.values())
    by_kind = ", ".join(f"{k} {kinds[k]}" for k in sorted(kinds))
    print(
        f"simulated {total} seed{'' if total == 1 else 's'} "
        f"({seeds.start}..{seeds.stop - 1}, faults={faults}: {by_kind}) "
        f"in {elapsed:.1f} s with {jobs} job(s): {total - failed} passed, {failed} failed; "
        f"{height} blocks committed",
        file=out,
        flush=True,
    )
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    seeds = range(args.seed_start, args.seed_start + args.seeds)
    return simulate(seeds, args.faults, args.jobs, verbose=args.verbose)
