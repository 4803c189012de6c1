"""``wulian explorer …``: accounts for the explorer and the audit-log check."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest

import node.cli
from ledger.genesis import (
    genesis_document,
    genesis_from_document,
    load_genesis,
    make_local_genesis,
    node_key_path,
    write_genesis,
)
from node.config import render_node_config
from node.explorer.accounts import AccountFile, accounts_path, audit_path, verify_password
from node.explorer.audit import AuditLog


@pytest.fixture
def config(tmp_path: Path) -> Path:
    assert "node.commands.explorer_cmd" in node.cli.COMMAND_MODULES
    net = tmp_path / "net"
    make_local_genesis(net, created_ms=1)
    doc = genesis_document(load_genesis(net / "genesis.json"))
    for org_id, role, pk in (("court-clerks", "clerk", "11"), ("acme", "lender", "22")):
        key = {"public_key": pk * 32, "valid_from": 0, "revoked_at": None}
        doc["orgs"].append({"id": org_id, "name": org_id, "role": role, "keys": [key]})
    write_genesis(net / "genesis.json", genesis_from_document(doc))
    path = tmp_path / "node.toml"
    path.write_text(
        render_node_config(
            node_id="court-node",
            key_file=str(node_key_path(net, "court")),
            genesis_file=str(net / "genesis.json"),
            data_dir=str(tmp_path / "data"),
            host="127.0.0.1",
            port=9,
        )
    )
    return path


def run(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *argv: str,
    stdin: str = "",
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = node.cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_add_list_passwd_disable_remove(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ("explorer", "add-user", "--config", str(config))
    code, out, _ = run(
        monkeypatch, capsys, *base, "--user", "clerk.li", "--org", "court-clerks",
        "--name", "李明", "--password-stdin", stdin="a long passphrase\n",
    )  # fmt: skip
    assert code == 0 and "clerk.li" in out
    path = accounts_path(config.parent / "data")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    account = AccountFile(path).load()["clerk.li"]
    assert (account.org_id, account.display_name) == ("court-clerks", "李明")
    assert verify_password("a long passphrase", account.password_hash)
    assert "a long passphrase" not in path.read_text("utf-8")

    code, _, err = run(
        monkeypatch, capsys, *base, "--user", "clerk.li", "--org", "court-clerks",
        "--password-stdin", stdin="another passphrase\n",
    )  # fmt: skip
    assert code == 1 and err.startswith("wulian: error:") and "exists" in err
    assert err.count("\n") == 1

    cfg = ("--config", str(config), "--user", "clerk.li")
    code, _, _ = run(
        monkeypatch,
        capsys,
        "explorer",
        "passwd",
        *cfg,
        "--password-stdin",
        stdin="new passphrase!\n",
    )
    assert code == 0
    assert verify_password("new passphrase!", AccountFile(path).load()["clerk.li"].password_hash)
    assert run(monkeypatch, capsys, "explorer", "disable-user", *cfg)[0] == 0
    assert AccountFile(path).load()["clerk.li"].disabled
    code, out, _ = run(monkeypatch, capsys, "explorer", "list-users", "--config", str(config))
    assert out.split("\t")[:3] == ["clerk.li", "court-clerks", "disabled"]
    assert run(monkeypatch, capsys, "explorer", "enable-user", *cfg)[0] == 0
    assert not AccountFile(path).load()["clerk.li"].disabled
    assert run(monkeypatch, capsys, "explorer", "remove-user", *cfg)[0] == 0
    assert AccountFile(path).load() == {}
    code, _, err = run(monkeypatch, capsys, "explorer", "remove-user", *cfg)
    assert code == 1 and "no user" in err


@pytest.mark.parametrize(
    ("user", "org", "password", "flags", "problem"),
    [
        ("Bad User", "court-clerks", "a long passphrase", (), "username"),
        ("x", "court-clerks", "short", (), "at least 10"),
        ("x", "no-such-org", "a long passphrase", (), "no org 'no-such-org'"),
        ("x", "acme", "a long passphrase", (), "reads no channel"),
    ],
)
def test_add_user_refuses_bad_input(
    config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    user: str,
    org: str,
    password: str,
    flags: tuple[str, ...],
    problem: str,
) -> None:
    code, _, err = run(
        monkeypatch, capsys, "explorer", "add-user", "--config", str(config), "--user", user,
        "--org", org, "--password-stdin", *flags, stdin=password + "\n",
    )  # fmt: skip
    assert code == 1 and problem in err and "Traceback" not in err
    assert not accounts_path(config.parent / "data").exists()


def test_org_registered_by_governance_needs_the_flag(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run(
        monkeypatch, capsys, "explorer", "add-user", "--config", str(config), "--user", "a",
        "--org", "later-org", "--allow-unlisted-org", "--password-stdin",
        stdin="a long passphrase\n",
    )  # fmt: skip
    assert code == 0


def test_password_prompt_needs_a_terminal(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        monkeypatch, capsys, "explorer", "add-user", "--config", str(config), "--user", "a",
        "--org", "court-clerks",
    )  # fmt: skip
    assert code == 1 and "--password-stdin" in err


def test_check_audit(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("explorer", "check-audit", "--config", str(config))
    assert "no audit log" in run(monkeypatch, capsys, *args)[1]
    path = audit_path(config.parent / "data")
    log = AuditLog(path, lambda: 5)
    for i in range(3):
        log.append({"action": "verify", "i": i})
    code, out, _ = run(monkeypatch, capsys, *args)
    assert code == 0 and "3 entries" in out
    lines = path.read_text("utf-8").splitlines()
    doc = json.loads(lines[0])
    doc["user"] = "someone else"
    path.write_text("\n".join([json.dumps(doc), *lines[1:]]) + "\n", "utf-8")
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 1 and "line 2" in err


def test_concurrent_account_edits_lose_nothing(tmp_path: Path) -> None:
    """Two `wulian explorer` commands at once: the file lock serialises their
    read-modify-write (without it, the last writer would drop the other's account)."""
    import threading
    import time

    from node.explorer.accounts import hash_password
    from node.explorer.port import Account

    store = AccountFile(accounts_path(tmp_path))
    pw = hash_password("long enough password", n=2**8)
    start = threading.Barrier(8)

    def add(i: int) -> None:
        start.wait()
        with AccountFile(store.path).editing() as accounts:
            time.sleep(0.01)  # widen the window between read and write
            accounts[f"user{i}"] = Account(f"user{i}", "court-clerks", pw)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(store.load()) == [f"user{i}" for i in range(8)]
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600

    with pytest.raises(RuntimeError), store.editing() as accounts:
        accounts.clear()
        raise RuntimeError("abandoned edit")
    assert len(store.load()) == 8  # nothing written when the block fails
