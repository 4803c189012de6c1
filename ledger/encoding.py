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

from collections.abc import Iterable, Sequence
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


#: Idle packers for :func:`pack` (``list.pop``/``append`` are atomic: threads share
#: it). A packer keeps its buffer at the largest size it packed: one that packed more
#: than ``_PACKER_BUF`` is dropped, so the idle ones hold at most 8 × 64 KiB.
_PACKERS: list[msgpack.Packer] = []
_MAX_IDLE_PACKERS = 8
_PACKER_BUF = 64 * 1024


def pack(value: Any) -> bytes:
    """``msgpack.packb(value, use_bin_type=True)`` with a reused packer: ``packb``
    builds (and frees) a packer and its 256 KiB buffer on every call — half the cost
    of packing a small map. Not canonical by itself: for values already in canonical
    form, or packed only to be compared. Raises like ``packb``; a packer that raised
    is not reused."""
    try:
        packer = _PACKERS.pop()
    except IndexError:
        # buf_size: both implementations take it (the stubs mypy reads do not say so)
        packer = msgpack.Packer(use_bin_type=True, buf_size=_PACKER_BUF)  # type: ignore[call-arg]
    out: bytes = packer.pack(value)
    if len(out) <= _PACKER_BUF and len(_PACKERS) < _MAX_IDLE_PACKERS:
        _PACKERS.append(packer)
    return out


def _check_utf8(s: str) -> None:
    # A str holding a lone surrogate (e.g. from json.loads('"\\ud800"')) has no UTF-8 form.
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EncodingError(f"string has a lone surrogate at index {exc.start}") from None


def _normalise(value: Any, depth: int) -> Any:
    """``value`` ready for msgpack: itself if it is already canonical, else a copy
    with maps' keys in canonical order.

    Exact built-in types take the fast path (``type(v) is …``: no isinstance chain; ASCII
    strings need no UTF-8 check; code-point order of valid strings *is* their UTF-8 byte
    order, so keys compare and sort as plain ``str``); a container's members are
    checked by :func:`_changed_members`, with no call per scalar. A container whose
    keys are in order and whose members need no change is returned as it is (msgpack
    packs a tuple as it packs a list), so the usual value — a map built in key order —
    is walked once and not copied. Subclasses and everything else go through
    :func:`_normalise_slow`, which has the same rules.
    """
    if depth > MAX_DEPTH:
        raise EncodingError(f"value nested deeper than {MAX_DEPTH} levels")
    t = type(value)
    if t is dict:
        prev = ""
        ordered = True
        for k in value:
            if type(k) is not str:
                return _normalise_slow(value, depth)
            if not k.isascii():
                _check_utf8(k)
            if k < prev:  # keys are distinct; "" is the least of all
                ordered = False
            prev = k
        changed = _changed_members(value.items(), len(value), depth + 1)
        if ordered and changed is None:
            return value
        if changed is None:
            return {k: value[k] for k in sorted(value)}
        return {k: changed.get(k, value[k]) for k in sorted(value)}
    if t is list or t is tuple:
        changed_at = _changed_members(enumerate(value), len(value), depth + 1)
        if changed_at is None:
            return value
        return [changed_at.get(i, v) for i, v in enumerate(value)]
    if t is str:
        if not value.isascii():
            _check_utf8(value)
        return value
    if t is int:
        if not INT_MIN <= value <= INT_MAX:
            raise EncodingError(f"integer {value} outside the 64-bit range")
        return value
    if t is bytes or t is bool or value is None:
        return value
    return _normalise_slow(value, depth)


def _changed_members(items: Iterable[tuple[Any, Any]], n: int, depth: int) -> dict[Any, Any] | None:
    """Check the ``n`` members ``(key or index, value)`` of a container, each at nesting
    ``depth``; returns the normalised copies of those that needed one (None if none
    did). Raises :class:`EncodingError` like :func:`encode`."""
    if n and depth > MAX_DEPTH:
        raise EncodingError(f"value nested deeper than {MAX_DEPTH} levels")
    changed: dict[Any, Any] | None = None
    for k, v in items:
        tv = type(v)
        if tv is str:
            if not v.isascii():
                _check_utf8(v)
        elif tv is int:
            if not INT_MIN <= v <= INT_MAX:
                raise EncodingError(f"integer {v} outside the 64-bit range")
        elif tv is not bytes and tv is not bool and v is not None:
            nv = _normalise(v, depth)
            if nv is not v:
                if changed is None:
                    changed = {}
                changed[k] = nv
    return changed


def _normalise_slow(value: Any, depth: int) -> Any:
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
    return pack(_normalise(value, 0))


def is_canonical(value: Any) -> bool:
    """True if ``value`` is already in canonical form, so that plain
    ``msgpack.packb(value, use_bin_type=True)`` equals :func:`encode` ``(value)``: only
    the exact built-in types ``encode`` takes (lists, not tuples), maps with
    string keys in sorted order, integers in range, strings with a UTF-8 form, nesting
    within :data:`MAX_DEPTH`. A decoded value (or a wire map from a canonical encoder)
    passes; anything ``encode`` would reorder or refuse gives False — then call
    ``encode``, which normalises or raises. Never raises. It is :func:`decode`'s check
    walk, plus the scalar checks the unpacker makes for decoded values; it builds
    nothing (:func:`encode` walks a canonical value the same way and packs it)."""
    try:
        _check_decoded(value, 0, scalars=True)
    except EncodingError:
        return False
    return True


