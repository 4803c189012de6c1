"""The relay: a courier between channels, with injected ports and no I/O of its own.

:class:`AnchorRelay` carries committed supervision blocks to the judicial channel as
``anchor`` transactions; :class:`AckRelay` carries the judicial proof of each anchor
back to the supervision channel as an ``evidence_ack``. Both are step-driven: the node
calls ``step(now_ms)`` on a timer and gets back the transactions it submitted through
the sink port (also returned, for tests and logs).

The relay is never trusted and keeps no durable state. Where to continue is read from
the *target chain's committed state* on every step (a relay that crashes resumes where
the chain says it stopped), and the target channel's rule accepts each block exactly
once, in order, whoever relays: several relays may run at once; the losers' copies are
rejected cheaply as duplicates. A transaction that has not landed after
``resend_after_ms`` is submitted again — the very same transaction (same id: a no-op
where it still waits in a mempool, so a slow target chain is not flooded with copies)
until it is ``rebuild_after_ms`` old, then rebuilt with a new time (hence a new id).

Ports (``typing.Protocol``; the node implements them over its store and mempool):

* :class:`BlockSource` — ``height()`` and ``committed_block(h) -> (Block, cert) | None``
  of a channel.
* :class:`AnchorSink` — ``progress() -> AnchorProgress`` (from the judicial state's
  light client, :meth:`AnchorProgress.of`) and ``submit(tx)``.
* :class:`JudicialSource` — ``anchor_entry(s)`` (the judicial anchor index),
  ``committed_block(h)`` and ``config_steps(after, below)`` of the judicial channel.
* :class:`AckSink` — ``ack_state()`` (from the supervision state) and ``submit(tx)``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol

from crosschain.ack import AckState, ack_tx, build_ack
from crosschain.anchor import Anchor, HeaderAnchor, anchor_payloads, anchor_tx
from crosschain.chunks import CHUNK_LEAVES
from crosschain.evidence_index import AnchorEntry
from crosschain.light_client import LightClientState
from crosschain.validator_history import ConfigStep
from ledger.blocks import Block, Transaction
from ledger.certificate import CommitCertificate
from ledger.crypto import Signer
from ledger.errors import LedgerError

#: Source heights ahead of the target's progress a relay sends at once (each leg). With
#: one relay step every ~200 ms waiting on one judicial commit, 4 (until session 11)
#: carried ~8 blocks/s: a supervision chain committing more small blocks than that
#: never caught up (10,000 seeded blocks took over 10 minutes to anchor; now ~2).
DEFAULT_WINDOW: Final = 64
#: …and whole blocks up to this many record leaves (the anchors' chunks) a step:
#: without it, blocks of 1,000 records went 32 at a time (64 anchors, the step's cap),
#: 32,000 leaves in flight — a 1 MB judicial block whose application, and the acks read
#: back from it, held ~90 MB more per node working through a backlog of such blocks
#: (10⁶ records: peak RSS 202–234 → 295–327 MB). Small blocks still go 64 at a time;
#: 1,000-record blocks 4.
DEFAULT_MAX_LEAVES_PER_STEP: Final = 4 * CHUNK_LEAVES
DEFAULT_RESEND_AFTER_MS: Final = 5_000
#: Well inside the channels' transaction age limit (``tx_max_age_ms``, a day).
DEFAULT_REBUILD_AFTER_MS: Final = 120_000
DEFAULT_MAX_TXS_PER_STEP: Final = 64


class BlockSource(Protocol):
    def height(self) -> int:
        """Highest committed height."""
        ...

    def committed_block(self, height: int) -> tuple[Block, CommitCertificate] | None: ...


@dataclass(frozen=True)
class AnchorProgress:
    """How far the judicial chain has anchored: header ``height`` anchored, leaf chunk
    ``next_chunk`` of it owed (None: all its leaves anchored); ``frozen`` link; the
    link's leaf ``chunk_size``."""

    height: int
    next_chunk: int | None = None
    frozen: bool = False
    chunk_size: int = CHUNK_LEAVES

    @staticmethod
    def of(state: LightClientState) -> AnchorProgress:
        pending = state.pending
        return AnchorProgress(
            state.height,
            None if pending is None else pending.next_chunk,
            state.frozen,
            state.chunk_size,
        )


