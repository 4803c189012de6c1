"""What every reported loan event costs the rules, kept cheap without changing a byte:
the keys built by concatenation equal the generic join, the maps written are built in
canonical key order (so ``encode`` packs them as they are), and a block's repeated
reads of the committed state reach it once (``ReadMemo``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels import base as base_mod
from channels import supervision as sup
from channels.base import BlockTx, apply_block
from channels.context import BlockContext
from channels.loans import EventFact, EventRef, LoanEvent, LoanSummary, fold_event
from channels.state import OK, MemoryState, ReadMemo, StateReader
from ledger.encoding import encode, pack
from tests.channels.helpers import Harness

NAMES = st.text(min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(NAMES, NAMES, st.binary(min_size=32, max_size=32))
def test_event_keys_equal_the_generic_join(org: str, name: str, ref: bytes) -> None:
    k = sup._k
    assert sup.lender_key(org) == k(b"sup/lender", org)
    assert sup.loan_key(org, name) == k(b"sup/loan", org, name)
    assert sup.event_prefix(org, name) == k(b"sup/ev", org, name) + b"/"
    assert sup.borrower_prefix(ref) == k(b"sup/bx", ref.hex()) + b"/"
    assert sup.lender_loans_prefix(org) == k(b"sup/lx", org) + b"/"
    assert sup.activity_prefix(org) == k(b"sup/lact", org) + b"/"
    assert sup.book_prefix(org) == k(b"sup/lagg", org) + b"/"
    assert sup.book_current_key(org) == k(b"sup/lcur", org)
    assert sup.report_id_key(org, name) == k(b"sup/rid", org, name)


def _event() -> LoanEvent:
    return LoanEvent(
        report_id="r1", loan_id="L1", borrower_ref=b"\x01" * 32, event="contract",
        amount_cents=100_000, rate_bp=1500, term_months=12, event_time_ms=1_700_000_000_000,
        commitment=b"\x02" * 32,
    )  # fmt: skip


def test_the_maps_written_for_an_event_are_in_canonical_key_order() -> None:
    ev = _event()
    ref = EventRef(b"\x03" * 32, 4)
    summary = fold_event(None, "lender-a", ev, 9)
    maps = {
        "LoanEvent": ev.to_wire(),
        "EventRef": ref.to_wire(),
        "EventFact": EventFact("lender-a", 0, 9, 1_700_000_000_001, ref, ev).to_wire(),
        "LoanSummary": summary.to_wire(),
        "EMPTY_BOOK": dict(sup.EMPTY_BOOK),
    }
    for name, m in maps.items():
        assert list(m) == sorted(m), name
        assert encode(m) == pack(m), name  # encode takes the map as it is
    # and the values are whole: they decode back to what was written
    assert LoanSummary.from_wire(maps["LoanSummary"]) == summary
    assert EventFact.from_wire(maps["EventFact"]).ev == ev


class CountingReader:
    def __init__(self, base: StateReader) -> None:
        self.base = base
        self.gets: list[bytes] = []
        self.scans = 0

    def get(self, key: bytes) -> bytes | None:
        self.gets.append(key)
        return self.base.get(key)

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        self.scans += 1
        return self.base.iter_prefix(prefix)

    def last_below(self, prefix: bytes, stop: bytes) -> tuple[bytes, bytes] | None:
        return self.base.last_below(prefix, stop)


def test_read_memo_reads_each_key_once_absent_ones_too_and_scans_through() -> None:
    base = MemoryState()
    base.apply_writes([(b"a/1", b"x"), (b"a/2", b"y")])
    reader = CountingReader(base)
    memo = ReadMemo(reader)
    assert [memo.get(b"a/1") for _ in range(3)] == [b"x"] * 3
    assert [memo.get(b"nope") for _ in range(3)] == [None] * 3
    assert reader.gets == [b"a/1", b"nope"]
    base.apply_writes([(b"a/3", b"z")])
    assert list(memo.iter_prefix(b"a/")) == [(b"a/1", b"x"), (b"a/2", b"y"), (b"a/3", b"z")]
    assert memo.last_below(b"a/", b"a/3") == (b"a/2", b"y")
    assert reader.scans == 1


def test_a_block_of_one_lenders_reports_reads_its_record_and_book_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Twenty reports by one lender in one block: the lender's record and running book
    are read from the committed state once for the whole block, and the block's
    outcomes, writes and state root are those it has without the memo."""
    h = Harness()
    h.admit("lender-a")
    txs = [
        h.tx(
            "supervision", "lender-a", "loan_event", h.event(f"L{i}", "contract", 1000, borrower=i)
        )
        for i in range(20)
    ]
    net = h.net
    ctx = BlockContext("supervision", h.height("supervision") + 1, h.now, h.params, net)
    btxs = [BlockTx(tx, "lender") for tx in txs]
    prev = net.roots["supervision"]
    reader = CountingReader(net.states["supervision"])
    memoised = apply_block(net.rules["supervision"], reader, btxs, ctx, prev_root=prev)
    assert [o.code for o in memoised.outcomes] == [OK] * 20
    assert reader.gets.count(sup.lender_key("lender-a")) == 1
    assert reader.gets.count(sup.book_current_key("lender-a")) == 1

    monkeypatch.setattr(base_mod, "ReadMemo", lambda state: state)
    reader = CountingReader(net.states["supervision"])
    plain = apply_block(net.rules["supervision"], reader, btxs, ctx, prev_root=prev)
    assert reader.gets.count(sup.lender_key("lender-a")) == 20
    assert plain == memoised
