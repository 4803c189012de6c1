"""``wulian keygen`` and ``wulian genesis``: keys and the network genesis.

* ``wulian keygen --out FILE --org ORG`` — create an ed25519 key file (mode 0600,
  never overwritten) and print its public key in hex on stdout.
* ``wulian genesis --out DIR [--base-port P] [--host H] [--network NAME]`` — create
  (or reuse, if ``DIR/genesis.json`` exists and matches the arguments) a local
  five-institution network: keys in ``DIR/keys/`` and ``DIR/genesis.json``; prints the
  genesis hash and the nodes.
  With ``--tls`` the node addresses are ``https://`` and the network CA and one TLS
  key/certificate per node are made (or reused) in ``DIR/tls/`` (:mod:`node.tls`).
* ``wulian genesis --check FILE`` — validate a genesis file; prints its hash and nodes.
* ``wulian tls-cert --ca-dir DIR --node ID --host H [--host H…] [--csr FILE] --out DIR``
  — issue a node certificate from the network CA in ``DIR`` (``DIR/ca.key``): for the
  key of an institution's certificate request (``--csr``; the key never leaves its
  host), or with a new key written beside the certificate (mode 0600).

Bad input raises :class:`ledger.errors.ConfigError`; ``node.cli`` prints it as one line
and exits 1.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ledger.crypto import Ed25519Signer
from ledger.errors import ConfigError
from ledger.genesis import GENESIS_FILE, Genesis, load_genesis, make_local_genesis
from ledger.keyfile import write_key_file
from ledger.schema import is_name


def register(subparsers: Any) -> None:
    kg = subparsers.add_parser(
        "keygen",
        help="create an ed25519 key file (mode 0600) and print its public key",
        description="Create an ed25519 key file readable by its owner only (mode 0600). "
        "Never overwrites an existing file. Prints the public key (hex) on stdout.",
    )
    kg.add_argument("--out", required=True, metavar="FILE", help="key file to create")
    kg.add_argument("--org", required=True, metavar="ORG", help="owner: org or node id")
    kg.set_defaults(func=cmd_keygen)

    gp = subparsers.add_parser(
        "genesis",
        help="create a local five-institution network genesis, or check a genesis file",
        description="With --out: create (or reuse) DIR/genesis.json and DIR/keys/ for the "
        "five institutions (5 validators per channel, quorum 4, governance 3 of 5). "
        "With --check: validate a genesis file and print its hash.",
    )
    mode = gp.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", metavar="DIR", help="directory for genesis.json and keys/")
    mode.add_argument("--check", metavar="FILE", help="validate FILE and print its hash")
    gp.add_argument("--base-port", type=int, default=None, metavar="P", help="default 7001")
    gp.add_argument("--host", default=None, metavar="H", help="default 127.0.0.1")
    gp.add_argument("--network", default=None, metavar="NAME", help="default wulian-local")
    gp.add_argument(
        "--tls",
        action="store_true",
        help="https:// addresses, plus the network CA and node certificates in DIR/tls/",
    )
    gp.set_defaults(func=cmd_genesis)

    tc = subparsers.add_parser(
        "tls-cert",
        help="issue a node TLS certificate from the network CA",
        description="Issue NODE.crt in --out, signed by the network CA of --ca-dir "
        "(ca.key, ca.crt), naming the node and the given host names / IP addresses. "
        "With --csr, for the key of that PEM certificate request; otherwise a new key "
        "NODE.key (mode 0600) is written beside it.",
    )
    tc.add_argument("--ca-dir", required=True, metavar="DIR", help="holds ca.key and ca.crt")
    tc.add_argument("--node", required=True, metavar="ID", help="node id (from the genesis)")
    tc.add_argument(
        "--host", action="append", default=[], metavar="H", help="host name or IP (repeat)"
    )
    tc.add_argument("--csr", metavar="FILE", help="PEM certificate signing request")
    tc.add_argument("--out", required=True, metavar="DIR", help="where NODE.crt goes")
    tc.set_defaults(func=cmd_tls_cert)


def cmd_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if not is_name(args.org):
        raise ConfigError(
            "--org", "", f"{args.org!r} is not a valid id (1-64 chars of a-z 0-9 - _ .)"
        )
    if not out.parent.is_dir():
        raise ConfigError(str(out), "", f"directory {str(out.parent)!r} does not exist")
    signer = Ed25519Signer.generate()
    try:
        write_key_file(out, args.org, signer)
    except OSError as exc:
        raise ConfigError(str(out), "", f"cannot write key file ({exc.strerror})") from None
    print(signer.public_key.hex())
    return 0


def cmd_genesis(args: argparse.Namespace) -> int:
    if args.check is not None:
        for flag, value in (
            ("--base-port", args.base_port),
            ("--host", args.host),
            ("--network", args.network),
            ("--tls", args.tls or None),
        ):
            if value is not None:
                raise ConfigError(flag, "", "only used with --out, not with --check")
        genesis = load_genesis(args.check)
        print(f"ok: {args.check}")
        print(format_genesis(genesis))
        return 0
    out = Path(args.out)
    existed = (out / GENESIS_FILE).exists()
    genesis = make_local_genesis(
        out,
        base_port=7001 if args.base_port is None else args.base_port,
        host="127.0.0.1" if args.host is None else args.host,
        network="wulian-local" if args.network is None else args.network,
        scheme="https" if args.tls else "http",
    )
    verb = "reused existing" if existed else "wrote"
    print(f"{verb} {os.path.join(str(out), GENESIS_FILE)} (keys in {out / 'keys'})")
    if args.tls:
        from node.tls import ensure_network_tls

        ca = ensure_network_tls(
            out, genesis.network, [(n.node_id, n.address) for n in genesis.nodes]
        )
        print(f"TLS: network CA {ca} (keep ca.key offline); node certificates in {ca.parent}")
    print(format_genesis(genesis))
    return 0


def cmd_tls_cert(args: argparse.Namespace) -> int:
    from node.tls import issue_node_cert, sign_request

    if not is_name(args.node):
        raise ConfigError("--node", "", f"{args.node!r} is not a valid node id")
    out = Path(args.out)
    if not out.is_dir():
        raise ConfigError(str(out), "", "is not a directory")
    if args.csr is not None:
        path = sign_request(args.ca_dir, args.csr, args.node, args.host, out)
    else:
        path = issue_node_cert(args.ca_dir, args.node, args.host, out_dir=out)
    print(f"wrote {path}")
    return 0


def format_genesis(genesis: Genesis) -> str:
    """A human summary: hash, governance, node table, channel table."""
    lines = [
        f"network     {genesis.network}",
        f"hash        {genesis.hash.hex()}",
        f"governance  {genesis.governance_threshold} of {len(genesis.institutions)} institutions",
        "",
    ]
    rows = [("NODE", "ORG", "ADDRESS", "PUBLIC KEY")]
    rows += [(n.node_id, n.org_id, n.address, n.public_key.hex()) for n in genesis.nodes]
    lines += _table(rows)
    lines.append("")
    crow = [("CHANNEL", "N", "F", "QUORUM", "VALIDATORS")]
    for c in genesis.channels:
        vs = c.validators
        ids = ", ".join(v.node_id for v in vs.validators)
        crow.append((c.channel_id, str(vs.n), str(vs.f), str(vs.quorum), ids))
    lines += _table(crow)
    return "\n".join(lines)


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
