"""Genesis file: round trip, hash stability, every malformed case → one-line ConfigError."""

from __future__ import annotations

import copy
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import node.cli as cli
from ledger.encoding import encode
from ledger.errors import ConfigError, LedgerError
from ledger.genesis import (
    CHANNELS,
    CONFIG_UPDATE,
    TX_TYPES,
    UnknownIdError,
    genesis_document,
    genesis_from_document,
    load_genesis,
    make_local_genesis,
    node_key_path,
    org_key_path,
    write_genesis,
)
from ledger.hashing import TAG_GENESIS, tagged_hash
from ledger.identity import INSTITUTION_ROLES
from ledger.keyfile import load_key_file


@pytest.fixture(scope="module")
def local_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("net")
    make_local_genesis(out, created_ms=1_700_000_000_000)
    return out


@pytest.fixture
def doc(local_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((local_dir / "genesis.json").read_text())
    return result


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    # Only this helper's command module: the others may not exist yet.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("node.commands.keys_cmd",))

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


# --------------------------------------------------------------------------- round trip


def test_round_trip_keeps_hash(local_dir: Path, tmp_path: Path) -> None:
    g = load_genesis(local_dir / "genesis.json")
    write_genesis(tmp_path / "copy.json", g)
    g2 = load_genesis(tmp_path / "copy.json")
    assert g2 == g
    assert g2.hash == g.hash
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_hash_is_tagged_hash_of_parsed_document(local_dir: Path, doc: dict[str, Any]) -> None:
    g = load_genesis(local_dir / "genesis.json")
    assert g.hash == tagged_hash(TAG_GENESIS, encode(doc))
    assert genesis_document(g) == doc


def _reverse_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reverse_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reverse_keys(v) for v in value]
    return value


def test_key_order_and_whitespace_do_not_change_hash(
    local_dir: Path, doc: dict[str, Any], tmp_path: Path
) -> None:
    base = load_genesis(local_dir / "genesis.json").hash
    compact = tmp_path / "compact.json"
    compact.write_text(json.dumps(_reverse_keys(doc), separators=(",", ":")))
    spaced = tmp_path / "spaced.json"
    spaced.write_text("\n\n " + json.dumps(doc, indent=7, sort_keys=True) + "\n\t ")
    assert json.loads(compact.read_text()) == doc
    assert list(json.loads(compact.read_text())) != list(doc)  # key order really differs
    assert load_genesis(compact).hash == base
    assert load_genesis(spaced).hash == base


def test_content_change_changes_hash(doc: dict[str, Any], tmp_path: Path) -> None:
    base = genesis_from_document(copy.deepcopy(doc)).hash
    doc["channels"][0]["params"]["max_block_txs"] += 1
    assert genesis_from_document(doc).hash != base


# --------------------------------------------------------------------------- local genesis


def test_local_genesis_shape(local_dir: Path) -> None:
    g = load_genesis(local_dir / "genesis.json")
    assert [o.org_id for o in g.institutions] == list(INSTITUTION_ROLES)
    assert g.governance_threshold == 3
    assert {c.channel_id for c in g.channels} == set(CHANNELS)
    for c in g.channels:
        assert (c.validators.n, c.validators.f, c.validators.quorum) == (5, 1, 4)
    ports = sorted(int(n.address.rsplit(":", 1)[1]) for n in g.nodes)
    assert ports == [7001, 7002, 7003, 7004, 7005]
    for org_id in INSTITUTION_ROLES:
        org_kf = load_key_file(org_key_path(local_dir, org_id))
        node_kf = load_key_file(node_key_path(local_dir, org_id))
        assert g.org(org_id).key_active_at(org_kf.public_key, 0)
        assert g.node(f"{org_id}-node").public_key == node_kf.public_key
        assert node_kf.owner == f"{org_id}-node"


def test_key_files_are_0600(local_dir: Path) -> None:
    keys = sorted((local_dir / "keys").iterdir())
    assert len(keys) == 10
    for k in keys:
        assert stat.S_IMODE(k.stat().st_mode) == 0o600


