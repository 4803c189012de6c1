"""Client settings: which nodes, which network (genesis), who we are, and the defaults
for timeouts and retries. Also reads a ``wulian up`` data directory.

``wulian up`` data directory (what :func:`settings_from_network_dir` reads)::

    DIR/genesis.json                  the network genesis (node URLs come from it)
    DIR/keys/<lender>.key             a lender org's signing key (mode 0600)
    DIR/keys/pseudonym.key            the bureau's borrower pseudonym key (optional)
    DIR/tls/ca.crt                    the network CA, if the nodes serve HTTPS (optional)
    DIR/lenders/<lender>/records/     the lender's record store (created on first use)

The lender is ``org`` if given, else ``demo-lender`` if its key exists, else the only
genesis org with role ``lender`` whose key file is present.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

from clients._pseudonym import PseudonymKey, load_pseudonym_key_file
from ledger.crypto import Signer
from ledger.errors import ConfigError
from ledger.genesis import Genesis, load_genesis
from ledger.keyfile import load_key_file
from ledger.schema import is_name

DEMO_LENDER: Final = "demo-lender"
PSEUDONYM_KEY_FILE: Final = "pseudonym.key"

#: Defaults (seconds). Per-call ``timeout=`` arguments override them.
DEFAULT_TIMEOUT: Final = 10.0
DEFAULT_COMMIT_TIMEOUT: Final = 30.0
DEFAULT_EVIDENCE_TIMEOUT: Final = 300.0
DEFAULT_RETRIES: Final = 2


@dataclass(frozen=True)
class Settings:
    """Everything a client needs, validated.

    ``timeout``: one HTTP request; ``commit_timeout``: ``submit``/``wait`` until
    committed; ``evidence_timeout``: ``evidence`` until anchored; ``retries``: extra
    rounds over the node list after every node failed once (with exponential back-off
    from ``backoff_s`` up to ``max_backoff_s``); ``cooldown_s``: how long a failed node
    is tried last; ``batch_size``: most transactions per batch request (at most the
    nodes' ``limits.max_batch_txs``).
    """

    nodes: tuple[str, ...]
    genesis: Genesis
    org: str
    signer: Signer = field(repr=False)
    store_dir: Path | None = None
    pseudonym: PseudonymKey | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT
    commit_timeout: float = DEFAULT_COMMIT_TIMEOUT
    evidence_timeout: float = DEFAULT_EVIDENCE_TIMEOUT
    retries: int = DEFAULT_RETRIES
    backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    cooldown_s: float = 5.0
    batch_size: int = 200
    #: The network CA certificate (PEM) that ``https://`` nodes are verified against;
    #: None: the system's trust store.
    ca_file: Path | None = None

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ConfigError("client", "nodes", "at least one node URL is needed")
        for url in self.nodes:
            check_node_url(url)
        for name in ("timeout", "commit_timeout", "evidence_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError("client", name, "must be positive")
        if not 1 <= self.batch_size <= 20_000:
            raise ConfigError("client", "batch_size", "must be 1..20000")
        if self.retries < 0:
            raise ConfigError("client", "retries", "must be >= 0")
        # The org and key need not be in the genesis file: lenders are registered and
        # keys rotated by governance later; the nodes check them on every request.
        if not is_name(self.org):
            raise ConfigError("client", "org", f"{self.org!r} is not a valid organisation id")

    @property
    def network(self) -> bytes:
        return self.genesis.hash

    def tls_verify(self) -> ssl.SSLContext | bool:
        """httpx's ``verify=``: a context trusting only :attr:`ca_file` (if set), else
        True (the system store). Raises ConfigError if the CA file cannot be loaded."""
        if self.ca_file is None:
            return True
        try:
            return ssl.create_default_context(cafile=str(self.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                str(self.ca_file), "", f"cannot load CA certificate ({exc})"
            ) from None


def check_node_url(url: str) -> None:
    """Raise ConfigError unless ``url`` is an http(s) URL with a host, a valid port and
    no query or fragment (request paths are appended to it)."""
    if not url.startswith(("http://", "https://")) or any(c.isspace() for c in url):
        raise ConfigError("client", "nodes", f"{url!r} is not an http(s) URL")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigError("client", "nodes", f"{url!r} is not a valid URL ({exc})") from None
    if not parsed.host:
        raise ConfigError("client", "nodes", f"{url!r} has no host")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise ConfigError("client", "nodes", f"{url!r}: port {parsed.port} is out of range")
    if parsed.query or parsed.fragment:
        raise ConfigError("client", "nodes", f"{url!r}: a node URL has no query or fragment")


def make_settings(
    *,
    genesis: Genesis | str | os.PathLike[str],
    nodes: Sequence[str] | None = None,
    key_file: str | os.PathLike[str] | None = None,
    signer: Signer | None = None,
    org: str | None = None,
    store: str | os.PathLike[str] | None = None,
    pseudonym_key: PseudonymKey | bytes | str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    commit_timeout: float = DEFAULT_COMMIT_TIMEOUT,
    evidence_timeout: float = DEFAULT_EVIDENCE_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    backoff_s: float = 0.1,
    max_backoff_s: float = 2.0,
    cooldown_s: float = 5.0,
    batch_size: int = 200,
    ca_file: str | os.PathLike[str] | None = None,
) -> Settings:
    """Build :class:`Settings` from the constructor arguments of ``Client``.

    Exactly one of ``key_file`` (a ``wulian keygen`` key file; the org is read from it)
    and ``signer`` + ``org`` (any :class:`ledger.crypto.Signer`, e.g. an HSM adapter).
    ``nodes`` defaults to every node address in the genesis. ``ca_file``: the network
    CA for ``https://`` nodes (``wulian genesis --tls``). Raises ConfigError.
    """
    g = genesis if isinstance(genesis, Genesis) else load_genesis(genesis)
    if (key_file is None) == (signer is None):
        raise ConfigError("client", "key_file", "give exactly one of key_file and signer")
    if key_file is not None:
        kf = load_key_file(key_file)
        if org is not None and org != kf.owner:
            raise ConfigError(str(key_file), "org", f"key belongs to {kf.owner!r}, not {org!r}")
        signer_: Signer = kf.signer
        org_ = kf.owner
    else:
        if org is None:
            raise ConfigError("client", "org", "a signer needs the org id it signs for")
        assert signer is not None
        signer_, org_ = signer, org
    pk: PseudonymKey | None
    if pseudonym_key is None or isinstance(pseudonym_key, PseudonymKey):
        pk = pseudonym_key
    elif isinstance(pseudonym_key, bytes):
        pk = PseudonymKey(pseudonym_key)
    else:
        pk = load_pseudonym_key_file(pseudonym_key)
    urls = tuple(nodes) if nodes is not None else tuple(n.address for n in g.nodes)
    return Settings(
        nodes=tuple(u.rstrip("/") for u in urls),
        genesis=g,
        org=org_,
        signer=signer_,
        store_dir=None if store is None else Path(store),
        pseudonym=pk,
        timeout=timeout,
        commit_timeout=commit_timeout,
        evidence_timeout=evidence_timeout,
        retries=retries,
        backoff_s=backoff_s,
        max_backoff_s=max_backoff_s,
        cooldown_s=cooldown_s,
        batch_size=batch_size,
        ca_file=None if ca_file is None else Path(ca_file),
    )


def network_lender(data_dir: Path, genesis: Genesis, org: str | None) -> str:
    """Which lender of a ``wulian up`` directory to act as (see the module docstring)."""
    keys = data_dir / "keys"
    if org is not None:
        if not (keys / f"{org}.key").exists():
            raise ConfigError(str(keys / f"{org}.key"), "", "no key file for this org")
        return org
    if (keys / f"{DEMO_LENDER}.key").exists():
        return DEMO_LENDER
    found = [
        o.org_id for o in genesis.orgs if o.role == "lender" and (keys / f"{o.org_id}.key").exists()
    ]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ConfigError(
            str(data_dir),
            "keys",
            f"no lender key found (expected keys/{DEMO_LENDER}.key for a lender in the "
            "genesis; `wulian up` admits the demo lender)",
        )
    raise ConfigError(str(data_dir), "keys", f"several lenders ({', '.join(found)}): give --org")


def settings_from_network_dir(
    data_dir: str | os.PathLike[str],
    *,
    org: str | None = None,
    nodes: Sequence[str] | None = None,
    store: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Settings:
    """Settings for a lender of a ``wulian up`` data directory. Raises ConfigError."""
    d = Path(data_dir)
    genesis = load_genesis(d / "genesis.json")
    lender = network_lender(d, genesis, org)
    pseudonym = d / "keys" / PSEUDONYM_KEY_FILE
    ca = d / "tls" / "ca.crt"
    if ca.exists():
        options.setdefault("ca_file", ca)
    return make_settings(
        genesis=genesis,
        nodes=nodes,
        key_file=d / "keys" / f"{lender}.key",
        store=store if store is not None else d / "lenders" / lender / "records",
        pseudonym_key=pseudonym if pseudonym.exists() else None,
        **options,
    )
