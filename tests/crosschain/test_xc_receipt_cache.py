"""What makes a node's verification of many records cheap, without changing any
answer: :class:`ProvenBlock` (leaves and Merkle tree computed once per block), the
thread-safe :class:`ProvenBlockCache`, and :class:`CertificateMemo` (certificate
checks memoised by their exact inputs)."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import Counter

import pytest

from crosschain.receipt import (
    CertificateMemo,
    ProvenBlock,
    ProvenBlockCache,
    ProvenBlockSource,
    TrustRoot,
    assemble_receipt,
    build_receipt_from,
    verify_receipt,
)
from ledger.blocks import Block, block_record_leaves, record_leaves
from ledger.certificate import CommitCertificate, ValidatorSet, Vote, verify_certificate
from ledger.crypto import ED25519, Signer
from ledger.errors import CertificateError, SchemaError
from ledger.evidence_code import code_for_leaf
from ledger.merkle import inclusion_proof
from tests.crosschain.harness import Network, ReceiptSourceImpl
from tests.crosschain.receipt_vectors import VECTOR_DIR, Scenario, scenario


@pytest.fixture(scope="module")
def sc() -> Scenario:
    return scenario()


class CachedSource(ReceiptSourceImpl):
    """The harness's receipt source serving proven blocks from a cache; counts loads."""

    def __init__(self, net: Network, cache: ProvenBlockCache) -> None:
        super().__init__(net)
        self.cache = cache
        self.loads: Counter[tuple[str, int]] = Counter()

    def proven_block(self, channel: str, height: int) -> ProvenBlock | None:
        def load() -> ProvenBlock | None:
            self.loads[(channel, height)] += 1
            got = self.block(channel, height)
            return None if got is None else ProvenBlock.of(*got)

        return self.cache.get(channel, height, load)


def proven(net: Network, channel: str, height: int) -> ProvenBlock:
    ledger = net.sup if channel == "supervision" else net.jud
    got = ledger.committed_block(height)
    assert got is not None
    return ProvenBlock.of(*got)


def anchored_codes(net: Network) -> list[tuple[int, object]]:
    out = []
    for ref in net.records:
        if ref.height > net.light_client().height:
            continue
        got = net.sup.committed_block(ref.height)
        assert got is not None
        out.append(
            (ref.height, code_for_leaf(block_record_leaves(got[0].transactions)[ref.leaf_index]))
        )
    return out


# -- ProvenBlock and the cached source give the very same receipts ----------------------


@pytest.mark.parametrize("max_blocks", [1, 2, 64])
def test_cached_source_assembles_identical_receipts(sc: Scenario, max_blocks: int) -> None:
    net = sc.net
    plain = net.receipt_source()
    cached = CachedSource(net, ProvenBlockCache(max_blocks=max_blocks))
    assert isinstance(cached, ProvenBlockSource)
    assert not isinstance(plain, ProvenBlockSource)
    codes = anchored_codes(net)
    assert len(codes) > 20
    for _height, code in codes:
        assert assemble_receipt(code, cached) == assemble_receipt(code, plain)  # type: ignore[arg-type]
    blocks = {k for k in cached.loads}
    if max_blocks == 64:  # everything fits: each block proven exactly once
        assert set(cached.loads.values()) == {1}
        assert cached.cache.hits == 2 * len(codes) - len(blocks)
    assert len(cached.cache) <= max_blocks


def anchor_inclusion(judicial_block: Block, tx_index: int) -> tuple[int, tuple[bytes, ...]]:
    """Reference: the anchor's leaf index and audit path, from the whole block."""
    txs = judicial_block.transactions
    if not 0 <= tx_index < len(txs) or not record_leaves(txs[tx_index]):
        raise SchemaError(f"judicial transaction {tx_index} is not a header anchor")
    before = sum(len(record_leaves(t)) for t in txs[:tx_index])
    leaves = block_record_leaves(txs)
    return before, tuple(inclusion_proof(leaves, before))


def test_anchor_inclusion_of_proven_blocks_matches(sc: Scenario) -> None:
    net = sc.net
    checked = 0
    for h in range(1, net.jud.height + 1):
        got = net.jud.committed_block(h)
        assert got is not None
        block = got[0]
        pb = ProvenBlock.of(*got)
        assert pb.tree.root == block.header.record_root
        assert list(pb.leaves) == block_record_leaves(block.transactions)
        for i in range(len(block.transactions) + 1):
            try:
                want = anchor_inclusion(block, i)
            except SchemaError:
                with pytest.raises(SchemaError):
                    pb.anchor_inclusion(i)
                continue
            assert pb.anchor_inclusion(i) == want
            checked += 1
    assert checked > 5


