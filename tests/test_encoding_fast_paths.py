"""The speed-ups of issue #9 change no byte and drop no check: spliced encodings equal
``encode``, the cheaper canonical check refuses what the old one refused, and the
transaction memo returns only what parsing would have returned."""

from __future__ import annotations

import gc
import secrets
import threading
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.messages import (
    Blocks,
    Forward,
    NewView,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    ViewChange,
    encode_message,
    message_from_wire,
)
from ledger import blocks as blocks_mod
from ledger.blocks import Block, Transaction, build_block
from ledger.certificate import CommitCertificate, Vote
from ledger.crypto import Ed25519Signer
from ledger.encoding import (
    INT_MAX,
    INT_MIN,
    _normalise,
    decode,
    decode_own,
    encode,
    encode_byte_pairs_and_names,
    encode_list_of_encoded,
    encode_map_of_encoded,
    is_canonical,
    pack,
)
from ledger.errors import EncodingError, LedgerError

scalars = (
    st.none()
    | st.booleans()
    | st.integers(INT_MIN, INT_MAX)
    | st.text(max_size=12)
    | st.binary(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=8), values, max_size=8))
def test_map_of_encoded_values_is_encode(m: dict[str, Any]) -> None:
    assert encode_map_of_encoded({k: encode(v) for k, v in m.items()}) == encode(m)


@settings(max_examples=40, deadline=None)
@given(st.lists(values, max_size=20))
def test_list_of_encoded_items_is_encode(xs: list[Any]) -> None:
    assert encode_list_of_encoded([encode(x) for x in xs]) == encode(xs)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.binary(max_size=70_000 // 64), st.none() | st.binary(max_size=40))),
    st.lists(st.from_regex(r"[a-z_]{0,40}", fullmatch=True), max_size=20),
)
def test_byte_pairs_and_names_is_encode(
    pairs: list[tuple[bytes, bytes | None]], names: list[str]
) -> None:
    expect = encode([[[k, v] for k, v in pairs], list(names)])
    assert encode_byte_pairs_and_names(pairs, names) == expect


@pytest.mark.parametrize(
    ("pairs", "names"),
    [([("k", b"v")], []), ([(b"k", "v")], []), ([(b"k", 1)], []), ([], ["é"]), ([], [b"x"])],
)
def test_byte_pairs_and_names_refuses_other_types(pairs: Any, names: Any) -> None:
    with pytest.raises(EncodingError):
        encode_byte_pairs_and_names(pairs, names)


@pytest.mark.parametrize("n", [0, 15, 16, 65_535, 65_536])
def test_long_headers_are_the_shortest(n: int) -> None:
    assert encode_list_of_encoded([encode(None)] * n) == encode([None] * n)
    m = {f"k{i:06d}": None for i in range(min(n, 70_000))}
    assert encode_map_of_encoded({k: encode(None) for k in m}) == encode(m)


@settings(max_examples=60, deadline=None)
@given(values)
def test_decode_round_trip_and_key_order(v: Any) -> None:
    data = encode(v)
    assert encode(decode(data)) == data


def test_decode_still_refuses_unsorted_and_duplicate_keys_and_long_forms() -> None:
    unsorted = msgpack.packb({"b": 1, "a": 2}, use_bin_type=True)
    with pytest.raises(EncodingError):
        decode(unsorted)
    # non-ASCII keys: canonical order is by UTF-8 bytes ("z" < "é")
    assert decode(encode({"é": 1, "z": 2})) == {"z": 2, "é": 1}
    with pytest.raises(EncodingError):
        decode(b"\x82" + msgpack.packb("é") + b"\x01" + msgpack.packb("z") + b"\x02")
    dup = b"\x82\xa1a\x01\xa1a\x02"  # {"a": 1, "a": 2}
    with pytest.raises(EncodingError):
        decode(dup)
    long_int = b"\xcd\x00\x05"  # 5 as uint16
    with pytest.raises(EncodingError):
        decode(long_int)
    str8_short = b"\xd9\x01a"  # "a" as str8 instead of fixstr
    with pytest.raises(EncodingError):
        decode(str8_short)
    nested_unsorted = encode([1])[:1] + msgpack.packb({"y": 1, "x": 2})
    with pytest.raises(EncodingError):
        decode(nested_unsorted)


