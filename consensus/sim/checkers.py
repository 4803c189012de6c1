"""Safety and liveness checkers, fed by the runner after every step.

Safety (checked as each honest replica commits; any breach is a :class:`Violation`):

* *agreement* — no two honest replicas commit different blocks at one height;
* *chain* — each replica commits heights 1, 2, 3, … in order, each block's
  ``prev_hash`` is the previous block's hash (the channel genesis hash for height 1),
  block time never decreases, and the header's proposer is the primary of its view;
* *certificate* — every committed block carries a commit certificate that verifies
  against ``validators_at(height)`` (:func:`ledger.certificate.verify_certificate`);
* *validity* — every committed transaction passes the stateless rule and its client
  signature verifies (so a primary cannot slip in a forged transaction);
* *durability* — an honest replica never signs two different PREPAREs or COMMITs for
  one ``(view, height)``, across crashes and restarts.

Liveness (checked at the end of a run): with at most f faulty replicas and the
network healed at ``last_heal_ms``, every submitted valid transaction is committed
by every honest replica by ``max(submitted, last_heal_ms) + liveness_bound_ms(...)``,
where the bound is :data:`LIVENESS_TIMEOUT_MULTIPLE` base timeouts plus, for each
failed view change ``k = 1..m``, the doubled timeout ``base × 2^k``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from ledger.blocks import Block, Transaction
from ledger.certificate import CommitCertificate, ValidatorSet, verify_certificate
from ledger.crypto import SignatureScheme
from ledger.errors import LedgerError
from ledger.hashing import TAG_TX

#: Liveness: a transaction commits within this many base timeouts after the last heal…
LIVENESS_TIMEOUT_MULTIPLE: Final = 10
#: …plus ``base × 2^k`` for each failed view change ``k = 1..m`` (the timeout doubling).
LIVENESS_DOUBLING_BASE: Final[int] = 2
#: Cap on the doublings the bound allows for (2^16 base timeouts is far beyond any run).
LIVENESS_MAX_DOUBLINGS: Final = 16


def liveness_bound_ms(base_timeout_ms: int, failed_view_changes: int) -> int:
    """``10 × base + Σ_{k=1..m} base × 2^k`` with ``m = failed_view_changes`` (capped)."""
    m = min(max(0, failed_view_changes), LIVENESS_MAX_DOUBLINGS)
    extra = 0
    for k in range(1, m + 1):
        extra += base_timeout_ms * LIVENESS_DOUBLING_BASE**k
    return LIVENESS_TIMEOUT_MULTIPLE * base_timeout_ms + extra


@dataclass(frozen=True)
class Violation:
    """One broken property: ``kind`` names it, ``detail`` says what was seen."""

    kind: str
    time_ms: int
    node: str
    detail: str

    def line(self) -> str:
        return f"{self.kind} at {self.time_ms} ms on {self.node}: {self.detail}"


TxRule = Callable[[Transaction], str | None]


@dataclass
class _Head:
    height: int
    hash: bytes
    time_ms: int


class SafetyChecker:
    """Checks every commit of an honest replica and every vote it signs."""

    def __init__(
        self,
        *,
        channel: str,
        genesis_prev_hash: bytes,
        validators_at: Callable[[int], ValidatorSet],
        scheme: SignatureScheme,
        tx_rule: TxRule,
    ) -> None:
        self.channel = channel
        self.genesis_prev_hash = genesis_prev_hash
        self.validators_at = validators_at
        self.scheme = scheme
        self.tx_rule = tx_rule
        self._committed: dict[int, tuple[bytes, str]] = {}
        self._heads: dict[str, _Head] = {}
        self._votes: dict[tuple[str, str, int, int], bytes] = {}
        self._good_certs: set[tuple[int, bytes, tuple[tuple[str, bytes], ...]]] = set()
        self._good_txs: set[tuple[bytes, bytes]] = set()
        self.commits_checked = 0
        self.votes_checked = 0

    def committed_hash(self, height: int) -> bytes | None:
        entry = self._committed.get(height)
        return entry[0] if entry else None

    @property
    def max_height(self) -> int:
        return max(self._committed, default=0)

    def head(self, node: str) -> int:
        head = self._heads.get(node)
        return head.height if head else 0

    def on_commit(
        self, node: str, block: Block, cert: CommitCertificate, time_ms: int
    ) -> list[Violation]:
        """Check one block committed by honest ``node``; returns what it breaks."""
        self.commits_checked += 1
        out: list[Violation] = []

        def bad(kind: str, detail: str) -> None:
            out.append(Violation(kind, time_ms, node, detail))

        h = block.height
        head = self._heads.get(node)
        expected_height = head.height + 1 if head else 1
        expected_prev = head.hash if head else self.genesis_prev_hash
        if h != expected_height:
            bad("chain", f"committed height {h} after height {expected_height - 1}")
        elif block.header.prev_hash != expected_prev:
            bad("chain", f"block {h} does not link to the block committed at {h - 1}")
        if head and block.header.time_ms < head.time_ms:
            bad("chain", f"block {h} time {block.header.time_ms} < parent {head.time_ms}")
        if block.header.channel != self.channel:
            bad("chain", f"block {h} is for channel {block.header.channel!r}")
        earlier = self._committed.get(h)
        if earlier is not None and earlier[0] != block.hash:
            bad(
                "agreement",
                f"height {h}: {node} committed {block.hash.hex()[:16]}, "
                f"{earlier[1]} committed {earlier[0].hex()[:16]}",
            )
        elif earlier is None:
            self._committed[h] = (block.hash, node)
        vset = self.validators_at(h)
        if block.header.proposer != vset.primary(block.header.view):
            bad(
                "validity",
                f"block {h} proposed by {block.header.proposer!r}, "
                f"not the primary of view {block.header.view}",
            )
        out.extend(Violation(k, time_ms, node, d) for k, d in self._check_cert(block, cert, vset))
        out.extend(Violation(k, time_ms, node, d) for k, d in self._check_body(block))
        self._heads[node] = _Head(h, block.hash, block.header.time_ms)
        return out

    def _check_cert(
        self, block: Block, cert: CommitCertificate, vset: ValidatorSet
    ) -> Iterable[tuple[str, str]]:
        key = (block.height, block.hash, tuple((v.validator, v.signature) for v in cert.votes))
        if key in self._good_certs:
            return ()
        try:
            verify_certificate(
                cert,
                channel=self.channel,
                height=block.height,
                block_hash=block.hash,
                validators=vset,
                scheme=self.scheme,
            )
        except LedgerError as exc:
            return (("certificate", f"block {block.height}: {exc}"),)
        self._good_certs.add(key)
        return ()

    def _check_body(self, block: Block) -> Iterable[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        try:
            block.check_body()
        except LedgerError as exc:
            out.append(("validity", str(exc)))
        for tx in block.transactions:
            key = (tx.tx_id, tx.signature)
            if key in self._good_txs:
                continue
            reason = self.tx_rule(tx)
            if reason is None and not self.scheme.verify(
                tx.public_key, TAG_TX, tx.body_bytes, tx.signature
            ):
                reason = "invalid client signature"
            if reason is not None:
                out.append(("validity", f"block {block.height} tx {tx.tx_id.hex()[:16]}: {reason}"))
            else:
                self._good_txs.add(key)
        return out

    def on_vote(
        self, node: str, kind: str, view: int, height: int, block_hash: bytes, time_ms: int
    ) -> list[Violation]:
        """Record a PREPARE/COMMIT signed by honest ``node``; two for one slot conflict."""
        self.votes_checked += 1
        key = (node, kind, view, height)
        earlier = self._votes.get(key)
        if earlier is None:
            self._votes[key] = block_hash
            return []
        if earlier != block_hash:
            return [
                Violation(
                    "equivocation",
                    time_ms,
                    node,
                    f"signed {kind} for view {view} height {height} twice: "
                    f"{earlier.hex()[:16]} then {block_hash.hex()[:16]}",
                )
            ]
        return []

    def forget_votes_below(self, height: int) -> None:
        """Drop vote records for heights < ``height`` (all honest replicas are past them)."""
        for key in [k for k in self._votes if k[3] < height]:
            del self._votes[key]


@dataclass
class LivenessChecker:
    """Tracks submitted valid transactions and when each honest replica commits them."""

    base_timeout_ms: int
    _submitted: dict[bytes, int] = field(default_factory=dict)
    _commits: dict[bytes, dict[str, int]] = field(default_factory=dict)
    _views_seen: set[int] = field(default_factory=set)
    _commit_views: set[int] = field(default_factory=set)

    def submitted(self, tx_id: bytes, time_ms: int) -> None:
        """A client submitted a valid transaction (first submission counts)."""
        self._submitted.setdefault(tx_id, time_ms)

    def committed(self, node: str, tx_ids: Iterable[bytes], time_ms: int, view: int) -> None:
        self._commit_views.add(view)
        for tx_id in tx_ids:
            self._commits.setdefault(tx_id, {}).setdefault(node, time_ms)

    def view_seen(self, view: int) -> None:
        self._views_seen.add(view)

    @property
    def failed_view_changes(self) -> int:
        """Views entered (1 and up) in which no block was committed."""
        top = max(self._views_seen | self._commit_views, default=0)
        return sum(1 for v in range(1, top + 1) if v not in self._commit_views)

    def bound_ms(self) -> int:
        return liveness_bound_ms(self.base_timeout_ms, self.failed_view_changes)

    def pending(self, nodes: Iterable[str]) -> int:
        """How many (transaction, node) commits are still missing."""
        node_list = list(nodes)
        return sum(
            1
            for tx_id in self._submitted
            for n in node_list
            if n not in self._commits.get(tx_id, {})
        )

    def first_commit_ms(self, tx_id: bytes) -> int | None:
        times = self._commits.get(tx_id)
        return min(times.values()) if times else None

    def finish(self, *, last_heal_ms: int, honest: Iterable[str]) -> list[Violation]:
        """Every submitted tx committed on every honest node by its deadline?"""
        bound = self.bound_ms()
        nodes = sorted(honest)
        out: list[Violation] = []
        for tx_id, sent in sorted(self._submitted.items(), key=lambda kv: (kv[1], kv[0])):
            deadline = max(sent, last_heal_ms) + bound
            commits = self._commits.get(tx_id, {})
            for node in nodes:
                at = commits.get(node)
                if at is None or at > deadline:
                    seen = "never" if at is None else f"at {at} ms"
                    out.append(
                        Violation(
                            "liveness",
                            deadline,
                            node,
                            f"tx {tx_id.hex()[:16]} submitted at {sent} ms committed {seen}; "
                            f"deadline {deadline} ms = max(submit, heal {last_heal_ms}) + "
                            f"{bound} ms ({LIVENESS_TIMEOUT_MULTIPLE}×base + doublings for "
                            f"{self.failed_view_changes} failed view changes)",
                        )
                    )
                    break
            if len(out) >= 5:
                break
        return out
