"""One channel on one node: its replica, the driver loop, and what clients ask of it.

The driver (:meth:`ChannelService.run`) is the only code that touches the replica.
Everything else talks to it through the bounded inbox (peer messages, client
transactions). Each turn of the loop:

1. drain the inbox: ``replica.step(msg)`` for peer messages, ``replica.submit(txs)``
   for client transactions (resolving the submitters' futures);
2. ``replica.tick(now_ms)`` every ``tick_ms``;
3. while ``replica.has_ready()``: take the Ready and **persist** the durable state and
   **commit** the blocks (LevelDB writes are synchronous fsyncs: small ones run on the
   loop, large ones — or all, while the disk is slow — in a worker thread): each
   block applied through the channel rules and written with its certificate, state
   writes, state root and tx outcomes in one synced batch; what changed of the
   durable state (:mod:`node.durable_wal`) goes into the batch of the last block, or
   alone — first, when proposals and votes wait to leave (they need it on disk, not
   the blocks: ``consensus.replica.send_stage``), or when nothing was committed. Then
   feed committed blocks to governance, wake waiters and streams, **send** the other
   messages, and ``replica.advance(rd)``.

A committed block is durable before the node reports it to anyone. After a crash the
replica is rebuilt from the WAL's durable state and the store's last committed block.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from channels.state import WriteSet
from consensus.app import Application
from consensus.config import ReplicaConfig
from consensus.durable import DurableState
from consensus.messages import Blocks, Message, NewView
from consensus.replica import (
    SEND_AFTER_STORE,
    SEND_BEFORE_PERSIST,
    SEND_BEFORE_STORE,
    Ready,
    Replica,
    send_stage,
)
from ledger.blocks import Block, Transaction, channel_genesis_hash
from ledger.certificate import CommitCertificate, ValidatorSet
from ledger.crypto import ED25519, SignatureScheme, Signer
from ledger.encoding import decode, encode
from ledger.errors import LedgerError
from ledger.genesis import CONFIG_UPDATE, ChannelConfig, Genesis, Permissions
from ledger.governance import CONFIG_ACTIVATION_DELAY, ChannelGovernance
from ledger.hashing import TAG_COMMIT_VOTE, TAG_TX
from ledger.store import BlockCommit, BlockStore
from node import consensus_port as cport
from node.durable_wal import DurableWal
from node.metrics import NodeMetrics
from node.rules import (
    BlockEffects,
    ChannelLogic,
    NeedsOtherChannel,
    StoreCrossReader,
    StoreState,
    TxOutcome,
)
from node.signatures import Check, MemoisedEd25519, verify_ahead

if TYPE_CHECKING:
    from node.peers import PeerTransport

log = logging.getLogger("wulian.channel")

#: The stages of ``wulian_driver_seconds_total``, in the order a block goes through them.
DRIVER_STAGES: Final = ("step", "apply", "write", "wait_channel")

#: How long the driver steps bulk messages (FORWARD, BLOCKS, client batches) before it
#: turns to ticks, Ready and urgent messages again.
BULK_BUDGET_S = 0.02
#: A quiescent replica is still ticked at least this often (its STATUS is due sooner
#: by default: ``status_interval_ms`` 1,000).
QUIET_TICK_MAX_S = 2.0
#: A Ready whose persisting took this long pauses the replica's view-change timers.
PAUSE_AFTER_MS = 50
#: Blocks at least this large (encoded) are applied in a worker thread, not on the loop.
APPLY_OFF_LOOP_BYTES = 64 * 1024
#: A synced store write of at most this many bytes runs on the event loop itself, as
#: long as this channel's recent synced writes took at most INLINE_WRITE_MAX_S each (a
#: moving average): handing a small write to a worker thread (its wake-up, the loop's
#: wake-up when it is done, the GIL going back and forth) costs more than the write. A
#: synced 2 KB LevelDB batch here: 103–128 µs of CPU and 236–279 µs of wall time on
#: the loop, 294–320 µs and 450–494 µs through ``asyncio.to_thread``; a node writes
#: two to four per block (votes, then the block). Larger writes, and every write while
#: the disk is slow, still go to a worker thread, so the loop is never held for long.
INLINE_WRITE_MAX_BYTES = 64 * 1024
INLINE_WRITE_MAX_S = 0.002
#: Weight of the newest write in that moving average.
WRITE_TIME_WEIGHT = 0.2
#: Committed blocks written in one synced batch, at most (count, encoded bytes).
COMMIT_BATCH_BLOCKS = 64
COMMIT_BATCH_BYTES = 8 * 1024 * 1024
#: WAL entries holding the outcomes of each committed block (written in its batch).
WAL_OUTCOMES_PREFIX = "outcomes/"
#: How many committed blocks' decoded outcome lists :meth:`ChannelService.outcomes` keeps.
OUTCOMES_CACHE_BLOCKS = 64
#: How many lately committed transactions' locations the status lookup keeps in memory.
RECENT_TXS = 50_000


def _wal_bytes(entries: dict[str, bytes | None]) -> int:
    return sum(len(v) for v in entries.values() if v is not None)


def outcomes_key(height: int) -> str:
    return f"{WAL_OUTCOMES_PREFIX}{height:016d}"


def stalled_ms(now: float, due: float, accounted_to: float) -> int:
    """How long (ms) a tick due at ``due`` (loop time, s) came late at ``now``, not
    counting what was already paused for up to ``accounted_to`` (the driver's own
    apply-and-store time, paused by :meth:`ChannelService._process_ready`)."""
    return max(0, round((now - max(due, accounted_to)) * 1000))


def view_change_cause(fired: Iterable[str]) -> str:
    """The "entered view" log line's ending: which of this node's timers (names of the
    replica's ``timeouts.*`` counters that moved since the last view) started the view
    change — "" if none did (it joined the others). ``prepared_grace`` started none:
    it waited once more."""
    started = sorted(k for k in fired if k != "prepared_grace")
    return f" after this node's {'/'.join(started)} timeout" if started else ""


@dataclass(frozen=True)
class TxStatus:
    """What the node knows about a transaction id."""

    status: str  # "pending" | "committed" | "rejected"
    sender: str
    height: int | None = None
    index: int | None = None
    outcome: TxOutcome | None = None
    reason: str | None = None

    def to_json(self, channel: str, tx_id: bytes) -> dict[str, Any]:
        doc: dict[str, Any] = {"channel": channel, "tx_id": tx_id.hex(), "status": self.status}
        if self.status == "committed":
            doc["height"] = self.height
            doc["index"] = self.index
            doc["outcome"] = self.outcome.to_wire() if self.outcome else None
        if self.reason is not None:
            doc["reason"] = self.reason
        return doc


@dataclass(frozen=True)
class SubmitOutcome:
    tx_id: bytes
    accepted: bool
    reason: str | None = None
    committed: TxStatus | None = None


class _NodeApplication:
    """The consensus ``Application`` for one channel, backed by the store and rules."""

    def __init__(self, service: ChannelService) -> None:
        self._s = service

    def validate_tx(self, tx: Transaction) -> str | None:
        return self._s.check_tx(tx)

    def validators_at(self, height: int) -> ValidatorSet:
        return self._s.governance.validators_at(height)

    def state_root_at(self, height: int) -> bytes | None:
        if height == 0:
            return self._s.logic.initial_state_root()
        return self._s.store.state_root_at(self._s.channel, height)

    def committed_block(self, height: int) -> tuple[Block, CommitCertificate] | None:
        s = self._s
        block = s.store.block(s.channel, height)
        cert = s.store.certificate(s.channel, height)
        if block is None or cert is None:
            return None
        return block, cert

    def block_extra(self, height: int) -> bytes | None:
        """The block's state delta, if this node still keeps it."""
        return self._s.store.state_delta_at(self._s.channel, height)


@dataclass(frozen=True)
class _DeltaEffects:
    """A block's effects taken from its proven state delta, valid on ``prev_root``."""

    prev_root: bytes
    effects: BlockEffects


def _commit_bytes(batch: Sequence[BlockCommit], limit: int) -> int:
    """About how many bytes writing ``batch`` puts to disk (blocks, state writes, WAL
    entries), counted only until it passes ``limit``."""
    n = 0
    for c in batch:
        n += len(c.block.encoded())
        for store_key, value in c.state_writes.items():
            n += len(store_key) + (0 if value is None else len(value))
            if n > limit:
                return n
        n += sum(len(v) for v in c.wal.values() if v is not None)
        if n > limit:
            return n
    return n


class ChannelService:
    """One channel's replica, driver, transaction tracking and subscribers."""

    def __init__(
        self,
        *,
        genesis: Genesis,
        config: ChannelConfig,
        node_id: str,
        signer: Signer,
        store: BlockStore,
        logic: ChannelLogic,
        metrics: NodeMetrics,
        transport: PeerTransport | None,
        tick_ms: int,
        inbox_limit: int,
        status_cache: int,
        consensus_overrides: dict[str, int],
        clock_ms: Callable[[], int],
        follow: bool = False,
        scheme: SignatureScheme = ED25519,
    ) -> None:
        """``follow``: run a replica even if this node validates the channel neither in
        the genesis nor now (a node joining by governance: it follows the chain by
        catch-up once the validators know it, and votes from its effective height).
        ``scheme``: how the replica verifies signatures (a node passes its one
        :class:`node.signatures.MemoisedEd25519`, shared with the cross-chain rules)."""
        self.channel = config.channel_id
        self.genesis = genesis
        self.config = config
        self.node_id = node_id
        self.store = store
        self.logic = logic
        self.metrics = metrics
        self.transport = transport
        self._scheme = scheme
        self._tick_ms = tick_ms
        self._inbox_limit = inbox_limit
        self._status_cache = status_cache
        self._clock = clock_ms
        self._last_now = 0
        #: Loop time up to which this driver's stalls were already paused.
        self._accounted_to = 0.0
        self.governance = ChannelGovernance(genesis, self.channel)
        self._load_governance()
        self.is_validator = node_id in config.validators.by_id or node_id in (
            self.governance.validators_at(self.height + 1).by_id
        )
        self.replica: Replica | None = None
        #: what of the replica's durable state is on disk (node.durable_wal)
        self._durable_wal = DurableWal({})
        if self.is_validator or follow:
            self.replica = self._build_replica(signer, scheme, consensus_overrides)
        #: Consensus votes and proposals, stepped first; then everything else (FORWARD,
        #: STATUS, FETCH, BLOCKS, client submissions) within a time budget, so bulk
        #: transaction traffic never delays a vote (head-of-line blocking).
        self._urgent: deque[tuple[str, Message]] = deque()
        self._inbox: deque[tuple[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._pending: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self._rejected: OrderedDict[bytes, tuple[str, str]] = OrderedDict()
        #: Transactions committed by this process lately: id → (height, index, sender).
        self._recent: OrderedDict[bytes, tuple[int, int, str]] = OrderedDict()
        self._outcomes_cache: OrderedDict[int, list[TxOutcome]] = OrderedDict()
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._new_block = asyncio.Event()
        self._next_wait_log = 0.0
        #: the committed blocks applied but not written yet (one batch)
        self._unwritten: list[BlockCommit] = []
        #: The outcomes of the unwritten blocks, by height: cached once they are written.
        self._unwritten_outcomes: dict[int, list[TxOutcome]] = {}
        self._state = StoreState(store, self.channel)
        self._cross = StoreCrossReader(store)
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[None] | None = None
        #: moving average of this channel's synced writes, seconds (INLINE_WRITE_MAX_S)
        self.write_s = 0.0
        self.failed: str | None = None
        self._seen_view = self.replica.view if self.replica is not None else 0
        #: The replica's ``timeouts.*`` counters when the view last changed (logged).
        self._timeouts_seen: dict[str, int] = {}
        metrics.height.set_function(lambda: float(self.height), self.channel)
        if self.replica is not None:
            rep = self.replica
            metrics.view.set_function(lambda: float(rep.view), self.channel)
            metrics.mempool.set_function(lambda: float(cport.mempool_size(rep)), self.channel)

    # ------------------------------------------------------------------ setup

    def _load_governance(self) -> None:
        """Replay committed config changes so the trackers answer for the tip.

        Only blocks whose stored bytes contain the type name ``config_update`` are
        decoded and fed (a block without those bytes holds no such transaction: the
        canonical encoding stores a type as its UTF-8 bytes); the trackers skip the
        others (``advance``). Decoding every block made a restart take seconds per
        thousand blocks."""
        tip = self.store.height(self.channel)
        needle = CONFIG_UPDATE.encode()
        for raw in self.store.iter_raw_blocks(self.channel, 1, tip):
            if needle not in raw.block:
                continue
            self.governance.advance(raw.height - 1)
            self.governance.observe_block(self.store.decode_block(self.channel, raw))
        self.governance.advance(tip)

    def _build_replica(
        self, signer: Signer, scheme: SignatureScheme, overrides: dict[str, int]
    ) -> Replica:
        params = self.config.params
        kwargs: dict[str, Any] = dict(overrides)
        if "max_batch_txs" not in kwargs and isinstance(params.get("max_block_txs"), int):
            kwargs["max_batch_txs"] = int(params["max_block_txs"])
        if "max_clock_drift_ms" not in kwargs and isinstance(params.get("max_time_drift_ms"), int):
            kwargs["max_clock_drift_ms"] = int(params["max_time_drift_ms"])
        rc = cport.make_replica_config(
            ReplicaConfig,
            node_id=self.node_id,
            channel=self.channel,
            signer=signer,
            scheme=scheme,
            genesis_prev_hash=channel_genesis_hash(self.genesis.hash, self.channel),
            overrides=kwargs,
        )
        # Governance learns a change from the committed config_update carrying it and
        # puts it in force CONFIG_ACTIVATION_DELAY blocks later at the earliest: above
        # that the replica holds what it cannot judge yet (consensus.ReplicaConfig).
        rc = replace(
            rc,
            activation_delay=CONFIG_ACTIVATION_DELAY,
            config_tx_types=frozenset({CONFIG_UPDATE}),
        )
        app: Application = _NodeApplication(self)
        tip = self.store.tip(self.channel)
        header = self.store.header(self.channel, tip.height) if tip.height else None
        durable, self._durable_wal = DurableWal.load(self.store, self.channel)
        return Replica(
            rc,
            app,
            committed_height=tip.height,
            committed_hash=tip.hash,
            committed_time_ms=header.time_ms if header is not None else 0,
            durable=durable,
        )

    # ------------------------------------------------------------------ reads

    @property
    def height(self) -> int:
        return self.store.height(self.channel)

    def permissions(self) -> Permissions:
        return self.governance.permissions_at(self.height + 1)

    def role_of(self, org_id: str, public_key: bytes, height: int | None = None) -> str | None:
        """The role of ``org_id`` if ``public_key`` is one of its active keys at
        ``height`` (default: the next block's height); ``"node"`` for a node key."""
        h = self.height + 1 if height is None else height
        org = self.governance.registry.org_at(org_id, h)
        if org is not None:
            return org.role if org.key_active_at(public_key, h) else None
        for node in self.genesis.nodes:
            if node.node_id == org_id:
                return "node" if node.public_key == public_key else None
        info = self.governance.validators.node_info(org_id, h)
        if info is not None and info.public_key == public_key:
            return "node"
        return None

    def check_tx(self, tx: Transaction) -> str | None:
        """The stateless admission check (the replica verifies the signature itself)."""
        if tx.network != self.genesis.hash:
            return "transaction is for another network"
        if tx.channel != self.channel:
            return f"transaction is for channel {tx.channel!r}"
        role = self.role_of(tx.sender, tx.public_key)
        if role is None:
            return f"key is not an active key of {tx.sender!r}"
        if not self.permissions().may_submit(tx.type, role):
            return f"role {role!r} may not submit {tx.type!r} on {self.channel!r}"
        if self.store.tx_location(self.channel, tx.tx_id) is not None:
            return "transaction already committed"
        rejected = self.logic.check_stateless(tx, role)
        return None if rejected is None else f"{rejected.code}: {rejected.message}"

    def outcomes(self, height: int) -> list[TxOutcome]:
        """The outcomes of committed block ``height`` (``[]`` if none are recorded).
        Committed outcomes never change: the last few heights' are kept decoded, so a
        batch of status queries decodes each block's list once, not once per tx."""
        cached = self._outcomes_cache.get(height)
        if cached is not None:
            return cached
        raw = self.store.get_wal(self.channel, outcomes_key(height))
        if raw is None:
            return []
        try:
            outs = [TxOutcome.from_wire(o) for o in decode(raw)]
        except LedgerError:
            return []
        self._cache_outcomes(height, outs)
        return outs

    def _cache_outcomes(self, height: int, outs: list[TxOutcome]) -> None:
        cache = self._outcomes_cache
        with contextlib.suppress(KeyError):  # readers in worker threads may race here
            cache[height] = outs
            while len(cache) > OUTCOMES_CACHE_BLOCKS:
                cache.popitem(last=False)

    def tx_status(self, tx_id: bytes) -> TxStatus | None:
        recent = self._recent.get(tx_id)
        if recent is not None:  # committed here lately: no block read needed
            height, index, sender = recent
            outs = self.outcomes(height)
            outcome = outs[index] if index < len(outs) else None
            return TxStatus("committed", sender, height, index, outcome)
        located = self.store.transaction(self.channel, tx_id)
        if located is not None:
            outs = self.outcomes(located.height)
            outcome = outs[located.index] if located.index < len(outs) else None
            return TxStatus(
                "committed",
                located.transaction.sender,
                located.height,
                located.index,
                outcome,
            )
        pending = self._pending.get(tx_id)
        if pending is not None:
            return TxStatus("pending", pending[0])
        rejected = self._rejected.get(tx_id)
        if rejected is not None:
            return TxStatus("rejected", rejected[0], reason=rejected[1])
        return None

    # ------------------------------------------------------------------ inputs

    def deliver(self, sender: str, payload: bytes) -> bool:
        """Decode an authenticated peer's message and queue it for the driver (votes
        and proposals ahead of bulk traffic). False if undecodable, if it names another
        sender than the peer whose frame carried it (only a NEW-VIEW is passed on by
        others: a replica sends the one it entered to a peer left behind), or if the
        inbox is full."""
        try:
            msg = cport.decode_message(payload)
        except LedgerError as exc:
            self.metrics.rejected_messages.inc(1, self.channel, "undecodable")
            log.debug("undecodable message from %s: %s", sender, exc)
            return False
        if msg.sender != sender and not isinstance(msg, NewView):
            # The replica holds some messages unverified until it knows the validator
            # set of their height: a peer must not fill another's share.
            self.metrics.rejected_messages.inc(1, self.channel, "sender_mismatch")
            return False
        if len(self._urgent) + len(self._inbox) >= self._inbox_limit:
            self.metrics.rejected_messages.inc(1, self.channel, "inbox_full")
            return False
        if cport.is_urgent(msg):
            self._urgent.append((sender, msg))
        else:
            self._inbox.append(("msg", msg))
        self._wake.set()
        return True

    async def submit(self, txs: Sequence[Transaction]) -> list[SubmitOutcome]:
        """Hand client transactions to the replica; resolves once the driver took them."""
        if self.replica is None:
            raise RuntimeError("not a validator of this channel")
        if len(self._urgent) + len(self._inbox) >= self._inbox_limit:
            raise OverflowError("inbox full")
        fut: asyncio.Future[list[SubmitOutcome]] = asyncio.get_running_loop().create_future()
        self._inbox.append(("txs", (list(txs), fut)))
        self._wake.set()
        return await fut

    async def wait_committed(self, tx_id: bytes, timeout_s: float) -> None:
        """Wait until ``tx_id`` is committed here (or the timeout passes)."""
        if self.store.tx_location(self.channel, tx_id) is not None:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(tx_id, []).append(fut)
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        except TimeoutError:
            pass
        finally:
            waiters = self._waiters.get(tx_id)
            if waiters is not None and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._waiters[tx_id]

    async def wait_block(self, after_height: int, timeout_s: float) -> None:
        """Wait until the height exceeds ``after_height`` (or the timeout passes)."""
        deadline = time.monotonic() + timeout_s
        while self.height <= after_height:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            event = self._new_block
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    # ------------------------------------------------------------------ driver

    def start(self) -> None:
        if self.replica is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name=f"driver-{self.channel}"
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._inflight is not None:
            await asyncio.wait([self._inflight])
            self._inflight = None
        for item_kind, item in self._inbox:
            if item_kind == "txs" and not item[1].done():
                item[1].cancel()
        self._inbox.clear()
        self._urgent.clear()

    def _now(self) -> int:
        now = max(self._clock(), self._last_now)
        self._last_now = now
        return now

    async def run(self) -> None:
        replica = self.replica
        assert replica is not None
        loop = asyncio.get_running_loop()
        tick_s = self._tick_ms / 1000.0
        # Ticks fall on multiples of tick_s of the loop clock, so every channel of this
        # node ticks at the same instants and their periodic messages (STATUS) leave
        # in the same peer frames.
        next_tick = loop.time()
        quiet = False  # Replica.quiescent() as of the end of the last turn
        try:
            while True:
                now = loop.time()
                if not self._urgent and not self._inbox and now < next_tick:
                    handle = loop.call_at(next_tick, self._wake.set)
                    await self._wake.wait()
                    handle.cancel()
                self._wake.clear()
                now = loop.time()
                if now < next_tick and quiet:
                    # Not ticked while quiet: its clock (block times, transactions'
                    # arrival times) is up to a STATUS interval old. Bring it to the
                    # present before it sees the input; with no timer armed, ticking
                    # before the input blames nobody.
                    next_tick = self._tick(replica, now, now, tick_s)
                if self._urgent:
                    t_step = time.perf_counter()
                    self._step_urgent(replica)
                    self._spent("step", t_step)
                now = loop.time()
                if now >= next_tick:
                    next_tick = self._tick(replica, now, next_tick, tick_s)
                await self._process_ready(replica)
                if self._inbox:
                    t_step = time.perf_counter()
                    self._drain_inbox(replica, loop.time() + BULK_BUDGET_S)
                    self._spent("step", t_step)
                    await self._process_ready(replica)
                # the replica changes only in this loop: quiescent now, quiescent at the
                # next wake
                quiet = replica.quiescent()
                next_tick = self._next_tick(quiet, next_tick, tick_s)
                if self._inbox or self._urgent:
                    await asyncio.sleep(0)  # let HTTP handlers run between batches
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed = f"{type(exc).__name__}: {exc}"
            log.critical(
                "channel driver stopped: %s",
                self.failed,
                exc_info=True,
                extra={"channel": self.channel, "height": self.height},
            )

    def _tick(self, replica: Replica, now: float, due: float, tick_s: float) -> float:
        """Tick the replica at ``now`` (loop time; the tick was due at ``due``) and
        return when the next regular tick falls."""
        late_ms = stalled_ms(now, due, self._accounted_to)
        if late_ms >= PAUSE_AFTER_MS:
            # The event loop could not run this driver (another channel's block
            # applied on it, a worker thread holding the GIL, the machine's CPU
            # taken): this node's time, not the primary's.
            replica.pause(late_ms)
            self.metrics.stalled_seconds.observe(late_ms / 1000, self.channel)
        if self.transport is not None:
            replica.set_unreachable(self.transport.unreachable())
        replica.tick(self._now())
        return (now // tick_s + 1) * tick_s

    def _next_tick(self, quiet: bool, planned: float, tick_s: float) -> float:
        """When (loop time) to tick next: every ``tick_s`` while the replica has
        anything a timer could judge; when it is quiescent (nothing in flight, queued
        or pending: :meth:`Replica.quiescent`), only when its next STATUS is due — an
        idle channel woke its driver 50 times a second for nothing (five channels on
        each of five nodes: ~0.23 cores of an idle network). Inputs wake the driver
        at once either way, and an input that ends the quiet brings the next tick back
        within ``tick_s``. Ticks stay on multiples of ``tick_s``."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        regular = (now // tick_s + 1) * tick_s
        if not quiet:
            return min(planned, regular) if planned > now else planned
        assert self.replica is not None
        wait_s = max(0.0, (self.replica.next_status_ms - self._now()) / 1000.0)
        due = now + min(wait_s, QUIET_TICK_MAX_S)
        return max(regular, -(-due // tick_s) * tick_s)

    def _step_urgent(self, replica: Replica) -> None:
        if self._urgent:
            replica.note_time(self._now())
        while self._urgent:
            _sender, msg = self._urgent.popleft()
            replica.step(msg)

    def _drain_inbox(self, replica: Replica, deadline: float) -> None:
        """Step bulk messages and hand client transactions to the replica until the
        inbox is empty or ``deadline`` (loop time) passes; urgent messages arriving
        meanwhile are stepped between items."""
        loop = asyncio.get_running_loop()
        replica.note_time(self._now())
        while self._inbox:
            kind, item = self._inbox.popleft()
            if kind == "msg":
                if (
                    isinstance(item, Blocks)
                    and isinstance(self._scheme, MemoisedEd25519)
                    and replica.would_take(item)  # not one it drops unchecked
                ):
                    verify_ahead(self._scheme, self._answer_checks(item))
                replica.step(item)
            else:
                txs, fut = item
                if not fut.done():
                    try:
                        fut.set_result(self._submit_now(replica, txs))
                    except Exception as exc:  # our bug: report to the caller, keep running
                        log.exception("submit failed", extra={"channel": self.channel})
                        fut.set_exception(exc)
            if self._urgent:
                self._step_urgent(replica)
            if loop.time() >= deadline:
                break
        # the clients' transactions of this turn leave in one FORWARD, not on the tick
        replica.flush_forwards()

    def _answer_checks(self, answer: Blocks) -> list[Check]:
        """The signatures the replica checks in a catch-up answer, for
        :func:`~node.signatures.verify_ahead`: each certificate's votes (keys of the
        validators at that height, as the replica takes them) and each client
        signature the memo would remember, of the blocks above the stored height."""
        assert isinstance(self._scheme, MemoisedEd25519)
        memo = self._scheme
        top = self.store.height(self.channel)
        checks: list[Check] = []
        for block, cert in answer.entries:
            if block.height <= top:
                continue
            members = self.governance.validators_at(block.height).by_id
            vote_message = cert.message()
            for vote in cert.votes:
                member = members.get(vote.validator)
                if member is not None:
                    checks.append(
                        (member.public_key, TAG_COMMIT_VOTE, vote_message, vote.signature)
                    )
            checks.extend(
                (tx.public_key, TAG_TX, tx.body_bytes, tx.signature)
                for tx in block.transactions
                if memo.remembers(tx.body_bytes)
            )
        return checks

    def _submit_now(self, replica: Replica, txs: list[Transaction]) -> list[SubmitOutcome]:
        results = replica.submit(txs)
        out: list[SubmitOutcome] = []
        now = time.perf_counter()
        for tx, res in zip(txs, results, strict=True):
            accepted, reason = cport.submit_result(res)
            tx_id = tx.tx_id
            if accepted:
                self._remember(self._pending, tx_id, (tx.sender, now))
                self._rejected.pop(tx_id, None)
                out.append(SubmitOutcome(tx_id, True))
                continue
            status = self.tx_status(tx_id)
            if status is not None and status.status in ("committed", "pending"):
                out.append(SubmitOutcome(tx_id, True, committed=status))
                continue
            self._remember(self._rejected, tx_id, (tx.sender, reason or "rejected"))
            out.append(SubmitOutcome(tx_id, False, reason or "rejected"))
        return out

    def _remember(self, cache: OrderedDict[bytes, Any], key: bytes, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self._status_cache:
            cache.popitem(last=False)

    async def _process_ready(self, replica: Replica) -> None:
        while replica.has_ready():
            rd = replica.ready()
            t0 = time.perf_counter()
            # the next catch-up request leaves now, its answer arriving while these
            # blocks are written
            self._send(rd, SEND_BEFORE_PERSIST)
            if rd.committed and self._has(rd, SEND_BEFORE_STORE):
                # Proposals and votes need the durable state on disk, not the committed
                # blocks: it is written alone and they leave while the blocks are
                # applied and written (on a busy node that takes tens of ms, and the
                # next blocks' rounds would wait for it).
                if rd.persist is not None:
                    await self._write_durable(rd.persist)
                self._send(rd, SEND_BEFORE_STORE)
                await self._persist_and_commit(rd, durable_written=True)
                self._send(rd, SEND_AFTER_STORE)
            else:
                await self._persist_and_commit(rd)
                self._send(rd, SEND_BEFORE_STORE, SEND_AFTER_STORE)
            busy_ms = int((time.perf_counter() - t0) * 1000)
            if rd.committed:
                replica.note_apply(busy_ms, sum(len(b.encoded()) for b, _ in rd.committed))
            if busy_ms >= PAUSE_AFTER_MS:
                # The replica saw nothing while its blocks were applied and stored: that
                # time is this node's, not the primary's (no view change for it).
                replica.pause(busy_ms)
                self._accounted_to = asyncio.get_running_loop().time()
            for ev in rd.evidence:
                self.metrics.evidence.inc(1, self.channel)
                log.warning(
                    "misbehaviour: %s", ev, extra={"channel": self.channel, "view": replica.view}
                )
            replica.advance(rd)
            self.metrics.ready_seconds.observe(time.perf_counter() - t0, self.channel)
            if replica.view != self._seen_view:
                if replica.view > self._seen_view:
                    self.metrics.view_changes.inc(1, self.channel)
                fired = {
                    k[len("timeouts.") :]: v
                    for k, v in replica.metrics.items()
                    if k.startswith("timeouts.") and v > self._timeouts_seen.get(k, 0)
                }
                self._timeouts_seen.update({f"timeouts.{k}": v for k, v in fired.items()})
                log.info(
                    "entered view %d (primary %s)%s",
                    replica.view,
                    cport.primary_of(replica),
                    view_change_cause(fired),
                    extra={"channel": self.channel, "view": replica.view, "height": self.height},
                )
                self._seen_view = replica.view
            cport.mirror_counters(replica, self.metrics, self.channel)

    async def _persist_and_commit(self, rd: Ready, *, durable_written: bool = False) -> None:
        """Persist the durable state (unless ``durable_written``: the caller wrote it)
        and commit the blocks, in order.

        Each block is applied here (CPU: on the loop, or in a worker thread when it is
        large, :data:`APPLY_OFF_LOOP_BYTES`) on top of the blocks before it; up to
        :data:`COMMIT_BATCH_BLOCKS` / :data:`COMMIT_BATCH_BYTES` of them are then
        written with their certificates, state writes, roots and outcomes in one synced
        batch (:meth:`_io`: on the loop if small, else in a worker thread; catch-up
        answers bring 64 blocks at once: one disk sync for them, not 64). The durable
        state rides in the last batch (or is written alone), so it is on disk before
        :meth:`_send`. Governance observes each block right after it is applied, so the
        roles of the next block are the ones in force at its height. A block that waits
        for another channel first writes the blocks applied before it (that channel may
        be waiting for them). A failed write raises (the driver stops; the blocks not
        written are fetched again on restart).
        """
        committed = rd.committed
        persist = None if durable_written else rd.persist
        if not committed:
            if persist is not None:
                await self._write_durable(persist)
            return
        durable = self._durable_wal.changes(persist) if persist is not None else None
        batch = self._unwritten  # applied, not yet written; _write_blocks empties it
        overlay: WriteSet | None = None  # their state writes over the store's state
        t_delta = time.perf_counter()
        from_delta = self._delta_effects(committed, rd.extras) if rd.extras else {}
        self._spent("apply", t_delta)
        for i, (block, cert) in enumerate(committed):
            while True:
                t_apply = time.perf_counter()
                proven = from_delta.get(block.height)
                if proven is not None and self._prev_root(block.height) == proven.prev_root:
                    effects = proven.effects
                    self.metrics.catchup.inc(1, self.channel, "delta_blocks")
                    self._spent("apply", t_apply)
                    break
                try:
                    effects = await self._apply(block, overlay)
                    self._spent("apply", t_apply)
                    break
                except NeedsOtherChannel as exc:
                    self._spent("apply", t_apply)
                    if batch:  # the other channel may be waiting for these
                        await self._write_blocks()
                        overlay = None
                        continue
                    self._log_wait(block, exc)
                    t_wait = time.perf_counter()
                    await asyncio.sleep(0.02)
                    self._spent("wait_channel", t_wait)
            wal: dict[str, bytes | None] = {
                outcomes_key(block.height): encode([o.to_wire() for o in effects.outcomes])
            }
            self._unwritten_outcomes[block.height] = list(effects.outcomes)
            last = i == len(committed) - 1
            if durable is not None and last:
                wal.update(durable)
            batch.append(
                BlockCommit(block, cert, effects.writes, effects.state_root, wal, effects.delta)
            )
            self.governance.observe_block(block)
            batch_bytes = sum(len(c.block.encoded()) for c in batch)
            if last or len(batch) >= COMMIT_BATCH_BLOCKS or batch_bytes >= COMMIT_BATCH_BYTES:
                await self._write_blocks()
                overlay = None
            else:
                if overlay is None:
                    overlay = WriteSet(self._state)
                for key, value in effects.writes.items():
                    if value is None:
                        overlay.delete(key)
                    else:
                        overlay.put(key, value)
        if durable is not None:
            self._durable_wal.written()  # it rode in the last batch
        last_block = committed[-1][0]
        log.debug(
            "committed %d block(s)",
            len(committed),
            extra={
                "channel": self.channel,
                "height": last_block.height,
                "view": last_block.header.view,
            },
        )
        event, self._new_block = self._new_block, asyncio.Event()
        event.set()

    async def commit_certified(self, blocks: Sequence[tuple[Block, CommitCertificate]]) -> None:
        """Apply and write blocks certified elsewhere, on a node whose driver is not
        running (:mod:`node.seed`): the same path as the blocks consensus commits.
        Certificates and signatures are the caller's to vouch for."""
        if self._task is not None:
            raise RuntimeError("commit_certified while the channel driver runs")
        await self._persist_and_commit(Ready(None, (), tuple(blocks), ()))

    def unwritten_hash(self, height: int) -> bytes | None:
        """The hash of block ``height`` if it is applied and committed but its batch is
        not written yet (the rules reading header hashes must see it: the next block
        of the batch may acknowledge it); None otherwise."""
        for c in self._unwritten:
            if c.block.height == height:
                return c.block.hash
        return None

    async def _write_durable(self, state: DurableState) -> None:
        """Write what changed of the replica's durable state, alone, synced."""
        entries = self._durable_wal.changes(state)
        await self._io(_wal_bytes(entries), self.store.put_wal, self.channel, entries)
        self._durable_wal.written()

    async def _write_blocks(self) -> None:
        """Write the unwritten blocks in one batch and empty it (also on failure)."""
        batch = list(self._unwritten)
        outcomes = self._unwritten_outcomes
        self._unwritten_outcomes = {}
        size = _commit_bytes(batch, INLINE_WRITE_MAX_BYTES)
        try:
            await self._io(size, self.store.commit_blocks, self.channel, batch)
        finally:
            self._unwritten.clear()
        for c in batch:
            # the status queries that follow a commit need no decode of what was written
            self._cache_outcomes(c.block.height, outcomes[c.block.height])
            self._on_committed(c.block)

    def _spent(self, stage: str, since: float) -> None:
        """Count the wall time since ``since`` (``time.perf_counter``) to ``stage`` (one
        of :data:`DRIVER_STAGES`) of ``wulian_driver_seconds_total``."""
        self.metrics.driver_seconds.inc(time.perf_counter() - since, self.channel, stage)

    async def _io(self, size: int, fn: Callable[..., None], *args: Any) -> None:
        """Run the blocking synced store write ``fn(*args)`` of about ``size`` bytes: on
        the loop if it is small and the disk has been quick
        (:data:`INLINE_WRITE_MAX_BYTES`), else in a worker thread. If the driver is
        cancelled during a threaded write, :meth:`stop` still waits for it to finish
        before the store may be closed (closing LevelDB under a running write crashes
        the process). Raises what ``fn`` raises; either way its time is averaged into
        :attr:`write_s`."""

        def timed() -> None:
            t = time.perf_counter()
            try:
                fn(*args)
            finally:
                dt = time.perf_counter() - t
                self.write_s += WRITE_TIME_WEIGHT * (dt - self.write_s)

        started = time.perf_counter()
        if size <= INLINE_WRITE_MAX_BYTES and self.write_s <= INLINE_WRITE_MAX_S:
            try:
                timed()
            finally:
                self._spent("write", started)
            return
        fut = asyncio.ensure_future(asyncio.to_thread(timed))
        self._inflight = fut
        try:
            await asyncio.shield(fut)
        finally:
            self._spent("write", started)
            if fut.done():
                self._inflight = None

    async def _apply(self, block: Block, overlay: WriteSet | None) -> BlockEffects:
        """Apply ``block`` through the channel rules on the committed state, or on
        ``overlay`` (the state writes of the unwritten blocks before it, whose state
        root is the last one's). Raises :class:`NeedsOtherChannel` while it needs
        another channel's height that this node has not applied yet (the caller waits:
        never a guess)."""
        prev_root = self._prev_root(block.height)
        state = self._state if overlay is None else overlay
        roles = [self.role_of(tx.sender, tx.public_key, block.height) for tx in block.transactions]
        # A large block takes this node's CPU for a second or more: applied in a worker
        # thread, the loop keeps serving the other channels' votes and timers meanwhile
        # (on the loop, their blocks stalled and their backups changed view).
        if len(block.encoded()) >= APPLY_OFF_LOOP_BYTES:
            return await asyncio.to_thread(
                self.logic.apply_block, block, roles, state, self._cross, prev_root
            )
        return self.logic.apply_block(block, roles, state, self._cross, prev_root)

    def _prev_root(self, height: int) -> bytes:
        """The state root that block ``height`` (the next to apply) builds on: the last
        unwritten block's, or the store's. Raises RuntimeError if none is recorded."""
        if self._unwritten:
            prev_root: bytes | None = self._unwritten[-1].state_root
        elif height == 1:
            prev_root = self.logic.initial_state_root()
        else:
            prev_root = self.store.state_root_at(self.channel, height - 1)
        if prev_root is None:
            raise RuntimeError(f"no state root recorded for height {height - 1}")
        return prev_root

    def _delta_effects(
        self, committed: Sequence[tuple[Block, CommitCertificate]], extras: Mapping[int, bytes]
    ) -> dict[int, _DeltaEffects]:
        """The effects of the ``committed`` blocks (a catch-up answer's) that their
        state deltas (``extras``, from the peer that answered: untrusted) prove, so
        they need not be applied.

        The deltas are chained from the root the first block builds on
        (:meth:`ChannelLogic.delta_root`). A header certifies the root of its
        ``state_height``, which lags it by the pipelining window: a delta is used only
        if a certified header among ``committed`` names the root it chains to, or
        that of a later block's (the chain covers every delta before it). The blocks
        from the first missing delta on are applied as usual, and so are those from a
        delta whose root a header refuses (counted: ``delta_refused``), and a block
        whose delta cannot stand in for it (:meth:`ChannelLogic.effects_from_delta`:
        a rejected transaction's message). Each result names the root it builds on;
        the caller uses it only on that root."""
        chain: list[tuple[Block, bytes, bytes, bytes]] = []  # block, delta, prev, root
        prev = self._prev_root(committed[0][0].height)
        for block, _ in committed:
            delta = extras.get(block.height)
            if delta is None:
                break
            root = self.logic.delta_root(block, prev, delta)
            chain.append((block, delta, prev, root))
            prev = root
        certified = {b.header.state_height: b.header.state_root for b, _ in committed}
        proven = 0
        for block, _, _, root in chain:
            want = certified.get(block.height)
            if want is None:
                continue
            if want != root:
                self.metrics.catchup.inc(1, self.channel, "delta_refused")
                log.warning(
                    "a catch-up answer's state delta does not match the certified root",
                    extra={"channel": self.channel, "height": block.height},
                )
                break
            proven = block.height
        out: dict[int, _DeltaEffects] = {}
        for block, delta, prev_root, root in chain:
            if block.height > proven:
                break
            effects = self.logic.effects_from_delta(block, delta, root)
            if effects is not None:  # else it is applied (a rejection's message)
                out[block.height] = _DeltaEffects(prev_root, effects)
        return out

    def _log_wait(self, block: Block, exc: NeedsOtherChannel) -> None:
        """Say (every 5 s at most) that ``block`` waits for another channel."""
        now = time.monotonic()
        if now >= self._next_wait_log:
            log.warning(
                "block waits for %s height %d",
                exc.channel,
                exc.height,
                extra={"channel": self.channel, "height": block.height},
            )
            self._next_wait_log = now + 5.0

    def _on_committed(self, block: Block) -> None:
        now = time.perf_counter()
        self.metrics.committed_txs.inc(len(block.transactions), self.channel)
        recent = self._recent
        for index, tx in enumerate(block.transactions):
            tx_id = tx.tx_id
            recent[tx_id] = (block.height, index, tx.sender)
            pending = self._pending.pop(tx_id, None)
            if pending is not None:
                self.metrics.commit_latency.observe(now - pending[1], self.channel)
            self._rejected.pop(tx_id, None)
            for fut in self._waiters.pop(tx_id, ()):
                if not fut.done():
                    fut.set_result(None)
        while len(recent) > min(self._status_cache, RECENT_TXS):
            recent.popitem(last=False)

    @staticmethod
    def _has(rd: Ready, stage: int) -> bool:
        return any(send_stage(out.message) == stage for out in rd.messages)

    def _send(self, rd: Ready, *stages: int) -> None:
        """Send ``rd``'s messages of these :func:`~consensus.replica.send_stage`
        stages."""
        if self.transport is None or not rd.messages:
            return
        peers_all = [
            v.node_id
            for v in self.governance.validators_at(self.height + 1).validators
            if v.node_id != self.node_id
        ]
        for out in rd.messages:
            if send_stage(out.message) not in stages:
                continue
            payload = cport.encode_message(out.message)
            kind = cport.message_kind(out.message)
            essential = cport.is_essential(out.message)
            urgent = cport.is_urgent(out.message)
            to = peers_all if out.to is None else [out.to]
            self.transport.send(to, self.channel, payload, kind, essential, urgent)
