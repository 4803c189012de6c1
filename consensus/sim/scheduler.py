"""Virtual time: a deterministic event queue.

Events are ordered by ``(time_ms, sequence number)``: two events at the same virtual
millisecond run in the order they were scheduled, so a run depends only on the seed.
Nothing here reads a clock; time advances only by :meth:`Scheduler.pop`.
"""

from __future__ import annotations

import heapq
from typing import Generic, TypeVar

E = TypeVar("E")


class SchedulerError(Exception):
    """An event was scheduled in the past (a simulator bug, never an input problem)."""


class Scheduler(Generic[E]):
    """A min-heap of ``(time_ms, seq, event)``; ``now_ms`` is the time of the last pop."""

    __slots__ = ("_heap", "_seq", "now_ms", "popped")

    def __init__(self, start_ms: int = 0) -> None:
        self._heap: list[tuple[int, int, E]] = []
        self._seq = 0
        self.now_ms = start_ms
        self.popped = 0

    def at(self, time_ms: int, event: E) -> None:
        """Schedule ``event`` at absolute ``time_ms`` (≥ now; raises SchedulerError if not)."""
        if time_ms < self.now_ms:
            raise SchedulerError(f"event at {time_ms} ms scheduled at {self.now_ms} ms")
        heapq.heappush(self._heap, (time_ms, self._seq, event))
        self._seq += 1

    def after(self, delay_ms: int, event: E) -> None:
        self.at(self.now_ms + max(0, delay_ms), event)

    def peek_time(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def pop(self) -> tuple[int, E] | None:
        """Remove the earliest event, advance ``now_ms`` to its time and return it."""
        if not self._heap:
            return None
        time_ms, _, event = heapq.heappop(self._heap)
        self.now_ms = time_ms
        self.popped += 1
        return time_ms, event

    def __len__(self) -> int:
        return len(self._heap)
