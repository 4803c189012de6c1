"""A replica judges nothing against a validator set it does not know yet.

The application learns a change of the set from the committed block carrying it, and
the change takes effect more than ``activation_delay`` blocks later
(``ReplicaConfig.activation_delay``). Above what it has applied, ``validators_at``
answers the latest set it knows, which may be the old one. Here four
of the five validators take new keys from height ``EFF`` (the block at ``CHANGE``
carries the change), and a replica that has applied only the blocks below ``CHANGE``
is given votes, VIEW-CHANGEs and catch-up blocks from above ``EFF``: signed with the new
keys (honest) or the retired ones (a forger holding old keys).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from consensus import (
    Blocks,
    Commit,
    Fetch,
    Message,
    Outbound,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    Replica,
    ReplicaConfig,
    Status,
    ViewChange,
    sign,
)
from consensus.verification import SignatureCache
from consensus.viewchange import Context, build_new_view
from ledger.blocks import Block, channel_genesis_hash
from ledger.certificate import (
    CommitCertificate,
    Validator,
    ValidatorSet,
    verify_certificate,
)
from ledger.crypto import ED25519, Ed25519Signer
from ledger.errors import ConfigError, LedgerError
from ledger.hashing import TAG_STATE, sha256, tagged_hash
from tests.helpers_chain import (
    EMPTY_STATE_ROOT,
    certify,
    fake_genesis_hash,
    make_block,
    make_tx,
    make_validators,
    state_root_after,
)

CHANNEL = "supervision"
DELAY = 8  # activation delay (= the default window)
CHANGE = 3  # the block carrying the change
EFF = CHANGE + DELAY + 1  # the first height of the new keys (the earliest allowed)
CONFIG_TX = "test.config"
GENESIS = fake_genesis_hash(7)

OLD_SET, OLD_KEYS = make_validators(5, seed=7)


def _rekeyed(generation: int) -> tuple[ValidatorSet, list[Ed25519Signer]]:
    """node1..node4 with keys of ``generation``; node5 keeps its key throughout."""
    keys = [Ed25519Signer(sha256(f"key-{generation}-{i}".encode())) for i in range(4)] + OLD_KEYS[
        4:
    ]
    vset = ValidatorSet(
        tuple(
            Validator(v.node_id, k.public_key)
            for v, k in zip(OLD_SET.validators, keys, strict=True)
        )
    )
    return vset, keys


NEW_SET, NEW_KEYS = _rekeyed(1)
SETS = [(OLD_SET, OLD_KEYS), (NEW_SET, NEW_KEYS), _rekeyed(2)]
#: (carrying block, key generation from then on): in force DELAY + 1 blocks later
ONE_CHANGE = ((CHANGE, 1),)


def generation_at(height: int, changes: tuple[tuple[int, int], ...] = ONE_CHANGE) -> int:
    return max([0] + [g for c, g in changes if c + DELAY + 1 <= height])


def true_set(height: int) -> ValidatorSet:
    return SETS[generation_at(height)][0]


class LearningApp:
    """Applies blocks and learns each new set from the block carrying the change."""

    def __init__(self) -> None:
        self.chain: list[tuple[Block, CommitCertificate]] = []
        self.roots = [tagged_hash(TAG_STATE, b"genesis")]
        self.learnt: list[tuple[int, ValidatorSet]] = [(0, OLD_SET)]

    def validate_tx(self, tx: object) -> str | None:
        return None

    def validators_at(self, height: int) -> ValidatorSet:
        return [vset for start, vset in self.learnt if start <= height][-1]

    def state_root_at(self, height: int) -> bytes | None:
        return self.roots[height] if 0 <= height < len(self.roots) else None

    def committed_block(self, height: int) -> tuple[Block, CommitCertificate] | None:
        return self.chain[height - 1] if 1 <= height <= len(self.chain) else None

    def block_extra(self, height: int) -> bytes | None:
        return None

    @property
    def height(self) -> int:
        return len(self.chain)

    def store(self, block: Block, cert: CommitCertificate) -> None:
        assert block.height == self.height + 1
        self.chain.append((block, cert))
        self.roots.append(tagged_hash(TAG_STATE, self.roots[-1] + block.header.tx_root))
        for tx in block.transactions:
            if tx.type == CONFIG_TX:
                eff, generation = tx.payload["eff"], tx.payload["gen"]
                assert isinstance(eff, int) and isinstance(generation, int)
                self.learnt.append((eff, SETS[generation][0]))


def honest_chain(
    top: int, changes: tuple[tuple[int, int], ...] = ONE_CHANGE
) -> list[tuple[Block, CommitCertificate]]:
    """Blocks 1..top, each certified by the keys in force at its height; block ``c`` of
    each change carries it (a CONFIG_TX transaction)."""
    carried = dict(changes)
    prev, root = channel_genesis_hash(GENESIS, CHANNEL), EMPTY_STATE_ROOT
    blocks: list[tuple[Block, CommitCertificate]] = []
    for h in range(1, top + 1):
        if h in carried:
            payload: dict[str, object] = {"eff": h + DELAY + 1, "gen": carried[h]}
            tx = make_tx(GENESIS, CHANNEL, 900 + h, tx_type=CONFIG_TX, payload=payload)
        else:
            tx = make_tx(GENESIS, CHANNEL, h)
        vset, keys = SETS[generation_at(h, changes)]
        block = make_block(CHANNEL, h, prev, [tx], state_root=root, proposer=vset.primary(0))
        blocks.append((block, certify(block, vset, keys)))
        prev, root = block.hash, state_root_after(block)
    return blocks


def replica(app: LearningApp) -> Replica:
    config = ReplicaConfig(
        node_id="node5",
        channel=CHANNEL,
        signer=OLD_KEYS[4],
        scheme=ED25519,
        genesis_prev_hash=channel_genesis_hash(GENESIS, CHANNEL),
        activation_delay=DELAY,
        config_tx_types=frozenset({CONFIG_TX}),
    )
    r = Replica(config, app)
    r.tick(0)
    return r


def drain(
    r: Replica,
    app: LearningApp,
    tops: list[int] | None = None,
    *,
    outbound: list[Outbound] | None = None,
) -> list[Message]:
    """What a host does: store and apply committed blocks, then advance. Returns the
    messages the replica sent (``outbound``: with their destinations); appends to
    ``tops`` the last height of each Ready that committed blocks."""
    sent = []
    while r.has_ready():
        rd = r.ready()
        for block, cert in rd.committed:
            app.store(block, cert)
        if rd.committed and tops is not None:
            tops.append(rd.committed[-1][0].height)
        sent += [o.message for o in rd.messages]
        if outbound is not None:
            outbound += rd.messages
        r.advance(rd)
    return sent


def answer(entries: list[tuple[Block, CommitCertificate]]) -> Blocks:
    """A catch-up answer from node1 (a validator at every height, signing with its key
    of the height above our committed one: the old key here). We did not ask for it:
    it may still wait for a change to be applied while no answer we asked for does."""
    return sign(Blocks(CHANNEL, "node1", tuple(entries)), OLD_KEYS[0])


def assert_certificates_verify(
    app: LearningApp, changes: tuple[tuple[int, int], ...] = ONE_CHANGE
) -> None:
    for block, cert in app.chain:
        verify_certificate(
            cert,
            channel=CHANNEL,
            height=block.height,
            block_hash=block.hash,
            validators=SETS[generation_at(block.height, changes)][0],
            scheme=ED25519,
        )


def test_catch_up_across_a_key_change_waits_for_the_change_to_be_applied() -> None:
    """One answer crosses the change: the blocks from EFF are checked with the new
    keys once the block carrying the change is applied (before, they were checked
    with the old set: an honest answer was refused and its sender reported)."""
    app = LearningApp()
    r = replica(app)
    r.step(answer(honest_chain(EFF + 2)))
    tops: list[int] = []
    drain(r, app, tops)
    assert app.height == EFF + 2
    # it stops where the next height's set is not known: CHANGE + DELAY stays final
    assert tops == [CHANGE + DELAY - 1, EFF + 2]
    assert r.metrics["catchup.await_apply"] == 1
    assert r.evidence_count == 0
    assert_certificates_verify(app)


def test_an_answer_across_two_changes_waits_for_each() -> None:
    changes = ((CHANGE, 1), (EFF, 2))  # the second carried by block EFF
    chain = honest_chain(EFF + DELAY + 4, changes)
    app = LearningApp()
    r = replica(app)
    r.step(answer(chain))
    tops: list[int] = []
    drain(r, app, tops)
    assert app.height == len(chain)
    assert tops == [CHANGE + DELAY - 1, EFF + DELAY - 1, len(chain)]
    assert r.metrics["catchup.await_apply"] == 2
    assert r.evidence_count == 0
    assert_certificates_verify(app, changes)


def test_a_fork_certified_by_retired_keys_is_refused() -> None:
    """Blocks certified by a quorum of keys retired at EFF: checked against the set
    in force there once it is known, the first is refused (before, it was checked
    against the old set and committed)."""
    app = LearningApp()
    r = replica(app)
    honest = honest_chain(EFF - 1)
    last = honest[-1][0]
    forged = make_block(
        CHANNEL,
        EFF,
        last.hash,
        [make_tx(GENESIS, CHANNEL, 4242)],
        state_root=state_root_after(last),
    )
    r.step(answer([*honest, (forged, certify(forged, OLD_SET, OLD_KEYS))]))
    drain(r, app)
    assert app.height == EFF - 1
    assert r.metrics["catchup.bad_certificate"] == 1
    assert_certificates_verify(app)
    with pytest.raises(LedgerError):
        verify_certificate(
            certify(forged, OLD_SET, OLD_KEYS),
            channel=CHANNEL,
            height=EFF,
            block_hash=forged.hash,
            validators=true_set(EFF),
            scheme=ED25519,
        )


def test_votes_above_the_known_sets_are_verified_once_the_sets_are_known() -> None:
    """COMMITs for EFF reach a replica that has applied only blocks 1..CHANGE-1: one
    signed with node1's retired key, one with node2's new key. Both wait unverified;
    once the change is applied the forged one is dropped and the honest one counts
    (before: the forged one was taken, the honest one dropped)."""
    app = LearningApp()
    r = replica(app)
    chain = honest_chain(EFF)
    r.step(answer(chain[: CHANGE - 1]))
    drain(r, app)
    assert app.height == CHANGE - 1
    target = chain[EFF - 1][0]
    forged = sign(Commit(CHANNEL, "node1", 0, EFF, target.hash), OLD_KEYS[0])
    honest = sign(Commit(CHANNEL, "node2", 0, EFF, target.hash), NEW_KEYS[1])
    r.step(forged)
    r.step(honest)
    assert r.metrics["held.unknown_set"] == 2
    assert "dropped.bad_signature" not in r.metrics
    r.step(answer(chain[CHANGE - 1 : EFF - 1]))
    drain(r, app)
    assert app.height == EFF - 1
    assert r.metrics["dropped.bad_signature"] == 1
    assert r._slots[EFF].commits == {"node2": honest}


def _keys(height: int) -> list[Ed25519Signer]:
    return NEW_KEYS if height >= EFF else OLD_KEYS


def _prepared(block: Block) -> PreparedCertificate:
    """Block prepared in view 0 by all five validators, with their keys of its height."""
    h, vset, keys = block.height, true_set(block.height), _keys(block.height)
    index = {v.node_id: i for i, v in enumerate(vset.validators)}
    primary = vset.primary(0)
    pp = sign(PrePrepare(CHANNEL, primary, 0, block), keys[index[primary]])
    prepares = tuple(
        sign(Prepare(CHANNEL, v.node_id, 0, h, block.hash), keys[i])
        for i, v in enumerate(vset.validators)
    )
    return PreparedCertificate(pp, prepares)


def _view_change(sender: int, chain: list[tuple[Block, CommitCertificate]]) -> ViewChange:
    """An honest validator's VIEW-CHANGE to view 1: stable at EFF - 3 (certified by the
    old keys), blocks EFF - 2 … EFF prepared in view 0 (the last under the new keys)."""
    stable = EFF - 3
    header, cert = chain[stable - 1][0].header, chain[stable - 1][1]
    prepared = tuple(_prepared(chain[h - 1][0]) for h in range(stable + 1, EFF + 1))
    vc = ViewChange(CHANNEL, f"node{sender + 1}", 1, stable, header, cert, prepared)
    return sign(vc, _keys(stable + 1)[sender])  # judged with the set at stable + 1


def _context(builder: LearningApp) -> Context:
    """What a peer holding ``builder``'s chain builds a NEW-VIEW with."""
    return Context(
        channel=CHANNEL,
        genesis_prev_hash=channel_genesis_hash(GENESIS, CHANNEL),
        window=DELAY,
        validators_at=true_set,
        state_root_at=builder.state_root_at,
        sigs=SignatureCache(ED25519, 1024),
    )


