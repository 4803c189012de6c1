"""A local network: the five institutions' nodes as separate processes on one machine.

Layout under the data directory (``wulian up`` and the integration tests use it)::

    DIR/genesis.json
    DIR/keys/<org>.key, DIR/keys/<org>-node.key       (mode 0600)
    DIR/nodes/<node-id>/node.toml                      (node config)
    DIR/nodes/<node-id>/ledger/                        (LevelDB)
    DIR/nodes/<node-id>/node.log                       (the node's JSON log)
    DIR/keys/demo-lender.key, DIR/keys/pseudonym.key   (``wulian up``'s demo lender)

The first run creates keys, genesis and configs; later runs reuse them, so the network
resumes from the same data. ``wulian up`` (``prepare(demo_lender=True)``) also registers
a lender org ``demo-lender`` in the local genesis and, once the nodes answer, has the
bureau admit it on the supervision channel (``lender_admit``; done once, remembered in
``DIR/keys/demo-lender.admitted``).

A new network made by ``wulian up`` also gets two explorer orgs — ``court-clerks``
(role ``clerk``: reads the judicial channel) and ``audit-office`` (role ``auditor``:
reads every channel) — and one explorer account for each, ``clerk`` on the court's
node and ``auditor`` on the bureau's, with random passwords written to
``DIR/keys/explorer-accounts.txt`` (mode 0600; see docs/explorer.md).
"""

from __future__ import annotations

import atexit
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from ledger.crypto import Ed25519Signer
from ledger.errors import ConfigError, LedgerError
from ledger.genesis import (
    Genesis,
    genesis_document,
    genesis_from_document,
    load_genesis,
    make_local_genesis,
    node_key_path,
    org_key_path,
    write_genesis,
)
from ledger.keyfile import load_key_file, write_key_file
from node.commands.node_cmd import EXIT_WITH_PARENT_ENV
from node.config import render_node_config

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_LENDER = "demo-lender"
#: The bureau org of the local genesis (admits lenders).
BUREAU_ORG = "bureau"
#: Explorer orgs of ``wulian up``'s network: court clerks and bureau auditors.
CLERK_ORG = "court-clerks"
AUDITOR_ORG = "audit-office"
#: ``(institution whose node, username, org, display name)`` of the explorer accounts
#: ``wulian up`` creates on a new network.
DEMO_EXPLORER_ACCOUNTS = (
    ("court", "clerk", CLERK_ORG, "书记员 Demo clerk"),
    ("bureau", "auditor", AUDITOR_ORG, "审计员 Demo auditor"),
)


def lender_key_path(data: Path, lender: str) -> Path:
    return data / "keys" / f"{lender}.key"


def add_orgs(data: Path, orgs: Iterable[tuple[str, str, str]]) -> Genesis:
    """Register orgs ``(id, role, name)`` in ``data/genesis.json``, each with a key in
    ``data/keys/<id>.key`` (created if missing, reused otherwise). Orgs already in the
    genesis are left alone; the genesis file is rewritten only if it changed. Must run
    before any node has created its ledger (the genesis hash changes). Raises
    :class:`ConfigError` (e.g. an unknown role)."""
    path = data / "genesis.json"
    genesis = load_genesis(path)
    doc = genesis_document(genesis)
    known = {o["id"] for o in doc["orgs"]}
    for org_id, role, display in orgs:
        if org_id in known:
            continue
        key_path = lender_key_path(data, org_id)
        if key_path.exists():
            signer = load_key_file(key_path).signer
        else:
            signer = Ed25519Signer.generate()
            write_key_file(key_path, org_id, signer)
        doc["orgs"].append(
            {
                "id": org_id,
                "name": display,
                "role": role,
                "keys": [
                    {"public_key": signer.public_key.hex(), "valid_from": 0, "revoked_at": None}
                ],
            }
        )
    new = genesis_from_document(doc, str(path))
    if new.hash != genesis.hash:
        write_genesis(path, new)
    return new


def add_lender_orgs(
    data: Path, lenders: Iterable[str], *, name: Callable[[str], str] = lambda i: f"Lender {i}"
) -> Genesis:
    """Register lender orgs (role ``lender``): :func:`add_orgs`."""
    return add_orgs(data, [(lender, "lender", name(lender)) for lender in lenders])


def add_explorer_orgs(data: Path) -> Genesis:
    """Register the explorer's people orgs of a local network, :data:`CLERK_ORG` (role
    ``clerk``) and :data:`AUDITOR_ORG` (role ``auditor``): :func:`add_orgs`."""
    return add_orgs(
        data,
        [
            (CLERK_ORG, "clerk", "互联网法院书记员 Internet court clerks"),
            (AUDITOR_ORG, "auditor", "金融监管局审计处 Bureau audit office"),
        ],
    )


