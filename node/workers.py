"""The institutions' channel workers: risk monitoring and credit sync, run on a timer.

A worker runs in the node of the organisation whose role its transactions need, and
only if the node's config names that organisation's key (``org_key_file``); the
transactions are signed with that key (sender = the org), so the channel's ordinary
permission check applies to them:

* :class:`RiskWorker` (org role ``risk_centre``) follows the committed supervision
  heights and runs :func:`channels.monitoring.run_rules` over every new height ``h``
  as its own window ``(h-1, h]``; findings not yet on the risk channel
  (:func:`channels.risk.already_alerted`) are posted as ``alert`` transactions, which
  every risk validator re-runs before accepting.
* :class:`CreditWorker` (org role ``credit_agency``) posts ``credit_sync`` up to the
  committed supervision height whenever new supervision facts exist, in steps of at
  most :data:`SYNC_FACTS` facts (and never more than the channel's
  ``credit_sync_max_facts``).

Both read only *committed* data through the store (as the relays do,
:mod:`node.relays`), hand their transactions to the local channel driver, and keep no
local file. One batch is in flight at a time; the next starts once it is committed
(or after :data:`RESUBMIT_AFTER_MS`, when the work is recomputed from the chain).

Resuming: the credit worker's position *is* on chain (``cred/sync``). The risk worker
starts again at the window of the highest ``source_height`` among the alerts on the
risk channel (re-scanning that window: alerts of one window are submitted together,
so a crash may have committed only some of them; the duplicates are skipped). Since
windows are single heights, which alerts exist does not depend on timing or restarts.

Quiescence: a worker submits only when there is new work (a finding, new facts), and
neither writes to supervision, so an idle network makes no blocks.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from channels.context import NetworkParams
from channels.credit import synced_height
from channels.monitoring import AlertPayload, run_rules
from channels.risk import already_alerted
from channels.roles import CREDIT_AGENCY, RISK_CENTRE
from channels.supervision_view import SupervisionView
from ledger.blocks import Transaction
from ledger.crypto import Signer
from ledger.encoding import decode
from ledger.errors import ConfigError, LedgerError
from ledger.genesis import Genesis
from ledger.keyfile import load_key_file
from ledger.store import BlockStore
from node.channel import ChannelService
from node.channel_rules import business_params
from node.consensus_port import readiness
from node.rules import StoreState

log = logging.getLogger("wulian.node.workers")

SUPERVISION: Final = "supervision"
RISK: Final = "risk"
CREDIT: Final = "credit"
#: How often the risk worker looks for work (alerts should follow the reports closely).
WORKER_INTERVAL_S: Final = 0.3
#: How often the credit worker looks for new supervision facts. Every sync is a block
#: on the credit channel, and a block costs the network ~45 ms of CPU whatever it holds
#: (votes, frames, synced writes on five nodes; BENCHMARKS.md, session 17): at 0.3 s a
#: steady stream of reports brought ~2.5 credit blocks a second; at 1 s about one, each
#: covering what arrived meanwhile. Credit records then trail the supervision chain by
#: about a second more.
CREDIT_SYNC_INTERVAL_S: Final = 1.0
#: A submitted batch not committed after this long is dropped and its work recomputed.
RESUBMIT_AFTER_MS: Final = 30_000
#: Supervision heights the risk worker scans per step (keeps one step short).
MAX_WINDOWS_PER_STEP: Final = 256
#: Facts one ``credit_sync`` of this node's worker covers at most. Every credit
#: validator applies a sync in one block, holding each fact's credit record read and
#: written, and writes the block in one LevelDB batch: a 50,000-fact sync (the rule's
#: limit, ``credit_sync_max_facts``) took ~120 MB of every node's memory at once while
#: it applied (session 10, 10⁶ records of backlog). The rule's limit is a consensus
#: parameter and stays; the worker asks for less — except for a supervision height that
#: alone holds more (a block of many batch reports; a sync covers whole heights), which
#: it syncs on its own. Live, each sync follows the commit of the last (the worker steps
#: every :data:`CREDIT_SYNC_INTERVAL_S`) and covers what arrived meanwhile.
SYNC_FACTS: Final = 10_000
ALERT_PREFIX: Final = b"risk/alert/"


@dataclass(frozen=True)
class OrgSigner:
    """Signs transactions as an organisation (sender = ``org``) with one of its keys."""

    network: bytes
    org: str
    signer: Signer

    def tx(self, channel: str, tx_type: str, payload: dict[str, Any], now_ms: int) -> Transaction:
        return Transaction(
            network=self.network,
            channel=channel,
            type=tx_type,
            sender=self.org,
            public_key=self.signer.public_key,
            nonce=secrets.randbits(62),
            time_ms=now_ms,
            payload=payload,
        ).signed(self.signer)


def validating(channels: Mapping[str, ChannelService], channel: str) -> ChannelService | None:
    """The channel's driver if this node validates it, it has not failed and its replica
    is not catching up or changing views (a lagging copy of the channel would make the
    worker repeat work already on the chain)."""
    svc = channels.get(channel)
    if svc is None or svc.replica is None or svc.failed:
        return None
    return svc if readiness(svc.replica)[0] else None


class ChannelWorker:
    """Base of a worker submitting to one ``channel``: the in-flight batch and the loop.

    Subclasses implement :meth:`work` (runs in a thread; returns the next batch, or
    ``None`` when there is nothing to do) and may override :meth:`done`.
    """

    channel: str = ""
    name: str = "worker"
    #: Seconds between steps (:meth:`run`).
    interval_s: float = WORKER_INTERVAL_S

    def __init__(
        self,
        *,
        store: BlockStore,
        channels: Mapping[str, ChannelService],
        org: OrgSigner,
        params: NetworkParams,
        clock_ms: Callable[[], int],
    ) -> None:
        self.store = store
        self.channels = channels
        self.org = org
        self.params = params
        self.clock_ms = clock_ms
        self._inflight: dict[bytes, int] = {}
        self._inflight_tag: int = 0
        self._inflight_complete = True  # every tx of the batch was accepted

    # -- the in-flight batch --------------------------------------------------------

    def _settle(self, svc: ChannelService, now: int) -> bool | None:
        """None while the batch is in flight; True once every tx of it committed (valid
        or not); False if one was refused or timed out (the work is recomputed)."""
        ok = True
        for tx_id, sent in list(self._inflight.items()):
            st = svc.tx_status(tx_id)
            if st is not None and st.status == "committed":
                if st.outcome is not None and not st.outcome.valid:
                    log.warning(
                        "%s: tx %s committed invalid: %s: %s",
                        self.name, tx_id.hex(), st.outcome.code, st.outcome.message,
                    )  # fmt: skip
                continue
            if st is not None and st.status == "rejected":
                log.warning("%s: tx %s refused: %s", self.name, tx_id.hex(), st.reason)
                ok = False
                continue
            if now - sent < RESUBMIT_AFTER_MS:
                return None
            log.warning("%s: tx %s not committed in time; recomputing", self.name, tx_id.hex())
            ok = False
        return ok

    def work(self, now: int) -> tuple[int, list[Transaction]] | None:
        """The next batch ``(tag, txs)`` (blocking reads; called in a thread)."""
        raise NotImplementedError

    def done(self, tag: int, ok: bool) -> None:
        """The batch tagged ``tag`` is settled (``ok``: all committed)."""

    async def step(self) -> int:
        """One round; returns how many transactions were submitted."""
        svc = validating(self.channels, self.channel)
        if svc is None:
            return 0
        now = self.clock_ms()
        if self._inflight:
            settled = self._settle(svc, now)
            if settled is None:
                return 0
            self._inflight = {}
            self.done(self._inflight_tag, settled and self._inflight_complete)
        batch = await asyncio.to_thread(self.work, now)
        if batch is None:
            return 0
        tag, txs = batch
        try:
            outcomes = await svc.submit(txs)
        except OverflowError:
            self.done(tag, False)
            return 0  # the driver is busy: the work is recomputed next round
        for out in outcomes:
            if not out.accepted:
                log.warning("%s: tx %s refused: %s", self.name, out.tx_id.hex(), out.reason)
        self._inflight = {out.tx_id: now for out in outcomes if out.accepted}
        self._inflight_tag = tag
        self._inflight_complete = len(self._inflight) == len(txs)
        if not self._inflight:
            self.done(tag, False)
        return len(self._inflight)

    async def run(self, interval_s: float | None = None) -> None:
        """Step every ``interval_s`` (default :attr:`interval_s`) until cancelled; a
        failing step is logged and retried."""
        pause = self.interval_s if interval_s is None else interval_s
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except (LedgerError, RuntimeError, ValueError, KeyError) as exc:
                log.warning("%s step failed: %s", self.name, exc)
            await asyncio.sleep(pause)


def resume_height(store: BlockStore) -> int:
    """Where the risk worker resumes: just below the highest ``source_height`` of the
    alerts on the risk channel (so that window is scanned again), 0 if none."""
    top = 0
    for _key, raw in StoreState(store, RISK).iter_prefix(ALERT_PREFIX):
        top = max(top, int(decode(raw)["source_height"]))
    return max(0, top - 1)


class RiskWorker(ChannelWorker):
    """The risk centre's monitoring worker (see the module docstring)."""

    channel = RISK
    name = "risk worker"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        #: Supervision heights whose windows are done (None: read from the chain first).
        self.scanned: int | None = None

    def scan(self, lo: int, hi: int) -> tuple[int, list[AlertPayload]]:
        """Scan the windows of heights ``lo+1..hi`` in order; stop at the first one with
        new findings. Returns ``(last height scanned, its new findings)``."""
        facts = StoreState(self.store, SUPERVISION)
        risk_state = StoreState(self.store, RISK)
        for h in range(lo + 1, hi + 1):
            found = run_rules(facts, h - 1, h, self.params)
            fresh = [a for a in found if not already_alerted(risk_state, a)]
            if fresh:
                return h, fresh
        return hi, []

    def work(self, now: int) -> tuple[int, list[Transaction]] | None:
        if self.scanned is None:
            self.scanned = resume_height(self.store)
            log.info("risk worker resumes after supervision height %d", self.scanned)
        tip = self.store.height(SUPERVISION)
        if tip <= self.scanned:
            return None
        h, fresh = self.scan(self.scanned, min(tip, self.scanned + MAX_WINDOWS_PER_STEP))
        if not fresh:
            self.scanned = h
            return None
        self.scanned = h - 1  # the window counts as done once its alerts are committed
        txs = [self.org.tx(RISK, "alert", a.to_payload(), now) for a in fresh]
        log.info("risk worker: %d alert(s) at supervision height %d", len(txs), h)
        return h, txs

    def done(self, tag: int, ok: bool) -> None:
        if ok and self.scanned is not None:
            self.scanned = max(self.scanned, tag)


