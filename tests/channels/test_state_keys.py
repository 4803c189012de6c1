"""The state overlay's lazily sorted keys against a plain sorted reference."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from channels.state import MemoryState, WriteSet, _SortedKeys

KEYS = st.binary(min_size=0, max_size=3)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS),
        st.tuples(st.just("remove"), KEYS),
        st.tuples(st.just("range"), st.binary(max_size=2)),
        st.tuples(st.just("keys"), st.just(b"")),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_sorted_keys_match_a_sorted_dict(ops: list[tuple[str, bytes]]) -> None:
    sk = _SortedKeys()
    ref: dict[bytes, int] = {}
    for i, (op, key) in enumerate(ops):
        if op == "set":
            sk.set(key, i)
            ref[key] = i
        elif op == "remove":
            sk.remove(key)
            ref.pop(key, None)
        elif op == "range":
            assert sk.range(key) == sorted(k for k in ref if k.startswith(key))
        else:
            assert sk.keys == sorted(ref)
    assert sk.keys == sorted(ref)
    assert sk.items == ref


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(KEYS, st.one_of(st.none(), st.binary(max_size=2))), max_size=40))
def test_overlay_writes_and_prefix_reads_after_nested_merges(
    writes: list[tuple[bytes, bytes | None]],
) -> None:
    base = MemoryState()
    base.apply_writes([(b"\x00", b"base"), (b"\x01\x02", b"b2")])
    top = WriteSet(base)
    expect = {b"\x00": b"base", b"\x01\x02": b"b2"}
    for i, (key, value) in enumerate(writes):
        child = top.child()
        if value is None:
            child.delete(key)
            expect.pop(key, None)
        else:
            child.put(key, value)
            expect[key] = value
        if i % 3 == 2:
            child.discard()  # a rejected transaction writes nothing
            expect = {k: v for k, v in expect.items() if k != key} | (
                {key: top.get(key)} if top.get(key) is not None else {}
            )
        child.merge_into_parent()
        assert list(top.iter_prefix(b"")) == sorted(expect.items())
    recorded = top.writes()
    assert [k for k, _ in recorded] == sorted({k for k, _ in recorded})
