"""Canonical encoding: the one byte form of everything that is hashed or signed.

The encoding is MessagePack restricted to a canonical subset:

* values are ``None``, ``bool``, ``int`` (MessagePack's range, −2⁶³ … 2⁶⁴−1), ``str`` (UTF-8),
  ``bytes``, lists, and maps whose keys are ``str``;
* floats are refused (amounts are integer cents, rates integer basis points);
* map keys are sorted by their UTF-8 bytes, with no duplicates;
* every integer and length uses MessagePack's shortest form (msgpack-python does this).

:func:`decode` accepts only bytes that :func:`encode` would produce for the decoded
value, so one value has exactly one encoding and a hash names one value.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import msgpack

from ledger.errors import EncodingError

Value: TypeAlias = (
    bool | int | str | bytes | list["Value"] | tuple["Value", ...] | dict[str, "Value"] | None
)

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
#: Upper bound on any single encoded object we decode (a block of many transactions).
MAX_ENCODED_SIZE = 64 * 1024 * 1024
#: Nesting deeper than this is refused (hostile input guard).
MAX_DEPTH = 32


def _check_utf8(s: str) -> None:
    # A str holding a lone surrogate (e.g. from json.loads('"\\ud800"')) has no UTF-8 form.
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EncodingError(f"string has a lone surrogate at index {exc.start}") from None


def _normalise(value: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise EncodingError(f"value nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        _check_utf8(value)
        return value
    if value is None or isinstance(value, bool | bytes):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise EncodingError(f"integer {value} outside the 64-bit range")
        return value
    if isinstance(value, float):
        raise EncodingError("floats are not allowed in canonical values")
    if isinstance(value, list | tuple):
        return [_normalise(v, depth + 1) for v in value]
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str):
                raise EncodingError(f"map key {k!r} is not a string")
            _check_utf8(k)
        return {
            k: _normalise(value[k], depth + 1)
            for k in sorted(value, key=lambda s: s.encode("utf-8"))
        }
    raise EncodingError(f"type {type(value).__name__} cannot be encoded")


def encode(value: Value | Any) -> bytes:
    """Return the canonical bytes of ``value``.

    Raises :class:`EncodingError` for floats, non-string map keys, out-of-range
    integers, unknown types or excessive nesting.
    """
    return bytes(msgpack.packb(_normalise(value, 0), use_bin_type=True))


def _check_decoded(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise EncodingError(f"value nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, float):
        raise EncodingError("floats are not allowed in canonical values")
    if isinstance(value, list):
        for v in value:
            _check_decoded(v, depth + 1)
    elif isinstance(value, dict):
        for v in value.values():
            _check_decoded(v, depth + 1)


def decode(data: bytes, *, max_size: int = MAX_ENCODED_SIZE) -> Any:
    """Decode canonical bytes.

    Raises :class:`EncodingError` if ``data`` is larger than ``max_size``, is not
    MessagePack, has trailing bytes, uses extension types or floats, or is not in
    canonical form (unsorted keys, non-shortest integers, str/bin mix-ups).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EncodingError("expected bytes")
    if len(data) > max_size:
        raise EncodingError(f"encoded value is {len(data)} bytes, limit {max_size}")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_refuse_ext,
        )
    except EncodingError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types
        raise EncodingError(f"not valid MessagePack: {exc}") from None
    _check_decoded(value, 0)
    if encode(value) != bytes(data):
        raise EncodingError("not in canonical form")
    return value


def _refuse_ext(code: int, data: bytes) -> Any:
    raise EncodingError(f"MessagePack extension type {code} is not allowed")
