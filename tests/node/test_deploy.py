"""deploy/: compose.yaml against the genesis it names, and the Dockerfile's command
lines run outside a container (no container engine on this machine).

* compose: the network is prepared exactly as the file's header says (``wulian up
  --prepare-only --tls``); every service's config (``/data`` = the mounted
  ``../network``) exists, names a distinct genesis node, listens on its genesis port,
  reads its key, genesis and TLS files from inside the volume, and the health check's
  ``WULIAN_CONFIG`` is the same file; every genesis node has a service.
* Dockerfile: the ENTRYPOINT + CMD and HEALTHCHECK command lines are parsed from the
  file, ``/data`` is substituted by a prepared node directory and ``python`` by this
  interpreter; the node starts, the health check exits 0; the node is stopped and the
  health check exits non-zero.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from ledger.genesis import load_genesis
from node.commands.node_cmd import EXIT_WITH_PARENT_ENV
from node.config import load_node_config
from node.localnet import REPO_ROOT
from tests.node.netfixture import free_base_port

DEPLOY = REPO_ROOT / "deploy"


# ---------------------------------------------------------------------------- parsing


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of a Dockerfile: comments dropped, ``\\``
    continuations joined."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def exec_form(args: str) -> list[str]:
    """A JSON-array (exec form) argument list; shell form is split like a shell would."""
    if args.startswith("["):
        value = json.loads(args)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
        return value
    return shlex.split(args)


def dockerfile() -> dict[str, Any]:
    ins = dockerfile_instructions((DEPLOY / "Dockerfile").read_text("utf-8"))
    last = {k: v for k, v in ins}  # the last of each kind wins, as in Docker
    hc = last["HEALTHCHECK"]
    m = re.match(r"^((?:--[a-z-]+=\S+\s+)*)CMD\s+(.*)$", hc)
    assert m is not None, hc
    env: dict[str, str] = {}
    for kind, args in ins:
        if kind == "ENV":
            for item in shlex.split(args):
                k, _, v = item.partition("=")
                env[k] = v
    return {
        "entrypoint": exec_form(last["ENTRYPOINT"]),
        "cmd": exec_form(last["CMD"]),
        "healthcheck": exec_form(m.group(2)),
        "healthcheck_options": m.group(1).split(),
        "env": env,
        "user": last.get("USER"),
        "volume": json.loads(last["VOLUME"]),
    }


def compose() -> dict[str, Any]:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text("utf-8"))
    assert isinstance(doc, dict)
    return doc


def prepare_command() -> list[str]:
    """The ``wulian up … --prepare-only`` line of compose.yaml's header."""
    for line in (DEPLOY / "compose.yaml").read_text("utf-8").splitlines():
        m = re.match(r"^#\s+(wulian up .*--prepare-only.*?)(\s+#.*)?$", line)
        if m:
            return shlex.split(m.group(1))
    raise AssertionError("compose.yaml does not say how to prepare the network")


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


# ---------------------------------------------------------------------------- compose


