"""Node configuration: one TOML file per node, checked at the boundary (pydantic) and
turned into a frozen :class:`NodeConfig`.

Example (``wulian up`` writes one per node)::

    node_id = "bureau-node"
    key_file = "../../keys/bureau-node.key"   # relative paths: to this file's directory
    genesis_file = "../../genesis.json"
    data_dir = "."
    rules = "channels"       # "test": node.rules.TestLogic (integration tests only)
    joining = false          # true: not in the genesis; added later by governance
    test_misbehaviour = false  # true: honour WULIAN_TEST_BYZANTINE (fault tests only)
    org_key_file = "../../keys/bureau.key"   # optional: the org's key, for its workers

    [listen]
    host = "127.0.0.1"
    port = 7001

    [log]
    format = "json"          # or "text"
    level = "info"

    [tls]                    # optional: serve HTTPS and dial peers over TLS (node/tls.py)
    cert_file = "../../tls/bureau-node.crt"   # this node's certificate (names the node)
    key_file = "../../tls/bureau-node.key"    # its key (mode 0600)
    ca_file = "../../tls/ca.crt"              # the network CA (peers and clients)

    [limits]                 # every field optional; defaults below
    max_body_bytes = 4194304
    max_batch_txs = 2000
    peer_queue_messages = 20000
    inbox_messages = 50000
    frame_max_bytes = 2097152
    frame_flush_ms = 2
    tick_ms = 20
    ledger_open_tables = 64  # LevelDB table files kept open (and mapped)
    ledger_write_buffer_mb = 8  # LevelDB's write buffer (up to two in memory)
    ledger_compression = "none"  # or "snappy": ~2.6x less disk, ~13 % more CPU a tx
    state_delta_heights = 16384  # state deltas kept for catching-up peers (0: none)
    state_delta_mb = 256     # … at most this many MiB of them per channel

    [consensus]              # every field optional; defaults of consensus.ReplicaConfig,
    window = 8               # except status_interval_ms, partial_batch_inflight,
                             # timeout_ms_per_mib, unreachable_primary_ms and
                             # fetch_parallel (NODE_CONSENSUS_DEFAULTS)
    max_batch_txs = 500      # (default: the channel's genesis param max_block_txs)
    batch_interval_ms = 20
    propose_when_idle = true # with no block in flight, propose a partial batch at once
    partial_batch_inflight = 2  # a batch not yet full waits while 2 blocks are in flight
    base_timeout_ms = 1000
    timeout_ms_per_mib = 4000  # more time for a large block in flight
    unreachable_primary_ms = 500  # view change once the primary's link is broken this long
    status_interval_ms = 1000
    fetch_parallel = 2       # catch-up requests in flight at once

    [relay]                  # optional
    ack_delay_ms = 2000      # acknowledgements wait this long, then go together
    anchor_delay_ms = 1000   # supervision blocks wait this long for their anchor, then go together

Errors: :func:`load_node_config` raises :class:`ledger.errors.ConfigError` whose
``str()`` is one line ``FILE: FIELD: problem``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ledger.errors import ConfigError
from ledger.governance import CONFIG_ACTIVATION_DELAY
from ledger.schema import is_name
from ledger.store import (
    DEFAULT_COMPRESSION,
    DEFAULT_OPEN_TABLES,
    DEFAULT_STATE_DELTA_BYTES,
    DEFAULT_STATE_DELTA_HEIGHTS,
    DEFAULT_WRITE_BUFFER_BYTES,
    MAX_OPEN_TABLES,
    MAX_WRITE_BUFFER_BYTES,
    MIN_OPEN_TABLES,
    MIN_WRITE_BUFFER_BYTES,
)

MAX_CONFIG_BYTES = 1024 * 1024
#: Consensus defaults of a node that differ from ``consensus.ReplicaConfig``'s (those suit
#: the simulator): STATUS once a second, not four times (halves an idle node's CPU; a
#: node notices that it fell behind up to a second later), and partial batches wait
#: while 2 blocks are in flight (blocks grow under load instead of many small ones
#: filling the window).
NODE_CONSENSUS_DEFAULTS: dict[str, int] = {
    "status_interval_ms": 1000,
    "partial_batch_inflight": 2,
    # A MiB block (≈ 1,000 batch-reported records) takes each of five replicas sharing
    # two cores seconds to check, apply and store: without the allowance, the
    # anchoring bench's batch reports set off view change after view change.
    "timeout_ms_per_mib": 4000,
    # A killed primary's peers see its connection refused at once: half a second
    # later they vote for a new view instead of waiting for a progress timeout.
    "unreachable_primary_ms": 500,
    # Catch-up keeps two requests in flight: the next answer travels while one is
    # checked and applied (one at a time left the node idle a quarter of the time).
    "fetch_parallel": 2,
}
#: Acknowledgements of anchored supervision blocks (``node.relays``) wait until the
#: oldest block they are due for was proposed this long ago, then one ack transaction
#: covers every block anchored meanwhile. Acked at once, each block of lender reports
#: brought an ack-only supervision block and the court block anchoring that: at half
#: load 84 % of the network's blocks were that cascade; with the delay, supervision and
#: judicial blocks halved and the nodes' CPU fell by a sixth (BENCHMARKS.md, session 14).
DEFAULT_ACK_DELAY_MS = 2000
MAX_ACK_DELAY_MS = 60_000
#: Anchors of committed supervision blocks (``node.relays``) wait until the oldest block
#: not anchored yet is this old (or a full relay step of blocks or record leaves waits),
#: then go together: a block costs the network ~45–50 ms of CPU whatever it holds, and
#: anchored at once each block of reports brought its own court block (BENCHMARKS.md,
#: session 17). Evidence codes come up to this much later.
DEFAULT_ANCHOR_DELAY_MS = 1000
MAX_ANCHOR_DELAY_MS = 60_000
#: Largest pipelining window a node may run: a validator-set change committed at ``c``
#: takes effect after ``c + CONFIG_ACTIVATION_DELAY``, which must cover the window.
MAX_WINDOW = CONFIG_ACTIVATION_DELAY


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class _Listen(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=7001, ge=1, le=65535)


class _Log(_Strict):
    format: Literal["json", "text"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"


class _Tls(_Strict):
    cert_file: str
    key_file: str
    ca_file: str


class _Limits(_Strict):
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_batch_txs: int = Field(default=2000, ge=1, le=20_000)
    peer_queue_messages: int = Field(default=20_000, ge=16, le=1_000_000)
    inbox_messages: int = Field(default=50_000, ge=16, le=1_000_000)
    frame_max_bytes: int = Field(default=2 * 1024 * 1024, ge=4096, le=32 * 1024 * 1024)
    frame_flush_ms: int = Field(default=2, ge=0, le=1000)
    tick_ms: int = Field(default=20, ge=1, le=1000)
    nonce_cache: int = Field(default=200_000, ge=100, le=10_000_000)
    status_cache: int = Field(default=200_000, ge=100, le=10_000_000)
    ledger_open_tables: int = Field(
        default=DEFAULT_OPEN_TABLES, ge=MIN_OPEN_TABLES, le=MAX_OPEN_TABLES
    )
    ledger_write_buffer_mb: int = Field(
        default=DEFAULT_WRITE_BUFFER_BYTES >> 20,
        ge=MIN_WRITE_BUFFER_BYTES >> 20,
        le=MAX_WRITE_BUFFER_BYTES >> 20,
    )
    ledger_compression: Literal["none", "snappy"] = DEFAULT_COMPRESSION
    state_delta_heights: int = Field(default=DEFAULT_STATE_DELTA_HEIGHTS, ge=0, le=10_000_000)
    state_delta_mb: int = Field(default=DEFAULT_STATE_DELTA_BYTES >> 20, ge=0, le=1 << 20)


class _Consensus(_Strict):
    window: int | None = Field(default=None, ge=1, le=1024)
    max_batch_txs: int | None = Field(default=None, ge=1, le=20_000)
    batch_interval_ms: int | None = Field(default=None, ge=0, le=60_000)
    propose_when_idle: bool | None = None
    partial_batch_inflight: int | None = Field(default=None, ge=0, le=1024)
    timeout_ms_per_mib: int | None = Field(default=None, ge=0, le=600_000)
    base_timeout_ms: int | None = Field(default=None, ge=10, le=600_000)
    unreachable_primary_ms: int | None = Field(default=None, ge=0, le=600_000)
    max_clock_drift_ms: int | None = Field(default=None, ge=0, le=600_000)
    censorship_timeout_ms: int | None = Field(default=None, ge=10, le=600_000)
    mempool_limit: int | None = Field(default=None, ge=1, le=10_000_000)
    mempool_per_sender: int | None = Field(default=None, ge=1, le=10_000_000)
    mempool_max_bytes: int | None = Field(default=None, ge=1 << 20, le=1 << 34)
    max_batch_bytes: int | None = Field(default=None, ge=1024, le=64 * 1024 * 1024)
    status_interval_ms: int | None = Field(default=None, ge=10, le=600_000)
    fetch_batch: int | None = Field(default=None, ge=1, le=1024)
    fetch_parallel: int | None = Field(default=None, ge=1, le=16)
    fetch_parallel_bytes: int | None = Field(default=None, ge=1, le=1 << 30)
    forward_batch_txs: int | None = Field(default=None, ge=1, le=20_000)
    recent_committed_limit: int | None = Field(default=None, ge=1, le=10_000_000)
    signature_cache_size: int | None = Field(default=None, ge=1, le=10_000_000)
    tx_cache_size: int | None = Field(default=None, ge=1, le=10_000_000)


class _Relay(_Strict):
    ack_delay_ms: int = Field(default=DEFAULT_ACK_DELAY_MS, ge=0, le=MAX_ACK_DELAY_MS)
    anchor_delay_ms: int = Field(default=DEFAULT_ANCHOR_DELAY_MS, ge=0, le=MAX_ANCHOR_DELAY_MS)


class _NodeConfigDoc(_Strict):
    node_id: str
    key_file: str
    genesis_file: str
    data_dir: str
    rules: Literal["channels", "test"] = "channels"
    org_key_file: str | None = None
    joining: bool = False
    test_misbehaviour: bool = False
    listen: _Listen = _Listen()
    log: _Log = _Log()
    tls: _Tls | None = None
    limits: _Limits = _Limits()
    consensus: _Consensus = _Consensus()
    relay: _Relay = _Relay()


@dataclass(frozen=True)
class TlsFiles:
    """The three files a node's TLS needs (absolute paths; see :mod:`node.tls`)."""

    cert_file: Path
    key_file: Path
    ca_file: Path


