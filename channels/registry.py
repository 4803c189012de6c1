"""The five channels' rule sets and the transaction-type → roles table.

``TX_TYPE_ROLES`` is the permission table the genesis's default channel permissions
must equal (``ledger/genesis.py``); ``tests/channels/test_registry.py`` holds the
expected table literally so a change to either is deliberate.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from channels import credit, judicial, risk, service, supervision
from channels.base import ChannelRules

CHANNEL_IDS: Final = ("supervision", "risk", "judicial", "credit", "service")

CHANNEL_RULES: Final[Mapping[str, ChannelRules]] = MappingProxyType(
    {
        "supervision": supervision.RULES,
        "risk": risk.RULES,
        "judicial": judicial.RULES,
        "credit": credit.RULES,
        "service": service.RULES,
    }
)

TX_TYPE_ROLES: Final[Mapping[str, Mapping[str, frozenset[str]]]] = MappingProxyType(
    {ch: MappingProxyType(dict(CHANNEL_RULES[ch].roles())) for ch in CHANNEL_IDS}
)

#: Channels whose rules read another channel's committed facts (a DAG: judicial reads
#: nothing, supervision reads judicial's accepted anchors — its acknowledgement rule —
#: and the others read supervision; so waiting on NotYetCommitted can never deadlock).
READS_FROM: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "supervision": ("judicial",),
        "risk": ("supervision",),
        "judicial": (),
        "credit": ("supervision",),
        "service": ("supervision",),
    }
)


def rules_for(channel: str) -> ChannelRules:
    """The rules of ``channel``; KeyError names the channel if unknown."""
    try:
        return CHANNEL_RULES[channel]
    except KeyError:
        raise KeyError(f"unknown channel {channel!r}") from None