def test_group_readable_key_is_refused(tmp_path: Path) -> None:
    make_local_genesis(tmp_path, created_ms=1)
    key = org_key_path(tmp_path, "court")
    os.chmod(key, 0o644)
    with pytest.raises(ConfigError, match="0644") as exc:
        load_key_file(key)
    assert str(key) in str(exc.value)
    # Re-running the generator refuses to use the loose key too.
    with pytest.raises(ConfigError, match="0600"):
        make_local_genesis(tmp_path)


def test_rerun_reuses(tmp_path: Path) -> None:
    g1 = make_local_genesis(tmp_path, created_ms=5)
    before = {p.name: p.read_bytes() for p in (tmp_path / "keys").iterdir()}
    g2 = make_local_genesis(tmp_path)
    assert g2.hash == g1.hash
    assert {p.name: p.read_bytes() for p in (tmp_path / "keys").iterdir()} == before


def test_rerun_with_other_settings_refuses(tmp_path: Path) -> None:
    make_local_genesis(tmp_path, created_ms=5)
    with pytest.raises(ConfigError, match="address"):
        make_local_genesis(tmp_path, base_port=9001)
    with pytest.raises(ConfigError, match="network"):
        make_local_genesis(tmp_path, network="other-net")


def test_interrupted_run_reuses_existing_keys(tmp_path: Path) -> None:
    g1 = make_local_genesis(tmp_path, created_ms=5)
    (tmp_path / "genesis.json").unlink()
    g2 = make_local_genesis(tmp_path, created_ms=6)
    assert [o.keys for o in g2.orgs] == [o.keys for o in g1.orgs]
    assert [n.public_key for n in g2.nodes] == [n.public_key for n in g1.nodes]


def test_key_file_swapped_for_another_is_detected(tmp_path: Path) -> None:
    make_local_genesis(tmp_path, created_ms=5)
    other = tmp_path / "other"
    make_local_genesis(other, created_ms=5)
    os.replace(node_key_path(other, "risk_centre"), node_key_path(tmp_path, "risk_centre"))
    with pytest.raises(ConfigError, match="risk_centre-node"):
        make_local_genesis(tmp_path)


def test_accessors_and_permissions(local_dir: Path) -> None:
    g = load_genesis(local_dir / "genesis.json")
    with pytest.raises(UnknownIdError):
        g.channel("mining")
    with pytest.raises(KeyError):
        g.org("nobody")
    with pytest.raises(LedgerError):
        g.node("nowhere")
    sup = g.channel("supervision").permissions
    assert sup.may_submit("loan_event", "lender")
    assert not sup.may_submit("loan_event", "bureau")
    assert sup.may_submit("lender_admit", "bureau")
    assert not sup.may_submit("lender_admit", "lender")
    jud = g.channel("judicial").permissions
    assert jud.may_submit("anchor", "court") and jud.may_submit("anchor", "node")
    assert not jud.may_submit("anchor", "lender")
    assert g.channel("risk").permissions.may_submit("alert_disposition", "bureau")
    for c in g.channels:
        p = c.permissions
        assert set(c.submit) == TX_TYPES[c.channel_id]
        assert all(p.may_submit(CONFIG_UPDATE, r) for r in INSTITUTION_ROLES)
        assert all(p.read_access(r) == "full" for r in INSTITUTION_ROLES)
        assert p.read_access("lender") == "scoped"
        assert p.read_access("nobody") == "none"


# --------------------------------------------------------------------------- malformed

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(d: dict[str, Any]) -> None:
        *head, last = _parse(path)
        target: Any = d
        for p in head:
            target = target[p]
        target[last] = value

    return mutate


def _del(path: str) -> Mutation:
    def mutate(d: dict[str, Any]) -> None:
        *head, last = _parse(path)
        target: Any = d
        for p in head:
            target = target[p]
        del target[last]

    return mutate