def test_encode_refuses_what_it_refused() -> None:
    for bad in ({1: 2}, {"a": 1.5}, [2**64], "\ud800", {"\ud800": 1}, bytearray(b"x")):
        with pytest.raises(EncodingError):
            encode(bad)


@settings(max_examples=80, deadline=None)
@given(values | st.tuples(values, values) | st.builds(lambda v: {"b": v, "a": v}, values))
def test_is_canonical_only_when_plain_packing_is_encode(v: Any) -> None:
    if is_canonical(v):
        assert msgpack.packb(v, use_bin_type=True) == encode(v)
    assert is_canonical(decode(encode(v)))  # what a canonical decoder hands over passes


def test_is_canonical_refuses_what_encode_changes_or_refuses() -> None:
    deep: Any = []
    for _ in range(40):
        deep = [deep]
    for bad in (
        {"b": 1, "a": 2}, [{"b": 1, "a": 2}], (1, 2), {"a": (1,)}, {1: 2}, {"a": 1.5},
        [2**64], [-(2**63) - 1], "\ud800", ["\ud800"], {"\ud800": 1}, {"é": 1, "z": 2},
        bytearray(b"x"), [True, 1.0], deep,
    ):  # fmt: skip
        assert not is_canonical(bad), bad
    assert is_canonical({"a": [1, True, None, b"x", "é"], "b": {}})


@settings(max_examples=80, deadline=None)
@given(values)
def test_a_canonical_value_is_packed_as_it_is(v: Any) -> None:
    canonical = decode(encode(v))
    assert _normalise(canonical, 0) is canonical  # walked, not copied
    assert encode(canonical) == encode(v)


def test_a_value_out_of_order_is_copied_and_the_callers_value_left_alone() -> None:
    inner = {"b": 1, "a": 2}
    v: dict[str, Any] = {"x": [inner, (1, 2), {"c": 3}], "a": "k"}
    out = _normalise(v, 0)
    assert out is not v and list(v) == ["x", "a"] and list(inner) == ["b", "a"]
    assert list(out) == ["a", "x"] and list(out["x"][0]) == ["a", "b"]
    assert out["x"][2] is v["x"][2]  # members that needed nothing are shared
    assert encode(v) == encode({"a": "k", "x": [{"a": 2, "b": 1}, [1, 2], {"c": 3}]})
    assert encode(v) == msgpack.packb(
        {"a": "k", "x": [{"a": 2, "b": 1}, [1, 2], {"c": 3}]}, use_bin_type=True
    )


@settings(max_examples=60, deadline=None)
@given(values | st.tuples(values, values))
def test_pack_is_packb(v: Any) -> None:
    assert pack(v) == msgpack.packb(v, use_bin_type=True)


def test_pack_from_many_threads_at_once() -> None:
    values = [{"i": i, "b": bytes([i % 256]) * (i % 700), "s": "x" * (i % 50)} for i in range(400)]
    expected = [msgpack.packb(v, use_bin_type=True) for v in values]
    wrong: list[int] = []

    def work() -> None:
        for _ in range(20):
            for i, v in enumerate(values):
                if pack(v) != expected[i]:
                    wrong.append(i)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_a_packer_that_raised_is_not_reused() -> None:
    for _ in range(3):
        with pytest.raises(TypeError):
            pack({"a": [1, 2, object()]})
        assert pack({"a": [1, 2]}) == msgpack.packb({"a": [1, 2]}, use_bin_type=True)
        assert pack("z") == b"\xa1z"


def test_a_packer_grown_by_a_large_value_is_not_kept() -> None:
    from ledger import encoding

    encoding._PACKERS.clear()
    assert pack(b"x" * (200 * 1024))[:3] == b"\xc6\x00\x03"  # bin 32, 204,800 bytes
    assert encoding._PACKERS == []  # its buffer grew to 200 KiB: dropped
    pack(b"x")
    assert len(encoding._PACKERS) == 1


