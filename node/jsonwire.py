"""The canonical JSON mapping of wire values (for clients that do not speak msgpack).

Wire values (:mod:`ledger.encoding`) are None, bool, int, str, bytes, lists and maps
with string keys. JSON has every one of those except bytes, so the mapping is the
identity except::

    bytes  b"\\x01\\xab"   <->   {"$hex": "01ab"}     (lowercase hex on output; either
                                                      case accepted on input)

A JSON object whose only key is ``"$hex"`` is therefore always bytes (wire maps never
use that key). Floats are refused (amounts are integer cents). Numbers must fit the
64-bit range of the canonical encoding.

``wire_to_json(decode(encode(v))) == wire_to_json(v)`` and
``json_to_wire(wire_to_json(v)) == v`` for every wire value ``v``.
"""

from __future__ import annotations

from typing import Any

from ledger.encoding import INT_MAX, INT_MIN, MAX_DEPTH
from ledger.errors import EncodingError

HEX_KEY = "$hex"


def wire_to_json(value: Any, _depth: int = 0) -> Any:
    """Map a wire value to a JSON-serialisable value (bytes → ``{"$hex": …}``)."""
    if _depth > MAX_DEPTH + 2:
        raise EncodingError("value nested too deeply")
    if isinstance(value, bytes | bytearray | memoryview):
        return {HEX_KEY: bytes(value).hex()}
    if isinstance(value, list | tuple):
        return [wire_to_json(v, _depth + 1) for v in value]
    if isinstance(value, dict):
        return {k: wire_to_json(v, _depth + 1) for k, v in value.items()}
    return value


def json_to_wire(value: Any, _depth: int = 0) -> Any:
    """Map parsed JSON back to a wire value. Raises :class:`EncodingError` for floats,
    out-of-range integers, malformed ``{"$hex": …}`` objects or excessive nesting."""
    if _depth > MAX_DEPTH + 2:
        raise EncodingError("value nested too deeply")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise EncodingError(f"integer {value} outside the 64-bit range")
        return value
    if isinstance(value, float):
        raise EncodingError("floats are not allowed; use integers")
    if isinstance(value, list):
        return [json_to_wire(v, _depth + 1) for v in value]
    if isinstance(value, dict):
        if HEX_KEY in value:
            text = value[HEX_KEY]
            if len(value) != 1 or not isinstance(text, str):
                raise EncodingError('a {"$hex": …} object must have exactly one string member')
            try:
                return bytes.fromhex(text)
            except ValueError:
                raise EncodingError(f"{HEX_KEY}: not hexadecimal") from None
        return {str(k): json_to_wire(v, _depth + 1) for k, v in value.items()}
    raise EncodingError(f"unsupported JSON value of type {type(value).__name__}")