class AnchorSink(Protocol):
    def progress(self) -> AnchorProgress: ...

    def submit(self, tx: Transaction) -> None: ...


class JudicialSource(Protocol):
    def anchor_entry(self, source_height: int) -> AnchorEntry | None: ...

    def committed_block(self, height: int) -> tuple[Block, CommitCertificate] | None: ...

    def config_steps(self, after: int, below: int) -> list[ConfigStep]:
        """Config steps of the judicial channel at heights ``after < h < below``."""
        ...


class AckSink(Protocol):
    def ack_state(self) -> AckState: ...

    def submit(self, tx: Transaction) -> None: ...


@dataclass(frozen=True)
class RelayConfig:
    """Who the relay signs as, and its bounds."""

    network: bytes
    sender: str
    signer: Signer
    window: int = DEFAULT_WINDOW
    max_txs_per_step: int = DEFAULT_MAX_TXS_PER_STEP
    max_leaves_per_step: int = DEFAULT_MAX_LEAVES_PER_STEP
    resend_after_ms: int = DEFAULT_RESEND_AFTER_MS
    rebuild_after_ms: int = DEFAULT_REBUILD_AFTER_MS


@dataclass
class RelayStats:
    submitted: int = 0
    resent: int = 0
    source_errors: int = 0


@dataclass
class _InFlight:
    """Transactions sent and not yet reflected in the target's progress."""

    #: key → (transaction, when it was built, when it was last submitted)
    sent: dict[Hashable, tuple[Transaction, int, int]] = field(default_factory=dict)

    def due(self, key: Hashable, now_ms: int, resend_after_ms: int) -> bool:
        prev = self.sent.get(key)
        return prev is None or now_ms - prev[2] >= resend_after_ms

    def reusable(self, key: Hashable, now_ms: int, rebuild_after_ms: int) -> Transaction | None:
        """The transaction sent for ``key`` if it is young enough to send again."""
        prev = self.sent.get(key)
        if prev is None or now_ms - prev[1] >= rebuild_after_ms:
            return None
        return prev[0]

    def record(self, key: Hashable, tx: Transaction, now_ms: int) -> None:
        prev = self.sent.get(key)
        built = prev[1] if prev is not None and prev[0] is tx else now_ms
        self.sent[key] = (tx, built, now_ms)

    def keep_only(self, keys: Iterable[Hashable]) -> None:
        wanted = set(keys)
        self.sent = {k: v for k, v in self.sent.items() if k in wanted}


def _leaf_count(a: Anchor) -> int:
    chunk = a.chunk if isinstance(a, HeaderAnchor) else a
    return 0 if chunk is None else len(chunk.leaves)


def _anchor_key(a: Anchor) -> tuple[int, int]:
    return (a.height, -1 if isinstance(a, HeaderAnchor) else a.index)


