"""Small typed field readers for decoding canonical maps into frozen dataclasses.

Each raises :class:`SchemaError` naming the field, so a malformed wire object is
reported as "field X: expected bytes of length 32" rather than a ``KeyError``.
"""

from __future__ import annotations

from typing import Any

from ledger.errors import SchemaError

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def as_map(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SchemaError(f"{what}: expected a map")
    return value


def is_decimal(text: str) -> bool:
    """True if ``text`` is a non-empty run of ASCII digits 0–9. ``str.isdigit`` also
    takes other digits ("³", "٣"), some of which ``int`` refuses (an error where a
    clear 4xx was due) and some of which it reads."""
    return text.isascii() and text.isdigit()


def decimal_value(text: str, max_digits: int = 18) -> int | None:
    """``text`` as an int if it is a run of at most ``max_digits`` ASCII digits, else
    None (Python's ``int`` refuses strings of over 4,300 digits with ValueError)."""
    return int(text) if len(text) <= max_digits and is_decimal(text) else None


def get_int(m: dict[str, Any], key: str, *, lo: int = 0, hi: int = 2**63 - 1) -> int:
    v = m.get(key)
    if not isinstance(v, int) or isinstance(v, bool):
        raise SchemaError(f"field {key!r}: expected an integer")
    if not lo <= v <= hi:
        raise SchemaError(f"field {key!r}: {v} outside [{lo}, {hi}]")
    return v


def get_bytes(
    m: dict[str, Any], key: str, size: int | None = None, max_size: int = 1 << 20
) -> bytes:
    v = m.get(key)
    if not isinstance(v, bytes):
        raise SchemaError(f"field {key!r}: expected bytes")
    if size is not None and len(v) != size:
        raise SchemaError(f"field {key!r}: expected {size} bytes, got {len(v)}")
    if len(v) > max_size:
        raise SchemaError(f"field {key!r}: longer than {max_size} bytes")
    return v


def get_str(m: dict[str, Any], key: str, *, max_len: int = 256, name: bool = False) -> str:
    v = m.get(key)
    if not isinstance(v, str):
        raise SchemaError(f"field {key!r}: expected a string")
    if len(v) > max_len:
        raise SchemaError(f"field {key!r}: longer than {max_len} characters")
    if name and not is_name(v):
        raise SchemaError(f"field {key!r}: {v!r} is not a valid identifier")
    return v


def get_list(m: dict[str, Any], key: str, *, max_len: int = 1_000_000) -> list[Any]:
    v = m.get(key)
    if not isinstance(v, list):
        raise SchemaError(f"field {key!r}: expected a list")
    if len(v) > max_len:
        raise SchemaError(f"field {key!r}: more than {max_len} items")
    return v


def get_str_bytes_pairs(
    m: dict[str, Any], key: str, *, max_len: int, error: str, max_bytes: int | None = None
) -> list[tuple[str, bytes]]:
    """The list at ``key`` of ``[str, bytes]`` pairs (a sender or channel and its
    signature or payload), as tuples. Raises :class:`SchemaError` as :func:`get_list`
    for the list itself, and ``SchemaError(error)`` for an item of another shape or
    whose bytes are longer than ``max_bytes``."""
    out: list[tuple[str, bytes]] = []
    for item in get_list(m, key, max_len=max_len):
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not isinstance(item[1], bytes)
            or (max_bytes is not None and len(item[1]) > max_bytes)
        ):
            raise SchemaError(error)
        out.append((item[0], item[1]))
    return out


def check_keys(m: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    extra = set(m) - allowed
    if extra:
        raise SchemaError(f"{what}: unknown field(s) {sorted(extra)}")


def is_name(v: str) -> bool:
    """Identifiers (org, node, channel, tx type): 1–64 chars of [a-z0-9-_.], starting alnum."""
    return 0 < len(v) <= 64 and v[0].isalnum() and v.isascii() and set(v) <= _NAME_CHARS
