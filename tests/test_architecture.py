"""Architecture checks that import-linter cannot express."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Modules of ledger/ allowed to need plyvel: the store and what walks it.
STORE_MODULES = {"store", "ledger_verify"}


def test_pure_ledger_imports_without_plyvel() -> None:
    """Every ledger module except the store imports with plyvel made unimportable."""
    pure = sorted(
        p.stem
        for p in (ROOT / "ledger").glob("*.py")
        if p.stem != "__init__" and p.stem not in STORE_MODULES
    )
    assert "encoding" in pure and "certificate" in pure
    script = (
        "import sys\n"
        "sys.modules['plyvel'] = None\n"  # any `import plyvel` now raises ImportError
        f"for name in {pure!r}:\n"
        "    __import__('ledger.' + name)\n"
        "assert 'ledger.store' not in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_consensus_contract_catches_a_forbidden_import(tmp_path: Path) -> None:
    """The sans-I/O contract is live: a consensus module importing `time` breaks it."""
    probe = ROOT / "consensus" / "_architecture_probe.py"
    probe.write_text("import time  # noqa: F401\n")
    try:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        probe.unlink()
    assert done.returncode != 0
    assert "consensus is not allowed to import time" in done.stdout
