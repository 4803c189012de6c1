"""``wulian ledger verify``: check a stopped node's whole ledger offline.

Walks every block of every channel (hash links, transaction roots, indexes, commit
certificates against the validator set in force at each height, transaction
signatures, and each kept state delta against the state roots under the channel rules
``DATA/node.toml`` names: not without one). The genesis is
``--genesis``, ``DATA/genesis.json`` or the one the node's ``DATA/node.toml`` names.
Exit 0 with one summary line per channel when all is well; exit 1 with one line naming
the channel and height of the first mismatch; exit 1 with one line (no traceback) if
the data directory is missing, locked by a running node, or not a ledger, or its
``node.toml`` is not a valid node config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ledger.errors import ConfigError
from ledger.genesis import Genesis, load_genesis
from ledger.ledger_verify import StateDigest, verify_ledger
from node.config import NodeConfig, load_node_config
from node.rules import channel_logic


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ledger", help="inspect and check a node's ledger")
    ledger_sub = p.add_subparsers(dest="ledger_command", metavar="SUBCOMMAND")
    ledger_sub.required = True
    v = ledger_sub.add_parser(
        "verify",
        help="verify every block, certificate and index of a stopped node's ledger",
    )
    v.add_argument("--data", required=True, help="the node's data directory")
    v.add_argument(
        "--genesis",
        help="genesis file (default: DATA/genesis.json, else the genesis_file of DATA/node.toml)",
    )
    v.add_argument(
        "--skip-tx-signatures",
        action="store_true",
        help="do not re-verify transaction signatures (faster; hashes are still checked)",
    )
    v.set_defaults(func=run_verify)


def genesis_file_for(data: Path, node: NodeConfig | None) -> Path:
    """The genesis file of a node's data directory: ``DATA/genesis.json`` if there is
    one, else the ``genesis_file`` named by ``node``, its ``DATA/node.toml``
    (:func:`node_config_of`; a node made by ``wulian up`` keeps its config beside its
    ledger and the genesis two levels up), else ``DATA/genesis.json`` (whose absence
    :func:`load_genesis` reports)."""
    own = data / "genesis.json"
    if own.exists() or node is None:
        return own
    return node.genesis_file


def node_config_of(data: Path) -> NodeConfig | None:
    """The node config ``DATA/node.toml`` (None without one). Raises
    :class:`ConfigError` if it is not a valid node config."""
    config = data / "node.toml"
    return load_node_config(config) if config.is_file() else None


def state_digests(node: NodeConfig | None, genesis: Genesis) -> dict[str, StateDigest]:
    """Each channel's state digest under the channel rules ``node`` names, to check the
    kept state deltas with. No digest for a ledger without its node's config (its rules
    are not known: the deltas are not checked), nor for a channel whose rules cannot be
    built here (:func:`node.rules.channel_logic` raises :class:`ConfigError`)."""
    if node is None:
        return {}
    out = {}
    for entry in genesis.channels:
        try:
            logic = channel_logic(entry.channel_id, node.rules, entry.params)
        except ConfigError:
            continue
        out[entry.channel_id] = StateDigest(logic.initial_state_root(), logic.delta_root)
    return out


def run_verify(args: argparse.Namespace) -> int:
    data = Path(args.data)
    node = node_config_of(data)
    genesis_path = Path(args.genesis) if args.genesis else genesis_file_for(data, node)
    genesis = load_genesis(genesis_path)
    reports = verify_ledger(
        data,
        genesis,
        tx_signatures=not args.skip_tx_signatures,
        state_digests=state_digests(node, genesis),
    )
    failed = False
    for report in reports:
        if report.ok:
            print(report.line())
        else:
            failed = True
            print(f"wulian: ledger verify: {report.line()}", file=sys.stderr)
    return 1 if failed else 0
