"""A replica judges nothing against a validator set it does not know yet.

The application learns a change of the set from the committed block carrying it, and
the change takes effect ``activation_delay`` blocks later at the earliest
(``ReplicaConfig.activation_delay``). Above the last applied block plus that delay,
``validators_at`` answers the latest set it knows, which may be the old one. Here four
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
    Chain,
    certify,
    extend_chain,
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
NEW_KEYS = [Ed25519Signer(sha256(f"new-key-{i}".encode())) for i in range(4)] + OLD_KEYS[4:]
NEW_SET = ValidatorSet(
    tuple(
        Validator(v.node_id, k.public_key)
        for v, k in zip(OLD_SET.validators, NEW_KEYS, strict=True)
    )
)


def true_set(height: int) -> ValidatorSet:
    return NEW_SET if height >= EFF else OLD_SET


class LearningApp:
    """Applies blocks and learns the new set from the block carrying the change."""

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
                self.learnt.append((int(tx.payload["eff"]), NEW_SET))


def honest_chain(top: int) -> list[tuple[Block, CommitCertificate]]:
    """Blocks 1..top: the change in block CHANGE, the new keys certifying from EFF."""
    chain = extend_chain(Chain(GENESIS, OLD_SET, OLD_KEYS, []), CHANGE - 1, 1, channel=CHANNEL)
    last = chain.blocks[-1][0]
    change_tx = make_tx(GENESIS, CHANNEL, 999, tx_type=CONFIG_TX, payload={"eff": EFF})
    block = make_block(CHANNEL, CHANGE, last.hash, [change_tx], state_root=state_root_after(last))
    blocks = [*chain.blocks, (block, certify(block, OLD_SET, OLD_KEYS))]
    chain = extend_chain(Chain(GENESIS, OLD_SET, OLD_KEYS, blocks), EFF - 1 - CHANGE, 1)
    chain = extend_chain(Chain(GENESIS, NEW_SET, NEW_KEYS, chain.blocks), top - EFF + 1, 1)
    return chain.blocks[:top]


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


def drain(r: Replica, app: LearningApp) -> list[Message]:
    """What a host does: store and apply committed blocks, then advance. Returns the
    messages the replica sent."""
    sent = []
    while r.has_ready():
        rd = r.ready()
        for block, cert in rd.committed:
            app.store(block, cert)
        sent += [o.message for o in rd.messages]
        r.advance(rd)
    return sent


def answer(entries: list[tuple[Block, CommitCertificate]]) -> Blocks:
    """A catch-up answer from node1 (a validator at every height, signing with its key
    of the height above our committed one: the old key here)."""
    return sign(Blocks(CHANNEL, "node1", tuple(entries)), OLD_KEYS[0])


def assert_certificates_verify(app: LearningApp) -> None:
    for block, cert in app.chain:
        verify_certificate(
            cert,
            channel=CHANNEL,
            height=block.height,
            block_hash=block.hash,
            validators=true_set(block.height),
            scheme=ED25519,
        )


def test_catch_up_across_a_key_change_waits_for_the_change_to_be_applied() -> None:
    """One answer crosses the change: the blocks from EFF are checked with the new
    keys once the block carrying the change is applied (before, they were checked
    with the old set: an honest answer was refused and its sender reported)."""
    app = LearningApp()
    r = replica(app)
    r.step(answer(honest_chain(EFF + 2)))
    drain(r, app)
    assert app.height == EFF + 2
    assert r.metrics["catchup.await_apply"] == 1
    assert r.evidence_count == 0
    assert_certificates_verify(app)


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


def test_a_forged_view_change_held_for_unknown_sets_blames_no_one() -> None:
    app = LearningApp()
    r = replica(app)
    chain = honest_chain(EFF)
    r.step(answer(chain[: CHANGE - 1]))
    drain(r, app)
    forged = sign(replace(_view_change(1, chain), signature=b""), OLD_KEYS[3])
    r.step(forged)
    drain(r, app)
    assert r.metrics["dropped.bad_signature"] == 1
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
    ctx = Context(
        channel=CHANNEL,
        genesis_prev_hash=channel_genesis_hash(GENESIS, CHANNEL),
        window=DELAY,
        validators_at=true_set,
        state_root_at=builder.state_root_at,
        sigs=SignatureCache(ED25519, 1024),
    )
    primary = true_set(EFF - 2).primary(1)
    index = [v.node_id for v in OLD_SET.validators].index(primary)
    nv, _ = build_new_view(
        [_view_change(i, chain) for i in range(4)], ctx, 1, primary, OLD_KEYS[index]
    )
    r.step(_status_from_one_peer(chain))
    drain(r, app)
    r.step(nv)
    sent = drain(r, app)
    assert r.metrics["held.unknown_set"] == 1
    assert r.view == 0 and r.evidence_count == 0
    assert [m for m in sent if isinstance(m, Fetch)], "the stable points start catch-up"
    r.step(answer(chain[CHANGE - 1 : EFF - 1]))
    drain(r, app)
    assert app.height == EFF - 1
    assert (r.view, r.view_active, r.evidence_count) == (1, True, 0)


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
