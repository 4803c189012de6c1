"""Governance: configuration changes approved by m of n institutions, and the trackers
that say which validators, keys and permissions hold at each height.

**Changes.** :class:`AddValidator`, :class:`RemoveValidator`, :class:`SetPermissions`,
:class:`RegisterOrg`, :class:`RotateKey`, :class:`RevokeKey`. Each is bound to one
channel and takes effect on that channel from an ``effective_height`` on. Channels are
ordered independently, so org and key changes are *per channel*: to rotate a key
network-wide, the (separately approved) change is committed on each channel.

**Approvals.** An approval is ``[org_id, signature]``: an ed25519 signature under
:data:`ledger.hashing.TAG_GOVERNANCE` by a key of an *institution* org, active at the
height where the change is committed, over::

    encode({"net": genesis_hash, "ch": channel, "change": change.to_wire(), "eff": eff})

A change needs approvals from ``governance_threshold`` distinct institutions (3 of 5 in
the local network); any bad approval (unknown org, non-institution, repeated org,
invalid signature, key revoked or not yet valid) refuses the whole change.

**Transport.** A change reaches its channel as a transaction of type
``config_update`` (:data:`ledger.genesis.CONFIG_UPDATE`) with payload
``{"change": <wire>, "eff": <height>, "approvals": [[org_id, sig], ...]}``, committed at
height ``h`` with ``eff > h + CONFIG_ACTIVATION_DELAY`` (the pipelining window: blocks
up to ``h + 8`` may already be in flight under the old configuration; nodes refuse a
configured window above it). The replicas run with it as their
``activation_delay``: a set above the committed height plus one plus the delay (lower,
while a committed ``config_update`` is not applied) is not known yet, and they judge
nothing against it (docs/consensus.md, "Sets not known yet"). The delay is part of the
receipt format (docs/receipts.md, ``h + 8 < eff``).

**Trackers.** :class:`ValidatorTracker`, :class:`OrgRegistry` and
:class:`PermissionTracker` are fed every committed block of their channel in order
(:meth:`observe_block`) and answer "what holds at height ``x``" for any ``x`` (the
answer is final for ``x ≤ height + CONFIG_ACTIVATION_DELAY``). Changes are applied in
``(effective_height, commit order)`` order; a change that does not apply at its
effective height (adding a present validator, removing an absent one, reusing a key,
rotating an unknown org's key, revoking a revoked key…) or that fails the approval
check is skipped, identically on every node. Replaying an approved change is therefore
harmless: the second copy no longer applies (``set_permissions`` is idempotent).
:class:`ChannelGovernance` bundles the three for one channel. All of this is pure and
deterministic: no I/O, no clock.

Approval signature checks need an :class:`OrgRegistry`; a tracker built without one
(``registry=None``) trusts committed blocks, which is sound only if the channel rules
never commit a ``config_update`` that :meth:`ChannelGovernance.check` refuses.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, ClassVar, Final, Generic, TypeAlias, TypeVar

from ledger.blocks import Block
from ledger.certificate import Validator, ValidatorSet
from ledger.crypto import ED25519, SignatureScheme, Signer
from ledger.encoding import encode
from ledger.errors import CertificateError, LedgerError, SchemaError
from ledger.genesis import (
    CONFIG_UPDATE,
    SUBMITTER_ROLES,
    TX_TYPES,
    ChannelConfig,
    Genesis,
    Permissions,
)
from ledger.hashing import TAG_GOVERNANCE
from ledger.identity import INSTITUTION_ROLES, ROLES, NodeInfo, Organisation, OrgKey
from ledger.schema import (
    as_map,
    check_keys,
    get_bytes,
    get_int,
    get_list,
    get_str,
    get_str_bytes_pairs,
    is_name,
)

#: ``effective_height`` must exceed the commit height by more than this many blocks.
CONFIG_ACTIVATION_DELAY: Final = 8
#: At most this many approvals in one config_update.
MAX_APPROVALS: Final = 64
MAX_ORG_KEYS: Final = 8


class GovernanceError(LedgerError):
    """A configuration change or its approvals are not acceptable.

    ``reason`` is a short machine-readable word: ``too_few``, ``duplicate_org``,
    ``unknown_org``, ``not_institution``, ``bad_signature``, ``revoked_key``,
    ``key_not_yet_valid``, ``too_early``, ``not_applicable``, ``out_of_order``,
    ``wrong_channel``, ``registry_behind``, ``too_many``.
    """

    code = "bad_governance"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# ---------------------------------------------------------------------------------
# Changes


@dataclass(frozen=True)
class AddValidator:
    """Append ``node`` to the channel's validator set (it becomes the last primary)."""

    node: NodeInfo
    kind: ClassVar[str] = "add_validator"

    def to_wire(self) -> dict[str, Any]:
        n = self.node
        return {
            "kind": self.kind,
            "node": {"id": n.node_id, "org": n.org_id, "pk": n.public_key, "addr": n.address},
        }


