"""The PBFT replica of one channel, as a sans-I/O state machine.

Drive it like etcd's raft node::

    replica.tick(now_ms)            # first call: before anything else
    replica.step(message)           # a message from a peer (verified here)
    replica.submit(transactions)    # client transactions → mempool (→ FORWARD)
    while replica.has_ready():
        rd = replica.ready()
        store(rd.persist)           # durably, BEFORE sending rd.messages
        apply(rd.committed)         # store + apply, in height order
        send(rd.messages)           # Outbound.to None = every other validator
        record(rd.evidence)
        replica.advance(rd)

Nothing here reads a clock, a socket or a random source; the same inputs give the
same outputs. The protocol, its rules and why they are safe are in docs/consensus.md.

API extensions beyond the contract (all compatible):

* ``Replica.view_active`` (False while waiting for a NEW-VIEW), ``committed_hash``,
  ``mempool_size``, ``evidence_count``, ``durable_state()``; ``Replica.metrics`` is a
  plain ``dict[str, int]`` of counters (``dropped.<reason>``, ``refused.<reason>``,
  ``evidence.<kind>``, ``sent.<kind>``, ``received.<kind>``, ``committed.*``, …).
* :class:`~consensus.mempool.SubmitResult` has ``status`` in
  ``accepted | duplicate | committed | rejected`` and a ``reason``; ``.accepted`` is
  True for accepted and duplicate (resubmitting is idempotent).
* :class:`~consensus.durable.DurableState` also has ``to_records``/``from_records``
  (one record per prepared certificate, so a store can write only what changed).
* ``tick()`` should come first: until the first tick the replica has no clock, holds
  proposals it cannot judge, and counts earlier arrivals as arriving at that tick.
* ``advance()`` re-examines work that was waiting for the application (state roots of
  blocks just applied), so it may itself produce a new Ready. ``ready()`` twice
  without ``advance()`` raises :class:`~consensus.errors.InternalError`.
* ``Outbound.to`` names one node for answers (BLOCKS to a FETCH, a NEW-VIEW re-sent to
  a replica that missed it); ``None`` is every other validator of the channel.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from consensus.app import Application
from consensus.config import ReplicaConfig
from consensus.durable import DurableState
from consensus.errors import (
    BAD_CERTIFICATE,
    BAD_NEW_VIEW,
    BAD_VIEW_CHANGE,
    DOUBLE_VOTE,
    EQUIVOCATION,
    FORGED_TRANSACTION,
    INVALID_PROPOSAL,
    NOT_PRIMARY,
    REFUSED,
    InternalError,
    Misbehaviour,
    NotReady,
    ProtocolViolation,
)
from consensus.log import Slot
from consensus.mempool import (
    ACCEPTED,
    COMMITTED,
    DUPLICATE,
    REJECTED,
    Mempool,
    SubmitResult,
    tx_size,
)
from consensus.messages import (
    KIND_COMMIT,
    KIND_FETCH,
    KIND_FORWARD,
    KIND_PRE_PREPARE,
    KIND_PREPARE,
    Blocks,
    Commit,
    Fetch,
    Forward,
    Message,
    NewView,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    Status,
    ViewChange,
    sign,
)
from consensus.verification import SignatureCache
from consensus.viewchange import (
    Context,
    Selection,
    build_new_view,
    check_new_view,
    check_view_change,
    check_view_change_stable,
    new_view_primary,
    signed_by,
    view_change_top,
)
from ledger.blocks import Block, BlockHeader, Transaction, block_record_leaves, build_block
from ledger.certificate import CommitCertificate, ValidatorSet, verify_certificate
from ledger.errors import LedgerError

__all__ = ["Outbound", "Ready", "Replica", "send_stage"]

#: Bound on the validator keys remembered to recognise followers.
MAX_KNOWN_NODES = 1024

#: :meth:`Replica.note_apply` ignores smaller applies, and caps the rate it learns.
APPLY_RATE_MIN_BYTES = 64 << 10
APPLY_RATE_MAX_MS_PER_MIB = 60_000


@dataclass(frozen=True)
class Outbound:
    """A message to send: to one node, or (``to=None``) to every other validator."""

    to: str | None
    message: Message


#: When a Ready's message may leave (see :class:`Ready`): before its ``persist`` is
#: durable, once it is (before its committed blocks are stored), or after the store.
SEND_BEFORE_PERSIST: Final = 0
SEND_BEFORE_STORE: Final = 1
SEND_AFTER_STORE: Final = 2
_BEFORE_STORE_KINDS: Final = frozenset({KIND_PRE_PREPARE, KIND_PREPARE, KIND_COMMIT, KIND_FORWARD})


def send_stage(msg: Message) -> int:
    """:data:`SEND_BEFORE_PERSIST` (FETCH), :data:`SEND_BEFORE_STORE` (PRE-PREPARE,
    PREPARE, COMMIT, FORWARD) or :data:`SEND_AFTER_STORE` (the rest) for ``msg``."""
    if msg.kind == KIND_FETCH:
        return SEND_BEFORE_PERSIST
    return SEND_BEFORE_STORE if msg.kind in _BEFORE_STORE_KINDS else SEND_AFTER_STORE


@dataclass(frozen=True)
class Ready:
    """Work for the caller, in this order: persist, store/apply, send, record.

    Two exceptions to the order: a FETCH depends on nothing durable (it only asks a
    peer for committed blocks), so the caller may send it before persisting — the next
    catch-up answer is then on its way while this one's blocks are written; and
    PRE-PREPARE, PREPARE, COMMIT and FORWARD speak of heights above the committed
    ones, so once ``persist`` is durable they may leave before ``committed`` is stored
    (``advance`` drops votes only below the stored height). STATUS, BLOCKS,
    VIEW-CHANGE and NEW-VIEW claim or serve committed blocks: after the store.
    """

    persist: DurableState | None
    messages: tuple[Outbound, ...]
    committed: tuple[tuple[Block, CommitCertificate], ...]
    evidence: tuple[Misbehaviour, ...]
    #: height → the opaque extra that a catch-up answer carried for that committed block
    #: (:attr:`consensus.messages.Blocks.extras`), unchecked: the application's to verify
    extras: Mapping[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class _Anchor:
    """A certified committed point above our own committed height (from a VIEW-CHANGE
    or NEW-VIEW): the new view builds on it while catch-up fetches the blocks below."""

    height: int
    block_hash: bytes
    time_ms: int
    header: BlockHeader
    cert: CommitCertificate


def _txs_bytes(block: Block) -> int:
    """Approximate wire size of ``block``'s transactions (bodies and signatures): what
    a catch-up answer is bounded by (with its extras), and what ``fetch_parallel_bytes``
    compares (likewise)."""
    return sum(len(tx.body_bytes) + 96 for tx in block.transactions)


@dataclass
class _FetchState:
    peer: str
    lo: int
    hi: int
    deadline_ms: int


#: Earlier views whose PRE-PREPAREs and COMMITs are kept per height for learning (the
#: latest ones); with one COMMIT per sender and view, what a height keeps is bounded.
OBSERVED_VIEWS_PER_HEIGHT = 2


@dataclass
class _Observed:
    """PRE-PREPAREs and COMMITs of views this replica has left, at one height: a
    replica that moved to a view the others never joined still learns, from these, the
    blocks they commit (a quorum of COMMITs for the PRE-PREPARE's block is a commit
    certificate), without waiting for STATUS and a FETCH."""

    #: view → the PRE-PREPARE of that view's primary
    preprepares: dict[int, PrePrepare] = field(default_factory=dict)
    #: view → sender → its COMMIT (one per sender and view: a second is equivocation)
    commits: dict[int, dict[str, Commit]] = field(default_factory=dict)

    def make_room(self, view: int) -> bool:
        """Keep at most :data:`OBSERVED_VIEWS_PER_HEIGHT` views here, the latest: False
        if ``view`` is older than all of a full set, else drop the oldest for it."""
        views = set(self.preprepares) | set(self.commits)
        if view in views or len(views) < OBSERVED_VIEWS_PER_HEIGHT:
            return True
        oldest = min(views)
        if view < oldest:
            return False
        self.preprepares.pop(oldest, None)
        self.commits.pop(oldest, None)
        return True


class Replica:
    """One replica; see the module docstring for the driving loop."""

    def __init__(
        self,
        config: ReplicaConfig,
        app: Application,
        *,
        committed_height: int = 0,
        committed_hash: bytes | None = None,
        committed_time_ms: int = 0,
        durable: DurableState | None = None,
    ) -> None:
        self.config = config
        self.app = app
        self.node_id = config.node_id
        self.metrics: dict[str, int] = {}
        self._sigs = SignatureCache(
            config.scheme, config.signature_cache_size, config.tx_cache_size
        )
        self._vsets: dict[int, ValidatorSet] = {}
        #: Last known key of every validator seen in any set (bounded): how we
        #: recognise a follower that left the set.
        self._known_keys: dict[str, bytes] = {}
        self._ctx = Context(
            channel=config.channel,
            genesis_prev_hash=config.genesis_prev_hash,
            window=config.window,
            validators_at=app.validators_at,
            state_root_at=app.state_root_at,
            sigs=self._sigs,
        )
        self._mempool = Mempool(
            limit=config.mempool_limit,
            per_sender=config.mempool_per_sender,
            max_bytes=config.mempool_max_bytes,
            recent_committed_limit=config.recent_committed_limit,
        )

        # -- the committed chain ------------------------------------------------------
        self._committed_height = committed_height
        self._committed_header: BlockHeader | None = None
        self._committed_cert: CommitCertificate | None = None
        if committed_height == 0:
            self._committed_hash = config.genesis_prev_hash
            self._committed_time = 0
        else:
            entry = app.committed_block(committed_height)
            if entry is None:
                raise InternalError(f"the store has no committed block {committed_height}")
            block, cert = entry
            self._committed_header, self._committed_cert = block.header, cert
            self._committed_hash = committed_hash or block.hash
            self._committed_time = committed_time_ms or block.header.time_ms
            if self._committed_hash != block.hash:
                raise InternalError("committed_hash is not the stored block's hash")
        self._stored_height = committed_height
        self._anchor: _Anchor | None = None
        self._remember_recent_commits(committed_height)
        first = max(1, committed_height - config.restart_memory_blocks)
        for h in range(first, committed_height + 2):
            self._vset(h)  # learn the keys of recent validators (followers among them)

        # -- views and votes (durable) -------------------------------------------------
        d = durable or DurableState()
        self._view = d.view
        self._active = d.view_active
        self._vc_sent = d.view_change_sent
        self._votes: dict[int, tuple[int, bytes]] = {
            h: (v, b) for h, v, b in d.votes if h > committed_height
        }
        self._prepared: dict[int, PreparedCertificate] = {
            pc.height: pc for pc in d.prepared if pc.height > committed_height
        }
        self._dirty = durable is None or len(self._votes) != len(d.votes)

        # -- volatile ------------------------------------------------------------------
        #: Consecutive view changes that did not lead to a commit (timeout doubling).
        self._failed = 0
        #: Blocks committed in this view (all, and since the last doubling earned back);
        #: the view a replica starts in counts as established.
        self._commits_in_view_total = self.config.window
        self._commits_in_view = 0
        #: Since when this active view has had nothing to judge (see _earn_back_quietly).
        self._quiet_since: int | None = None
        self._vc_since_commit = not self._active
        self._slots: dict[int, Slot] = {}
        self._new_view: NewView | None = None
        self._nv_top = 0
        self._view_changes: dict[str, ViewChange] = {}
        self._my_vc: ViewChange | None = None
        self._pending_nv: NewView | None = None
        self._buffer: dict[str, list[Message]] = {}
        self._buffer_dirty = False
        #: Messages whose validator set is not known yet (see ``activation_delay``):
        #: slot messages by sender, unverified; the VIEW-CHANGE and NEW-VIEW of the
        #: highest view from each sender, their signatures checked.
        self._unverified: dict[str, list[PrePrepare | Prepare | Commit]] = {}
        self._unjudged_vcs: dict[str, ViewChange] = {}
        self._unjudged_nvs: dict[str, NewView] = {}
        #: Committed blocks not applied yet (above ``_stored_height``) that may change
        #: the validator set, lowest first.
        self._unapplied_changes: list[int] = []
        self._now = 0
        self._ticked = False
        #: The latest time the node told us between ticks (:meth:`note_time`).
        self._noted_ms = 0
        #: How long this node takes to apply a MiB of blocks (:meth:`note_apply`).
        self._apply_ms_per_mib = 0
        self._progress_deadline: int | None = None
        #: The (view, height) whose progress timeout was already extended once because
        #: its block was prepared here (:meth:`_prepared_grace`).
        self._graced: tuple[int, int] | None = None
        self._censor_deadline: int | None = None
        #: Peers the transport reports unreachable, and since when (our clock).
        self._unreachable: dict[str, int] = {}
        self._vc_deadline: int | None = None if self._active else 0
        self._next_status = 0
        self._last_proposal_ms: int | None = None
        self._served_arrival: int | None = None
        #: The oldest overdue transaction and the committed height when it was first
        #: seen overdue; blocks committed since then, beyond this many, without it
        #: are censorship: a full mempool's worth of older transactions, and the window.
        self._overdue: tuple[bytes, int] | None = None
        self._censorship_patience = config.window + max(
            -(-config.mempool_max_bytes // config.max_batch_bytes),
            -(-config.mempool_limit // config.max_batch_txs),
        )
        #: Catch-up requests in flight (at most ``fetch_parallel``), and answers that
        #: arrived ahead of a gap below them, by first height (counted with them).
        self._fetches: list[_FetchState] = []
        #: Messages of views this replica left, by height (see :class:`_Observed`).
        self._observed: dict[int, _Observed] = {}
        self._held: dict[int, Blocks] = {}
        #: The key in ``_held`` of the answer waiting for blocks to be applied
        #: (``_await_apply``) if we did not ask for it.
        self._unasked_held: int | None = None
        #: Transaction and extra (state delta) bytes of the last answer to a request of
        #: ours (None: none yet).
        self._last_answer_bytes: int | None = None
        self._fetch_turn = 0
        self._behind_since: int | None = None
        self._peer_status: dict[str, Status] = {}
        self._max_claim = 0
        self._nv_sent_to: dict[str, tuple[int, int]] = {}
        self._status_sent_to: dict[str, int] = {}
        self._view_entered_at = 0
        self._forward_queue: list[Transaction] = []

        # -- outputs -------------------------------------------------------------------
        self._out_messages: list[Outbound] = []
        self._out_committed: list[tuple[Block, CommitCertificate]] = []
        self._out_extras: dict[int, bytes] = {}
        self._out_evidence: list[Misbehaviour] = []
        self._awaiting: Ready | None = None

    def _remember_recent_commits(self, height: int) -> None:
        """After a restart: reload the ids of recently committed transactions, so a
        resubmission is still recognised (bounded by ``restart_memory_blocks``)."""
        ids: list[list[bytes]] = []
        budget = self.config.recent_committed_limit
        h = height
        while h >= 1 and budget > 0 and height - h < self.config.restart_memory_blocks:
            entry = self.app.committed_block(h)
            if entry is None:
                break
            ids.append([tx.tx_id for tx in entry[0].transactions])
            budget -= len(ids[-1])
            h -= 1
        for block_ids in reversed(ids):
            self._mempool.committed(block_ids)

    # ================================================================================
    # Introspection
    # ================================================================================

    @property
    def view(self) -> int:
        return self._view

    @property
    def view_active(self) -> bool:
        return self._active

    @property
    def committed_height(self) -> int:
        return self._committed_height

    @property
    def committed_hash(self) -> bytes:
        return self._committed_hash

    def would_take(self, answer: Blocks) -> bool:
        """Whether stepping ``answer`` (a catch-up answer) would check its blocks: it
        continues the committed chain, or it answers a FETCH of ours (then it may be
        held until the gap below it is filled). False for an answer that would be
        dropped unchecked, or that brings nothing above the committed height."""
        if not answer.entries or answer.entries[-1][0].height <= self._committed_height:
            return False
        first = answer.entries[0][0].height
        return first <= self._committed_height + 1 or self._fetch_answered_by(answer) is not None

    @property
    def behind_by(self) -> int:
        """Heights known to be committed beyond this replica's own: the certified
        anchor's, or what f+1 peers (so at least one honest) claim in STATUS. 0 when
        level (or nothing is known yet)."""
        return max(0, self._catchup_target() - self._committed_height)

    @property
    def primary(self) -> str:
        """The primary of the current view for the next height to propose."""
        return self._vset(self._base() + 1).primary(self._view)

    @property
    def mempool_size(self) -> int:
        return len(self._mempool)

    @property
    def next_status_ms(self) -> int:
        """When (this replica's clock, as given to :meth:`tick`) its next STATUS is
        due."""
        return self._next_status

    def quiescent(self) -> bool:
        """True if no timer of this replica can fire before its next STATUS is due
        (:attr:`next_status_ms`) unless an input arrives first: the view is active,
        nothing is proposed, voted for or buffered above the committed height, the
        mempool and the FORWARD queue are empty, no catch-up request is out and
        nothing says we are behind, and no blame timer or timeout doubling is pending.
        A host may then tick at that time instead of every few milliseconds (an input
        — a message, a transaction — is stepped at once and may end it). Ticking more
        often is never wrong."""
        return (
            self._ticked
            and self._active
            and not self._failed
            and self._progress_deadline is None
            and self._censor_deadline is None
            and not self._mempool
            and not self._forward_queue
            and not self._fetches
            and not self._held
            and not self._buffer
            and not self._unverified
            and not self._unjudged_vcs
            and not self._unjudged_nvs
            and not self._slots
            and self._anchor is None
            and not self._pending_work()
            and not self._behind()
            and not self.has_ready()
        )

    @property
    def evidence_count(self) -> int:
        return sum(v for k, v in self.metrics.items() if k.startswith("evidence."))

    # ================================================================================
    # Inputs
    # ================================================================================

    def tick(self, now_ms: int) -> None:
        """Advance the clock: timers, batch closing, STATUS, FORWARD flushing.

        Until the first tick the replica has no clock: proposals are held (their time
        cannot be judged) and whatever happened before counts as happening at the
        first tick.
        """
        if not self._ticked:
            self._ticked = True
            self._rebase_clock(now_ms)
        if now_ms > self._now:
            self._now = now_ms
        self.flush_forwards()
        if self._now >= self._next_status:
            self._next_status = self._now + self.config.status_interval_ms
            self._broadcast_status()
        self._after_input()

    def note_time(self, now_ms: int) -> None:
        """The present time, known between ticks; no timer runs. Proposals are judged
        against it: after the node was busy for seconds (applying large blocks), a
        PRE-PREPARE stamped just now is not "ahead" of a tick that old, and its primary
        must not be blamed for it. Timers still move only on :meth:`tick`, so messages
        already waiting are stepped before any timer judges their sender."""
        if now_ms > self._noted_ms:
            self._noted_ms = now_ms

    def note_apply(self, ms: int, size: int) -> None:
        """The node took ``ms`` (wall time, its machine's load included) to apply and
        store ``size`` bytes of this channel's committed blocks. The other replicas are
        taken to be as slow: a large block in flight gets at least twice this rate of
        progress time (:meth:`_work_allowance`; ``timeout_ms_per_mib`` is the floor, 0
        keeps the allowance off). The rate rises at once and falls by an eighth per
        faster note; blocks under 64 KiB are too small to measure it."""
        if size < APPLY_RATE_MIN_BYTES or ms <= 0:
            return
        rate = min(ms * (1 << 20) // size, APPLY_RATE_MAX_MS_PER_MIB)
        decayed = self._apply_ms_per_mib - self._apply_ms_per_mib // 8
        self._apply_ms_per_mib = max(rate, decayed)

    def set_unreachable(self, peers: Collection[str]) -> None:
        """The transport's word on which peers cannot be reached right now (their
        connection was refused or broke, and has not come back).

        A liveness hint, never a safety input: with ``unreachable_primary_ms`` set,
        a backup that has work waiting and has not reached the primary for that long
        starts a view change without waiting for its progress timeout (a killed
        primary is replaced in well under a second instead of a timeout). One
        replica's view-change vote changes nothing by itself: the view changes only
        when a quorum votes, as after any timeout.
        """
        gone = [p for p in self._unreachable if p not in peers]
        for p in gone:
            del self._unreachable[p]
        for p in peers:
            self._unreachable.setdefault(p, self._now)

    def pause(self, ms: int) -> None:
        """The node could neither step nor tick this replica for ``ms`` (it was applying
        and storing committed blocks, or waiting for another channel): move the
        progress and censorship timers, the mempool's arrival times and the catch-up
        requests' deadlines that much later, so the node's own slowness is not taken
        for a faulty primary or a peer that does not answer. The clock is not
        moved; the next :meth:`tick` brings it to the present."""
        if ms > 0:
            self._shift_blame_timers(ms)
            for f in self._fetches:  # their answers may be waiting in the node's inbox
                f.deadline_ms += ms

    def _shift_blame_timers(self, ms: int) -> None:
        """Move what measures the primary's delay ``ms`` later: the progress and
        censorship deadlines and the mempool's arrival times."""
        self._mempool.shift_arrivals(ms)
        if self._progress_deadline is not None:
            self._progress_deadline += ms
        if self._censor_deadline is not None:
            self._censor_deadline += ms

    def _primary_unreachable(self) -> bool:
        grace = self.config.unreachable_primary_ms
        if not grace or not self._unreachable:
            return False
        primary = self._primary_of(self._view, self._committed_height + 1)
        since = self._unreachable.get(primary)
        return primary != self.node_id and since is not None and self._now - since >= grace

    def _rebase_clock(self, now_ms: int) -> None:
        shift = now_ms - self._now
        if shift <= 0:
            return
        self._now = now_ms
        self._shift_blame_timers(shift)
        if self._vc_deadline is not None and self._vc_deadline > 0:
            self._vc_deadline += shift
        self._next_status = now_ms
        self._buffer_dirty = True

    def submit(self, txs: Sequence[Transaction]) -> list[SubmitResult]:
        """Admit client transactions; each new one is forwarded to every validator (on
        the next :meth:`tick` or :meth:`flush_forwards`, or at once when
        ``forward_batch_txs`` are waiting)."""
        results = [self._admit(tx) for tx in txs]
        for tx, result in zip(txs, results, strict=True):
            if result.status == ACCEPTED:
                self._forward_queue.append(tx)
        if len(self._forward_queue) >= self.config.forward_batch_txs:
            self._flush_forwards()
        self._after_input()
        return results

    def step(self, msg: Message) -> None:
        """Handle one message from a peer. Never raises because of its content."""
        self._count(f"received.{msg.kind}")
        try:
            self._dispatch(msg)
        except LedgerError:
            # A message built in-process with values that cannot even be encoded
            # (decode_message refuses such bytes before they get here).
            self._drop("malformed")
        self._after_input()

    def _dispatch(self, msg: Message) -> None:
        if msg.channel != self.config.channel:
            self._drop("wrong_channel")
        elif msg.sender == self.node_id:
            self._drop("own_name")
        elif isinstance(msg, PrePrepare | Prepare | Commit):
            if not self._judgeable(msg.height):
                self._hold_unverified(msg)
            elif self._verify(msg, msg.height):
                self._on_slot_message(msg)
        elif isinstance(msg, ViewChange):
            self._on_view_change(msg)
        elif isinstance(msg, NewView):
            self._on_new_view(msg)
        else:  # STATUS, FETCH, FORWARD, BLOCKS
            # Also from a follower: a replica that was a validator once (it left the
            # set and still follows the chain by catch-up), verified with its last key.
            # Its FORWARDs too: it still takes client transactions, and each one is
            # checked here on its own (signature, rules, the sender's mempool share).
            # And its catch-up answers: they prove themselves (every block's
            # certificate is checked), and after a change of the set the blocks below
            # it may be held only by the validators that left.
            follower = msg.sender not in self._vset(self._base() + 1).by_id
            ok = self._verify_known(msg) if follower else self._verify(msg, self._base() + 1)
            if not ok:
                return
            if isinstance(msg, Status):
                self._on_status(msg, follower=follower)
            elif isinstance(msg, Fetch):
                self._on_fetch(msg)
            elif isinstance(msg, Forward):
                self._on_forward(msg)
            else:
                self._on_blocks(msg)

    # ================================================================================
    # Ready / advance
    # ================================================================================

    def has_ready(self) -> bool:
        return self._awaiting is None and bool(
            self._dirty or self._out_messages or self._out_committed or self._out_evidence
        )

    def ready(self) -> Ready:
        """Take the pending work. Call :meth:`advance` with it before the next ready()."""
        if self._awaiting is not None:
            raise InternalError("ready() called again before advance()")
        rd = Ready(
            persist=self._snapshot() if self._dirty else None,
            messages=tuple(self._out_messages),
            committed=tuple(self._out_committed),
            evidence=tuple(self._out_evidence),
            extras=self._out_extras,
        )
        self._dirty = False
        self._out_messages.clear()
        self._out_committed.clear()
        self._out_extras = {}
        self._out_evidence.clear()
        self._awaiting = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The caller persisted, stored/applied and sent ``rd``."""
        if rd is not self._awaiting:
            raise InternalError("advance() with a Ready that is not the outstanding one")
        self._awaiting = None
        if rd.committed:
            # The application applied blocks: the sets it answers may have changed.
            self._vsets.clear()
            self._stored_height = max(self._stored_height, rd.committed[-1][0].height)
            gone = [h for h in self._votes if h <= self._stored_height]
            gone_pc = [h for h in self._prepared if h <= self._stored_height]
            for h in gone:
                del self._votes[h]
            for h in gone_pc:
                del self._prepared[h]
            if gone or gone_pc:
                self._dirty = True
            self._unapplied_changes = [
                c for c in self._unapplied_changes if c > self._stored_height
            ]
            self._judge_held()
            self._buffer_dirty = True
        self._after_input()

    def durable_state(self) -> DurableState:
        """The current durable state (what the next Ready.persist would hold)."""
        return self._snapshot()

    # ================================================================================
    # Helpers: counting, sending, verifying
    # ================================================================================

    def _count(self, key: str, n: int = 1) -> None:
        self.metrics[key] = self.metrics.get(key, 0) + n

    def _drop(self, reason: str) -> None:
        self._count(f"dropped.{reason}")

    def _evidence(
        self,
        offender: str,
        kind: str,
        view: int,
        height: int,
        detail: str,
        proof: tuple[Message, ...] = (),
    ) -> None:
        self._count(f"evidence.{kind}")
        if len(self._out_evidence) >= self.config.max_pending_evidence:
            self._drop("evidence_overflow")
            return
        self._out_evidence.append(Misbehaviour(offender, kind, view, height, detail, proof))

    def _send(self, msg: Message, to: str | None = None) -> None:
        self._count(f"sent.{msg.kind}")
        self._out_messages.append(Outbound(to, msg))

    def _vset(self, height: int) -> ValidatorSet:
        h = max(1, height)
        vset = self._vsets.get(h)
        if vset is None:
            if len(self._vsets) >= 4 * self.config.window + 16:
                self._vsets.clear()
            vset = self._vsets[h] = self.app.validators_at(h)
            for v in vset.validators:
                if v.node_id in self._known_keys or len(self._known_keys) < MAX_KNOWN_NODES:
                    self._known_keys[v.node_id] = v.public_key
        return vset

    def _verify_known(self, msg: Message) -> bool:
        key = self._known_keys.get(msg.sender)
        if key is None:
            self._drop("not_validator")
            return False
        if not self._sigs.verify(key, msg.tag, msg.signing_bytes, msg.signature):
            self._drop("bad_signature")
            return False
        return True

    def _final_through(self) -> int:
        """The highest height whose validator set ``validators_at`` answers for good
        (see ``ReplicaConfig.activation_delay``; unbounded without it). A change
        carried by block ``c`` takes effect after ``c + delay``. With a committed block
        ``c`` not applied yet that may carry one (the lowest such), the sets up to
        ``c + delay`` are final; otherwise the next block may carry one, and the sets up
        to ``committed + 1 + delay`` are."""
        delay = self.config.activation_delay
        if delay is None:
            return 1 << 62
        changes = self._unapplied_changes
        return changes[0] + delay if changes else self._committed_height + 1 + delay

    def _judgeable(self, height: int) -> bool:
        return height <= self._final_through()

    def _may_commit(self, height: int) -> bool:
        """Committing ``height`` keeps the set of the next height known: the window's
        base + 1, whose set judges STATUS, VIEW-CHANGEs and NEW-VIEWs, stays final."""
        return self._judgeable(height + 1)

    def _is_validator(self, height: int) -> bool:
        return self.node_id in self._vset(height).by_id

    def _primary_of(self, view: int, height: int) -> str:
        return self._vset(height).primary(view)

    def _verify(self, msg: Message, height: int) -> bool:
        member = self._vset(height).by_id.get(msg.sender)
        if member is None:
            self._drop("not_validator")
            return False
        if not self._sigs.verify(member.public_key, msg.tag, msg.signing_bytes, msg.signature):
            self._drop("bad_signature")
            return False
        return True

    def _base(self) -> int:
        """The height the window starts above: committed, or a certified anchor."""
        if self._anchor is not None and self._anchor.height > self._committed_height:
            return self._anchor.height
        return self._committed_height

    def _timeout(self) -> int:
        return self.config.timeout_ms(self._failed)

    def _work_allowance(self) -> int:
        """Extra progress time for the next block to commit: ``timeout_ms_per_mib`` per
        MiB of its encoding, counting at most ``max_batch_bytes`` (0 while its proposal
        is not here)."""
        per_mib = self.config.timeout_ms_per_mib
        slot = self._slots.get(self._committed_height + 1)
        if not per_mib or slot is None or slot.preprepare is None:
            return 0
        per_mib = max(per_mib, 2 * self._apply_ms_per_mib)  # see note_apply
        # capped at a full batch: a primary cannot buy time with an oversized block
        size = min(len(slot.preprepare.block.encoded()), self.config.max_batch_bytes)
        return (size * per_mib) >> 20

    def _snapshot(self) -> DurableState:
        return DurableState(
            view=self._view,
            view_active=self._active,
            view_change_sent=self._vc_sent,
            votes=tuple((h, v, b) for h, (v, b) in sorted(self._votes.items())),
            prepared=tuple(pc for _, pc in sorted(self._prepared.items())),
        )

    # ================================================================================
    # The progress engine (run after every input)
    # ================================================================================

    def _after_input(self) -> None:
        self._drain_buffer()
        if not self._active:
            self._maybe_build_new_view()
            if self._pending_nv is not None:
                nv, self._pending_nv = self._pending_nv, None
                self._on_new_view(nv, verified=True)
        self._maybe_propose()
        self._check_timers()
        self._maybe_fetch()

    def _drain_buffer(self) -> None:
        rounds = 0
        while self._buffer_dirty and self._buffer and rounds < 2 * self.config.window + 2:
            rounds += 1
            self._buffer_dirty = False
            held = [(s, m) for s in sorted(self._buffer) for m in self._buffer[s]]
            self._buffer.clear()
            for _, msg in held:
                self._on_slot_message(msg, buffered=True)
        if not self._buffer:
            self._buffer_dirty = False

    def _hold_unverified(self, msg: PrePrepare | Prepare | Commit) -> None:
        """Keep a slot message whose height has no known validator set yet, without
        checking its signature (that set decides whose key it is): :meth:`_judge_held`
        verifies it once the set is known. Only from a node of some set seen (a
        validator added by a change not applied yet is not known: its message is
        dropped, as one from any stranger), and bounded like :meth:`_hold`."""
        h, base = msg.height, self._base()
        if h <= base:
            self._drop("stale_height")
            return
        if h > base + 3 * self.config.window:
            self._drop("outside_window")
            return
        if msg.view < self._view:
            self._drop("old_view")  # earlier views are learnt from below the final height
            return
        if msg.view > self._view + self.config.max_future_views:
            self._drop("future_view")
            return
        if msg.sender not in self._known_keys:
            self._drop("not_validator")
            return
        queue = self._unverified.setdefault(msg.sender, [])
        if len(queue) >= self.config.max_buffered_per_peer:
            self._drop("buffer_full")
            return
        queue.append(msg)
        self._count("held.unknown_set")

    def _judge_held(self) -> None:
        """After blocks were applied (more validator sets known): judge what was held
        for want of them: slot messages, VIEW-CHANGEs, the NEW-VIEW, and a catch-up
        answer whose next block waited (:meth:`_take_blocks`)."""
        if self._unverified:
            held, self._unverified = self._unverified, {}
            for msgs in held.values():
                for msg in msgs:
                    if not self._judgeable(msg.height):
                        self._hold_unverified(msg)
                    elif self._verify(msg, msg.height):
                        self._on_slot_message(msg)
        if self._unjudged_vcs:
            vcs, self._unjudged_vcs = self._unjudged_vcs, {}
            for vc in vcs.values():
                self._on_view_change(vc)
        if self._unjudged_nvs:
            nvs, self._unjudged_nvs = self._unjudged_nvs, {}
            for nv in sorted(nvs.values(), key=lambda m: m.view):
                self._on_new_view(nv)
        self._take_held()  # a waiting answer, then the slots above

    def _hold(self, msg: Message, buffered: bool) -> None:
        queue = self._buffer.setdefault(msg.sender, [])
        if len(queue) >= self.config.max_buffered_per_peer:
            self._drop("buffer_full")
            return
        queue.append(msg)
        if not buffered:
            self._count("buffered")

    # ================================================================================
    # Normal case: PRE-PREPARE, PREPARE, COMMIT
    # ================================================================================

    def _on_slot_message(self, msg: Message, buffered: bool = False) -> None:
        if not isinstance(msg, PrePrepare | Prepare | Commit):
            raise InternalError("only slot messages are buffered")
        h, v, base, w = msg.height, msg.view, self._base(), self.config.window
        if h <= base:
            self._drop("stale_height")
            return
        if v < self._view:
            if not (isinstance(msg, PrePrepare | Commit) and self._observe(msg)):
                self._drop("old_view")
            return
        if v > self._view + self.config.max_future_views:
            self._drop("future_view")
            return
        if h > base + 3 * w:
            self._drop("outside_window")
            return
        if v > self._view or not self._active or h > base + w:
            self._hold(msg, buffered)
            return
        if isinstance(msg, PrePrepare):
            try:
                self._on_preprepare(msg)
            except NotReady:
                self._hold(msg, buffered)
        elif isinstance(msg, Prepare):
            self._on_prepare(msg)
        else:
            self._on_commit(msg)

    def _observe(self, msg: PrePrepare | Commit) -> bool:
        """Keep a verified PRE-PREPARE (from its view's primary) or COMMIT of a view
        below ours, for a height in the window above the committed one, then commit
        what they certify (:meth:`_commit_observed`). False if not kept.

        Safe: committing a block under a valid commit certificate is what catch-up
        does; nothing is sent, so no promise of the VIEW-CHANGE this replica sent is
        broken. The block is checked as a fetched one is (:meth:`_check_fetched`)."""
        h, v = msg.height, msg.view
        if not self._committed_height < h <= self._committed_height + self.config.window:
            return False
        obs = self._observed.get(h)
        if obs is None:
            for old in [k for k in self._observed if k <= self._committed_height]:
                del self._observed[old]
            obs = self._observed[h] = _Observed()
        if isinstance(msg, PrePrepare):
            if v in obs.preprepares or msg.sender != self._primary_of(v, h):
                return False
            if not obs.make_room(v):
                return False
            obs.preprepares[v] = msg
        else:
            if msg.sender in obs.commits.get(v, ()) or not obs.make_room(v):
                return False
            obs.commits.setdefault(v, {})[msg.sender] = msg
        self._count("observed.old_view")
        self._commit_observed()
        return True

    def _commit_observed(self) -> None:
        """Commit, in height order, each next height whose observed PRE-PREPARE has a
        quorum of observed COMMITs; stop at the first that has none or does not check."""
        while True:
            h = self._committed_height + 1
            obs = self._observed.get(h)
            if obs is None or not self._may_commit(h):
                return
            vset = self._vset(h)
            found: tuple[PrePrepare, list[Commit]] | None = None
            for v, pp in obs.preprepares.items():
                votes = obs.commits.get(v, {}).values()
                signers = [
                    c for c in votes if c.block_hash == pp.block_hash and c.sender in vset.by_id
                ]
                if len(signers) >= vset.quorum:
                    found = pp, signers[: vset.quorum]
                    break
            if found is None:
                return
            pp, quorum = found
            cert = CommitCertificate(
                channel=self.config.channel,
                height=h,
                view=pp.view,
                block_hash=pp.block_hash,
                votes=tuple(c.vote() for c in quorum),
            )
            del self._observed[h]
            try:
                self._check_fetched(pp.block, cert)
            except ProtocolViolation:
                self._count("observed.bad_block")
                return  # catch-up fetches it from a peer instead
            self._count("committed.by_observation")
            self._commit(pp.block, cert, by_consensus=False)

    def _slot(self, height: int) -> Slot:
        slot = self._slots.get(height)
        if slot is None:
            slot = self._slots[height] = Slot(height)
        return slot

    def _parent(self, height: int) -> tuple[bytes, int] | None:
        """(hash, time) of the block this replica expects at ``height − 1``."""
        p = height - 1
        if p == self._committed_height:
            return self._committed_hash, self._committed_time
        anchor = self._anchor
        if anchor is not None and p == anchor.height:
            return anchor.block_hash, anchor.time_ms
        slot = self._slots.get(p)
        if slot is not None and slot.preprepare is not None:
            block = slot.preprepare.block
            return block.hash, block.header.time_ms
        return None

    def _on_preprepare(self, pp: PrePrepare) -> None:
        h, v = pp.height, pp.view
        slot = self._slot(h)
        if slot.preprepare is not None:
            if slot.preprepare.block_hash == pp.block_hash:
                self._drop("duplicate")
            elif slot.preprepare.sender == pp.sender:
                self._evidence(
                    pp.sender,
                    EQUIVOCATION,
                    v,
                    h,
                    "two PRE-PREPAREs for one (view, height)",
                    (slot.preprepare, pp),
                )
            else:
                # Signed by two different replicas (a NEW-VIEW's re-proposal and a
                # primary misled by another NEW-VIEW): no single culprit to prove.
                self._count("refused.slot_taken")
            return
        if h <= self._nv_top:
            # Heights covered by the NEW-VIEW take only its re-proposals.
            self._count("refused.slot_taken")
            return
        voted = self._votes.get(h)
        if voted is not None and voted[0] == v and voted[1] != pp.block_hash:
            # We endorsed another block at (v, h) before a restart: keep to it.
            self._count("refused.conflicting_vote")
            return
        primary = self._primary_of(v, h)
        if pp.sender != primary:
            self._evidence(pp.sender, NOT_PRIMARY, v, h, f"primary is {primary}", (pp,))
            return
        try:
            self._check_proposal(pp)
        except ProtocolViolation as exc:
            if exc.kind == REFUSED:
                self._count(f"refused.{exc.detail}")
            else:
                self._evidence(pp.sender, exc.kind, v, h, exc.detail, (pp,))
            self._suspect()
            return
        self._accept_preprepare(slot, pp)

    def _check_proposal(self, pp: PrePrepare) -> None:
        """The backup's checks; raises ProtocolViolation (refuse) or NotReady (wait)."""
        block, h, v = pp.block, pp.height, pp.view
        header = block.header
        if header.channel != self.config.channel or header.height != h:
            raise ProtocolViolation(INVALID_PROPOSAL, "wrong channel or height in header")
        if header.view != v or header.proposer != pp.sender:
            raise ProtocolViolation(INVALID_PROPOSAL, "header view/proposer differ from message")
        if not self._ticked:
            raise NotReady("no clock yet")
        parent = self._parent(h)
        if parent is None:
            raise NotReady(f"parent of {h} unknown")
        parent_hash, parent_time = parent
        if header.prev_hash != parent_hash:
            raise self._blame(pp, h - 1, f"wrong previous hash at height {h}", "parent_mismatch")
        if header.time_ms < parent_time:
            raise self._blame(pp, h - 1, "block time before its parent's", "parent_time")
        drift = self.config.max_clock_drift_ms
        ours = max(self._now, self._noted_ms)
        if header.time_ms > ours + drift:
            raise ProtocolViolation(
                INVALID_PROPOSAL, f"block time {header.time_ms} ahead of ours {ours}"
            )
        if header.time_ms < self._now - drift:
            # Too old — but network delay, not the primary, may be to blame.
            raise ProtocolViolation(REFUSED, "stale_time")
        state_height = max(0, h - self.config.window)
        if header.state_height != state_height:
            raise ProtocolViolation(INVALID_PROPOSAL, f"state height {header.state_height}")
        root = self.app.state_root_at(state_height)
        if root is None:
            raise NotReady(f"state root {state_height} not applied yet")
        if header.state_root != root:
            raise ProtocolViolation(INVALID_PROPOSAL, f"wrong state root at {state_height}")
        if header.tx_count > self.config.max_batch_txs:
            raise ProtocolViolation(INVALID_PROPOSAL, f"{header.tx_count} transactions")
        try:
            block.check_body()
        except LedgerError as exc:
            raise ProtocolViolation(INVALID_PROPOSAL, str(exc)) from None
        seen: set[bytes] = set()
        for tx in block.transactions:
            tx_id = tx.tx_id
            if tx_id in seen:
                raise ProtocolViolation(INVALID_PROPOSAL, f"tx {tx_id.hex()[:16]} twice")
            seen.add(tx_id)
            at = self._mempool.reserved_at(tx_id)
            if at is not None and at != h:
                detail = f"tx {tx_id.hex()[:16]} already proposed at {at}"
                raise self._blame(pp, at, detail, "tx_in_flight")
            if self._mempool.is_committed(tx_id):
                # A primary that is behind may not know yet; the channel layer also
                # marks a repeated transaction id invalid, so this is best effort.
                raise ProtocolViolation(REFUSED, "committed_tx")
            known = self._mempool.get(tx_id)
            if known is not None and known.signature == tx.signature:
                continue  # admitted earlier: signature and rules already checked
            if not self._sigs.verify_tx(tx):
                raise ProtocolViolation(
                    FORGED_TRANSACTION, f"tx {tx_id.hex()[:16]}: invalid client signature"
                )
            reason = self.app.validate_tx(tx)
            if reason is not None:
                raise ProtocolViolation(FORGED_TRANSACTION, f"tx {tx_id.hex()[:16]}: {reason}")

    def _blame(self, pp: PrePrepare, height: int, detail: str, reason: str) -> ProtocolViolation:
        """A proposal conflicts with the block we hold at ``height``. That is its
        proposer's fault only if the same replica proposed ``height`` in this view
        (an honest primary builds on its own proposals). If another primary did (the
        primary changes with the validator set), that one may have equivocated and
        misled an honest successor; and if the block we hold was decided in another
        view (we committed it, e.g. by catch-up, while this proposal waited in our
        buffer), the proposal is stale, not forged: refuse without blame."""
        slot = self._slots.get(height)
        header = self._committed_header
        if slot is not None and slot.preprepare is not None:
            earlier, view = slot.preprepare.sender, slot.preprepare.view
        elif height == self._committed_height and header is not None:
            earlier, view = header.proposer, header.view
        else:
            earlier, view = self._primary_of(pp.view, height), pp.view
        if earlier == pp.sender and view == pp.view:
            return ProtocolViolation(INVALID_PROPOSAL, detail)
        return ProtocolViolation(REFUSED, reason)

    def _accept_preprepare(self, slot: Slot, pp: PrePrepare) -> None:
        slot.preprepare = pp
        self._mempool.reserve((tx.tx_id for tx in pp.block.transactions), pp.height)
        # What the primary is serving, for the censorship check: when it last proposed,
        # and the latest arrival (here) among what it proposed.
        self._last_proposal_ms = self._now
        newest = self._mempool.newest_arrival(tx.tx_id for tx in pp.block.transactions)
        if newest is not None and (self._served_arrival is None or newest > self._served_arrival):
            self._served_arrival = newest
        self._buffer_dirty = True
        self._try_endorse(pp.height)
        self._check_prepared(pp.height)  # the PREPAREs may have come first
        if pp.height == self._committed_height + 1:
            self._commit_ready_slots()  # the COMMITs may have come first

    def _try_endorse(self, h: int) -> None:
        """Send our PREPARE for the slot's proposal if the chaining rule allows it:
        the parent is committed/anchored, or we endorsed it and it is prepared."""
        slot = self._slots.get(h)
        if slot is None or slot.preprepare is None or slot.endorsed:
            return
        pp = slot.preprepare
        parent = self._parent(h)
        if parent is None or parent[0] != pp.block.header.prev_hash:
            return
        if h - 1 > self._base():
            up = self._slots.get(h - 1)
            if up is None or not (up.endorsed and up.prepared):
                return
        if not self._is_validator(h):
            return
        if not self._record_vote(h, pp.view, pp.block_hash):
            return
        slot.endorsed = True
        mine = sign(
            Prepare(self.config.channel, self.node_id, pp.view, h, pp.block_hash),
            self.config.signer,
        )
        slot.prepares[self.node_id] = mine
        self._send(mine)
        if slot.prepared:
            # The quorum of PREPAREs came before we could endorse (our parent was not
            # prepared yet): now we can COMMIT, and our child can be endorsed.
            self._try_commit_vote(h)
            self._try_endorse(h + 1)
        else:
            self._check_prepared(h)

    def _record_vote(self, h: int, view: int, block_hash: bytes) -> bool:
        """Record (durably, via the next Ready) that we endorse ``block_hash`` at
        ``(view, h)``; False if that would contradict an earlier vote."""
        prior = self._votes.get(h)
        if prior is not None:
            if prior == (view, block_hash):
                return True
            if prior[0] >= view:
                self._count("refused.conflicting_vote")
                return False
        self._votes[h] = (view, block_hash)
        self._dirty = True
        return True

    def _on_prepare(self, p: Prepare) -> None:
        slot = self._slot(p.height)
        prior = slot.prepares.get(p.sender)
        if prior is not None:
            if prior.block_hash == p.block_hash:
                self._drop("duplicate")
            elif (p.sender, "prepare") not in slot.reported:
                slot.reported.add((p.sender, "prepare"))
                self._evidence(p.sender, DOUBLE_VOTE, p.view, p.height, "two PREPAREs", (prior, p))
            return
        slot.prepares[p.sender] = p
        self._check_prepared(p.height)

    def _check_prepared(self, h: int) -> None:
        slot = self._slots.get(h)
        if slot is None or slot.preprepare is None or slot.prepared:
            return
        pp = slot.preprepare
        matching = slot.prepares_for(pp.block_hash)
        q = self._vset(h).quorum
        members = [p for p in matching if p.sender in self._vset(h).by_id]
        if len(members) < q:
            return
        slot.prepared = True
        pc = PreparedCertificate(pp, tuple(members[:q]))
        prior = self._prepared.get(h)
        if prior is None or prior.view <= pc.view:
            self._prepared[h] = pc
            self._dirty = True
        self._try_commit_vote(h)
        self._try_endorse(h + 1)

    def _try_commit_vote(self, h: int) -> None:
        slot = self._slots.get(h)
        if slot is None or slot.preprepare is None:
            return
        if not (slot.prepared and slot.endorsed) or slot.sent_commit:
            return
        pp = slot.preprepare
        if not self._record_vote(h, pp.view, pp.block_hash):
            return
        slot.sent_commit = True
        mine = sign(
            Commit(self.config.channel, self.node_id, pp.view, h, pp.block_hash),
            self.config.signer,
        )
        slot.commits[self.node_id] = mine
        self._send(mine)
        self._commit_ready_slots()

    def _on_commit(self, c: Commit) -> None:
        slot = self._slot(c.height)
        prior = slot.commits.get(c.sender)
        if prior is not None:
            if prior.block_hash == c.block_hash:
                self._drop("duplicate")
            elif (c.sender, "commit") not in slot.reported:
                slot.reported.add((c.sender, "commit"))
                self._evidence(c.sender, DOUBLE_VOTE, c.view, c.height, "two COMMITs", (prior, c))
            return
        slot.commits[c.sender] = c
        if c.height == self._committed_height + 1:
            self._commit_ready_slots()

    def _commit_ready_slots(self) -> None:
        """Commit, strictly in height order, every next slot holding a quorum of
        COMMITs for the block we have."""
        while True:
            h = self._committed_height + 1
            slot = self._slots.get(h)
            if slot is None or slot.preprepare is None or not self._may_commit(h):
                # (a proposal needs the state root W below it, so only a NEW-VIEW's
                # re-proposals can reach a height we may not commit yet)
                return
            pp = slot.preprepare
            if pp.block.header.prev_hash != self._committed_hash:
                return  # our proposal at h is not on the committed chain: catch up
            vset = self._vset(h)
            votes = [c for c in slot.commits_for(pp.block_hash) if c.sender in vset.by_id]
            if len(votes) < vset.quorum:
                return
            cert = CommitCertificate(
                channel=self.config.channel,
                height=h,
                view=pp.view,
                block_hash=pp.block_hash,
                votes=tuple(c.vote() for c in votes[: vset.quorum]),
            )
            self._commit(pp.block, cert, by_consensus=True)

    def _commit(self, block: Block, cert: CommitCertificate, *, by_consensus: bool) -> None:
        h = block.height
        if h != self._committed_height + 1 or block.header.prev_hash != self._committed_hash:
            raise InternalError(f"commit of height {h} out of order")
        self._committed_height = h
        self._committed_hash = block.hash
        self._committed_time = block.header.time_ms
        self._committed_header = block.header
        self._committed_cert = cert
        self._out_committed.append((block, cert))
        self._mempool.committed(tx.tx_id for tx in block.transactions)
        types = self.config.config_tx_types
        if types is None or (types and any(tx.type in types for tx in block.transactions)):
            self._unapplied_changes.append(h)
        self._slots.pop(h, None)
        self._count("committed.blocks")
        self._count("committed.txs", len(block.transactions))
        anchor = self._anchor
        if anchor is not None and anchor.height <= h:
            if anchor.height == h and anchor.block_hash != block.hash:
                self._count("safety.anchor_mismatch")
            self._anchor = None
        if by_consensus:
            self._count("committed.by_consensus")
            if self._active:
                # A view earns back one timeout doubling per W blocks it commits: a
                # view that commits a block or two and then times out again (blocks
                # slower to finish than the timeout) keeps its longer timeout instead
                # of falling back to the base and storming.
                self._vc_since_commit = False
                self._commits_in_view_total += 1
                self._commits_in_view += 1
                if self._commits_in_view >= self.config.window:
                    self._commits_in_view = 0
                    self._failed = max(0, self._failed - 1)
        else:
            self._count("committed.by_catchup")
        self._progress_deadline = None
        self._behind_since = None
        self._buffer_dirty = True
        # The next proposal may have been waiting for this parent (which we may never
        # have seen prepared if the COMMITs outran the PREPAREs, or came by catch-up).
        self._try_endorse(h + 1)

    # ================================================================================
    # Proposing (primary)
    # ================================================================================

    def _maybe_propose(self) -> None:
        if not self._mempool.free_count or not self._ticked:
            return  # nothing to propose, or no clock to stamp a block with
        if not self._active or self._committed_height < self._base():
            # Still catching up to the stable point: we would not know which
            # transactions the blocks below it already hold.
            return
        base, w = self._base(), self.config.window
        h = base + 1
        while h <= base + w:
            slot = self._slots.get(h)
            if slot is None or slot.preprepare is None:
                break
            h += 1
        while h <= base + w and self._propose_at(h):
            h += 1

    def _propose_at(self, h: int) -> bool:
        v = self._view
        if h <= self._nv_top or self._primary_of(v, h) != self.node_id:
            return False
        prior = self._votes.get(h)
        if prior is not None and prior[0] >= v:
            return False  # proposed before a restart: never propose another block
        parent = self._parent(h)
        if parent is None:
            return False
        cfg = self.config
        oldest = self._mempool.oldest_free_arrival()
        if oldest is None:
            return False
        full = (
            self._mempool.free_count >= cfg.max_batch_txs
            or self._mempool.free_bytes >= cfg.max_batch_bytes
        )
        idle = cfg.propose_when_idle and h - 1 == self._committed_height
        if not full and not idle and self._now - oldest < cfg.batch_interval_ms:
            return False  # the batch is still open
        if not full and h - 1 - self._committed_height >= (
            cfg.partial_batch_inflight or cfg.window
        ):
            return False  # let the batch grow while earlier blocks finish
        txs = self._mempool.batch(cfg.max_batch_txs, cfg.max_batch_bytes)
        state_height = max(0, h - cfg.window)
        root = self.app.state_root_at(state_height)
        if root is None:
            return False
        try:
            block_record_leaves(txs)
        except LedgerError as exc:  # admission checked every transaction's records
            raise InternalError(f"admitted transaction with bad records: {exc}") from None
        block = build_block(
            channel=cfg.channel,
            height=h,
            prev_hash=parent[0],
            transactions=txs,
            state_height=state_height,
            state_root=root,
            proposer=self.node_id,
            view=v,
            time_ms=max(self._now, parent[1]),
        )
        if not self._record_vote(h, v, block.hash):
            return False
        pp = sign(PrePrepare(cfg.channel, self.node_id, v, block), cfg.signer)
        self._count("proposed.blocks")
        self._send(pp)
        self._accept_preprepare(self._slot(h), pp)
        return True

    # ================================================================================
    # Transactions: admission and forwarding
    # ================================================================================

    def _admit(self, tx: Transaction) -> SubmitResult:
        tx_id = tx.tx_id
        status = self._mempool.check(tx)
        if status in (DUPLICATE, COMMITTED):
            self._count(f"mempool.{status}")
            return SubmitResult(tx_id, status)
        if status is not None:
            return self._reject(tx_id, status)
        if tx.channel != self.config.channel:
            return self._reject(tx_id, f"transaction is for channel {tx.channel!r}")
        try:
            block_record_leaves([tx])
        except LedgerError as exc:
            return self._reject(tx_id, str(exc))
        if not self._sigs.verify_tx(tx):
            return self._reject(tx_id, "invalid client signature")
        reason = self.app.validate_tx(tx)
        if reason is not None:
            return self._reject(tx_id, reason)
        self._mempool.add(tx, self._now)
        self._count("mempool.accepted")
        return SubmitResult(tx_id, ACCEPTED)

    def _reject(self, tx_id: bytes, reason: str) -> SubmitResult:
        self._count("mempool.rejected")
        return SubmitResult(tx_id, REJECTED, reason)

    def flush_forwards(self) -> None:
        """Send the transactions admitted by :meth:`submit` since the last flush to
        every other validator now, in FORWARDs of at most ``forward_batch_txs``
        (otherwise they leave on the next :meth:`tick`). A driver that hands over
        several clients' submissions in one turn calls it once after them: one FORWARD
        for all, without waiting up to a tick."""
        if self._forward_queue:
            self._flush_forwards()

    def _flush_forwards(self) -> None:
        queue, self._forward_queue = self._forward_queue, []
        step = self.config.forward_batch_txs
        for i in range(0, len(queue), step):
            fw = Forward(self.config.channel, self.node_id, tuple(queue[i : i + step]))
            self._send(sign(fw, self.config.signer))

    def _on_forward(self, fw: Forward) -> None:
        for tx in fw.transactions:
            self._admit(tx)

    # ================================================================================
    # Timers and view change
    # ================================================================================

    def _suspect(self) -> None:
        """Something the primary did is wrong: start the view-change timer."""
        if self._active and self._progress_deadline is None:
            self._progress_deadline = self._now + self._timeout()

    def _pending_work(self) -> bool:
        """A proposal is in flight (ours to see through), or we voted for one (perhaps
        before a restart) that is not committed yet."""
        if any(s.preprepare is not None or s.commits for s in self._slots.values()):
            return True
        h = self._committed_height
        return any(k > h for k in self._votes) or any(k > h for k in self._prepared)

    def _behind(self) -> bool:
        """Peers (f+1 of them) or a certificate show we are behind: catching up, not
        the primary, is what we are waiting for."""
        h = self._committed_height
        anchor = self._anchor
        if anchor is not None and anchor.height > h:
            return True
        return self._max_claim > h and self._catchup_target() > h

    def _check_timers(self) -> None:
        now = self._now
        if not self._active:
            if self._vc_deadline is not None and now >= self._vc_deadline:
                self._view_change_timeout()
            return
        if self._behind():
            # Do not blame the primary for what catch-up will bring; the timers start
            # again (from scratch) once we are level.
            self._progress_deadline = None
            self._censor_deadline = None
            return
        if (
            self._primary_unreachable()
            and (self._pending_work() or self._mempool.oldest_free_arrival() is not None)
            and self._is_validator(self._base() + 1)
        ):
            self._count("timeouts.primary_unreachable")
            self._start_view_change(self._view + 1)
            return
        if self._pending_work() and self._progress_deadline is None:
            self._progress_deadline = now + self._timeout() + self._work_allowance()
        censored = self._censorship_suspected()
        if censored and self._censor_deadline is None:
            self._censor_deadline = now + self._timeout()
        elif not censored:
            self._censor_deadline = None
        self._earn_back_quietly()
        if not self._is_validator(self._base() + 1):
            return
        if self._progress_deadline is not None and now >= self._progress_deadline:
            if self._prepared_grace():
                self._count("timeouts.prepared_grace")
                self._progress_deadline = now + self._timeout()
                return
            self._count("timeouts.progress")
            self._start_view_change(self._view + 1)
        elif self._censor_deadline is not None and now >= self._censor_deadline:
            self._count("timeouts.censorship")
            self._start_view_change(self._view + 1)

    def _prepared_grace(self) -> bool:
        """True (once per view and height) if the next block to commit is prepared
        here: the primary proposed it and a quorum endorsed it, so the view is working
        and what is late is a COMMIT — under overload, one vote behind the others.
        Blaming the primary then would leave this replica alone in the next view while
        the others commit (every one of them then needed for a quorum until the network
        changes view). One more timeout lets the vote arrive, or the peers' STATUS show
        the block committed so catch-up fetches it. A primary gains no delay it could
        not already cause: once a quorum prepared, the honest replicas' COMMITs follow
        without it."""
        h = self._committed_height + 1
        slot = self._slots.get(h)
        if slot is None or not slot.prepared or self._graced == (self._view, h):
            return False
        self._graced = (self._view, h)
        return True

    def _earn_back_quietly(self) -> None:
        """An active view with nothing to judge — no blame timer armed, nothing
        proposed or voted for in flight — for a whole (doubled) timeout earns back one
        doubling. The doubling gives a slow network time to finish what it has; a quiet
        one shows nothing slow. Commits alone earned it back (one per W blocks), so the
        doublings an overload left stayed through any quiet that followed, and the next
        failure waited for them: a primary killed after such an overload and half a
        minute of quiet was replaced 18 s later in the harness, 3 s with this (a 9.1 s
        primary kill in one bench run after its overloaded phases was likely this).
        Under load a timer is always armed, and nothing is earned back this way."""
        if not self._failed:
            return
        if (
            self._progress_deadline is not None
            or self._censor_deadline is not None
            or self._pending_work()
        ):
            self._quiet_since = None
        elif self._quiet_since is None:
            self._quiet_since = self._now
        elif self._now - self._quiet_since >= self._timeout():
            self._failed -= 1
            self._quiet_since = self._now
            self._count("view_changes.doubling_earned_back")

    def _censorship_suspected(self) -> bool:
        """The oldest free transaction has waited a censorship timeout ``T`` here, and
        the primary is not working through its queue in order: it has nothing in
        flight and proposed nothing for ``T``; or it proposed a transaction that arrived
        here ``T`` or more after ours (it skipped ours); or more blocks were committed
        since ours was overdue than a full mempool's worth of older transactions could
        fill (``_censorship_patience``, set in ``__init__``). A primary serving an older
        backlog is not blamed for its length (blocks in flight are the progress timer's
        to judge): under overload the backlog is the mempool's depth, and the former
        rule (a busy primary had 4 ``T``) changed views again and again without making
        anything faster. Overdue transactions are passed on again first (the primary may have
        missed them, or been too full to take them)."""
        timeout = self.config.censorship_timeout_ms
        first = self._mempool.oldest_free()
        if first is None or self._now - first[1] < timeout:
            self._overdue = None
            return False
        tx_id, oldest = first
        if self._overdue is None or self._overdue[0] != tx_id:
            self._overdue = (tx_id, self._committed_height)
        passed_over = self._committed_height - self._overdue[1]
        last, served = self._last_proposal_ms, self._served_arrival
        serving = self._pending_work() or (last is not None and self._now - last < timeout)
        if (
            serving
            and (served is None or served < oldest + timeout)
            and passed_over < self._censorship_patience
        ):
            return False
        self._reforward_overdue()
        return True

    def _reforward_overdue(self) -> None:
        """FORWARD to everyone the free transactions that have waited a censorship
        timeout and were not passed on within one (oldest first, at most a batch's
        count and bytes)."""
        cfg = self.config
        timeout = cfg.censorship_timeout_ms
        now = self._now
        txs: list[Transaction] = []
        size = 0
        for tx, last in self._mempool.overdue(now - timeout):
            if now - last < timeout:
                continue
            size += tx_size(tx)
            if txs and (size > cfg.max_batch_bytes or len(txs) >= cfg.forward_batch_txs):
                break
            txs.append(tx)
        if txs:
            for tx in txs:
                self._mempool.mark_forwarded(tx.tx_id, now)
            self._count("reforwarded.txs", len(txs))
            self._send(sign(Forward(cfg.channel, self.node_id, tuple(txs)), cfg.signer))

    def _view_change_timeout(self) -> None:
        vset = self._vset(self._base() + 1)
        votes = sum(
            1
            for s, vc in self._view_changes.items()
            if vc.new_view >= self._view and s in vset.by_id
        )
        in_view = sum(
            1
            for s, st in self._peer_status.items()
            if st.view == self._view and st.view_active and s in vset.by_id
        )
        if votes >= vset.quorum and in_view <= vset.f:
            # A quorum asked for this view (or beyond) and no NEW-VIEW came: next view.
            # (Unless f+1 peers say they are in it: then we only missed its NEW-VIEW,
            # which our VIEW-CHANGE below makes them send again.)
            self._count("view_changes.failed")
            self._start_view_change(self._view + 1)
        else:
            # Not enough replicas asked yet (lost messages?): say it again. And pass on
            # what we hold that has waited too long: the others may never have received
            # it (lost or refused FORWARDs — a full mempool drops them), so nothing makes
            # them time out with us, and only their seeing it gets it committed.
            self._count("view_changes.retransmitted")
            self._my_vc = None
            self._send_view_change()
            self._reforward_overdue()
            self._vc_deadline = self._now + self._timeout()

    def _start_view_change(self, new_view: int) -> None:
        if new_view <= self._view:
            return
        self._count("view_changes.started")
        if self._vc_since_commit or self._commits_in_view_total < self.config.window:
            # The previous view change did not lead to a commit, or its view timed out
            # before committing W blocks: count it as failed (the timeout doubles).
            self._failed += 1
        self._vc_since_commit = True
        self._commits_in_view = 0
        self._commits_in_view_total = 0
        self._quiet_since = None
        self._view = new_view
        self._active = False
        self._vc_sent = max(self._vc_sent, new_view)
        self._dirty = True
        self._slots.clear()
        self._new_view = None
        self._nv_top = 0
        self._pending_nv = None
        self._mempool.release_all()
        self._progress_deadline = None
        self._censor_deadline = None
        self._last_proposal_ms = self._served_arrival = None  # the next primary's to earn
        self._vc_deadline = self._now + self._timeout()
        self._my_vc = None
        self._send_view_change()
        self._buffer_dirty = True

    def _stable(self) -> tuple[int, BlockHeader | None, CommitCertificate | None]:
        anchor = self._anchor
        if anchor is not None and anchor.height > self._committed_height:
            return anchor.height, anchor.header, anchor.cert
        return self._committed_height, self._committed_header, self._committed_cert

    def _send_view_change(self) -> None:
        if not self._is_validator(self._base() + 1):
            return
        s, header, cert = self._stable()
        w = self.config.window
        prepared = tuple(pc for h, pc in sorted(self._prepared.items()) if s < h <= s + w)
        vc = sign(
            ViewChange(self.config.channel, self.node_id, self._view, s, header, cert, prepared),
            self.config.signer,
        )
        self._my_vc = vc
        self._view_changes[self.node_id] = vc
        self._send(vc)

    def _on_view_change(self, vc: ViewChange) -> None:
        if not self._judgeable(view_change_top(vc)):
            prior = self._unjudged_vcs.get(vc.sender)
            if prior is not None and prior.new_view > vc.new_view:
                self._drop("old_view")
            elif vc.new_view > self._view + self.config.max_future_views:
                self._drop("future_view")
            elif not self._judgeable(vc.stable_height + 1):
                # Not even its signature can be checked: we are far behind its sender
                # and catch up first (STATUS); the view change reaches us again then.
                self._drop("unknown_set")
            elif self._note_stable_point(vc, blame=True):
                self._unjudged_vcs[vc.sender] = vc
                self._count("held.unknown_set")
            return
        if not signed_by(vc, self._vset(vc.stable_height + 1), self._sigs):
            self._drop("bad_signature")
            return
        prior = self._view_changes.get(vc.sender)
        if prior is not None and prior.new_view > vc.new_view:
            self._drop("old_view")
            return
        if prior is not None and prior.fingerprint == vc.fingerprint:
            self._drop("duplicate")
            self._help_behind(vc.sender, vc.new_view)
            return
        try:
            check_view_change(vc, self._ctx)
        except ProtocolViolation as exc:
            self._evidence(vc.sender, BAD_VIEW_CHANGE, vc.new_view, vc.stable_height, exc.detail)
            return
        self._view_changes[vc.sender] = vc
        self._note_certified(vc.stable_height, vc.stable_header, vc.stable_cert)
        if self._help_behind(vc.sender, vc.new_view):
            return
        self._maybe_join()
        self._maybe_build_new_view()

    def _note_stable_point(self, vc: ViewChange, *, blame: bool) -> bool:
        """For a VIEW-CHANGE that cannot be judged whole yet: if the sets its signature
        and stable certificate need are known, check those and anchor the window at its
        stable point (so that catch-up starts). True if so; False if those sets are not
        known or the check fails (reported when ``blame`` and the signature is good)."""
        if not self._judgeable(vc.stable_height + 1):
            return False
        if not signed_by(vc, self._vset(vc.stable_height + 1), self._sigs):
            self._drop("bad_signature")  # anyone can forge a name: blame no one
            return False
        try:
            check_view_change_stable(vc, self._ctx)
        except ProtocolViolation as exc:
            if blame:
                self._evidence(
                    vc.sender, BAD_VIEW_CHANGE, vc.new_view, vc.stable_height, exc.detail
                )
            else:
                self._drop("bad_view_change")
            return False
        self._note_certified(vc.stable_height, vc.stable_header, vc.stable_cert)
        return True

    def _hold_new_view(self, nv: NewView, stable: int) -> None:
        """A NEW-VIEW whose VIEW-CHANGEs reach above the known sets: the stable points
        that can be checked anchor catch-up; the NEW-VIEW itself waits, one per
        sender, if its signature can be checked, else it is dropped (the primary sends
        it again when our STATUS shows us in an older view)."""
        for vc in nv.view_changes:
            self._note_stable_point(vc, blame=False)
        if nv.view > self._view + self.config.max_future_views:
            self._drop("future_view")
        elif not self._judgeable(stable + 1):
            self._drop("unknown_set")
        elif not signed_by(nv, self._vset(stable + 1), self._sigs):
            self._drop("bad_signature")
        else:
            prior = self._unjudged_nvs.get(nv.sender)
            if prior is None or prior.view <= nv.view:
                self._unjudged_nvs[nv.sender] = nv
                self._count("held.unknown_set")

    def _help_behind(self, peer: str, their_view: int) -> bool:
        """If ``peer`` is in an older view than ours, send it our NEW-VIEW."""
        if their_view > self._view or (their_view == self._view and not self._active):
            return False
        nv = self._new_view
        if nv is not None and self._active:
            last = self._nv_sent_to.get(peer)
            if last is None and their_view == self._view:
                # It may just not have received the broadcast NEW-VIEW yet: give it
                # two status intervals before sending it again.
                grace = 2 * self.config.status_interval_ms
                last = (nv.view, self._view_entered_at + grace - self._timeout())
            if last is None or last[0] != nv.view or self._now - last[1] >= self._timeout():
                self._nv_sent_to[peer] = (nv.view, self._now)
                self._count("new_view.resent")
                self._send(nv, peer)
        return True

    def _maybe_join(self) -> None:
        """f+1 VIEW-CHANGEs for views above ours: move to the smallest of them."""
        vset = self._vset(self._base() + 1)
        higher = sorted(
            vc.new_view
            for s, vc in self._view_changes.items()
            if vc.new_view > self._view and s in vset.by_id and s != self.node_id
        )
        if len(higher) >= vset.f + 1:
            self._count("view_changes.joined")
            self._start_view_change(higher[0])

    def _maybe_build_new_view(self) -> None:
        if self._active:
            return
        vcs = [vc for vc in self._view_changes.values() if vc.new_view == self._view]
        if not vcs or self.node_id not in (vc.sender for vc in vcs):
            return
        if new_view_primary(vcs, self._ctx, self._view) != self.node_id:
            return
        vset = self._vset(max(vc.stable_height for vc in vcs) + 1)
        if sum(1 for vc in vcs if vc.sender in vset.by_id) < vset.quorum:
            return
        try:
            nv, selection = build_new_view(
                vcs, self._ctx, self._view, self.node_id, self.config.signer
            )
        except NotReady:
            return  # catch up to the stable point first (fetch is driven by the anchor)
        except ProtocolViolation as exc:
            self._count("new_view.build_failed")
            self._count(f"new_view.build_failed.{exc.kind}")
            return
        self._count("new_view.sent")
        self._send(nv)
        self._enter_view(nv, selection, nv.proposals)

    def _on_new_view(self, nv: NewView, verified: bool = False) -> None:
        if nv.view < self._view or (nv.view == self._view and self._active):
            mine = self._new_view
            if (
                mine is not None
                and mine.view == nv.view
                and mine.sender == nv.sender
                and mine.fingerprint != nv.fingerprint
                and nv.signing_bytes != mine.signing_bytes
                and nv.view_changes
                and self._judgeable(max(vc.stable_height for vc in nv.view_changes) + 1)
                and signed_by(
                    nv, self._vset(max(vc.stable_height for vc in nv.view_changes) + 1), self._sigs
                )
            ):
                self._evidence(nv.sender, EQUIVOCATION, nv.view, 0, "two NEW-VIEWs", (mine, nv))
                return
            self._drop("old_view")
            return
        if not verified:
            if not nv.view_changes:
                self._drop("malformed")
                return
            s = max(vc.stable_height for vc in nv.view_changes)
            if not self._judgeable(max(view_change_top(vc) for vc in nv.view_changes)):
                self._hold_new_view(nv, s)
                return
            if not signed_by(nv, self._vset(s + 1), self._sigs):
                self._drop("bad_signature")
                return
        try:
            selection, proposals = check_new_view(nv, self._ctx)
        except NotReady:
            # Hold it until we have caught up to its stable point.
            if self._pending_nv is None or self._pending_nv.view <= nv.view:
                self._pending_nv = nv
            for vc in nv.view_changes:
                self._note_certified(vc.stable_height, vc.stable_header, vc.stable_cert)
            return
        except ProtocolViolation as exc:
            self._evidence(nv.sender, BAD_NEW_VIEW, nv.view, 0, exc.detail, (nv,))
            return
        self._enter_view(nv, selection, proposals)

    def _enter_view(
        self, nv: NewView, selection: Selection, proposals: Sequence[PrePrepare]
    ) -> None:
        self._count("view_changes.completed")
        self._view = nv.view
        self._active = True
        self._vc_sent = max(self._vc_sent, nv.view)
        self._dirty = True
        self._vc_deadline = None
        self._progress_deadline = None
        self._censor_deadline = None
        self._slots.clear()
        self._mempool.release_all()
        self._new_view = nv
        self._view_entered_at = self._now
        self._pending_nv = None
        self._nv_top = selection.stable_height + len(selection.blocks)
        for s in [s for s, vc in self._view_changes.items() if vc.new_view <= nv.view]:
            del self._view_changes[s]
        if selection.stable_cert is not None:
            header = next(
                vc.stable_header
                for vc in nv.view_changes
                if vc.stable_height == selection.stable_height and vc.stable_header
            )
            self._note_certified(selection.stable_height, header, selection.stable_cert)
        for pp in proposals:
            if pp.height > self._base():
                self._accept_preprepare(self._slot(pp.height), pp)
        self._buffer_dirty = True

    def _note_certified(
        self, height: int, header: BlockHeader | None, cert: CommitCertificate | None
    ) -> None:
        """A verified certificate shows ``height`` committed: anchor the window there
        (if above ours) and let catch-up fetch the blocks below it."""
        if header is None or cert is None or height <= self._base():
            return
        self._anchor = _Anchor(height, header.hash, header.time_ms, header, cert)
        self._count("anchored")
        self._try_endorse(height + 1)

    # ================================================================================
    # STATUS and catch-up
    # ================================================================================

    def _status(self) -> Status:
        st = Status(
            self.config.channel,
            self.node_id,
            self._view,
            self._active,
            self._committed_height,
            self._committed_hash,
        )
        return sign(st, self.config.signer)

    def _broadcast_status(self) -> None:
        # Followers (no longer validators) send it too: that is how the validators
        # learn they are behind and answer them.
        self._send(self._status())

    def _on_status(self, st: Status, *, follower: bool = False) -> None:
        self._peer_status[st.sender] = st
        self._max_claim = max(s.committed_height for s in self._peer_status.values())
        if follower:
            # It gets no broadcasts from us: tell it where we are, so it can fetch.
            if st.committed_height < self._committed_height:
                last = self._status_sent_to.get(st.sender)
                if last is None or self._now - last >= self.config.status_interval_ms:
                    self._status_sent_to[st.sender] = self._now
                    self._send(self._status(), st.sender)
            return
        if st.view < self._view or (st.view == self._view and not st.view_active):
            self._help_behind(st.sender, st.view)

    def _catchup_target(self) -> int:
        """A height we know is committed: the certified anchor, or the (f+1)-th
        highest committed height peers claim (so at least one honest claim)."""
        vset = self._vset(self._base() + 1)
        claims = sorted(
            (st.committed_height for s, st in self._peer_status.items() if s in vset.by_id),
            reverse=True,
        )
        target = claims[vset.f] if len(claims) > vset.f else 0
        if self._anchor is not None:
            target = max(target, self._anchor.height)
        return target

    def _maybe_fetch(self) -> None:
        now, cfg = self._now, self.config
        h = self._committed_height
        live = []
        for f in self._fetches:
            if now >= f.deadline_ms:
                self._count("catchup.timeouts")
            elif f.hi > h:
                live.append(f)
        self._fetches = live
        if self._held and min(self._held) <= h + 1:  # consensus committed up to them
            self._take_held()
            h = self._committed_height
        anchor = self._anchor
        if self._max_claim <= h and (anchor is None or anchor.height <= h):
            self._behind_since = None
            return
        target = self._catchup_target()
        if target <= h:
            self._behind_since = None
            return
        if not self._fetches and not self._held:
            urgent = target > h + cfg.window or (anchor is not None and anchor.height > h)
            if not urgent:
                if self._behind_since is None:
                    self._behind_since = now
                    return
                if now - self._behind_since < cfg.status_interval_ms:
                    return
        # More than one request only once answers are known to be small: an answer
        # that arrives ahead of a gap is held, and large ones are paced by their own
        # checking (two answers of 32 MiB would be a node's whole memory budget).
        last = self._last_answer_bytes
        small = last is not None and last <= cfg.fetch_parallel_bytes
        parallel = cfg.fetch_parallel if small else 1
        while len(self._fetches) + len(self._held) < parallel:
            lo, gap_end = self._next_unrequested(h)
            if lo > target:
                return
            busy = {f.peer for f in self._fetches}
            vset = self._vset(h + 1)  # heights further up may have another, not known yet
            peers = sorted(
                s
                for s, st in self._peer_status.items()
                if st.committed_height >= lo and s in vset.by_id
            )
            if not peers:
                return
            pool = [s for s in peers if s not in busy] or peers
            peer = pool[self._fetch_turn % len(pool)]
            self._fetch_turn += 1
            hi = min(
                lo + cfg.fetch_batch - 1,
                gap_end,
                max(target, self._peer_status[peer].committed_height),
            )
            self._fetches.append(_FetchState(peer, lo, hi, now + cfg.fetch_timeout_ms))
            self._count("catchup.fetches")
            self._send(sign(Fetch(cfg.channel, self.node_id, lo, hi), cfg.signer), peer)

    def _next_unrequested(self, h: int) -> tuple[int, int]:
        """The lowest height above ``h`` that no request in flight or held answer
        covers, and the last height before the next covered one (or a large number)."""
        spans = sorted(
            [(f.lo, f.hi) for f in self._fetches]
            + [(k, b.entries[-1][0].height) for k, b in self._held.items()]
        )
        lo = h + 1
        for a, b in spans:
            if a > lo:
                return lo, a - 1
            lo = max(lo, b + 1)
        return lo, 1 << 62

    def _on_fetch(self, f: Fetch) -> None:
        entries: list[tuple[Block, CommitCertificate]] = []
        extras: list[bytes] = []
        size = 0
        hi = min(f.to_height, f.from_height + self.config.fetch_batch - 1)
        for h in range(f.from_height, hi + 1):
            entry = self.app.committed_block(h)
            if entry is None:
                break
            extra = self.app.block_extra(h) or b""
            size += _txs_bytes(entry[0]) + len(extra) + 1024
            if entries and size > self.config.max_message_bytes // 2:
                break
            entries.append(entry)
            extras.append(extra)
        self._count("catchup.served_blocks", len(entries))
        answer = Blocks(
            self.config.channel,
            self.node_id,
            tuple(entries),
            extras=tuple(extras) if any(extras) else (),
        )
        self._send(sign(answer, self.config.signer), f.sender)

    def _fetch_answered_by(self, b: Blocks) -> _FetchState | None:
        """Our FETCH in flight that ``b`` answers (same peer and first height; an empty
        answer, any of that peer's), or None."""
        first = b.entries[0][0].height if b.entries else None
        return next(
            (f for f in self._fetches if f.peer == b.sender and (first is None or f.lo == first)),
            None,
        )

    def _on_blocks(self, b: Blocks) -> None:
        first = b.entries[0][0].height if b.entries else None
        asked = self._fetch_answered_by(b)
        if asked is not None:
            self._fetches.remove(asked)
            self._last_answer_bytes = sum(_txs_bytes(blk) for blk, _ in b.entries) + sum(
                len(x) for x in b.extras
            )
        if first is not None and first > self._committed_height + 1:
            if asked is not None:
                self._held[first] = b  # ahead of a gap that another answer fills
            else:
                self._drop("catchup_gap")
            return
        self._take_blocks(b, asked=asked is not None)
        self._take_held()

    def _take_held(self) -> None:
        """Take the held answers that now start at or below the next height (their
        blocks already committed are skipped), lowest first; then the slots above."""
        while self._held:
            first = min(self._held)
            if first > self._committed_height + 1:
                break
            if not self._may_commit(self._committed_height + 1):
                break  # the blocks below must be applied first (see _take_blocks)
            asked = first != self._unasked_held
            if not asked:
                self._unasked_held = None
            self._take_blocks(self._held.pop(first), asked=asked)
        self._commit_ready_slots()  # slots above may have been waiting for these

    def _take_blocks(self, b: Blocks, *, asked: bool) -> None:
        """Check and commit ``b``'s blocks above the committed height, in order, up to
        the first that does not link or check (its sender is reported), or the first
        whose validator set is not known until the blocks below it are applied: the
        answer is then held, and taken up again after they are (:meth:`_judge_held`)."""
        for i, (block, cert) in enumerate(b.entries):
            h = block.height
            if h <= self._committed_height:
                continue
            if h != self._committed_height + 1:
                self._drop("catchup_gap")
                break
            if not self._may_commit(h):
                self._await_apply(b, asked)
                break
            try:
                self._check_fetched(block, cert)
            except ProtocolViolation as exc:
                self._count("catchup.bad_certificate")
                self._evidence(b.sender, BAD_CERTIFICATE, cert.view, h, exc.detail, (b,))
                break
            self._count("catchup.blocks")
            self._commit(block, cert, by_consensus=False)
            if b.extras and b.extras[i]:
                self._out_extras[h] = b.extras[i]

    def _await_apply(self, b: Blocks, asked: bool) -> None:
        """Hold ``b``, whose next block waits for the blocks below to be applied. At
        most one answer waits so (the other answers held start above the next height):
        of ``b`` and one already waiting, an answer to our FETCH before one we did not
        ask for (whose unchecked tail could be junk), then the one reaching further."""
        nxt = self._committed_height + 1
        rank = (asked, b.entries[-1][0].height)
        for k in [k for k in self._held if k <= nxt]:
            if (k != self._unasked_held, self._held[k].entries[-1][0].height) >= rank:
                self._drop("catchup_overlap")
                return
            del self._held[k]
        first = b.entries[0][0].height
        self._held[first] = b
        self._unasked_held = None if asked else first
        self._count("catchup.await_apply")

    def _check_fetched(self, block: Block, cert: CommitCertificate) -> None:
        h = block.height
        header = block.header
        if header.channel != self.config.channel:
            raise ProtocolViolation(BAD_CERTIFICATE, "block for another channel")
        if header.prev_hash != self._committed_hash:
            raise ProtocolViolation(BAD_CERTIFICATE, f"block {h} does not link to {h - 1}")
        try:
            verify_certificate(
                cert,
                channel=self.config.channel,
                height=h,
                block_hash=block.hash,
                validators=self._vset(h),
                scheme=self._sigs,
            )
            block.check_body()
        except LedgerError as exc:
            raise ProtocolViolation(BAD_CERTIFICATE, f"block {h}: {exc}") from None
        for tx in block.transactions:
            # tx_root covers transaction ids, not signatures: check those here.
            if not self._sigs.verify_tx(tx):
                raise ProtocolViolation(BAD_CERTIFICATE, f"block {h}: bad client signature")
        anchor = self._anchor
        if anchor is not None and anchor.height == h and anchor.block_hash != block.hash:
            raise ProtocolViolation(BAD_CERTIFICATE, f"block {h} contradicts a certificate")
