"""The replica's durable state as write-ahead entries of one channel.

``Ready.persist`` is written as ``durable/meta`` (view, votes) and one
``durable/prep/<height, 16 hex digits>`` per prepared certificate
(:meth:`consensus.durable.DurableState.to_records`), and each Ready writes only the
entries that changed: a prepared certificate carries its whole block, and the state as
one entry (``durable``, still read at start) rewrote every prepared block still in
flight with every vote (under full load ~1.8 copies of each block, about as many bytes
as the ledger grew by; BENCHMARKS.md, session 18).

:class:`DurableWal` remembers what is on disk; the caller writes
:meth:`DurableWal.changes` in a synced batch (alone, or with committed blocks) and
then calls :meth:`DurableWal.written`. Entries are put and deleted in that one batch,
so the state on disk is always one whole state.
"""

from __future__ import annotations

from typing import Final, Protocol

from consensus.durable import DurableState

#: The entry that held the whole state (read at start; deleted by the first write).
LEGACY_ENTRY: Final = "durable"
PREFIX: Final = "durable/"


class WalStore(Protocol):
    def get_wal(self, channel: str, name: str) -> bytes | None: ...

    def wal_items(self, channel: str, prefix: str = "") -> dict[str, bytes]: ...


class DurableWal:
    """What of the durable state is on disk; see the module docstring."""

    def __init__(self, on_disk: dict[str, bytes], *, legacy: bool = False) -> None:
        self._on_disk = dict(on_disk)
        self._legacy = legacy
        self._pending: dict[str, bytes] | None = None

    @staticmethod
    def load(store: WalStore, channel: str) -> tuple[DurableState | None, DurableWal]:
        """The state on disk (None if there is none) and its tracker. Raises
        ``EncodingError``/``SchemaError`` if the entries do not decode (a corrupt WAL:
        the node must not vote from a guess)."""
        entries = store.wal_items(channel, PREFIX)
        legacy = store.get_wal(channel, LEGACY_ENTRY)
        if entries:
            records = {name[len(PREFIX) :].encode(): value for name, value in entries.items()}
            tracker = DurableWal(entries, legacy=legacy is not None)
            return DurableState.from_records(records), tracker
        if legacy is not None:
            return DurableState.from_bytes(legacy), DurableWal({}, legacy=True)
        return None, DurableWal({})

    def changes(self, state: DurableState) -> dict[str, bytes | None]:
        """The entries to write for ``state`` (``None``: delete): its records that
        differ from those on disk, and the deletion of those it no longer has. Call
        :meth:`written` once they are on disk."""
        records = {PREFIX + key.decode(): value for key, value in state.to_records().items()}
        out: dict[str, bytes | None] = {}
        for name, value in records.items():
            old = self._on_disk.get(name)
            if old is not value and old != value:  # a certificate's bytes are cached
                out[name] = value
        for name in self._on_disk:
            if name not in records:
                out[name] = None
        if self._legacy:
            out[LEGACY_ENTRY] = None
        self._pending = records
        return out

    def written(self) -> None:
        """The entries of the last :meth:`changes` are on disk."""
        if self._pending is None:
            raise RuntimeError("written() without changes()")
        self._on_disk, self._pending, self._legacy = self._pending, None, False
