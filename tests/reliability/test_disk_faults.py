"""Disk faults on one node of five real node processes.

* **Corrupted last write**: bytes of the newest LevelDB file of a killed node are
  flipped. The node refuses to start (exit 1, one ``wulian: error:`` line naming the
  damage and ``--repair``, no traceback) and so does ``wulian ledger verify``;
  ``wulian node --config F --repair`` moves the broken store aside (keys and config
  untouched), catches up from its peers (certificates checked) and agrees with them.
* **Torn last write**: the newest log file of a killed node loses its tail (a write
  that never completed). The store keeps the last whole batch: the ledger verifies,
  the node starts normally and catches up.
* **Full disk**: the node's ledger lives on a small tmpfs that fills up under load
  (root only; skipped otherwise). The node stops writing (``/readyz`` names the failed
  channel), never leaves a partial block (the ledger verifies), the other four keep
  committing, and once space is freed the restarted node catches up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import plyvel
import pytest

from ledger.errors import ConfigError, CorruptLedgerError
from ledger.store import BlockStore, DamagedStoreError, StoreError
from node.localnet import REPO_ROOT
from tests.helpers_chain import Chain, commit_chain, make_chain
from tests.node.netfixture import TestNetwork, add_lenders, free_base_port, start_network
from tests.reliability.conftest import (
    STARTUP_S,
    SdkLoad,
    assert_agreement,
    ledger_verify_cli,
    node_dir,
    wait_converged,
    wait_until,
)

pytestmark = [pytest.mark.network, pytest.mark.xdist_group("reliability-disk")]

CH = "supervision"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNetwork]:
    network = start_network(
        tmp_path_factory.mktemp("disk"), consensus={"base_timeout_ms": 2000}, timeout_s=STARTUP_S
    )
    try:
        yield network
    finally:
        network.stop()


def commit_some(net: TestNetwork, n: int, tag: str) -> None:
    """``n`` transactions committed on every running node."""
    c = net.client(0, "lender1")
    txs = [c.tx(CH, "loan_event", {"k": f"{tag}-{j}", "v": j}) for j in range(n)]
    r = c.submit_batch(CH, txs, wait_ms=30_000)
    assert r.status_code == 200, r.text
    assert all(x["status"] == "committed" for x in r.json()["results"]), r.text


def genesis_file(net: TestNetwork) -> Path:
    return net.data_dir / "genesis.json"


def newest(ledger: Path, *suffixes: str) -> Path:
    """The newest non-empty LevelDB file of these kinds (``.log``, ``.ldb``)."""
    files = [f for f in ledger.iterdir() if f.suffix in suffixes and f.stat().st_size > 0]
    assert files, f"no non-empty {suffixes} file in {ledger}"
    return max(files, key=lambda p: int(p.name.split(".")[0]))


def flip_bytes(path: Path, offset: int, count: int = 64) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        data = fh.read(count)
        fh.seek(offset)
        fh.write(bytes(b ^ 0xFF for b in data))
        fh.flush()
        os.fsync(fh.fileno())


def run_node_once(net: TestNetwork, i: int, timeout_s: float = 90.0) -> tuple[int, str]:
    """Start node ``i`` in the foreground as the operator would; (exit code, output)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    res = subprocess.run(
        [sys.executable, "-m", "node.commands.node_cmd", "--config", str(net.nodes[i].config_path)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        cwd=REPO_ROOT,
        check=False,
    )
    return res.returncode, res.stderr + res.stdout


def error_lines(output: str) -> list[str]:
    """Output lines that are not the node's JSON log lines."""
    return [ln for ln in output.splitlines() if ln.strip() and not ln.startswith("{")]


def start_with_repair(net: TestNetwork, i: int) -> None:
    command = net._command
    net._command = lambda node: [*command(node), "--repair"]  # type: ignore[method-assign]
    try:
        net.start([i])
    finally:
        net._command = command  # type: ignore[method-assign]


def test_corrupted_last_write_is_refused_then_repaired(net: TestNetwork) -> None:
    victim = 4
    commit_some(net, 20, "before-corruption")
    net.kill(victim)
    ledger = node_dir(net, victim) / "ledger"
    log = newest(ledger, ".log")
    size = log.stat().st_size
    flip_bytes(log, max(0, size - 200))  # inside the last record(s) written
    key_file = net.data_dir / "keys" / f"{net.nodes[victim].node_id}.key"
    key_before, config_before = key_file.read_bytes(), net.nodes[victim].config_path.read_text()

    code, output = run_node_once(net, victim)
    assert code == 1, output
    assert "Traceback" not in output, output
    lines = error_lines(output)
    assert len(lines) == 1, output
    assert lines[0].startswith("wulian: error: ledger database"), lines[0]
    assert "damaged" in lines[0] and "--repair" in lines[0], lines[0]

    [res] = ledger_verify_cli([node_dir(net, victim)], genesis_file(net))
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr

    commit_some(net, 10, "while-broken")  # the other four go on
    start_with_repair(net, victim)
    net.wait_healthy(indexes=[victim], timeout_s=STARTUP_S)
    wait_converged(net, timeout_s=120)
    assert_agreement(net)
    moved = list(node_dir(net, victim).glob("ledger.broken-*"))
    assert len(moved) == 1 and (moved[0] / "CURRENT").exists(), moved
    assert key_file.read_bytes() == key_before
    assert net.nodes[victim].config_path.read_text() == config_before
    assert "damaged ledger moved to" in net.log_tail(victim, 400)
    commit_some(net, 5, "after-repair")
    net.wait_heights(CH, max(net.heights(CH)), timeout_s=60)


def test_torn_last_write_keeps_the_last_whole_batch(net: TestNetwork) -> None:
    victim = 3
    commit_some(net, 20, "before-torn")
    h_before = net.client(victim, "bureau").height(CH)
    net.kill(victim)
    ledger = node_dir(net, victim) / "ledger"
    log = newest(ledger, ".log")
    with open(log, "r+b") as fh:
        fh.truncate(max(0, log.stat().st_size - 100))
    [res] = ledger_verify_cli([node_dir(net, victim)], genesis_file(net))
    assert res.returncode == 0, res.stderr
    commit_some(net, 10, "while-down")
    net.start([victim])
    net.wait_healthy(indexes=[victim], timeout_s=STARTUP_S)
    wait_converged(net, timeout_s=120)
    assert_agreement(net)
    assert net.client(victim, "bureau").height(CH) > h_before


def _mount_tmpfs(target: Path, size: str) -> str | None:
    """Mount a tmpfs at ``target``; the reason it cannot be done, or None."""
    if os.geteuid() != 0:
        return "full-disk test needs root to mount a small tmpfs (run as root or in CI)"
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        return f"cannot mount a tmpfs here: {res.stderr.strip()}"
    return None


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_full_disk_stops_writing_cleanly_and_recovers(net: TestNetwork) -> None:
    victim = 2
    commit_some(net, 10, "before-full")
    net.terminate(victim)
    home = node_dir(net, victim)
    ledger, saved = home / "ledger", home / "ledger.before-tmpfs"
    ledger.rename(saved)
    ledger.mkdir()
    why = _mount_tmpfs(ledger, "16m")
    if why is not None:
        ledger.rmdir()
        saved.rename(ledger)
        net.start([victim])
        net.wait_healthy(indexes=[victim], timeout_s=STARTUP_S)
        pytest.skip(why)
    load: SdkLoad | None = None
    try:
        for f in saved.iterdir():
            shutil.copy2(f, ledger / f.name)
        net.start([victim])
        net.wait_healthy(indexes=[victim], timeout_s=STARTUP_S)
        wait_converged(net, timeout_s=90)
        # leave ~64 KiB: a few dozen blocks, then LevelDB gets ENOSPC
        filler = ledger / "filler.bin"
        with open(filler, "wb") as fh:
            fh.truncate(0)
            chunk = b"\0" * (1 << 20)
            while free_bytes(ledger) > (1 << 20) + (64 << 10):
                fh.write(chunk)
                fh.flush()
            fh.write(b"\0" * max(0, free_bytes(ledger) - (64 << 10)))
        load = SdkLoad(net, lenders=("lender1",), rate_tx_s=100.0).start()
        c = net.client(victim, "bureau")

        def victim_failed() -> bool:
            r = c.get("/readyz")
            return r.status_code == 503 and "failed" in r.json()["channels"][CH]

        wait_until(victim_failed, 120, "the node with a full disk reports a failed channel")
        failed = c.get("/readyz").json()["channels"][CH]["failed"]
        assert "ledger write failed" in failed and "No space left" in failed, failed
        stuck = c.height(CH)
        # the four others keep committing without it
        others = [i for i in range(5) if i != victim]
        net.wait_heights(CH, stuck + 5, timeout_s=90, indexes=others)
        assert c.height(CH) == stuck, "a node with a failed store must not move on"
        load.stop()
        load = None
        net.terminate(victim)
        filler.unlink()  # the operator frees space
        [res] = ledger_verify_cli([home], genesis_file(net))
        assert res.returncode == 0, res.stderr  # no partial block
        net.start([victim])
        net.wait_healthy(indexes=[victim], timeout_s=STARTUP_S)
        wait_converged(net, timeout_s=120)
        assert_agreement(net)
        print(f"full disk: stopped at height {stuck}; /readyz: {failed}")
    finally:
        if load is not None:
            load.stop()
        net.terminate(victim)
        # back to the real disk with what the node wrote on the tmpfs
        shutil.rmtree(saved)
        shutil.copytree(ledger, saved, ignore=shutil.ignore_patterns("filler.bin"))
        subprocess.run(["umount", str(ledger)], check=False)
        ledger.rmdir()
        saved.rename(ledger)
        net.start([victim])
        net.wait_healthy(indexes=[victim], timeout_s=STARTUP_S)


# ---------------------------------------------------------------- no processes needed


def _stored_chain(path: Path, blocks: int = 12) -> Chain:
    chain = make_chain(blocks, 3)
    with BlockStore.open(path, chain.genesis_hash, create=True) as store:
        commit_chain(store, chain.blocks)
    return chain


def test_store_refuses_a_damaged_log_record(tmp_path: Path) -> None:
    """LevelDB's default skips a record whose checksum fails (dropping committed
    blocks); the store runs with paranoid checks and refuses it, in one line."""
    chain = _stored_chain(tmp_path / "db")
    log = newest(tmp_path / "db", ".log")
    flip_bytes(log, log.stat().st_size // 2)
    with pytest.raises(DamagedStoreError) as info:
        BlockStore.open(tmp_path / "db", chain.genesis_hash, create=False)
    assert isinstance(info.value, CorruptLedgerError) and isinstance(info.value, StoreError)
    assert "checksum mismatch" in str(info.value) and "\n" not in str(info.value)


def test_store_refuses_a_damaged_table_block(tmp_path: Path) -> None:
    chain = _stored_chain(tmp_path / "db")
    BlockStore.open(tmp_path / "db", chain.genesis_hash, create=False).close()  # log → .ldb
    table = newest(tmp_path / "db", ".ldb")
    flip_bytes(table, table.stat().st_size // 3)
    with pytest.raises(DamagedStoreError, match="damaged"):
        BlockStore.open(tmp_path / "db", chain.genesis_hash, create=False)


def test_store_drops_only_a_torn_last_record(tmp_path: Path) -> None:
    chain = _stored_chain(tmp_path / "db")
    log = newest(tmp_path / "db", ".log")
    with open(log, "r+b") as fh:
        fh.truncate(log.stat().st_size - 50)
    with BlockStore.open(tmp_path / "db", chain.genesis_hash, create=False) as store:
        assert store.height("supervision") == len(chain.blocks) - 1  # the last batch
        store.check_recent("supervision", depth=len(chain.blocks))


def test_repair_moves_only_a_damaged_ledger(tmp_path: Path) -> None:
    from node.commands.node_cmd import repair_ledger
    from node.config import load_node_config

    prepared = TestNetwork.prepare(
        tmp_path, base_port=free_base_port(), rules="test", genesis_hook=add_lenders
    )
    config = load_node_config(prepared.nodes[0].config_path)
    assert repair_ledger(config) is None  # no ledger yet: nothing to do
    BlockStore.open(config.ledger_dir, prepared.genesis.hash, create=True).close()
    assert repair_ledger(config) is None  # sound: untouched
    with plyvel.DB(str(config.ledger_dir)) as db:  # derived data damaged: rebuilt in place
        db.put(b"g/ch/supervision", b"")
        db.put(b"c/supervision/ds/" + (1).to_bytes(8, "big"), b"bad")  # not 4 bytes
    assert repair_ledger(config) is None and config.ledger_dir.is_dir()
    with plyvel.DB(str(config.ledger_dir)) as db:
        assert db.get(b"c/supervision/ds/" + (1).to_bytes(8, "big")) is None
    with (
        BlockStore.open(config.ledger_dir, prepared.genesis.hash, create=False),
        pytest.raises(StoreError, match="locked"),
    ):
        repair_ledger(config)  # a running node's store is never moved
    assert config.ledger_dir.is_dir()
    damaged = newest(config.ledger_dir, ".log", ".ldb")
    flip_bytes(damaged, damaged.stat().st_size // 3)
    moved = repair_ledger(config)
    assert moved is not None and moved.name.startswith("ledger.broken-")
    assert (moved / "CURRENT").exists() and not config.ledger_dir.exists()
    # a store of another network is a configuration mistake, not damage: refused as is
    other = make_chain(1, 1)
    BlockStore.open(config.ledger_dir, other.genesis_hash, create=True).close()
    with pytest.raises(ConfigError, match="genesis"):
        repair_ledger(config)
    assert config.ledger_dir.is_dir()


def test_repair_opens_a_sound_ledger_with_the_nodes_delta_window(tmp_path: Path) -> None:
    """Opening prunes the state deltas outside the window it is given: ``--repair``
    opens with the node's ``[limits]``, so it keeps what the node keeps (here a
    2-height window prunes a 6-block ledger's deltas to two; the defaults keep all)."""
    from dataclasses import replace

    from node.commands.node_cmd import repair_ledger
    from node.config import load_node_config
    from tests.helpers_chain import extend_chain, make_validators
    from tests.test_store_state_deltas import commit_of

    prepared = TestNetwork.prepare(
        tmp_path, base_port=free_base_port(), rules="test", genesis_hook=add_lenders
    )
    config = load_node_config(prepared.nodes[0].config_path)
    config = replace(config, limits=replace(config.limits, state_delta_heights=2))
    vset, signers = make_validators()
    chain = extend_chain(Chain(prepared.genesis.hash, vset, signers, []), 6, 1)
    with BlockStore.open(config.ledger_dir, prepared.genesis.hash, create=True) as store:
        store.commit_blocks("supervision", [commit_of(b, c) for b, c in chain.blocks])
    assert repair_ledger(config) is None  # sound: not moved
    with BlockStore.open(config.ledger_dir, prepared.genesis.hash, create=False) as store:
        kept = [h for h in range(1, 7) if store.state_delta_at("supervision", h)]
    assert kept == [5, 6]