def _status_from_one_peer(chain: list[tuple[Block, CommitCertificate]]) -> Status:
    """node1 says it is ahead: alone, that is no reason to catch up (f + 1 must)."""
    return sign(Status(CHANNEL, "node1", 0, True, EFF - 1, chain[EFF - 2][0].hash), OLD_KEYS[0])


def test_view_changes_reaching_unknown_sets_wait_and_their_stable_points_start_catch_up() -> None:
    """Two VIEW-CHANGEs whose prepared certificate lies above the known sets: their
    stable points are checked at once and anchor catch-up (from the one peer that said
    it was ahead, which alone was no reason to fetch), the rest waits for the
    change to be applied; then both count and the replica joins view 1 (before: both
    honest senders were reported for a bad PRE-PREPARE signature)."""
    app = LearningApp()
    r = replica(app)
    chain = honest_chain(EFF)
    r.step(answer(chain[: CHANGE - 1]))
    drain(r, app)
    r.step(_status_from_one_peer(chain))
    assert not [m for m in drain(r, app) if isinstance(m, Fetch)]
    for sender in (1, 2):
        r.step(_view_change(sender, chain))
    sent = drain(r, app)
    assert r.metrics["held.unknown_set"] == 2
    assert r.evidence_count == 0 and r.view == 0
    fetches = [m for m in sent if isinstance(m, Fetch)]
    assert fetches and fetches[0].to_height >= EFF - 3, "the stable point starts catch-up"
    r.step(answer(chain[CHANGE - 1 : EFF - 1]))
    drain(r, app)
    assert app.height == EFF - 1
    assert r.evidence_count == 0
    assert r.view == 1


