"""Canonical encoding: round trips, canonical form, and refusal of everything else."""

from __future__ import annotations

import datetime
import decimal
import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.encoding import INT_MAX, INT_MIN, MAX_DEPTH, MAX_ENCODED_SIZE, decode, encode
from ledger.errors import EncodingError, LedgerError

scalars = (
    st.none()
    | st.booleans()
    | st.integers(INT_MIN, INT_MAX)
    | st.sampled_from([INT_MIN, INT_MAX, 2**63 - 1, 2**63, -(2**31) - 1, 2**32, -33, -32, 127, 128])
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=40,
)


def same(a: Any, b: Any) -> bool:
    """Structural equality that does not let True == 1 or a tuple == a list slip by."""
    if isinstance(a, list | tuple):
        return (
            type(b) is list
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, dict):
        return type(b) is dict and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def reversed_maps(v: Any) -> Any:
    """The same value with every map built in reverse key order."""
    if isinstance(v, list):
        return [reversed_maps(x) for x in v]
    if isinstance(v, dict):
        return {k: reversed_maps(v[k]) for k in reversed(list(v))}
    return v


def nest(depth: int, kind: str = "list") -> Any:
    """None wrapped in ``depth`` lists (or maps): the None sits at nesting depth ``depth``."""
    v: Any = None
    for _ in range(depth):
        v = [v] if kind == "list" else {"k": v}
    return v


def stable_id(v: Any) -> str:
    """A test id that is the same in every process (no memory addresses)."""
    r = repr(v)
    return type(v).__name__ if " at 0x" in r else r


# --------------------------------------------------------------------------------------
# Round trips and canonical form.


@settings(max_examples=150, deadline=None)
@given(values)
def test_round_trip(v: Any) -> None:
    data = encode(v)
    assert isinstance(data, bytes)
    back = decode(data)
    assert same(v, back)
    assert encode(back) == data


@settings(max_examples=100, deadline=None)
@given(values)
def test_encoding_independent_of_map_insertion_order(v: Any) -> None:
    assert encode(reversed_maps(v)) == encode(v)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.text(max_size=6), st.integers(0, 9), min_size=2, max_size=10), st.randoms()
)
def test_map_keys_are_written_sorted_by_utf8(m: dict[str, int], rnd: Any) -> None:
    items = list(m.items())
    rnd.shuffle(items)
    data = encode(dict(items))
    pairs = msgpack.unpackb(data, object_pairs_hook=list)
    keys = [k.encode("utf-8") for k, _ in pairs]
    assert keys == sorted(keys)


def test_tuples_encode_as_lists() -> None:
    assert encode((1, "a", (b"x",))) == encode([1, "a", [b"x"]])
    assert decode(encode((1, 2))) == [1, 2]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # MessagePack spec: the shortest form of each integer.
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\xcc\x80"),
        (255, b"\xcc\xff"),
        (256, b"\xcd\x01\x00"),
        (65536, b"\xce\x00\x01\x00\x00"),
        (2**32, b"\xcf\x00\x00\x00\x01\x00\x00\x00\x00"),
        (INT_MAX, b"\xcf" + b"\xff" * 8),
        (-1, b"\xff"),
        (-32, b"\xe0"),
        (-33, b"\xd0\xdf"),
        (-129, b"\xd1\xff\x7f"),
        (INT_MIN, b"\xd3\x80" + b"\x00" * 7),
        (None, b"\xc0"),
        (False, b"\xc2"),
        (True, b"\xc3"),
        ("", b"\xa0"),
        ("a", b"\xa1a"),
        ("x" * 32, b"\xd9\x20" + b"x" * 32),
        (b"", b"\xc4\x00"),
        ([], b"\x90"),
        ({}, b"\x80"),
        ({"b": 1, "a": 2}, b"\x82\xa1a\x02\xa1b\x01"),
    ],
)
def test_known_encodings(value: Any, expected: bytes) -> None:
    assert encode(value) == expected
    assert same(decode(expected), value)


def test_integer_range_bounds() -> None:
    for ok in (INT_MIN, INT_MAX, 0):
        assert decode(encode(ok)) == ok
    for bad in (INT_MIN - 1, INT_MAX + 1, 2**100, -(2**100)):
        with pytest.raises(EncodingError):
            encode(bad)
        with pytest.raises(EncodingError):
            encode({"n": [bad]})


def test_nesting_limit() -> None:
    for kind in ("list", "map"):
        deepest_ok = nest(MAX_DEPTH, kind)
        assert decode(encode(deepest_ok)) == deepest_ok
        with pytest.raises(EncodingError):
            encode(nest(MAX_DEPTH + 1, kind))
    # Hand-built: fixarray-of-one wrappers around nil.
    assert decode(b"\x91" * MAX_DEPTH + b"\xc0") == nest(MAX_DEPTH)
    for depth in (MAX_DEPTH + 1, 5000):
        with pytest.raises(EncodingError):
            decode(b"\x91" * depth + b"\xc0")


def test_self_referencing_value_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(EncodingError):
        encode(loop)


# --------------------------------------------------------------------------------------
# encode refuses values outside the canonical subset.