@dataclass(frozen=True)
class Limits:
    """Bounds on what the node accepts and buffers."""

    max_body_bytes: int = 4 * 1024 * 1024
    max_batch_txs: int = 2000
    peer_queue_messages: int = 20_000
    inbox_messages: int = 50_000
    frame_max_bytes: int = 2 * 1024 * 1024
    frame_flush_ms: int = 2
    tick_ms: int = 20
    nonce_cache: int = 200_000
    status_cache: int = 200_000
    #: LevelDB table files kept open and mapped (ledger.store.DEFAULT_OPEN_TABLES).
    ledger_open_tables: int = DEFAULT_OPEN_TABLES
    #: LevelDB's write buffer in MiB (ledger.store.DEFAULT_WRITE_BUFFER_BYTES).
    ledger_write_buffer_mb: int = DEFAULT_WRITE_BUFFER_BYTES >> 20
    #: How LevelDB compresses table blocks (ledger.store.DEFAULT_COMPRESSION).
    ledger_compression: str = DEFAULT_COMPRESSION
    #: Heights whose state deltas are kept for nodes that catch up
    #: (ledger.store.DEFAULT_STATE_DELTA_HEIGHTS; 0: none, they apply every block).
    state_delta_heights: int = DEFAULT_STATE_DELTA_HEIGHTS
    #: …and at most this many MiB of them per channel (DEFAULT_STATE_DELTA_BYTES).
    state_delta_mb: int = DEFAULT_STATE_DELTA_BYTES >> 20


