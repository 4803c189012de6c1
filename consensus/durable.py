"""What a replica must remember across a crash so that it never contradicts itself.

The caller stores :attr:`Ready.persist` durably *before* sending the Ready's messages.
A replica rebuilt from its last :class:`DurableState` (and the committed height/hash of
its block store) therefore:

* never signs a PRE-PREPARE, PREPARE or COMMIT for a ``(view, height)`` with a block
  hash other than the one in :attr:`votes` (one entry per height: the highest view in
  which it endorsed a block there, and that block's hash);
* never takes part in a view below :attr:`view` (nor below :attr:`view_change_sent`,
  the highest view it asked to move to);
* still reports, in its next VIEW-CHANGE, every prepared certificate it held
  (:attr:`prepared`, the highest-view one per height) — without which a value
  committed by others could be missed by the new view.

Entries at or below the committed height (that the caller has confirmed stored) are
garbage-collected.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from consensus.messages import PreparedCertificate
from ledger.encoding import decode, encode
from ledger.errors import SchemaError
from ledger.schema import as_map, check_keys, get_int, get_list

_KEYS = frozenset({"v", "view", "act", "vcs", "votes", "prep"})
MAX_ENTRIES = 256


@dataclass(frozen=True)
class DurableState:
    """See the module docstring. ``to_bytes``/``from_bytes`` use the canonical encoding."""

    view: int = 0
    view_active: bool = True
    view_change_sent: int = 0
    votes: tuple[tuple[int, int, bytes], ...] = ()
    prepared: tuple[PreparedCertificate, ...] = ()

    def vote_at(self, height: int) -> tuple[int, bytes] | None:
        for h, view, block_hash in self.votes:
            if h == height:
                return view, block_hash
        return None

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": 1,
            "view": self.view,
            "act": self.view_active,
            "vcs": self.view_change_sent,
            "votes": [[h, v, b] for h, v, b in self.votes],
            "prep": [pc.encoded for pc in self.prepared],
        }

    @cached_property
    def _bytes(self) -> bytes:
        return encode(self.to_wire())

    def to_bytes(self) -> bytes:
        """Canonical bytes (each prepared certificate is embedded as its own encoding)."""
        return self._bytes

    def to_records(self) -> dict[bytes, bytes]:
        """The state as separate records, for a store that writes only what changed:
        ``b"meta"`` (view, votes) and one ``b"prep/<height>"`` per prepared certificate
        (its canonical encoding, computed once per certificate). Rebuild with
        :meth:`from_records`; a key absent from the new records must be deleted."""
        meta = self.to_wire()
        meta["prep"] = []
        out = {b"meta": encode(meta)}
        for pc in self.prepared:
            out[b"prep/%016x" % pc.height] = pc.encoded
        return out

    @staticmethod
    def from_records(records: dict[bytes, bytes]) -> DurableState:
        """Inverse of :meth:`to_records`; raises like :meth:`from_bytes`."""
        meta = records.get(b"meta")
        if meta is None:
            raise SchemaError("durable state: no meta record")
        base = DurableState.from_bytes(meta)
        prepared = []
        for key in sorted(records):
            if key.startswith(b"prep/"):
                prepared.append(PreparedCertificate.from_wire(decode(records[key])))
        if len(prepared) > MAX_ENTRIES:
            raise SchemaError("durable state: too many prepared certificates")
        return DurableState(
            view=base.view,
            view_active=base.view_active,
            view_change_sent=base.view_change_sent,
            votes=base.votes,
            prepared=tuple(sorted(prepared, key=lambda pc: pc.height)),
        )

    @staticmethod
    def from_bytes(data: bytes) -> DurableState:
        """Decode; raises :class:`ledger.errors.EncodingError` / :class:`SchemaError`."""
        m = as_map(decode(data), "durable state")
        check_keys(m, _KEYS, "durable state")
        if get_int(m, "v") != 1:
            raise SchemaError("durable state: unsupported version")
        active = m.get("act")
        if not isinstance(active, bool):
            raise SchemaError("field 'act': expected a boolean")
        votes = []
        for item in get_list(m, "votes", max_len=MAX_ENTRIES):
            if (
                not isinstance(item, list)
                or len(item) != 3
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in item[:2])
                or not isinstance(item[2], bytes)
                or len(item[2]) != 32
            ):
                raise SchemaError("durable state: vote must be [height, view, hash]")
            votes.append((item[0], item[1], item[2]))
        prepared = []
        for blob in get_list(m, "prep", max_len=MAX_ENTRIES):
            if not isinstance(blob, bytes):
                raise SchemaError("durable state: prepared certificate must be bytes")
            prepared.append(PreparedCertificate.from_wire(decode(blob)))
        return DurableState(
            view=get_int(m, "view"),
            view_active=active,
            view_change_sent=get_int(m, "vcs"),
            votes=tuple(sorted(votes)),
            prepared=tuple(sorted(prepared, key=lambda pc: pc.height)),
        )
