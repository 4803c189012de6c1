"""The lender CLI's offline parts: `wulian verify` (exit 0 only when every check
passes, one line naming the failing check otherwise), the record file, --network
resolution and the progress bar. (The network commands: test_sdk_network.py.)"""

from __future__ import annotations

import io
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from clients import Client, Record, record_document
from clients._config import settings_from_network_dir
from clients.cli import Progress, main
from ledger.errors import ConfigError
from tests.clients.fakenet import FakeNetwork

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def receipt_files(fake: FakeNetwork, client: Client, tmp_path: Path) -> tuple[Path, Path, Path]:
    """An anchored record's receipt and record files, and the genesis file."""
    recs = [Record.new({"loan": "L-7", "amount_cents": 1234})]
    payload = {"k": "x", "records": [{"c": recs[0].commitment}]}
    p = client.prepare(client.build("supervision", "loan_event", payload, records=recs))
    client.submit(p)
    (code,) = fake.anchor(1)
    receipt = tmp_path / "receipt.json"
    receipt.write_text(json.dumps(fake.receipts[code]))
    record = tmp_path / "record.json"
    record.write_text(json.dumps(record_document(recs[0], tx_id=p.tx_id, index=0)))
    return receipt, record, fake.data_dir / "genesis.json"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_passes_for_a_good_receipt_and_record(
    receipt_files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    receipt, record, genesis = receipt_files
    code, out, err = run(capsys, "verify", "--receipt", str(receipt), "--data", str(record),
                         "--genesis", str(genesis))  # fmt: skip
    assert code == 0, err
    assert out.startswith("receipt and record verified: evidence code WL-")
    code, out, _ = run(capsys, "verify", "--receipt", str(receipt), "--genesis", str(genesis),
                       "--json")  # fmt: skip
    doc = json.loads(out)
    assert code == 0 and doc["ok"] and [c["status"] for c in doc["checks"]][-1] == "skip"


def test_verify_names_the_failing_check(
    receipt_files: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    receipt, record, genesis = receipt_files
    doc = json.loads(record.read_text())
    rec = Record(bytes.fromhex(doc["data"]), bytes.fromhex(doc["salt"]))
    tampered = tmp_path / "tampered.json"
    tampered.write_text(
        json.dumps(record_document(Record(rec.data.replace(b"L-7", b"L-8"), rec.salt)))
    )
    code, out, err = run(capsys, "verify", "--receipt", str(receipt), "--data", str(tampered),
                         "--genesis", str(genesis))  # fmt: skip
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [
        "wulian: error: verification failed: commitment: commitment_mismatch "
        "(the record and salt do not hash to the anchored commitment)"
    ]
    bad = json.loads(receipt.read_text())
    proof = bad["record"]["proof"]
    if proof:
        proof[0] = "00" * 32
    else:
        bad["record"]["leaf"]["c"] = "00" * 32
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(bad))
    code, _, err = run(capsys, "verify", "--receipt", str(broken), "--genesis", str(genesis))
    assert code == 1 and "verification failed: record_inclusion: bad_proof" in err
    assert len(err.strip().splitlines()) == 1
    # the raw record bytes with --salt work too
    raw = tmp_path / "record.bin"
    raw.write_bytes(rec.data)
    code, _, err = run(capsys, "verify", "--receipt", str(receipt), "--data", str(raw),
                       "--salt", rec.salt.hex(), "--genesis", str(genesis))  # fmt: skip
    assert code == 0, err
    # another network's genesis: the certificates do not verify
    other = FakeNetwork.create(tmp_path / "other")
    code, _, err = run(capsys, "verify", "--receipt", str(receipt),
                       "--genesis", str(other.data_dir / "genesis.json"))  # fmt: skip
    assert code == 1 and "judicial_certificate: bad_certificate" in err
    code, _, err = run(capsys, "verify", "--receipt", str(tmp_path / "nope.json"),
                       "--genesis", str(genesis))  # fmt: skip
    assert code == 1 and err.startswith("wulian: error: ") and "nope.json" in err


def test_verify_as_a_process_and_the_example(receipt_files: tuple[Path, Path, Path]) -> None:
    receipt, record, genesis = receipt_files
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "clients.cli", "verify", "--receipt", str(receipt),
         "--data", str(record), "--genesis", str(genesis)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_verify_example_script(
    receipt_files: tuple[Path, Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receipt, record, genesis = receipt_files
    script = ROOT / "examples" / "verify_receipt.py"
    monkeypatch.setattr(sys, "argv", [str(script), str(genesis), str(receipt), str(record)])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert stop.value.code == 0 and "data verified = True" in out
    assert out.count(" pass ") == 9


def test_network_dir_resolution(fake: FakeNetwork, tmp_path: Path) -> None:
    d = fake.data_dir
    with pytest.raises(ConfigError, match="several lenders"):
        settings_from_network_dir(d)
    s = settings_from_network_dir(d, org="lender2")
    assert s.org == "lender2" and s.store_dir == d / "lenders" / "lender2" / "records"
    assert s.nodes == tuple(n.address for n in fake.genesis.nodes)
    assert s.pseudonym is None
    (d / "keys" / "lender2.key").unlink()
    s = settings_from_network_dir(d)  # the only lender with a key
    assert s.org == "lender1"
    empty = tmp_path / "empty"
    (empty / "keys").mkdir(parents=True)
    (empty / "genesis.json").write_bytes((d / "genesis.json").read_bytes())
    with pytest.raises(ConfigError, match="demo-lender"):
        settings_from_network_dir(empty)


def test_submit_needs_a_network_or_keys(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "e.json"
    f.write_text("{}")
    code, _, err = run(capsys, "submit", str(f))
    assert code == 1 and "--network" in err


def test_progress_bar() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    bar = Progress(4, "transactions", tty)
    for i in range(1, 5):
        bar(i, 4)
    assert "\r[" in tty.getvalue() and "4/4 transactions" in tty.getvalue()
    plain = io.StringIO()
    bar = Progress(100, "transactions", plain)
    for i in range(1, 101):
        bar(i, 100)
    lines = plain.getvalue().splitlines()
    assert (
        lines[-1] == "progress: 100/100 transactions (100%)" and len(lines) == 11
    )  # one line per decile, 0% to 100%


def test_written_files_are_private_and_never_written_through_a_symlink(tmp_path: Path) -> None:
    """`wulian evidence --record-out` writes the record's bytes and salt: mode 0600
    whatever the umask, and a symlink planted at the old fixed temp name (or at the
    target) is never followed."""
    from clients.cli import _write_file

    victim = tmp_path / "victim"
    victim.write_text("keep")
    out = tmp_path / "record.json"
    (tmp_path / "record.json.tmp").symlink_to(victim)
    old = os.umask(0o022)
    try:
        _write_file(str(out), b'{"salt": "00"}\n')
        assert out.read_bytes() == b'{"salt": "00"}\n'
        assert out.stat().st_mode & 0o777 == 0o600
        assert victim.read_text() == "keep"
        out.unlink()
        out.symlink_to(victim)  # a symlink at the target is replaced, not followed
        _write_file(str(out), b"new\n")
        assert not out.is_symlink() and out.read_bytes() == b"new\n"
        assert victim.read_text() == "keep" and out.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "record.json",
        "record.json.tmp",
        "victim",
    ]
    with pytest.raises(ConfigError, match="cannot write"):
        _write_file(str(tmp_path / "missing" / "r.json"), b"x")


def _cli_conn(fake: FakeNetwork, store: Path, node: str = "http://127.0.0.1:9") -> list[str]:
    from tests.clients.fakenet import LENDER

    return ["--genesis", str(fake.data_dir / "genesis.json"),
            "--key", str(fake.data_dir / "keys" / f"{LENDER}.key"),
            "--store", str(store), "--node", node]  # fmt: skip


def test_a_damaged_store_is_one_line_and_exit_1(
    fake: FakeNetwork, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A torn index page hides every unfinished transaction from `unfinished()`: the
    CLI and `pending()` refuse the store (quick_check) instead of resubmitting none."""
    import sqlite3

    from clients import RecordStoreError
    from tests.clients.fakenet import make_client

    with make_client(fake, tmp_path) as c:
        ids = [
            c.prepare(c.build("supervision", "loan_event", {"k": f"g{i}", "pad": "x" * 300})).tx_id
            for i in range(20)
        ]
    db = sqlite3.connect(tmp_path / "store" / "records.sqlite3")
    (page,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name='txs_by_state'").fetchone()
    db.close()
    with open(tmp_path / "store" / "records.sqlite3", "r+b") as fh:
        fh.seek((page - 1) * 4096 + 3)
        fh.write(b"\x00\x00")
    for argv in (["recover"], ["evidence", ids[3].hex(), "--out", str(tmp_path / "r.json")]):
        code, out, err = run(capsys, *argv, *_cli_conn(fake, tmp_path / "store"))
        assert code == 1 and out == ""
        assert err.count("\n") == 1 and err.startswith("wulian: error: ")
        assert "records.sqlite3: the record store is damaged" in err
    with make_client(fake, tmp_path) as c, pytest.raises(RecordStoreError, match="damaged"):
        c.pending()


def test_a_malformed_node_url_is_a_config_error(
    fake: FakeNetwork, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "status", "aa" * 32, *_cli_conn(fake, tmp_path / "s", "http://127.0.0.1:80a0")
    )
    assert code == 1 and err.count("\n") == 1 and "is not a valid URL" in err
    from clients._config import check_node_url

    for bad in ("http://127.0.0.1:80a0", "http://[::1", "http://", "http://x:99999",
                "http://x/?q=1", "ftp://x", "http://a b"):  # fmt: skip
        with pytest.raises(ConfigError):
            check_node_url(bad)
    for good in ("http://127.0.0.1:7101", "https://node1.test", "http://[::1]:80"):
        check_node_url(good)