@dataclass(frozen=True)
class RemoveValidator:
    node_id: str
    kind: ClassVar[str] = "remove_validator"

    def to_wire(self) -> dict[str, Any]:
        return {"kind": self.kind, "node_id": self.node_id}


@dataclass(frozen=True)
class SetPermissions:
    """Replace the channel's submit/read permissions."""

    permissions: Permissions
    kind: ClassVar[str] = "set_permissions"

    def to_wire(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.permissions.to_document()}


@dataclass(frozen=True)
class RegisterOrg:
    """Register a new organisation; its keys are valid from the effective height on
    (``valid_from``/``revoked_at`` of ``org.keys`` are ignored)."""

    org: Organisation
    kind: ClassVar[str] = "register_org"

    def to_wire(self) -> dict[str, Any]:
        o = self.org
        return {
            "kind": self.kind,
            "org": {
                "id": o.org_id,
                "name": o.name,
                "role": o.role,
                "keys": [k.public_key for k in o.keys],
            },
        }


@dataclass(frozen=True)
class RotateKey:
    """From the effective height, ``new_public_key`` is the org's only active key."""

    org_id: str
    new_public_key: bytes
    kind: ClassVar[str] = "rotate_key"

    def to_wire(self) -> dict[str, Any]:
        return {"kind": self.kind, "org": self.org_id, "pk": self.new_public_key}


@dataclass(frozen=True)
class RevokeKey:
    """From the effective height, ``public_key`` no longer signs for the org."""

    org_id: str
    public_key: bytes
    kind: ClassVar[str] = "revoke_key"

    def to_wire(self) -> dict[str, Any]:
        return {"kind": self.kind, "org": self.org_id, "pk": self.public_key}


Change: TypeAlias = (
    AddValidator | RemoveValidator | SetPermissions | RegisterOrg | RotateKey | RevokeKey
)


def _role_list(m: dict[str, Any], key: str, allowed: Sequence[str]) -> frozenset[str]:
    raw = get_list(m, key, max_len=len(allowed))
    for r in raw:
        if not isinstance(r, str) or r not in allowed:
            raise SchemaError(f"field {key!r}: unknown role {r!r}")
    if raw != sorted(set(raw)):
        raise SchemaError(f"field {key!r}: roles must be sorted and without duplicates")
    return frozenset(raw)


