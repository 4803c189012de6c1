"""Catch-up answers' extras: their wire form, what the sender's signature covers, the
refusals on decoding, and that a replica passes the extras of the blocks it commits
from an answer on in its Ready."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from test_replica_harness import CHANNEL, Cluster

from consensus import Blocks, Fetch, Ready, decode_message, encode_message, sign
from consensus.messages import _digest, certificate_digest, tx_signatures_digest
from ledger.blocks import Block
from ledger.certificate import CommitCertificate
from ledger.encoding import decode, encode
from ledger.errors import SchemaError

Entries = tuple[tuple[Block, CommitCertificate], ...]


@pytest.fixture(scope="module", params=[False, True], ids=["fast", "ed25519"])
def committed(request: pytest.FixtureRequest) -> tuple[Cluster, Entries]:
    """A cluster whose validators committed three blocks."""
    c = Cluster(5, ed25519=request.param, batch_interval_ms=0, max_batch_txs=1)
    c.tick(0)
    c.submit("n1", c.clients.txs(3))
    c.run(100)
    assert c.apps["n0"].height == 3
    return c, tuple(c.apps["n0"].chain)


def _verifies(c: Cluster, b: Blocks) -> bool:
    key = c.node_signers[b.sender].public_key
    return bool(c.scheme.verify(key, b.tag, b.signing_bytes, b.signature))


def test_extras_round_trip_through_the_wire_map(committed: tuple[Cluster, Entries]) -> None:
    c, entries = committed
    extras = (b"\x93\x90\x90\x90", b"", b"delta-3")
    b = sign(Blocks(CHANNEL, "n1", entries, extras=extras), c.node_signers["n1"])
    wire = b.to_wire()
    assert wire["x"] == list(extras)
    back = Blocks.from_wire(decode(encode(wire)))
    assert back == b and back.extras == extras
    assert _verifies(c, back)


def test_extras_survive_encode_message(committed: tuple[Cluster, Entries]) -> None:
    """How a node sends a message: encode_message (not to_wire) gives its bytes."""
    c, entries = committed
    extras = (b"delta-1", b"", b"delta-3")
    b = sign(Blocks(CHANNEL, "n1", entries, extras=extras), c.node_signers["n1"])
    data = encode_message(b)
    assert data == encode(b.to_wire())
    back = decode_message(data)
    assert isinstance(back, Blocks)
    assert back.extras == extras
    assert _verifies(c, back)


def test_without_extras_the_answer_is_as_before(committed: tuple[Cluster, Entries]) -> None:
    """No "x" on the wire, and the signing bytes an answer had before extras existed:
    old and new nodes verify each other's answers."""
    c, entries = committed
    b = sign(Blocks(CHANNEL, "n2", entries), c.node_signers["n2"])
    assert b.extras == ()
    assert "x" not in b.to_wire()
    assert "x" not in decode(encode_message(b))
    before = encode(
        {
            "k": b.kind,
            "ch": CHANNEL,
            "from": "n2",
            "e": _digest(
                [
                    [blk.hash, tx_signatures_digest(blk.transactions), certificate_digest(cert)]
                    for blk, cert in entries
                ]
            ),
        }
    )
    assert b.signing_bytes == before
    assert Blocks(CHANNEL, "n2", entries, extras=()).signing_bytes == before
    back = decode_message(encode_message(b))
    assert back == b and _verifies(c, back)


def test_the_signature_covers_the_extras(committed: tuple[Cluster, Entries]) -> None:
    c, entries = committed
    b = sign(Blocks(CHANNEL, "n1", entries, extras=(b"a", b"", b"c")), c.node_signers["n1"])
    assert _verifies(c, b)
    for other in (
        (b"A", b"", b"c"),  # one extra changed
        (b"a", b"b", b"c"),  # one added
        (b"", b"a", b"c"),  # moved to another block
        (b"a", b"", b"c" + bytes(1)),
        (b"a", b"", b""),
        (),  # all stripped
    ):
        tampered = replace(b, extras=other)
        assert tampered.signing_bytes != b.signing_bytes, other
        assert not _verifies(c, tampered), other
    # the same bytes split differently between blocks are different extras
    split = sign(Blocks(CHANNEL, "n1", entries, extras=(b"ab", b"", b"")), c.node_signers["n1"])
    assert split.signing_bytes != replace(split, extras=(b"a", b"b", b"")).signing_bytes


def _wire_with(c: Cluster, entries: Entries, extras: Any) -> bytes:
    wire = sign(Blocks(CHANNEL, "n1", entries), c.node_signers["n1"]).to_wire()
    return encode({**wire, "x": extras})


@pytest.mark.parametrize(
    "extras",
    [
        pytest.param([b"a", b"b"], id="fewer-than-entries"),
        pytest.param([b"a", b"b", b"c", b"d"], id="more-than-entries"),
        pytest.param([], id="empty-list"),
        pytest.param([b"a", "b", b"c"], id="a-str"),
        pytest.param([b"a", 2, b"c"], id="an-int"),
        pytest.param([b"a", None, b"c"], id="a-nil"),
        pytest.param([b"a", [b"b"], b"c"], id="a-list"),
        pytest.param(b"abc", id="bytes-not-list"),
        pytest.param({"1": b"a"}, id="map-not-list"),
    ],
)
def test_decoding_refuses_extras_that_are_not_one_byte_string_per_entry(
    committed: tuple[Cluster, Entries], extras: Any
) -> None:
    c, entries = committed
    assert decode_message(_wire_with(c, entries, [b"a", b"", b"c"])).extras == (b"a", b"", b"c")  # type: ignore[union-attr]
    with pytest.raises(SchemaError):
        decode_message(_wire_with(c, entries, extras))


