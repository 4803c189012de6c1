"""The node's cross-chain relays: :mod:`crosschain.relay` wired to the store and drivers.

Every node runs both relays on a timer (:data:`RELAY_INTERVAL_S`), and at once after a
judicial commit (anchors landed: the next window need not wait for the timer):

* :class:`~crosschain.relay.AnchorRelay` — committed supervision blocks → judicial
  ``anchor`` transactions;
* :class:`~crosschain.relay.AckRelay` — the judicial proof of each anchor → a
  supervision acknowledgement, submitted as type ``anchor_receipt`` (the supervision
  channel's extension point for it, built by :mod:`crosschain.ack`).

The ports read only *committed* data from the store. Transactions are signed with this
node's key (sender = node id, role ``node``) and handed to the local channel driver like
a client submission; a node that does not validate the target channel skips that leg.
Several nodes relaying at once is fine: the target rule accepts each block once and
rejects the other copies as duplicates.

Quiescence: acknowledgements are themselves supervision transactions, so acking a
block that holds only acknowledgements would produce another such block, forever (an
idle network would never stop making blocks). The ack leg therefore runs only while
some unacknowledged supervision block holds another transaction; ack-only blocks are
acknowledged together with the next block that carries real records (acks must come
in height order, so they are never skipped, only deferred).

Batching: the ack leg also waits until the oldest block it is due for was proposed
``ack_delay_ms`` ago (``[relay] ack_delay_ms``, :data:`node.config.DEFAULT_ACK_DELAY_MS`),
or until :data:`ACK_BACKLOG_BLOCKS` blocks wait, and then acknowledges every anchored
block in one go (block times are the proposer's clock: a skewed clock shifts the wait
by its skew). Acked at once, each block of lender reports brought an ack-only block and
the court block anchoring it. Evidence codes do not wait for acks on a node that holds
the court chain (it reads the anchor there, ``node.evidence_routes``); a node that does
not validate the court channel shows them once the ack lands.

The anchor leg waits likewise, for less: until the oldest supervision block not
anchored yet was proposed ``anchor_delay_ms`` ago (``[relay] anchor_delay_ms``,
:data:`node.config.DEFAULT_ANCHOR_DELAY_MS`), or :data:`ANCHOR_BACKLOG_BLOCKS` blocks
wait, or they hold a full step's record leaves, or a block's leaf chunks are owed; one
step then anchors every block committed meanwhile. A block costs the network about the
same whatever it holds, and anchored at once each block of reports brought its own
court block.

Staggering: every node relays, but not all at once. For each piece of work (the judicial
chain's anchor progress, the supervision chain's last ack) the nodes take turns by rank
``(height + node index) mod n``: rank 0 acts at once, rank ``k`` only if the work is
still not done ``k × STAGGER_MS`` later. One copy normally lands, the others are backups
(a down node delays the relay by at most a few seconds); duplicates, when they happen,
are rejected by the rule.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from crosschain.ack import AckState, read_ack_state
from crosschain.anchor import SOURCE_CHANNEL, TARGET_CHANNEL
from crosschain.anchor_rules import AnchorRule, read_anchor_entry, read_light_client
from crosschain.evidence_index import AnchorEntry
from crosschain.relay import AckRelay, AnchorProgress, AnchorRelay, RelayConfig
from crosschain.validator_history import ConfigStep
from ledger.blocks import Block, Transaction
from ledger.certificate import CommitCertificate
from ledger.crypto import Signer
from ledger.errors import LedgerError
from ledger.genesis import Genesis
from ledger.store import BlockStore
from node.channel import ChannelService
from node.channel_rules import ACK_EXTENSION_POINT
from node.config import DEFAULT_ACK_DELAY_MS, DEFAULT_ANCHOR_DELAY_MS
from node.rules import StoreState

log = logging.getLogger("wulian.node.relay")

#: How often the relays look for work.
RELAY_INTERVAL_S = 0.2
#: Delay between two nodes' turns at the same piece of relay work.
STAGGER_MS = 1500
#: A node further behind than this on the target channel (what f+1 peers say they
#: committed) does not relay into it: what it reads of the target's progress is stale,
#: so what it would send is mostly duplicates (while it catches up on 10,000 blocks,
#: a window of them every step). The other nodes relay in the meantime.
MAX_BEHIND = 4
#: Unacknowledged supervision blocks looked at to decide whether acks are due.
MAX_ACK_SCAN = 1024
#: Acks are due at once, whatever the delay, when a block due for one has this many
#: blocks after it (the ack relay's window: one step acknowledges that many).
ACK_BACKLOG_BLOCKS = 64
#: Unanchored supervision blocks that make the anchor leg go before ``anchor_delay_ms``.
ANCHOR_BACKLOG_BLOCKS = 64


class StoreBlockSource:
    """A channel's committed blocks (:class:`crosschain.relay.BlockSource`)."""

    def __init__(self, store: BlockStore, channel: str) -> None:
        self.store = store
        self.channel = channel

    def height(self) -> int:
        return self.store.height(self.channel)

    def committed_block(self, height: int) -> tuple[Block, CommitCertificate] | None:
        if height > self.store.height(self.channel):
            return None
        block = self.store.block(self.channel, height)
        cert = self.store.certificate(self.channel, height)
        return None if block is None or cert is None else (block, cert)


