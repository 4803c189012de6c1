"""The ``wulian`` command line: one entry point; each subcommand lives in its own module.

A command module exposes ``register(subparsers)``, which adds its parser(s) and sets
``func(args) -> int`` as the handler. Errors that describe bad input (every
:class:`ledger.errors.LedgerError`) are printed as one line ``wulian: error: …`` with
exit status 1; usage errors exit 2 (argparse's convention). Never a traceback for
bad input.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ledger.errors import LedgerError

#: Modules under node/commands/ and clients/ that add subcommands, in help order.
COMMAND_MODULES: tuple[str, ...] = (
    "node.commands.up_cmd",
    "node.commands.node_cmd",
    "clients.cli",
    "node.commands.keys_cmd",
    "node.commands.ledger_cmd",
    "node.commands.explorer_cmd",
    "node.commands.simulate_cmd",
    "node.commands.bench_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wulian",
        description="wulian (五链): the five-chain coordination network — node, tools and SDK CLI.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except LedgerError as exc:
        print(f"wulian: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
