"""``wulian up``: run the local five-institution network on this machine.

First run: generates the five institutions' keys, the network genesis and one config
per node under the data directory (``./network`` by default); later runs reuse them,
so the network resumes from the same data. Starts the five nodes as separate
processes on ports P..P+4, prints a table of nodes and URLs, and stops them all
cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from node.localnet import LocalNetwork, explorer_accounts_file

DEFAULT_DATA_DIR = "network"
DEFAULT_BASE_PORT = 7001


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "up",
        help="start the local five-institution network (generates keys and genesis on first run)",
    )
    p.add_argument("--data", default=DEFAULT_DATA_DIR, help="data directory (default: ./network)")
    p.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT, help="first node's port")
    p.add_argument("--host", default="127.0.0.1", help="address the nodes listen on")
    p.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with certificates from a network CA made in DATA/tls "
        "(a new data directory only: the genesis names https:// addresses)",
    )
    p.add_argument(
        "--prepare-only",
        action="store_true",
        help="write keys, genesis and node configs, print the table, and exit "
        "(for running the nodes elsewhere, e.g. docker compose)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data = Path(args.data)
    created = not (data / "genesis.json").exists()
    net = LocalNetwork.prepare(
        data, base_port=args.base_port, host=args.host, tls=getattr(args, "tls", False)
    )
    g = net.genesis
    verb = "created" if created else "reusing"
    print(f"wulian: {verb} network {g.network!r} in {data}/ (genesis {g.hash.hex()[:16]}…)")

    if args.prepare_only:
        for node in net.nodes:
            print(f"{node.node_id:<24} {node.url:<28} {node.config_path}")
        return 0

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        net.start()
        try:
            net.wait_healthy(timeout_s=60)
        except RuntimeError as exc:
            print(f"wulian: error: {exc}", file=sys.stderr)
            net.stop()
            return 1
        print(f"{'node':<24} {'institution':<18} {'url':<28} log")
        for node in net.nodes:
            org = g.org(g.node(node.node_id).org_id)
            print(f"{node.node_id:<24} {org.role:<18} {node.url:<28} {node.log_path}")
        court = next(n for n in net.nodes if g.org(g.node(n.node_id).org_id).role == "court")
        print(f"Explorer (court clerks): {court.url}/explorer/  — every node serves one.")
        accounts = explorer_accounts_file(net.data_dir)
        if accounts.exists():
            print(f"Explorer sign-in: user 'clerk' (court node), 'auditor' (bureau node); "
                  f"passwords in {accounts}")  # fmt: skip
        print("API docs at <url>/docs, metrics at <url>/metrics. Ctrl-C stops the network.")
        sys.stdout.flush()
        reported: set[str] = set()
        while not stop.wait(0.5):
            for node in net.nodes:
                if not node.running and node.node_id not in reported:
                    reported.add(node.node_id)
                    code = node.proc.returncode if node.proc is not None else None
                    print(
                        f"wulian: node {node.node_id} exited (status {code}); see {node.log_path}",
                        file=sys.stderr,
                    )
            if len(reported) == len(net.nodes):
                return 1
    finally:
        codes = net.stop()
    bad = {k: v for k, v in codes.items() if v not in (0, -signal.SIGTERM)}
    print("wulian: network stopped" + (f" (exit codes {bad})" if bad else ""))
    return 0