@settings(max_examples=60, deadline=None)
@given(values)
def test_decode_own_reads_back_what_encode_wrote(v: Any) -> None:
    data = encode(v)
    assert decode_own(data) == decode(data)
    assert encode(decode_own(data)) == data


def test_decode_own_refuses_what_is_not_messagepack_but_skips_the_canonical_walk() -> None:
    for bad in (b"", b"\xc1", b"\x81\xa1a", b"\x01\x02", b"\xd4\x01\x00"):  # ext, trailing…
        with pytest.raises(EncodingError):
            decode_own(bad)
    unsorted = msgpack.packb({"b": 1, "a": 2})
    with pytest.raises(EncodingError):
        decode(unsorted)  # bytes from outside: refused
    assert decode_own(unsorted) == {"b": 1, "a": 2}  # own state: never written this way


def test_state_reads_go_through_decode_own(monkeypatch: pytest.MonkeyPatch) -> None:
    from channels import state as state_mod

    calls: list[bytes] = []
    monkeypatch.setattr(state_mod, "decode_own", lambda b: calls.append(b) or decode(b))
    mem = state_mod.MemoryState()
    ws = state_mod.WriteSet(mem)
    ws.put_value(b"k", {"a": 1})
    assert ws.get_value(b"k") == {"a": 1}
    mem.apply_writes(ws.writes())
    assert state_mod.read_value(mem, b"k") == {"a": 1}
    assert calls == [encode({"a": 1})] * 2


def _tx(signer: Ed25519Signer, payload: dict[str, Any]) -> Transaction:
    return Transaction(
        network=b"\x01" * 32, channel="supervision", type="loan_event", sender="lender1",
        public_key=signer.public_key, nonce=secrets.randbits(62), time_ms=1, payload=payload,
    ).signed(signer)  # fmt: skip


def test_transaction_memo_returns_only_identical_maps() -> None:
    signer = Ed25519Signer.generate()
    tx = _tx(signer, {"amount": 1, "records": [{"c": b"\x07" * 32}]})
    first = Transaction.from_wire(decode(tx.encoded()))  # as it arrives from a peer
    assert first == tx
    again = Transaction.from_wire(decode(tx.encoded()))
    assert again is first  # memo hit: same parsed value
    # same signature, a value that is == but not identical (True == 1): parsed afresh
    tampered = decode(tx.encoded())
    tampered["p"] = {"amount": True, "records": [{"c": b"\x07" * 32}]}
    other = Transaction.from_wire(tampered)
    assert other is not first and other.payload["amount"] is True
    assert other.tx_id != tx.tx_id
    with pytest.raises(LedgerError):
        other.verify_signature()
    # a map that fails its checks is never remembered
    bad = tx.to_wire()
    bad["nonce"] = "x"
    with pytest.raises(LedgerError):
        Transaction.from_wire(bad)
    with pytest.raises(LedgerError):
        Transaction.from_wire(bad)


def test_transaction_memo_is_bounded() -> None:
    signer = Ed25519Signer.generate()
    for i in range(blocks_mod.WIRE_MEMO_SIZE + 50):
        Transaction.from_wire(_tx(signer, {"i": i}).to_wire())
    assert len(blocks_mod._wire_memo) <= blocks_mod.WIRE_MEMO_SIZE
    assert blocks_mod._wire_memo_bytes[0] == sum(len(p) for p, _ in blocks_mod._wire_memo.values())
    assert blocks_mod._wire_memo_bytes[0] <= blocks_mod.WIRE_MEMO_BYTES


