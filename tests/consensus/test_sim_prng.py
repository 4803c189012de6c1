"""The simulator's PRNG: reference vectors, determinism, stream independence, ranges."""

from __future__ import annotations

import pytest

from consensus.sim.prng import Prng, SplitMix64

# Published reference outputs (Vigna's splitmix64.c / xoshiro256starstar.c).
SPLITMIX_1234567 = [
    6457827717110365317,
    3203168211198807973,
    9817491932198370423,
    4593380528125082431,
    16408922859458223821,
]
XOSHIRO_1234 = [
    11520,
    0,
    1509978240,
    1215971899390074240,
    1216172134540287360,
    607988272756665600,
    16172922978634559625,
    8476171486693032832,
    10595114339597558777,
    2904607092377533576,
]


def test_splitmix64_reference_vector() -> None:
    sm = SplitMix64(1234567)
    assert [sm.next_u64() for _ in SPLITMIX_1234567] == SPLITMIX_1234567


def test_xoshiro256starstar_reference_vector() -> None:
    prng = Prng.from_state([1, 2, 3, 4])
    assert [prng.next_u64() for _ in XOSHIRO_1234] == XOSHIRO_1234


def test_seeding_goes_through_splitmix() -> None:
    sm = SplitMix64(42)
    expected_state = tuple(sm.next_u64() for _ in range(4))
    assert Prng(42).state == expected_state


def test_zero_state_is_refused() -> None:
    with pytest.raises(ValueError):
        Prng.from_state([0, 0, 0, 0])
    with pytest.raises(ValueError):
        Prng.from_state([1, 2, 3])


def test_same_seed_same_stream_and_different_seeds_differ() -> None:
    a, b, c = Prng(7), Prng(7), Prng(8)
    xs = [a.next_u64() for _ in range(100)]
    assert xs == [b.next_u64() for _ in range(100)]
    assert xs != [c.next_u64() for _ in range(100)]
    assert all(0 <= x < 2**64 for x in xs)


def test_fork_depends_on_root_and_label_not_on_draws() -> None:
    a, b = Prng(99), Prng(99)
    for _ in range(37):
        b.next_u64()  # draws on the parent must not shift a named stream
    fa, fb = a.fork("net", "links"), b.fork("net", "links")
    assert [fa.next_u64() for _ in range(20)] == [fb.next_u64() for _ in range(20)]
    other = Prng(99).fork("clients")
    assert Prng(99).fork("net", "links").next_u64() != other.next_u64()
    assert Prng(99).fork("a", "b").next_u64() != Prng(99).fork("ab").next_u64()
    assert Prng(99).fork("x").next_u64() != Prng(100).fork("x").next_u64()


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 10, 1000, 2**33 + 1, 2**64])
def test_below_stays_in_range(n: int) -> None:
    prng = Prng(n)
    for _ in range(300):
        assert 0 <= prng.below(n) < n


def test_below_is_roughly_uniform() -> None:
    prng = Prng(2024)
    counts = [0] * 6
    draws = 60_000
    for _ in range(draws):
        counts[prng.below(6)] += 1
    for c in counts:
        assert abs(c - draws / 6) < 0.05 * draws / 6, counts


def test_between_is_inclusive_and_covers_both_ends() -> None:
    prng = Prng(3)
    seen = {prng.between(-2, 2) for _ in range(500)}
    assert seen == {-2, -1, 0, 1, 2}
    assert prng.between(5, 5) == 5


def test_bad_ranges_raise() -> None:
    prng = Prng(1)
    with pytest.raises(ValueError):
        prng.below(0)
    with pytest.raises(ValueError):
        prng.below(2**64 + 1)
    with pytest.raises(ValueError):
        prng.between(3, 2)
    with pytest.raises(ValueError):
        prng.choice([])
    with pytest.raises(ValueError):
        prng.sample([1, 2], 3)


def test_chance_extremes_and_rate() -> None:
    prng = Prng(11)
    assert not any(prng.chance(0.0) for _ in range(200))
    assert all(prng.chance(1.0) for _ in range(200))
    hits = sum(prng.chance(0.25) for _ in range(40_000))
    assert 9_400 < hits < 10_600
    units = [prng.unit() for _ in range(1000)]
    assert all(0.0 <= u < 1.0 for u in units)


def test_shuffle_and_sample_are_permutations_and_deterministic() -> None:
    items = list(range(50))
    a, b = list(items), list(items)
    Prng(5).shuffle(a)
    Prng(5).shuffle(b)
    assert a == b
    assert sorted(a) == items
    assert a != items
    s = Prng(6).sample(items, 10)
    assert len(set(s)) == 10
    assert set(s) <= set(items)
    assert Prng(6).sample(items, 10) == s


def test_draw_bytes_length_and_determinism() -> None:
    assert len(Prng(1).draw_bytes(37)) == 37
    assert Prng(1).draw_bytes(32) == Prng(1).draw_bytes(32)
    assert Prng(1).draw_bytes(32) != Prng(2).draw_bytes(32)