# ---------------------------------------------------------------------------------------
# A replica that catches up
# ---------------------------------------------------------------------------------------

EXTRAS = {2: b"delta-2", 4: b"delta-4", 5: b"delta-5"}


def _behind(n: int = 6) -> Cluster:
    """n4 is ``n`` heights behind and cut off: only injected messages reach it."""
    c = Cluster(5, batch_interval_ms=0, max_batch_txs=1)
    c.tick(0)
    c.crash("n4")
    c.submit("n1", c.clients.txs(n))
    c.run(100)
    assert c.apps["n0"].height == n and c.apps["n4"].height == 0
    c.down.discard("n4")
    c.drop = lambda src, dst, m: dst == "n4" or src == "n4"
    return c


def _readies(c: Cluster, name: str) -> list[Ready]:
    seen: list[Ready] = []
    c.on_ready = lambda who, rd, _h: seen.append(rd) if who == name else None
    return seen


def _answer_to(c: Cluster, peer: str, lo: int, hi: int) -> Blocks:
    """What ``peer`` answers n4's FETCH of ``lo``..``hi``."""
    c.sent.clear()
    c.step(peer, sign(Fetch(CHANNEL, "n4", lo, hi), c.node_signers["n4"]))
    [answer] = [m for src, to, m in c.sent if src == peer and to == "n4"]
    assert isinstance(answer, Blocks)
    return answer


def test_a_fetched_answer_carries_the_extras_and_ready_hands_them_on() -> None:
    c = _behind(6)
    c.apps["n0"].extras.update(EXTRAS)
    plain = _answer_to(c, "n1", 1, 6)  # n1 keeps no extras
    assert plain.extras == () and "x" not in plain.to_wire()
    answer = _answer_to(c, "n0", 1, 6)
    assert [b.height for b, _ in answer.entries] == [1, 2, 3, 4, 5, 6]
    assert answer.extras == (b"", b"delta-2", b"", b"delta-4", b"delta-5", b"")
    assert _verifies(c, answer)

    readies = _readies(c, "n4")
    c.step("n4", answer)
    r = c.replicas["n4"]
    assert r.committed_height == 6 and r.metrics["catchup.blocks"] == 6
    c.run(1_000)  # later Readies (STATUS and the like) carry no extras
    assert len(readies) > 1
    assert [b.height for rd in readies for b, _ in rd.committed] == [1, 2, 3, 4, 5, 6]
    for rd in readies:
        heights = {b.height for b, _ in rd.committed}
        assert dict(rd.extras) == {h: x for h, x in EXTRAS.items() if h in heights}
    assert {h: x for rd in readies for h, x in rd.extras.items()} == EXTRAS
    # an answer without extras commits with none
    c2 = _behind(6)
    readies2 = _readies(c2, "n4")
    c2.step("n4", _answer_to(c2, "n1", 1, 6))
    assert c2.replicas["n4"].committed_height == 6
    assert all(not rd.extras for rd in readies2)


def test_only_the_blocks_committed_from_the_answer_have_their_extras_handed_on() -> None:
    """Blocks already committed, and those from the first that does not check on, are
    not committed from the answer: their extras are not in any Ready."""
    c = _behind(6)
    c.apps["n0"].extras.update({1: b"delta-1", **EXTRAS})
    readies = _readies(c, "n4")
    first = sign(Blocks(CHANNEL, "n1", tuple(c.apps["n1"].chain[:2])), c.node_signers["n1"])
    c.step("n4", first)
    assert c.replicas["n4"].committed_height == 2
    answer = _answer_to(c, "n0", 1, 6)
    broken = list(answer.entries)
    blk5, cert5 = broken[4]
    broken[4] = (blk5, replace(cert5, votes=cert5.votes[:2]))  # too few votes
    c.step("n4", sign(replace(answer, entries=tuple(broken)), c.node_signers["n0"]))
    assert c.replicas["n4"].committed_height == 4
    assert c.replicas["n4"].metrics["catchup.bad_certificate"] == 1
    assert {h: x for rd in readies for h, x in rd.extras.items()} == {4: b"delta-4"}


def test_an_answer_whose_extras_were_altered_is_dropped() -> None:
    c = _behind(3)
    c.apps["n0"].extras.update({2: b"delta-2"})
    answer = _answer_to(c, "n0", 1, 3)
    readies = _readies(c, "n4")
    c.step("n4", replace(answer, extras=(b"", b"forged", b"")))
    r = c.replicas["n4"]
    assert r.committed_height == 0
    assert r.metrics["dropped.bad_signature"] == 1
    assert all(not rd.extras and not rd.committed for rd in readies)
    c.step("n4", answer)
    assert r.committed_height == 3
    assert {h: x for rd in readies for h, x in rd.extras.items()} == {2: b"delta-2"}
