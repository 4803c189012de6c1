"""Another channel's validator sets over time, followed through certified config blocks.

A light client (the court's of the supervision channel, the supervision channel's of
the court channel, an offline receipt verifier) starts from a channel's genesis
validator set and learns every later set from *config steps*: a committed block of
that channel that holds ``config_update`` transactions, given as

* the block header and its commit certificate (checked against the set in force at
  that height, which the history already knows), and
* each ``config_update`` transaction's canonical body bytes with its RFC 9162
  inclusion proof in the header's ``tx_root`` (the tx id is
  ``tagged_hash(TAG_TX, body)``, the tree's leaf data).

The changes are interpreted exactly as :class:`ledger.governance.ValidatorTracker`
does (it does the work here): ``add_validator``/``remove_validator`` changes, skipped
when too early (``eff ≤ h + CONFIG_ACTIVATION_DELAY``) or not applicable, applied in
``(effective height, commit order)``. Approvals are not re-checked: like every light
client, this trusts that a quorum-certified block holds only changes the channel
accepted (the channel's ``validate_tx`` must refuse unapproved ``config_update``
before ordering; see docs/receipts.md "Trust").

Completeness — that no config block was left out — cannot be proven from headers
alone: the anchor relay includes every config transaction of every block, and
receipts list every config step below their height.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final

from ledger.blocks import MAX_TX_PAYLOAD_BYTES, MAX_TXS_PER_BLOCK, Block, BlockHeader, Transaction
from ledger.certificate import CommitCertificate, ValidatorSet, verify_certificate
from ledger.crypto import ED25519, SignatureScheme
from ledger.encoding import decode
from ledger.errors import CertificateError, EncodingError, LedgerError, ProofError, SchemaError
from ledger.genesis import CONFIG_UPDATE
from ledger.governance import (
    ConfigUpdate,
    ValidatorTracker,
    change_from_wire,
    check_activation,
)
from ledger.hashing import TAG_TX, tagged_hash
from ledger.merkle import inclusion_proof, verify_inclusion
from ledger.schema import as_map, check_keys, get_bytes, get_int, get_list, get_str

#: Bounds on what one step may carry.
MAX_CONFIG_TXS: Final = 64
MAX_PROOF_HASHES: Final = 64
MAX_CHANGES: Final = 4096


class ConfigStepError(LedgerError):
    """A config step does not prove what it claims (certificate, proof, order, body)."""

    code = "bad_config_step"


def _proof_from_wire(raw: Any, what: str) -> tuple[bytes, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_PROOF_HASHES:
        raise SchemaError(f"field {what!r}: expected a list of at most {MAX_PROOF_HASHES} hashes")
    for p in raw:
        if not isinstance(p, bytes) or len(p) != 32:
            raise SchemaError(f"field {what!r}: each element must be 32 bytes")
    return tuple(raw)


@dataclass(frozen=True)
class ConfigTxProof:
    """One ``config_update`` transaction of a block: canonical body bytes (the signed
    bytes, without the signature), its index in the block and its tx_root audit path."""

    body: bytes
    index: int
    proof: tuple[bytes, ...]

    @cached_property
    def tx_id(self) -> bytes:
        return tagged_hash(TAG_TX, self.body)

    def to_wire(self) -> dict[str, Any]:
        return {"body": self.body, "i": self.index, "proof": list(self.proof)}

    @staticmethod
    def from_wire(raw: Any) -> ConfigTxProof:
        m = as_map(raw, "config tx")
        check_keys(m, frozenset({"body", "i", "proof"}), "config tx")
        return ConfigTxProof(
            body=get_bytes(m, "body", max_size=MAX_TX_PAYLOAD_BYTES + 1024),
            index=get_int(m, "i", hi=MAX_TXS_PER_BLOCK - 1),
            proof=_proof_from_wire(m.get("proof"), "proof"),
        )

    @staticmethod
    def of(block: Block, index: int) -> ConfigTxProof:
        """The proof for transaction ``index`` of ``block``."""
        tx = block.transactions[index]
        proof = inclusion_proof([t.tx_id for t in block.transactions], index)
        return ConfigTxProof(tx.body_bytes, index, tuple(proof))


def config_tx_proofs(block: Block) -> tuple[ConfigTxProof, ...]:
    """Proofs for every ``config_update`` transaction of ``block``, in block order."""
    return tuple(
        ConfigTxProof.of(block, i) for i, tx in enumerate(block.transactions) if is_config_tx(tx)
    )


def is_config_tx(tx: Transaction) -> bool:
    return tx.type == CONFIG_UPDATE


def verify_config_txs(
    header: BlockHeader, txs: Sequence[ConfigTxProof], channel: str
) -> list[dict[str, Any]]:
    """Check ``txs`` are ``config_update`` transactions of ``channel`` in the block of
    ``header`` (indexes strictly increasing, inclusion in ``tx_root``) and return their
    payload maps. Raises :class:`ConfigStepError` naming the first bad one."""
    if len(txs) > MAX_CONFIG_TXS:
        raise ConfigStepError(f"more than {MAX_CONFIG_TXS} config transactions in one block")
    payloads: list[dict[str, Any]] = []
    last = -1
    for t in txs:
        if t.index <= last:
            raise ConfigStepError("config transactions must be in block order, each once")
        last = t.index
        try:
            verify_inclusion(t.tx_id, t.index, header.tx_count, t.proof, header.tx_root)
        except ProofError as exc:
            raise ConfigStepError(
                f"config transaction {t.index} of block {header.height}: {exc.message}"
            ) from None
        try:
            body = decode(t.body)
        except EncodingError as exc:
            raise ConfigStepError(f"config transaction {t.index}: {exc.message}") from None
        if (
            not isinstance(body, dict)
            or body.get("type") != CONFIG_UPDATE
            or body.get("ch") != channel
            or not isinstance(body.get("p"), dict)
        ):
            raise ConfigStepError(
                f"transaction {t.index} of block {header.height} is not a {channel} config_update"
            )
        payloads.append(body["p"])
    return payloads


@dataclass(frozen=True)
class ConfigStep:
    """A certified block of a channel together with its ``config_update`` transactions."""

    header: BlockHeader
    certificate: CommitCertificate
    txs: tuple[ConfigTxProof, ...]

    @property
    def height(self) -> int:
        return self.header.height

    def to_wire(self) -> dict[str, Any]:
        return {
            "header": self.header.to_wire(),
            "cert": self.certificate.to_wire(),
            "txs": [t.to_wire() for t in self.txs],
        }

    @staticmethod
    def from_wire(raw: Any) -> ConfigStep:
        m = as_map(raw, "config step")
        check_keys(m, frozenset({"header", "cert", "txs"}), "config step")
        return ConfigStep(
            BlockHeader.from_wire(m.get("header")),
            CommitCertificate.from_wire(m.get("cert")),
            tuple(ConfigTxProof.from_wire(t) for t in get_list(m, "txs", max_len=MAX_CONFIG_TXS)),
        )

    @staticmethod
    def of(block: Block, certificate: CommitCertificate) -> ConfigStep | None:
        """The config step of a committed block, or None if it has no config_update."""
        txs = config_tx_proofs(block)
        return ConfigStep(block.header, certificate, txs) if txs else None


@dataclass(frozen=True)
class ValidatorHistory:
    """A channel's validator set at each height, as far as config steps have shown it.

    ``changes`` are the validator changes accepted so far, as
    ``(commit height, effective height, change wire)`` in commit order; ``height`` is
    the height of the last config step observed (0 at genesis). Immutable: the
    ``with_*``/``apply_*`` methods return new histories.
    """

    channel: str
    initial: ValidatorSet
    changes: tuple[tuple[int, int, dict[str, Any]], ...] = field(default=(), hash=False)
    height: int = 0

    @staticmethod
    def genesis(channel: str, validators: ValidatorSet) -> ValidatorHistory:
        return ValidatorHistory(channel, validators)

    @cached_property
    def _tracker(self) -> ValidatorTracker:
        tracker = ValidatorTracker(self.initial, channel=self.channel)
        for commit_height, eff, wire in self.changes:
            tracker.advance(max(commit_height - 1, tracker.height))
            tracker.schedule(change_from_wire(wire), eff)
        tracker.advance(self.height)
        return tracker

    def at(self, height: int) -> ValidatorSet:
        """The validator set that certifies the block at ``height``."""
        return self._tracker.validators_at(height)

    def timeline(self) -> list[tuple[int, ValidatorSet]]:
        """``(from height, set)`` for every distinct set, starting with ``(0, initial)``."""
        heights = sorted({0, *(eff for _, eff, _ in self.changes)})
        out: list[tuple[int, ValidatorSet]] = []
        for h in heights:
            vs = self.at(h)
            if not out or out[-1][1] != vs:
                out.append((h, vs))
        return out

    def with_config(self, height: int, payloads: Sequence[dict[str, Any]]) -> ValidatorHistory:
        """The history after block ``height`` (which must be above :attr:`height`)
        committed the ``config_update`` payloads ``payloads``, in block order.

        Skips, like :class:`ValidatorTracker`, every payload that is malformed, not a
        validator change, too early, or not applicable. Raises
        :class:`ConfigStepError` if ``height`` is not above :attr:`height`.
        """
        if height <= self.height:
            raise ConfigStepError(
                f"config block {height} is not above the last one seen ({self.height})"
            )
        tracker = _copy_tracker(self)  # the cached tracker is shared: mutate a copy
        tracker.advance(height - 1)
        accepted = list(self.changes)
        for payload in payloads:
            try:
                update = ConfigUpdate.from_payload(payload)
            except LedgerError:
                continue
            if not isinstance(update.change, ValidatorTracker.handles):
                continue
            try:
                check_activation(update.effective_height, height)
                tracker.schedule(update.change, update.effective_height)
            except LedgerError:
                continue
            accepted.append((height, update.effective_height, update.change.to_wire()))
        if len(accepted) > MAX_CHANGES:
            raise ConfigStepError(f"more than {MAX_CHANGES} validator changes")
        return ValidatorHistory(self.channel, self.initial, tuple(accepted), height)

    def apply_step(
        self, step: ConfigStep, *, scheme: SignatureScheme = ED25519
    ) -> ValidatorHistory:
        """Verify ``step`` (channel, order, certificate against :meth:`at` its height,
        config transactions in its tx_root) and return the history after it.
        Raises :class:`ConfigStepError`; ``self`` is unchanged."""
        h = step.header
        if h.channel != self.channel:
            raise ConfigStepError(f"config step is a {h.channel} block, not {self.channel}")
        if h.height <= self.height:
            raise ConfigStepError(
                f"config step {h.height} is not above the last one seen ({self.height})"
            )
        try:
            verify_certificate(
                step.certificate,
                channel=self.channel,
                height=h.height,
                block_hash=h.hash,
                validators=self.at(h.height),
                scheme=scheme,
            )
        except CertificateError as exc:
            raise ConfigStepError(f"config block {h.height}: {exc.message}") from None
        payloads = verify_config_txs(h, step.txs, self.channel)
        return self.with_config(h.height, payloads)

    def apply_steps(
        self, steps: Sequence[ConfigStep], *, scheme: SignatureScheme = ED25519
    ) -> ValidatorHistory:
        history = self
        for step in steps:
            history = history.apply_step(step, scheme=scheme)
        return history

    def to_wire(self) -> dict[str, Any]:
        return {
            "ch": self.channel,
            "init": self.initial.to_wire(),
            "changes": [[c, e, w] for c, e, w in self.changes],
            "h": self.height,
        }

    @staticmethod
    def from_wire(raw: Any) -> ValidatorHistory:
        m = as_map(raw, "validator history")
        check_keys(m, frozenset({"ch", "init", "changes", "h"}), "validator history")
        changes = []
        last = 0
        for item in get_list(m, "changes", max_len=MAX_CHANGES):
            if (
                not isinstance(item, list)
                or len(item) != 3
                or not isinstance(item[0], int)
                or not isinstance(item[1], int)
                or isinstance(item[0], bool)
                or isinstance(item[1], bool)
                or item[0] < last
            ):
                raise SchemaError("field 'changes': each must be [commit height, eff, change]")
            change_from_wire(item[2])  # raises SchemaError if malformed
            last = item[0]
            changes.append((item[0], item[1], as_map(item[2], "change")))
        history = ValidatorHistory(
            get_str(m, "ch", name=True),
            ValidatorSet.from_wire(m.get("init")),
            tuple(changes),
            get_int(m, "h"),
        )
        if changes and changes[-1][0] > history.height:
            raise SchemaError("validator history: a change is above the history's height")
        try:
            history._tracker  # noqa: B018 - replay now: refuse a history that does not apply
        except LedgerError as exc:
            raise SchemaError(f"validator history does not replay: {exc.message}") from None
        return history


def _copy_tracker(history: ValidatorHistory) -> ValidatorTracker:
    """A fresh tracker replaying ``history`` (trackers are mutable; the cached one is
    shared by every reader of ``history``)."""
    return ValidatorHistory(
        history.channel, history.initial, history.changes, history.height
    )._tracker