def encode_byte_pairs_and_names(
    pairs: Sequence[tuple[bytes, bytes | None]], names: Sequence[str]
) -> bytes:
    """``encode([[[k, v] for k, v in pairs], list(names)])``, without the normalising
    walk: keys and values that are ``bytes`` (or ``None``) and ASCII ``names`` already
    pack canonically, so they are only type-checked. A block's state digest covers
    thousands of such pairs. Raises :class:`EncodingError` for any other type."""
    for k, v in pairs:
        if type(k) is not bytes or (v is not None and type(v) is not bytes):
            raise EncodingError("state writes must be bytes keys and bytes-or-None values")
    for n in names:
        if type(n) is not str or not n.isascii():
            raise EncodingError("names must be ASCII strings")
    return pack([pairs, names])


def encode_map_of_encoded(fields: dict[str, bytes]) -> bytes:
    """Canonical bytes of a map whose values are given already encoded.

    ``fields[k]`` must be the canonical encoding of the value under ``k`` (e.g. a
    cached :func:`encode` result): the output then equals ``encode`` of the decoded
    map, without normalising those values again. Raises :class:`EncodingError` for a
    key with no UTF-8 form.
    """
    out = [_header(len(fields), 0x80, b"\xde", b"\xdf")]
    for k in sorted(fields):
        if not k.isascii():
            _check_utf8(k)
        out.append(pack(k))
        out.append(fields[k])
    return b"".join(out)


def encode_list_of_encoded(items: list[bytes]) -> bytes:
    """Canonical bytes of a list whose items are given already encoded (see
    :func:`encode_map_of_encoded`)."""
    return _header(len(items), 0x90, b"\xdc", b"\xdd") + b"".join(items)


def _header(n: int, fix: int, b16: bytes, b32: bytes) -> bytes:
    """MessagePack's shortest map/array header for ``n`` entries."""
    if n < 16:
        return bytes((fix | n,))
    if n < 1 << 16:
        return b16 + n.to_bytes(2, "big")
    if n < 1 << 32:
        return b32 + n.to_bytes(4, "big")
    raise EncodingError(f"{n} entries: too many for one map or list")


#: The exact types of decoded scalars the canonical subset allows.
_LEAF_TYPES = frozenset({str, bytes, int, bool, type(None)})


def _check_decoded(value: Any, depth: int, *, scalars: bool = False) -> None:
    """Refuse what :func:`encode` would refuse in an unpacked value — floats, non-string
    map keys, other types (e.g. msgpack's Timestamp, tuples), nesting deeper than
    :data:`MAX_DEPTH` — and maps whose keys are not in canonical order (UTF-8 byte
    order is code-point order). A duplicate key was collapsed by msgpack: the re-pack
    in :func:`decode` catches it. ``scalars``: also check what the unpacker guarantees
    of a decoded value but not of any other — integers in range, strings (and keys)
    with a UTF-8 form (:func:`is_canonical`)."""
    if depth > MAX_DEPTH:
        raise EncodingError(f"value nested deeper than {MAX_DEPTH} levels")
    t = type(value)
    items: Any
    if t is list:
        items = value
    elif t is dict:
        keys = list(value)
        for k in keys:
            if type(k) is not str:
                raise EncodingError(f"map key {k!r} is not a string")
            if scalars and not k.isascii():
                _check_utf8(k)
        if len(keys) > 1 and keys != sorted(keys):
            raise EncodingError("not in canonical form")
        items = value.values()
    elif t in _LEAF_TYPES:
        if scalars:
            _check_scalar(value)
        return
    elif t is float:
        raise EncodingError("floats are not allowed in canonical values")
    else:
        raise EncodingError(f"type {t.__name__} cannot be encoded")
    d = depth + 1
    for v in items:
        if type(v) in _LEAF_TYPES:
            if d > MAX_DEPTH:
                raise EncodingError(f"value nested deeper than {MAX_DEPTH} levels")
            if scalars:
                _check_scalar(v)
        else:
            _check_decoded(v, d, scalars=scalars)


def _check_scalar(v: Any) -> None:
    """Raise unless the decoded-type scalar ``v`` has a canonical encoding."""
    t = type(v)
    if t is str:
        if not v.isascii():
            _check_utf8(v)
    elif t is int and not INT_MIN <= v <= INT_MAX:
        raise EncodingError(f"integer {v} outside the 64-bit range")


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
    value = _unpack(data)
    _check_decoded(value, 0)
    # With every map's keys already in canonical order (checked above), the decoded
    # value packs exactly as encode(value) would: re-packing it compares the shortest
    # forms of integers and lengths and the str/bin split, without re-sorting.
    if pack(value) != bytes(data):
        raise EncodingError("not in canonical form")
    return value


def decode_own(data: bytes) -> Any:
    """Decode bytes this node wrote with :func:`encode` — a state value read back from
    its own ledger or write overlay — without :func:`decode`'s canonical-form walk and
    re-pack (a third to half of a small value's decoding). Only for such bytes: what
    arrives from a peer, a client or a file goes through :func:`decode`. LevelDB
    checks each block's checksum on every read; a value changed on disk past that is
    no more caught by a canonical check (it can be changed canonically) than by this.
    Raises :class:`EncodingError` if ``data`` is not MessagePack or uses extension
    types.
    """
    return _unpack(data)


def _unpack(data: bytes) -> Any:
    """MessagePack → value (lists, string map keys, no extension types): the first
    step of :func:`decode` and all of :func:`decode_own`. Raises :class:`EncodingError`."""
    try:
        return msgpack.unpackb(
            data, raw=False, use_list=True, strict_map_key=True, ext_hook=_refuse_ext
        )
    except EncodingError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types
        raise EncodingError(f"not valid MessagePack: {exc}") from None


def _refuse_ext(code: int, data: bytes) -> Any:
    raise EncodingError(f"MessagePack extension type {code} is not allowed")
