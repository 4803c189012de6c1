"""The explorer's Jinja2 environment: templates from ``node/explorer/templates``,
autoescaped, with the filters the pages use."""

from __future__ import annotations

from datetime import timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from node.explorer.decode import CHINA_TZ, format_cents, format_ms

PACKAGE_DIR: Final = Path(__file__).resolve().parent
TEMPLATE_DIR: Final = PACKAGE_DIR / "templates"
STATIC_DIR: Final = PACKAGE_DIR / "static"


def short_hex(value: bytes | str | None, n: int = 10) -> str:
    """First ``n`` hex digits and an ellipsis (full value goes in a title attribute)."""
    if value is None:
        return ""
    h = value.hex() if isinstance(value, bytes) else str(value)
    return h if len(h) <= n + 2 else h[:n] + "…"


def to_hex(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.hex() if isinstance(value, bytes) else str(value)


@lru_cache(maxsize=8)
def make_environment(tz: timezone = CHINA_TZ) -> Environment:
    """The (shared, cached) environment for pages shown in time zone ``tz``."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=select_autoescape(["html", "xml"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )

    def ms(value: int | None) -> str:
        return format_ms(value, tz)

    def duration_ms(value: int | None) -> str:
        if value is None:
            return ""
        v = abs(value)
        if v < 1000:
            return f"{value} ms"
        if v < 120_000:
            return f"{value / 1000:.1f} s"
        return f"{value / 60_000:.1f} min"

    filters: dict[str, Any] = {
        "ms": ms,
        "duration": duration_ms,
        "short": short_hex,
        "hex": to_hex,
        "cents": format_cents,
    }
    env.filters.update(filters)
    return env
