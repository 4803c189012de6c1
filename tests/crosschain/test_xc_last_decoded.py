"""The one-entry decode memo of the light client's and the acknowledgement state."""

from __future__ import annotations

import pytest

from crosschain.ack import AckState
from crosschain.last_decoded import LastDecoded
from ledger.encoding import encode
from ledger.errors import EncodingError
from tests.crosschain.harness import Network


def test_the_same_bytes_are_decoded_once_and_other_bytes_again() -> None:
    seen: list[bytes] = []

    def decode(data: bytes) -> tuple[int, ...]:
        seen.append(data)
        return tuple(data)

    memo = LastDecoded(decode)
    a = memo(b"\x01\x02")
    assert memo(bytearray(b"\x01\x02")) is a  # equal bytes: the same object, no decode
    assert memo(b"\x03") == (3,)
    assert memo(b"\x01\x02") == (1, 2)  # only the last value is kept
    assert seen == [b"\x01\x02", b"\x03", b"\x01\x02"]
    assert memo.hits == 1


def test_a_decode_that_raises_is_not_remembered() -> None:
    calls = 0

    def decode(data: bytes) -> int:
        nonlocal calls
        calls += 1
        if data == b"bad":
            raise EncodingError("bad")
        return len(data)

    memo = LastDecoded(decode)
    assert memo(b"ok") == 2
    for _ in range(2):
        with pytest.raises(EncodingError):
            memo(b"bad")
    assert memo(b"ok") == 2  # still the last value decoded
    assert (calls, memo.hits) == (3, 1)


def test_ack_state_decoding_still_checks_and_returns_equal_states() -> None:
    state = AckState.genesis(Network().jud_vset)
    raw = state.encode()
    assert AckState.decode(raw) == state
    assert AckState.decode(raw) is AckState.decode(raw)
    with pytest.raises(EncodingError):
        AckState.decode(raw + b"\x00")  # trailing bytes: refused, memo or not
    with pytest.raises(EncodingError):
        AckState.decode(encode({"b": 1, "a": 2})[:-1])
