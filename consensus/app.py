"""What the replica needs from the layers around it (the channel layer and block store)."""

from __future__ import annotations

from typing import Protocol

from ledger.blocks import Block, Transaction
from ledger.certificate import CommitCertificate, ValidatorSet


class Application(Protocol):
    """The replica's view of the application.

    Contract (the replica relies on it):

    * :meth:`validate_tx` is *stateless* as far as consensus is concerned: schema,
      channel, the sender's role and key. It must not check the client signature (the
      replica does, with its configured scheme) and should give the same answer on
      every replica. ``None`` means acceptable; otherwise a short reason.
    * :meth:`validators_at` answers the validator set in force at ``height`` (≥ 1);
      for heights above what has been applied it answers the latest known set. With
      ``ReplicaConfig.activation_delay = D`` (≥ the window W), a change carried by a
      block at height ``c`` (a transaction of a type in ``config_tx_types``) takes
      effect no earlier than ``c + D + 1``; the replica then judges nothing (verifies,
      counts, blames) against a height's set until the answer is final
      (docs/consensus.md, "Sets not known yet"). Without ``activation_delay`` every
      answer must be final (a fixed schedule).
    * :meth:`state_root_at` answers the state digest after applying block ``height``
      (height 0: the channel's genesis state), or ``None`` if not applied yet. Blocks
      handed out in :attr:`Ready.committed` are applied before
      :meth:`consensus.replica.Replica.advance` is called.
    * :meth:`committed_block` answers a stored committed block with its certificate.
    * :meth:`block_extra` answers what the application keeps beside a committed block
      for nodes that catch up (or ``None``): catch-up answers carry it
      (:attr:`consensus.messages.Blocks.extras`), and the receiving replica hands it to
      its application unchecked (:attr:`consensus.replica.Ready.extras`).
    """

    def validate_tx(self, tx: Transaction) -> str | None: ...

    def validators_at(self, height: int) -> ValidatorSet: ...

    def state_root_at(self, height: int) -> bytes | None: ...

    def committed_block(self, height: int) -> tuple[Block, CommitCertificate] | None: ...

    def block_extra(self, height: int) -> bytes | None: ...