def explorer_accounts_file(data: Path) -> Path:
    """Where :func:`add_demo_explorer_accounts` writes the demo accounts' passwords."""
    return data / "keys" / "explorer-accounts.txt"


def add_demo_explorer_accounts(data: Path, genesis: Genesis) -> list[tuple[str, str, str]]:
    """Give a new local network an explorer account per :data:`DEMO_EXPLORER_ACCOUNTS`
    entry whose org is in ``genesis``: on its node's data directory, with a random
    password, listed as ``node-id  url  username  password`` lines in
    :func:`explorer_accounts_file` (mode 0600). An account that exists is left alone
    (its password is not changed). Returns ``(node_id, username, password)`` of the
    accounts created. Raises :class:`ConfigError`/``AccountError`` if a file cannot be
    written."""
    from node.explorer.accounts import AccountFile, accounts_path, hash_password
    from node.explorer.port import Account

    orgs = {o.org_id for o in genesis.orgs}
    created: list[tuple[str, str, str]] = []
    lines: list[str] = []
    for node_org, user, org, display in DEMO_EXPLORER_ACCOUNTS:
        node = next((n for n in genesis.nodes if n.org_id == node_org), None)
        if node is None or org not in orgs:
            continue
        store = AccountFile(accounts_path(data / "nodes" / node.node_id))
        password = secrets.token_urlsafe(12)
        with store.editing() as accounts:
            if user in accounts:
                continue
            accounts[user] = Account(
                user, org, hash_password(password), display, False, time.time_ns() // 1_000_000
            )
        created.append((node.node_id, user, password))
        lines.append(f"{node.node_id}\t{node.address}/explorer/\t{user}\t{password}\n")
    if lines:
        path = explorer_accounts_file(data)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.writelines(lines)
        os.chmod(path, 0o600)
    return created


def admit_payload(lender: str, public_key: bytes) -> dict[str, Any]:
    """The ``lender_admit`` payload the local network uses (generous limits)."""
    return {
        "lender": lender,
        "licence_id": f"LIC-{lender}",
        "name": f"Lender {lender}",
        "public_keys": [public_key],
        "limits": {"max_principal_cents": 10**10, "max_outstanding_cents": 10**13},
    }


def admit_lenders(
    data: Path,
    genesis: Genesis,
    lenders: Iterable[str],
    *,
    timeout_s: float = 30.0,
    ca_file: Path | None = None,
) -> None:
    """Have the bureau admit ``lenders`` on the supervision channel (through the SDK,
    signed with ``data/keys/bureau.key``). A lender already admitted is fine. Raises
    :class:`LedgerError` (from the SDK) if a node cannot be reached or the admission is
    refused for another reason."""
    from clients import Client

    with Client(
        genesis=genesis,
        key_file=data / "keys" / f"{BUREAU_ORG}.key",
        commit_timeout=timeout_s,
        ca_file=ca_file,
    ) as bureau:
        for lender in lenders:
            pk = load_key_file(lender_key_path(data, lender)).signer.public_key
            prepared = bureau.prepare(
                bureau.build("supervision", "lender_admit", admit_payload(lender, pk))
            )
            st = bureau.submit(prepared, check=False)
            code = st.outcome.code if st.outcome is not None else None
            if not st.valid and code != "lender_exists":
                raise LedgerError(
                    f"admitting {lender}: {st.reason or code or st.status}",
                    code="admission_failed",
                )


