"""ledger.fifo.FifoSet: a bounded set forgetting its oldest member first."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.fifo import FifoSet


def test_a_full_set_forgets_its_oldest_member() -> None:
    s: FifoSet[int] = FifoSet(3)
    for k in (1, 2, 3):
        s.add(k)
    s.add(4)
    assert len(s) == 3
    assert 1 not in s
    assert all(k in s for k in (2, 3, 4))


def test_adding_a_member_again_keeps_its_place() -> None:
    s: FifoSet[str] = FifoSet(2)
    s.add("a")
    s.add("b")
    s.add("a")  # still the oldest
    s.add("c")
    assert "a" not in s
    assert "b" in s and "c" in s


@pytest.mark.parametrize("capacity", [0, -1])
def test_a_capacity_below_one_is_refused(capacity: int) -> None:
    with pytest.raises(ValueError, match="capacity"):
        FifoSet(capacity)


@given(st.integers(1, 8), st.lists(st.integers(0, 20), max_size=200))
def test_it_holds_exactly_the_newest_distinct_keys_of_a_model(
    capacity: int, keys: list[int]
) -> None:
    s: FifoSet[int] = FifoSet(capacity)
    model: list[int] = []
    for k in keys:
        s.add(k)
        if k not in model:
            model.append(k)
            del model[:-capacity]
    assert len(s) == len(model)
    assert [k for k in range(21) if k in s] == sorted(model)