@dataclass(frozen=True)
class NodeConfig:
    """A validated node configuration; paths are absolute."""

    node_id: str
    key_file: Path
    genesis_file: Path
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 7001
    log_format: Literal["json", "text"] = "json"
    log_level: str = "info"
    #: ``"channels"`` (the real channel rules) or ``"test"`` (node.rules.TestLogic).
    rules: str = "channels"
    #: The node's organisation key (signs the org's worker transactions), if given.
    org_key_file: Path | None = None
    #: A node not in the genesis, joining by governance (``add_validator``): it may
    #: start, and runs a replica on every channel to catch up once it is added.
    joining: bool = False
    #: Honour ``WULIAN_TEST_BYZANTINE`` with the real channel rules (fault tests of the
    #: relay path only; node/byzantine.py). Never in production.
    test_misbehaviour: bool = False
    limits: Limits = field(default_factory=Limits)
    #: ``consensus.ReplicaConfig`` overrides (only the fields set in the file; the one
    #: flag, ``propose_when_idle``, is a ``bool``).
    consensus: dict[str, int] = field(default_factory=dict, hash=False)
    source: Path | None = None
    #: TLS files (``[tls]``), or None to serve plain HTTP.
    tls: TlsFiles | None = None
    #: ``[relay] ack_delay_ms`` (:data:`DEFAULT_ACK_DELAY_MS`).
    ack_delay_ms: int = DEFAULT_ACK_DELAY_MS
    #: ``[relay] anchor_delay_ms`` (:data:`DEFAULT_ANCHOR_DELAY_MS`).
    anchor_delay_ms: int = DEFAULT_ANCHOR_DELAY_MS

    @property
    def ledger_dir(self) -> Path:
        return self.data_dir / "ledger"