def change_from_wire(raw: Any) -> Change:
    """Parse a change's wire map. Raises :class:`SchemaError` naming the bad field."""
    m = as_map(raw, "change")
    kind = get_str(m, "kind", max_len=32)
    if kind == AddValidator.kind:
        check_keys(m, frozenset({"kind", "node"}), "add_validator")
        n = as_map(m.get("node"), "node")
        check_keys(n, frozenset({"id", "org", "pk", "addr"}), "node")
        addr = get_str(n, "addr")
        if not addr.startswith(("http://", "https://")):
            raise SchemaError("field 'addr': expected an http(s) URL")
        return AddValidator(
            NodeInfo(
                get_str(n, "id", name=True),
                get_str(n, "org", name=True),
                get_bytes(n, "pk", 32),
                addr,
            )
        )
    if kind == RemoveValidator.kind:
        check_keys(m, frozenset({"kind", "node_id"}), "remove_validator")
        return RemoveValidator(get_str(m, "node_id", name=True))
    if kind == SetPermissions.kind:
        check_keys(m, frozenset({"kind", "submit", "read", "scoped_read"}), "set_permissions")
        sub = as_map(m.get("submit"), "submit")
        submit: dict[str, frozenset[str]] = {}
        for t in sub:
            if not is_name(t):
                raise SchemaError(f"field 'submit': {t!r} is not a valid transaction type")
            submit[t] = _role_list(sub, t, SUBMITTER_ROLES)
        return SetPermissions(
            Permissions(submit, _role_list(m, "read", ROLES), _role_list(m, "scoped_read", ROLES))
        )
    if kind == RegisterOrg.kind:
        check_keys(m, frozenset({"kind", "org"}), "register_org")
        o = as_map(m.get("org"), "org")
        check_keys(o, frozenset({"id", "name", "role", "keys"}), "org")
        role = get_str(o, "role")
        if role not in ROLES:
            raise SchemaError(f"field 'role': unknown role {role!r}")
        keys = get_list(o, "keys", max_len=MAX_ORG_KEYS)
        if not keys:
            raise SchemaError("field 'keys': an org needs at least one key")
        pks = [get_bytes({"k": k}, "k", 32) for k in keys]
        if len(set(pks)) != len(pks):
            raise SchemaError("field 'keys': a key is listed twice")
        name = get_str(o, "name")
        if not name.strip():
            raise SchemaError("field 'name': empty")
        return RegisterOrg(
            Organisation(get_str(o, "id", name=True), name, role, tuple(OrgKey(pk) for pk in pks))
        )
    if kind in (RotateKey.kind, RevokeKey.kind):
        check_keys(m, frozenset({"kind", "org", "pk"}), kind)
        org_id = get_str(m, "org", name=True)
        pk = get_bytes(m, "pk", 32)
        return RotateKey(org_id, pk) if kind == RotateKey.kind else RevokeKey(org_id, pk)
    raise SchemaError(f"field 'kind': unknown change kind {kind!r}")


# ---------------------------------------------------------------------------------
# Approvals and the config_update payload


@dataclass(frozen=True)
class Approval:
    org_id: str
    signature: bytes


def approval_message(network: bytes, channel: str, change: Change, effective_height: int) -> bytes:
    """The bytes an institution signs (under TAG_GOVERNANCE) to approve ``change``."""
    return encode(
        {"net": network, "ch": channel, "change": change.to_wire(), "eff": effective_height}
    )


def approve(
    org_id: str,
    signer: Signer,
    network: bytes,
    channel: str,
    change: Change,
    effective_height: int,
) -> Approval:
    """Sign an approval of ``change`` on ``channel`` effective at ``effective_height``."""
    msg = approval_message(network, channel, change, effective_height)
    return Approval(org_id, signer.sign(TAG_GOVERNANCE, msg))


@dataclass(frozen=True)
class ConfigUpdate:
    """The payload of a ``config_update`` transaction."""

    change: Change
    effective_height: int
    approvals: tuple[Approval, ...] = field(default=())

    def to_payload(self) -> dict[str, Any]:
        return {
            "change": self.change.to_wire(),
            "eff": self.effective_height,
            "approvals": [[a.org_id, a.signature] for a in self.approvals],
        }

    @staticmethod
    def from_payload(raw: Any) -> ConfigUpdate:
        """Raises :class:`SchemaError` if ``raw`` is not a well-formed payload."""
        m = as_map(raw, "config_update")
        check_keys(m, frozenset({"change", "eff", "approvals"}), "config_update")
        pairs = get_str_bytes_pairs(
            m,
            "approvals",
            max_len=MAX_APPROVALS,
            error="field 'approvals': each must be [org_id, signature]",
        )
        return ConfigUpdate(
            change_from_wire(m.get("change")),
            get_int(m, "eff", lo=1),
            tuple(Approval(org, sig) for org, sig in pairs),
        )


