"""A node started as a child exits when its starter dies, even by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The "starter": spawns a child that arms exit_with_parent() and then would sleep for a
# minute, prints the child's pid, and waits to be killed.
STARTER = """
import os, subprocess, sys
env = dict(os.environ, WULIAN_EXIT_WITH_PARENT=str(os.getpid()))
child = subprocess.Popen(
    [sys.executable, "-c",
     "import time; from node.commands.node_cmd import exit_with_parent; "
     "exit_with_parent(); time.sleep(60)"],
    env=env,
)
print(child.pid, flush=True)
child.wait()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_child_exits_when_its_starter_is_killed() -> None:
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert starter.stdout is not None
    child_pid = int(starter.stdout.readline())
    time.sleep(1.0)  # let the child arm its death signal
    assert _alive(child_pid)
    os.kill(starter.pid, signal.SIGKILL)
    starter.wait()
    deadline = time.monotonic() + 10
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert not _alive(child_pid), "the child outlived its killed starter"
    finally:
        if _alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)


def test_without_the_variable_nothing_is_armed() -> None:
    env = {k: v for k, v in os.environ.items() if k != "WULIAN_EXIT_WITH_PARENT"}
    done = subprocess.run(
        [sys.executable, "-c",
         "from node.commands.node_cmd import exit_with_parent; exit_with_parent(); print('ran')"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ran"