def test_spliced_block_and_message_encodings_equal_encode() -> None:
    signer = Ed25519Signer.generate()
    txs = [_tx(signer, {"i": i, "records": [{"c": bytes([i]) * 32}]}) for i in range(40)]
    block = build_block(
        channel="supervision", height=3, prev_hash=b"\x00" * 32, transactions=txs,
        state_height=0, state_root=b"\x00" * 32, proposer="n1", view=2, time_ms=5,
    )  # fmt: skip
    assert block.encoded() == encode(block.to_wire())
    assert Block.decode(block.encoded()) == block
    cert = CommitCertificate("supervision", 3, 2, block.hash, (Vote("n1", b"\x05" * 64),))
    pp = PrePrepare("supervision", "n1", 2, block, b"\x09" * 64)
    prepares = tuple(
        Prepare("supervision", f"n{i}", 2, 3, block.hash, bytes([i]) * 64) for i in (2, 3)
    )
    prepared = PreparedCertificate(pp, prepares)
    assert prepared.encoded == encode(prepared.to_wire())
    vcs = (
        ViewChange("supervision", "n2", 3, 0, None, None, (prepared,), b"\x0a" * 64),
        ViewChange("supervision", "n3", 3, 2, block.header, cert, (prepared,), b"\x0b" * 64),
    )
    for msg in (
        pp,
        Forward("supervision", "n1", tuple(txs), b"\x09" * 64),
        Blocks("supervision", "n1", ((block, cert),), b"\x09" * 64),
        *vcs,
        NewView("supervision", "n2", 3, vcs, (pp,), b"\x0c" * 64),
    ):
        assert encode_message(msg) == encode(msg.to_wire())
        assert message_from_wire(decode(encode_message(msg))) == msg


def test_a_large_transaction_still_alive_is_not_parsed_again() -> None:
    """Batch reports are too large for the bounded memo; one the process still holds
    (mempool, replica log) is found by signature when it comes back in a PRE-PREPARE
    or VIEW-CHANGE — only if the repeat is the very same bytes."""
    signer = Ed25519Signer.generate()
    records = [{"c": secrets.token_bytes(32), "n": "x" * 200} for _ in range(1000)]
    tx = _tx(signer, {"records": records})
    assert len(tx.encoded()) > blocks_mod.WIRE_MEMO_BYTES // 8  # not in the bounded memo
    first = Transaction.from_wire(decode(tx.encoded()))
    # parsed from canonical bytes: the cached encodings are those encode() gives
    assert first.__dict__["_encoded"] == encode(first.to_wire()) == tx.encoded()
    assert first.body_bytes == encode(first.body())
    assert first.tx_id == tx.tx_id
    first.verify_signature()
    assert Transaction.from_wire(decode(tx.encoded())) is first
    # same signature, other bytes: parsed afresh (and its signature fails)
    changed = decode(tx.encoded())
    changed["nonce"] += 1
    other = Transaction.from_wire(changed)
    assert other is not first and other.nonce == tx.nonce + 1
    with pytest.raises(LedgerError):
        other.verify_signature()
    # a map in another key order (a JSON client's) is parsed afresh, to an equal value
    shuffled = dict(reversed(list(tx.to_wire().items())))
    from_json = Transaction.from_wire(shuffled)
    assert from_json == first and from_json is not first
    assert from_json.encoded() == tx.encoded()
    assert Transaction.from_wire(decode(tx.encoded())) == first
    # the weak references keep nothing alive: once nothing else holds it, it is gone
    del first, other, from_json
    gc.collect()
    assert tx.signature not in blocks_mod._live_txs
    again = Transaction.from_wire(decode(tx.encoded()))
    assert again == tx and again.tx_id == tx.tx_id
    assert blocks_mod._live_txs.get(tx.signature) is again
    del again
    gc.collect()
    assert tx.signature not in blocks_mod._live_txs


def test_a_non_canonical_wire_map_gets_canonical_encodings() -> None:
    signer = Ed25519Signer.generate()
    tx = _tx(signer, {"z": 1, "a": {"y": [1, 2], "b": "é"}})
    wire = tx.to_wire()  # keys in construction order, payload unsorted
    parsed = Transaction.from_wire(wire)
    assert parsed.body_bytes == encode(tx.body())
    assert parsed.encoded() == encode(tx.to_wire())
    parsed.verify_signature()