def config_updates(block: Block) -> Iterator[ConfigUpdate]:
    """The well-formed ``config_update`` payloads in ``block``, in order (malformed ones
    are skipped: they cannot have passed the channel rules)."""
    for tx in block.transactions:
        if tx.type != CONFIG_UPDATE:
            continue
        try:
            yield ConfigUpdate.from_payload(tx.payload)
        except LedgerError:
            continue


def check_activation(effective_height: int, commit_height: int) -> None:
    """Raise :class:`GovernanceError` unless ``effective_height`` is far enough ahead."""
    if effective_height <= commit_height + CONFIG_ACTIVATION_DELAY:
        raise GovernanceError(
            f"effective height {effective_height} must be greater than "
            f"{commit_height} + {CONFIG_ACTIVATION_DELAY} (commit height + activation delay)",
            reason="too_early",
        )


def check_approvals(
    authority: Genesis | OrgRegistry,
    channel: str,
    change: Change,
    effective_height: int,
    approvals: Sequence[Approval],
    at_height: int,
    *,
    scheme: SignatureScheme | None = None,
) -> None:
    """Check that ``approvals`` approve ``change`` by enough institutions.

    ``authority`` gives the network id, the threshold and the orgs with their keys at
    ``at_height`` (the commit height); a :class:`Genesis` means "no changes since
    genesis". Raises :class:`GovernanceError` (``reason`` says why) if any approval is
    by an unknown org, a non-institution, an org already counted, has a signature that
    verifies under none of the org's keys, or was made with a key not active at
    ``at_height``; or if fewer than the threshold approve. Returns ``None`` on success.
    """
    registry = (
        authority if isinstance(authority, OrgRegistry) else OrgRegistry.from_genesis(authority)
    )
    scheme = scheme if scheme is not None else registry.scheme
    if len(approvals) > MAX_APPROVALS:
        raise GovernanceError(f"more than {MAX_APPROVALS} approvals", reason="too_many")
    msg = approval_message(registry.network, channel, change, effective_height)
    orgs = registry.orgs_at(at_height)
    seen: set[str] = set()
    for a in approvals:
        if a.org_id in seen:
            raise GovernanceError(f"org {a.org_id!r} approved twice", reason="duplicate_org")
        seen.add(a.org_id)
        org = orgs.get(a.org_id)
        if org is None:
            raise GovernanceError(
                f"approval by unknown org {a.org_id!r} at height {at_height}", reason="unknown_org"
            )
        if not org.is_institution:
            raise GovernanceError(
                f"org {a.org_id!r} is a {org.role}, not an institution; it cannot approve",
                reason="not_institution",
            )
        key = _signing_key(org, scheme, msg, a.signature)
        if key is None:
            # A key scheduled to become valid later is known only to the latest state.
            latest = registry.latest_orgs().get(a.org_id)
            key = _signing_key(latest, scheme, msg, a.signature) if latest else None
        if key is None:
            raise GovernanceError(
                f"approval by {a.org_id!r} has an invalid signature", reason="bad_signature"
            )
        if not key.active_at(at_height):
            if key.valid_from > at_height:
                raise GovernanceError(
                    f"approval by {a.org_id!r} uses a key valid only from height "
                    f"{key.valid_from} (now {at_height})",
                    reason="key_not_yet_valid",
                )
            raise GovernanceError(
                f"approval by {a.org_id!r} uses a key revoked at height {key.revoked_at}",
                reason="revoked_key",
            )
    if len(seen) < registry.threshold:
        raise GovernanceError(
            f"{len(seen)} approval(s); {registry.threshold} institutions must approve",
            reason="too_few",
        )


def _signing_key(
    org: Organisation, scheme: SignatureScheme, msg: bytes, signature: bytes
) -> OrgKey | None:
    for k in org.keys:
        if scheme.verify(k.public_key, TAG_GOVERNANCE, msg, signature):
            return k
    return None


