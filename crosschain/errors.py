"""Errors of the cross-chain layer.

* :class:`AnchorRejected` — the judicial channel's light client refuses an anchor
  transaction. ``code`` is a stable machine word (the rule reports it as the
  transaction's INVALID code); ``reason`` a human sentence.
* :class:`AckRejected` — the supervision channel refuses an evidence acknowledgement.

Both derive from :class:`ledger.errors.LedgerError`, so the HTTP layer and the CLI
treat them like every other bad-input error.

Anchor codes (checked in this order; see :func:`crosschain.light_client.check_anchor`)::

    frozen               the link is frozen by evidence of misbehaviour
    wrong_channel        the anchor is for another source channel
    duplicate_anchor     the height (or leaf chunk) is already anchored
    out_of_sequence      the height (or leaf chunk) is not the next one
    leaves_pending       the previous block's leaves are not all anchored yet
    prev_hash_mismatch   the header does not extend the last anchored header
    header_from_future   the header time is after the judicial block time + drift
    header_too_old       the header time is older than the judicial block time − max lag
    bad_config_proof     a carried config transaction is not in the header's tx_root
    leaves_mismatch      the leaves do not hash to the header's record_root / count
    bad_certificate      the commit certificate does not certify the exact header

Ack codes (in this order; see :func:`crosschain.ack.check_ack`): ``duplicate_ack``,
``out_of_sequence``, ``unknown_block``, ``header_mismatch``, ``wrong_channel``,
``bad_config_step``, ``bad_proof``, ``bad_certificate``, ``anchor_not_accepted`` (the
court chain holds no accepted anchor of the block at the named judicial height and
transaction).
"""

from __future__ import annotations

from ledger.errors import LedgerError


class AnchorRejected(LedgerError):
    """The light client refuses an anchor; ``code`` says why (see module docstring)."""

    code = "anchor_rejected"

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason, code=code)
        self.reason = reason


class AckRejected(LedgerError):
    """The supervision channel refuses an evidence acknowledgement."""

    code = "ack_rejected"

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason, code=code)
        self.reason = reason
