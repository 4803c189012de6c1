"""The network genesis: organisations, nodes, channels, validators and permissions.

The genesis file (``genesis.json``) is the network's root of trust: every node, the
relay's light client and the offline receipt verifier start from it. It is JSON, read
through a strict pydantic model (the config boundary) and turned into frozen
dataclasses (:class:`Genesis`, :class:`ChannelConfig`, :class:`Permissions`).

File format (every field is required; no defaults, so the file *is* the canonical
document)::

    {"version": 1, "network": "wulian-local", "created_ms": 1700000000000,
     "governance_threshold": 3,
     "orgs": [{"id": "bureau", "name": "…", "role": "bureau",
               "keys": [{"public_key": "<64 lowercase hex>", "valid_from": 0,
                         "revoked_at": null}]}, …],
     "nodes": [{"id": "bureau-node", "org": "bureau", "public_key": "<64 hex>",
                "address": "http://127.0.0.1:7001"}, …],
     "channels": [{"id": "supervision", "validators": ["bureau-node", …],
                   "submit": {"loan_event": ["lender"], …},
                   "read": ["auditor", "bureau", …], "scoped_read": ["lender"],
                   "params": {"max_block_txs": 2000}}, …]}

Rules: ids are identifiers (1–64 chars of ``a-z0-9-_.``, starting alphanumeric); org and
node ids are distinct; every public key appears once in the whole file; all five
:data:`CHANNELS` appear exactly once; validators are node ids (list order is the
primary rotation order); role lists (``submit`` values, ``read``, ``scoped_read``) are
sorted and without duplicates; ``read`` and ``scoped_read`` are disjoint; transaction
types are those of :data:`TX_TYPES` for the channel; ``1 ≤ governance_threshold ≤`` the
number of institution orgs; JSON floats, NaN/Infinity, duplicate object keys and
integers outside the signed 64-bit range are refused.

**Genesis hash** = ``tagged_hash(TAG_GENESIS, encode(document))`` where ``document`` is
the parsed JSON (:mod:`ledger.encoding`'s canonical msgpack sorts keys), so whitespace
and key order do not change it. Because the format has no defaults and requires
sorted role sets and lowercase hex, the parsed file equals :func:`genesis_document` of
the loaded :class:`Genesis`: a third party recomputes the hash from the file alone.

Default permissions (:data:`DEFAULT_SUBMIT`, used by :func:`make_local_genesis`) are the
channels layer's table ``channels.registry.TX_TYPE_ROLES`` (docs/channels.md lists every
transaction type and who may send it); a test keeps the two equal. The ledger holds its
own copy because a genesis is checked below the channels layer.

Reads: ``read`` roles (the five institutions and ``auditor``; on ``judicial`` also
``clerk``) read the whole channel; ``scoped_read`` roles (``lender``) get only answers
about their own data — the node enforces the scoping. The pseudo-role ``"node"``
(:data:`NODE_SUBMITTER`) in a ``submit`` list means "any node of the genesis, signing
with its node key" (the relay).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError

from ledger.certificate import Validator, ValidatorSet
from ledger.crypto import Ed25519Signer
from ledger.encoding import INT_MIN, encode
from ledger.errors import ConfigError, LedgerError
from ledger.hashing import TAG_GENESIS, tagged_hash
from ledger.identity import (
    CHANNELS,
    INSTITUTION_ROLES,
    ROLES,
    NodeInfo,
    Organisation,
    OrgKey,
)
from ledger.keyfile import load_key_file, write_key_file
from ledger.schema import is_name

__all__ = [
    "CHANNELS",
    "CONFIG_UPDATE",
    "DEFAULT_PARAMS",
    "DEFAULT_READ",
    "DEFAULT_SCOPED_READ",
    "DEFAULT_SUBMIT",
    "GENESIS_FILE",
    "GENESIS_VERSION",
    "NODE_SUBMITTER",
    "ROLES",
    "SUBMITTER_ROLES",
    "TX_TYPES",
    "ChannelConfig",
    "Genesis",
    "GenesisDocument",
    "Permissions",
    "UnknownIdError",
    "genesis_document",
    "genesis_from_document",
    "load_genesis",
    "make_local_genesis",
    "write_genesis",
]

GENESIS_VERSION: Final = 1
GENESIS_FILE: Final = "genesis.json"
MAX_GENESIS_BYTES: Final = 16 * 1024 * 1024
INT64_MAX: Final = 2**63 - 1

#: The transaction type that carries governance changes (see :mod:`ledger.governance`).
CONFIG_UPDATE: Final = "config_update"
#: Pseudo-role allowed in ``submit`` lists: any genesis node signing with its node key.
NODE_SUBMITTER: Final = "node"
SUBMITTER_ROLES: Final = (*ROLES, NODE_SUBMITTER)

_INST: Final = frozenset(INSTITUTION_ROLES)


def _roles(*names: str) -> frozenset[str]:
    return frozenset(names)


#: Default "tx type → roles allowed to submit" per channel.
DEFAULT_SUBMIT: Final[Mapping[str, Mapping[str, frozenset[str]]]] = {
    "supervision": {
        "anchor_receipt": _roles(NODE_SUBMITTER),
        CONFIG_UPDATE: _INST,
        "lender_admit": _roles("bureau"),
        "lender_reinstate": _roles("bureau"),
        "lender_suspend": _roles("bureau"),
        "lender_update": _roles("bureau"),
        "loan_event": _roles("lender"),
        "loan_event_batch": _roles("lender"),
        "periodic_report": _roles("lender"),
    },
    "risk": {
        "alert": _roles("risk_centre"),
        "alert_close": _roles("bureau"),
        "alert_disposition": _roles("bureau"),
        "alert_feedback": _roles("lender"),
        "alert_followup": _roles("risk_centre"),
        CONFIG_UPDATE: _INST,
    },
    "judicial": {
        "anchor": _roles("court", NODE_SUBMITTER),
        "case_file": _roles("lender"),
        "case_file_batch": _roles("lender"),
        CONFIG_UPDATE: _INST,
        "court_publication": _roles("court"),
        "evidence_ack": _roles("court", NODE_SUBMITTER),
    },
    "credit": {
        CONFIG_UPDATE: _INST,
        "credit_entry": _roles("credit_agency"),
        "credit_entry_revoke": _roles("credit_agency"),
        "credit_query": _roles("lender"),
        "credit_sync": _roles("credit_agency"),
        "firm_profile": _roles("credit_agency"),
    },
    "service": {
        "asset_deregister": _roles("lender"),
        "asset_register": _roles("lender"),
        CONFIG_UPDATE: _INST,
        "disposal_list": _roles("lender"),
        "disposal_status": _roles("lender", "service_platform"),
        "financing_cancel": _roles("lender"),
        "financing_match": _roles("service_platform"),
        "financing_release": _roles("service_platform"),
        "financing_request": _roles("lender"),
    },
}

#: The transaction types each channel knows (the keys of :data:`DEFAULT_SUBMIT`).
TX_TYPES: Final[Mapping[str, frozenset[str]]] = {
    ch: frozenset(types) for ch, types in DEFAULT_SUBMIT.items()
}

#: Default roles reading a whole channel, per channel.
DEFAULT_READ: Final[Mapping[str, frozenset[str]]] = {
    ch: _INST | {"auditor"} | ({"clerk"} if ch == "judicial" else set()) for ch in CHANNELS
}
#: Default roles that read only answers about their own data, per channel.
DEFAULT_SCOPED_READ: Final[Mapping[str, frozenset[str]]] = {ch: _roles("lender") for ch in CHANNELS}
#: Default channel parameters (read by consensus/channels; free-form int or str values).
DEFAULT_PARAMS: Final[Mapping[str, int | str]] = {
    "max_block_txs": 2000,
    "max_time_drift_ms": 5000,
}

_INSTITUTION_NAMES: Final = {
    "bureau": "Local Financial Regulatory Bureau (地方金融监管局)",
    "court": "Internet Court (互联网法院)",
    "risk_centre": "Financial Risk Monitoring Centre (金融风险监测中心)",
    "credit_agency": "Credit Reference Agency (征信机构)",
    "service_platform": "Financial Service Platform (金融服务平台)",
}


class UnknownIdError(LedgerError, KeyError):
    """An org, node or channel id that the genesis does not define."""

    code = "unknown_id"


# ---------------------------------------------------------------------------------
# Frozen values


@dataclass(frozen=True)
class Permissions:
    """Who may submit which transaction types, and who may read, on one channel."""

    submit: Mapping[str, frozenset[str]] = field(hash=False)
    read: frozenset[str]
    scoped_read: frozenset[str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "submit", MappingProxyType(dict(self.submit)))

    def may_submit(self, tx_type: str, role: str) -> bool:
        """True iff an org with ``role`` (or ``"node"`` for a node key) may submit ``tx_type``."""
        return role in self.submit.get(tx_type, frozenset())

    def read_access(self, role: str) -> str:
        """``"full"``, ``"scoped"`` (own data only) or ``"none"``."""
        if role in self.read:
            return "full"
        if role in self.scoped_read:
            return "scoped"
        return "none"

    def to_document(self) -> dict[str, Any]:
        return {
            "submit": {t: sorted(self.submit[t]) for t in sorted(self.submit)},
            "read": sorted(self.read),
            "scoped_read": sorted(self.scoped_read),
        }


@dataclass(frozen=True)
class ChannelConfig:
    """One channel's genesis configuration."""

    channel_id: str
    validators: ValidatorSet
    submit: Mapping[str, frozenset[str]] = field(hash=False)
    read: frozenset[str]
    scoped_read: frozenset[str]
    params: Mapping[str, int | str] = field(hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "submit", MappingProxyType(dict(self.submit)))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def permissions(self) -> Permissions:
        return Permissions(self.submit, self.read, self.scoped_read)


