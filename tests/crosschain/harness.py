"""In-memory, really signed supervision and judicial ledgers for the cross-chain tests.

* :class:`Ledger` — one channel: blocks built with ``ledger.blocks.build_block``,
  certified by ed25519 validators (the set in force at each height, followed with
  ``ledger.governance.ValidatorTracker``), and applied to a ``MemoryState`` with the
  channel rules given (``channels.base.apply_block``), so anchors and acks are checked
  by the very rules the node installs.
* :class:`Network` — a supervision and a judicial ledger wired with the anchor and ack
  rules, mempools, and the relay ports over them.

Everything is deterministic from the labels (keys, salts, times).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from channels.base import BlockTx, ChannelRules, TxOutcome, TxType, any_payload, apply_block
from channels.context import (
    NO_CROSS_CHANNEL,
    BlockContext,
    CrossChannelReader,
)
from channels.state import GENESIS_STATE_ROOT, MemoryState
from crosschain.ack import AckRule, AckState, court_anchor_of, read_ack_state
from crosschain.anchor import ANCHOR_TX_TYPE
from crosschain.anchor_rules import (
    AnchorEntry,
    AnchorRule,
    EvidenceEntry,
    read_anchor_entry,
    read_config_steps,
    read_evidence,
    read_light_client,
)
from crosschain.light_client import LightClientState
from crosschain.receipt import TrustRoot
from crosschain.relay import AnchorProgress, RelayConfig, config_steps_of
from crosschain.validator_history import ConfigStep
from ledger.blocks import Block, Transaction, build_block, channel_genesis_hash
from ledger.certificate import CommitCertificate, Validator, ValidatorSet, Vote
from ledger.crypto import Ed25519Signer
from ledger.encoding import encode
from ledger.evidence_code import EvidenceCode
from ledger.governance import AddValidator, ConfigUpdate, RemoveValidator
from ledger.hashing import TAG_COMMIT_VOTE, TAG_RECORD, TAG_STATE, tagged_hash
from ledger.identity import NodeInfo

BASE_MS = 1_700_000_000_000
GENESIS = hashlib.sha256(b"wulian crosschain tests").digest()
NODE_ROLE = "court"  # the relay's org role (an institution)


def signer(label: str) -> Ed25519Signer:
    return Ed25519Signer(hashlib.sha256(f"xc-test/{label}".encode()).digest())


def make_validators(prefix: str, n: int) -> tuple[ValidatorSet, dict[str, Ed25519Signer]]:
    keys = {f"{prefix}{i + 1}": signer(f"{prefix}/{i + 1}") for i in range(n)}
    return ValidatorSet(tuple(Validator(k, s.public_key) for k, s in keys.items())), keys


def certify(
    block: Block,
    vset: ValidatorSet,
    keys: dict[str, Ed25519Signer],
    *,
    voters: Sequence[str] | None = None,
    view: int = 0,
) -> CommitCertificate:
    """A certificate for ``block`` by ``voters`` (default: the first quorum of ``vset``)."""
    names = (
        list(voters) if voters is not None else [v.node_id for v in vset.validators][: vset.quorum]
    )
    bare = CommitCertificate(block.header.channel, block.height, view, block.hash, ())
    msg = bare.message()
    votes = tuple(Vote(n, keys[n].sign(TAG_COMMIT_VOTE, msg)) for n in names)
    return CommitCertificate(bare.channel, bare.height, view, bare.block_hash, votes)


@dataclass(frozen=True)
class RecordRef:
    """A lender's record as the SDK keeps it, and where it landed."""

    record_bytes: bytes
    salt: bytes
    commitment: bytes
    height: int
    leaf_index: int


def noop_rule(name: str, roles: frozenset[str]) -> TxType:
    return TxType(name, roles, any_payload, lambda state, payload, ctx: None, name)