# ---------------------------------------------------------------------------------
# Trackers

S = TypeVar("S")


def _not_applicable(message: str) -> GovernanceError:
    return GovernanceError(message, reason="not_applicable")


class _Tracker(Generic[S]):
    """A state that changes at effective heights; answers ``state_at(height)``."""

    handles: ClassVar[tuple[type, ...]] = ()

    def __init__(
        self,
        initial: S,
        *,
        channel: str | None,
        start_height: int,
        registry: OrgRegistry | None,
    ) -> None:
        self._initial = initial
        self._pending: list[tuple[int, int, Change]] = []
        self._seq = 0
        self._effs: list[int] = [0]
        self._states: list[S] = [initial]
        self.channel = channel
        #: Height of the last block observed.
        self.height = start_height
        self._registry = registry

    # subclasses implement
    def _apply(self, state: S, change: Change, eff: int) -> S:
        raise NotImplementedError

    @property
    def final_through(self) -> int:
        """Answers for heights up to this one can no longer change."""
        return self.height + CONFIG_ACTIVATION_DELAY

    def _state_at(self, height: int) -> S:
        return self._states[max(bisect_right(self._effs, height) - 1, 0)]

    def _timeline(self, pending: list[tuple[int, int, Change]]) -> tuple[list[int], list[S]]:
        effs, states = [0], [self._initial]
        state = self._initial
        for eff, _seq, change in pending:
            state = self._apply(state, change, eff)
            if effs[-1] == eff:
                states[-1] = state
            else:
                effs.append(eff)
                states.append(state)
        return effs, states

    def _with(
        self, change: Change, eff: int
    ) -> tuple[list[tuple[int, int, Change]], list[int], list[S]]:
        if not isinstance(change, self.handles):
            raise _not_applicable(f"{type(self).__name__} does not handle {change.kind}")
        if eff <= self.height + CONFIG_ACTIVATION_DELAY:
            raise GovernanceError(
                f"effective height {eff} is within the activation window "
                f"(last block {self.height} + {CONFIG_ACTIVATION_DELAY})",
                reason="too_early",
            )
        pending = sorted([*self._pending, (eff, self._seq, change)], key=lambda p: (p[0], p[1]))
        effs, states = self._timeline(pending)
        return pending, effs, states

    def check_schedule(self, change: Change, eff: int) -> None:
        """Raise :class:`GovernanceError` unless ``change`` would apply at ``eff`` (and
        every change already scheduled after it would still apply)."""
        self._with(change, eff)

    def schedule(self, change: Change, eff: int) -> None:
        """Schedule ``change`` from height ``eff`` on. Raises :class:`GovernanceError`
        (and changes nothing) if it does not apply. No approval check: see
        :meth:`observe_block`."""
        pending, effs, states = self._with(change, eff)
        self._pending, self._effs, self._states = pending, effs, states
        self._seq += 1

    def _begin_block(self, block: Block) -> None:
        if self.channel is not None and block.header.channel != self.channel:
            raise GovernanceError(
                f"block of channel {block.header.channel!r} fed to the {self.channel!r} tracker",
                reason="wrong_channel",
            )
        if block.height != self.height + 1:
            raise GovernanceError(
                f"expected block {self.height + 1}, got block {block.height}",
                reason="out_of_order",
            )
        reg = self._registry
        if reg is not None and reg is not self and reg.final_through < block.height:
            raise GovernanceError(
                f"org registry has seen blocks up to {reg.height} only; "
                f"feed it before checking approvals at height {block.height}",
                reason="registry_behind",
            )

    def observe_block(self, block: Block) -> tuple[ConfigUpdate, ...]:
        """Apply the committed ``block`` (the next one, in order): schedule the changes
        of its ``config_update`` transactions that this tracker handles, skipping any
        that are too early, not approved (when the tracker has a registry) or not
        applicable. Returns the updates scheduled. Raises :class:`GovernanceError` only
        for a block out of order or of another channel (then nothing changes)."""
        return tuple(u for _, u in self._observe(block))

    def _observe(self, block: Block) -> list[tuple[int, ConfigUpdate]]:
        self._begin_block(block)
        channel = block.header.channel
        applied: list[tuple[int, ConfigUpdate]] = []
        for index, update in enumerate(config_updates(block)):
            if not isinstance(update.change, self.handles):
                continue
            try:
                check_activation(update.effective_height, block.height)
                if self._registry is not None:
                    check_approvals(
                        self._registry,
                        channel,
                        update.change,
                        update.effective_height,
                        update.approvals,
                        block.height,
                    )
                self.schedule(update.change, update.effective_height)
            except LedgerError:
                continue
            applied.append((index, update))
        self.height = block.height
        return applied

    def advance(self, height: int) -> None:
        """Declare that blocks ``self.height+1 .. height`` hold no ``config_update``
        (e.g. known from the store's index) without feeding them."""
        if height < self.height:
            raise GovernanceError(
                f"cannot go back from height {self.height} to {height}", reason="out_of_order"
            )
        self.height = height