def _parse(path: str) -> list[str | int]:
    out: list[str | int] = []
    for part in path.split("."):
        name, *idx = part.replace("]", "").split("[")
        if name:
            out.append(name)
        out.extend(int(i) for i in idx)
    return out


def _dup_channel(d: dict[str, Any]) -> None:
    d["channels"][3] = copy.deepcopy(d["channels"][1])


def _drop_channel(d: dict[str, Any]) -> None:
    del d["channels"][2]


def _dup_org(d: dict[str, Any]) -> None:
    d["orgs"].append(copy.deepcopy(d["orgs"][0]))


def _reuse_key(d: dict[str, Any]) -> None:
    d["nodes"][1]["public_key"] = d["orgs"][3]["keys"][0]["public_key"]


def _lender_org(d: dict[str, Any]) -> None:
    d["orgs"].append(
        {
            "id": "lender-1",
            "name": "Lender One",
            "role": "lender",
            "keys": [{"public_key": "ab" * 32, "valid_from": 0, "revoked_at": None}],
        }
    )
    d["governance_threshold"] = 6


def _at(case_id: str, path: str, value: Any, problem: str) -> tuple[str, Mutation, str, str]:
    """A case that sets ``path`` to ``value`` and expects the error at that same path."""
    return (case_id, _set(path, value), path, problem)


HEX_ERR = "64 lowercase hex"
KEY0 = "orgs[1].keys[0]"

# (case id, mutation or raw JSON text, expected field path, expected problem fragment)
CASES: list[tuple[str, Mutation | str, str, str]] = [
    ("bad-json", '{"version": 1,', "", "not valid JSON"),
    ("not-object", "[1, 2]", "", "expected an object"),
    ("nan", '{"version": NaN}', "version", "floats are not allowed"),
    ("dup-key", '{"version": 1, "version": 1}', "", "duplicate key 'version'"),
    _at("float", "created_ms", 1.5, "floats are not allowed"),
    _at("float-param", "channels[0].params.max_block_txs", 2e3, "floats are not allowed"),
    _at("huge-int", "created_ms", 2**70, "64-bit"),
    _at("wrong-type", "governance_threshold", "3", "expected an integer"),
    _at("bool-as-int", f"{KEY0}.valid_from", True, "expected an integer"),
    _at("list-type", "nodes", {}, "expected a list"),
    ("missing-field", _del("nodes[1].address"), "nodes[1].address", "missing field"),
    _at("extra-field", "orgs[0].colour", "red", "unknown field"),
    _at("version", "version", 2, "unsupported version"),
    _at("network-name", "network", "Bad Net", "not a valid identifier"),
    _at("unknown-role", "orgs[2].role", "king", "unknown role 'king'"),
    _at("no-keys", "orgs[2].keys", [], "at least one key"),
    _at("short-key", f"{KEY0}.public_key", "abcd", HEX_ERR),
    _at("upper-key", "nodes[0].public_key", "AB" * 32, HEX_ERR),
    _at("non-hex-key", "nodes[4].public_key", "zz" * 32, HEX_ERR),
    _at("revoked-early", "orgs[0].keys[0].revoked_at", 0, "greater than valid_from"),
    ("reused-key", _reuse_key, "nodes[1].public_key", "already used by orgs[3].keys[0]"),
    ("dup-org", _dup_org, "orgs[5].id", "duplicate org id 'bureau' (also orgs[0])"),
    _at("dup-node", "nodes[3].id", "bureau-node", "duplicate node id"),
    _at("node-is-org", "nodes[3].id", "court", "already an org id"),
    _at("node-unknown-org", "nodes[2].org", "mafia", "unknown org 'mafia'"),
    _at("bad-address", "nodes[0].address", "ftp://x", "http(s)://"),
    _at("threshold-zero", "governance_threshold", 0, "out of range"),
    _at("threshold-high", "governance_threshold", 6, "must be 1..5"),
    ("lender-not-counted", _lender_org, "governance_threshold", "must be 1..5"),
    _at("unknown-channel", "channels[2].id", "mining", "unknown channel 'mining'"),
    ("dup-channel", _dup_channel, "channels[3].id", "duplicate channel"),
    ("missing-channel", _drop_channel, "channels", "missing channel(s) risk"),
    _at("unknown-validator", "channels[2].validators[1]", "x", "unknown node 'x'"),
    _at("dup-validator", "channels[0].validators[4]", "bureau-node", "listed twice"),
    _at("no-validators", "channels[1].validators", [], "at least one validator"),
    _at("unknown-tx-type", "channels[0].submit.mint", ["bureau"], "unknown transaction type"),
    _at("other-channel-type", "channels[0].submit.anchor", ["court"], "for channel 'supervision'"),
    (
        "submit-unknown-role",
        _set("channels[0].submit.loan_event", ["lender", "pirate"]),
        "channels[0].submit.loan_event[1]",
        "unknown role 'pirate'",
    ),
    _at("read-unsorted", "channels[4].read", ["court", "bureau"], "sorted"),
    ("read-node", _set("channels[4].read", ["node"]), "channels[4].read[0]", "unknown role 'node'"),
    _at("read-overlap", "channels[1].scoped_read", ["bureau", "lender"], "also in read"),
    _at("param-type", "channels[0].params.flag", [1], "integer or a string"),
]


