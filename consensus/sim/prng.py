"""A seeded pseudo-random generator for the simulator (``random`` is forbidden here).

:class:`Prng` is xoshiro256** (Blackman and Vigna, 2018) seeded through SplitMix64,
so one 64-bit seed fixes every draw. Everything is integer arithmetic masked to 64
bits; :meth:`Prng.chance` turns 53 bits into a float in ``[0, 1)``, which is exact and
platform-independent in Python.

Streams are derived by *name*, not by position: :meth:`Prng.fork` hashes the root
seed with a label path, so adding a draw to one stream (say, the network's) never
shifts another (say, the clients'). That keeps seeds comparable when a scenario grows.
"""

from __future__ import annotations

import hashlib
from collections.abc import MutableSequence, Sequence
from typing import Final, TypeVar

T = TypeVar("T")

MASK64: Final = (1 << 64) - 1
_GOLDEN: Final = 0x9E3779B97F4A7C15


def _rotl(x: int, k: int) -> int:
    return ((x << k) | (x >> (64 - k))) & MASK64


class SplitMix64:
    """SplitMix64 (Steele, Lea and Flood): used to expand a seed into xoshiro state."""

    __slots__ = ("state",)

    def __init__(self, seed: int) -> None:
        self.state = seed & MASK64

    def next_u64(self) -> int:
        self.state = (self.state + _GOLDEN) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


class Prng:
    """xoshiro256** with helpers for the draws a simulation needs.

    ``Prng(seed)`` seeds the 256-bit state with four SplitMix64 outputs of ``seed``.
    :meth:`from_state` sets the raw state (for reference vectors). Never raises on
    draws except :class:`ValueError` for an empty range or sequence.
    """

    __slots__ = ("_root", "_s0", "_s1", "_s2", "_s3")

    def __init__(self, seed: int) -> None:
        self._root = seed & MASK64
        sm = SplitMix64(seed)
        self._set_state((sm.next_u64(), sm.next_u64(), sm.next_u64(), sm.next_u64()))

    @classmethod
    def from_state(cls, state: Sequence[int], *, root: int = 0) -> Prng:
        prng = cls.__new__(cls)
        prng._root = root & MASK64
        prng._set_state(tuple(state))
        return prng

    def _set_state(self, state: Sequence[int]) -> None:
        if len(state) != 4:
            raise ValueError("xoshiro256** state is four 64-bit words")
        words = [w & MASK64 for w in state]
        if not any(words):
            raise ValueError("xoshiro256** state must not be all zero")
        self._s0, self._s1, self._s2, self._s3 = words

    @property
    def state(self) -> tuple[int, int, int, int]:
        return (self._s0, self._s1, self._s2, self._s3)

    def next_u64(self) -> int:
        s0, s1, s2, s3 = self._s0, self._s1, self._s2, self._s3
        result = (_rotl((s1 * 5) & MASK64, 7) * 9) & MASK64
        t = (s1 << 17) & MASK64
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = _rotl(s3, 45)
        self._s0, self._s1, self._s2, self._s3 = s0, s1, s2, s3
        return result

    def fork(self, *labels: str) -> Prng:
        """An independent stream named by ``labels``, derived from the root seed only."""
        h = hashlib.sha256(self._root.to_bytes(8, "big"))
        for label in labels:
            h.update(b"\x00" + label.encode("utf-8"))
        return Prng(int.from_bytes(h.digest()[:8], "big"))

    def below(self, n: int) -> int:
        """A uniform integer in ``[0, n)`` (rejection sampling, no modulo bias)."""
        if n <= 0:
            raise ValueError("below(n) needs n > 0")
        if n == 1:
            return 0
        if n > 1 << 64:
            raise ValueError("below(n) needs n <= 2**64")
        shift = 64 - (n - 1).bit_length()
        while True:
            x = self.next_u64() >> shift
            if x < n:
                return x

    def between(self, lo: int, hi: int) -> int:
        """A uniform integer in ``[lo, hi]`` (inclusive)."""
        if hi < lo:
            raise ValueError(f"between({lo}, {hi}): empty range")
        return lo + self.below(hi - lo + 1)

    def unit(self) -> float:
        """A float in ``[0, 1)`` with 53 random bits."""
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))

    def chance(self, p: float) -> bool:
        """True with probability ``p`` (``p <= 0`` never draws true, ``p >= 1`` always)."""
        if p <= 0.0:
            return False
        if p >= 1.0:
            return True
        return self.unit() < p

    def choice(self, items: Sequence[T]) -> T:
        if not items:
            raise ValueError("choice from an empty sequence")
        return items[self.below(len(items))]

    def shuffle(self, items: MutableSequence[T]) -> None:
        """Fisher–Yates, in place."""
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]

    def sample(self, items: Sequence[T], k: int) -> list[T]:
        """``k`` distinct elements (by position) in random order."""
        if not 0 <= k <= len(items):
            raise ValueError(f"sample of {k} from {len(items)} items")
        pool = list(items)
        out: list[T] = []
        for _ in range(k):
            out.append(pool.pop(self.below(len(pool))))
        return out

    def draw_bytes(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            out += self.next_u64().to_bytes(8, "little")
        return bytes(out[:n])