@dataclass(frozen=True)
class _ValidatorState:
    validators: ValidatorSet
    nodes: Mapping[str, NodeInfo] = field(hash=False)


class ValidatorTracker(_Tracker[_ValidatorState]):
    """The channel's validator set at each height (``add_validator``/``remove_validator``).

    ``registry`` (optional) verifies approvals of observed changes; without it committed
    blocks are trusted. ``nodes`` supplies addresses of the initial validators.
    """

    handles = (AddValidator, RemoveValidator)

    def __init__(
        self,
        initial: ValidatorSet,
        *,
        channel: str | None = None,
        nodes: Iterable[NodeInfo] = (),
        registry: OrgRegistry | None = None,
        start_height: int = 0,
    ) -> None:
        known = {n.node_id: n for n in nodes}
        infos = {v.node_id: known[v.node_id] for v in initial.validators if v.node_id in known}
        super().__init__(
            _ValidatorState(initial, infos),
            channel=channel,
            start_height=start_height,
            registry=registry,
        )

    def validators_at(self, height: int) -> ValidatorSet:
        """The validator set that certifies the block at ``height``."""
        return self._state_at(height).validators

    def node_info(self, node_id: str, height: int) -> NodeInfo | None:
        """Address and key of validator ``node_id`` at ``height`` (None if unknown)."""
        return self._state_at(height).nodes.get(node_id)

    def _apply(self, state: _ValidatorState, change: Change, eff: int) -> _ValidatorState:
        vs = state.validators
        if isinstance(change, AddValidator):
            node = change.node
            if node.node_id in vs.by_id:
                raise _not_applicable(f"{node.node_id!r} is already a validator at height {eff}")
            if any(v.public_key == node.public_key for v in vs.validators):
                raise _not_applicable(f"{node.node_id!r} reuses a validator's public key")
            new = ValidatorSet((*vs.validators, Validator(node.node_id, node.public_key)))
            return _ValidatorState(new, {**state.nodes, node.node_id: node})
        if isinstance(change, RemoveValidator):
            if change.node_id not in vs.by_id:
                raise _not_applicable(f"{change.node_id!r} is not a validator at height {eff}")
            rest = tuple(v for v in vs.validators if v.node_id != change.node_id)
            if not rest:
                raise _not_applicable("cannot remove the last validator")
            try:
                new = ValidatorSet(rest)
            except CertificateError as exc:  # pragma: no cover - subset of a valid set
                raise _not_applicable(str(exc)) from None
            nodes = {k: v for k, v in state.nodes.items() if k != change.node_id}
            return _ValidatorState(new, nodes)
        raise _not_applicable(f"not a validator change: {change.kind}")


