"""A bounded set that forgets its oldest member first, in O(1) per operation.

The nodes' memos (verified signatures, recently committed transaction ids) used a
``dict`` as the queue, evicting with ``del d[next(iter(d))]``. A dict keeps deleted
entries as placeholders until it next resizes, and ``iter`` walks over every one of
them from the front: once such a memo was full, each insert scanned tens of thousands
of placeholders (measured on this machine: 1.3 µs per insert at 2,048 members, 15 µs at
16,384, 27 µs at 32,768, 190 µs at 200,000 — the mempool's committed-id memo), so the
cost per transaction grew until the memo filled. A deque of keys beside a set has no
such placeholders.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

_K = TypeVar("_K", bound=Hashable)


class FifoSet(Generic[_K]):
    """At most ``capacity`` keys; adding a new key to a full set forgets the oldest.

    ``add`` of a key already held changes nothing (it keeps its place). Not
    thread-safe: callers sharing one between threads hold a lock around ``add``
    (a concurrent ``in`` only ever sees a member or not). Raises ValueError for a
    capacity below 1."""

    __slots__ = ("_capacity", "_members", "_order")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self._capacity = capacity
        self._members: set[_K] = set()
        self._order: deque[_K] = deque()

    def __contains__(self, key: object) -> bool:
        return key in self._members

    def __len__(self) -> int:
        return len(self._members)

    def add(self, key: _K) -> None:
        """Hold ``key``, forgetting the oldest member if the set was full."""
        members = self._members
        if key in members:
            return
        if len(members) >= self._capacity:
            members.discard(self._order.popleft())
        members.add(key)
        self._order.append(key)