def _write_case(tmp_path: Path, doc: dict[str, Any], case: Mutation | str) -> Path:
    path = tmp_path / "genesis.json"
    if isinstance(case, str):
        path.write_text(case)
    else:
        case(doc)
        path.write_text(json.dumps(doc, indent=1))
    return path


@pytest.mark.parametrize(
    ("case", "field", "problem"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_malformed_genesis(
    case: Mutation | str,
    field: str,
    problem: str,
    doc: dict[str, Any],
    tmp_path: Path,
    run_cli: Any,
) -> None:
    path = _write_case(tmp_path, doc, case)
    with pytest.raises(ConfigError) as exc:
        load_genesis(path)
    err = exc.value
    message = str(err)
    assert "\n" not in message
    assert err.path == str(path)
    assert err.field == field
    assert problem in err.problem
    assert message.startswith(f"{path}: {field + ': ' if field else ''}")

    code, out, stderr = run_cli("genesis", "--check", str(path))
    assert code == 1
    assert out == ""
    assert stderr.count("\n") == 1
    assert "Traceback" not in stderr
    assert stderr == f"wulian: error: {message}\n"


def test_example_message_from_brief(doc: dict[str, Any], tmp_path: Path) -> None:
    doc["channels"][2]["validators"][1] = "x"
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as exc:
        load_genesis(path)
    assert str(exc.value) == f"{path}: channels[2].validators[1]: unknown node 'x'"


@pytest.mark.parametrize("what", ["missing", "directory", "not-utf8"])
def test_unreadable_genesis(what: str, tmp_path: Path, run_cli: Any) -> None:
    path = tmp_path / "genesis.json"
    if what == "directory":
        path.mkdir()
    elif what == "not-utf8":
        path.write_bytes(b'{"network": "\xff"}')
    with pytest.raises(ConfigError) as exc:
        load_genesis(path)
    assert "\n" not in str(exc.value) and str(exc.value).startswith(str(path))
    code, _, stderr = run_cli("genesis", "--check", str(path))
    assert code == 1 and stderr.count("\n") == 1 and "Traceback" not in stderr


def test_write_genesis_to_missing_directory(local_dir: Path, tmp_path: Path) -> None:
    g = load_genesis(local_dir / "genesis.json")
    with pytest.raises(ConfigError, match="cannot write"):
        write_genesis(tmp_path / "nope" / "genesis.json", g)


def test_document_built_in_code_with_float_is_refused(doc: dict[str, Any]) -> None:
    doc["channels"][1]["params"]["ratio"] = 0.5
    with pytest.raises(ConfigError) as exc:
        genesis_from_document(doc, "mem")
    assert exc.value.field == "channels[1].params.ratio"
