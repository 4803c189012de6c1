"""``wulian node --config FILE``: run one node process in the foreground.

Also runnable as ``python -m node.commands.node_cmd --config FILE`` (what ``wulian up``
and the test fixture start), with the same one-line errors and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ledger.errors import LedgerError
from node.config import load_node_config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("node", help="run one node (HTTP API, peers, consensus) from a config file")
    p.add_argument("--config", required=True, metavar="FILE", help="node config (TOML)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
