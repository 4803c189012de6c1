"""The container health check: ``python -m node.commands.healthcheck [--config FILE]``.

Reads the node config (``--config``, else ``$WULIAN_CONFIG``, else
``/data/node.toml``), asks the node's ``GET /healthz`` on the loopback address (or the
configured listen host, unless it is a wildcard) over HTTPS with the network CA when
the config has ``[tls]``, else plain HTTP. Exit status 0 iff the answer is 200 within
``--timeout`` seconds (default 2); otherwise 1 with one line on stderr. Uses only the
standard library plus the config reader, so it starts fast.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from ledger.errors import ConfigError
from node.config import load_node_config

DEFAULT_CONFIG = "/data/node.toml"
CONFIG_ENV = "WULIAN_CONFIG"


def health_url(host: str, port: int, tls: bool) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}/healthz"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.commands.healthcheck")
    parser.add_argument("--config", default=None, metavar="FILE")
    parser.add_argument("--timeout", type=float, default=2.0, metavar="S")
    args = parser.parse_args(argv)
    path = args.config or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    try:
        config = load_node_config(path)
    except ConfigError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    url = health_url(config.host, config.port, config.tls is not None)
    context = None
    if config.tls is not None:
        try:
            context = ssl.create_default_context(cafile=str(config.tls.ca_file))
        except (OSError, ssl.SSLError) as exc:
            print(f"unhealthy: {config.tls.ca_file}: {exc}", file=sys.stderr)
            return 1
    try:
        with urllib.request.urlopen(url, timeout=args.timeout, context=context) as resp:
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
