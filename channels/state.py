"""The state API the channel rules run against, and the block state digest.

* :class:`StateReader` — what the rules may read: ``get``, ``iter_prefix`` (key
  order) and ``last_below`` (one backward seek). The LevelDB store and
  :class:`MemoryState` implement it.
* :class:`WriteSet` — an overlay recording puts and deletes over a reader; reads see
  the overlay's own writes. A block gets one overlay; each transaction a child overlay
  that is merged into the block's on success and dropped on rejection, so a rejected
  transaction leaves no trace.
* :func:`state_root_after` — the chained state digest of a block (a digest of its
  :func:`state_delta`: writes, outcome codes and results; *not* a Merkle root of the
  whole state; see ``docs/channels.md``). :func:`parse_state_delta` reads a delta
  back, for a node that catches up without applying the blocks.
* Height-stamped keys: ``<prefix><height as 12 decimal digits>[/…]``.
  :func:`iter_height_range` and :func:`last_at_or_below` answer "facts in heights
  (lo, hi]" (a handful of prefix ranges: decimal prefix decomposition) and "latest
  fact at or below H" (one ``last_below`` seek), so as-of-height reads stay cheap on
  any :class:`StateReader`.

Values are canonical encodings (:mod:`ledger.encoding`); :meth:`WriteSet.get_value`
and :meth:`WriteSet.put_value` wrap that.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from ledger.encoding import decode_own, encode, encode_byte_pairs_and_names
from ledger.errors import EncodingError
from ledger.hashing import TAG_STATE, tagged_hash

#: Width of a zero-padded decimal height inside a key.
HEIGHT_DIGITS: Final = 12
MAX_HEIGHT: Final = 10**HEIGHT_DIGITS - 1

#: The ``prev_root`` of the first block of a channel (documented constant).
GENESIS_STATE_ROOT: Final = tagged_hash(TAG_STATE, b"genesis")

#: Outcome code of a VALID transaction in the state digest and in :class:`TxOutcome`.
OK: Final = "ok"


class StateReader(Protocol):
    """Read access to a channel's key-value state (bytes keys, canonical values)."""

    def get(self, key: bytes) -> bytes | None: ...

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Items whose key starts with ``prefix``, in ascending byte order of key."""
        ...

    def last_below(self, prefix: bytes, stop: bytes) -> tuple[bytes, bytes] | None:
        """The item with the greatest key that starts with ``prefix`` and is less than
        ``stop``, or ``None``."""
        ...


def _prefix_end(prefix: bytes) -> bytes | None:
    """Smallest key greater than every key starting with ``prefix`` (None: no bound)."""
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return None
    p[-1] += 1
    return bytes(p)


class ReadMemo:
    """``base`` read through a memo: each key's value (or its absence) is read from
    ``base`` once. For the span of one block's application, while ``base`` does not
    change (the block's writes go to a :class:`WriteSet` above this): the transactions
    of a block read the same few keys again and again (the sender's record, its running
    totals), each a LevelDB read on a node. Prefix scans are not memoised."""

    def __init__(self, base: StateReader) -> None:
        self._base = base
        self._seen: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        try:
            return self._seen[key]
        except KeyError:
            value = self._seen[key] = self._base.get(key)
            return value

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self._base.iter_prefix(prefix)

    def last_below(self, prefix: bytes, stop: bytes) -> tuple[bytes, bytes] | None:
        return self._base.last_below(prefix, stop)


class _SortedKeys:
    """A dict plus its keys in order, sorted lazily: O(1) writes, and O(log n) prefix
    ranges once sorted. A block's overlay takes tens of thousands of writes between
    two ordered reads; keeping the list sorted on every insert cost O(n) each."""

    def __init__(self) -> None:
        self.items: dict[bytes, Any] = {}
        self._sorted: list[bytes] = []
        self._new: list[bytes] = []
        self._removed = False

    def set(self, key: bytes, value: Any) -> None:
        if key not in self.items:
            self._new.append(key)
        self.items[key] = value

    def remove(self, key: bytes) -> None:
        if key in self.items:
            del self.items[key]
            self._removed = True

    @property
    def keys(self) -> list[bytes]:
        """Every key, in ascending byte order (do not modify the list)."""
        if self._removed:  # rare (an in-memory state applying deletes): start over
            self._sorted = sorted(self.items)
            self._new = []
            self._removed = False
        elif self._new:
            self._new.sort()
            # two sorted runs: Timsort merges them in linear time
            self._sorted = sorted(self._sorted + self._new) if self._sorted else self._new
            self._new = []
        return self._sorted

    def range(self, prefix: bytes) -> list[bytes]:
        keys = self.keys
        lo = bisect.bisect_left(keys, prefix)
        end = _prefix_end(prefix)
        hi = len(keys) if end is None else bisect.bisect_left(keys, end)
        return keys[lo:hi]

    def last_below(self, prefix: bytes, stop: bytes) -> bytes | None:
        """The greatest key starting with ``prefix`` and less than ``stop``."""
        keys = self.keys
        end = _prefix_end(prefix)
        i = bisect.bisect_left(keys, stop if end is None else min(stop, end)) - 1
        if i >= 0 and keys[i].startswith(prefix):
            return keys[i]
        return None


class MemoryState:
    """An in-memory :class:`StateReader` that block write sets are applied to.

    Used by the tests and the in-memory network; the node uses the LevelDB store.
    """

    def __init__(self) -> None:
        self._data = _SortedKeys()

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._data.items.get(key)
        return value

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key in self._data.range(prefix):
            yield key, self._data.items[key]

    def last_below(self, prefix: bytes, stop: bytes) -> tuple[bytes, bytes] | None:
        key = self._data.last_below(prefix, stop)
        return None if key is None else (key, self._data.items[key])

    def apply_writes(self, writes: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Apply a block's writes (``None`` deletes)."""
        for key, value in writes:
            if value is None:
                self._data.remove(key)
            else:
                self._data.set(key, value)

    def __len__(self) -> int:
        return len(self._data.items)

    def snapshot(self) -> dict[bytes, bytes]:
        """A copy of every item (tests compare states with it)."""
        return dict(self._data.items)


_DELETED: Final = None


class WriteSet:
    """A write overlay over ``base``: records puts and deletes; reads see them.

    ``child()`` opens a nested overlay; ``merge_into_parent()`` folds a child's writes
    into its parent; ``discard()`` forgets them. Nothing reaches ``base``: the caller
    takes :meth:`writes` and persists them (atomically, with the block).
    """

    def __init__(self, base: StateReader, *, parent: WriteSet | None = None) -> None:
        self._base = base
        self._parent = parent
        self._writes = _SortedKeys()

    # -- reads -------------------------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        if key in self._writes.items:
            value: bytes | None = self._writes.items[key]
            return value
        return self._base.get(key)

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Merged view of base and own writes, in key order (own writes snapshotted
        when iteration starts; do not rely on seeing writes made while iterating)."""
        own_keys = self._writes.range(prefix)
        own = [(k, self._writes.items[k]) for k in own_keys]
        shadowed = set(own_keys)
        i = 0
        for key, value in self._base.iter_prefix(prefix):
            while i < len(own) and own[i][0] < key:
                if own[i][1] is not _DELETED:
                    yield own[i]
                i += 1
            if key in shadowed:
                continue
            yield key, value
        while i < len(own):
            if own[i][1] is not _DELETED:
                yield own[i]
            i += 1

    def last_below(self, prefix: bytes, stop: bytes) -> tuple[bytes, bytes] | None:
        """Merged like :meth:`iter_prefix`: an own write shadows the base's item; a
        deleted key is skipped and the search goes on below it."""
        while True:
            own = self._writes.last_below(prefix, stop)
            base = self._base.last_below(prefix, stop)
            if own is None or (base is not None and base[0] > own):
                return base
            value = self._writes.items[own]
            if value is not _DELETED:
                return own, value
            stop = own

    def get_value(self, key: bytes) -> Any:
        """Decoded value at ``key`` or ``None`` if absent (:func:`~ledger.encoding.decode_own`:
        state values are this node's own encodings)."""
        raw = self.get(key)
        return None if raw is None else decode_own(raw)

    # -- writes ------------------------------------------------------------------
    def put(self, key: bytes, value: bytes) -> None:
        self._writes.set(key, bytes(value))

    def put_value(self, key: bytes, value: Any) -> None:
        self.put(key, encode(value))

    def delete(self, key: bytes) -> None:
        self._writes.set(key, _DELETED)

    # -- nesting -----------------------------------------------------------------
    def child(self) -> WriteSet:
        return WriteSet(self, parent=self)

    def merge_into_parent(self) -> None:
        if self._parent is None:
            raise RuntimeError("merge_into_parent on a top-level WriteSet")
        parent = self._parent._writes
        for key, value in self._writes.items.items():
            parent.set(key, value)
        self.discard()

    def discard(self) -> None:
        self._writes = _SortedKeys()

    def writes(self) -> tuple[tuple[bytes, bytes | None], ...]:
        """Every recorded write in key order (``None`` = delete)."""
        return tuple((k, self._writes.items[k]) for k in self._writes.keys)

    def __len__(self) -> int:
        return len(self._writes.items)


def read_value(reader: StateReader, key: bytes) -> Any:
    """Decoded value at ``key`` of any reader, or ``None`` (readers hold this node's
    own state: :func:`~ledger.encoding.decode_own`)."""
    raw = reader.get(key)
    return None if raw is None else decode_own(raw)


def state_delta(
    block_writes: Sequence[tuple[bytes, bytes | None]],
    outcome_codes: Sequence[str],
    outcome_results: Sequence[Any] | None = None,
) -> bytes:
    """A block's state delta: what its state digest covers beyond the previous one.

    ``encode([sorted writes, outcome codes, outcome results])``: each write is
    ``[key, value or None]``; ``outcome_results[i]`` is the result map of VALID
    transaction ``i`` or ``None`` (rejected transactions' messages are not covered:
    they are human text). ``None`` for the results means none has one. A node that
    catches up may take a delta from a peer in place of applying the block, once the
    delta chains to a certified root (:func:`parse_state_delta`). Raises
    :class:`~ledger.encoding.EncodingError` for a value that has no canonical form.
    """
    writes = sorted(block_writes, key=lambda kv: kv[0])
    results = [None] * len(outcome_codes) if outcome_results is None else list(outcome_results)
    if len(results) != len(outcome_codes):
        raise ValueError("one result per outcome code")
    # = encode([[[k, v] for k, v in writes], list(outcome_codes), results]), the first
    # two packed without the normalising walk
    pairs_and_codes = encode_byte_pairs_and_names(writes, list(outcome_codes))
    return b"\x93" + pairs_and_codes[1:] + encode(results)


def state_root_after(
    prev_root: bytes,
    block_writes: Sequence[tuple[bytes, bytes | None]],
    outcome_codes: Sequence[str],
    outcome_results: Sequence[Any] | None = None,
) -> bytes:
    """Chained state digest after a block:
    ``tagged_hash(TAG_STATE, prev_root + state_delta(writes, codes, results))``.

    Two validators that applied the same blocks to the same genesis have the same
    digest; it is *not* a Merkle root of the state and cannot prove single keys.
    """
    return root_after_delta(prev_root, state_delta(block_writes, outcome_codes, outcome_results))


def root_after_delta(prev_root: bytes, delta: bytes) -> bytes:
    """The state digest that ``delta`` (:func:`state_delta`) chains ``prev_root`` to."""
    if len(prev_root) != 32:
        raise ValueError("prev_root must be 32 bytes")
    return tagged_hash(TAG_STATE, prev_root + delta)


@dataclass(frozen=True)
class ParsedDelta:
    """A decoded :func:`state_delta`."""

    writes: tuple[tuple[bytes, bytes | None], ...]
    codes: tuple[str, ...]
    results: tuple[dict[str, Any] | None, ...]


def parse_state_delta(delta: bytes, n_txs: int) -> ParsedDelta:
    """Decode a state delta of a block of ``n_txs`` transactions. Only for a delta
    whose root was checked against a certified one: it is then the validators' own
    encoding. Raises :class:`~ledger.encoding.EncodingError` if it is not one
    (wrong shape, types, or number of outcomes)."""
    try:
        raw = decode_own(delta)
    except Exception as exc:  # msgpack raises several types for garbage
        raise EncodingError(f"state delta: {exc}") from None
    if not isinstance(raw, list) or len(raw) != 3:
        raise EncodingError("state delta: not [writes, codes, results]")
    pairs, codes, results = raw
    if not (isinstance(pairs, list) and isinstance(codes, list) and isinstance(results, list)):
        raise EncodingError("state delta: not [writes, codes, results]")
    if len(codes) != n_txs or len(results) != n_txs:
        raise EncodingError(f"state delta: {len(codes)} outcomes for {n_txs} transactions")
    writes: list[tuple[bytes, bytes | None]] = []
    for pair in pairs:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or type(pair[0]) is not bytes
            or not (pair[1] is None or type(pair[1]) is bytes)
        ):
            raise EncodingError("state delta: a write is not [bytes key, bytes or nil]")
        writes.append((pair[0], pair[1]))
    if not all(type(c) is str for c in codes):
        raise EncodingError("state delta: outcome codes must be strings")
    if not all(r is None or isinstance(r, dict) for r in results):
        raise EncodingError("state delta: outcome results must be maps or nil")
    return ParsedDelta(tuple(writes), tuple(codes), tuple(results))


# -- height-stamped keys --------------------------------------------------------


def height_part(height: int) -> bytes:
    """The fixed-width decimal form of ``height`` used inside keys."""
    if not 0 <= height <= MAX_HEIGHT:
        raise ValueError(f"height {height} out of range")
    return b"%012d" % height


def seq_part(n: int) -> bytes:
    """Fixed-width decimal for indexes inside a block or a loan history."""
    return b"%06d" % n


def _cover(lo: int, hi: int, width: int) -> list[str]:
    """Minimal ascending list of decimal prefixes covering exactly ``[lo, hi]``
    among ``width``-digit zero-padded numbers."""
    if lo > hi:
        return []
    top = 10**width - 1
    if lo == 0 and hi == top:
        return [""]
    unit = 10 ** (width - 1)
    dl, rl = divmod(lo, unit)
    dh, rh = divmod(hi, unit)
    if dl == dh:
        return [str(dl) + p for p in _cover(rl, rh, width - 1)]
    out = [str(dl) + p for p in _cover(rl, unit - 1, width - 1)]
    out += [str(d) for d in range(dl + 1, dh)]
    out += [str(dh) + p for p in _cover(0, rh, width - 1)]
    return out


def iter_height_range(
    reader: StateReader, prefix: bytes, lo_exclusive: int, hi_inclusive: int
) -> Iterator[tuple[bytes, bytes]]:
    """Items under ``prefix + height_part(h) …`` with ``lo_exclusive < h <= hi_inclusive``,
    in key order (so in height order)."""
    lo = max(lo_exclusive + 1, 0)
    hi = min(hi_inclusive, MAX_HEIGHT)
    for p in _cover(lo, hi, HEIGHT_DIGITS):
        yield from reader.iter_prefix(prefix + p.encode())


def last_at_or_below(reader: StateReader, prefix: bytes, height: int) -> tuple[bytes, bytes] | None:
    """The greatest item under ``prefix + height_part(h) …`` with ``h <= height``
    (one backward seek: every key under ``prefix`` is height-stamped)."""
    if height < 0:
        return None
    stop = _prefix_end(prefix + height_part(min(height, MAX_HEIGHT)))
    assert stop is not None  # the height part ends in an ASCII digit
    return reader.last_below(prefix, stop)
