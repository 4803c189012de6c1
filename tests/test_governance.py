"""Governance: m-of-n approvals, key rotation/revocation, validator and permission changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from ledger.blocks import Block, Transaction, build_block
from ledger.certificate import ValidatorSet, quorum_size
from ledger.crypto import Ed25519Signer
from ledger.encoding import decode, encode
from ledger.errors import SchemaError
from ledger.genesis import (
    CHANNELS,
    CONFIG_UPDATE,
    DEFAULT_PARAMS,
    DEFAULT_READ,
    DEFAULT_SCOPED_READ,
    DEFAULT_SUBMIT,
    Genesis,
    Permissions,
    genesis_from_document,
)
from ledger.governance import (
    CONFIG_ACTIVATION_DELAY,
    AddValidator,
    Approval,
    Change,
    ChannelGovernance,
    ConfigUpdate,
    GovernanceError,
    OrgRegistry,
    PermissionTracker,
    RegisterOrg,
    RemoveValidator,
    RevokeKey,
    RotateKey,
    SetPermissions,
    ValidatorTracker,
    approve,
    change_from_wire,
    check_activation,
    check_approvals,
)
from ledger.identity import INSTITUTION_ROLES, NodeInfo, Organisation, OrgKey

CH = "supervision"
D = CONFIG_ACTIVATION_DELAY


def _signer(label: str) -> Ed25519Signer:
    return Ed25519Signer(label.encode().ljust(32, b"."))


@dataclass
class Net:
    genesis: Genesis
    org_keys: dict[str, Ed25519Signer]
    node_keys: dict[str, Ed25519Signer]

    def approvals(
        self, orgs: list[str], change: Change, eff: int, channel: str = CH
    ) -> list[Approval]:
        return [approve(o, self.org_keys[o], self.genesis.hash, channel, change, eff) for o in orgs]

    def update(self, orgs: list[str], change: Change, eff: int) -> ConfigUpdate:
        return ConfigUpdate(change, eff, tuple(self.approvals(orgs, change, eff)))


def _perm_doc(ch: str) -> dict[str, Any]:
    return Permissions(DEFAULT_SUBMIT[ch], DEFAULT_READ[ch], DEFAULT_SCOPED_READ[ch]).to_document()


@pytest.fixture(scope="module")
def net() -> Net:
    org_keys = {o: _signer(f"org-{o}") for o in (*INSTITUTION_ROLES, "lender-a")}
    node_keys = {o: _signer(f"node-{o}") for o in INSTITUTION_ROLES}
    doc = {
        "version": 1,
        "network": "test-net",
        "created_ms": 0,
        "governance_threshold": 3,
        "orgs": [
            {
                "id": o,
                "name": o.title(),
                "role": o if o in INSTITUTION_ROLES else "lender",
                "keys": [{"public_key": s.public_key.hex(), "valid_from": 0, "revoked_at": None}],
            }
            for o, s in org_keys.items()
        ],
        "nodes": [
            {
                "id": f"{o}-node",
                "org": o,
                "public_key": s.public_key.hex(),
                "address": f"http://127.0.0.1:{7001 + i}",
            }
            for i, (o, s) in enumerate(node_keys.items())
        ],
        "channels": [
            {
                "id": ch,
                "validators": [f"{o}-node" for o in INSTITUTION_ROLES],
                **_perm_doc(ch),
                "params": dict(DEFAULT_PARAMS),
            }
            for ch in CHANNELS
        ],
    }
    return Net(genesis_from_document(doc, "test"), org_keys, node_keys)


def _tx(net: Net, update: ConfigUpdate, nonce: int = 0, channel: str = CH) -> Transaction:
    signer = net.org_keys["bureau"]
    return Transaction(
        net.genesis.hash, channel, CONFIG_UPDATE, "bureau", signer.public_key, nonce, 0,
        update.to_payload(),
    ).signed(signer)  # fmt: skip


def _block(height: int, txs: list[Transaction] | None = None, channel: str = CH) -> Block:
    block = build_block(
        channel=channel,
        height=height,
        prev_hash=b"\0" * 32,
        transactions=txs or [],
        state_height=0,
        state_root=b"\0" * 32,
        proposer="bureau-node",
        view=0,
        time_ms=0,
    )
    # Through the wire form, as a node or light client would receive it.
    return Block.decode(block.encoded())


def _feed(tracker: Any, upto: int) -> None:
    for h in range(tracker.height + 1, upto + 1):
        tracker.observe_block(_block(h))


NEW_NODE = NodeInfo(
    "extra-node", "bureau", _signer("node-extra").public_key, "http://10.0.0.9:7009"
)


# --------------------------------------------------------------------------- approvals

THREE = ["bureau", "court", "risk_centre"]


def test_three_of_five_accepted(net: Net) -> None:
    change = RemoveValidator("court-node")
    for orgs in (THREE, ["court", "credit_agency", "service_platform"], list(INSTITUTION_ROLES)):
        check_approvals(net.genesis, CH, change, 50, net.approvals(orgs, change, 50), 10)


def test_two_refused(net: Net) -> None:
    change = RemoveValidator("court-node")
    with pytest.raises(GovernanceError) as exc:
        check_approvals(net.genesis, CH, change, 50, net.approvals(THREE[:2], change, 50), 10)
    assert exc.value.reason == "too_few"
    assert "3 institutions" in str(exc.value)


def test_duplicate_org_refused(net: Net) -> None:
    change = RemoveValidator("court-node")
    approvals = net.approvals(["bureau", "court", "court"], change, 50)
    with pytest.raises(GovernanceError) as exc:
        check_approvals(net.genesis, CH, change, 50, approvals, 10)
    assert exc.value.reason == "duplicate_org"


def test_non_institution_refused(net: Net) -> None:
    change = RemoveValidator("court-node")
    approvals = net.approvals([*THREE, "lender-a"], change, 50)
    with pytest.raises(GovernanceError) as exc:
        check_approvals(net.genesis, CH, change, 50, approvals, 10)
    assert exc.value.reason == "not_institution"


def test_unknown_org_refused(net: Net) -> None:
    change = RemoveValidator("court-node")
    approvals = [*net.approvals(THREE, change, 50), Approval("ghost", b"\1" * 64)]
    with pytest.raises(GovernanceError) as exc:
        check_approvals(net.genesis, CH, change, 50, approvals, 10)
    assert exc.value.reason == "unknown_org"


@pytest.mark.parametrize("tamper", ["other-eff", "other-change", "other-channel", "other-key"])
def test_bad_signature_refused(net: Net, tamper: str) -> None:
    change = RemoveValidator("court-node")
    good = net.approvals(THREE, change, 50)
    if tamper == "other-eff":
        bad = net.approvals(["bureau"], change, 51)[0]
    elif tamper == "other-change":
        bad = net.approvals(["bureau"], RemoveValidator("bureau-node"), 50)[0]
    elif tamper == "other-channel":
        bad = net.approvals(["bureau"], change, 50, channel="judicial")[0]
    else:  # signed by the bureau's node key, not its org key
        bad = approve("bureau", net.node_keys["bureau"], net.genesis.hash, CH, change, 50)
    approvals = [bad, *good[1:]]
    with pytest.raises(GovernanceError) as exc:
        check_approvals(net.genesis, CH, change, 50, approvals, 10)
    assert exc.value.reason == "bad_signature"
    assert "bureau" in str(exc.value)


def test_activation_window() -> None:
    check_activation(100 + D + 1, 100)
    with pytest.raises(GovernanceError) as exc:
        check_activation(100 + D, 100)
    assert exc.value.reason == "too_early"


# --------------------------------------------------------------------------- keys


def test_rotation_switches_keys_at_effective_height(net: Net) -> None:
    reg = OrgRegistry.from_genesis(net.genesis, CH)
    new = _signer("org-court-2")
    old_pk = net.org_keys["court"].public_key
    eff = 1 + D + 1
    rotate = RotateKey("court", new.public_key)
    reg.observe_block(_block(1, [_tx(net, net.update(THREE, rotate, eff))]))
    _feed(reg, eff + 2)
    assert reg.key_active_at("court", old_pk, eff - 1)
    assert not reg.key_active_at("court", old_pk, eff)
    assert not reg.key_active_at("court", new.public_key, eff - 1)
    assert reg.key_active_at("court", new.public_key, eff)
    assert reg.key_active_at("court", new.public_key, eff + 1000)

    change = RemoveValidator("risk_centre-node")
    with_old = net.approvals(["court", "bureau", "credit_agency"], change, 500)
    with_new = [
        approve("court", new, net.genesis.hash, CH, change, 500),
        *with_old[1:],
    ]
    check_approvals(reg, CH, change, 500, with_old, eff - 1)
    check_approvals(reg, CH, change, 500, with_new, eff)
    with pytest.raises(GovernanceError) as exc:
        check_approvals(reg, CH, change, 500, with_old, eff)
    assert exc.value.reason == "revoked_key"
    with pytest.raises(GovernanceError) as exc:
        check_approvals(reg, CH, change, 500, with_new, eff - 1)
    assert exc.value.reason == "key_not_yet_valid"


def test_revoked_key_refused(net: Net) -> None:
    reg = OrgRegistry.from_genesis(net.genesis, CH)
    pk = net.org_keys["risk_centre"].public_key
    eff = 20
    reg.observe_block(_block(1, [_tx(net, net.update(THREE, RevokeKey("risk_centre", pk), eff))]))
    assert reg.key_active_at("risk_centre", pk, eff - 1)
    assert not reg.key_active_at("risk_centre", pk, eff)
    assert reg.institutions_at(eff) == tuple(INSTITUTION_ROLES)  # still an org, keyless
    change = AddValidator(NEW_NODE)
    approvals = net.approvals(["risk_centre", "bureau", "court"], change, 100)
    check_approvals(reg, CH, change, 100, approvals, eff - 1)
    with pytest.raises(GovernanceError) as exc:
        check_approvals(reg, CH, change, 100, approvals, eff)
    assert exc.value.reason == "revoked_key"


def test_unapproved_org_change_is_skipped(net: Net) -> None:
    reg = OrgRegistry.from_genesis(net.genesis, CH)
    pk = net.org_keys["court"].public_key
    applied = reg.observe_block(
        _block(1, [_tx(net, net.update(["bureau", "court"], RevokeKey("court", pk), 20))])
    )
    assert applied == ()
    assert reg.key_active_at("court", pk, 10_000)


def test_register_org_from_effective_height(net: Net) -> None:
    reg = OrgRegistry.from_genesis(net.genesis, CH)
    lender = _signer("lender-b")
    org = Organisation("lender-b", "Lender B", "lender", (OrgKey(lender.public_key),))
    eff = 15
    upd = net.update(THREE, RegisterOrg(org), eff)
    assert reg.observe_block(_block(1, [_tx(net, upd)])) == (upd,)
    assert reg.org_at("lender-b", eff - 1) is None
    registered = reg.org_at("lender-b", eff)
    assert registered is not None and registered.role == "lender"
    assert not reg.key_active_at("lender-b", lender.public_key, eff - 1)
    assert reg.key_active_at("lender-b", lender.public_key, eff)
    # Replaying the same approved change later does nothing (id already taken).
    assert reg.observe_block(_block(2, [_tx(net, upd, nonce=1)])) == ()


def test_registering_a_node_id_or_used_key_is_not_applicable(net: Net) -> None:
    reg = OrgRegistry.from_genesis(net.genesis, CH)
    taken_id = Organisation("court-node", "X", "lender", (OrgKey(_signer("x").public_key),))
    with pytest.raises(GovernanceError, match="taken") as exc:
        reg.check_schedule(RegisterOrg(taken_id), 50)
    assert exc.value.reason == "not_applicable"
    reused = Organisation("lender-c", "C", "lender", (OrgKey(net.org_keys["court"].public_key),))
    with pytest.raises(GovernanceError, match="reuses"):
        reg.check_schedule(RegisterOrg(reused), 50)


# --------------------------------------------------------------------------- validators


def test_validator_tracker_applies_add_and_remove_at_exact_height(net: Net) -> None:
    initial = net.genesis.channel(CH).validators
    tracker = ValidatorTracker(initial, channel=CH, nodes=net.genesis.nodes)
    add_eff, rm_eff = 30, 40
    txs = [
        _tx(net, net.update(THREE, AddValidator(NEW_NODE), add_eff), 0),
        _tx(net, net.update(THREE, RemoveValidator("credit_agency-node"), rm_eff), 1),
    ]
    tracker.observe_block(_block(1, txs))
    for h in (0, 1, add_eff - 1):
        assert tracker.validators_at(h) == initial
    six = tracker.validators_at(add_eff)
    assert [v.node_id for v in six.validators][-1] == "extra-node"
    assert tracker.validators_at(rm_eff - 1) == six
    after = tracker.validators_at(rm_eff)
    assert "credit_agency-node" not in after.by_id
    assert after.n == 5 and after.quorum == 4
    assert tracker.node_info("extra-node", add_eff) == NEW_NODE
    assert tracker.node_info("extra-node", add_eff - 1) is None
    assert tracker.node_info("credit_agency-node", rm_eff) is None


def _assert_quorum_math(vs: ValidatorSet) -> None:
    # Any two quorums intersect in at least f+1 validators, and n−f honest ones form one.
    assert 2 * vs.quorum - vs.n >= vs.f + 1
    assert vs.quorum <= vs.n - vs.f


def test_validator_set_change_keeps_quorum_math_right(net: Net) -> None:
    initial = net.genesis.channel(CH).validators
    tracker = ValidatorTracker(initial, channel=CH)
    tracker.schedule(RemoveValidator("service_platform-node"), 20)
    tracker.schedule(AddValidator(NEW_NODE), 30)
    tracker.schedule(
        AddValidator(NodeInfo("x2-node", "court", _signer("x2").public_key, "http://h:1")), 30
    )
    four, five, six = (tracker.validators_at(h) for h in (20, 29, 30))
    assert (four.n, four.f, four.quorum) == (4, 1, 3)
    assert (five.n, five.f, five.quorum) == (4, 1, 3)  # nothing changes between 20 and 29
    # Q = ceil((n+f+1)/2): with n=6, f=1 this is 4 (two 4-quorums of 6 share 2 > f nodes).
    assert (six.n, six.f, six.quorum) == (6, 1, quorum_size(6)) == (6, 1, 4)
    for vs in (initial, four, six):
        _assert_quorum_math(vs)


def test_late_committed_change_with_earlier_height_is_ordered_by_height(net: Net) -> None:
    tracker = ValidatorTracker(net.genesis.channel(CH).validators, channel=CH)
    tracker.schedule(RemoveValidator("court-node"), 100)
    tracker.schedule(AddValidator(NEW_NODE), 50)  # scheduled later, takes effect earlier
    assert tracker.validators_at(50).n == 6
    assert tracker.validators_at(100).n == 5
    assert "extra-node" in tracker.validators_at(100).by_id
    # A change that would break a later one is refused: removing court-node at 60 leaves
    # the scheduled removal at 100 with nothing to remove.
    with pytest.raises(GovernanceError) as exc:
        tracker.schedule(RemoveValidator("court-node"), 60)
    assert exc.value.reason == "not_applicable"
    assert tracker.validators_at(70).n == 6  # unchanged by the refused change


def test_not_applicable_and_too_early_changes_are_skipped(net: Net) -> None:
    tracker = ValidatorTracker(
        net.genesis.channel(CH).validators,
        channel=CH,
        registry=OrgRegistry.from_genesis(net.genesis, CH),
    )
    present = NodeInfo("court-node", "court", _signer("zz").public_key, "http://h:2")
    txs = [
        _tx(net, net.update(THREE, AddValidator(present), 50), 0),  # already a validator
        _tx(net, net.update(THREE, RemoveValidator("nobody"), 50), 1),  # not a validator
        _tx(net, net.update(THREE, AddValidator(NEW_NODE), 5 + D), 2),  # too early at h=5
        _tx(net, net.update(THREE[:2], AddValidator(NEW_NODE), 50), 3),  # 2 of 5
    ]
    _feed(tracker, 4)
    assert tracker.observe_block(_block(5, txs)) == ()
    assert tracker.validators_at(10_000) == net.genesis.channel(CH).validators
    ok = net.update(THREE, AddValidator(NEW_NODE), 5 + D + 1)
    assert tracker.observe_block(_block(6, [_tx(net, ok)])) == ()  # 6 + D ≥ eff now
    ok = net.update(THREE, AddValidator(NEW_NODE), 6 + D + 1)
    assert tracker.observe_block(_block(7, [_tx(net, ok)])) == ()  # still too early at h=7
    ok = net.update(THREE, AddValidator(NEW_NODE), 8 + D + 1)
    assert tracker.observe_block(_block(8, [_tx(net, ok)])) == (ok,)
    assert tracker.validators_at(8 + D + 1).n == 6


def test_tracker_refuses_out_of_order_and_foreign_blocks(net: Net) -> None:
    tracker = ValidatorTracker(net.genesis.channel(CH).validators, channel=CH)
    with pytest.raises(GovernanceError) as exc:
        tracker.observe_block(_block(2))
    assert exc.value.reason == "out_of_order"
    tracker.observe_block(_block(1))
    with pytest.raises(GovernanceError) as exc:
        tracker.observe_block(_block(1))
    assert exc.value.reason == "out_of_order"
    with pytest.raises(GovernanceError) as exc:
        tracker.observe_block(_block(2, channel="judicial"))
    assert exc.value.reason == "wrong_channel"
    assert tracker.height == 1


def test_registry_must_keep_up(net: Net) -> None:
    reg = OrgRegistry.from_genesis(net.genesis, CH)
    tracker = ValidatorTracker(net.genesis.channel(CH).validators, channel=CH, registry=reg)
    _feed(tracker, D)
    with pytest.raises(GovernanceError) as exc:
        tracker.observe_block(_block(D + 1))
    assert exc.value.reason == "registry_behind"


def test_schedule_inside_window_refused(net: Net) -> None:
    tracker = ValidatorTracker(net.genesis.channel(CH).validators, channel=CH)
    tracker.advance(10)
    with pytest.raises(GovernanceError) as exc:
        tracker.schedule(AddValidator(NEW_NODE), 10 + D)
    assert exc.value.reason == "too_early"
    assert tracker.final_through == 10 + D


# --------------------------------------------------------------------------- permissions


def test_set_permissions_from_effective_height(net: Net) -> None:
    cfg = net.genesis.channel(CH)
    tracker = PermissionTracker(cfg, registry=OrgRegistry.from_genesis(net.genesis, CH))
    submit = dict(cfg.submit)
    submit["lender_admit"] = frozenset({"bureau", "court"})
    perms = Permissions(submit, cfg.read, cfg.scoped_read - {"lender"})
    upd = net.update(THREE, SetPermissions(perms), 12)
    assert tracker.observe_block(_block(1, [_tx(net, upd)])) == (upd,)
    assert not tracker.permissions_at(11).may_submit("lender_admit", "court")
    assert tracker.permissions_at(12).may_submit("lender_admit", "court")
    assert tracker.permissions_at(11).read_access("lender") == "scoped"
    assert tracker.permissions_at(12).read_access("lender") == "none"


def test_set_permissions_that_locks_out_governance_is_not_applicable(net: Net) -> None:
    cfg = net.genesis.channel(CH)
    tracker = PermissionTracker(cfg)
    submit = {t: r for t, r in cfg.submit.items() if t != CONFIG_UPDATE}
    with pytest.raises(GovernanceError, match="config_update"):
        tracker.check_schedule(SetPermissions(Permissions(submit, cfg.read, cfg.scoped_read)), 50)
    bad_type = {**cfg.submit, "anchor": frozenset({"court"})}  # a judicial type
    with pytest.raises(GovernanceError, match="anchor"):
        tracker.check_schedule(SetPermissions(Permissions(bad_type, cfg.read, cfg.scoped_read)), 50)


# --------------------------------------------------------------------------- bundle + wire


def test_channel_governance_bundle(net: Net) -> None:
    gov = ChannelGovernance(net.genesis, CH)
    new = _signer("org-bureau-2")
    rotate = net.update(THREE, RotateKey("bureau", new.public_key), 30)
    add = net.update(THREE, AddValidator(NEW_NODE), 40)
    gov.check(rotate, 1)
    gov.check(add, 1)
    junk = _tx(net, rotate, 9)
    junk = Transaction(
        junk.network, CH, CONFIG_UPDATE, "bureau", junk.public_key, 9, 0, {"change": 1}
    ).signed(net.org_keys["bureau"])
    assert gov.observe_block(_block(1, [_tx(net, add, 0), junk, _tx(net, rotate, 1)])) == (
        add,
        rotate,
    )
    _feed_gov(gov, 35)
    assert gov.validators_at(40).n == 6 and gov.validators_at(39).n == 5
    assert gov.key_active_at("bureau", new.public_key, 30)
    assert not gov.key_active_at("bureau", net.org_keys["bureau"].public_key, 30)
    # After the rotation, an approval by the bureau's old key no longer counts.
    late = net.update(THREE, RemoveValidator("court-node"), 36 + D + 5)
    with pytest.raises(GovernanceError) as exc:
        gov.check(late, 36)
    assert exc.value.reason == "revoked_key"


def _feed_gov(gov: ChannelGovernance, upto: int) -> None:
    for h in range(gov.height + 1, upto + 1):
        gov.observe_block(_block(h))


CHANGES: list[Change] = [
    AddValidator(NEW_NODE),
    RemoveValidator("court-node"),
    SetPermissions(
        Permissions(
            {"loan_event": frozenset({"lender"}), CONFIG_UPDATE: frozenset({"bureau"})},
            frozenset({"bureau", "court"}),
            frozenset({"lender"}),
        )
    ),
    RegisterOrg(Organisation("lender-z", "Z 公司", "lender", (OrgKey(b"\7" * 32),))),
    RotateKey("court", b"\x08" * 32),
    RevokeKey("court", b"\x09" * 32),
]


@pytest.mark.parametrize("change", CHANGES, ids=lambda c: c.kind)
def test_change_wire_round_trip(change: Change) -> None:
    upd = ConfigUpdate(change, 99, (Approval("bureau", b"\1" * 64),))
    again = ConfigUpdate.from_payload(decode(encode(upd.to_payload())))
    assert again == upd
    assert encode(again.to_payload()) == encode(upd.to_payload())


@pytest.mark.parametrize(
    "wire",
    [
        {"kind": "mint"},
        {"kind": "remove_validator", "node_id": "Bad Id"},
        {"kind": "remove_validator", "node_id": "x", "extra": 1},
        {"kind": "rotate_key", "org": "court", "pk": b"short"},
        {"kind": "set_permissions", "submit": {}, "read": ["court", "bureau"], "scoped_read": []},
        {"kind": "set_permissions", "submit": {"x": ["pirate"]}, "read": [], "scoped_read": []},
        {"kind": "register_org", "org": {"id": "a", "name": "A", "role": "king", "keys": []}},
        {"kind": "add_validator", "node": {"id": "n", "org": "o", "pk": b"\1" * 32, "addr": "x"}},
    ],
)
def test_malformed_change_wire(wire: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        change_from_wire(wire)