class Ledger:
    """One channel's certified chain plus its rule-applied state."""

    def __init__(
        self,
        channel: str,
        vset: ValidatorSet,
        keys: dict[str, Ed25519Signer],
        rules: ChannelRules,
        roles: dict[str, str],
    ) -> None:
        from ledger.governance import ValidatorTracker

        self.channel = channel
        self.keys = dict(keys)
        self.tracker = ValidatorTracker(vset, channel=channel)
        self.rules = rules
        self.roles = roles
        self.state = MemoryState()
        self.root = GENESIS_STATE_ROOT
        self.blocks: list[tuple[Block, CommitCertificate]] = []
        self.outcomes: dict[bytes, TxOutcome] = {}
        self.mempool: list[Transaction] = []
        self.time_ms = BASE_MS
        #: Validators that sign first when present (so a new member's vote is needed).
        self.prefer: tuple[str, ...] = ()
        #: Other channels' applied state, as the node's rules read it.
        self.cross: CrossChannelReader = NO_CROSS_CHANNEL

    @property
    def height(self) -> int:
        return len(self.blocks)

    def committed_block(self, height: int) -> tuple[Block, CommitCertificate] | None:
        return self.blocks[height - 1] if 1 <= height <= len(self.blocks) else None

    def validators_at(self, height: int) -> ValidatorSet:
        return self.tracker.validators_at(height)

    def next_time(self, time_ms: int | None = None) -> int:
        self.time_ms = time_ms if time_ms is not None else self.time_ms + 1000
        return self.time_ms

    def make_block(self, txs: Sequence[Transaction], time_ms: int) -> Block:
        prev = (
            self.blocks[-1][0].hash if self.blocks else channel_genesis_hash(GENESIS, self.channel)
        )
        return build_block(
            channel=self.channel,
            height=self.height + 1,
            prev_hash=prev,
            transactions=list(txs),
            state_height=self.height,
            state_root=tagged_hash(TAG_STATE, self.root),
            proposer="n1",
            view=0,
            time_ms=time_ms,
        )

    def commit(
        self,
        txs: Sequence[Transaction] | None = None,
        *,
        time_ms: int | None = None,
        voters: Sequence[str] | None = None,
    ) -> tuple[Block, CommitCertificate]:
        """Order ``txs`` (default: the mempool) as the next block, certify and apply it."""
        if txs is None:
            txs, self.mempool = self.mempool, []
        t = self.next_time(time_ms)
        block = self.make_block(txs, t)
        h = block.height
        vset = self.validators_at(h)
        if voters is None and self.prefer:
            ids = [v.node_id for v in vset.validators]
            ordered = [i for i in self.prefer if i in ids] + [
                i for i in ids if i not in self.prefer
            ]
            voters = ordered[: vset.quorum]
        cert = certify(block, vset, self.keys, voters=voters)
        ctx = BlockContext(self.channel, h, t, cross=self.cross)
        result = apply_block(
            self.rules,
            self.state,
            [BlockTx(tx, self.roles.get(tx.sender)) for tx in block.transactions],
            ctx,
            prev_root=self.root,
        )
        self.state.apply_writes(result.writes)
        self.root = result.state_root
        for o in result.outcomes:
            self.outcomes[o.tx_id] = o
        self.blocks.append((block, cert))
        self.tracker.observe_block(block)
        return block, cert

    def code_of(self, tx: Transaction) -> str:
        return self.outcomes[tx.tx_id].code

    def config_steps(self, after: int, below: int) -> list[ConfigStep]:
        return config_steps_of(self.blocks[after : max(below - 1, after)])


def lender_tx(nonce: int, records: list[bytes], *, channel: str = "supervision") -> Transaction:
    s = signer("lender")
    tx = Transaction(
        network=GENESIS,
        channel=channel,
        type="loan_event_batch",
        sender="lender-a",
        public_key=s.public_key,
        nonce=nonce,
        time_ms=BASE_MS + nonce,
        payload={"records": [{"c": c} for c in records], "n": nonce},
    )
    return tx.signed(s)


def config_tx(
    channel: str, change: AddValidator | RemoveValidator, eff: int, nonce: int
) -> Transaction:
    s = signer("bureau")
    tx = Transaction(
        network=GENESIS,
        channel=channel,
        type="config_update",
        sender="bureau",
        public_key=s.public_key,
        nonce=nonce,
        time_ms=BASE_MS + nonce,
        payload=ConfigUpdate(change, eff).to_payload(),
    )
    return tx.signed(s)


def add_validator(node_id: str, key: Ed25519Signer) -> AddValidator:
    return AddValidator(NodeInfo(node_id, "bureau", key.public_key, "http://127.0.0.1:9"))


