"""The bounded pool of client transactions waiting to be ordered.

* Bounded in total (``limit`` transactions, ``max_bytes``) and per client sender
  (``per_sender`` transactions, the same share of the bytes), so one client cannot
  fill it for everyone (Aardvark's lesson), nor large transactions fill the memory.
* Deduplicated by transaction id; ids of recently committed transactions are
  remembered (bounded FIFO) so a resubmission is answered "committed", not re-ordered.
* Arrival order is kept (first come, first proposed) with each transaction's arrival
  time, which drives batching at the primary and censorship detection at backups.
* Transactions included in an in-flight proposal are *reserved*: not proposed again
  and not counted as waiting.

The mempool does not check signatures or rules; the replica does before :meth:`add`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from ledger.blocks import MAX_TX_PAYLOAD_BYTES, Transaction
from ledger.fifo import FifoSet

ACCEPTED: Final = "accepted"
DUPLICATE: Final = "duplicate"
COMMITTED: Final = "committed"
REJECTED: Final = "rejected"


@dataclass(frozen=True)
class SubmitResult:
    """The fate of one submitted transaction.

    ``status`` is ``accepted`` (new in the pool), ``duplicate`` (already waiting: the
    submission is idempotent), ``committed`` (recently committed already) or
    ``rejected`` (``reason`` says why: bad signature, rule, pool full, quota).
    """

    tx_id: bytes
    status: str
    reason: str | None = None

    @property
    def accepted(self) -> bool:
        """True if the transaction is (or already was) waiting to be ordered."""
        return self.status in (ACCEPTED, DUPLICATE)


class _Entry:
    __slots__ = ("arrival_ms", "forwarded_ms", "size", "tx")

    def __init__(self, tx: Transaction, arrival_ms: int) -> None:
        self.tx = tx
        self.arrival_ms = arrival_ms
        self.size = tx_size(tx)
        #: When it was last passed on (first on arrival: a client's transaction is
        #: forwarded then, a forwarded one was just sent to everyone by its sender).
        self.forwarded_ms = arrival_ms


#: What :func:`tx_size` adds to a body's bytes (the signature and its framing).
MAX_TX_OVERHEAD: Final = 64 + 16


def tx_size(tx: Transaction) -> int:
    """Approximate encoded size of ``tx`` (used for batch and mempool byte limits)."""
    return len(tx.body_bytes) + len(tx.signature) + 16


class Mempool:
    """See the module docstring."""

    def __init__(
        self,
        *,
        limit: int,
        per_sender: int,
        recent_committed_limit: int,
        max_bytes: int = 1 << 62,
    ) -> None:
        self._limit = limit
        self._per_sender = per_sender
        self._max_bytes = max_bytes
        #: A sender's share of the bytes, as of the count — but room for one
        #: transaction of the largest size at least.
        self._per_sender_bytes = max(
            max_bytes * per_sender // limit, MAX_TX_PAYLOAD_BYTES + MAX_TX_OVERHEAD
        )
        self._bytes = 0
        self._sender_bytes: dict[str, int] = {}
        self._entries: dict[bytes, _Entry] = {}
        self._free: dict[bytes, None] = {}  # unreserved ids, arrival order
        self._free_bytes = 0
        self._reserved: dict[bytes, int] = {}  # id -> height of the proposal holding it
        self._by_sender: dict[str, int] = {}
        self._recent: FifoSet[bytes] = FifoSet(recent_committed_limit)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, tx_id: object) -> bool:
        return tx_id in self._entries

    @property
    def total_bytes(self) -> int:
        """Approximate size of every transaction held (waiting or reserved)."""
        return self._bytes

    @property
    def free_count(self) -> int:
        """Transactions waiting and not in any in-flight proposal."""
        return len(self._free)

    @property
    def free_bytes(self) -> int:
        """Their total approximate size."""
        return self._free_bytes

    def _set_free(self, free: dict[bytes, None]) -> None:
        self._free = free
        self._free_bytes = sum(self._entries[t].size for t in free)

    def get(self, tx_id: bytes) -> Transaction | None:
        entry = self._entries.get(tx_id)
        return entry.tx if entry else None

    def is_committed(self, tx_id: bytes) -> bool:
        return tx_id in self._recent

    def check(self, tx: Transaction) -> str | None:
        """Why ``tx`` would not be admitted (a status or reason), or None."""
        tx_id = tx.tx_id
        if tx_id in self._entries:
            return DUPLICATE
        if tx_id in self._recent:
            return COMMITTED
        if len(self._entries) >= self._limit:
            return "mempool full"
        if self._by_sender.get(tx.sender, 0) >= self._per_sender:
            return f"sender {tx.sender!r} has {self._per_sender} transactions waiting"
        size = tx_size(tx)
        if self._bytes + size > self._max_bytes:
            return f"mempool full ({self._bytes} of {self._max_bytes} bytes)"
        held = self._sender_bytes.get(tx.sender, 0)
        if held + size > self._per_sender_bytes:
            return f"sender {tx.sender!r} has {held} bytes of transactions waiting"
        return None

    def add(self, tx: Transaction, arrival_ms: int) -> None:
        """Admit ``tx`` (the caller has checked it with :meth:`check`)."""
        tx_id = tx.tx_id
        entry = self._entries[tx_id] = _Entry(tx, arrival_ms)
        if tx_id not in self._reserved:
            self._free[tx_id] = None
            self._free_bytes += entry.size
        self._by_sender[tx.sender] = self._by_sender.get(tx.sender, 0) + 1
        self._bytes += entry.size
        self._sender_bytes[tx.sender] = self._sender_bytes.get(tx.sender, 0) + entry.size

    def reserve(self, tx_ids: Iterable[bytes], height: int) -> None:
        for tx_id in tx_ids:
            self._reserved[tx_id] = height
            if self._free.pop(tx_id, 0) is None:
                self._free_bytes -= self._entries[tx_id].size

    def reserved_at(self, tx_id: bytes) -> int | None:
        return self._reserved.get(tx_id)

    def release_all(self) -> None:
        """Forget every reservation (proposals in flight were abandoned)."""
        if not self._reserved:
            return
        self._reserved.clear()
        self._set_free(dict.fromkeys(self._entries))

    def release_above(self, height: int) -> None:
        """Forget reservations for proposals at heights > ``height``."""
        gone = [tx_id for tx_id, h in self._reserved.items() if h > height]
        if not gone:
            return
        for tx_id in gone:
            del self._reserved[tx_id]
        self._set_free({t: None for t in self._entries if t not in self._reserved})

    def committed(self, tx_ids: Iterable[bytes]) -> None:
        """Transactions were committed: drop them and remember their ids."""
        for tx_id in tx_ids:
            entry = self._entries.pop(tx_id, None)
            if entry is not None:
                if self._free.pop(tx_id, 0) is None:
                    self._free_bytes -= entry.size
                sender = entry.tx.sender
                left = self._by_sender[sender] - 1
                self._bytes -= entry.size
                if left:
                    self._by_sender[sender] = left
                    self._sender_bytes[sender] -= entry.size
                else:
                    del self._by_sender[sender]
                    del self._sender_bytes[sender]
            self._reserved.pop(tx_id, None)
            self._recent.add(tx_id)

    def batch(self, max_txs: int, max_bytes: int) -> list[Transaction]:
        """The oldest free transactions, up to ``max_txs`` and ``max_bytes``."""
        out: list[Transaction] = []
        size = 0
        for tx_id in self._free:
            entry = self._entries[tx_id]
            if out and size + entry.size > max_bytes:
                break
            out.append(entry.tx)
            size += entry.size
            if len(out) >= max_txs:
                break
        return out

    def oldest_free(self) -> tuple[bytes, int] | None:
        """The id and arrival time of the oldest free transaction (None: none)."""
        for tx_id in self._free:
            return tx_id, self._entries[tx_id].arrival_ms
        return None

    def oldest_free_arrival(self) -> int | None:
        first = self.oldest_free()
        return None if first is None else first[1]

    def overdue(self, deadline_ms: int) -> Iterator[tuple[Transaction, int]]:
        """Free transactions that arrived at or before ``deadline_ms``, oldest first,
        each with when it was last passed on (see :meth:`mark_forwarded`)."""
        for tx_id in self._free:
            entry = self._entries[tx_id]
            if entry.arrival_ms > deadline_ms:
                return
            yield entry.tx, entry.forwarded_ms

    def newest_arrival(self, tx_ids: Iterable[bytes]) -> int | None:
        """The latest arrival time among those of ``tx_ids`` held here (None: none)."""
        entries = self._entries
        times = [e.arrival_ms for e in map(entries.get, tx_ids) if e is not None]
        return max(times) if times else None

    def shift_arrivals(self, shift_ms: int) -> None:
        """Move every arrival (and forwarding) time ``shift_ms`` later (the clock was
        just set, or the node could not run for that long)."""
        for entry in self._entries.values():
            entry.arrival_ms += shift_ms
            entry.forwarded_ms += shift_ms

    def mark_forwarded(self, tx_id: bytes, now_ms: int) -> None:
        entry = self._entries.get(tx_id)
        if entry is not None:
            entry.forwarded_ms = now_ms