class OrgRegistry(_Tracker[Mapping[str, Organisation]]):
    """Organisations and their keys at each height, for one channel's history
    (``register_org``/``rotate_key``/``revoke_key``). Also the approval authority:
    ``network`` (genesis hash), ``threshold`` (m of the institutions) and ``scheme``.

    By default (``verify=True``) the registry checks approvals of the changes it
    observes against itself.
    """

    handles = (RegisterOrg, RotateKey, RevokeKey)

    def __init__(
        self,
        orgs: Iterable[Organisation],
        *,
        network: bytes,
        threshold: int,
        channel: str | None = None,
        reserved_ids: Iterable[str] = (),
        start_height: int = 0,
        verify: bool = True,
        scheme: SignatureScheme = ED25519,
    ) -> None:
        initial = {o.org_id: o for o in orgs}
        super().__init__(initial, channel=channel, start_height=start_height, registry=None)
        if verify:
            self._registry = self
        self.network = network
        self.threshold = threshold
        self.scheme = scheme
        self._reserved = frozenset(reserved_ids)

    @staticmethod
    def from_genesis(
        genesis: Genesis, channel: str | None = None, *, scheme: SignatureScheme = ED25519
    ) -> OrgRegistry:
        return OrgRegistry(
            genesis.orgs,
            network=genesis.hash,
            threshold=genesis.governance_threshold,
            channel=channel,
            reserved_ids=[n.node_id for n in genesis.nodes],
            scheme=scheme,
        )

    def orgs_at(self, height: int) -> Mapping[str, Organisation]:
        """Every org registered at ``height``; keys carry their validity intervals."""
        return MappingProxyType(self._state_at(height))

    def latest_orgs(self) -> Mapping[str, Organisation]:
        """Every org as of the last scheduled change (keys carry validity intervals)."""
        return MappingProxyType(self._states[-1])

    def org_at(self, org_id: str, height: int) -> Organisation | None:
        return self._state_at(height).get(org_id)

    def key_active_at(self, org_id: str, public_key: bytes, height: int) -> bool:
        """True iff ``public_key`` signs for ``org_id`` at ``height``."""
        org = self.org_at(org_id, height)
        return org is not None and org.key_active_at(public_key, height)

    def institutions_at(self, height: int) -> tuple[str, ...]:
        return tuple(o.org_id for o in self._state_at(height).values() if o.is_institution)

    def _apply(
        self, state: Mapping[str, Organisation], change: Change, eff: int
    ) -> Mapping[str, Organisation]:
        used = {k.public_key for o in state.values() for k in o.keys}
        if isinstance(change, RegisterOrg):
            new = change.org
            if new.org_id in state or new.org_id in self._reserved:
                raise _not_applicable(f"org id {new.org_id!r} is already taken")
            if any(k.public_key in used for k in new.keys):
                raise _not_applicable(f"org {new.org_id!r} reuses a registered public key")
            new_keys = tuple(OrgKey(k.public_key, eff) for k in new.keys)
            return {**state, new.org_id: replace(new, keys=new_keys)}
        if not isinstance(change, RotateKey | RevokeKey):
            raise _not_applicable(f"not an org change: {change.kind}")
        org = state.get(change.org_id)
        if org is None:
            raise _not_applicable(f"unknown org {change.org_id!r} at height {eff}")
        if isinstance(change, RotateKey):
            if change.new_public_key in used:
                raise _not_applicable("the new key is already registered")
            keys = tuple(_revoked(k, eff) for k in org.keys)
            new_org = replace(org, keys=(*keys, OrgKey(change.new_public_key, eff)))
            return {**state, org.org_id: new_org}
        key = org.find_key(change.public_key)
        if key is None:
            raise _not_applicable(f"the key is not a key of {org.org_id!r}")
        if key.revoked_at is not None and key.revoked_at <= eff:
            raise _not_applicable(f"the key was already revoked at height {key.revoked_at}")
        keys = tuple(_revoked(k, eff) if k.public_key == change.public_key else k for k in org.keys)
        return {**state, org.org_id: replace(org, keys=keys)}


def _revoked(key: OrgKey, eff: int) -> OrgKey:
    """``key`` revoked from ``eff`` on (unchanged if already revoked by then)."""
    if key.revoked_at is not None and key.revoked_at <= eff:
        return key
    return OrgKey(key.public_key, key.valid_from, max(eff, key.valid_from))


