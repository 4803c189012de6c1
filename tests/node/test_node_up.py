"""`wulian up`: five node processes from one command; Ctrl-C/SIGTERM stops them all;
the next run resumes from the same data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from node.localnet import REPO_ROOT
from tests.node.netfixture import free_base_port

pytestmark = pytest.mark.network


def run_up(data: Path, port: int) -> tuple[subprocess.Popen[str], list[str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "up", "--data", str(data), "--base-port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("API docs"):
            return proc, lines
    proc.kill()
    raise AssertionError("wulian up did not print its table:\n" + "\n".join(lines))


def stop_up(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


def test_up_starts_prints_stops_and_resumes(tmp_path: Path) -> None:
    port = free_base_port()
    data = tmp_path / "network"
    proc, lines = run_up(data, port)
    try:
        assert "created network" in lines[0]
        urls = [f"http://127.0.0.1:{port + i}" for i in range(5)]
        table = "\n".join(lines)
        for url in urls:
            assert url in table
            assert httpx.get(url + "/healthz", timeout=5).status_code == 200
        assert (data / "nodes" / "bureau-node" / "node.toml").is_file()
        # a newcomer gets explorer accounts to try (passwords in a 0600 file)
        assert str(data / "keys" / "explorer-accounts.txt") in table
        assert (data / "keys" / "explorer-accounts.txt").stat().st_mode & 0o777 == 0o600
    finally:
        code, out = stop_up(proc)
    assert code == 0, out
    assert "network stopped" in out
    for i in range(5):  # every node process is gone: its port refuses connections
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port + i}/healthz", timeout=1)
    genesis_before = (data / "genesis.json").read_bytes()
    proc, lines = run_up(data, port)
    try:
        assert "reusing network" in lines[0]
        assert httpx.get(f"http://127.0.0.1:{port}/v1/info", timeout=5).status_code == 200
    finally:
        code, _ = stop_up(proc)
    assert code == 0
    assert (data / "genesis.json").read_bytes() == genesis_before
