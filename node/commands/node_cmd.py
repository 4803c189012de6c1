"""``wulian node --config FILE``: run one node process in the foreground.

Also runnable as ``python -m node.commands.node_cmd --config FILE`` (what ``wulian up``
and the test fixture start), with the same one-line errors and exit status 1.

A damaged ledger database (LevelDB checksum errors, blocks that contradict each
other) stops the node at startup with one line naming the damage and the way out:
``--repair`` moves the broken store aside (``DATA/ledger.broken-<UTC time>``, kept for
inspection; keys, genesis and config are untouched) and starts on an empty store,
which the node refills from its peers, checking every block's commit certificate.
``--repair`` on a sound ledger changes nothing, beyond what opening the ledger does
(a format-1 ledger is upgraded to format 2, docs/node.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ledger.errors import CorruptLedgerError, LedgerError
from node.config import NodeConfig, load_node_config
from node.malloc_tuning import tune_malloc


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("node", help="run one node (HTTP API, peers, consensus) from a config file")
    p.add_argument("--config", required=True, metavar="FILE", help="node config (TOML)")
    _add_repair(p)
    p.set_defaults(func=run)


def _add_repair(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--repair",
        action="store_true",
        help="if the ledger database is damaged, move it aside and catch up from peers",
    )


#: Set by whoever starts a node as a child (``wulian up``, the test fixtures) to its
#: own pid: the node then exits when that process dies, even by SIGKILL.
EXIT_WITH_PARENT_ENV = "WULIAN_EXIT_WITH_PARENT"
_PR_SET_PDEATHSIG = 1


def exit_with_parent() -> None:
    """If :data:`EXIT_WITH_PARENT_ENV` names our parent, have the kernel send us SIGTERM
    (a graceful shutdown) when it dies (Linux ``PR_SET_PDEATHSIG``), so a killed
    starter leaves no node behind. Exits at once if the parent is already gone.
    Does nothing where the variable is unset (a node run by hand or in a container)
    or where prctl is unavailable."""
    expected = os.environ.get(EXIT_WITH_PARENT_ENV)
    if not expected:
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != expected:
        raise SystemExit(0)


def repair_ledger(config: NodeConfig) -> Path | None:
    """Move a damaged ledger database aside so the node starts empty and catches up.

    Returns where the broken store went (``DATA/ledger.broken-<UTC time>``), or None if
    the ledger is missing or opens cleanly (then it is left as the node's opening
    leaves it: a format-1 ledger upgraded, malformed state-delta size entries rebuilt,
    the state deltas outside the node's window dropped). Raises, touching nothing,
    :class:`ConfigError` if the key or genesis does not belong to this node or the
    store was made for another genesis, and :class:`~ledger.store.StoreError` if it is
    locked by a running node or is not a LevelDB database at all.
    """
    from ledger.genesis import load_genesis
    from node.runtime import NodeRuntime, open_node_store

    genesis = load_genesis(config.genesis_file)
    NodeRuntime.check_identity(config, genesis)
    ledger = config.ledger_dir
    if not ledger.exists():
        return None
    try:
        open_node_store(config, genesis.hash, create=False).close()
        return None
    except CorruptLedgerError:
        pass
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = ledger.with_name(f"ledger.broken-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = ledger.with_name(f"ledger.broken-{stamp}-{n}")
    ledger.rename(target)
    return target


def run(args: argparse.Namespace) -> int:
    exit_with_parent()
    tune_malloc()  # before any thread starts (see node.malloc_tuning)
    config = load_node_config(args.config)
    if getattr(args, "repair", False):
        moved = repair_ledger(config)
        if moved is None:
            print("wulian: repair: ledger opens cleanly; nothing to repair", file=sys.stderr)
        else:
            print(
                f"wulian: repair: damaged ledger moved to {moved}; "
                "catching up from peers (every block's certificate is checked)",
                file=sys.stderr,
            )
    from node.server import run_node  # imported late: `wulian --help` stays fast

    try:
        return run_node(config)
    except CorruptLedgerError as exc:
        raise CorruptLedgerError(
            f"{exc}; to rebuild this node's ledger from its peers, run "
            f"`wulian node --config {args.config} --repair`",
            channel=exc.channel,
            height=exc.height,
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wulian node")
    parser.add_argument("--config", required=True, metavar="FILE", help="node config (TOML)")
    _add_repair(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except LedgerError as exc:
        print(f"wulian: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
