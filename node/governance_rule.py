"""The ``config_update`` rule every channel gets from the node.

The channels layer registers ``config_update`` as an extension point (always INVALID
``rule_not_installed`` until installed). The node installs :func:`config_update_tx_type`,
which checks the change against the channel's governance trackers
(:class:`ledger.governance.ChannelGovernance`) as they stand after the previous block:
activation delay, m-of-n institution approvals, and applicability at the effective
height. A VALID ``config_update`` is scheduled by the trackers when the block is
observed (``ChannelService`` feeds every committed block to them), so validator sets,
org keys and permissions change from the effective height on, identically on every
node.

Outcome codes: ``OK`` (result ``{"kind", "effective_height"}``), ``bad_payload`` (not
a config_update payload), ``governance_<reason>`` (:class:`GovernanceError` reasons:
``too_few``, ``bad_signature``, ``too_early``, ``not_applicable`` …), and
``duplicate_change`` when an earlier transaction of the same block already carries the
same change (the trackers apply only the first copy).

Writes: ``gov/<block height>/<change digest>`` per VALID update, so a second copy of a
change within the block is refused (the trackers would skip it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from channels.base import CONFIG_UPDATE, TxType
from channels.context import TxContext
from channels.errors import TxRejected
from ledger.encoding import encode
from ledger.errors import LedgerError
from ledger.governance import ChannelGovernance, ConfigUpdate, GovernanceError

GOV_KEY_PREFIX = b"gov/"


def _parse(raw: dict[str, Any]) -> ConfigUpdate:
    try:
        return ConfigUpdate.from_payload(raw)
    except LedgerError as exc:
        raise TxRejected("bad_payload", f"config_update: {exc}") from None


def config_update_tx_type(
    roles: frozenset[str], governance_of: Callable[[], ChannelGovernance]
) -> TxType:
    """The ``config_update`` transaction type checking against ``governance_of()`` (the
    channel's trackers, which have observed every block below the one being applied)."""

    def parse(raw: dict[str, Any]) -> dict[str, Any]:
        _parse(raw)  # schema only; the state-dependent checks run in apply
        return raw

    def apply(state: Any, payload: dict[str, Any], ctx: TxContext) -> Mapping[str, Any]:
        update = _parse(payload)
        gov = governance_of()
        try:
            gov.check(update, ctx.height)
        except GovernanceError as exc:
            raise TxRejected(f"governance_{exc.reason}", str(exc)) from None
        digest = hashlib.sha256(encode(update.change.to_wire())).digest()[:16]
        key = GOV_KEY_PREFIX + ctx.height.to_bytes(8, "big") + b"/" + digest
        if state.get(key) is not None:
            raise TxRejected(
                "duplicate_change", "the same change is already in this block (first copy wins)"
            )
        state.put_value(key, {"eff": update.effective_height, "i": ctx.tx_index})
        return {"kind": update.change.kind, "effective_height": update.effective_height}

    return TxType(
        CONFIG_UPDATE,
        roles,
        parse,
        apply,
        "A governance change approved by m of n institutions (checked by the node).",
        extension=True,
    )