@dataclass(frozen=True)
class Genesis:
    """The parsed, validated genesis. Build it with :func:`genesis_from_document`,
    :func:`load_genesis` or :func:`make_local_genesis` (they check the rules above)."""

    version: int
    network: str
    created_ms: int
    governance_threshold: int
    orgs: tuple[Organisation, ...]
    nodes: tuple[NodeInfo, ...]
    channels: tuple[ChannelConfig, ...]

    @cached_property
    def hash(self) -> bytes:
        """The network id: ``tagged_hash(TAG_GENESIS, encode(genesis_document(self)))``."""
        return tagged_hash(TAG_GENESIS, encode(genesis_document(self)))

    @cached_property
    def _orgs(self) -> Mapping[str, Organisation]:
        return {o.org_id: o for o in self.orgs}

    @cached_property
    def _nodes(self) -> Mapping[str, NodeInfo]:
        return {n.node_id: n for n in self.nodes}

    @cached_property
    def _channels(self) -> Mapping[str, ChannelConfig]:
        return {c.channel_id: c for c in self.channels}

    def org(self, org_id: str) -> Organisation:
        """Raises :class:`UnknownIdError` if the genesis has no such org."""
        try:
            return self._orgs[org_id]
        except KeyError:
            raise UnknownIdError(f"unknown org {org_id!r}") from None

    def node(self, node_id: str) -> NodeInfo:
        """Raises :class:`UnknownIdError` if the genesis has no such node."""
        try:
            return self._nodes[node_id]
        except KeyError:
            raise UnknownIdError(f"unknown node {node_id!r}") from None

    def channel(self, channel_id: str) -> ChannelConfig:
        """Raises :class:`UnknownIdError` if the genesis has no such channel."""
        try:
            return self._channels[channel_id]
        except KeyError:
            raise UnknownIdError(f"unknown channel {channel_id!r}") from None

    @property
    def institutions(self) -> tuple[Organisation, ...]:
        """The institution orgs (those that approve governance changes), in file order."""
        return tuple(o for o in self.orgs if o.is_institution)

    def nodes_of(self, org_id: str) -> tuple[NodeInfo, ...]:
        return tuple(n for n in self.nodes if n.org_id == org_id)


