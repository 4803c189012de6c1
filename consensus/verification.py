"""Bounded memos of verified signatures, so nothing is verified twice.

A PREPARE is verified when it arrives and again when it comes back inside a prepared
certificate of a VIEW-CHANGE (and again inside a NEW-VIEW); a client transaction is
verified on admission and again when a proposal carries it. Only *successful*
verifications are remembered (a flood of bad signatures cannot evict good entries
faster than it costs the sender to send them), and the oldest entry is evicted first,
so the memo's behaviour is deterministic.
"""

from __future__ import annotations

from ledger.blocks import Transaction
from ledger.crypto import SignatureScheme, Signer
from ledger.fifo import FifoSet
from ledger.hashing import TAG_TX


class SignatureCache:
    """Verify with ``scheme``, remembering the last ``capacity`` successful message
    verifications and the last ``tx_capacity`` (default: ``capacity``) client
    transactions whose signatures verified. Raises ValueError for a capacity below 1.

    It is itself a :class:`ledger.crypto.SignatureScheme` (verification side), so it
    can be handed to :func:`ledger.certificate.verify_certificate`.
    """

    def __init__(
        self, scheme: SignatureScheme, capacity: int, tx_capacity: int | None = None
    ) -> None:
        self.scheme = scheme
        self.name = scheme.name
        self._good: FifoSet[tuple[bytes, str, bytes, bytes]] = FifoSet(capacity)
        self._txs: FifoSet[tuple[bytes, bytes]] = FifoSet(
            capacity if tx_capacity is None else tx_capacity
        )
        self.hits = 0
        self.verifications = 0

    def verify(self, public_key: bytes, tag: str, message: bytes, signature: bytes) -> bool:
        key = (public_key, tag, message, signature)
        if key in self._good:
            self.hits += 1
            return True
        self.verifications += 1
        if not self.scheme.verify(public_key, tag, message, signature):
            return False
        self._good.add(key)
        return True

    def signer_from_seed(self, seed: bytes) -> Signer:
        return self.scheme.signer_from_seed(seed)

    def verify_tx(self, tx: Transaction) -> bool:
        """True iff ``tx``'s client signature is valid for its ``public_key``."""
        key = (tx.tx_id, tx.signature)
        if key in self._txs:
            self.hits += 1
            return True
        self.verifications += 1
        if not self.scheme.verify(tx.public_key, TAG_TX, tx.body_bytes, tx.signature):
            return False
        self._txs.add(key)
        return True
