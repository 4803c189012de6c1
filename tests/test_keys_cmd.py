"""``wulian keygen`` and ``wulian genesis`` through ``node.cli.main``."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

import node.cli as cli
from ledger.genesis import load_genesis
from ledger.keyfile import load_key_file


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    # Only this helper's command module: the others may not exist yet.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("node.commands.keys_cmd",))

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _one_line_error(code: int, out: str, err: str) -> str:
    assert code == 1
    assert out == ""
    assert err.startswith("wulian: error: ") and err.count("\n") == 1
    assert "Traceback" not in err
    return err


def test_keygen_writes_0600_and_prints_public_key(run: Any, tmp_path: Path) -> None:
    key = tmp_path / "lender.key"
    code, out, err = run("keygen", "--out", str(key), "--org", "lender-1")
    assert code == 0 and err == ""
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    kf = load_key_file(key)
    assert out == kf.public_key.hex() + "\n"
    assert kf.owner == "lender-1"


def test_keygen_refuses_to_overwrite(run: Any, tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    run("keygen", "--out", str(key), "--org", "a")
    before = key.read_bytes()
    err = _one_line_error(*run("keygen", "--out", str(key), "--org", "a"))
    assert str(key) in err and "exists" in err
    assert key.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--out", "{tmp}/missing/k.key", "--org", "a"], "does not exist"),
        (["--out", "{tmp}/k.key", "--org", "Not An Id"], "--org"),
    ],
)
def test_keygen_bad_input(run: Any, tmp_path: Path, args: list[str], fragment: str) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    err = _one_line_error(*run("keygen", *argv))
    assert fragment in err
    assert not (tmp_path / "k.key").exists()


def test_genesis_create_prints_hash_and_nodes(run: Any, tmp_path: Path) -> None:
    out_dir = tmp_path / "net"
    code, out, err = run("genesis", "--out", str(out_dir), "--base-port", "7101")
    assert code == 0 and err == ""
    g = load_genesis(out_dir / "genesis.json")
    assert g.hash.hex() in out
    for n in g.nodes:
        assert f"{n.node_id}" in out and n.address in out
    assert "http://127.0.0.1:7105" in out
    assert out.startswith("wrote ")
    for key in (out_dir / "keys").iterdir():
        assert stat.S_IMODE(key.stat().st_mode) == 0o600

    # Re-running with the same settings reuses the network.
    code, out2, _ = run("genesis", "--out", str(out_dir), "--base-port", "7101")
    assert code == 0 and out2.startswith("reused existing ")
    assert load_genesis(out_dir / "genesis.json").hash == g.hash
    # Different settings: one line, exit 1, nothing changed.
    err = _one_line_error(*run("genesis", "--out", str(out_dir)))
    assert "7101" in err
    assert load_genesis(out_dir / "genesis.json").hash == g.hash


def test_genesis_check(run: Any, tmp_path: Path) -> None:
    run("genesis", "--out", str(tmp_path), "--network", "city-net", "--host", "10.1.2.3")
    path = tmp_path / "genesis.json"
    g = load_genesis(path)
    assert g.network == "city-net"
    assert all(n.address.startswith("http://10.1.2.3:") for n in g.nodes)
    code, out, err = run("genesis", "--check", str(path))
    assert code == 0 and err == ""
    assert g.hash.hex() in out and "city-net" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["genesis", "--check", "{tmp}/genesis.json", "--base-port", "7001"],
        ["genesis", "--out", "{tmp}/n", "--base-port", "70000"],
        ["genesis", "--out", "{tmp}/n", "--network", "Bad Name"],
        ["genesis", "--out", "{tmp}/n", "--host", "a/b"],
        ["genesis", "--out", "{tmp}/file.txt"],
    ],
)
def test_genesis_bad_input(run: Any, tmp_path: Path, argv: list[str]) -> None:
    (tmp_path / "file.txt").write_text("not a directory")
    (tmp_path / "genesis.json").write_text("{}")
    _one_line_error(*run(*[a.replace("{tmp}", str(tmp_path)) for a in argv]))
    assert not (tmp_path / "n").exists()


def test_genesis_needs_out_or_check(run: Any) -> None:
    with pytest.raises(SystemExit) as exc:
        run("genesis")
    assert exc.value.code == 2