def make_record(label: str) -> tuple[bytes, bytes, bytes]:
    record = encode({"loan": label, "amount_cents": 100_00, "event": "contract"})
    salt = hashlib.sha256(f"salt/{label}".encode()).digest()
    return record, salt, tagged_hash(TAG_RECORD, salt + record)


@dataclass
class Sink:
    """A relay sink that appends to a ledger's mempool."""

    ledger: Ledger
    submitted: list[Transaction] = field(default_factory=list)

    def submit(self, tx: Transaction) -> None:
        self.submitted.append(tx)
        self.ledger.mempool.append(tx)


class LedgersCross:
    """Cross-channel reads over harness ledgers (``channels.context.CrossChannelReader``)."""

    def __init__(self, *ledgers: Ledger) -> None:
        self._ledgers = {ledger.channel: ledger for ledger in ledgers}

    def committed_height(self, channel: str) -> int:
        return self._ledgers[channel].height

    def facts(self, channel: str) -> MemoryState:
        return self._ledgers[channel].state


class Network:
    """A supervision and a judicial ledger joined by the anchor and ack rules."""

    def __init__(
        self, n_sup: int = 5, n_jud: int = 5, chunk_size: int = 1024, **rule_kw: Any
    ) -> None:
        self.sup_vset, sup_keys = make_validators("s", n_sup)
        self.jud_vset, jud_keys = make_validators("j", n_jud)
        self.trust = TrustRoot(self.jud_vset, self.sup_vset)
        roles = {"court": NODE_ROLE, "bureau": "bureau", "lender-a": "lender", "relay2": NODE_ROLE}
        self.anchor_rule = AnchorRule(
            LightClientState.genesis("supervision", GENESIS, self.sup_vset, chunk_size=chunk_size),
            **rule_kw,
        )
        self.ack_rule = AckRule(
            AckState.genesis(self.jud_vset),
            header_hash_of=lambda _reader, h: self._sup_hash(h),
        )
        inst = frozenset({"court", "bureau"})
        from channels.base import make_rules

        jud_rules = make_rules(
            "judicial",
            [self.anchor_rule.tx_type(inst), noop_rule("config_update", frozenset({"bureau"}))],
        )
        sup_rules = make_rules(
            "supervision",
            [
                noop_rule("loan_event_batch", frozenset({"lender"})),
                noop_rule("config_update", frozenset({"bureau"})),
                self.ack_rule.tx_type(inst),
            ],
        )
        self.sup = Ledger("supervision", self.sup_vset, sup_keys, sup_rules, roles)
        self.jud = Ledger("judicial", self.jud_vset, jud_keys, jud_rules, roles)
        self.jud.time_ms = BASE_MS + 500
        self.sup.cross = LedgersCross(self.jud)
        self.records: list[RecordRef] = []
        self._nonce = 0

    def court_anchor(self, s: int, judicial_height: int) -> AnchorEntry | None:
        """The court chain's accepted anchor of supervision block ``s`` as of
        ``judicial_height`` (:data:`crosschain.ack.CourtAnchor`)."""
        return court_anchor_of(self.sup.cross)(s, judicial_height)

    def _sup_hash(self, h: int) -> bytes | None:
        got = self.sup.committed_block(h)
        return None if got is None else got[0].hash

    # -- supervision side ---------------------------------------------------------
    def report(self, n_txs: int, per_tx: int, *, extra: Sequence[Transaction] = ()) -> Block:
        """Commit a supervision block of ``n_txs`` lender txs of ``per_tx`` records each."""
        txs = list(extra)
        refs = []
        leaf = 0  # ``extra`` (config transactions) carries no records
        for _ in range(n_txs):
            self._nonce += 1
            cs = []
            for _ in range(per_tx):
                record, salt, c = make_record(f"r{len(self.records) + len(refs)}")
                refs.append((record, salt, c, leaf))
                cs.append(c)
                leaf += 1
            txs.append(lender_tx(self._nonce, cs))
        block, _ = self.sup.commit(txs)
        self.records += [RecordRef(r, s, c, block.height, i) for r, s, c, i in refs]
        return block

    # -- relay ports ----------------------------------------------------------------
    def relay_config(self, sender: str = "court") -> RelayConfig:
        # window 4 (the relays' default until session 11): the receipt vectors' judicial
        # layout was generated with it, and they must stay byte for byte
        return RelayConfig(
            network=GENESIS, sender=sender, signer=signer(f"relay/{sender}"), window=4
        )

    def light_client(self) -> LightClientState:
        return read_light_client(self.jud.state, self.anchor_rule.initial)

    def anchor_sink(self) -> AnchorSinkImpl:
        return AnchorSinkImpl(self)

    def ack_sink(self) -> AckSinkImpl:
        return AckSinkImpl(self)

    def judicial_source(self) -> JudicialSourceImpl:
        return JudicialSourceImpl(self)

    def sup_source(self) -> SourceImpl:
        return SourceImpl(self.sup)

    def receipt_source(self) -> ReceiptSourceImpl:
        return ReceiptSourceImpl(self)

    # -- driving ------------------------------------------------------------------
    def run_relays(self, rounds: int = 1, *, now_ms: int | None = None) -> None:
        """Anchor everything committed so far and write the acks back."""
        from crosschain.relay import AckRelay, AnchorRelay

        anchor = AnchorRelay(self.sup_source(), self.anchor_sink(), self.relay_config())
        ack = AckRelay(self.judicial_source(), self.ack_sink(), self.relay_config())
        for _ in range(rounds):
            now = now_ms if now_ms is not None else self.jud.time_ms
            while anchor.step(now):
                self.jud.commit()
            if ack.step(now):
                self.sup.commit()