class PermissionTracker(_Tracker[Permissions]):
    """The channel's submit/read permissions at each height (``set_permissions``)."""

    handles = (SetPermissions,)

    def __init__(
        self,
        initial: ChannelConfig,
        *,
        registry: OrgRegistry | None = None,
        start_height: int = 0,
    ) -> None:
        super().__init__(
            initial.permissions,
            channel=initial.channel_id,
            start_height=start_height,
            registry=registry,
        )

    def permissions_at(self, height: int) -> Permissions:
        return self._state_at(height)

    def _apply(self, state: Permissions, change: Change, eff: int) -> Permissions:
        if not isinstance(change, SetPermissions):
            raise _not_applicable(f"not a permissions change: {change.kind}")
        p = change.permissions
        channel = self.channel or ""
        unknown = sorted(set(p.submit) - TX_TYPES.get(channel, frozenset()))
        if unknown:
            raise _not_applicable(f"unknown transaction type(s) for {channel!r}: {unknown}")
        if not p.submit.get(CONFIG_UPDATE, frozenset()) & set(INSTITUTION_ROLES):
            raise _not_applicable("config_update must stay submittable by an institution")
        if p.read & p.scoped_read:
            raise _not_applicable("a role cannot be in both read and scoped_read")
        return p


class ChannelGovernance:
    """One channel's configuration over time: org registry, validators, permissions.

    Feed it every committed block of the channel, in order (:meth:`observe_block`); use
    :meth:`check` to validate a ``config_update`` about to be committed.
    """

    def __init__(
        self, genesis: Genesis, channel: str, *, scheme: SignatureScheme = ED25519
    ) -> None:
        cfg = genesis.channel(channel)
        self.channel = channel
        self.registry = OrgRegistry.from_genesis(genesis, channel, scheme=scheme)
        self.validators = ValidatorTracker(
            cfg.validators, channel=channel, nodes=genesis.nodes, registry=self.registry
        )
        self.permissions = PermissionTracker(cfg, registry=self.registry)

    @property
    def height(self) -> int:
        return self.registry.height

    def _tracker(self, change: Change) -> _Tracker[Any]:
        for t in (self.registry, self.validators, self.permissions):
            if isinstance(change, t.handles):
                return t
        raise _not_applicable(f"unknown change kind {change.kind}")  # pragma: no cover

    def check(self, update: ConfigUpdate, commit_height: int) -> None:
        """Raise :class:`GovernanceError` unless ``update``, committed at
        ``commit_height``, would take effect: activation delay, approvals, applicability."""
        check_activation(update.effective_height, commit_height)
        check_approvals(
            self.registry,
            self.channel,
            update.change,
            update.effective_height,
            update.approvals,
            commit_height,
        )
        self._tracker(update.change).check_schedule(update.change, update.effective_height)

    def observe_block(self, block: Block) -> tuple[ConfigUpdate, ...]:
        """Feed the next committed block to all three trackers; returns the updates
        scheduled, in block order."""
        for t in (self.registry, self.validators, self.permissions):
            t._begin_block(block)  # refuse a wrong block before changing anything
        done = (
            self.registry._observe(block)
            + self.validators._observe(block)
            + self.permissions._observe(block)
        )
        return tuple(u for _, u in sorted(done, key=lambda iu: iu[0]))

    def advance(self, height: int) -> None:
        """Declare blocks up to ``height`` free of ``config_update`` (see
        :meth:`ValidatorTracker.advance`)."""
        for t in (self.registry, self.validators, self.permissions):
            t.advance(height)

    def validators_at(self, height: int) -> ValidatorSet:
        return self.validators.validators_at(height)

    def key_active_at(self, org_id: str, public_key: bytes, height: int) -> bool:
        return self.registry.key_active_at(org_id, public_key, height)

    def permissions_at(self, height: int) -> Permissions:
        return self.permissions.permissions_at(height)
