"""Identities: roles, channels, organisations with their (rotating) keys, and nodes.

An *organisation* is a party that signs: the five institutions, each lender, court
clerks, auditors. It has one role from :data:`ROLES` and a history of public keys;
each :class:`OrgKey` is valid over the half-open height interval
``[valid_from, revoked_at)`` on the channel whose history it belongs to (key rotation
and revocation are governance changes, see :mod:`ledger.governance`). A *node* is a
server run by an organisation; validators are nodes.

These are plain frozen values: no I/O, no validation beyond what the type says (the
genesis loader and the governance rules check what comes from outside).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: Every role an organisation can have. The first five are the institutions.
ROLES: Final = (
    "bureau",
    "court",
    "risk_centre",
    "credit_agency",
    "service_platform",
    "lender",
    "clerk",
    "auditor",
)
#: The institutions: each runs a node and approves governance changes (m of n).
INSTITUTION_ROLES: Final = ROLES[:5]

#: The five channel ledgers (one per chain).
CHANNELS: Final = ("supervision", "judicial", "risk", "credit", "service")

#: Which institution runs which chain (the channel's "home" institution).
CHANNEL_OPERATOR: Final = {
    "supervision": "bureau",
    "judicial": "court",
    "risk": "risk_centre",
    "credit": "credit_agency",
    "service": "service_platform",
}


@dataclass(frozen=True)
class OrgKey:
    """One public key of an organisation, valid on heights ``[valid_from, revoked_at)``."""

    public_key: bytes
    valid_from: int = 0
    revoked_at: int | None = None

    def active_at(self, height: int) -> bool:
        """True iff the key may sign at ``height``."""
        return self.valid_from <= height and (self.revoked_at is None or height < self.revoked_at)


@dataclass(frozen=True)
class Organisation:
    org_id: str
    name: str
    role: str
    keys: tuple[OrgKey, ...]

    @property
    def is_institution(self) -> bool:
        return self.role in INSTITUTION_ROLES

    def key_active_at(self, public_key: bytes, height: int) -> bool:
        """True iff ``public_key`` is one of this organisation's keys, active at ``height``."""
        return any(k.public_key == public_key and k.active_at(height) for k in self.keys)

    def active_keys(self, height: int) -> tuple[OrgKey, ...]:
        return tuple(k for k in self.keys if k.active_at(height))

    def find_key(self, public_key: bytes) -> OrgKey | None:
        for k in self.keys:
            if k.public_key == public_key:
                return k
        return None


@dataclass(frozen=True)
class NodeInfo:
    """A node: its id, the organisation running it, its signing key and its HTTP address."""

    node_id: str
    org_id: str
    public_key: bytes
    address: str