def test_forged_view_changes_above_the_known_sets_are_not_held() -> None:
    """A VIEW-CHANGE under node2's name signed with another key is dropped, not
    blamed. One whose signature cannot be checked yet (its stable point lies above the
    known sets) is dropped too, whoever signed it: only checked ones wait."""
    app = LearningApp()
    r = replica(app)
    chain = honest_chain(EFF)
    r.step(answer(chain[: CHANGE - 1]))
    drain(r, app)
    r.step(sign(replace(_view_change(1, chain), signature=b""), OLD_KEYS[3]))
    far = ViewChange(CHANNEL, "node2", 1, EFF - 1, chain[EFF - 2][0].header, chain[EFF - 2][1], ())
    r.step(sign(far, NEW_KEYS[3]))
    drain(r, app)
    assert r.metrics["dropped.bad_signature"] == 1
    assert r.metrics["dropped.unknown_set"] == 1
    assert r.evidence_count == 0 and "held.unknown_set" not in r.metrics


def test_a_new_view_reaching_unknown_sets_waits_then_is_entered() -> None:
    """A NEW-VIEW for view 1 built from four honest VIEW-CHANGEs reaching EFF: it waits
    (its stable points start catch-up) and is entered once the change is applied
    (before: checked with the old set, its honest sender was reported)."""
    app = LearningApp()
    r = replica(app)
    chain = honest_chain(EFF)
    r.step(answer(chain[: CHANGE - 1]))
    drain(r, app)
    builder = LearningApp()  # a peer that has the chain up to EFF - 1
    for block, cert in chain[: EFF - 1]:
        builder.store(block, cert)
    ctx = _context(builder)
    primary = true_set(EFF - 2).primary(1)
    index = [v.node_id for v in OLD_SET.validators].index(primary)
    nv, _ = build_new_view(
        [_view_change(i, chain) for i in range(4)], ctx, 1, primary, OLD_KEYS[index]
    )
    r.step(_status_from_one_peer(chain))
    drain(r, app)
    r.step(nv)
    # a NEW-VIEW under the primary's name for a later view, not signed by it, does not
    # take the honest one's place
    r.step(sign(replace(nv, view=2, signature=b""), OLD_KEYS[3]))
    sent = drain(r, app)
    assert r.metrics["held.unknown_set"] == 1
    assert r.metrics["dropped.bad_signature"] == 1
    assert r.view == 0 and r.evidence_count == 0
    assert [m for m in sent if isinstance(m, Fetch)], "the stable points start catch-up"
    r.step(answer(chain[CHANGE - 1 : EFF - 1]))
    drain(r, app)
    assert app.height == EFF - 1
    assert (r.view, r.view_active, r.evidence_count) == (1, True, 0)


