"""node.malloc_tuning: a node gives large freed blocks back (glibc's mallopt)."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: What both probes below start with (:func:`_probe` runs it before each, in a fresh
#: interpreter: the settings must come before any thread): mallinfo2, and
#: ``tune_malloc()`` when the first argument is "tune".
_PROBE_SETUP = r"""
import ctypes, json, sys
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
done = {}
if sys.argv[1] == "tune":
    from node.malloc_tuning import tune_malloc
    done = tune_malloc()
"""

#: Free a 4 MiB buffer, allocate another, and report how much of it is its own mapping.
_PROBE = r"""
first = bytearray(4 << 20)
del first  # glibc's dynamic threshold rises to 4 MiB here, unless it was fixed
before = libc.mallinfo2().hblkhd
second = bytearray(4 << 20)
print(json.dumps({"set": done, "mapped": libc.mallinfo2().hblkhd - before}))
"""

#: Free a 512 KiB buffer (below the mmap threshold: it comes from the heap) and report
#: how much the heap shrank.
_TRIM_PROBE = r"""
buf = bytearray(512 << 10)
before = libc.mallinfo2().arena
del buf
print(json.dumps({"set": done, "shrunk": before - libc.mallinfo2().arena}))
"""


def _probe(mode: str, script: str = _PROBE, **env: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE_SETUP + script, mode],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def _has_mallinfo2() -> bool:
    try:
        ctypes.CDLL(None).mallinfo2  # noqa: B018
        ctypes.CDLL(None).gnu_get_libc_version  # noqa: B018
    except (OSError, AttributeError):
        return False
    return True


pytestmark = pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc ≥ 2.33")


def test_a_freed_large_buffer_does_not_move_the_next_one_onto_the_heap() -> None:
    tuned = _probe("tune")
    assert tuned["set"] == {
        "MALLOC_ARENA_MAX": 2,
        "MALLOC_MMAP_THRESHOLD_": 1 << 20,
        "MALLOC_TRIM_THRESHOLD_": 2 << 20,
    }
    assert isinstance(tuned["mapped"], int) and tuned["mapped"] >= 4 << 20
    # glibc's default: the second buffer comes from the heap, which keeps it after free.
    default = _probe("none")
    assert isinstance(default["mapped"], int) and default["mapped"] < 4 << 20


def test_freeing_below_the_trim_threshold_keeps_the_heap_for_the_next_allocation() -> None:
    # With the mmap threshold fixed, glibc no longer raises the trim threshold with it:
    # at its 128 KiB default each such free shrinks the heap (a system call) and the
    # next allocation grows it back (msgpack's packb allocates 256 KiB per call).
    tuned = _probe("tune", _TRIM_PROBE)
    assert tuned["shrunk"] == 0
    untrimmed = _probe("tune", _TRIM_PROBE, MALLOC_TRIM_THRESHOLD_=str(128 << 10))
    assert untrimmed["set"] == {"MALLOC_ARENA_MAX": 2, "MALLOC_MMAP_THRESHOLD_": 1 << 20}
    assert isinstance(untrimmed["shrunk"], int) and untrimmed["shrunk"] >= 256 << 10


def test_the_operators_environment_wins() -> None:
    out = _probe(
        "tune",
        MALLOC_ARENA_MAX="4",
        MALLOC_MMAP_THRESHOLD_="262144",
        MALLOC_TRIM_THRESHOLD_="131072",
    )
    assert out["set"] == {}


def test_the_node_command_tunes_before_the_node_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    import node.server
    from node.commands import node_cmd

    calls: list[str] = []
    monkeypatch.setattr(node_cmd, "tune_malloc", lambda: calls.append("tune") or {})
    monkeypatch.setattr(node_cmd, "load_node_config", lambda path: calls.append("config"))
    monkeypatch.setattr(node.server, "run_node", lambda config: calls.append("node") or 0)
    assert node_cmd.run(argparse.Namespace(config="node.toml", repair=False)) == 0
    assert calls == ["tune", "config", "node"]
