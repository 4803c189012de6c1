"""Memory a node keeps per transaction stays bounded (the soak's finding, docs/reliability.md).

Under steady load every node parses each transaction from the wire
(:meth:`ledger.blocks.Transaction.from_wire`), which remembers recent ones in a memo.
Its former bound (8,192 entries, 8 MiB of packed bytes) let the parsed transactions it
keeps (≈ 10 × their packed size each) reach 17 MiB for small loan events and up to
~90 MB for larger ones, filling for many minutes at soak rates: RSS growth the soak
read as a leak. These tests measure what the memo retains with ``tracemalloc``.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

import ledger.blocks as blocks_mod
from ledger.blocks import Transaction

#: The most the wire memo may keep resident, whatever the transactions look like.
MEMO_RESIDENT_LIMIT = 16 * 1024 * 1024


@pytest.fixture(autouse=True)
def _empty_memo() -> Iterator[None]:
    blocks_mod._wire_memo.clear()
    blocks_mod._wire_memo_bytes[0] = 0
    yield
    blocks_mod._wire_memo.clear()
    blocks_mod._wire_memo_bytes[0] = 0


def _packed_tx(i: int, payload: dict[str, Any]) -> bytes:
    """A distinct transaction's wire map, packed as a peer or client sends it (the
    memo does not check signatures, so a fixed one will do)."""
    tx = Transaction(
        b"\x02" * 32, "supervision", "loan_event", "lender1", b"\x03" * 32,
        i, 1_700_000_000_000 + i, payload, i.to_bytes(8, "big") + b"\x05" * 56,
    )  # fmt: skip
    return bytes(msgpack.packb(tx.to_wire(), use_bin_type=True))


def _retained_after_parsing(packed: list[bytes]) -> int:
    """Bytes still allocated after parsing every wire map (decoded inside the traced
    region, as a node decodes a frame) and dropping the results."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for raw in packed:
            tx = Transaction.from_wire(msgpack.unpackb(raw, raw=False))
            tx.encoded()  # what the node computes and caches: id, encodings
            _ = tx.tx_id
        del tx
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_wire_memo_of_small_transactions_stays_small() -> None:
    """10,000 small loan events (≈ 240 packed bytes, ≈ 2.5 KB parsed each): the memo
    keeps only its bounded window: 2,048 of them, 4.3 MiB (before the fix 8,192,
    17 MiB)."""
    packed = [_packed_tx(i, {"k": f"lender1-0-{i}-7", "v": i}) for i in range(10_000)]
    retained = _retained_after_parsing(packed)
    assert len(blocks_mod._wire_memo) <= blocks_mod.WIRE_MEMO_SIZE
    assert retained < 8 * 1024 * 1024, f"memo keeps {retained / 2**20:.1f} MiB"


def test_wire_memo_of_large_transactions_is_bounded_by_resident_size() -> None:
    """2,000 transactions with 25 records each (≈ 1.2 KB packed, ≈ 11 KB parsed): the
    byte bound keeps the parsed forms under the limit (before the fix all 2,000 fit
    in its 8 MiB of packed bytes: 22 MiB resident; now ≈ 850 of them, 9.4 MiB)."""
    packed = [
        _packed_tx(i, {"records": [{"c": bytes([i % 256, j]) * 16, "n": j} for j in range(25)]})
        for i in range(2_000)
    ]
    retained = _retained_after_parsing(packed)
    assert blocks_mod._wire_memo_bytes[0] <= blocks_mod.WIRE_MEMO_BYTES
    assert retained < MEMO_RESIDENT_LIMIT, f"memo keeps {retained / 2**20:.1f} MiB"


def test_wire_memo_still_returns_the_parsed_transaction_for_a_repeat() -> None:
    """A repeat within the window is served from the memo (the same object)."""
    raw = _packed_tx(1, {"k": "x", "v": 1})
    first = Transaction.from_wire(msgpack.unpackb(raw, raw=False))
    for i in range(2, 200):
        Transaction.from_wire(msgpack.unpackb(_packed_tx(i, {"k": "y", "v": i}), raw=False))
    assert Transaction.from_wire(msgpack.unpackb(raw, raw=False)) is first


class _AcceptAll:
    """A signature scheme that accepts everything (the cache's memory is under test)."""

    name = "accept-all"

    def verify(self, public_key: bytes, tag: str, message: bytes, signature: bytes) -> bool:
        return True


def test_default_message_signature_cache_stays_within_its_budget() -> None:
    """A replica's memo of verified message signatures, at the default size and full
    of PREPARE votes (each entry keeps its signing bytes, ≈ 330 B resident), stays
    under 8 MiB per channel: 16,384 entries, 5 MiB (the former 65,536: 21 MiB per
    channel, filled by about an hour of load)."""
    from dataclasses import fields

    from consensus.config import ReplicaConfig
    from consensus.messages import Prepare
    from consensus.verification import SignatureCache

    size = next(f.default for f in fields(ReplicaConfig) if f.name == "signature_cache_size")
    assert isinstance(size, int)
    cache = SignatureCache(_AcceptAll(), size)  # type: ignore[arg-type]
    senders = ("bureau-node", "court-node", "risk_centre-node", "credit_agency-node")
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for h in range(1, 17_501):  # 70,000 votes, as they arrive
            for s in senders:
                v = Prepare("supervision", s, 3, h, h.to_bytes(32, "big"), os.urandom(64))
                assert cache.verify(b"\x03" * 32, v.tag, v.signing_bytes, v.signature)
        del v
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert retained < 8 * 1024 * 1024, f"signature cache keeps {retained / 2**20:.1f} MiB"