def test_re_proposals_stop_below_the_final_height_until_the_change_is_applied() -> None:
    """Within one host turn (no advance), block CHANGE is committed by catch-up, then a
    NEW-VIEW re-proposes CHANGE + 1 … CHANGE + DELAY and their COMMITs arrive. Proposals
    need the state root W below them, re-proposals do not: the replica commits up to
    CHANGE + DELAY - 1 only, so the set at the next height (which judges STATUS) stays
    known, and commits the last one after the change is applied (before, it committed
    CHANGE + DELAY at once and judged the next height with the old set)."""
    chain = honest_chain(EFF + 2)
    app = LearningApp()
    r = replica(app)
    r.step(answer(chain[: CHANGE - 1]))
    drain(r, app)

    def view_change(sender: int) -> ViewChange:
        header, cert = chain[CHANGE - 1][0].header, chain[CHANGE - 1][1]
        prepared = tuple(_prepared(chain[h - 1][0]) for h in range(CHANGE + 1, CHANGE + DELAY + 1))
        vc = ViewChange(CHANNEL, f"node{sender + 1}", 1, CHANGE, header, cert, prepared)
        return sign(vc, _keys(CHANGE + 1)[sender])

    builder = LearningApp()
    for block, cert in chain[: EFF - 1]:
        builder.store(block, cert)
    primary = true_set(CHANGE + 1).primary(1)
    index = [v.node_id for v in OLD_SET.validators].index(primary)
    nv, _ = build_new_view(
        [view_change(i) for i in range(4)], _context(builder), 1, primary, OLD_KEYS[index]
    )
    r.step(answer(chain[CHANGE - 1 : CHANGE]))
    r.step(nv)
    assert r.view == 1
    for h in range(CHANGE + 1, CHANGE + DELAY + 1):
        block = chain[h - 1][0]
        for i in range(4):
            r.step(sign(Commit(CHANNEL, f"node{i + 1}", 1, h, block.hash), _keys(h)[i]))
    assert r.committed_height == CHANGE + DELAY - 1
    drain(r, app)
    assert app.height == CHANGE + DELAY
    assert r.evidence_count == 0
    assert_certificates_verify(app)