class AnchorRelay:
    """Carries committed source blocks to the judicial channel (see module docstring)."""

    def __init__(self, source: BlockSource, sink: AnchorSink, config: RelayConfig) -> None:
        self.source = source
        self.sink = sink
        self.config = config
        self.stats = RelayStats()
        self.frozen = False
        self._flight = _InFlight()
        self._cache: dict[int, list[Anchor]] = {}

    def _anchors(self, height: int, chunk_size: int) -> list[Anchor] | None:
        cached = self._cache.get(height)
        if cached is not None:
            return cached
        try:
            got = self.source.committed_block(height)
        except LedgerError:
            self.stats.source_errors += 1
            return None
        if got is None:
            return None
        block, cert = got
        anchors = anchor_payloads(block, cert, chunk_size=chunk_size)
        self._cache[height] = anchors
        return anchors

    def pending(self, progress: AnchorProgress) -> list[Anchor]:
        """The anchors the judicial chain still needs, in order, within the window: at
        most ``window`` heights ahead, ``max_txs_per_step`` anchors, and whole heights
        up to ``max_leaves_per_step`` leaves (at least one height)."""
        cfg = self.config
        out: list[Anchor] = []
        if progress.next_chunk is not None:
            owed = self._anchors(progress.height, progress.chunk_size) or []
            out += [a for a in owed if _anchor_key(a)[1] >= progress.next_chunk]
        leaves = sum(map(_leaf_count, out))
        top = min(self.source.height(), progress.height + cfg.window)
        for h in range(progress.height + 1, top + 1):
            if out and leaves >= cfg.max_leaves_per_step:
                break
            block_anchors = self._anchors(h, progress.chunk_size)
            if block_anchors is None:
                break
            out += block_anchors
            leaves += sum(map(_leaf_count, block_anchors))
            if len(out) >= cfg.max_txs_per_step:
                break
        return out[: cfg.max_txs_per_step]

    def step(self, now_ms: int) -> list[Transaction]:
        """Submit what the judicial chain needs next; return the transactions sent."""
        progress = self.sink.progress()
        self.frozen = progress.frozen
        if progress.frozen:
            return []
        for h in [h for h in self._cache if h < progress.height]:
            del self._cache[h]
        needed = self.pending(progress)
        self._flight.keep_only(_anchor_key(a) for a in needed)
        sent: list[Transaction] = []
        for a in needed:
            key = _anchor_key(a)
            if not self._flight.due(key, now_ms, self.config.resend_after_ms):
                continue
            if key in self._flight.sent:
                self.stats.resent += 1
            tx = self._flight.reusable(key, now_ms, self.config.rebuild_after_ms) or anchor_tx(
                a,
                network=self.config.network,
                sender=self.config.sender,
                signer=self.config.signer,
                time_ms=now_ms,
            )
            self.sink.submit(tx)
            self._flight.record(key, tx, now_ms)
            self.stats.submitted += 1
            sent.append(tx)
        return sent


class AckRelay:
    """Carries each anchor's judicial proof back to the supervision channel."""

    def __init__(self, judicial: JudicialSource, sink: AckSink, config: RelayConfig) -> None:
        self.judicial = judicial
        self.sink = sink
        self.config = config
        self.stats = RelayStats()
        self._flight = _InFlight()

    def step(self, now_ms: int) -> list[Transaction]:
        state = self.sink.ack_state()
        cfg_after = state.judicial.height
        sent: list[Transaction] = []
        wanted: list[int] = []
        for s in range(state.acked + 1, state.acked + 1 + self.config.window):
            entry = self.judicial.anchor_entry(s)
            if entry is None:
                break
            try:
                got = self.judicial.committed_block(entry.judicial_height)
                if got is None:
                    break
                steps = self.judicial.config_steps(cfg_after, entry.judicial_height)
                ack = build_ack(s, entry.header_hash, got[0], got[1], entry.tx_index, steps)
            except LedgerError:
                self.stats.source_errors += 1
                break
            if steps:
                cfg_after = steps[-1].height
            wanted.append(s)
            if not self._flight.due(s, now_ms, self.config.resend_after_ms):
                continue
            if s in self._flight.sent:
                self.stats.resent += 1
            tx = self._flight.reusable(s, now_ms, self.config.rebuild_after_ms) or ack_tx(
                ack,
                network=self.config.network,
                sender=self.config.sender,
                signer=self.config.signer,
                time_ms=now_ms,
            )
            self.sink.submit(tx)
            self._flight.record(s, tx, now_ms)
            self.stats.submitted += 1
            sent.append(tx)
        self._flight.keep_only(wanted)
        return sent


def config_steps_of(blocks: Iterable[tuple[Block, CommitCertificate]]) -> list[ConfigStep]:
    """The config steps among ``blocks`` (for a :class:`JudicialSource` over a store)."""
    out = []
    for block, cert in blocks:
        step = ConfigStep.of(block, cert)
        if step is not None:
            out.append(step)
    return out
