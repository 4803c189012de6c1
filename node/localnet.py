"""A local network: the five institutions' nodes as separate processes on one machine.

Layout under the data directory (``wulian up`` and the integration tests use it)::

    DIR/genesis.json
    DIR/keys/<org>.key, DIR/keys/<org>-node.key       (mode 0600)
    DIR/nodes/<node-id>/node.toml                      (node config)
    DIR/nodes/<node-id>/ledger/                        (LevelDB)
    DIR/nodes/<node-id>/node.log                       (the node's JSON log)

The first run creates keys, genesis and configs; later runs reuse them, so the network
resumes from the same data.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from ledger.errors import ConfigError
from ledger.genesis import Genesis, make_local_genesis, node_key_path
from node.config import render_node_config

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class NodeProcess:
    """One node of the local network and its OS process (if running)."""

    node_id: str
    url: str
    config_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class LocalNetwork:
    """Start, stop, kill and restart the nodes of a prepared local network."""

    def __init__(self, data_dir: Path, genesis: Genesis, nodes: list[NodeProcess]) -> None:
        self.data_dir = data_dir
        self.genesis = genesis
        self.nodes = nodes
        self._atexit = False

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    # ------------------------------------------------------------------ preparation

    @classmethod
    def prepare(
        cls,
        data_dir: str | os.PathLike[str],
        *,
        base_port: int = 7001,
        host: str = "127.0.0.1",
        rules: str = "channels",
        log_format: str = "json",
        limits: dict[str, int] | None = None,
        consensus: dict[str, int] | None = None,
        genesis_hook: Callable[[Path], Genesis] | None = None,
    ) -> LocalNetwork:
        """Create (first run) or reuse keys, genesis and node configs under ``data_dir``.

        ``genesis_hook(data_dir)``, if given, runs after the local genesis exists and
        returns the genesis to use (tests add lender orgs this way). Node configs are
        rewritten on every call (they hold no state). Raises :class:`ConfigError`.
        """
        data = Path(data_dir).resolve()
        genesis = make_local_genesis(data, base_port=base_port, host=host)
        if genesis_hook is not None:
            genesis = genesis_hook(data)
        nodes: list[NodeProcess] = []
        for info in genesis.nodes:
            node_dir = data / "nodes" / info.node_id
            try:
                node_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(str(node_dir), "", f"cannot create ({exc.strerror})") from None
            parts = urlsplit(info.address)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            config_path = node_dir / "node.toml"
            key = node_key_path(data, info.org_id)
            text = render_node_config(
                node_id=info.node_id,
                key_file=os.path.relpath(key, node_dir),
                genesis_file=os.path.relpath(data / "genesis.json", node_dir),
                data_dir=".",
                host=parts.hostname or host,
                port=port,
                log_format=log_format,
                rules=rules,
                limits=limits,
                consensus=consensus,
            )
            config_path.write_text(text, encoding="utf-8")
            nodes.append(
                NodeProcess(info.node_id, info.address, config_path, node_dir / "node.log")
            )
        return cls(data, genesis, nodes)

    # ------------------------------------------------------------------ processes

    def _command(self, node: NodeProcess) -> list[str]:
        return [sys.executable, "-m", "node.commands.node_cmd", "--config", str(node.config_path)]

    def start(self, indexes: Sequence[int] | None = None) -> None:
        """Start the given nodes (default all) that are not running."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
        )
        env.setdefault("PYTHONUNBUFFERED", "1")
        if not self._atexit:
            # Nodes run in their own sessions (Ctrl-C reaches only us): never leave
            # them behind when this process exits without calling stop().
            atexit.register(self._kill_all)
            self._atexit = True
        for i in range(len(self.nodes)) if indexes is None else indexes:
            node = self.nodes[i]
            if node.running:
                continue
            log = open(node.log_path, "ab")  # noqa: SIM115 - handed to the child
            try:
                node.proc = subprocess.Popen(
                    self._command(node),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # Ctrl-C in a terminal reaches `up`, not nodes
                )
            finally:
                log.close()

    def wait_healthy(self, timeout_s: float = 30.0, indexes: Sequence[int] | None = None) -> None:
        """Wait until the nodes answer ``/healthz``. Raises RuntimeError naming the
        first node that exited or did not answer in time (with its log's tail)."""
        deadline = time.monotonic() + timeout_s
        pending = list(range(len(self.nodes)) if indexes is None else indexes)
        with httpx.Client(timeout=1.0) as client:
            while pending:
                i = pending[0]
                node = self.nodes[i]
                if node.proc is not None and node.proc.poll() is not None:
                    raise RuntimeError(
                        f"node {node.node_id} exited with status {node.proc.returncode}:\n"
                        + self.log_tail(i)
                    )
                try:
                    if client.get(node.url + "/healthz").status_code == 200:
                        pending.pop(0)
                        continue
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"node {node.node_id} did not become healthy in {timeout_s:.0f} s:\n"
                        + self.log_tail(i)
                    )
                time.sleep(0.1)

    def log_tail(self, i: int, lines: int = 20) -> str:
        try:
            text = self.nodes[i].log_path.read_text("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def kill(self, i: int) -> None:
        """SIGKILL node ``i`` (a crash at an arbitrary instant) and reap it."""
        node = self.nodes[i]
        if node.proc is not None and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()

    def terminate(self, i: int, timeout_s: float = 10.0) -> int | None:
        """SIGTERM node ``i``, wait for a clean exit (SIGKILL after ``timeout_s``)."""
        node = self.nodes[i]
        if node.proc is None:
            return None
        if node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
            try:
                node.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
        return node.proc.returncode

    def restart(self, i: int, *, wait: bool = True) -> None:
        self.terminate(i)
        self.start([i])
        if wait:
            self.wait_healthy(indexes=[i])

    def _kill_all(self) -> None:
        for node in self.nodes:
            if node.running and node.proc is not None:
                node.proc.kill()

    def stop(self, timeout_s: float = 10.0) -> dict[str, int | None]:
        """SIGTERM every running node, then wait (SIGKILL stragglers). Returns exit codes."""
        for node in self.nodes:
            if node.running and node.proc is not None:
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        codes: dict[str, int | None] = {}
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
            codes[node.node_id] = node.proc.returncode
        return codes