def test_a_waiting_answer_we_asked_for_is_not_displaced_by_one_we_did_not() -> None:
    """Within one host turn, an answer we did not ask for reaches past the change (its
    tail unchecked: junk here) and waits for it to be applied; our FETCH's answer takes
    its place, and the unasked one, sent again, does not take it back."""
    chain = honest_chain(EFF + 2)
    app = LearningApp()
    r = replica(app)
    r.step(answer(chain[: CHANGE - 1]))
    drain(r, app)
    # node1 and node2 say they are at EFF + 2: f + 1 claims, so we fetch from one
    for i in (0, 1):
        status = Status(CHANNEL, f"node{i + 1}", 0, True, EFF + 2, chain[EFF + 1][0].hash)
        r.step(sign(status, OLD_KEYS[i]))
    outbound: list[Outbound] = []
    drain(r, app, outbound=outbound)
    fetches = [o for o in outbound if isinstance(o.message, Fetch)]
    assert len(fetches) == 1 and fetches[0].to in ("node1", "node2")
    f, asked_peer = fetches[0].message, fetches[0].to
    assert isinstance(f, Fetch) and (f.from_height, f.to_height) == (CHANGE, EFF + 2)
    other = 1 if asked_peer == "node1" else 0  # the peer we did not ask
    last = chain[EFF][0]
    junk = make_block(
        CHANNEL, EFF + 2, last.hash, [make_tx(GENESIS, CHANNEL, 777)],
        state_root=state_root_after(last),
    )  # fmt: skip
    entries = (*chain[CHANGE - 1 : EFF + 1], (junk, certify(junk, OLD_SET, OLD_KEYS)))
    unasked = sign(Blocks(CHANNEL, f"node{other + 1}", entries), OLD_KEYS[other])
    ours = sign(
        Blocks(CHANNEL, asked_peer, tuple(chain[CHANGE - 1 : EFF + 2])),
        OLD_KEYS[1 - other],
    )
    r.step(unasked)  # commits up to CHANGE + DELAY - 1, then waits
    r.step(ours)  # takes the unasked one's place
    r.step(unasked)  # does not take it back
    assert r.metrics["catchup.await_apply"] == 2
    assert r.metrics["dropped.catchup_overlap"] == 1
    drain(r, app)
    assert app.height == EFF + 2 and r.evidence_count == 0
    assert_certificates_verify(app)


def test_activation_delay_below_the_window_is_refused() -> None:
    with pytest.raises(ConfigError, match="activation_delay"):
        ReplicaConfig(
            node_id="node5",
            channel=CHANNEL,
            signer=OLD_KEYS[4],
            scheme=ED25519,
            genesis_prev_hash=channel_genesis_hash(GENESIS, CHANNEL),
            window=8,
            activation_delay=7,
        )
