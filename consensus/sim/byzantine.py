"""Byzantine behaviours: wrappers around a replica's outputs, and forged messages.

An :class:`Adversary` sits between a (correct) :class:`consensus.replica.Replica` and
the network. The runner passes every message the replica wants to send through
:meth:`Adversary.outgoing` (which may drop, rewrite, split or multiply it), shows it
every message the replica receives (:meth:`Adversary.incoming`), and asks it on every
tick for extra messages to inject (:meth:`Adversary.inject`). Everything an adversary
signs it signs with the faulty replica's own key — it cannot forge another validator's
signature, so "forged" messages carry invalid signatures by construction.

Behaviours (:data:`consensus.sim.faults.BYZANTINE_BEHAVIOURS`):

* ``equivocate`` — as primary, sends one block to some backups and a different block
  for the same (view, height) to the others (or both to one backup); as a new primary,
  sends NEW-VIEWs built from different quorums of VIEW-CHANGEs;
* ``double_vote`` — sends, next to each PREPARE/COMMIT, one for another hash;
* ``forge_signature`` — corrupts its own signatures now and then, and injects
  messages in other validators' names, plus validly signed lone VIEW-CHANGEs (one
  faulty replica must not force a view change);
* ``replay`` — resends old messages (its own and others') to random peers;
* ``silent_primary`` — never sends PRE-PREPARE or NEW-VIEW (a stalling primary);
* ``twins`` — two copies with the same key, each talking to its own half of the peers
  (the routing is :class:`TwinRouting`; each copy also equivocates on its own);
* ``forged_tx`` — as primary, adds a client transaction with a forged signature to
  each proposal (re-signing the PRE-PREPARE);
* ``restart_twin`` — crashes, then restarts from its durable state while a twin started
  from the same durable state runs next to it and equivocates.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from consensus.errors import NotReady, ProtocolViolation
from consensus.messages import (
    Blocks,
    Commit,
    Fetch,
    Forward,
    Message,
    NewView,
    Prepare,
    PrePrepare,
    Status,
    ViewChange,
    sign,
)
from consensus.sim.app import TX_TYPE
from consensus.sim.prng import Prng
from consensus.viewchange import Context, build_new_view
from ledger.blocks import Block, Transaction, build_block
from ledger.crypto import Signer
from ledger.errors import LedgerError

#: One message to send: ``to`` is a validator id, or None for "every other validator".
Send = tuple[str | None, Message]

M = TypeVar("M", PrePrepare, Prepare, Commit, ViewChange, NewView, Forward, Status, Fetch, Blocks)


@dataclass(frozen=True)
class AdversaryContext:
    node_id: str
    channel: str
    signer: Signer
    peers: tuple[str, ...]
    network_id: bytes
    clients: Mapping[str, bytes]
    #: What the core's NEW-VIEW computation needs (lets a faulty new primary build
    #: alternative NEW-VIEWs); None disables NEW-VIEW equivocation.
    view_context: Context | None = None


class Adversary:
    """The identity behaviour: passes everything through (subclasses override)."""

    name = "honest"

    def __init__(self, ctx: AdversaryContext, prng: Prng) -> None:
        self.ctx = ctx
        self.prng = prng
        self.injected = 0
        self.tampered = 0

    def outgoing(self, now_ms: int, to: str | None, msg: Message) -> list[Send]:
        return [(to, msg)]

    def incoming(self, now_ms: int, msg: Message) -> bool:
        """Observe ``msg`` addressed to this replica; False keeps it from the replica."""
        return True

    def inject(self, now_ms: int) -> list[Send]:
        return []

    # -- helpers -----------------------------------------------------------------------

    def _sign(self, msg: M) -> M:
        return sign(msg, self.ctx.signer)

    def _split_peers(self) -> tuple[list[str], list[str]]:
        peers = list(self.ctx.peers)
        self.prng.shuffle(peers)
        cut = 1 + self.prng.below(len(peers) - 1) if len(peers) > 1 else len(peers)
        return peers[:cut], peers[cut:]

    def _other_hash(self) -> bytes:
        return self.prng.draw_bytes(32)

    def _other_vote(self, vote: Prepare | Commit, sender: str | None = None) -> Message:
        """``vote`` for a random other hash (in ``sender``'s name), signed with our key."""
        name = sender or vote.sender
        if isinstance(vote, Prepare):
            return self._sign(dataclasses.replace(vote, sender=name, block_hash=self._other_hash()))
        return self._sign(dataclasses.replace(vote, sender=name, block_hash=self._other_hash()))


def _proposed(nv: NewView) -> list[bytes]:
    return [pp.block_hash for pp in nv.proposals]


def _variant_block(block: Block, prng: Prng, extra: Sequence[Transaction] = ()) -> Block:
    """A different block for the same height, parent, proposer and view."""
    txs = list(block.transactions)
    if extra:
        txs.extend(extra)
    elif txs and prng.chance(0.5):
        txs.pop(prng.below(len(txs)))
    h = block.header
    return build_block(
        channel=h.channel,
        height=h.height,
        prev_hash=h.prev_hash,
        transactions=txs,
        state_height=h.state_height,
        state_root=h.state_root,
        proposer=h.proposer,
        view=h.view,
        time_ms=h.time_ms + 1 + prng.below(3),  # always differs, even with the same txs
    )


class Equivocator(Adversary):
    """Two proposals for one (view, height): one to some backups, the other to the rest.

    As a new primary it also equivocates on NEW-VIEW: from a different quorum of the
    VIEW-CHANGEs it holds it builds a second, valid NEW-VIEW (whose selection may
    differ) for some backups — at once if it already holds more than a quorum, or
    later, when another VIEW-CHANGE arrives.
    """

    name = "equivocate"

    def __init__(self, ctx: AdversaryContext, prng: Prng) -> None:
        super().__init__(ctx, prng)
        self._vcs: dict[int, dict[str, ViewChange]] = {}
        self._nv_used: dict[int, frozenset[str]] = {}
        self._nv_forked: set[int] = set()

    def incoming(self, now_ms: int, msg: Message) -> bool:
        if isinstance(msg, ViewChange):
            self._vcs.setdefault(msg.new_view, {})[msg.sender] = msg
        return True

    def inject(self, now_ms: int) -> list[Send]:
        out: list[Send] = []
        for view in sorted(self._nv_used):
            if view in self._nv_forked:
                continue
            alt = self._alternative_new_view(view)
            if alt is not None:
                _, second = self._split_peers()
                out.extend((p, alt) for p in second)
                self.injected += len(second)
        return out

    def _alternative_new_view(self, view: int) -> NewView | None:
        """A NEW-VIEW for ``view`` from another quorum of VIEW-CHANGEs, if we hold one."""
        vctx = self.ctx.view_context
        used = self._nv_used.get(view)
        held = self._vcs.get(view, {})
        if vctx is None or used is None:
            return None
        spare = sorted(set(held) - used)
        if not spare:
            return None
        self._nv_forked.add(view)
        # Prefer a quorum whose selection differs from the one sent (dropping a replica
        # that reported a prepared value the others lack); else any other quorum.
        original = self._build(held, sorted(used), view)
        fallback: NewView | None = None
        for out in sorted(used):
            for extra in spare:
                alt = self._build(held, sorted((used - {out}) | {extra}), view)
                if alt is None:
                    continue
                if original is None or _proposed(alt) != _proposed(original):
                    return alt
                fallback = fallback or alt
        return fallback

    def _build(
        self, held: Mapping[str, ViewChange], senders: list[str], view: int
    ) -> NewView | None:
        vctx = self.ctx.view_context
        assert vctx is not None
        try:
            nv, _ = build_new_view(
                [held[s] for s in senders], vctx, view, self.ctx.node_id, self.ctx.signer
            )
        except (ProtocolViolation, NotReady, LedgerError):
            return None
        return nv

    def outgoing(self, now_ms: int, to: str | None, msg: Message) -> list[Send]:
        if isinstance(msg, ViewChange) and msg.sender == self.ctx.node_id:
            self._vcs.setdefault(msg.new_view, {})[msg.sender] = msg
        if isinstance(msg, NewView) and to is None:
            if msg.view not in self._nv_used:
                self._nv_used[msg.view] = frozenset(vc.sender for vc in msg.view_changes)
                alt = self._alternative_new_view(msg.view)
                if alt is not None:
                    self.tampered += 1
                    first, second = self._split_peers()
                    return [*((p, msg) for p in first), *((p, alt) for p in second)]
            return [(to, msg)]
        if not isinstance(msg, PrePrepare) or to is not None:
            return [(to, msg)]
        twin = self._sign(dataclasses.replace(msg, block=_variant_block(msg.block, self.prng)))
        self.tampered += 1
        if self.prng.chance(0.2):  # both to one backup (it can prove the equivocation)
            victim = self.prng.choice(self.ctx.peers)
            rest = [p for p in self.ctx.peers if p != victim]
            return [(victim, msg), (victim, twin), *((p, msg) for p in rest)]
        first, second = self._split_peers()
        return [*((p, msg) for p in first), *((p, twin) for p in second)]


class DoubleVoter(Adversary):
    """Next to each PREPARE/COMMIT, a second one for another hash to some peers."""

    name = "double_vote"

    def outgoing(self, now_ms: int, to: str | None, msg: Message) -> list[Send]:
        if not isinstance(msg, Prepare | Commit):
            return [(to, msg)]
        other = self._other_vote(msg)
        self.tampered += 1
        first, second = self._split_peers()
        if self.prng.chance(0.5):  # send the honest vote too, to everyone
            return [(to, msg), *((p, other) for p in second)]
        return [*((p, msg) for p in first), *((p, other) for p in second)]


class Forger(Adversary):
    """Bad signatures, messages in other validators' names, lone VIEW-CHANGEs."""

    name = "forge_signature"

    def __init__(self, ctx: AdversaryContext, prng: Prng) -> None:
        super().__init__(ctx, prng)
        self._last_seen: Message | None = None
        self._view = 0
        self._next_inject_ms = 0

    def outgoing(self, now_ms: int, to: str | None, msg: Message) -> list[Send]:
        if self.prng.chance(0.15):
            self.tampered += 1
            return [(to, _flip_signature(msg, self.prng))]
        return [(to, msg)]

    def incoming(self, now_ms: int, msg: Message) -> bool:
        self._last_seen = msg
        if isinstance(msg, PrePrepare | Prepare | Commit):
            self._view = max(self._view, msg.view)
        return True

    def inject(self, now_ms: int) -> list[Send]:
        if now_ms < self._next_inject_ms:
            return []
        self._next_inject_ms = now_ms + self.prng.between(50, 400)
        out: list[Send] = []
        victim = self.prng.choice(self.ctx.peers)
        seen = self._last_seen
        if seen is not None and isinstance(seen, Prepare | Commit):
            # a vote in another validator's name for another hash, signed with our key
            out.append((None, self._other_vote(seen, victim)))
        if seen is not None and self.prng.chance(0.5):
            out.append((self.prng.choice(self.ctx.peers), _flip_signature(seen, self.prng)))
        if self.prng.chance(0.3):
            # a validly signed VIEW-CHANGE of our own: one faulty replica must not force
            # a view change (f + 1 = 2 are needed to join)
            vc = ViewChange(self.ctx.channel, self.ctx.node_id, self._view + 1, 0, None, None, ())
            out.append((None, self._sign(vc)))
        if self.prng.chance(0.3):
            vc = ViewChange(self.ctx.channel, victim, self._view + 1, 0, None, None, ())
            out.append((None, self._sign(vc)))  # in the victim's name: bad signature
        self.injected += len(out)
        return out


def _flip_signature(msg: Message, prng: Prng) -> Message:
    sig = bytearray(msg.signature or bytes(64))
    i = prng.below(len(sig))
    sig[i] ^= 1 << prng.below(8)
    return dataclasses.replace(msg, signature=bytes(sig))


class Replayer(Adversary):
    """Records what it sends and receives and resends old messages later."""

    name = "replay"

    def __init__(self, ctx: AdversaryContext, prng: Prng, memory: int = 512) -> None:
        super().__init__(ctx, prng)
        self._log: deque[Message] = deque(maxlen=memory)
        self._next_inject_ms = 0

    def outgoing(self, now_ms: int, to: str | None, msg: Message) -> list[Send]:
        self._log.append(msg)
        return [(to, msg)]

    def incoming(self, now_ms: int, msg: Message) -> bool:
        self._log.append(msg)
        return True

    def inject(self, now_ms: int) -> list[Send]:
        if now_ms < self._next_inject_ms or not self._log:
            return []
        self._next_inject_ms = now_ms + self.prng.between(20, 300)
        out: list[Send] = []
        for _ in range(self.prng.between(1, 6)):
            old = self._log[self.prng.below(len(self._log))]
            out.append((self.prng.choice(self.ctx.peers), old))
        self.injected += len(out)
        return out


class SilentPrimary(Adversary):
    """Never proposes: drops its PRE-PREPAREs and NEW-VIEWs, votes like an honest backup."""

    name = "silent_primary"

    def outgoing(self, now_ms: int, to: str | None, msg: Message) -> list[Send]:
        if isinstance(msg, PrePrepare | NewView):
            self.tampered += 1
            return []
        return [(to, msg)]


class ForgedTxPrimary(Adversary):
    """As primary, slips a client transaction with a forged signature into each proposal."""

    name = "forged_tx"

    def __init__(self, ctx: AdversaryContext, prng: Prng) -> None:
        super().__init__(ctx, prng)
        self._nonce = 1 << 40

    def _forged_tx(self, now_ms: int) -> Transaction:
        sender = self.prng.choice(sorted(self.ctx.clients))
        self._nonce += 1
        return Transaction(
            self.ctx.network_id,
            self.ctx.channel,
            TX_TYPE,
            sender,
            self.ctx.clients[sender],
            self._nonce,
            now_ms,
            {"seq": self._nonce},
            self.prng.draw_bytes(64),  # not the client's signature
        )

    def outgoing(self, now_ms: int, to: str | None, msg: Message) -> list[Send]:
        if not isinstance(msg, PrePrepare):
            return [(to, msg)]
        block = _variant_block(msg.block, self.prng, extra=[self._forged_tx(now_ms)])
        forged = self._sign(dataclasses.replace(msg, block=block))
        self.tampered += 1
        return [(to, forged)]


class TwinRouting(Adversary):
    """One of two copies with the same key: talks only to ``allowed`` peers, and also
    equivocates (with probability ``equivocate``) on its proposals and votes."""

    name = "twins"

    def __init__(
        self, ctx: AdversaryContext, prng: Prng, allowed: frozenset[str], equivocate: float
    ) -> None:
        super().__init__(ctx, prng)
        self.allowed = allowed
        self._equivocator = Equivocator(ctx, prng)
        self._double = DoubleVoter(ctx, prng)
        self._p = equivocate

    def outgoing(self, now_ms: int, to: str | None, msg: Message) -> list[Send]:
        sends: list[Send] = [(to, msg)]
        if self.prng.chance(self._p):
            if isinstance(msg, PrePrepare):
                sends = self._equivocator.outgoing(now_ms, to, msg)
            elif isinstance(msg, Prepare | Commit):
                sends = self._double.outgoing(now_ms, to, msg)
        if len(sends) != 1:
            self.tampered += 1
        out: list[Send] = []
        for dest, m in sends:
            targets = sorted(self.allowed) if dest is None else [dest]
            kept = [d for d in targets if d in self.allowed]
            if dest is None or len(kept) < len(targets):
                self.tampered += 1  # some peers never hear it from this copy
            out.extend((d, m) for d in kept)
        return out


def make_adversary(behaviour: str, ctx: AdversaryContext, prng: Prng) -> Adversary:
    """The adversary for ``behaviour`` (twins are built by the runner with TwinRouting).

    ``restart_twin``'s original copy behaves honestly (its twin equivocates). Raises
    ValueError for an unknown behaviour.
    """
    table: dict[str, type[Adversary]] = {
        "equivocate": Equivocator,
        "double_vote": DoubleVoter,
        "forge_signature": Forger,
        "replay": Replayer,
        "silent_primary": SilentPrimary,
        "forged_tx": ForgedTxPrimary,
        "restart_twin": Adversary,
    }
    cls = table.get(behaviour)
    if cls is None:
        raise ValueError(f"no adversary for behaviour {behaviour!r}")
    return cls(ctx, prng)