def _loc(parts: tuple[int | str, ...]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _problem(err: Any) -> str:
    kind = err.get("type", "")
    if kind == "missing":
        return "missing field"
    if kind == "extra_forbidden":
        return "unknown field"
    msg = str(err.get("msg", "invalid value"))
    return f"{msg} (got {err.get('input')!r})" if "input" in err and kind != "model_type" else msg


def parse_node_config(doc: Any, path: str | os.PathLike[str]) -> NodeConfig:
    """Validate a parsed TOML document. Raises :class:`ConfigError` naming the field."""
    p = Path(path)
    try:
        model = _NodeConfigDoc.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(str(p), _loc(tuple(err["loc"])), _problem(err)) from None
    if not is_name(model.node_id):
        raise ConfigError(str(p), "node_id", f"{model.node_id!r} is not a valid identifier")
    if not model.listen.host or any(c in model.listen.host for c in "/@ ?#"):
        raise ConfigError(str(p), "listen.host", f"bad host {model.listen.host!r}")
    for name in ("key_file", "genesis_file", "data_dir"):
        if not getattr(model, name).strip():
            raise ConfigError(str(p), name, "must not be empty")
    if model.tls is not None:
        for name in ("cert_file", "key_file", "ca_file"):
            if not getattr(model.tls, name).strip():
                raise ConfigError(str(p), f"tls.{name}", "must not be empty")
    base = p.resolve().parent

    def absolute(value: str) -> Path:
        q = Path(value).expanduser()
        return q if q.is_absolute() else (base / q)

    if model.consensus.window is not None and model.consensus.window > MAX_WINDOW:
        raise ConfigError(
            str(p),
            "consensus.window",
            f"at most {MAX_WINDOW} (the governance activation delay: a validator-set "
            "change must not take effect on blocks already in flight)",
        )
    overrides = dict(NODE_CONSENSUS_DEFAULTS)
    overrides.update({k: v for k, v in model.consensus.model_dump().items() if v is not None})
    return NodeConfig(
        node_id=model.node_id,
        key_file=absolute(model.key_file),
        genesis_file=absolute(model.genesis_file),
        data_dir=absolute(model.data_dir),
        host=model.listen.host,
        port=model.listen.port,
        log_format=model.log.format,
        log_level=model.log.level,
        rules=model.rules,
        org_key_file=absolute(model.org_key_file) if model.org_key_file else None,
        joining=model.joining,
        test_misbehaviour=model.test_misbehaviour,
        limits=Limits(**model.limits.model_dump()),
        consensus=overrides,
        source=p,
        tls=None
        if model.tls is None
        else TlsFiles(
            absolute(model.tls.cert_file),
            absolute(model.tls.key_file),
            absolute(model.tls.ca_file),
        ),
        ack_delay_ms=model.relay.ack_delay_ms,
        anchor_delay_ms=model.relay.anchor_delay_ms,
    )


def load_node_config(path: str | os.PathLike[str]) -> NodeConfig:
    """Read and validate a node's TOML config file.

    Raises :class:`ConfigError` (``FILE: FIELD: problem``) if the file is missing,
    unreadable, not TOML, or a field is missing, unknown or of the wrong type/range.
    Does not open the key, genesis or data directory (see :mod:`node.runtime`).
    """
    p = str(path)
    try:
        with open(p, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(p, "", f"cannot read config file ({exc.strerror})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(p, "", f"larger than {MAX_CONFIG_BYTES} bytes")
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(p, "", "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(p, "", f"not valid TOML: {exc}") from None
    return parse_node_config(doc, p)


def _toml_str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _toml_int(v: int) -> str:
    """An integer setting as TOML (a ``bool`` — ``propose_when_idle`` — as ``true``/``false``)."""
    return ("true" if v else "false") if isinstance(v, bool) else str(int(v))


def render_node_config(
    *,
    node_id: str,
    key_file: str,
    genesis_file: str,
    data_dir: str,
    host: str,
    port: int,
    log_format: str = "json",
    rules: str = "channels",
    limits: dict[str, int] | None = None,
    consensus: dict[str, int] | None = None,
    org_key_file: str | None = None,
    tls: tuple[str, str, str] | None = None,
) -> str:
    """The TOML text of a node config (``wulian up`` and the test fixture write it).
    ``tls`` is ``(cert_file, key_file, ca_file)`` as written (relative to the file)."""
    lines = [
        f"node_id = {_toml_str(node_id)}",
        f"key_file = {_toml_str(key_file)}",
        f"genesis_file = {_toml_str(genesis_file)}",
        f"data_dir = {_toml_str(data_dir)}",
        f"rules = {_toml_str(rules)}",
        *([f"org_key_file = {_toml_str(org_key_file)}"] if org_key_file else []),
        "",
        "[listen]",
        f"host = {_toml_str(host)}",
        f"port = {port}",
        "",
        "[log]",
        f"format = {_toml_str(log_format)}",
        'level = "info"',
    ]
    if tls is not None:
        lines += ["", "[tls]"] + [
            f"{k} = {_toml_str(v)}"
            for k, v in zip(("cert_file", "key_file", "ca_file"), tls, strict=True)
        ]
    for section, values in (("limits", limits), ("consensus", consensus)):
        if values:
            lines += ["", f"[{section}]"] + [
                f"{k} = {_toml_int(v)}" for k, v in sorted(values.items())
            ]
    return "\n".join(lines) + "\n"