def test_compose_matches_the_genesis_it_names(tmp_path: Path) -> None:
    cmd = prepare_command()
    assert cmd[:2] == ["wulian", "up"] and "--tls" in cmd, cmd
    # the header runs from the repository root; `../network` (from deploy/) is that dir
    r = run_cli(cmd[1:], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = compose()
    services: dict[str, Any] = doc["services"]
    data_dir = tmp_path / "network"
    genesis = load_genesis(data_dir / "genesis.json")
    assert len(services) == len(genesis.nodes) == 5

    def in_volume(container_path: str, mounts: dict[str, Path]) -> Path:
        for target, source in mounts.items():
            if container_path == target or container_path.startswith(target + "/"):
                return source / os.path.relpath(container_path, target)
        raise AssertionError(f"{container_path} is not inside a mounted volume")

    seen: set[str] = set()
    for name, svc in services.items():
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile", name
        assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        assert svc.get("network_mode") == "host", name  # the genesis addresses are loopback
        mounts: dict[str, Path] = {}
        for vol in svc["volumes"]:
            source, _, target = vol.partition(":")
            assert source == "../network", vol  # what the header's prepare step writes
            mounts[target.split(":")[0]] = data_dir
        assert list(mounts) == dockerfile()["volume"], name
        command = svc["command"]
        assert command[0] == "--config" and len(command) == 2, command
        assert svc["environment"]["WULIAN_CONFIG"] == command[1], name
        cfg_path = in_volume(command[1], mounts)
        cfg = load_node_config(cfg_path)
        assert cfg.node_id not in seen, f"two services run {cfg.node_id}"
        seen.add(cfg.node_id)
        info = genesis.node(cfg.node_id)
        # every file the node reads is inside the volume and exists
        volume = data_dir.resolve()
        for f in (cfg.key_file, cfg.genesis_file):
            assert f.resolve().is_relative_to(volume), f
            assert f.exists(), f
        assert cfg.genesis_file.resolve() == (data_dir / "genesis.json").resolve()
        assert stat.S_IMODE(cfg.key_file.stat().st_mode) == 0o600
        # listens on the port of its genesis address, serves what that address says
        addr = urlsplit(info.address)
        assert cfg.port == addr.port, (name, cfg.port, info.address)
        assert addr.scheme == "https" and cfg.tls is not None, name
        for f in (cfg.tls.cert_file, cfg.tls.key_file, cfg.tls.ca_file):
            assert f.resolve().is_relative_to(volume) and f.exists(), f
        assert stat.S_IMODE(cfg.tls.key_file.stat().st_mode) == 0o600
        from node.tls import check_tls_files

        check_tls_files(cfg.tls, cfg.node_id)
    assert seen == {n.node_id for n in genesis.nodes}


# ---------------------------------------------------------------------------- Dockerfile


def test_dockerfile_runs_as_non_root_with_a_data_volume() -> None:
    d = dockerfile()
    assert d["user"] == "wulian"
    assert d["volume"] == ["/data"]
    assert d["entrypoint"][:3] == ["python", "-m", "node.commands.node_cmd"]
    assert d["cmd"] == ["--config", d["env"]["WULIAN_CONFIG"]]
    assert any(o.startswith("--timeout=") for o in d["healthcheck_options"])


def _substitute(argv: list[str], data: Path) -> list[str]:
    out = [sys.executable if a == "python" else a for a in argv]
    return [a.replace("/data", str(data)) for a in out]


@pytest.mark.network
def test_entrypoint_and_healthcheck_outside_a_container(tmp_path: Path) -> None:
    from node.localnet import LocalNetwork

    net = LocalNetwork.prepare(
        tmp_path / "network", base_port=free_base_port(), tls=True, demo_lender=False
    )
    node = net.nodes[0]
    data = node.config_path.parent  # plays the container's /data (holds node.toml)
    d = dockerfile()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), EXIT_WITH_PARENT_ENV: str(os.getpid())}
    env.update({k: v.replace("/data", str(data)) for k, v in d["env"].items()})
    health = _substitute(d["healthcheck"], data)

    def healthcheck() -> subprocess.CompletedProcess[str]:
        return subprocess.run(health, env=env, cwd=data, capture_output=True, text=True, timeout=60)

    r = healthcheck()
    assert r.returncode != 0 and "unhealthy" in r.stderr  # nothing serves yet
    argv = _substitute(d["entrypoint"] + d["cmd"], data)
    log = open(tmp_path / "node.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(argv, env=env, cwd=data, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            r = healthcheck()
            if r.returncode == 0:
                break
            assert proc.poll() is None, (tmp_path / "node.log").read_text()[-3000:]
            assert time.monotonic() < deadline, r.stderr
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)  # `docker stop`
        assert proc.wait(30) == 0
        r = healthcheck()
        assert r.returncode != 0 and "unhealthy" in r.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