def test_sender_of(sc: Scenario) -> None:
    got = sc.net.sup.committed_block(sc.late.height)
    assert got is not None
    pb = ProvenBlock.of(*got)
    for tx in got[0].transactions:
        assert pb.sender_of(tx.tx_id) == tx.sender
    assert pb.sender_of(bytes(32)) is None


# -- ProvenBlockCache ---------------------------------------------------------------------


def test_cache_is_lru_by_blocks_and_skips_missing(sc: Scenario) -> None:
    cache = ProvenBlockCache(max_blocks=2)
    loads: Counter[int] = Counter()

    def get(h: int) -> ProvenBlock | None:
        def load() -> ProvenBlock | None:
            loads[h] += 1
            return proven(sc.net, "supervision", h) if h <= sc.net.sup.height else None

        return cache.get("supervision", h, load)

    for h in (1, 2, 1, 3):  # 2 is the least recently used when 3 arrives
        block = get(h)
        assert block is not None and block.height == h
    assert len(cache) == 2
    assert get(1) is not None and loads[1] == 1
    assert get(2) is not None and loads[2] == 2  # evicted, loaded again
    missing = 10_000
    assert get(missing) is None and get(missing) is None
    assert loads[missing] == 2  # a missing block is never cached
    assert cache.hits == 2 and cache.misses == 6


def test_cache_respects_its_byte_budget(sc: Scenario) -> None:
    blocks = [proven(sc.net, "supervision", h) for h in (1, 16, 17)]
    budget = max(b.approx_bytes() for b in blocks) + 1
    cache = ProvenBlockCache(max_blocks=64, max_bytes=budget)
    for b in blocks:
        assert cache.get("supervision", b.height, lambda b=b: b) is b  # type: ignore[misc]
        assert cache.bytes <= budget
    assert len(cache) == 1  # only the newest fits
    with pytest.raises(ValueError):
        ProvenBlockCache(max_blocks=0)


def test_cache_is_thread_safe(sc: Scenario) -> None:
    heights = list(range(1, 7))
    blocks = {h: proven(sc.net, "supervision", h) for h in heights}
    cache = ProvenBlockCache(max_blocks=3)
    wrong: list[tuple[int, int]] = []

    def worker(seed: int) -> None:
        for i in range(400):
            h = heights[(seed * 7 + i * (seed + 1)) % len(heights)]
            got = cache.get("supervision", h, lambda h=h: blocks[h])  # type: ignore[misc]
            if got is None or got.height != h:
                wrong.append((h, -1 if got is None else got.height))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    assert len(cache) <= 3
    assert cache.hits + cache.misses == 8 * 400
    assert cache.bytes == sum(blocks[k[1]].approx_bytes() for k in cache._entries)


# -- CertificateMemo --------------------------------------------------------------------


class CountingScheme:
    """ED25519, counting verifications."""

    name = "ed25519"

    def __init__(self) -> None:
        self.calls = 0

    def verify(self, public_key: bytes, tag: str, message: bytes, signature: bytes) -> bool:
        self.calls += 1
        return ED25519.verify(public_key, tag, message, signature)

    def signer_from_seed(self, seed: bytes) -> Signer:
        return ED25519.signer_from_seed(seed)


def outcome(fn: object, cert: CommitCertificate, **kw: object) -> str | None:
    try:
        fn(cert, **kw)  # type: ignore[operator]
    except CertificateError as exc:
        return exc.message
    return None


def test_memo_answers_as_verify_certificate(sc: Scenario) -> None:
    net = sc.net
    block, cert = net.sup.committed_block(1) or (None, None)
    assert block is not None and cert is not None
    vset = net.sup.validators_at(1)
    other = net.jud.validators_at(1)
    forged = dataclasses.replace(
        cert,
        votes=(Vote(cert.votes[0].validator, bytes(64)), *cert.votes[1:]),
    )
    good: dict[str, object] = {
        "channel": "supervision",
        "height": 1,
        "block_hash": block.hash,
        "validators": vset,
    }
    cases: list[tuple[CommitCertificate, dict[str, object]]] = [
        (cert, good),
        (cert, good | {"height": 2}),
        (cert, good | {"channel": "judicial"}),
        (cert, good | {"block_hash": bytes(32)}),
        (cert, good | {"validators": other}),
        (forged, good),
    ]
    memo = CertificateMemo(max_entries=64)
    expected = [outcome(verify_certificate, c, **kw) for c, kw in cases]
    assert expected[0] is None and all(e is not None for e in expected[1:])
    for _round in range(2):  # second round: every answer from the memo
        assert [outcome(memo, c, **kw) for c, kw in cases] == expected
    assert memo.misses == len(cases) and memo.hits == len(cases)