class SourceImpl:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def height(self) -> int:
        return self.ledger.height

    def committed_block(self, height: int) -> tuple[Block, CommitCertificate] | None:
        return self.ledger.committed_block(height)


class AnchorSinkImpl(Sink):
    def __init__(self, net: Network) -> None:
        super().__init__(net.jud)
        self.net = net

    def progress(self) -> AnchorProgress:
        return AnchorProgress.of(self.net.light_client())


class AckSinkImpl(Sink):
    def __init__(self, net: Network) -> None:
        super().__init__(net.sup)
        self.net = net

    def ack_state(self) -> AckState:
        return read_ack_state(self.net.sup.state, self.net.ack_rule.initial)


class ReceiptSourceImpl:
    def __init__(self, net: Network) -> None:
        self.net = net

    def evidence(self, code: EvidenceCode) -> list[EvidenceEntry]:
        return read_evidence(self.net.jud.state, code)

    def anchor_entry(self, source_height: int) -> AnchorEntry | None:
        return read_anchor_entry(self.net.jud.state, "supervision", source_height)

    def block(self, channel: str, height: int) -> tuple[Block, CommitCertificate] | None:
        ledger = self.net.sup if channel == "supervision" else self.net.jud
        return ledger.committed_block(height)

    def config_steps(self, channel: str, below: int) -> list[ConfigStep]:
        if channel == "supervision":
            return read_config_steps(self.net.jud.state, "supervision", below)
        return self.net.jud.config_steps(0, below)


class JudicialSourceImpl:
    def __init__(self, net: Network) -> None:
        self.net = net

    def anchor_entry(self, source_height: int) -> AnchorEntry | None:
        return read_anchor_entry(self.net.jud.state, "supervision", source_height)

    def committed_block(self, height: int) -> tuple[Block, CommitCertificate] | None:
        return self.net.jud.committed_block(height)

    def config_steps(self, after: int, below: int) -> list[ConfigStep]:
        return self.net.jud.config_steps(after, below)


__all__ = ["ANCHOR_TX_TYPE", "Network"]


def anchors_for(net: Network, height: int) -> list[Any]:
    """The anchors of supervision block ``height`` (header anchor first, then chunks)."""
    from crosschain.anchor import anchor_payloads

    got = net.sup.committed_block(height)
    assert got is not None
    return anchor_payloads(got[0], got[1], chunk_size=net.anchor_rule.initial.chunk_size)


class CountingScheme:
    """ED25519, counting verifications (to show what is rejected before any)."""

    name = "ed25519-counting"

    def __init__(self) -> None:
        self.calls = 0

    def verify(self, public_key: bytes, tag: str, message: bytes, signature: bytes) -> bool:
        from ledger.crypto import ED25519

        self.calls += 1
        return ED25519.verify(public_key, tag, message, signature)

    def signer_from_seed(self, seed: bytes) -> Ed25519Signer:
        return Ed25519Signer(seed)
