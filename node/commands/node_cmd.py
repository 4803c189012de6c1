"""``wulian node --config FILE``: run one node process in the foreground.

Also runnable as ``python -m node.commands.node_cmd --config FILE`` (what ``wulian up``
and the test fixture start), with the same one-line errors and exit status 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from ledger.errors import LedgerError
from node.config import load_node_config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("node", help="run one node (HTTP API, peers, consensus) from a config file")
    p.add_argument("--config", required=True, metavar="FILE", help="node config (TOML)")
    p.set_defaults(func=run)


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


def run(args: argparse.Namespace) -> int:
    exit_with_parent()
    config = load_node_config(args.config)
    from node.server import run_node  # imported late: `wulian --help` stays fast

    return run_node(config)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wulian node")
    parser.add_argument("--config", required=True, metavar="FILE", help="node config (TOML)")
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
