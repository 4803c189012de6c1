"""VIEW-CHANGE checks and the NEW-VIEW selection rule, as pure functions.

The new primary and every backup run the *same* :func:`select` over the same set of
VIEW-CHANGE messages, so a backup validates a NEW-VIEW by recomputing it
(:func:`check_new_view`) instead of trusting the primary.

Selection rule, for VIEW-CHANGEs ``V`` (a quorum, distinct senders, all for view v):

1. The stable point ``s`` is the highest stable height any ``V`` reports with a valid
   commit certificate (its header gives the hash and time).
2. For each height ``h`` in ``(s, s+W]``, the candidate is the prepared certificate of
   the highest view reported for ``h`` (ties, impossible with ≤ f faults, go to the
   smaller block hash).
3. Walk ``h = s+1, s+2, …, m`` (``m`` = the highest height with a candidate): keep
   the candidate while its block links to the previous kept block (``prev_hash``);
   from the first height where it does not (or there is none), every slot up to
   ``m`` gets a *null block* — no transactions, proposer the primary of ``v`` at that
   height, header view ``v``, time = its parent's time, the lagged state root — which
   is itself fully determined, so recomputation is exact.

Why this is safe is argued in docs/consensus.md ("Chained pipelining").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from consensus.errors import BAD_NEW_VIEW, BAD_VIEW_CHANGE, NotReady, ProtocolViolation
from consensus.messages import NewView, PreparedCertificate, PrePrepare, ViewChange, sign
from consensus.verification import SignatureCache
from ledger.blocks import Block, build_block
from ledger.certificate import CommitCertificate, ValidatorSet, verify_certificate
from ledger.crypto import Signer
from ledger.errors import LedgerError


@dataclass(frozen=True)
class Context:
    """What the checks need to know about the channel (all deterministic)."""

    channel: str
    genesis_prev_hash: bytes
    window: int
    validators_at: Callable[[int], ValidatorSet]
    state_root_at: Callable[[int], bytes | None]
    sigs: SignatureCache


@dataclass(frozen=True)
class Selection:
    """The outcome of :func:`select`: the stable point and the blocks for
    ``stable_height+1 …`` in order (``reproposed[i]`` False for a null block)."""

    view: int
    stable_height: int
    stable_hash: bytes
    stable_time_ms: int
    stable_cert: CommitCertificate | None
    blocks: tuple[Block, ...]
    reproposed: tuple[bool, ...]


def signed_by(
    message: PrePrepare | ViewChange | NewView, vset: ValidatorSet, sigs: SignatureCache
) -> bool:
    """True iff the sender is in ``vset`` and the signature verifies with its key."""
    member = vset.by_id.get(message.sender)
    return member is not None and sigs.verify(
        member.public_key, message.tag, message.signing_bytes, message.signature
    )


def check_prepared(pc: PreparedCertificate, ctx: Context, *, below_view: int) -> None:
    """Raise :class:`ProtocolViolation` unless ``pc`` proves its block prepared.

    Checks: channel and height; a view below ``below_view``; the PRE-PREPARE signed by
    a validator of that height; the body matching the header; PREPAREs for exactly
    this (view, height, hash) from a quorum of distinct validators, all signatures good.
    """
    pp = pc.preprepare
    h = pp.height
    where = f"prepared certificate at height {h}"
    if pp.channel != ctx.channel or pp.block.header.channel != ctx.channel:
        raise ProtocolViolation(BAD_VIEW_CHANGE, f"{where}: wrong channel")
    if pp.view >= below_view:
        raise ProtocolViolation(BAD_VIEW_CHANGE, f"{where}: view {pp.view} not below {below_view}")
    vset = ctx.validators_at(h)
    if not signed_by(pp, vset, ctx.sigs):
        raise ProtocolViolation(BAD_VIEW_CHANGE, f"{where}: bad PRE-PREPARE signature")
    try:
        pp.block.check_body()
    except LedgerError as exc:
        raise ProtocolViolation(BAD_VIEW_CHANGE, f"{where}: {exc}") from None
    seen: set[str] = set()
    for p in pc.prepares:
        if (p.channel, p.view, p.height, p.block_hash) != (
            ctx.channel,
            pp.view,
            h,
            pp.block_hash,
        ):
            raise ProtocolViolation(BAD_VIEW_CHANGE, f"{where}: PREPARE for another slot")
        if p.sender in seen:
            raise ProtocolViolation(BAD_VIEW_CHANGE, f"{where}: {p.sender} counted twice")
        member = vset.by_id.get(p.sender)
        if member is None or not ctx.sigs.verify(
            member.public_key, p.tag, p.signing_bytes, p.signature
        ):
            raise ProtocolViolation(BAD_VIEW_CHANGE, f"{where}: bad PREPARE from {p.sender}")
        seen.add(p.sender)
    if len(seen) < vset.quorum:
        raise ProtocolViolation(
            BAD_VIEW_CHANGE, f"{where}: {len(seen)} PREPAREs, a quorum is {vset.quorum}"
        )


def view_change_top(vc: ViewChange) -> int:
    """The highest height whose validator set judging ``vc`` needs: the height above
    its stable point (its signature) or its highest prepared certificate."""
    return max(vc.stable_height + 1, max((pc.height for pc in vc.prepared), default=0))


def check_view_change(vc: ViewChange, ctx: Context) -> None:
    """Raise :class:`ProtocolViolation` unless ``vc`` is signed and well-formed: its
    stable point certified, its prepared certificates valid, ascending and within the
    window above the stable point."""
    check_view_change_stable(vc, ctx)
    s = vc.stable_height
    last = s
    for pc in vc.prepared:
        if pc.height <= last or pc.height > s + ctx.window:
            raise ProtocolViolation(
                BAD_VIEW_CHANGE,
                f"prepared height {pc.height} out of order or outside ({s}, {s + ctx.window}]",
            )
        check_prepared(pc, ctx, below_view=vc.new_view)
        last = pc.height


def check_view_change_stable(vc: ViewChange, ctx: Context) -> None:
    """The part of :func:`check_view_change` that needs the validator sets up to
    ``vc.stable_height + 1`` only: channel, view, signature and the stable point's
    certificate (not the prepared certificates). Raises :class:`ProtocolViolation`."""
    if vc.channel != ctx.channel:
        raise ProtocolViolation(BAD_VIEW_CHANGE, "wrong channel")
    if vc.new_view < 1:
        raise ProtocolViolation(BAD_VIEW_CHANGE, "view change to view 0")
    if not signed_by(vc, ctx.validators_at(vc.stable_height + 1), ctx.sigs):
        raise ProtocolViolation(BAD_VIEW_CHANGE, f"bad signature or non-validator {vc.sender}")
    s = vc.stable_height
    if s == 0:
        if vc.stable_header is not None or vc.stable_cert is not None:
            raise ProtocolViolation(BAD_VIEW_CHANGE, "stable height 0 with a certificate")
    else:
        header, cert = vc.stable_header, vc.stable_cert
        if header is None or cert is None:
            raise ProtocolViolation(BAD_VIEW_CHANGE, f"stable height {s} without certificate")
        if header.height != s or header.channel != ctx.channel:
            raise ProtocolViolation(BAD_VIEW_CHANGE, "stable header for another slot")
        try:
            verify_certificate(
                cert,
                channel=ctx.channel,
                height=s,
                block_hash=header.hash,
                validators=ctx.validators_at(s),
                scheme=ctx.sigs,
            )
        except LedgerError as exc:
            raise ProtocolViolation(BAD_VIEW_CHANGE, f"stable certificate: {exc}") from None


def _null_block(ctx: Context, view: int, height: int, prev_hash: bytes, prev_time: int) -> Block:
    state_height = max(0, height - ctx.window)
    root = ctx.state_root_at(state_height)
    if root is None:
        raise NotReady(f"state root at height {state_height} not applied yet")
    return build_block(
        channel=ctx.channel,
        height=height,
        prev_hash=prev_hash,
        transactions=(),
        state_height=state_height,
        state_root=root,
        proposer=ctx.validators_at(height).primary(view),
        view=view,
        time_ms=prev_time,
    )


def select(view_changes: Sequence[ViewChange], ctx: Context, view: int) -> Selection:
    """The NEW-VIEW content for ``view`` from already-checked ``view_changes``.

    Raises :class:`NotReady` if a null block needs a state root not applied locally.
    """
    if not view_changes:
        raise ProtocolViolation(BAD_NEW_VIEW, "no view changes")
    # The first (smallest sender) among the highest stable points: deterministic.
    by_sender = sorted(view_changes, key=lambda vc: vc.sender)
    best_vc = max(by_sender, key=lambda vc: vc.stable_height)
    s = best_vc.stable_height
    if s == 0 or best_vc.stable_header is None:
        stable_hash, stable_time = ctx.genesis_prev_hash, 0
    else:
        stable_hash, stable_time = best_vc.stable_header.hash, best_vc.stable_header.time_ms
    best: dict[int, PreparedCertificate] = {}
    for vc in view_changes:
        for pc in vc.prepared:
            h = pc.height
            if h <= s or h > s + ctx.window:
                continue
            cur = best.get(h)
            if (
                cur is None
                or pc.view > cur.view
                or (pc.view == cur.view and pc.block_hash < cur.block_hash)
            ):
                best[h] = pc
    top = max(best, default=s)
    blocks: list[Block] = []
    reproposed: list[bool] = []
    prev_hash, prev_time, linked = stable_hash, stable_time, True
    for h in range(s + 1, top + 1):
        chosen = best.get(h)
        if linked and chosen is not None and chosen.block.header.prev_hash == prev_hash:
            block = chosen.block
            reproposed.append(True)
        else:
            linked = False
            block = _null_block(ctx, view, h, prev_hash, prev_time)
            reproposed.append(False)
        blocks.append(block)
        prev_hash, prev_time = block.hash, block.header.time_ms
    return Selection(
        view=view,
        stable_height=s,
        stable_hash=stable_hash,
        stable_time_ms=stable_time,
        stable_cert=best_vc.stable_cert,
        blocks=tuple(blocks),
        reproposed=tuple(reproposed),
    )


def new_view_primary(view_changes: Sequence[ViewChange], ctx: Context, view: int) -> str:
    """Who must send the NEW-VIEW built from ``view_changes``: the primary of ``view``
    in the validator set of the height after the highest reported stable point."""
    s = max(vc.stable_height for vc in view_changes)
    return ctx.validators_at(s + 1).primary(view)


def check_quorum(view_changes: Sequence[ViewChange], ctx: Context, view: int) -> ValidatorSet:
    """Raise :class:`ProtocolViolation` unless ``view_changes`` are each valid, for
    ``view``, from distinct members of the deciding set, and at least its quorum."""
    seen: set[str] = set()
    for vc in view_changes:
        if vc.new_view != view:
            raise ProtocolViolation(BAD_NEW_VIEW, f"VIEW-CHANGE for view {vc.new_view}")
        if vc.sender in seen:
            raise ProtocolViolation(BAD_NEW_VIEW, f"two VIEW-CHANGEs from {vc.sender}")
        seen.add(vc.sender)
        try:
            check_view_change(vc, ctx)
        except ProtocolViolation as exc:
            raise ProtocolViolation(BAD_NEW_VIEW, f"from {vc.sender}: {exc.detail}") from None
    if not view_changes:
        raise ProtocolViolation(BAD_NEW_VIEW, "no view changes")
    vset = ctx.validators_at(max(vc.stable_height for vc in view_changes) + 1)
    members = [s for s in seen if s in vset.by_id]
    if len(members) != len(seen):
        raise ProtocolViolation(BAD_NEW_VIEW, "VIEW-CHANGE from a non-validator")
    if len(members) < vset.quorum:
        raise ProtocolViolation(
            BAD_NEW_VIEW, f"{len(members)} VIEW-CHANGEs, a quorum is {vset.quorum}"
        )
    return vset


def build_new_view(
    view_changes: Sequence[ViewChange], ctx: Context, view: int, node_id: str, signer: Signer
) -> tuple[NewView, Selection]:
    """The new primary's NEW-VIEW (VIEW-CHANGEs sorted by sender), signed.

    Raises :class:`NotReady` if a state root is missing; :class:`ProtocolViolation` if
    the VIEW-CHANGEs are not a valid quorum (the caller checked them: a bug then).
    """
    vcs = tuple(sorted(view_changes, key=lambda vc: vc.sender))
    check_quorum(vcs, ctx, view)
    selection = select(vcs, ctx, view)
    proposals = tuple(
        sign(PrePrepare(ctx.channel, node_id, view, block), signer) for block in selection.blocks
    )
    nv = sign(NewView(ctx.channel, node_id, view, vcs, proposals), signer)
    return nv, selection


def check_new_view(nv: NewView, ctx: Context) -> tuple[Selection, tuple[PrePrepare, ...]]:
    """Validate ``nv`` by recomputation; return the selection and the re-proposals
    (rebuilt around the recomputed blocks, carrying the primary's signatures).

    Raises :class:`ProtocolViolation` (``bad_new_view``) if it is not what its
    VIEW-CHANGEs determine, or :class:`NotReady` if a needed state root is missing.
    """
    if nv.channel != ctx.channel:
        raise ProtocolViolation(BAD_NEW_VIEW, "wrong channel")
    vset = check_quorum(nv.view_changes, ctx, nv.view)
    if nv.sender != vset.primary(nv.view):
        raise ProtocolViolation(BAD_NEW_VIEW, f"{nv.sender} is not the primary of {nv.view}")
    if not signed_by(nv, vset, ctx.sigs):
        raise ProtocolViolation(BAD_NEW_VIEW, "bad signature")
    selection = select(nv.view_changes, ctx, nv.view)
    if len(nv.proposals) != len(selection.blocks):
        raise ProtocolViolation(
            BAD_NEW_VIEW,
            f"{len(nv.proposals)} re-proposals, recomputation gives {len(selection.blocks)}",
        )
    out = []
    for pp, block in zip(nv.proposals, selection.blocks, strict=True):
        rebuilt = PrePrepare(ctx.channel, nv.sender, nv.view, block, pp.signature)
        if pp.block.hash != block.hash or not signed_by(rebuilt, vset, ctx.sigs):
            raise ProtocolViolation(
                BAD_NEW_VIEW, f"re-proposal at height {block.height} differs from recomputation"
            )
        out.append(rebuilt)
    return selection, tuple(out)
