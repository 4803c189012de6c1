"""The node runtime: everything one node process holds, built from its config.

:meth:`NodeRuntime.open` checks the configuration against the world before anything
starts — the key file (mode 0600) is this node's genesis key, the genesis loads, the
ledger database belongs to this genesis — and raises :class:`ConfigError` (one line)
otherwise. :meth:`start` starts one driver per channel this node validates and the
peer links; :meth:`stop` stops them and closes the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from channels.registry import READS_FROM
from ledger.errors import ConfigError
from ledger.genesis import ChannelConfig, Genesis, load_genesis
from ledger.keyfile import load_key_file
from ledger.store import BlockStore
from node import membership
from node.auth import Authenticator
from node.byzantine import install_from_env
from node.channel import ChannelService
from node.config import NodeConfig
from node.metrics import NodeMetrics
from node.peers import FrameAuth, FrameError, PeerTransport, SeqTracker
from node.relays import NodeRelays
from node.rules import ChannelLogic, channel_logic
from node.signatures import MemoisedEd25519
from node.tls import client_context
from node.workers import ChannelWorker, org_workers

log = logging.getLogger("wulian.node")


def open_node_store(config: NodeConfig, genesis_hash: bytes, *, create: bool) -> BlockStore:
    """Open the node's ledger (``config.ledger_dir``) with its ``[limits]``: tables,
    write buffer, compression and state-delta window. Whatever opens a node's ledger
    opens it so: opening prunes the deltas outside the window it is given. Raises what
    :meth:`BlockStore.open` raises."""
    limits = config.limits
    return BlockStore.open(
        config.ledger_dir,
        genesis_hash,
        create=create,
        open_tables=limits.ledger_open_tables,
        write_buffer_bytes=limits.ledger_write_buffer_mb << 20,
        compression=limits.ledger_compression,
        state_delta_heights=limits.state_delta_heights,
        state_delta_bytes=limits.state_delta_mb << 20,
    )


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class NodeRuntime:
    """One node: config, keys, genesis, store, channels, peers, metrics."""

    def __init__(self, config: NodeConfig, genesis: Genesis, store: BlockStore) -> None:
        self.config = config
        self.genesis = genesis
        self.store = store
        self.metrics = NodeMetrics()
        self.started_ms = wall_clock_ms()
        kf = load_key_file(config.key_file)
        self.signer = kf.signer
        self.node_keys: Mapping[str, bytes] = {n.node_id: n.public_key for n in genesis.nodes}
        self.seq = SeqTracker()
        self.auth = Authenticator(
            network=genesis.hash, capacity=config.limits.nonce_cache, clock_ms=wall_clock_ms
        )
        lim = config.limits
        peers = {n.node_id: n.address for n in genesis.nodes if n.node_id != config.node_id}
        #: Seals and opens peer frames (a MAC per link; keys from genesis/governance).
        self.frames = FrameAuth(self.signer, config.node_id, genesis.hash, lambda: self.node_keys)
        self.transport = PeerTransport(
            auth=self.frames,
            peers=peers,
            metrics=self.metrics,
            queue_limit=lim.peer_queue_messages,
            frame_max_bytes=lim.frame_max_bytes,
            flush_ms=lim.frame_flush_ms,
            tls=None if config.tls is None else client_context(config.tls.ca_file, config.tls),
        )
        #: One memo of verified signatures for the node's replicas and cross-chain rules.
        self.signatures = MemoisedEd25519()
        self.channels: dict[str, ChannelService] = {
            ch.channel_id: self._service(ch, follow=config.joining) for ch in genesis.channels
        }
        if config.rules == "channels":
            # a channel this node runs may read another's committed facts: that one
            # must run here too (as a follower if this node does not validate it), or
            # the reading channel's blocks would wait for it for ever
            missing = self.reads_not_run()  # the closure: nothing more to add after
            for ch in genesis.channels:
                if ch.channel_id in missing:
                    self.channels[ch.channel_id] = self._service(ch, follow=True)

        self.byzantine = install_from_env(
            config, signer=self.signer, transport=self.transport, channels=list(self.channels)
        )
        self.relays: NodeRelays | None = None
        if config.rules == "channels":
            self.relays = NodeRelays(
                genesis=genesis,
                store=store,
                node_id=config.node_id,
                signer=self.signer,
                channels=self.channels,
                clock_ms=wall_clock_ms,
                ack_delay_ms=config.ack_delay_ms,
                anchor_delay_ms=config.anchor_delay_ms,
            )
            if self.byzantine is not None and self.byzantine.mode == "bad-anchors":
                self.relays.tamper_anchors = self.byzantine.relay_anchors
        self.workers: list[ChannelWorker] = []
        if config.rules == "channels" and config.org_key_file is not None:
            self.workers = org_workers(
                genesis=genesis,
                store=store,
                node_id=config.node_id,
                org_key_file=config.org_key_file,
                channels=self.channels,
                clock_ms=wall_clock_ms,
            )

    def _service(self, ch: ChannelConfig, *, follow: bool) -> ChannelService:
        config, lim = self.config, self.config.limits
        return ChannelService(
            genesis=self.genesis,
            config=ch,
            node_id=config.node_id,
            signer=self.signer,
            store=self.store,
            logic=self._logic(ch.channel_id, ch.params),
            metrics=self.metrics,
            transport=self.transport,
            tick_ms=lim.tick_ms,
            inbox_limit=lim.inbox_messages,
            status_cache=lim.status_cache,
            consensus_overrides=dict(config.consensus),
            clock_ms=wall_clock_ms,
            follow=follow,
            scheme=self.signatures,
        )

    def reads_not_run(self) -> set[str]:
        """Channels without a replica here that a channel with one reads, directly or
        through another (``channels.registry.READS_FROM``)."""
        running = {c for c, svc in self.channels.items() if svc.replica is not None}
        needed: set[str] = set()
        todo = list(running)
        while todo:
            for source in READS_FROM.get(todo.pop(), ()):
                if source not in needed:
                    needed.add(source)
                    todo.append(source)
        return {c for c in needed - running if c in self.channels}

    def _logic(self, channel: str, params: Mapping[str, int | str]) -> ChannelLogic:
        """The channel's rules; production rules get the cross-chain rules installed,
        reading header hashes of committed blocks from the store, or of blocks applied
        but not written yet from their channel (``ChannelService.unwritten_hash``)."""
        if self.config.rules != "channels":
            return channel_logic(channel, self.config.rules, params)
        from node.channel_rules import production_logic

        store = self.store

        def header_hash(ch: str, height: int) -> bytes | None:
            # a block applied in the same batch but not written yet is committed too
            svc = self.channels.get(ch)
            unwritten = svc.unwritten_hash(height) if svc is not None else None
            if unwritten is not None:
                return unwritten
            header = store.header(ch, height)
            return None if header is None else header.hash

        return production_logic(
            channel,
            params,
            genesis=self.genesis,
            header_hash=header_hash,
            governance=lambda: self.channels[channel].governance,
            scheme=self.signatures,
        )

    # ------------------------------------------------------------------ lifecycle

    @staticmethod
    def check_identity(config: NodeConfig, genesis: Genesis) -> None:
        """Raise :class:`ConfigError` unless the key file holds this node's genesis key."""
        src = str(config.source or "config")
        kf = load_key_file(config.key_file)
        try:
            node = genesis.node(config.node_id)
        except LookupError:
            if config.joining:
                return  # its key arrives with the add_validator change, checked there
            raise ConfigError(
                src, "node_id", f"node {config.node_id!r} is not in the genesis"
            ) from None
        if kf.public_key != node.public_key:
            raise ConfigError(
                str(config.key_file),
                "public_key",
                f"is not the genesis key of node {config.node_id!r}",
            )

    @classmethod
    def open(cls, config: NodeConfig) -> NodeRuntime:
        """Load genesis and key, check them, open (creating) the store. Raises
        :class:`ConfigError`/:class:`~ledger.store.StoreError` with one-line messages."""
        genesis = load_genesis(config.genesis_file)
        cls.check_identity(config, genesis)
        try:
            config.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                str(config.data_dir), "", f"cannot create data directory ({exc.strerror})"
            ) from None
        store = open_node_store(config, genesis.hash, create=True)
        for channel in store.rebuilt_size_entries:
            log.warning(
                "ledger: channel %s had a malformed state-delta size entry; "
                "its size entries were rebuilt from the deltas",
                channel,
            )
        try:
            return cls(config, genesis, store)
        except BaseException:
            store.close()
            raise

    async def _watch_loop_lag(self) -> None:
        """Every 100 ms: how late the timer fired, and the counts kept outside the
        metrics (:meth:`refresh_metrics`)."""
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(0.1)
            self.metrics.loop_lag.observe(max(0.0, loop.time() - t0 - 0.1))
            self.refresh_metrics()

    def refresh_metrics(self) -> None:
        """Mirror counts kept elsewhere into the metrics (the signature memo's hits)."""
        self.metrics.signature_memo_hits.set_total(self.signatures.hits)

    def start(self) -> None:
        self._lag_task = asyncio.get_running_loop().create_task(self._watch_loop_lag())
        self.transport.start()
        # peers follow governance: validators added/removed by config_update (node/membership.py)
        self._membership_task = asyncio.get_running_loop().create_task(membership.run(self))
        for svc in self.channels.values():
            svc.start()
        if self.relays is not None:
            self._relay_task = asyncio.get_running_loop().create_task(self.relays.run())
        loop = asyncio.get_running_loop()
        self._worker_tasks = [loop.create_task(w.run()) for w in self.workers]
        if self.byzantine is not None:
            self.byzantine.start()
        log.info(
            "node started: %d channel(s), validating %s",
            len(self.channels),
            ", ".join(c for c, s in self.channels.items() if s.is_validator) or "none",
        )

    async def stop(self) -> None:
        task = getattr(self, "_lag_task", None)
        if task is not None:
            task.cancel()
        relay_task = getattr(self, "_relay_task", None)
        if relay_task is not None:
            relay_task.cancel()
        membership_task = getattr(self, "_membership_task", None)
        if membership_task is not None:
            membership_task.cancel()
        for worker_task in getattr(self, "_worker_tasks", ()):
            worker_task.cancel()
        if self.byzantine is not None:
            await self.byzantine.stop()
        await asyncio.gather(*(svc.stop() for svc in self.channels.values()))
        await self.transport.close()
        self.store.close()
        log.info("node stopped")

    # ------------------------------------------------------------------ peers

    def receive_frame(self, data: bytes) -> tuple[str, int, bool]:
        """Authenticate a frame and route its messages. Returns ``(sender, delivered,
        duplicate)``. Raises :class:`FrameError` (nothing delivered) if not authentic."""
        try:
            frame = self.frames.open(data)
        except FrameError as exc:
            self.metrics.rejected_frames.inc(1, exc.reason)
            raise
        if not self.seq.accept(frame.sender, frame.seq):
            self.metrics.rejected_frames.inc(1, "replayed")
            return frame.sender, 0, True
        self.metrics.frames_received.inc(1, frame.sender)
        self.transport.heard_from(frame.sender)
        delivered = 0
        for channel, payload in frame.msgs:
            svc = self.channels.get(channel)
            if svc is None or svc.replica is None:
                self.metrics.rejected_messages.inc(1, channel[:64], "unknown_channel")
                continue
            if svc.deliver(frame.sender, payload):
                delivered += 1
        return frame.sender, delivered, False

    # ------------------------------------------------------------------ status

    def ready_report(self) -> tuple[bool, dict[str, object]]:
        from node import consensus_port as cport

        ok = True
        report: dict[str, object] = {}
        for name, svc in self.channels.items():
            doc: dict[str, object] = {"height": svc.height, "validator": svc.is_validator}
            if svc.failed:
                ok = False
                doc["failed"] = svc.failed
            if svc.replica is not None:
                ready, why = cport.readiness(svc.replica)
                doc.update(view=svc.replica.view, ready=ready)
                if not ready:
                    ok = False
                    doc["reason"] = why
            report[name] = doc
        return ok, report