# ---------------------------------------------------------------------------------
# The config boundary: a strict pydantic model of the JSON document


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class _KeyDoc(_Strict):
    public_key: str
    valid_from: int
    revoked_at: int | None


class _OrgDoc(_Strict):
    id: str
    name: str
    role: str
    keys: list[_KeyDoc]


class _NodeDoc(_Strict):
    id: str
    org: str
    public_key: str
    address: str


class _ChannelDoc(_Strict):
    id: str
    validators: list[str]
    submit: dict[str, list[str]]
    read: list[str]
    scoped_read: list[str]
    params: dict[str, Any]


class GenesisDocument(_Strict):
    """The shape of ``genesis.json`` (types only; :func:`genesis_from_document` checks
    the cross-references and value rules)."""

    version: int
    network: str
    created_ms: int
    governance_threshold: int
    orgs: list[_OrgDoc]
    nodes: list[_NodeDoc]
    channels: list[_ChannelDoc]


def _loc(parts: Sequence[str | int]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


_PYDANTIC_PROBLEMS: Final = {
    "int_type": "expected an integer",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected an object",
    "model_type": "expected an object",
}


def _pydantic_problem(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "missing":
        return "missing field"
    if kind == "extra_forbidden":
        return "unknown field"
    base = _PYDANTIC_PROBLEMS.get(kind)
    if base is not None:
        return f"{base}, got {_json_type(err.get('input'))}"
    return str(err.get("msg", "invalid value"))


# ---------------------------------------------------------------------------------
# JSON reading: floats, NaN, duplicate keys and huge integers are refused with a path


class _JsonFloat(str):
    """A JSON number with a fraction or exponent (kept as text so we can report it)."""


class _DupKeyDict(dict[str, Any]):
    duplicate: str = ""


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    dup = ""
    for k, v in pairs:
        if k in out and not dup:
            dup = k
        out[k] = v
    if dup:
        d = _DupKeyDict(out)
        d.duplicate = dup
        return d
    return out


def _scan(value: Any, where: list[str | int], path: str) -> None:
    if isinstance(value, _JsonFloat | float):
        raise ConfigError(path, _loc(where), f"floats are not allowed (got {value}); use integers")
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not INT_MIN <= value <= INT64_MAX:
            raise ConfigError(path, _loc(where), "integer outside the signed 64-bit range")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _scan(v, [*where, i], path)
    elif isinstance(value, dict):
        if isinstance(value, _DupKeyDict):
            raise ConfigError(path, _loc(where), f"duplicate key {value.duplicate!r}")
        for k, v in value.items():
            _scan(v, [*where, k], path)


def _parse_json(text: str, path: str) -> Any:
    try:
        doc = json.loads(
            text,
            parse_float=_JsonFloat,
            parse_constant=_JsonFloat,
            object_pairs_hook=_pairs_hook,
        )
    except json.JSONDecodeError as exc:
        raise ConfigError(
            path, "", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise ConfigError(path, "", "not valid JSON: nested too deeply") from None
    _scan(doc, [], path)
    return doc


# ---------------------------------------------------------------------------------
# Validation: document → Genesis


def _public_key(path: str, where: str, raw: str) -> bytes:
    if len(raw) != 64 or any(c not in "0123456789abcdef" for c in raw):
        raise ConfigError(path, where, "public key must be 64 lowercase hex digits (32 bytes)")
    return bytes.fromhex(raw)


def _ident(path: str, where: str, value: str, what: str) -> None:
    if not is_name(value):
        raise ConfigError(
            path,
            where,
            f"{what} {value!r} is not a valid identifier "
            "(1-64 chars of a-z 0-9 - _ . starting with a letter or digit)",
        )


def _role_set(path: str, where: str, values: list[str], allowed: Sequence[str]) -> frozenset[str]:
    for i, r in enumerate(values):
        if r not in allowed:
            raise ConfigError(path, f"{where}[{i}]", f"unknown role {r!r}")
    if values != sorted(set(values)):
        raise ConfigError(
            path, where, f"roles must be sorted and without duplicates: {sorted(set(values))}"
        )
    return frozenset(values)


def _check_address(path: str, where: str, address: str) -> None:
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError:
        raise ConfigError(path, where, f"bad address {address!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise ConfigError(path, where, f"address {address!r} must be http(s)://host[:port]")


def genesis_from_document(doc: Any, path: str = GENESIS_FILE) -> Genesis:
    """Validate a parsed genesis document and build the :class:`Genesis`.

    Raises :class:`ConfigError` naming ``path`` and the field path (``orgs[1].role``)
    for the first problem found; never anything else for bad input.
    """
    _scan(doc, [], path)
    try:
        model = GenesisDocument.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(path, _loc(err["loc"]), _pydantic_problem(err)) from None

    if model.version != GENESIS_VERSION:
        raise ConfigError(
            path, "version", f"unsupported version {model.version} (expected {GENESIS_VERSION})"
        )
    _ident(path, "network", model.network, "network name")
    if model.created_ms < 0:
        raise ConfigError(path, "created_ms", "must not be negative")

    key_owner: dict[bytes, str] = {}

    def claim_key(where: str, raw: str) -> bytes:
        pk = _public_key(path, where, raw)
        if pk in key_owner:
            raise ConfigError(path, where, f"public key already used by {key_owner[pk]}")
        key_owner[pk] = where
        return pk

    orgs: list[Organisation] = []
    org_index: dict[str, int] = {}
    for i, o in enumerate(model.orgs):
        w = f"orgs[{i}]"
        _ident(path, f"{w}.id", o.id, "org id")
        if o.id in org_index:
            raise ConfigError(
                path, f"{w}.id", f"duplicate org id {o.id!r} (also orgs[{org_index[o.id]}])"
            )
        org_index[o.id] = i
        if not o.name.strip() or len(o.name) > 256:
            raise ConfigError(path, f"{w}.name", "must be 1-256 characters")
        if o.role not in ROLES:
            raise ConfigError(path, f"{w}.role", f"unknown role {o.role!r}")
        if not o.keys:
            raise ConfigError(path, f"{w}.keys", "an org needs at least one key")
        keys = []
        for j, k in enumerate(o.keys):
            kw = f"{w}.keys[{j}]"
            pk = claim_key(f"{kw}.public_key", k.public_key)
            if k.valid_from < 0:
                raise ConfigError(path, f"{kw}.valid_from", "must not be negative")
            if k.revoked_at is not None and k.revoked_at <= k.valid_from:
                raise ConfigError(path, f"{kw}.revoked_at", "must be greater than valid_from")
            keys.append(OrgKey(pk, k.valid_from, k.revoked_at))
        orgs.append(Organisation(o.id, o.name, o.role, tuple(keys)))

    nodes: list[NodeInfo] = []
    node_index: dict[str, int] = {}
    for i, n in enumerate(model.nodes):
        w = f"nodes[{i}]"
        _ident(path, f"{w}.id", n.id, "node id")
        if n.id in node_index:
            raise ConfigError(
                path, f"{w}.id", f"duplicate node id {n.id!r} (also nodes[{node_index[n.id]}])"
            )
        if n.id in org_index:
            raise ConfigError(path, f"{w}.id", f"node id {n.id!r} is already an org id")
        node_index[n.id] = i
        if n.org not in org_index:
            raise ConfigError(path, f"{w}.org", f"unknown org {n.org!r}")
        pk = claim_key(f"{w}.public_key", n.public_key)
        _check_address(path, f"{w}.address", n.address)
        nodes.append(NodeInfo(n.id, n.org, pk, n.address))

    n_inst = sum(1 for o in orgs if o.is_institution)
    m = model.governance_threshold
    if not 1 <= m <= n_inst:
        raise ConfigError(
            path,
            "governance_threshold",
            f"{m} is out of range: must be 1..{n_inst} (the number of institution orgs)",
        )

    channels: list[ChannelConfig] = []
    chan_index: dict[str, int] = {}
    for i, c in enumerate(model.channels):
        w = f"channels[{i}]"
        if c.id not in CHANNELS:
            raise ConfigError(
                path, f"{w}.id", f"unknown channel {c.id!r} (channels: {', '.join(CHANNELS)})"
            )
        if c.id in chan_index:
            raise ConfigError(
                path, f"{w}.id", f"duplicate channel {c.id!r} (also channels[{chan_index[c.id]}])"
            )
        chan_index[c.id] = i
        if not c.validators:
            raise ConfigError(path, f"{w}.validators", "a channel needs at least one validator")
        vals: list[Validator] = []
        seen_vals: set[str] = set()
        for j, v in enumerate(c.validators):
            if v not in node_index:
                raise ConfigError(path, f"{w}.validators[{j}]", f"unknown node {v!r}")
            if v in seen_vals:
                raise ConfigError(path, f"{w}.validators[{j}]", f"node {v!r} listed twice")
            seen_vals.add(v)
            vals.append(Validator(v, nodes[node_index[v]].public_key))
        submit: dict[str, frozenset[str]] = {}
        for t, roles in c.submit.items():
            if t not in TX_TYPES[c.id]:
                raise ConfigError(
                    path, f"{w}.submit.{t}", f"unknown transaction type {t!r} for channel {c.id!r}"
                )
            submit[t] = _role_set(path, f"{w}.submit.{t}", roles, SUBMITTER_ROLES)
        read = _role_set(path, f"{w}.read", c.read, ROLES)
        scoped = _role_set(path, f"{w}.scoped_read", c.scoped_read, ROLES)
        both = read & scoped
        if both:
            raise ConfigError(
                path, f"{w}.scoped_read", f"role(s) {sorted(both)} also in read (full access)"
            )
        params: dict[str, int | str] = {}
        for pname, pval in c.params.items():
            _ident(path, f"{w}.params.{pname}", pname, "parameter name")
            if isinstance(pval, bool) or not isinstance(pval, int | str):
                raise ConfigError(
                    path,
                    f"{w}.params.{pname}",
                    f"expected an integer or a string, got {_json_type(pval)}",
                )
            params[pname] = pval
        channels.append(
            ChannelConfig(c.id, ValidatorSet(tuple(vals)), submit, read, scoped, params)
        )
    missing = [ch for ch in CHANNELS if ch not in chan_index]
    if missing:
        raise ConfigError(path, "channels", f"missing channel(s) {', '.join(missing)}")

    return Genesis(
        version=model.version,
        network=model.network,
        created_ms=model.created_ms,
        governance_threshold=m,
        orgs=tuple(orgs),
        nodes=tuple(nodes),
        channels=tuple(channels),
    )


# ---------------------------------------------------------------------------------
# Files


def genesis_document(genesis: Genesis) -> dict[str, Any]:
    """The JSON-able canonical document of ``genesis`` (what :func:`write_genesis` writes
    and what the hash covers)."""
    return {
        "version": genesis.version,
        "network": genesis.network,
        "created_ms": genesis.created_ms,
        "governance_threshold": genesis.governance_threshold,
        "orgs": [
            {
                "id": o.org_id,
                "name": o.name,
                "role": o.role,
                "keys": [
                    {
                        "public_key": k.public_key.hex(),
                        "valid_from": k.valid_from,
                        "revoked_at": k.revoked_at,
                    }
                    for k in o.keys
                ],
            }
            for o in genesis.orgs
        ],
        "nodes": [
            {
                "id": n.node_id,
                "org": n.org_id,
                "public_key": n.public_key.hex(),
                "address": n.address,
            }
            for n in genesis.nodes
        ],
        "channels": [
            {
                "id": c.channel_id,
                "validators": [v.node_id for v in c.validators.validators],
                **c.permissions.to_document(),
                "params": dict(c.params),
            }
            for c in genesis.channels
        ],
    }


def load_genesis(path: str | os.PathLike[str]) -> Genesis:
    """Read and validate a genesis file.

    Raises :class:`ConfigError` (one line: file, field path, problem) if the file is
    missing or unreadable, not UTF-8 JSON, or breaks any rule in the module docstring.
    """
    p = str(path)
    try:
        with open(p, "rb") as fh:
            data = fh.read(MAX_GENESIS_BYTES + 1)
    except OSError as exc:
        raise ConfigError(p, "", f"cannot read genesis file ({exc.strerror})") from None
    if len(data) > MAX_GENESIS_BYTES:
        raise ConfigError(p, "", f"larger than {MAX_GENESIS_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(p, "", "not UTF-8 text") from None
    return genesis_from_document(_parse_json(text, p), p)


def write_genesis(path: str | os.PathLike[str], genesis: Genesis) -> None:
    """Write ``genesis`` as JSON (mode 0644), atomically: a temporary file in the same
    directory is fsynced and renamed over ``path``. Raises :class:`ConfigError` on an
    OS error (then ``path`` is unchanged and the temporary file removed)."""
    p = Path(path)
    text = json.dumps(genesis_document(genesis), indent=2, ensure_ascii=False) + "\n"
    tmp = p.with_name(f".{p.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
        _fsync_dir(p.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ConfigError(str(p), "", f"cannot write genesis file ({exc.strerror})") from None


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------
# A local five-institution network


def org_key_path(out_dir: str | os.PathLike[str], org_id: str) -> Path:
    """Where :func:`make_local_genesis` keeps ``org_id``'s org key."""
    return Path(out_dir) / "keys" / f"{org_id}.key"


def node_key_path(out_dir: str | os.PathLike[str], org_id: str) -> Path:
    """Where :func:`make_local_genesis` keeps the key of ``org_id``'s node."""
    return Path(out_dir) / "keys" / f"{org_id}-node.key"


def local_node_id(org_id: str) -> str:
    """The node id :func:`make_local_genesis` gives ``org_id``'s node."""
    return f"{org_id}-node"


def _load_or_create_key(path: Path, owner: str) -> Ed25519Signer:
    if path.exists():
        kf = load_key_file(path)
        if kf.owner != owner:
            raise ConfigError(str(path), "org", f"key belongs to {kf.owner!r}, expected {owner!r}")
        return kf.signer
    signer = Ed25519Signer.generate()
    try:
        write_key_file(path, owner, signer)
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot write key file ({exc.strerror})") from None
    return signer


def _now_ms() -> int:
    # datetime rather than the time module: consensus/ imports this module (through
    # ledger.governance) and its import contract forbids `time`; it never calls this.
    return int(datetime.now(UTC).timestamp() * 1000)


def _local_address(host: str, port: int, scheme: str = "http") -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _check_reuse(
    genesis: Genesis,
    genesis_path: Path,
    out: Path,
    base_port: int,
    host: str,
    network: str,
    scheme: str = "http",
) -> None:
    gp = str(genesis_path)
    hint = "; delete the directory to regenerate with other settings"
    if genesis.network != network:
        raise ConfigError(gp, "network", f"existing genesis is for {genesis.network!r}{hint}")
    for i, org_id in enumerate(INSTITUTION_ROLES):
        want = _local_address(host, base_port + i, scheme)
        try:
            org = genesis.org(org_id)
            node = genesis.node(local_node_id(org_id))
        except UnknownIdError as exc:
            raise ConfigError(gp, "", f"not a local genesis: {exc}{hint}") from None
        if node.address != want:
            raise ConfigError(gp, f"nodes[{genesis.nodes.index(node)}].address",
                              f"is {node.address}, not {want}{hint}")  # fmt: skip
        org_kf = load_key_file(org_key_path(out, org_id))
        if org.find_key(org_kf.public_key) is None:
            raise ConfigError(
                str(org_key_path(out, org_id)), "public_key", f"not a key of org {org_id!r} in {gp}"
            )
        node_kf = load_key_file(node_key_path(out, org_id))
        if node_kf.public_key != node.public_key:
            raise ConfigError(
                str(node_key_path(out, org_id)),
                "public_key",
                f"not the key of node {node.node_id!r} in {gp}",
            )


def make_local_genesis(
    out_dir: str | os.PathLike[str],
    *,
    base_port: int = 7001,
    host: str = "127.0.0.1",
    network: str = "wulian-local",
    created_ms: int | None = None,
    scheme: str = "http",
) -> Genesis:
    """Create (or reuse) a five-institution network in ``out_dir``.

    Writes ``out_dir/keys/<org>.key`` (org key) and ``out_dir/keys/<org>-node.key``
    (node key) for each institution — mode 0600, never overwritten — and
    ``out_dir/genesis.json``: node ``<org>-node`` at ``scheme://host:base_port+i`` (in
    :data:`INSTITUTION_ROLES` order), every channel validated by all five nodes
    (n=5, f=1, quorum 4), governance threshold 3 of 5, default permissions.

    **Re-running reuses**: if ``genesis.json`` exists it is loaded, checked against the
    key files and the arguments (network name, node addresses), and returned unchanged;
    a mismatch raises :class:`ConfigError` (delete the directory to regenerate). Key
    files left by an interrupted run (no ``genesis.json`` yet) are reused, not replaced.
    Raises :class:`ConfigError` for bad arguments or unwritable directories.
    """
    out = Path(out_dir)
    if not 1 <= base_port <= 65535 - len(INSTITUTION_ROLES):
        raise ConfigError("--base-port", "", f"{base_port} is not a usable TCP port")
    if not host or any(c in host for c in "/@ ?#"):
        raise ConfigError("--host", "", f"bad host {host!r}")
    _ident("--network", "", network, "network name")
    if scheme not in ("http", "https"):
        raise ConfigError("--scheme", "", f"{scheme!r} is not http or https")
    genesis_path = out / GENESIS_FILE
    if genesis_path.exists():
        genesis = load_genesis(genesis_path)
        _check_reuse(genesis, genesis_path, out, base_port, host, network, scheme)
        return genesis
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "keys").mkdir(mode=0o700, exist_ok=True)
    except FileExistsError:
        raise ConfigError(str(out), "", "exists and is not a directory") from None
    except OSError as exc:
        raise ConfigError(str(out), "", f"cannot create directory ({exc.strerror})") from None

    orgs: list[dict[str, Any]] = []
    nodes: list[dict[str, Any]] = []
    for i, org_id in enumerate(INSTITUTION_ROLES):
        org_signer = _load_or_create_key(org_key_path(out, org_id), org_id)
        node_id = local_node_id(org_id)
        node_signer = _load_or_create_key(node_key_path(out, org_id), node_id)
        orgs.append(
            {
                "id": org_id,
                "name": _INSTITUTION_NAMES[org_id],
                "role": org_id,
                "keys": [
                    {"public_key": org_signer.public_key.hex(), "valid_from": 0, "revoked_at": None}
                ],
            }
        )
        nodes.append(
            {
                "id": node_id,
                "org": org_id,
                "public_key": node_signer.public_key.hex(),
                "address": _local_address(host, base_port + i, scheme),
            }
        )
    validator_ids = [n["id"] for n in nodes]
    doc = {
        "version": GENESIS_VERSION,
        "network": network,
        "created_ms": _now_ms() if created_ms is None else created_ms,
        "governance_threshold": 3,
        "orgs": orgs,
        "nodes": nodes,
        "channels": [
            {
                "id": ch,
                "validators": list(validator_ids),
                **Permissions(
                    DEFAULT_SUBMIT[ch], DEFAULT_READ[ch], DEFAULT_SCOPED_READ[ch]
                ).to_document(),
                "params": dict(DEFAULT_PARAMS),
            }
            for ch in CHANNELS
        ],
    }
    genesis = genesis_from_document(doc, str(genesis_path))
    write_genesis(genesis_path, genesis)
    return genesis


def institution_ids(orgs: Iterable[Organisation]) -> tuple[str, ...]:
    """The ids of the institution orgs among ``orgs``, in order."""
    return tuple(o.org_id for o in orgs if o.is_institution)
