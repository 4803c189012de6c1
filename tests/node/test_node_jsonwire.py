from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.encoding import INT_MAX, INT_MIN, decode, encode
from ledger.errors import EncodingError
from node.jsonwire import json_to_wire, wire_to_json

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(INT_MIN, INT_MAX)
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4),
    max_leaves=20,
)


@given(values)
def test_round_trip_through_json_text(value: object) -> None:
    text = json.dumps(wire_to_json(value))
    back = json_to_wire(json.loads(text))
    assert encode(back) == encode(value)
    assert decode(encode(back)) == back


def test_bytes_mapping_and_refusals() -> None:
    assert wire_to_json({"a": b"\x01\xab"}) == {"a": {"$hex": "01ab"}}
    assert json_to_wire({"$hex": "01AB"}) == b"\x01\xab"
    for bad in [1.5, {"$hex": "zz"}, {"$hex": "00", "x": 1}, {"$hex": 5}, 2**64]:
        with pytest.raises(EncodingError):
            json_to_wire(bad)
