"""State deltas: their canonical form, parsing and refusals, and that a block's state
root is the chained hash of its delta (result maps of VALID outcomes included)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.base import BlockTx, apply_block
from channels.context import BlockContext
from channels.state import (
    GENESIS_STATE_ROOT,
    OK,
    parse_state_delta,
    root_after_delta,
    state_delta,
    state_root_after,
)
from ledger.encoding import encode
from ledger.errors import EncodingError
from tests.channels.helpers import Harness

ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
WRITES = st.dictionaries(
    st.binary(max_size=16), st.none() | st.binary(max_size=24), max_size=8
).map(lambda d: list(d.items()))
RESULT = st.none() | st.dictionaries(ASCII, st.integers(-(2**63), 2**63 - 1), max_size=4)


@st.composite
def deltas(
    draw: st.DrawFn,
) -> tuple[list[tuple[bytes, bytes | None]], list[str], list[dict[str, int] | None] | None]:
    writes = draw(WRITES)
    codes = draw(st.lists(ASCII, max_size=6))
    results = draw(st.none() | st.lists(RESULT, min_size=len(codes), max_size=len(codes)))
    return writes, codes, results


@settings(max_examples=300, deadline=None)
@given(deltas())
def test_state_delta_is_the_canonical_encoding_and_parses_back(
    case: tuple[list[tuple[bytes, bytes | None]], list[str], list[dict[str, int] | None] | None],
) -> None:
    writes, codes, results = case
    delta = state_delta(writes, codes, results)
    full = [None] * len(codes) if results is None else results
    ordered = sorted(writes)
    assert delta == encode([[[k, v] for k, v in ordered], codes, full])
    assert state_delta(list(reversed(writes)), codes, results) == delta  # order-free
    parsed = parse_state_delta(delta, len(codes))
    assert parsed.writes == tuple(ordered)
    assert parsed.codes == tuple(codes)
    assert parsed.results == tuple(full)
    root = state_root_after(GENESIS_STATE_ROOT, writes, codes, results)
    assert root == root_after_delta(GENESIS_STATE_ROOT, delta)


def test_state_delta_wants_one_result_per_outcome() -> None:
    with pytest.raises(ValueError):
        state_delta([], ["ok", "ok"], [None])


GOOD = [[[b"k", b"v"], [b"gone", None]], ["ok", "bad_payload"], [{"events": 2}, None]]


@pytest.mark.parametrize(
    ("raw", "n_txs"),
    [
        pytest.param(GOOD, 1, id="fewer-outcomes-than-txs"),
        pytest.param(GOOD, 3, id="more-outcomes-than-txs"),
        pytest.param([GOOD[0], ["ok", "ok"], [None]], 2, id="codes-and-results-differ"),
        pytest.param({"w": GOOD[0], "c": GOOD[1], "r": GOOD[2]}, 2, id="map-not-list"),
        pytest.param(b"not a list", 2, id="bytes-not-list"),
        pytest.param(GOOD[:2], 2, id="two-elements"),
        pytest.param([*GOOD, []], 2, id="four-elements"),
        pytest.param([{"k": b"v"}, GOOD[1], GOOD[2]], 2, id="writes-not-list"),
        pytest.param([[["k", b"v"]], GOOD[1], GOOD[2]], 2, id="key-is-str"),
        pytest.param([[[None, b"v"]], GOOD[1], GOOD[2]], 2, id="key-is-nil"),
        pytest.param([[[b"k", "v"]], GOOD[1], GOOD[2]], 2, id="value-is-str"),
        pytest.param([[[b"k"]], GOOD[1], GOOD[2]], 2, id="pair-of-one"),
        pytest.param([[[b"k", b"v", b"x"]], GOOD[1], GOOD[2]], 2, id="pair-of-three"),
        pytest.param([[b"k"], GOOD[1], GOOD[2]], 2, id="pair-not-list"),
        pytest.param([GOOD[0], ["ok", 7], GOOD[2]], 2, id="code-is-int"),
        pytest.param([GOOD[0], ["ok", b"ok"], GOOD[2]], 2, id="code-is-bytes"),
        pytest.param([GOOD[0], GOOD[1], [{"events": 2}, 5]], 2, id="result-is-int"),
        pytest.param([GOOD[0], GOOD[1], [[1], None]], 2, id="result-is-list"),
        pytest.param([GOOD[0], GOOD[1], [b"x", None]], 2, id="result-is-bytes"),
    ],
)
def test_parse_refuses_what_is_not_a_delta(raw: Any, n_txs: int) -> None:
    assert parse_state_delta(encode(GOOD), 2).results == ({"events": 2}, None)
    with pytest.raises(EncodingError):
        parse_state_delta(encode(raw), n_txs)


@pytest.mark.parametrize("garbage", [b"", b"\xc1", b"\x93\x90\x90", encode(GOOD)[:-1]])
def test_parse_refuses_bytes_that_do_not_decode(garbage: bytes) -> None:
    with pytest.raises(EncodingError):
        parse_state_delta(garbage, 2)


def test_the_root_covers_result_maps_and_none_means_all_none() -> None:
    writes = [(b"b", b"2"), (b"a", None)]
    codes = ["ok", "ok", "bad_payload"]
    prev = GENESIS_STATE_ROOT
    bare = state_root_after(prev, writes, codes)
    assert bare == state_root_after(prev, writes, codes, [None] * len(codes))
    with_result = state_root_after(prev, writes, codes, [{"events": 2}, None, None])
    assert with_result != bare
    assert with_result != state_root_after(prev, writes, codes, [{"events": 3}, None, None])
    assert with_result != state_root_after(prev, writes, codes, [{"evts": 2}, None, None])
    assert with_result != state_root_after(prev, writes, codes, [None, {"events": 2}, None])
    assert state_delta(writes, codes) == state_delta(writes, codes, [None] * len(codes))
    with pytest.raises(ValueError):
        root_after_delta(b"short", state_delta(writes, codes))


def test_apply_block_returns_the_delta_its_root_chains() -> None:
    """A real supervision block — a batch report (result map), a single report (no
    result) and a report by a lender never admitted (rejected) — has the delta the
    rules produced, and its root is the chained hash of that delta."""
    h = Harness()
    h.admit("lender-a")
    txs = [
        h.tx(
            "supervision",
            "lender-a",
            "loan_event_batch",
            {"records": [h.event("L1", "contract", 1000), h.event("L2", "contract", 2000)]},
        ),
        h.tx("supervision", "lender-a", "loan_event", h.event("L3", "contract", 500, borrower=2)),
        h.tx("supervision", "lender-b", "loan_event", h.event("L4", "contract", 700, borrower=3)),
    ]
    net = h.net
    ctx = BlockContext("supervision", h.height("supervision") + 1, h.now, h.params, net)
    prev = net.roots["supervision"]
    result = apply_block(
        net.rules["supervision"],
        net.states["supervision"],
        [BlockTx(tx, "lender") for tx in txs],
        ctx,
        prev_root=prev,
    )
    codes = [o.code for o in result.outcomes]
    assert codes[:2] == [OK, OK] and codes[2] != OK
    assert result.outcomes[0].result == {"events": 2}
    assert result.outcomes[2].message  # rejected: its message is not in the delta

    assert result.delta
    assert root_after_delta(prev, result.delta) == result.state_root
    parsed = parse_state_delta(result.delta, len(txs))
    assert parsed.writes == result.writes
    assert parsed.codes == tuple(codes)
    assert parsed.results == ({"events": 2}, None, None)
    assert result.delta == state_delta(result.writes, codes, [{"events": 2}, None, None])
    # the result map is covered: the root without it differs
    assert result.state_root != state_root_after(prev, result.writes, codes)
