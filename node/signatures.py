"""The node process's memo of verified signatures.

A node checks the same signature in several places: a COMMIT vote by the channel's
replica when it arrives, then inside certificates by the court chain's anchor rule
(the supervision block each anchor names), by the supervision chain's acknowledgement
rule (the court block), and by a node catching up (the fetched blocks' certificates,
while its anchor rule checks the same heights' certificates in another thread).
Ed25519 is deterministic, so a validator's vote on a block is the same bytes in every
node's certificate, whichever quorum of votes that certificate holds.

:class:`MemoisedEd25519` is the node's one scheme for all of them (``NodeRuntime``
builds it; its replicas and cross-chain rules get it): catch-up of 10,000 blocks,
alternating runs 487.9 / 505.0 against 447.4 / 476.8 blocks/s (BENCHMARKS.md,
session 12). The replica's own :class:`consensus.verification.SignatureCache` sits in
front of it; this one also serves the rules and is shared by the node's threads.
:func:`verify_ahead` fills it from a catch-up answer on two cores before the replica
steps the answer.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from ledger.crypto import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Ed25519Scheme
from ledger.fifo import FifoSet

#: Successful verifications remembered (~100 B each).
MEMO_CAPACITY: Final = 32_768
#: Only messages up to this long are remembered: votes, consensus messages' signing
#: bytes (digests), single-event transactions. Peer frames and batch reports are
#: verified once, and hashing them again for the memo would cost more than it saves.
MEMO_MAX_MESSAGE: Final = 4096


class MemoisedEd25519(Ed25519Scheme):
    """Ed25519 that remembers its last ``capacity`` successful verifications of
    messages up to ``max_message`` bytes; safe to share between threads (a lock guards
    the memo's changes).

    An entry is the SHA-256 of (key, signature, tag, message) — key and signature have
    fixed lengths and a tag contains no NUL, so the encoding is unambiguous — added
    only after the signature verified: a failure is never remembered, so the memo
    answers True only for exactly what verified before; the oldest entry goes first.
    ``hits`` counts the verifications it saved. Raises ValueError for a capacity
    below 1 or a negative ``max_message``."""

    def __init__(self, capacity: int = MEMO_CAPACITY, max_message: int = MEMO_MAX_MESSAGE) -> None:
        if capacity < 1 or max_message < 0:
            raise ValueError("capacity must be positive and max_message not negative")
        self._max_message = max_message
        self._memo: FifoSet[bytes] = FifoSet(capacity)
        self._lock = threading.Lock()
        self.hits = 0

    def __len__(self) -> int:
        return len(self._memo)

    def remembers(self, message: bytes) -> bool:
        """Whether a verification of ``message`` would be remembered (its length)."""
        return len(message) <= self._max_message

    def verify(self, public_key: bytes, tag: str, message: bytes, signature: bytes) -> bool:
        if len(message) > self._max_message:
            return super().verify(public_key, tag, message, signature)
        if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
            return False
        key = hashlib.sha256(
            bytes(public_key) + bytes(signature) + tag.encode("ascii") + b"\x00" + message
        ).digest()
        if key in self._memo:
            with self._lock:
                self.hits += 1
            return True
        if not super().verify(public_key, tag, message, signature):
            return False
        with self._lock:
            self._memo.add(key)
        return True


#: (public key, tag, message, signature): one verification for :func:`verify_ahead`
Check = tuple[bytes, str, bytes, bytes]

#: Below this many checks :func:`verify_ahead` does them on the calling thread alone.
AHEAD_MIN_CHECKS: Final = 16

_helper: ThreadPoolExecutor | None = None
_helper_lock = threading.Lock()


def _helper_thread() -> ThreadPoolExecutor:
    global _helper
    with _helper_lock:
        if _helper is None:
            _helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify-ahead")
        return _helper


def verify_ahead(scheme: MemoisedEd25519, checks: Sequence[Check]) -> None:
    """Verify ``checks`` with ``scheme`` on two cores, this thread and a helper thread
    taking the next check in turn, and return when all are done: the good ones are in
    the memo, so the replica's own checks of them (one after the other, on the event
    loop) find them there. A bad signature is not remembered and is found by that own
    check; nothing is decided here. Ed25519 releases the GIL, and both threads spend
    nearly all their time inside it, so neither waits long for the other to hand the
    GIL back (a helper checking while the loop ran Python waited up to a switch
    interval for it after each signature: BENCHMARKS.md, session 11). Both stop at
    the first bad signature: the replica stops there too (and reports the sender), so
    a forged answer costs no more than the replica's own checks would."""
    n = len(checks)
    turns = itertools.count()  # next() of a count is atomic: each index goes to one thread
    bad = threading.Event()

    def run() -> None:
        for i in turns:
            if i >= n or bad.is_set():
                return
            if not scheme.verify(*checks[i]):
                bad.set()

    if n < AHEAD_MIN_CHECKS:  # not worth waking the helper
        run()
        return
    helper = _helper_thread().submit(run)
    run()
    helper.result()
