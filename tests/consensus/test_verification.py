"""consensus.verification.SignatureCache: what it remembers, and how much."""

from __future__ import annotations

from ledger.crypto import SignatureScheme, Signer
from ledger.hashing import TAG_TX
from tests.consensus.test_replica_harness import Cluster


class CountingScheme:
    """Wraps a scheme and counts the client-transaction signatures it checks."""

    def __init__(self, inner: SignatureScheme) -> None:
        self.inner = inner
        self.name = inner.name
        self.tx_checks = 0

    def signer_from_seed(self, seed: bytes) -> Signer:
        return self.inner.signer_from_seed(seed)

    def verify(self, public_key: bytes, tag: str, message: bytes, signature: bytes) -> bool:
        if tag == TAG_TX:
            self.tx_checks += 1
        return self.inner.verify(public_key, tag, message, signature)


def test_the_transaction_memo_has_its_own_size() -> None:
    """``tx_capacity`` bounds the transaction memo, whatever the message memo's size."""
    from consensus.verification import SignatureCache

    c = Cluster(1)
    counting = CountingScheme(c.scheme)
    cache = SignatureCache(counting, 1, tx_capacity=3)
    txs = [c.clients.tx(k=i) for i in range(3)]
    for _ in range(2):
        assert all(cache.verify_tx(tx) for tx in txs)
    assert counting.tx_checks == 3
    cache.verify_tx(c.clients.tx(k=3))  # evicts the oldest
    assert cache.verify_tx(txs[0])
    assert counting.tx_checks == 5


def test_replicas_size_their_transaction_memo_by_tx_cache_size() -> None:
    """A replica checks a signature it verified before only once while its transaction
    memo (``tx_cache_size``) holds it, even with a message memo of one entry: here
    three transactions the rules refuse, submitted twice. (Until session 20
    ``tx_cache_size`` was ignored and both memos had ``signature_cache_size`` entries:
    the second submission checked all three again.)"""
    c = Cluster(
        5, reject=lambda tx: "refused by the rules", signature_cache_size=1, tx_cache_size=64
    )
    counting = CountingScheme(c.scheme)
    c.config_overrides["scheme"] = counting
    c.restart("n1")
    txs = [c.clients.tx(k=i) for i in range(3)]
    for _ in range(2):
        results = c.submit("n1", txs)
        assert [r.status for r in results] == ["rejected"] * 3
    assert counting.tx_checks == 3
