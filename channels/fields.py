"""Strict payload readers: every field typed and bounded, unknown fields refused.

:class:`PayloadReader` wraps a payload map; each accessor raises
:class:`~ledger.errors.SchemaError` naming the field, and :meth:`PayloadReader.done`
refuses any field that was not read, so a payload has exactly its schema's fields.
"""

from __future__ import annotations

import re
from typing import Any, Final

from ledger.errors import SchemaError
from ledger.schema import as_map, get_bytes, get_int, get_list, get_str, is_name

#: Business identifiers chosen by senders (loan ids, report ids, case ids…).
_REF_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}")
#: Evidence codes (format owned by the evidence-code codec; here: printable, no spaces;
#: the check symbol may be one of Crockford's ``* ~ $ =``).
_CODE_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-*~$=]{0,63}")
MAX_AMOUNT_CENTS: Final = 10**15  # ten trillion yuan: far above any single figure
MAX_TEXT: Final = 2000


def is_ref(v: str) -> bool:
    return _REF_RE.fullmatch(v) is not None


class PayloadReader:
    """Typed access to a payload (or nested) map, tracking which fields were read."""

    def __init__(self, raw: Any, what: str) -> None:
        self.m = as_map(raw, what)
        self.what = what
        self._seen: set[str] = set()

    def _field(self, key: str) -> None:
        self._seen.add(key)

    def has(self, key: str) -> bool:
        return key in self.m

    def integer(self, key: str, *, lo: int = 0, hi: int = 2**63 - 1) -> int:
        self._field(key)
        return get_int(self.m, key, lo=lo, hi=hi)

    def amount(self, key: str, *, lo: int = 0) -> int:
        return self.integer(key, lo=lo, hi=MAX_AMOUNT_CENTS)

    def flag(self, key: str) -> bool:
        self._field(key)
        v = self.m.get(key)
        if not isinstance(v, bool):
            raise SchemaError(f"field {key!r}: expected true or false")
        return v

    def blob(self, key: str, size: int | None = None, *, max_size: int = 4096) -> bytes:
        self._field(key)
        return get_bytes(self.m, key, size, max_size)

    def digest(self, key: str) -> bytes:
        return self.blob(key, 32)

    def text(self, key: str, *, max_len: int = MAX_TEXT, min_len: int = 0) -> str:
        self._field(key)
        v = get_str(self.m, key, max_len=max_len)
        if len(v) < min_len:
            raise SchemaError(f"field {key!r}: must not be empty")
        if any(ord(c) < 0x20 and c not in "\n\t" for c in v):
            raise SchemaError(f"field {key!r}: control characters are not allowed")
        return v

    def name(self, key: str) -> str:
        """An org id / identifier ([a-z0-9-_.], 1–64, starting alphanumeric)."""
        self._field(key)
        return get_str(self.m, key, max_len=64, name=True)

    def ref(self, key: str) -> str:
        """A sender-chosen id: 1–64 of [A-Za-z0-9._:-], starting alphanumeric."""
        self._field(key)
        v = get_str(self.m, key, max_len=64)
        if not is_ref(v):
            raise SchemaError(
                f"field {key!r}: {v!r} is not a valid id (1-64 of A-Z a-z 0-9 . _ : -)"
            )
        return v

    def code(self, key: str) -> str:
        self._field(key)
        v = get_str(self.m, key, max_len=64)
        if _CODE_RE.fullmatch(v) is None:
            raise SchemaError(f"field {key!r}: {v!r} is not a valid evidence code")
        return v

    def enum(self, key: str, allowed: frozenset[str] | tuple[str, ...]) -> str:
        self._field(key)
        v = get_str(self.m, key, max_len=64)
        if v not in allowed:
            raise SchemaError(f"field {key!r}: {v!r} is not one of {sorted(allowed)}")
        return v

    def items(self, key: str, *, min_len: int = 0, max_len: int) -> list[Any]:
        self._field(key)
        v = get_list(self.m, key, max_len=max_len)
        if len(v) < min_len:
            raise SchemaError(f"field {key!r}: needs at least {min_len} item(s)")
        return v

    def submap(self, key: str) -> dict[str, Any]:
        self._field(key)
        return as_map(self.m.get(key), f"field {key!r}")

    def optional(self, key: str) -> bool:
        """Mark ``key`` as allowed; True if present (then read it with an accessor)."""
        self._field(key)
        return key in self.m

    def done(self) -> None:
        extra = set(self.m) - self._seen
        if extra:
            raise SchemaError(f"{self.what}: unknown field(s) {sorted(extra)}")


def str_map(raw: Any, what: str, *, max_items: int = 32, max_value: int = 512) -> dict[str, str]:
    """A small map of identifier → text (publication metadata)."""
    m = as_map(raw, what)
    if len(m) > max_items:
        raise SchemaError(f"{what}: more than {max_items} entries")
    for k, v in m.items():
        if not is_name(k):
            raise SchemaError(f"{what}: key {k!r} is not a valid identifier")
        if not isinstance(v, str) or len(v) > max_value:
            raise SchemaError(f"{what}: value of {k!r} must be text of at most {max_value} chars")
    return dict(m)
