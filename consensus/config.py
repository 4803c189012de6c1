"""Replica configuration: identity, keys, and every bound the replica enforces."""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger.crypto import SignatureScheme, Signer
from ledger.errors import ConfigError
from ledger.schema import is_name


@dataclass(frozen=True)
class ReplicaConfig:
    """How one replica of one channel behaves.

    All times are milliseconds of the caller's clock (virtual in the simulator).
    Raises :class:`ledger.errors.ConfigError` (path ``"replica config"``) on a bad value.
    """

    node_id: str
    channel: str
    signer: Signer = field(repr=False)
    scheme: SignatureScheme = field(repr=False)
    genesis_prev_hash: bytes
    #: Pipelining window W: heights committed+1 … committed+W may be in flight.
    window: int = 8
    #: The application's promise about ``validators_at`` (None: every answer is final,
    #: as with a fixed schedule). A change of the set carried by a block at height
    #: ``c`` takes effect after ``c + activation_delay``, and only blocks holding a
    #: transaction of a type in ``config_tx_types`` carry changes (None: any block may).
    #: The sets above ``committed + 1 + activation_delay`` (or, with a committed but
    #: unapplied block that may carry a change, above that block plus the delay) are not
    #: known yet, and the replica judges nothing against them: it holds such votes,
    #: proposals, VIEW-CHANGEs, NEW-VIEWs and catch-up blocks until the blocks below
    #: them are applied (docs/consensus.md, "Sets not known yet"). Must be at least
    #: ``window`` (every height in flight has a known set).
    activation_delay: int | None = None
    config_tx_types: frozenset[str] | None = frozenset()
    #: A batch closes when it holds this many transactions…
    max_batch_txs: int = 500
    #: …or this many bytes of encoded transactions…
    max_batch_bytes: int = 1 << 20
    #: …or when its oldest transaction has waited this long at the primary.
    batch_interval_ms: int = 20
    #: With no block in flight (every proposal of the primary committed), a batch that
    #: is not full is proposed at once: nothing is being ordered that more
    #: transactions could join, so waiting ``batch_interval_ms`` would only delay it
    #: (a lone transaction on an idle network). False: it waits like any other.
    propose_when_idle: bool = True
    #: A batch that is not full is proposed only while fewer than this many blocks are
    #: in flight (proposed, not committed); full batches may fill the whole window.
    #: Under load, transactions then gather while blocks are in flight and blocks
    #: grow, so the per-block work (votes, frames, fsyncs) is shared by more
    #: transactions. 0 means the window.
    partial_batch_inflight: int = 0
    #: View-change timeout before any doubling.
    base_timeout_ms: int = 1000
    #: The doubling stops at base × 2^max_timeout_doublings.
    max_timeout_doublings: int = 16
    #: Extra progress time per MiB of the oldest block in flight (0: none): a large
    #: block takes longer to check, apply and store on every replica, and must not be
    #: taken for a stalled primary.
    timeout_ms_per_mib: int = 0
    #: A backup with work waiting starts a view change once the transport has
    #: reported the primary unreachable for this long (0: only the timeouts do).
    unreachable_primary_ms: int = 0
    #: A proposal's time may differ from ours by at most this much.
    max_clock_drift_ms: int = 5000
    #: A valid transaction not proposed within this long arms the view-change timer.
    censorship_timeout_ms: int = 2000
    #: Mempool bound (transactions) and per-sender quota.
    mempool_limit: int = 20_000
    mempool_per_sender: int = 5_000
    #: …and in bytes (approximate encoded size, ``mempool.tx_size``): without it,
    #: 20,000 batch reports of up to 256 KiB could hold gigabytes. A sender may use
    #: the same share of the bytes as of the count (per_sender / limit).
    mempool_max_bytes: int = 16 << 20
    #: How many committed transaction ids are remembered for deduplication.
    recent_committed_limit: int = 200_000
    #: …reloaded on restart from at most this many of the latest committed blocks.
    restart_memory_blocks: int = 256
    #: Messages held per peer while they cannot be judged yet (future view/height).
    max_buffered_per_peer: int = 512
    #: Messages for views further ahead than this are dropped, not buffered.
    max_future_views: int = 4
    #: Encoded messages larger than this are refused by :func:`decode_message`.
    max_message_bytes: int = 64 << 20
    #: Catch-up: blocks per FETCH, and how long to wait for the answer.
    fetch_batch: int = 64
    fetch_timeout_ms: int = 1000
    #: FETCHes in flight at once, to different peers where several are ahead: the
    #: next answer travels while one is checked and applied. An answer that arrives
    #: ahead of a gap (an earlier one is late, or was cut short by its size) is held
    #: until the gap is filled; held answers count against this limit. More than one
    #: only once the last answer carried at most ``fetch_parallel_bytes`` of
    #: transactions and extras (the application's per-block bytes, e.g. state deltas;
    #: large answers are paced by their own checking, and each one in flight or held
    #: costs memory): the first request goes alone.
    fetch_parallel: int = 1
    fetch_parallel_bytes: int = 4 << 20
    #: Period of STATUS broadcasts (which drive catch-up and NEW-VIEW retransmission).
    status_interval_ms: int = 250
    #: FORWARD messages carry at most this many transactions.
    forward_batch_txs: int = 500
    #: Bounded caches of verified signatures (messages) and verified client transactions.
    #: A message is verified again when it comes back inside a certificate (a prepared
    #: certificate in a VIEW-CHANGE, a NEW-VIEW) for heights still in flight; at ~15
    #: signed messages per height, 16,384 spans about a thousand heights. Each entry
    #: keeps its signing bytes (≈ 330 B resident): the former 65,536 let a busy
    #: channel's cache reach ~21 MB after an hour of load, per channel, against a node
    #: budget of 250 MB (docs/reliability.md). The tx cache (≈ 250 B an entry, ~8 MB)
    #: stays above ``mempool_limit``: a waiting transaction is verified again when a
    #: proposal carries it. (Until session 20 the replica sized both by
    #: ``signature_cache_size`` and this setting did nothing; it read 65,536.)
    signature_cache_size: int = 16_384
    tx_cache_size: int = 32_768
    #: Pending evidence records kept between two Ready (more are counted, not kept).
    max_pending_evidence: int = 1024

    def __post_init__(self) -> None:
        def bad(name: str, problem: str) -> ConfigError:
            return ConfigError("replica config", name, problem)

        if not is_name(self.node_id):
            raise bad("node_id", f"{self.node_id!r} is not a valid identifier")
        if not is_name(self.channel):
            raise bad("channel", f"{self.channel!r} is not a valid identifier")
        if len(self.genesis_prev_hash) != 32:
            raise bad("genesis_prev_hash", "expected 32 bytes")
        positive = (
            "window",
            "max_batch_txs",
            "max_batch_bytes",
            "base_timeout_ms",
            "mempool_limit",
            "mempool_per_sender",
            "mempool_max_bytes",
            "recent_committed_limit",
            "max_buffered_per_peer",
            "max_future_views",
            "max_message_bytes",
            "fetch_batch",
            "fetch_timeout_ms",
            "fetch_parallel",
            "fetch_parallel_bytes",
            "status_interval_ms",
            "forward_batch_txs",
            "signature_cache_size",
            "tx_cache_size",
            "max_pending_evidence",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise bad(name, "must be positive")
        non_negative = (
            "batch_interval_ms",
            "max_clock_drift_ms",
            "censorship_timeout_ms",
            "max_timeout_doublings",
            "restart_memory_blocks",
            "partial_batch_inflight",
            "timeout_ms_per_mib",
            "unreachable_primary_ms",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise bad(name, "must not be negative")
        if self.window > 64:
            raise bad("window", "at most 64 heights may be in flight")
        if self.activation_delay is not None and self.activation_delay < self.window:
            raise bad(
                "activation_delay",
                f"{self.activation_delay} is below the window ({self.window}): a height in "
                "flight would have no known validator set",
            )
        if self.max_batch_txs > 20_000:
            raise bad("max_batch_txs", "at most 20000 (ledger.blocks.MAX_TXS_PER_BLOCK)")

    def timeout_ms(self, failed_view_changes: int) -> int:
        """The view-change timeout after ``failed_view_changes`` consecutive failures."""
        return self.base_timeout_ms << min(failed_view_changes, self.max_timeout_doublings)
