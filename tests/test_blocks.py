"""Transactions, block headers and blocks: signing, ids, wire forms and body checks."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.blocks import (
    MAX_RECORDS_PER_TX,
    MAX_TX_PAYLOAD_BYTES,
    MAX_TXS_PER_BLOCK,
    Block,
    BlockHeader,
    Transaction,
    block_record_leaves,
    build_block,
    channel_genesis_hash,
    compute_tx_root,
    record_leaf,
    record_leaves,
)
from ledger.crypto import ED25519, Ed25519Signer
from ledger.encoding import decode, encode
from ledger.errors import EncodingError, SchemaError, SignatureError
from ledger.hashing import TAG_TX, sha256, tagged_hash
from ledger.merkle import EMPTY_ROOT, merkle_root

NETWORK = bytes(range(32))
CHANNEL = "supervision"


@pytest.fixture(scope="module")
def signer() -> Ed25519Signer:
    return Ed25519Signer.generate()


def make_tx(signer: Ed25519Signer, nonce: int = 1, **over: Any) -> Transaction:
    fields: dict[str, Any] = {
        "network": NETWORK,
        "channel": CHANNEL,
        "type": "loan.disburse",
        "sender": "lender-1",
        "public_key": signer.public_key,
        "nonce": nonce,
        "time_ms": 1_700_000_000_000,
        "payload": {"loan": "L-1", "amount_cents": 100_000, "digest": b"\x07" * 32},
    }
    fields.update(over)
    return Transaction(**fields).signed(signer)


def make_header(txs: tuple[Transaction, ...] = (), **over: Any) -> BlockHeader:
    leaves = block_record_leaves(txs)
    fields: dict[str, Any] = {
        "channel": CHANNEL,
        "height": 3,
        "prev_hash": b"\x01" * 32,
        "tx_root": compute_tx_root(txs),
        "tx_count": len(txs),
        "record_root": merkle_root(leaves),
        "record_count": len(leaves),
        "state_height": 2,
        "state_root": b"\x02" * 32,
        "proposer": "bureau",
        "view": 0,
        "time_ms": 1_700_000_000_500,
    }
    fields.update(over)
    return BlockHeader(**fields)


def make_block(txs: tuple[Transaction, ...]) -> Block:
    return Block(make_header(txs), txs)


# --------------------------------------------------------------------------------------
# Transactions.


def test_sign_and_verify(signer: Ed25519Signer) -> None:
    tx = make_tx(signer)
    tx.verify_signature()
    assert len(tx.signature) == 64
    assert ED25519.verify(signer.public_key, TAG_TX, tx.body_bytes, tx.signature)
    # Deterministic: signing again gives the same signature and id.
    again = dataclasses.replace(tx, signature=b"").signed(signer)
    assert again == tx and again.tx_id == tx.tx_id


def test_unsigned_transaction_fails_verification(signer: Ed25519Signer) -> None:
    tx = dataclasses.replace(make_tx(signer), signature=b"")
    with pytest.raises(SignatureError):
        tx.verify_signature()


def test_signing_with_another_key_is_refused(signer: Ed25519Signer) -> None:
    tx = make_tx(signer)
    with pytest.raises(SignatureError):
        tx.signed(Ed25519Signer.generate())


def test_signature_by_another_key_fails(signer: Ed25519Signer) -> None:
    other = Ed25519Signer.generate()
    tx = make_tx(signer)
    forged = dataclasses.replace(tx, signature=other.sign(TAG_TX, tx.body_bytes))
    with pytest.raises(SignatureError):
        forged.verify_signature()


def test_tx_id_is_the_tagged_hash_of_the_body(signer: Ed25519Signer) -> None:
    tx = make_tx(signer)
    body = decode(tx.encoded())
    del body["sig"]
    assert tx.body_bytes == encode(body)
    assert tx.tx_id == tagged_hash(TAG_TX, encode(body))


def test_tx_id_stable_through_encode_decode(signer: Ed25519Signer) -> None:
    tx = make_tx(signer)
    data = tx.encoded()
    back = Transaction.decode(data)
    assert back == tx
    assert back.tx_id == tx.tx_id
    assert back.encoded() == data
    back.verify_signature()


_MUTATIONS: dict[str, Any] = {
    "network": b"\xff" * 32,
    "channel": "judicial",
    "type": "loan.repay",
    "sender": "lender-2",
    "public_key": b"\x05" * 32,
    "nonce": 2,
    "time_ms": 1_700_000_000_001,
    "payload": {"loan": "L-1", "amount_cents": 100_001, "digest": b"\x07" * 32},
    "signature": None,  # filled in per test: a bit-flipped signature
}


def test_mutation_table_covers_every_field() -> None:
    assert set(_MUTATIONS) == {f.name for f in dataclasses.fields(Transaction)}


@pytest.mark.parametrize("field", list(_MUTATIONS))
def test_any_single_field_mutation_is_detected(signer: Ed25519Signer, field: str) -> None:
    tx = make_tx(signer)
    value = _MUTATIONS[field]
    if field == "signature":
        value = bytes([tx.signature[0] ^ 1]) + tx.signature[1:]
    mutated = dataclasses.replace(tx, **{field: value})
    assert mutated != tx
    if field == "signature":
        assert mutated.tx_id == tx.tx_id  # the id does not cover the signature...
    else:
        assert mutated.tx_id != tx.tx_id  # ...but covers every other field
    with pytest.raises(SignatureError):
        mutated.verify_signature()
    # Also through the wire: the decoded mutant is still caught.
    back = Transaction.decode(mutated.encoded())
    with pytest.raises(SignatureError):
        back.verify_signature()


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_byte_mutations_of_a_signed_transaction_are_caught(
    signer: Ed25519Signer, data: Any
) -> None:
    tx = make_tx(signer)
    raw = bytearray(tx.encoded())
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] ^= data.draw(st.integers(1, 255))
    try:
        back = Transaction.decode(bytes(raw))
    except (EncodingError, SchemaError):
        return
    # Anything that still decodes is a different transaction that fails verification.
    assert back != tx
    assert back.encoded() == bytes(raw)
    with pytest.raises(SignatureError):
        back.verify_signature()


def _tx_wire(signer: Ed25519Signer) -> dict[str, Any]:
    w: dict[str, Any] = decode(make_tx(signer).encoded())
    return w


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("extra", 1),
        ("v", 2),
        ("v", True),
        ("v", "1"),
        ("net", bytes(31)),
        ("net", bytes(33)),
        ("net", "00" * 32),
        ("pk", bytes(31)),
        ("pk", bytes(33)),
        ("sig", bytes(63)),
        ("sig", bytes(65)),
        ("sig", b""),
        ("ch", "Supervision"),
        ("ch", ""),
        ("ch", "x" * 65),
        ("type", "loan disburse"),
        ("from", 1),
        ("nonce", -1),
        ("nonce", True),
        ("nonce", "1"),
        ("nonce", 2**63),
        ("t", -5),
        ("p", [1, 2]),
        ("p", None),
        ("p", b"payload"),
    ],
)
def test_transaction_decode_rejects_bad_fields(signer: Ed25519Signer, key: str, value: Any) -> None:
    w = _tx_wire(signer)
    w[key] = value
    with pytest.raises(SchemaError):
        Transaction.decode(encode(w))


@pytest.mark.parametrize("key", ["v", "net", "ch", "type", "from", "pk", "nonce", "t", "p", "sig"])
def test_transaction_decode_rejects_missing_fields(signer: Ed25519Signer, key: str) -> None:
    w = _tx_wire(signer)
    del w[key]
    with pytest.raises(SchemaError):
        Transaction.decode(encode(w))


@pytest.mark.parametrize("raw", [None, [], "tx", 5], ids=repr)
def test_transaction_decode_rejects_non_maps(raw: Any) -> None:
    with pytest.raises(SchemaError):
        Transaction.decode(encode(raw))


def test_transaction_decode_rejects_non_canonical_bytes(signer: Ed25519Signer) -> None:
    data = make_tx(signer).encoded()
    for bad in (data + b"\x00", data[:-1], b"", b"\xc1"):
        with pytest.raises(EncodingError):
            Transaction.decode(bad)


def test_transaction_decode_rejects_oversized(signer: Ed25519Signer) -> None:
    # Just over the body limit: refused by the schema check.
    w = _tx_wire(signer)
    w["p"] = {"blob": b"x" * MAX_TX_PAYLOAD_BYTES}
    with pytest.raises((SchemaError, EncodingError)):
        Transaction.decode(encode(w))
    # Far over: refused before parsing.
    w["p"] = {"blob": b"x" * (4 * MAX_TX_PAYLOAD_BYTES)}
    with pytest.raises(EncodingError):
        Transaction.decode(encode(w))
    # Comfortably under: accepted.
    w["p"] = {"blob": b"x" * (MAX_TX_PAYLOAD_BYTES // 2)}
    w["sig"] = signer.sign(TAG_TX, encode({k: v for k, v in w.items() if k != "sig"}))
    Transaction.decode(encode(w)).verify_signature()


def test_transaction_decode_has_one_byte_form(signer: Ed25519Signer) -> None:
    """A decoded transaction re-encodes to exactly the bytes it came from."""
    w = _tx_wire(signer)
    w["v"] = True  # canonical msgpack for a different value; must not alias v=1
    with pytest.raises(SchemaError):
        Transaction.decode(encode(w))


# --------------------------------------------------------------------------------------
# Block headers.

_HEADER_MUTATIONS: dict[str, Any] = {
    "channel": "judicial",
    "height": 4,
    "prev_hash": b"\x09" * 32,
    "tx_root": b"\x0a" * 32,
    "tx_count": 1,
    "record_root": b"\x0c" * 32,
    "record_count": 1,
    "state_height": 3,
    "state_root": b"\x0b" * 32,
    "proposer": "court",
    "view": 1,
    "time_ms": 1_700_000_000_501,
}


def test_header_mutation_table_covers_every_field() -> None:
    assert set(_HEADER_MUTATIONS) == {f.name for f in dataclasses.fields(BlockHeader)}


@pytest.mark.parametrize("field", list(_HEADER_MUTATIONS))
def test_header_hash_changes_with_every_field(field: str) -> None:
    header = make_header()
    mutated = dataclasses.replace(header, **{field: _HEADER_MUTATIONS[field]})
    assert mutated.hash != header.hash
    assert len(header.hash) == 32


def test_header_wire_round_trip() -> None:
    header = make_header()
    back = BlockHeader.from_wire(decode(header.encoded))
    assert back == header and back.hash == header.hash


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("extra", 0),
        ("v", 2),
        ("v", True),
        ("h", 0),
        ("n", MAX_TXS_PER_BLOCK + 1),
        ("n", -1),
        ("rr", bytes(31)),
        ("rn", -1),
        ("rn", True),
        ("prev", bytes(31)),
        ("txr", bytes(33)),
        ("sr", None),
        ("prop", "Bureau"),
        ("ch", 1),
        ("view", -1),
        ("t", "now"),
    ],
)
def test_header_from_wire_rejects_bad_fields(key: str, value: Any) -> None:
    w = decode(make_header().encoded)
    w[key] = value
    with pytest.raises(SchemaError):
        BlockHeader.from_wire(w)


@pytest.mark.parametrize(
    "key", ["v", "ch", "h", "prev", "txr", "n", "rr", "rn", "sh", "sr", "prop", "view", "t"]
)
def test_header_from_wire_rejects_missing_fields(key: str) -> None:
    w = decode(make_header().encoded)
    del w[key]
    with pytest.raises(SchemaError):
        BlockHeader.from_wire(w)


# --------------------------------------------------------------------------------------
# Blocks.


def records(*commitments: bytes) -> dict[str, Any]:
    return {"records": [{"c": c, "salt_hint": i} for i, c in enumerate(commitments)]}


@pytest.fixture(scope="module")
def txs(signer: Ed25519Signer) -> tuple[Transaction, ...]:
    # A mix of transactions with and without records.
    return (
        make_tx(signer, nonce=0),
        make_tx(signer, nonce=1, payload=records(b"\x11" * 32, b"\x12" * 32)),
        make_tx(signer, nonce=2),
        make_tx(signer, nonce=3, payload=records(b"\x13" * 32)),
        make_tx(signer, nonce=4, payload={"records": []}),
    )


def test_tx_root_is_merkle_root_of_ids(txs: tuple[Transaction, ...]) -> None:
    assert compute_tx_root(txs) == merkle_root([t.tx_id for t in txs])
    assert compute_tx_root(()) == EMPTY_ROOT
    assert compute_tx_root(list(txs)) == compute_tx_root(txs)


def test_check_body_accepts_matching_body(txs: tuple[Transaction, ...]) -> None:
    make_block(txs).check_body()
    make_block(()).check_body()


def test_check_body_catches_wrong_count(txs: tuple[Transaction, ...]) -> None:
    for count in (len(txs) - 1, len(txs) + 1, 0):
        block = Block(make_header(txs, tx_count=count), txs)
        with pytest.raises(SchemaError):
            block.check_body()


def test_check_body_catches_changed_transactions(
    signer: Ed25519Signer, txs: tuple[Transaction, ...]
) -> None:
    header = make_header(txs)
    extra = make_tx(signer, nonce=99)
    bodies = {
        "swapped": (txs[1], txs[0], *txs[2:]),
        "reversed": tuple(reversed(txs)),
        "removed": txs[:-1],
        "removed first": txs[1:],
        "added": (*txs, extra),
        "inserted": (txs[0], extra, *txs[1:]),
        "replaced": (*txs[:-1], extra),
        "duplicated": (*txs[:-1], txs[0]),
    }
    for body in bodies.values():
        with pytest.raises(SchemaError):
            Block(header, body).check_body()
        # Even with the count patched to match, the root catches it.
        with pytest.raises(SchemaError, match="tx_root"):
            Block(dataclasses.replace(header, tx_count=len(body)), body).check_body()


def test_check_body_catches_transaction_for_another_channel(
    signer: Ed25519Signer, txs: tuple[Transaction, ...]
) -> None:
    foreign = make_tx(signer, nonce=50, channel="judicial")
    body = (*txs[:2], foreign, *txs[2:])
    # Count and root are consistent with the body: only the channel check can catch it.
    with pytest.raises(SchemaError, match="channel"):
        make_block(body).check_body()


def test_block_wire_round_trip(txs: tuple[Transaction, ...]) -> None:
    block = make_block(txs)
    data = block.encoded()
    back = Block.decode(data)
    assert back == block
    assert back.hash == block.hash and back.height == block.height
    assert back.encoded() == data
    back.check_body()
    for tx in back.transactions:
        tx.verify_signature()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda w: w.update(v=True),
        lambda w: w.update(v=2),
        lambda w: w.pop("header"),
        lambda w: w.update(header=None),
        lambda w: w.update(txs={}),
        lambda w: w.update(extra=1),
        lambda w: w["txs"][0].update(v=True),
        lambda w: w["txs"][0].pop("sig"),
        lambda w: w["header"].update(v=True),
        lambda w: w["header"].pop("txr"),
    ],
)
def test_block_decode_rejects_malformed(txs: tuple[Transaction, ...], mutate: Any) -> None:
    w = decode(make_block(txs).encoded())
    mutate(w)
    with pytest.raises(SchemaError):
        Block.decode(encode(w))


def test_channel_genesis_hash_separates_networks_and_channels() -> None:
    a = channel_genesis_hash(NETWORK, "supervision")
    assert len(a) == 32
    assert a == channel_genesis_hash(NETWORK, "supervision")
    assert a != channel_genesis_hash(NETWORK, "judicial")
    assert a != channel_genesis_hash(bytes(32), "supervision")


# --------------------------------------------------------------------------------------
# Record leaves and build_block.


def test_record_leaves_in_block_order(txs: tuple[Transaction, ...]) -> None:
    assert record_leaves(txs[0]) == []
    assert record_leaves(txs[4]) == []
    assert record_leaves(txs[1]) == [
        record_leaf(txs[1].type, txs[1].tx_id, 0, b"\x11" * 32),
        record_leaf(txs[1].type, txs[1].tx_id, 1, b"\x12" * 32),
    ]
    leaves = block_record_leaves(txs)
    assert leaves == [*record_leaves(txs[1]), *record_leaves(txs[3])]
    assert decode(leaves[2]) == {
        "v": 1,
        "type": txs[3].type,
        "tx": txs[3].tx_id,
        "i": 0,
        "c": b"\x13" * 32,
    }


def test_record_leaf_binds_every_field(txs: tuple[Transaction, ...]) -> None:
    base = record_leaf("loan.disburse", b"\x01" * 32, 0, b"\x02" * 32)
    others = {
        record_leaf("loan.repay", b"\x01" * 32, 0, b"\x02" * 32),
        record_leaf("loan.disburse", b"\x03" * 32, 0, b"\x02" * 32),
        record_leaf("loan.disburse", b"\x01" * 32, 1, b"\x02" * 32),
        record_leaf("loan.disburse", b"\x01" * 32, 0, b"\x04" * 32),
    }
    assert len(others) == 4 and base not in others


@pytest.mark.parametrize(
    "payload",
    [
        {"records": "x"},
        {"records": {"c": b"\x00" * 32}},
        {"records": [b"\x00" * 32]},
        {"records": [{"c": b"\x00" * 31}]},
        {"records": [{"c": "00" * 32}]},
        {"records": [{}]},
        {"records": [{"c": b"\x00" * 32}] * (MAX_RECORDS_PER_TX + 1)},
    ],
    ids=["str", "map", "bytes-item", "short-c", "str-c", "no-c", "too-many"],
)
def test_malformed_records_are_refused(signer: Ed25519Signer, payload: dict[str, Any]) -> None:
    tx = make_tx(signer, payload=payload)
    with pytest.raises(SchemaError):
        record_leaves(tx)
    with pytest.raises(SchemaError):
        build_block(
            channel=CHANNEL,
            height=1,
            prev_hash=bytes(32),
            transactions=[tx],
            state_height=0,
            state_root=bytes(32),
            proposer="bureau",
            view=0,
            time_ms=1,
        )


def test_build_block_fills_roots_and_counts(txs: tuple[Transaction, ...]) -> None:
    block = build_block(
        channel=CHANNEL,
        height=3,
        prev_hash=b"\x01" * 32,
        transactions=list(txs),
        state_height=2,
        state_root=b"\x02" * 32,
        proposer="bureau",
        view=0,
        time_ms=1_700_000_000_500,
    )
    assert block.header == make_header(txs)
    assert block.header.record_count == 3
    assert block.header.record_root == merkle_root(block_record_leaves(txs))
    block.check_body()


def test_check_body_catches_wrong_record_root_or_count(txs: tuple[Transaction, ...]) -> None:
    header = make_header(txs)
    for change in (
        {"record_root": EMPTY_ROOT},
        {"record_root": merkle_root(block_record_leaves(txs)[:-1])},
        {"record_count": header.record_count - 1},
        {"record_count": header.record_count + 1},
    ):
        with pytest.raises(SchemaError, match="record"):
            Block(dataclasses.replace(header, **change), txs).check_body()


_SIGNER = Ed25519Signer.generate()


@settings(max_examples=60, deadline=None)
@given(
    tx_type=st.text(min_size=1, max_size=40),
    commitments=st.lists(st.binary(min_size=32, max_size=32), max_size=300),
)
def test_assembled_record_leaves_are_the_canonical_encoding(
    tx_type: str, commitments: list[bytes]
) -> None:
    """record_leaves assembles each leaf from shared parts; it must be byte for byte
    the canonical encoding record_leaf gives (indices past 127 and 255 change the
    integer's width; long or non-ASCII types change the string header)."""
    records = [{"c": c, "n": i} for i, c in enumerate(commitments)]
    tx = make_tx(_SIGNER, type=tx_type, payload={"records": records})
    expected = [record_leaf(tx_type, tx.tx_id, i, c) for i, c in enumerate(commitments)]
    assert record_leaves(tx) == expected
    assert record_leaves(tx) == expected  # the cached answer, a fresh list each time
    assert record_leaves(tx) is not record_leaves(tx)


def test_malformed_records_are_refused_on_every_call(signer: Ed25519Signer) -> None:
    tx = make_tx(signer, payload={"records": [{"c": b"\x01" * 32}, {"c": b"short"}]})
    for _ in range(2):
        with pytest.raises(SchemaError, match=r"records\[1\]\.c"):
            record_leaves(tx)


def test_two_keys_agree_a_shared_key_that_no_third_key_computes() -> None:
    a, b, c = (Ed25519Signer(sha256(bytes([i]))) for i in range(3))
    k = a.shared_key(b.public_key, b"ctx")
    assert len(k) == 32 and k == b.shared_key(a.public_key, b"ctx")
    assert k != a.shared_key(b.public_key, b"other context")
    assert k not in {c.shared_key(a.public_key, b"ctx"), c.shared_key(b.public_key, b"ctx")}
    for bad in (bytes(32), b"\x01" + bytes(31), b"short"):  # small order / not a key
        with pytest.raises(SignatureError):
            a.shared_key(bad, b"ctx")


def test_only_ascii_digits_are_decimal() -> None:
    from ledger.schema import is_decimal

    assert is_decimal("0") and is_decimal("1234567890")
    for text in ("", "-1", "1.5", " 1", "³", "1³", "٣", "１"):  # superscript, Arabic, fullwidth
        assert not is_decimal(text), text


def test_str_bytes_pairs_take_only_that_shape() -> None:
    """The one check behind a frame's messages, a prepared certificate's PREPAREs and a
    config update's approvals: a list of ``[str, bytes]``, the bytes bounded if asked."""
    from ledger.schema import get_str_bytes_pairs

    good = {"ps": [["a-node", b"\x01" * 64], ["b-node", b""]]}
    assert get_str_bytes_pairs(good, "ps", max_len=2, error="bad pair") == [
        ("a-node", b"\x01" * 64),
        ("b-node", b""),
    ]
    bad_items: list[Any] = [
        ("a", b"x"),  # a tuple is not what msgpack decodes
        ["a"],
        ["a", b"x", b"y"],
        [b"a", b"x"],
        ["a", "x"],
        ["a", bytearray(b"x")],
        "ab",
    ]
    for item in bad_items:
        with pytest.raises(SchemaError, match=r"^bad pair$"):
            get_str_bytes_pairs({"ps": [item]}, "ps", max_len=2, error="bad pair")
    with pytest.raises(SchemaError, match=r"^bad pair$"):
        get_str_bytes_pairs(good, "ps", max_len=2, error="bad pair", max_bytes=63)
    assert get_str_bytes_pairs(good, "ps", max_len=2, error="bad pair", max_bytes=64)
    with pytest.raises(SchemaError, match="more than 1 items"):
        get_str_bytes_pairs(good, "ps", max_len=1, error="bad pair")
    with pytest.raises(SchemaError, match="expected a list"):
        get_str_bytes_pairs({"ps": b"x"}, "ps", max_len=2, error="bad pair")
