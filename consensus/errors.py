"""The consensus layer's two kinds of trouble (h11's split).

* A *peer* broke the protocol (a forged proposal, two votes for one slot, a bad
  certificate…): that is :class:`Misbehaviour` evidence. It is reported in
  :attr:`consensus.replica.Ready.evidence`, counted, and never fatal.
* *We* broke an invariant of our own (we were about to sign a vote that conflicts with
  one we signed before, or the caller drove the API wrongly): that raises
  :class:`InternalError`, because continuing could violate safety.

:class:`ProtocolViolation` is the internal exception that validation helpers raise
when a peer's message is wrong; the replica turns it into evidence or a drop counter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from consensus.messages import Message

# Kinds of misbehaviour (the ``kind`` field of :class:`Misbehaviour`).
EQUIVOCATION: Final = "equivocation"  # two signed PRE-PREPAREs for one (view, height)
DOUBLE_VOTE: Final = "double_vote"  # two PREPAREs or COMMITs for one (view, height)
INVALID_PROPOSAL: Final = "invalid_proposal"  # a proposal failing the backup checks
FORGED_TRANSACTION: Final = "forged_transaction"  # a proposal with an invalid client tx
NOT_PRIMARY: Final = "not_primary"  # a PRE-PREPARE from a replica that is not primary
BAD_VIEW_CHANGE: Final = "bad_view_change"  # a signed VIEW-CHANGE whose content is invalid
BAD_NEW_VIEW: Final = "bad_new_view"  # a signed NEW-VIEW that recomputation rejects
BAD_CERTIFICATE: Final = "bad_certificate"  # a BLOCKS answer with a bad certificate/link

#: Not misbehaviour: a proposal refused for a reason an honest primary could have
#: (our clock says it is stale, it repeats a transaction we saw committed). Counted as
#: ``refused.<detail>``, never reported as evidence.
REFUSED: Final = "refused"


class InternalError(AssertionError):
    """Our own invariant was about to break (a bug, or the API driven wrongly).

    Never raised because of anything a peer sent.
    """


class ProtocolViolation(Exception):
    """A peer's message is invalid; ``kind`` is a misbehaviour kind or drop reason."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class NotReady(Exception):
    """A message cannot be judged yet (state not applied, parent not known): buffer it."""


@dataclass(frozen=True)
class Misbehaviour:
    """Evidence that ``offender`` broke the protocol.

    ``proof`` holds the offending signed message(s) when they prove the fault on their
    own (two conflicting signed votes, a signed proposal with a forged transaction).
    """

    offender: str
    kind: str
    view: int
    height: int
    detail: str
    proof: tuple[Message, ...] = ()
