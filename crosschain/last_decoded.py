"""A one-entry memo for decoding state values that are read far more often than they
change (the light client's and the acknowledgement state: every relay step of every
node reads them, and the rules read them for each anchor or ack)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LastDecoded(Generic[T]):
    """``decode(data)``, remembering the last bytes and the value decoded from them:
    the same bytes again give the same object without decoding. Only for immutable
    values (frozen dataclasses: the object is shared by every caller). A decode that
    raises is not remembered. Safe from several threads (one tuple swapped whole)."""

    def __init__(self, decode: Callable[[bytes], T]) -> None:
        self._decode = decode
        self._last: tuple[bytes, T] | None = None
        #: how many calls were answered from the memo (for tests and profiles)
        self.hits = 0

    def __call__(self, data: bytes) -> T:
        last = self._last
        if last is not None and last[0] == data:
            self.hits += 1
            return last[1]
        value = self._decode(data)
        self._last = (bytes(data), value)
        return value