class StoreJudicialSource(StoreBlockSource):
    """The judicial channel as seen by the ack relay (:class:`JudicialSource`); config
    steps are scanned once and cached (committed blocks never change)."""

    def __init__(self, store: BlockStore) -> None:
        super().__init__(store, TARGET_CHANNEL)
        self._steps: list[ConfigStep] = []
        self._scanned = 0

    def anchor_entry(self, source_height: int) -> AnchorEntry | None:
        return read_anchor_entry(
            StoreState(self.store, TARGET_CHANNEL), SOURCE_CHANNEL, source_height
        )

    def config_steps(self, after: int, below: int) -> list[ConfigStep]:
        target = min(below - 1, self.height())
        if target > self._scanned:
            for block, cert in self.store.iter_blocks(TARGET_CHANNEL, self._scanned + 1, target):
                step = ConfigStep.of(block, cert)
                if step is not None:
                    self._steps.append(step)
            self._scanned = target
        return [s for s in self._steps if after < s.height < below]


class _Outbox:
    """Collects what a relay step submits (the ports are synchronous)."""

    def __init__(self) -> None:
        self.txs: list[Transaction] = []

    def take(self) -> list[Transaction]:
        out, self.txs = self.txs, []
        return out


class StoreAnchorSink(_Outbox):
    def __init__(self, store: BlockStore, rule: AnchorRule) -> None:
        super().__init__()
        self.store = store
        self.rule = rule

    def progress(self) -> AnchorProgress:
        state = read_light_client(StoreState(self.store, TARGET_CHANNEL), self.rule.initial)
        return AnchorProgress.of(state)

    def submit(self, tx: Transaction) -> None:
        self.txs.append(tx)


class StoreAckSink(_Outbox):
    """Acks go to the supervision channel as ``anchor_receipt`` transactions."""

    def __init__(self, store: BlockStore, initial: AckState) -> None:
        super().__init__()
        self.store = store
        self.initial = initial

    def ack_state(self) -> AckState:
        return read_ack_state(StoreState(self.store, SOURCE_CHANNEL), self.initial)

    def submit(self, tx: Transaction) -> None:
        self.txs.append(tx)


