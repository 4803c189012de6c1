"""Consensus messages: wire round trips, what signatures cover, decoding refusals."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from test_replica_harness import CHANNEL, GENESIS_PREV, Clients, make_signers

from consensus import (
    Blocks,
    Commit,
    DurableState,
    Fetch,
    Forward,
    Message,
    NewView,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    Status,
    ViewChange,
    decode_message,
    describe,
    encode_message,
    sign,
)
from consensus.messages import MAX_PREPARED
from ledger.blocks import Block, build_block
from ledger.certificate import CommitCertificate, Validator, ValidatorSet, verify_certificate
from ledger.encoding import decode, encode
from ledger.errors import CertificateError, EncodingError, SchemaError

NODES = ["n0", "n1", "n2", "n3", "n4"]


@pytest.fixture(params=[False, True], ids=["fast", "ed25519"])
def keys(request: pytest.FixtureRequest) -> tuple[Clients, dict[str, Any]]:
    scheme, signers = make_signers([*NODES, "lender-1"], request.param)
    return Clients(scheme, {"lender-1": signers["lender-1"]}), {
        "scheme": scheme,
        **{n: signers[n] for n in NODES},
    }


def _block(clients: Clients, height: int = 1, ntx: int = 3) -> Block:
    return build_block(
        channel=CHANNEL,
        height=height,
        prev_hash=GENESIS_PREV,
        transactions=clients.txs(ntx),
        state_height=0,
        state_root=bytes(32),
        proposer="n0",
        view=0,
        time_ms=1234,
    )


def _all_messages(clients: Clients, k: dict[str, Any]) -> list[Message]:
    def s(msg: Message, who: str) -> Message:
        return sign(msg, k[who])

    block = _block(clients)
    pp = s(PrePrepare(CHANNEL, "n0", 0, block), "n0")
    assert isinstance(pp, PrePrepare)
    prepares = tuple(s(Prepare(CHANNEL, n, 0, 1, block.hash), n) for n in NODES[:4])
    commits = [s(Commit(CHANNEL, n, 0, 1, block.hash), n) for n in NODES[:4]]
    cert = CommitCertificate(
        CHANNEL, 1, 0, block.hash, tuple(c.vote() for c in commits if isinstance(c, Commit))
    )
    pc = PreparedCertificate(pp, prepares)
    vc = s(ViewChange(CHANNEL, "n1", 1, 0, None, None, (pc,)), "n1")
    vc2 = s(ViewChange(CHANNEL, "n2", 1, 1, block.header, cert, ()), "n2")
    nv = s(NewView(CHANNEL, "n1", 1, (vc, vc2), (pp,)), "n1")
    return [
        pp,
        prepares[1],
        commits[2],
        vc,
        vc2,
        nv,
        s(Forward(CHANNEL, "n3", tuple(block.transactions)), "n3"),
        s(Status(CHANNEL, "n4", 7, False, 12, block.hash), "n4"),
        s(Fetch(CHANNEL, "n4", 3, 66), "n4"),
        s(Blocks(CHANNEL, "n2", ((block, cert),)), "n2"),
    ]


def test_every_message_round_trips_and_still_verifies(keys: tuple[Clients, dict[str, Any]]) -> None:
    clients, k = keys
    scheme = k["scheme"]
    for msg in _all_messages(clients, k):
        data = encode_message(msg)
        back = decode_message(data)
        assert back == msg, msg.kind
        assert encode_message(back) == data
        assert back.fingerprint == msg.fingerprint
        pk = k[msg.sender].public_key
        assert scheme.verify(pk, back.tag, back.signing_bytes, back.signature), msg.kind


def test_commit_signatures_are_certificate_votes(keys: tuple[Clients, dict[str, Any]]) -> None:
    clients, k = keys
    vset = ValidatorSet(tuple(Validator(n, k[n].public_key) for n in NODES))
    block = _block(clients)
    commits = [sign(Commit(CHANNEL, n, 2, 1, block.hash), k[n]) for n in NODES[:4]]
    cert = CommitCertificate(CHANNEL, 1, 2, block.hash, tuple(c.vote() for c in commits))
    verify_certificate(
        cert, channel=CHANNEL, height=1, block_hash=block.hash, validators=vset, scheme=k["scheme"]
    )
    short = replace(cert, votes=cert.votes[:3])
    with pytest.raises(CertificateError):
        verify_certificate(
            short,
            channel=CHANNEL,
            height=1,
            block_hash=block.hash,
            validators=vset,
            scheme=k["scheme"],
        )


def test_preprepare_signature_covers_client_signatures(
    keys: tuple[Clients, dict[str, Any]],
) -> None:
    clients, k = keys
    block = _block(clients)
    pp = sign(PrePrepare(CHANNEL, "n0", 0, block), k["n0"])
    # Swap one client signature: the header hash is unchanged (it covers tx ids only)…
    txs = list(block.transactions)
    txs[1] = replace(txs[1], signature=bytes(64))
    tampered_block = Block(block.header, tuple(txs))
    assert tampered_block.hash == block.hash
    # …but the primary's signature no longer verifies.
    tampered = replace(pp, block=tampered_block)
    scheme = k["scheme"]
    pk = k["n0"].public_key
    assert scheme.verify(pk, pp.tag, pp.signing_bytes, pp.signature)
    assert not scheme.verify(pk, tampered.tag, tampered.signing_bytes, tampered.signature)


def test_signatures_are_bound_to_kind_channel_and_sender(
    keys: tuple[Clients, dict[str, Any]],
) -> None:
    _clients, k = keys
    scheme = k["scheme"]
    p = sign(Prepare(CHANNEL, "n1", 0, 1, bytes(32)), k["n1"])
    pk = k["n1"].public_key
    for other in (
        replace(p, channel="risk"),
        replace(p, sender="n2"),
        replace(p, view=1),
        Commit(CHANNEL, "n1", 0, 1, bytes(32), p.signature),
    ):
        assert not scheme.verify(pk, other.tag, other.signing_bytes, other.signature)


def _wire(msg: Message) -> Any:
    return decode(encode_message(msg))


def test_decoding_refuses_malformed_messages() -> None:
    _scheme, signers = make_signers(["n0"], False)
    p = sign(Prepare(CHANNEL, "n0", 0, 1, bytes(32)), signers["n0"])
    good = _wire(p)
    bad_cases: list[object] = [
        {**good, "k": "hello"},
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "h"},
        {**good, "h": 0},
        {**good, "b": b"short"},
        {**good, "ch": "Not A Name"},
        {**good, "sig": "text"},
        [1, 2, 3],
    ]
    for raw in bad_cases:
        with pytest.raises(SchemaError):
            decode_message(encode(raw))
    f = _wire(sign(Fetch(CHANNEL, "n0", 5, 9), signers["n0"]))
    with pytest.raises(SchemaError):
        decode_message(encode({**f, "hi": 4}))  # to < from
    data = encode_message(p)
    with pytest.raises(EncodingError):
        decode_message(data[:-1])  # truncated
    with pytest.raises(EncodingError):
        decode_message(data + b"\x00")  # trailing bytes
    with pytest.raises(EncodingError):
        decode_message(data, max_size=len(data) - 1)  # over the size bound
    noncanonical = bytes([0xDE, 0x00, len(good)]) + data[1:]  # map16 header for a fixmap
    with pytest.raises(EncodingError):
        decode_message(noncanonical)


def test_list_bounds_are_enforced_on_decode() -> None:
    _scheme, signers = make_signers(["n0"], False)
    vc = _wire(sign(ViewChange(CHANNEL, "n0", 1, 0, None, None, ()), signers["n0"]))
    fake_pc = {"pp": {}, "ps": []}
    with pytest.raises(SchemaError):
        decode_message(encode({**vc, "p": [fake_pc] * (MAX_PREPARED + 1)}))


def test_durable_state_round_trips(keys: tuple[Clients, dict[str, Any]]) -> None:
    clients, k = keys
    messages = _all_messages(clients, k)
    vc = messages[3]
    assert isinstance(vc, ViewChange)
    state = DurableState(
        view=3,
        view_active=False,
        view_change_sent=3,
        votes=((1, 0, bytes(32)), (2, 3, b"\x01" * 32)),
        prepared=vc.prepared,
    )
    back = DurableState.from_bytes(state.to_bytes())
    assert back == state
    records = state.to_records()
    assert sorted(records) == [b"meta", b"prep/0000000000000001"]
    assert DurableState.from_records(records) == state
    assert back.vote_at(2) == (3, b"\x01" * 32)
    assert back.vote_at(5) is None
    for garbage in (b"", b"\x80", encode({"v": 2})):
        with pytest.raises((SchemaError, EncodingError)):
            DurableState.from_bytes(garbage)


def test_describe_is_one_readable_line(keys: tuple[Clients, dict[str, Any]]) -> None:
    clients, k = keys
    lines = [describe(m) for m in _all_messages(clients, k)]
    assert all("\n" not in line for line in lines)
    assert lines[0].startswith("PRE-PREPARE v0 h1 ")
    assert lines[3].startswith("VIEW-CHANGE v1 stable=0 prepared=[1@v0:")
    assert lines[7] == "STATUS v7 (changing) h12"
    assert lines[8] == "FETCH 3..66"
    assert lines[9] == "BLOCKS 1..1"
