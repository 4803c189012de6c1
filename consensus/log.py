"""Per-height slots of the current view: the proposal and the vote tallies.

A :class:`Slot` exists only for heights inside the window of the current view (the
replica clears every slot when the view changes), and holds at most one PREPARE and
one COMMIT per validator, so the log is bounded by ``W × n`` votes.
"""

from __future__ import annotations

from consensus.messages import Commit, Prepare, PrePrepare


class Slot:
    """One height in the current view."""

    __slots__ = (
        "commits",
        "endorsed",
        "height",
        "prepared",
        "prepares",
        "preprepare",
        "reported",
        "sent_commit",
    )

    def __init__(self, height: int) -> None:
        self.height = height
        self.preprepare: PrePrepare | None = None
        #: First PREPARE / COMMIT seen from each sender (a second, different one is
        #: evidence of a double vote and is not counted).
        self.prepares: dict[str, Prepare] = {}
        self.commits: dict[str, Commit] = {}
        #: This replica sent its PREPARE for the slot's proposal.
        self.endorsed = False
        #: The slot's proposal gathered a quorum of PREPAREs (certificate kept).
        self.prepared = False
        self.sent_commit = False
        #: (sender, kind) pairs already reported as double votes.
        self.reported: set[tuple[str, str]] = set()

    @property
    def block_hash(self) -> bytes | None:
        return self.preprepare.block_hash if self.preprepare else None

    def prepares_for(self, block_hash: bytes) -> list[Prepare]:
        """PREPAREs matching ``block_hash``, sorted by sender (deterministic)."""
        return sorted(
            (p for p in self.prepares.values() if p.block_hash == block_hash),
            key=lambda p: p.sender,
        )

    def commits_for(self, block_hash: bytes) -> list[Commit]:
        return sorted(
            (c for c in self.commits.values() if c.block_hash == block_hash),
            key=lambda c: c.sender,
        )

    def commit_hashes(self) -> dict[bytes, int]:
        """How many COMMITs each block hash has in this slot."""
        out: dict[bytes, int] = {}
        for c in self.commits.values():
            out[c.block_hash] = out.get(c.block_hash, 0) + 1
        return out