def _demo_lender_hook(data: Path) -> Genesis:
    from clients import PseudonymKey, write_pseudonym_key_file

    genesis = add_lender_orgs(data, [DEMO_LENDER], name=lambda i: "Demo lender")
    pseudonym = data / "keys" / "pseudonym.key"
    if not pseudonym.exists():
        write_pseudonym_key_file(pseudonym, PseudonymKey.generate())
    return genesis


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
        #: The network CA certificate when the nodes serve HTTPS (``prepare(tls=True)``).
        self.ca_file: Path | None = None
        #: Lenders to admit once every node answers (see :meth:`wait_healthy`).
        self.admit_when_healthy: tuple[str, ...] = ()

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
        demo_lender: bool | None = None,
        tls: bool = False,
    ) -> LocalNetwork:
        """Create (first run) or reuse keys, genesis and node configs under ``data_dir``.

        ``genesis_hook(data_dir)``, if given, runs after the local genesis exists and
        returns the genesis to use (tests add lender orgs this way). ``demo_lender``
        (default: when there is no ``genesis_hook``) registers :data:`DEMO_LENDER` and
        writes ``keys/pseudonym.key``; the first :meth:`wait_healthy` of all nodes then
        has the bureau admit it. With ``demo_lender``, a new network also gets the
        explorer orgs (:func:`add_explorer_orgs`) and demo explorer accounts
        (:func:`add_demo_explorer_accounts`). Node configs are rewritten on every call (they hold no
        state). ``tls``: the genesis addresses are ``https://`` and the network CA and
        node certificates are made (or reused) in ``DIR/tls`` (:mod:`node.tls`); each
        config gets a ``[tls]`` section. Raises :class:`ConfigError`.
        """
        data = Path(data_dir).resolve()
        fresh = not (data / "genesis.json").exists()
        genesis = make_local_genesis(
            data, base_port=base_port, host=host, scheme="https" if tls else "http"
        )
        if genesis_hook is not None:
            genesis = genesis_hook(data)
        if demo_lender is None:
            demo_lender = genesis_hook is None
        admit: tuple[str, ...] = ()
        if demo_lender and fresh:
            genesis = add_explorer_orgs(data)
        if demo_lender and (fresh or any(o.org_id == DEMO_LENDER for o in genesis.orgs)):
            genesis = _demo_lender_hook(data)
            if not (data / "keys" / f"{DEMO_LENDER}.admitted").exists():
                admit = (DEMO_LENDER,)
        ca_file: Path | None = None
        if tls:
            from node.tls import ensure_network_tls, node_tls_files

            ca_file = ensure_network_tls(
                data, genesis.network, [(n.node_id, n.address) for n in genesis.nodes]
            )
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
            tls_paths: tuple[str, str, str] | None = None
            if ca_file is not None:
                f = node_tls_files(data, info.node_id)
                tls_paths = (
                    os.path.relpath(f.cert_file, node_dir),
                    os.path.relpath(f.key_file, node_dir),
                    os.path.relpath(f.ca_file, node_dir),
                )
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
                org_key_file=os.path.relpath(org_key_path(data, info.org_id), node_dir),
                tls=tls_paths,
            )
            config_path.write_text(text, encoding="utf-8")
            nodes.append(
                NodeProcess(info.node_id, info.address, config_path, node_dir / "node.log")
            )
        if demo_lender and not explorer_accounts_file(data).exists():
            add_demo_explorer_accounts(data, genesis)  # once; remembered by that file
        net = cls(data, genesis, nodes)
        net.ca_file = ca_file
        net.admit_when_healthy = admit
        return net

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
        env[EXIT_WITH_PARENT_ENV] = str(os.getpid())  # nodes die with us, even on SIGKILL
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
        first node that exited or did not answer in time (with its log's tail).

        When waiting for all nodes, admits the lenders of :attr:`admit_when_healthy`
        (the demo lender) first; RuntimeError if that fails."""
        self._wait_healthy(timeout_s, indexes)
        if indexes is None and self.admit_when_healthy:
            try:
                admit_lenders(
                    self.data_dir, self.genesis, self.admit_when_healthy, ca_file=self.ca_file
                )
            except LedgerError as exc:
                who = ", ".join(self.admit_when_healthy)
                raise RuntimeError(f"could not admit {who}: {exc}") from None
            for lender in self.admit_when_healthy:
                (self.data_dir / "keys" / f"{lender}.admitted").touch()
            self.admit_when_healthy = ()

    def _wait_healthy(self, timeout_s: float, indexes: Sequence[int] | None) -> None:
        deadline = time.monotonic() + timeout_s
        pending = list(range(len(self.nodes)) if indexes is None else indexes)
        with httpx.Client(timeout=1.0, verify=self.http_verify()) as client:
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

    def http_verify(self) -> ssl.SSLContext | bool:
        """httpx ``verify=`` for talking to these nodes (the network CA under TLS)."""
        if self.ca_file is None:
            return True
        return ssl.create_default_context(cafile=str(self.ca_file))

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


def free_base_port(count: int = 5, tries: int = 200) -> int:
    """A port P such that P..P+count-1 are free on 127.0.0.1 right now (a bench or test
    network on loopback). Raises RuntimeError if none is found in ``tries`` picks."""
    rng = secrets.SystemRandom()
    for _ in range(tries):
        # Below Linux's default ephemeral range (32768-60999): a port picked there can be
        # taken by any outgoing connection before the node binds it.
        base = rng.randrange(20_000, 32_768 - count)
        socks: list[socket.socket] = []
        try:
            for p in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range found")