@pytest.mark.parametrize(
    "value",
    [
        1.0,
        0.0,
        math.nan,
        math.inf,
        [1, 2.5],
        {"amount": 10.0},
        {1: "a"},
        {b"k": "a"},
        {None: 1},
        {(1, 2): 1},
        {"ok": {2: 1}},
        {True: 1},
        {1, 2},
        frozenset(),
        bytearray(b"x"),
        memoryview(b"x"),
        object(),
        decimal.Decimal("1"),
        1j,
        datetime.date(2024, 1, 1),
        "\ud800",
        ["ok", "bad\udfff"],
        {"\udc00": 1},
    ],
    ids=stable_id,
)
def test_encode_refuses(value: Any) -> None:
    with pytest.raises(EncodingError):
        encode(value)


def test_errors_are_ledger_errors_with_a_code() -> None:
    with pytest.raises(LedgerError) as info:
        encode(1.5)
    assert info.value.code == "bad_encoding"


# --------------------------------------------------------------------------------------
# decode refuses everything that is not exactly the canonical form.


@pytest.mark.parametrize(
    "data",
    [
        # Map keys out of order, built with raw msgpack (which keeps insertion order).
        msgpack.packb({"b": 1, "a": 2}),
        msgpack.packb({"x": {"z": 1, "y": 2}}),
        msgpack.packb([{"é": 1, "e": 2}]),
        # Duplicate keys.
        b"\x82\xa1a\x01\xa1a\x02",
        # Non-shortest integers.
        b"\xcd\x00\x01",
        b"\xcc\x05",
        b"\xcc\x7f",
        b"\xce\x00\x00\x00\x01",
        b"\xce\x00\x00\xff\xff",
        b"\xcf\x00\x00\x00\x00\x00\x00\x00\x01",
        b"\xd0\x01",
        b"\xd0\xff",
        b"\xd1\xff\xff",
        b"\xd2\x00\x00\x00\x00",
        b"\xd3\xff\xff\xff\xff\xff\xff\xff\xff",
        # Non-shortest lengths.
        b"\xd9\x01a",
        b"\xda\x00\x01a",
        b"\xc5\x00\x01a",
        b"\xdc\x00\x01\xc0",
        b"\xde\x00\x00",
        # Floats.
        b"\xca\x00\x00\x00\x00",
        b"\xcb" + b"\x00" * 8,
        msgpack.packb([1, 2.5]),
        msgpack.packb({"a": 1.0}),
        # Extension types, including the timestamp extension (-1).
        b"\xd4\x01\x00",
        b"\xc7\x00\x05",
        msgpack.packb(msgpack.ExtType(42, b"hello")),
        msgpack.packb(msgpack.Timestamp(1, 0)),
        # Map keys that are not strings.
        b"\x81\x01\x01",
        b"\x81\xc4\x01a\x01",
        b"\x81\xc0\x01",
        # Invalid UTF-8 and encoded surrogates in a str.
        b"\xa1\xff",
        b"\xa3\xed\xa0\x80",
        # Reserved byte, truncated containers, absurd lengths.
        b"\xc1",
        b"",
        b"\x92\x01",
        b"\x81\xa1a",
        b"\xdd\xff\xff\xff\xff",
        b"\xdb\xff\xff\xff\xff",
        # Trailing bytes.
        b"\xc0\xc0",
        b"\x01\x00",
    ],
    ids=lambda d: d.hex() or "empty",
)
def test_decode_refuses(data: bytes) -> None:
    with pytest.raises(EncodingError):
        decode(data)


@settings(max_examples=100, deadline=None)
@given(values, st.binary(min_size=1, max_size=4))
def test_decode_refuses_trailing_bytes(v: Any, tail: bytes) -> None:
    with pytest.raises(EncodingError):
        decode(encode(v) + tail)


@settings(max_examples=100, deadline=None)
@given(values)
def test_decode_refuses_every_truncation(v: Any) -> None:
    data = encode(v)
    for cut in range(len(data)):
        with pytest.raises(EncodingError):
            decode(data[:cut])


def test_decode_size_limit() -> None:
    data = encode(b"x" * 100)
    assert decode(data, max_size=len(data)) == b"x" * 100
    with pytest.raises(EncodingError):
        decode(data, max_size=len(data) - 1)
    with pytest.raises(EncodingError):
        decode(b"\xc0" + b"\x00" * MAX_ENCODED_SIZE)


@pytest.mark.parametrize("data", ["\xc0", None, 1, [0xC0]], ids=stable_id)
def test_decode_requires_bytes(data: Any) -> None:
    with pytest.raises(EncodingError):
        decode(data)


def test_decode_accepts_bytes_like() -> None:
    data = encode({"a": [1, b"x"]})
    assert decode(bytearray(data)) == {"a": [1, b"x"]}
    assert decode(memoryview(data)) == {"a": [1, b"x"]}


def _decode_is_sound(data: bytes) -> None:
    """decode either returns a value whose encoding is exactly ``data``, or raises
    EncodingError; any other exception fails the test."""
    try:
        value = decode(data)
    except EncodingError:
        return
    assert encode(value) == data


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=64))
def test_decode_of_garbage_is_sound(data: bytes) -> None:
    _decode_is_sound(data)


@settings(max_examples=150, deadline=None)
@given(values, st.data())
def test_decode_of_mutated_encodings_is_sound(v: Any, data: Any) -> None:
    raw = bytearray(encode(v))
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        ins = data.draw(st.integers(0, len(raw)))
        raw[ins:ins] = data.draw(st.binary(min_size=1, max_size=3))
    _decode_is_sound(bytes(raw))
