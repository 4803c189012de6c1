"""State API: overlays, height-range reads, the state digest."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.state import (
    GENESIS_STATE_ROOT,
    MemoryState,
    WriteSet,
    _cover,
    height_part,
    iter_height_range,
    last_at_or_below,
    state_root_after,
)


def test_writeset_reads_own_writes_and_merges_in_order() -> None:
    base = MemoryState()
    base.apply_writes([(b"a/1", b"x"), (b"a/3", b"y"), (b"b/1", b"z")])
    block = WriteSet(base)
    tx = block.child()
    tx.put(b"a/2", b"new")
    tx.delete(b"a/3")
    tx.put(b"a/1", b"over")
    assert tx.get(b"a/3") is None
    assert list(tx.iter_prefix(b"a/")) == [(b"a/1", b"over"), (b"a/2", b"new")]
    assert block.get(b"a/1") == b"x"  # not merged yet
    tx.merge_into_parent()
    assert list(block.iter_prefix(b"a/")) == [(b"a/1", b"over"), (b"a/2", b"new")]
    assert block.writes() == ((b"a/1", b"over"), (b"a/2", b"new"), (b"a/3", None))
    assert base.get(b"a/3") == b"y"  # the base is never written


def test_writeset_discard_forgets_everything() -> None:
    base = MemoryState()
    block = WriteSet(base)
    tx = block.child()
    tx.put(b"k", b"v")
    tx.discard()
    assert tx.get(b"k") is None
    tx.merge_into_parent()
    assert block.writes() == ()


def test_top_level_writeset_cannot_merge() -> None:
    with pytest.raises(RuntimeError):
        WriteSet(MemoryState()).merge_into_parent()


def test_prefix_with_ff_bytes() -> None:
    base = MemoryState()
    base.apply_writes([(b"\xff\xff", b"1"), (b"\xff\xff\x00", b"2"), (b"\xfe", b"3")])
    assert [k for k, _ in base.iter_prefix(b"\xff\xff")] == [b"\xff\xff", b"\xff\xff\x00"]
    assert [k for k, _ in base.iter_prefix(b"")] == [b"\xfe", b"\xff\xff", b"\xff\xff\x00"]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 10**6))
def test_cover_is_exact_and_ordered(a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    prefixes = _cover(lo, hi, 7)
    # each prefix is an aligned block of numbers; the blocks must tile [lo, hi] in order
    nxt = lo
    for p in prefixes:
        size = 10 ** (7 - len(p))
        start = int(p or "0") * size
        assert start == nxt
        nxt = start + size
    assert nxt == hi + 1
    assert len(prefixes) <= 2 * 9 * 7 + 1


@settings(max_examples=60, deadline=None)
@given(
    st.sets(st.integers(1, 5000), max_size=40),
    st.integers(0, 5100),
    st.integers(0, 5100),
)
def test_height_range_and_last_match_a_scan(heights: set[int], x: int, y: int) -> None:
    state = MemoryState()
    state.apply_writes((b"p/" + height_part(h) + b"/000000", b"%d" % h) for h in heights)
    state.apply_writes([(b"q/" + height_part(7), b"other")])
    lo, hi = min(x, y), max(x, y)
    got = [int(v) for _, v in iter_height_range(state, b"p/", lo, hi)]
    assert got == sorted(h for h in heights if lo < h <= hi)
    last = last_at_or_below(state, b"p/", hi)
    below = [h for h in heights if h <= hi]
    assert (None if last is None else int(last[1])) == (max(below) if below else None)


_KEYS = st.lists(st.sampled_from([b"a", b"b", b"\xff"]), max_size=3).map(b"".join)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(_KEYS, st.binary(min_size=1, max_size=2), max_size=12),
    st.dictionaries(_KEYS, st.one_of(st.none(), st.binary(min_size=1, max_size=2)), max_size=8),
    st.dictionaries(_KEYS, st.one_of(st.none(), st.binary(min_size=1, max_size=2)), max_size=4),
    _KEYS,
    _KEYS,
)
def test_last_below_matches_a_scan_through_two_overlays(
    base_items: dict[bytes, bytes],
    block_writes: dict[bytes, bytes | None],
    tx_writes: dict[bytes, bytes | None],
    prefix: bytes,
    stop: bytes,
) -> None:
    """``last_below`` of a state and of overlays with puts and deletes over it equals the
    last item of ``iter_prefix`` below ``stop``: deletes are skipped, own writes shadow."""
    base = MemoryState()
    base.apply_writes(base_items.items())
    block = WriteSet(base)
    for k, v in block_writes.items():
        block.put(k, v) if v is not None else block.delete(k)
    tx = block.child()
    for k, v in tx_writes.items():
        tx.put(k, v) if v is not None else tx.delete(k)
    for reader in (base, block, tx):
        below = [item for item in reader.iter_prefix(prefix) if item[0] < stop]
        assert reader.last_below(prefix, stop) == (below[-1] if below else None)


def test_last_at_or_below_takes_last_item_of_the_height() -> None:
    state = MemoryState()
    state.apply_writes(
        [(b"p/" + height_part(5) + b"/000001", b"a"), (b"p/" + height_part(5) + b"/000002", b"b")]
    )
    assert last_at_or_below(state, b"p/", 9) == (b"p/" + height_part(5) + b"/000002", b"b")
    assert last_at_or_below(state, b"p/", 4) is None
    assert last_at_or_below(state, b"p/", -1) is None


def test_state_root_is_a_chained_digest_of_writes_and_outcomes() -> None:
    w = [(b"b", b"2"), (b"a", None)]
    r1 = state_root_after(GENESIS_STATE_ROOT, w, ["ok", "bad_payload"])
    assert r1 == state_root_after(GENESIS_STATE_ROOT, list(reversed(w)), ["ok", "bad_payload"])
    assert r1 != state_root_after(GENESIS_STATE_ROOT, w, ["ok", "ok"])
    assert r1 != state_root_after(GENESIS_STATE_ROOT, [(b"b", b"2")], ["ok", "bad_payload"])
    assert r1 != state_root_after(r1, w, ["ok", "bad_payload"])
    with pytest.raises(ValueError):
        state_root_after(b"short", w, [])