class NodeRelays:
    """Both relays of one node, stepped by :meth:`run` until cancelled."""

    def __init__(
        self,
        *,
        genesis: Genesis,
        store: BlockStore,
        node_id: str,
        signer: Signer,
        channels: dict[str, ChannelService],
        clock_ms: Callable[[], int],
        ack_delay_ms: int = DEFAULT_ACK_DELAY_MS,
        anchor_delay_ms: int = DEFAULT_ANCHOR_DELAY_MS,
    ) -> None:
        """Raises ValueError for a negative ``ack_delay_ms`` or ``anchor_delay_ms``."""
        from crosschain.ack import AckRule

        if ack_delay_ms < 0:
            raise ValueError("ack_delay_ms must not be negative")
        if anchor_delay_ms < 0:
            raise ValueError("anchor_delay_ms must not be negative")
        self.ack_delay_ms = ack_delay_ms
        self.anchor_delay_ms = anchor_delay_ms

        self.channels = channels
        self.store = store
        ids = sorted(n.node_id for n in genesis.nodes)
        self._index = ids.index(node_id) if node_id in ids else 0
        self._n = max(1, len(ids))
        self._seen: dict[str, tuple[object, int]] = {}
        self.clock_ms = clock_ms
        #: Unacknowledged supervision heights already looked at: the block's time if it
        #: holds a transaction other than an ack, else None (committed blocks never
        #: change).
        self._needs_ack: dict[int, int | None] = {}
        #: Test-only hook (node/byzantine.py ``bad-anchors``): the anchor transactions
        #: → the ones to submit. None in production.
        self.tamper_anchors: Callable[[list[Transaction]], list[Transaction]] | None = None
        config = RelayConfig(network=genesis.hash, sender=node_id, signer=signer)
        self.anchor_sink = StoreAnchorSink(store, AnchorRule.from_genesis(genesis))
        self.anchor = AnchorRelay(StoreBlockSource(store, SOURCE_CHANNEL), self.anchor_sink, config)
        self.ack_sink = StoreAckSink(store, AckRule.from_genesis(genesis).initial)
        self.ack = AckRelay(StoreJudicialSource(store), self.ack_sink, config)

    def _my_turn(self, leg: str, work: object, height: int, now: int) -> bool:
        """True once it is this node's turn at ``work`` (see module docstring)."""
        seen = self._seen.get(leg)
        if seen is None or seen[0] != work:
            seen = (work, now)
            self._seen[leg] = seen
        rank = (height + self._index) % self._n
        return now - seen[1] >= rank * STAGGER_MS

    def _turn(self, channel: str, now: int) -> bool:
        if channel == TARGET_CHANNEL:
            p = self.anchor_sink.progress()
            return self._my_turn(channel, (p.height, p.next_chunk), p.height, now)
        acked = self.ack_sink.ack_state().acked
        return self._my_turn(channel, acked, acked, now)

    def _ack_needed(self, now: int) -> bool:
        """True if the oldest unacknowledged supervision block that holds a non-ack
        transaction was proposed at least :attr:`ack_delay_ms` before ``now`` (ms), or
        has :data:`ACK_BACKLOG_BLOCKS` blocks after it."""
        acked = self.ack_sink.ack_state().acked
        tip = self.store.height(SOURCE_CHANNEL)
        for h in [h for h in self._needs_ack if h <= acked]:
            del self._needs_ack[h]
        for h in range(acked + 1, min(tip, acked + MAX_ACK_SCAN) + 1):
            if h in self._needs_ack:
                time_ms = self._needs_ack[h]
            else:
                block = self.store.block(SOURCE_CHANNEL, h)
                if block is None:
                    return False
                needs = any(tx.type != ACK_EXTENSION_POINT for tx in block.transactions)
                time_ms = block.header.time_ms if needs else None
                self._needs_ack[h] = time_ms
            if time_ms is not None:
                return time_ms <= now - self.ack_delay_ms or tip - h >= ACK_BACKLOG_BLOCKS
        # a backlog longer than the scan: acknowledge rather than stall behind it
        return tip > acked + MAX_ACK_SCAN

    def _anchor_needed(self, now: int) -> bool:
        """True if the oldest supervision block not anchored yet was proposed at least
        :attr:`anchor_delay_ms` before ``now`` (ms), or the blocks waiting hold a full
        step's record leaves (``RelayConfig.max_leaves_per_step``: blocks of batch
        reports go at once) or number :data:`ANCHOR_BACKLOG_BLOCKS`, or a block's
        anchor is half done (its next leaf chunk is owed) or the link is frozen (the
        relay step reports it); False if every block is anchored."""
        p = self.anchor_sink.progress()
        if p.next_chunk is not None or p.frozen:
            return True
        tip = self.store.height(SOURCE_CHANNEL)
        if tip <= p.height:
            return False
        if tip - p.height >= ANCHOR_BACKLOG_BLOCKS:
            return True
        oldest = self.store.header(SOURCE_CHANNEL, p.height + 1)
        if oldest is None:
            return False
        if oldest.time_ms <= now - self.anchor_delay_ms:
            return True
        leaves = 0
        for h in range(p.height + 1, tip + 1):
            header = oldest if h == p.height + 1 else self.store.header(SOURCE_CHANNEL, h)
            if header is None:
                return False
            leaves += header.record_count
            if leaves >= self.anchor.config.max_leaves_per_step:
                return True  # a full step's worth: waiting would only make another
        return False

    def _validates(self, channel: str) -> ChannelService | None:
        svc = self.channels.get(channel)
        return svc if svc is not None and svc.replica is not None and not svc.failed else None

    async def step(self) -> int:
        """One round of both relays; returns how many transactions were submitted."""
        now = self.clock_ms()
        sent = 0
        for relay_step, sink, channel in (
            (self.anchor.step, self.anchor_sink, TARGET_CHANNEL),
            (self.ack.step, self.ack_sink, SOURCE_CHANNEL),
        ):
            svc = self._validates(channel)
            if svc is None:
                continue
            if svc.replica is not None and svc.replica.behind_by > MAX_BEHIND:
                continue  # its view of the chain's progress is stale: the others relay
            # blocking LevelDB reads: keep them off the event loop
            needed = self._ack_needed if channel == SOURCE_CHANNEL else self._anchor_needed
            if not await asyncio.to_thread(needed, now):
                continue
            if not await asyncio.to_thread(self._turn, channel, now):
                continue
            await asyncio.to_thread(relay_step, now)
            txs = sink.take()
            if self.tamper_anchors is not None and channel == TARGET_CHANNEL:
                txs = self.tamper_anchors(txs)
            if not txs:
                continue
            try:
                outcomes = await svc.submit(txs)
            except OverflowError:
                continue  # the driver is busy: the relay re-sends later
            for out in outcomes:
                if not out.accepted:
                    log.debug("relay tx %s to %s refused: %s", out.tx_id.hex(), channel, out.reason)
            sent += len(txs)
        return sent

    async def run(self, interval_s: float = RELAY_INTERVAL_S) -> None:
        """Step every ``interval_s``, and at once when the judicial channel commits a
        block since the last step began (an anchor or more landed: the next window can
        go without waiting for the timer)."""
        while True:
            judicial = self._validates(TARGET_CHANNEL)
            seen = judicial.height if judicial is not None else 0
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except (LedgerError, RuntimeError, ValueError) as exc:
                log.warning("relay step failed: %s", exc)
            if judicial is None:
                await asyncio.sleep(interval_s)
            else:
                await judicial.wait_block(seen, interval_s)
