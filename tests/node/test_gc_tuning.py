"""node.gc_tuning: the collector's settings, in a fresh interpreter each (they are
process-wide), and where the node applies them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import gc, json, sys
from node.gc_tuning import tune_gc
before = gc.get_threshold()
done = tune_gc()
class Node:
    pass
a, b = Node(), Node()
a.other, b.other = b, a  # a cycle made after tuning, then dropped
del a, b
found = gc.collect()
print(json.dumps({"done": done, "before": before, "after": gc.get_threshold(),
                  "frozen": gc.get_freeze_count(), "collected": found}))
"""


def _probe(**env: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    out = _probe(WULIAN_GC_TUNING="1")
    assert out["done"] is True
    assert out["frozen"] > 1000, "the objects built before tuning are in the permanent generation"
    assert out["after"] == [10_000, out["before"][1], out["before"][2]]
    assert out["collected"] >= 2, "cycles made afterwards are still collected"


def test_it_can_be_switched_off_for_comparison_runs() -> None:
    out = _probe(WULIAN_GC_TUNING="0")
    assert out["done"] is False
    assert out["frozen"] == 0
    assert out["after"] == out["before"]


def test_the_node_tunes_after_building_its_runtime_and_before_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import node.server as server_mod

    calls: list[str] = []

    async def serve() -> None:
        calls.append("serve")

    runtime = SimpleNamespace(
        genesis=SimpleNamespace(hash=bytes(32)), store=SimpleNamespace(closed=True)
    )
    server = SimpleNamespace(serve=serve, started=True)

    def build(config: Any) -> tuple[Any, Any]:
        calls.append("build")
        return runtime, server

    monkeypatch.setattr(server_mod, "setup_logging", lambda *a: None)
    monkeypatch.setattr(server_mod, "build_server", build)
    monkeypatch.setattr(server_mod, "tune_gc", lambda: calls.append("tune") or True)
    monkeypatch.setattr(server_mod.signal, "signal", lambda *a: None)
    config = SimpleNamespace(
        node_id="n", log_format="text", log_level="info", tls=None, host="h", port=1
    )
    assert server_mod.run_node(config) == 0  # type: ignore[arg-type]
    assert calls == ["build", "tune", "serve"]