def test_memo_verifies_signatures_once_and_is_bounded(sc: Scenario) -> None:
    net = sc.net
    scheme = CountingScheme()
    memo = CertificateMemo(max_entries=2)
    certs = []
    for h in (1, 2, 3):
        got = net.sup.committed_block(h)
        assert got is not None
        certs.append((got[0].hash, got[1], net.sup.validators_at(h)))

    def check(i: int) -> None:
        block_hash, cert, vset = certs[i]
        memo(cert, channel="supervision", height=i + 1, block_hash=block_hash,
             validators=vset, scheme=scheme)  # fmt: skip

    check(0)
    first = scheme.calls
    assert first >= certs[0][2].quorum
    check(0)
    assert scheme.calls == first  # no signature checked again
    check(1)
    check(2)
    assert len(memo) == 2  # bounded: the oldest went
    calls = scheme.calls
    check(0)
    assert scheme.calls > calls  # it had been evicted: verified afresh


def test_memo_distinguishes_certificates_by_their_bytes(sc: Scenario) -> None:
    """A certificate differing in one vote byte is a different input, never a hit."""
    got = sc.net.sup.committed_block(1)
    assert got is not None
    block, cert = got
    vset = sc.net.sup.validators_at(1)
    memo = CertificateMemo()
    kw = {"channel": "supervision", "height": 1, "block_hash": block.hash, "validators": vset}
    assert outcome(memo, cert, **kw) is None
    sig = bytearray(cert.votes[1].signature)
    sig[5] ^= 1
    bad = dataclasses.replace(
        cert, votes=(cert.votes[0], Vote(cert.votes[1].validator, bytes(sig)), *cert.votes[2:])
    )
    assert outcome(memo, bad, **kw) == outcome(verify_certificate, bad, **kw) is not None
    assert outcome(memo, cert, **kw) is None


@pytest.mark.parametrize("path", sorted(VECTOR_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_verify_receipt_with_memo_gives_the_same_reports(path: object) -> None:
    vec = json.loads(path.read_text(encoding="utf-8"))  # type: ignore[attr-defined]
    inp = {k: None if v is None else bytes.fromhex(v) for k, v in vec["input"].items()}
    trust = TrustRoot.from_json(vec["trust_root"])
    args = (vec["receipt"], trust, inp["record"], inp["salt"], inp["commitment"])
    plain = verify_receipt(*args)
    memo = CertificateMemo()
    for _ in range(2):
        assert verify_receipt(*args, certificate_verifier=memo) == plain
    assert [list(c) for c in plain.summary()] == vec["expected"]["checks"]


def test_vset_is_part_of_the_memo_key(sc: Scenario) -> None:
    """Two equal validator sets share entries; different ones do not."""
    got = sc.net.sup.committed_block(1)
    assert got is not None
    block, cert = got
    vset = sc.net.sup.validators_at(1)
    copy = ValidatorSet(tuple(vset.validators))
    memo = CertificateMemo()
    kw = {"channel": "supervision", "height": 1, "block_hash": block.hash}
    memo(cert, validators=vset, **kw)  # type: ignore[arg-type]
    memo(cert, validators=copy, **kw)  # type: ignore[arg-type]
    assert (memo.misses, memo.hits) == (1, 1)


def test_proven_blocks_refuse_what_build_receipt_refuses(sc: Scenario) -> None:
    net, ref = sc.net, sc.early  # anchored before any validator change: no config steps
    entry = net.receipt_source().anchor_entry(ref.height)
    assert entry is not None
    sup = proven(net, "supervision", ref.height)
    jud = proven(net, "judicial", entry.judicial_height)
    other = proven(net, "supervision", sc.late.height)  # anchored elsewhere
    with pytest.raises(SchemaError, match="no record leaf"):
        build_receipt_from(
            leaf_index=len(sup.leaves), supervision=sup, judicial=jud,
            anchor_tx_index=entry.tx_index,
        )  # fmt: skip
    for _ in range(2):  # the second answer comes from the memo
        with pytest.raises(SchemaError, match="does not anchor"):
            build_receipt_from(
                leaf_index=0, supervision=other, judicial=jud, anchor_tx_index=entry.tx_index
            )
    good = build_receipt_from(
        leaf_index=ref.leaf_index, supervision=sup, judicial=jud, anchor_tx_index=entry.tx_index
    )
    assert verify_receipt(good, net.trust, ref.record_bytes, ref.salt).data_verified
