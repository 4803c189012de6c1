"""Outcomes a channel rule can reach besides "valid".

* :class:`TxRejected` — the transaction is deterministically INVALID. Every validator
  reaches the same code for the same (state, transaction, context); the transaction's
  writes are discarded. ``code`` is a stable machine code (snake_case, documented in
  ``docs/channels.md``), ``message`` a human sentence for the sender.
* :class:`NotYetCommitted` — the transaction names a height of another channel that
  this node has not applied yet. This is *not* a verdict on the transaction: the node
  must wait until that channel catches up and apply the block again. A rule never
  turns its own node's lag into INVALID, or validators would disagree.

Anything else escaping a rule is a bug in the rule (or a corrupt store) and must stop
the node rather than let it diverge from the others.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.errors import LedgerError


@dataclass(frozen=True)
class Rejection:
    """Why a transaction is INVALID: a stable machine ``code`` and a human ``message``."""

    code: str
    message: str


class TxRejected(LedgerError):
    """Raised by a rule to mark the transaction INVALID (no writes are kept)."""

    code = "rejected"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)

    @property
    def rejection(self) -> Rejection:
        return Rejection(self.code, self.message)


class NotYetCommitted(LedgerError):
    """The transaction reads ``channel`` at ``height`` but only ``local_height`` is applied.

    The node retries the whole block once ``channel`` has reached ``height``.
    """

    code = "not_yet_committed"

    def __init__(self, channel: str, height: int, local_height: int) -> None:
        super().__init__(
            f"{channel} height {height} is not committed on this node yet "
            f"(applied up to {local_height})"
        )
        self.channel = channel
        self.height = height
        self.local_height = local_height
