"""Decode transaction payloads into rows a person can read (for the backend adapters).

:func:`flatten_fields` turns a payload map into ``(path, text, kind)`` rows: nested
maps and lists become dotted paths (``events[0].amount_cents``), bytes become hex,
``*_ms`` integers are also shown as times and ``*_cents`` as yuan amounts. Output is
bounded (``max_fields`` rows, ``max_chars`` per value) so a huge payload cannot make a
huge page.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

from node.explorer.port import FieldView

MAX_FIELDS: Final = 400
MAX_CHARS: Final = 600
#: Epoch milliseconds between 2001 and 2286: what a ``*_ms`` field plausibly holds.
_MS_RANGE: Final = (1_000_000_000_000, 9_999_999_999_999)
CHINA_TZ: Final = timezone(timedelta(hours=8), "UTC+08:00")


def format_ms(ms: int | None, tz: timezone = CHINA_TZ) -> str:
    """``2024-03-01 09:30:00.123 UTC+08:00`` (``""`` for None)."""
    if ms is None:
        return ""
    dt = datetime.fromtimestamp(ms / 1000, UTC).astimezone(tz)
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d} " + (dt.tzname() or "")


def format_cents(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    c = abs(cents)
    return f"{sign}¥{c // 100:,}.{c % 100:02d}"


def _leaf_text(key: str, value: Any) -> tuple[str, str]:
    if value is None:
        return "null", "null"
    if isinstance(value, bool):
        return ("true" if value else "false"), "bool"
    if isinstance(value, int):
        if key.endswith("_ms") and _MS_RANGE[0] <= value <= _MS_RANGE[1]:
            return f"{value} ({format_ms(value)})", "time"
        if key.endswith("_cents"):
            return f"{value} ({format_cents(value)})", "amount"
        return str(value), "int"
    if isinstance(value, bytes):
        return value.hex(), "bytes"
    if isinstance(value, str):
        return value, "str"
    return repr(value), type(value).__name__


def flatten_fields(
    payload: Mapping[str, Any], *, max_fields: int = MAX_FIELDS, max_chars: int = MAX_CHARS
) -> tuple[FieldView, ...]:
    """The payload as rows (depth-first, map keys sorted); the last row says how many
    were left out if the limit was reached."""
    out: list[FieldView] = []
    total = 0

    def walk(path: str, key: str, value: Any) -> None:
        nonlocal total
        if isinstance(value, Mapping) and value:
            for k in sorted(value, key=str):
                walk(f"{path}.{k}" if path else str(k), str(k), value[k])
            return
        if isinstance(value, list | tuple) and value:
            for i, item in enumerate(value):
                walk(f"{path}[{i}]", key, item)
            return
        total += 1
        if len(out) >= max_fields:
            return
        if isinstance(value, Mapping):
            text, kind = "{}", "map"
        elif isinstance(value, list | tuple):
            text, kind = "[]", "list"
        else:
            text, kind = _leaf_text(key, value)
        if len(text) > max_chars:
            text = text[:max_chars] + f"… ({len(text)} chars)"
        out.append(FieldView(path or "(payload)", text, kind))

    walk("", "", dict(payload))
    if total > len(out):
        out.append(FieldView("…", f"{total - len(out)} more field(s) not shown", "note"))
    return tuple(out)
