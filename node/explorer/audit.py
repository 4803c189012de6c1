"""The explorer's audit log: one JSON object per line, appended and fsynced.

``<data_dir>/explorer/audit.jsonl``; each line is written with a single ``write`` on a
file opened ``O_APPEND`` and fsynced before the request that caused it is answered::

    {"seq": 12, "t": 1700000000000, "user": "clerk.li", "org": "court-clerks",
     "role": "clerk", "ip": "127.0.0.1", "action": "verify",
     "query": {...}, "result": {...}, "prev": "<sha256 hex of the previous line>"}

``prev`` chains the lines (the first line's ``prev`` is 64 zeros), so removing or
editing a line in the middle is visible: :func:`check_audit_log` recomputes the chain.
Actions: ``sign_in``, ``sign_in_failed``, ``sign_in_locked``, ``sign_out``,
``evidence_lookup`` (by code, tx id or loan id), ``evidence_view``, ``verify``,
``report``, ``report_pdf``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from ledger.errors import LedgerError

ZERO_PREV: Final = "0" * 64
#: The most of an existing log read back to find the last line (lines are small).
_TAIL_BYTES: Final = 1 << 20


class AuditError(LedgerError):
    """The audit log cannot be written (the action it would record is refused)."""

    code = "audit_unavailable"


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


class AuditLog:
    """An append-only, fsynced, hash-chained JSON-lines file. Thread-safe."""

    def __init__(self, path: str | os.PathLike[str], clock_ms: Callable[[], int]) -> None:
        self.path = Path(path)
        self._clock = clock_ms
        self._lock = threading.Lock()
        self._seq: int | None = None
        self._prev = ZERO_PREV

    def _recover(self) -> None:
        """Read the last complete line to continue ``seq`` and the hash chain."""
        self._seq, self._prev = 0, ZERO_PREV
        try:
            with open(self.path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - _TAIL_BYTES))
                tail = fh.read()
        except FileNotFoundError:
            return
        lines = [ln for ln in tail.split(b"\n") if ln.strip()]
        if not lines:
            return
        last = lines[-1]
        try:
            doc = json.loads(last)
            self._seq = int(doc["seq"])
        except (ValueError, KeyError, TypeError):
            # A torn last line (crash mid-write): continue the chain from it anyway.
            self._seq = len(lines)
        self._prev = _line_hash(last)

    def append(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Append ``entry`` (plus ``seq``, ``t``, ``prev``) and fsync. Returns the
        written object. Raises :class:`AuditError` if it cannot be written durably."""
        with self._lock:
            try:
                if self._seq is None or not self.path.exists():
                    # First write, or the file was moved away (rotated): start or
                    # continue the chain from what is on disk now.
                    self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                    self._recover()
                assert self._seq is not None
                doc = {"seq": self._seq + 1, "t": self._clock(), **entry, "prev": self._prev}
                line = (
                    json.dumps(doc, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
                    + "\n"
                ).encode("utf-8")
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                try:
                    view = memoryview(line)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                self._seq = None  # re-read the file next time
                raise AuditError(
                    f"cannot write the audit log {self.path}: {exc.strerror}"
                ) from None
            self._seq = doc["seq"]
            self._prev = _line_hash(line)
            return doc


def check_audit_log(path: str | os.PathLike[str]) -> tuple[int, str | None]:
    """Recompute the hash chain: ``(lines, None)`` if intact, else ``(line number,
    problem)`` of the first broken line."""
    prev = ZERO_PREV
    n = 0
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            try:
                doc = json.loads(raw)
            except ValueError:
                return n, "not JSON"
            if doc.get("prev") != prev:
                return n, "hash chain broken (a line before it was changed or removed)"
            if doc.get("seq") != n:
                return n, f"sequence number {doc.get('seq')} where {n} was expected"
            prev = _line_hash(raw)
    return n, None