def sync_target(
    store: BlockStore, last: int, tip: int, limit: int, hard_limit: int | None = None
) -> int | None:
    """The supervision height a ``credit_sync`` from ``last`` should name: ``tip`` if
    (last, tip] holds at most ``limit`` facts, else the highest height keeping within
    ``limit``. A first height holding more than ``limit`` facts alone (a sync covers
    whole heights) is named on its own if it holds at most ``hard_limit`` (default
    ``limit``; the rule's own bound). None if the range holds no facts, or its first
    height more than ``hard_limit``."""
    hard = limit if hard_limit is None else max(limit, hard_limit)
    view = SupervisionView(StoreState(store, SUPERVISION), tip)
    n = 0
    prev: int | None = None
    complete: int | None = None  # every fact up to this height counted, within ``limit``
    for h in view.fact_heights(last, tip):
        if prev is not None and h != prev:
            if n > limit:  # the first height alone: over ``limit``, within ``hard``
                return prev
            complete = prev
        n += 1
        if n > hard or (n > limit and complete is not None):
            return complete
        prev = h
    return tip if n else None


class CreditWorker(ChannelWorker):
    """The credit agency's sync worker (see the module docstring)."""

    channel = CREDIT
    name = "credit worker"
    interval_s = CREDIT_SYNC_INTERVAL_S

    def work(self, now: int) -> tuple[int, list[Transaction]] | None:
        last = synced_height(StoreState(self.store, CREDIT))
        tip = self.store.height(SUPERVISION)
        if tip <= last:
            return None
        rule_limit = self.params.credit_sync_max_facts
        target = sync_target(self.store, last, tip, min(SYNC_FACTS, rule_limit), rule_limit)
        if target is None:
            return None
        return target, [self.org.tx(CREDIT, "credit_sync", {"source_height": target}, now)]


#: Which worker an organisation role runs.
WORKERS_BY_ROLE: Final[Mapping[str, type[ChannelWorker]]] = {
    RISK_CENTRE: RiskWorker,
    CREDIT_AGENCY: CreditWorker,
}


def org_workers(
    *,
    genesis: Genesis,
    store: BlockStore,
    node_id: str,
    org_key_file: Path,
    channels: Mapping[str, ChannelService],
    clock_ms: Callable[[], int],
) -> list[ChannelWorker]:
    """The workers of this node's organisation (none for roles without one).

    Raises :class:`ConfigError` if the key file does not load (missing, not mode 0600…)
    or is not a genesis key of the node's organisation.
    """
    org = genesis.org(genesis.node(node_id).org_id)
    kf = load_key_file(org_key_file)
    if org.find_key(kf.public_key) is None:
        raise ConfigError(
            str(org_key_file), "public_key", f"is not a key of organisation {org.org_id!r}"
        )
    cls = WORKERS_BY_ROLE.get(org.role)
    if cls is None:
        return []
    signer = OrgSigner(genesis.hash, org.org_id, kf.signer)
    params = business_params(genesis.channel(cls.channel).params)
    return [cls(store=store, channels=channels, org=signer, params=params, clock_ms=clock_ms)]
