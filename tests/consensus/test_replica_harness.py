"""A small deterministic lockstep driver for replica tests (no tests in this module).

Every message is delivered in FIFO order; time advances only by :meth:`Cluster.tick`.
Crashed replicas neither send nor receive; a ``drop`` predicate can cut links. The
run can be printed as a transcript (one line per delivery / commit / view change).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from consensus import (
    DurableState,
    Message,
    Misbehaviour,
    Ready,
    Replica,
    ReplicaConfig,
    SubmitResult,
    describe,
)
from consensus.messages import short_hash
from ledger.blocks import Block, Transaction, channel_genesis_hash
from ledger.certificate import CommitCertificate, Validator, ValidatorSet, verify_certificate
from ledger.crypto import ED25519, Ed25519Signer, FastScheme, SignatureScheme, Signer
from ledger.hashing import TAG_STATE, tagged_hash

CHANNEL = "supervision"
NETWORK = bytes(32)
GENESIS_PREV = channel_genesis_hash(NETWORK, CHANNEL)
TX_TYPE = "test.op"


def seed(label: str) -> bytes:
    return tagged_hash("test-seed", label.encode())


class ChainApp:
    """The Application double: a committed chain, toy state roots, a validator schedule."""

    def __init__(
        self,
        schedule: list[tuple[int, ValidatorSet]],
        clients: dict[str, bytes],
        *,
        reject: Callable[[Transaction], str | None] | None = None,
    ) -> None:
        self.schedule = schedule
        self.clients = clients
        self.chain: list[tuple[Block, CommitCertificate]] = []
        self.roots: list[bytes] = [tagged_hash(TAG_STATE, b"genesis")]
        #: height → what block_extra answers (catch-up answers carry it)
        self.extras: dict[int, bytes] = {}
        self.reject = reject

    def validate_tx(self, tx: Transaction) -> str | None:
        if tx.network != NETWORK or tx.channel != CHANNEL or tx.type != TX_TYPE:
            return "wrong network, channel or type"
        if self.clients.get(tx.sender) != tx.public_key:
            return "unknown sender or key"
        if self.reject is not None:
            return self.reject(tx)
        return None

    def validators_at(self, height: int) -> ValidatorSet:
        current = self.schedule[0][1]
        for start, vset in self.schedule:
            if start <= height:
                current = vset
        return current

    def state_root_at(self, height: int) -> bytes | None:
        return self.roots[height] if 0 <= height < len(self.roots) else None

    def committed_block(self, height: int) -> tuple[Block, CommitCertificate] | None:
        return self.chain[height - 1] if 1 <= height <= len(self.chain) else None

    def block_extra(self, height: int) -> bytes | None:
        return self.extras.get(height)

    @property
    def height(self) -> int:
        return len(self.chain)

    def store(self, block: Block, cert: CommitCertificate) -> None:
        assert block.height == self.height + 1, (block.height, self.height)
        prev = self.chain[-1][0].hash if self.chain else GENESIS_PREV
        assert block.header.prev_hash == prev
        self.chain.append((block, cert))
        self.roots.append(tagged_hash(TAG_STATE, self.roots[-1] + block.header.tx_root))


@dataclass
class Clients:
    scheme: SignatureScheme
    signers: dict[str, Signer] = field(default_factory=dict)
    seq: int = 0

    def keys(self) -> dict[str, bytes]:
        return {name: s.public_key for name, s in self.signers.items()}

    def tx(
        self, sender: str = "lender-1", *, nonce: int | None = None, **payload: Any
    ) -> Transaction:
        self.seq += 1
        signer = self.signers[sender]
        tx = Transaction(
            network=NETWORK,
            channel=CHANNEL,
            type=TX_TYPE,
            sender=sender,
            public_key=signer.public_key,
            nonce=self.seq if nonce is None else nonce,
            time_ms=0,
            payload={"seq": self.seq, **payload},
        )
        return tx.signed(signer)

    def txs(self, count: int, sender: str = "lender-1") -> list[Transaction]:
        return [self.tx(sender) for _ in range(count)]


def make_signers(names: Iterable[str], ed25519: bool) -> tuple[SignatureScheme, dict[str, Signer]]:
    if ed25519:
        return ED25519, {n: Ed25519Signer(seed(n)) for n in names}
    scheme = FastScheme()
    return scheme, {n: scheme.signer_from_seed(seed(n)) for n in names}


class Cluster:
    """n replicas, FIFO delivery, virtual time."""

    def __init__(
        self,
        n: int = 5,
        *,
        ed25519: bool = False,
        schedule: Callable[[dict[str, Signer]], list[tuple[int, ValidatorSet]]] | None = None,
        extra_nodes: int = 0,
        transcript: bool = False,
        reject: Callable[[Transaction], str | None] | None = None,
        **config: Any,
    ) -> None:
        self.names = [f"n{i}" for i in range(n + extra_nodes)]
        client_names = ["lender-1", "lender-2", "mallory"]
        self.scheme, signers = make_signers(self.names + client_names, ed25519)
        self.node_signers = {n: signers[n] for n in self.names}
        self.clients = Clients(self.scheme, {c: signers[c] for c in client_names})
        if schedule is None:
            vset = ValidatorSet(
                tuple(Validator(n, self.node_signers[n].public_key) for n in self.names[:n])
            )
            self.schedule = [(0, vset)]
        else:
            self.schedule = schedule(self.node_signers)
        self.config_overrides = config
        self.apps = {
            name: ChainApp(self.schedule, self.clients.keys(), reject=reject) for name in self.names
        }
        self.durable: dict[str, DurableState | None] = {name: None for name in self.names}
        self.replicas = {name: self._make(name) for name in self.names}
        self.queue: deque[tuple[str, str, Message]] = deque()
        self.now = 0
        self.down: set[str] = set()
        self.drop: Callable[[str, str, Message], bool] | None = None
        self.evidence: list[tuple[str, Misbehaviour]] = []
        self.sent: list[tuple[str, str | None, Message]] = []
        self.lines: list[str] | None = [] if transcript else None
        self.delivered = 0
        self._views = {name: (0, True) for name in self.names}
        #: Broadcasts (Outbound.to None) reach only the validators of the next height
        #: (as a node would route them) instead of every replica in the cluster.
        self.broadcast_to_validators = False
        #: Called with (node, ready, committed height after storing it).
        self.on_ready: Callable[[str, Ready, int], None] | None = None

    # -- construction -----------------------------------------------------------------

    def config(self, name: str) -> ReplicaConfig:
        base = ReplicaConfig(
            node_id=name,
            channel=CHANNEL,
            signer=self.node_signers[name],
            scheme=self.scheme,
            genesis_prev_hash=GENESIS_PREV,
        )
        return replace(base, **self.config_overrides)

    def _make(self, name: str) -> Replica:
        app = self.apps[name]
        durable = self.durable[name]
        if durable is not None:
            # A restart reads the state back from its bytes.
            durable = DurableState.from_bytes(durable.to_bytes())
        return Replica(self.config(name), app, committed_height=app.height, durable=durable)

    # -- faults -------------------------------------------------------------------------

    def crash(self, name: str) -> None:
        self.down.add(name)

    def restart(self, name: str) -> Replica:
        self.down.discard(name)
        self.replicas[name] = self._make(name)
        self.replicas[name].tick(self.now)
        self._log(f"{name} RESTARTED at h{self.apps[name].height} view={self.replicas[name].view}")
        self.pump()
        return self.replicas[name]

    # -- driving ------------------------------------------------------------------------

    def _log(self, line: str) -> None:
        if self.lines is not None:
            self.lines.append(f"{self.now:>6} {line}")

    def live(self) -> list[str]:
        return [n for n in self.names if n not in self.down]

    def submit(self, name: str, txs: list[Transaction]) -> list[SubmitResult]:
        out = self.replicas[name].submit(txs)
        self._log(f"{name} SUBMIT {len(txs)} txs")
        self.pump()
        return out

    def tick(self, ms: int = 10) -> None:
        self.now += ms
        for name in self.live():
            self.replicas[name].tick(self.now)
        self.pump()

    def step(self, name: str, msg: Message) -> None:
        """Inject ``msg`` into replica ``name`` (as if a peer sent it)."""
        self.replicas[name].step(msg)
        self.pump()

    def run(self, ms: int, every: int = 10) -> None:
        for _ in range(ms // every):
            self.tick(every)

    def run_until(self, pred: Callable[[], bool], max_ms: int = 30_000, every: int = 10) -> None:
        waited = 0
        while not pred():
            if waited >= max_ms:
                raise AssertionError(f"condition not reached within {max_ms} ms")
            self.tick(every)
            waited += every

    def _drain_ready(self, name: str) -> None:
        r = self.replicas[name]
        while r.has_ready():
            rd: Ready = r.ready()
            if rd.persist is not None:
                self.durable[name] = rd.persist
            for block, cert in rd.committed:
                self.apps[name].store(block, cert)
                self._log(
                    f"{name} COMMITTED h{block.height} {short_hash(block.hash)} "
                    f"txs={len(block.transactions)} cert-view={cert.view}"
                )
            if self.on_ready is not None:
                self.on_ready(name, rd, self.apps[name].height)
            for ev in rd.evidence:
                self.evidence.append((name, ev))
                self._log(f"{name} EVIDENCE {ev.kind} against {ev.offender} h{ev.height}")
            for out in rd.messages:
                self.sent.append((name, out.to, out.message))
                if out.to is not None:
                    targets = [out.to]
                elif self.broadcast_to_validators:
                    vset = self.apps[name].validators_at(self.apps[name].height + 1)
                    targets = [n for n in self.names if n != name and n in vset.by_id]
                else:
                    targets = [n for n in self.names if n != name]
                for dst in targets:
                    self.queue.append((name, dst, out.message))
            r.advance(rd)
        state = (r.view, r.view_active)
        if state != self._views[name]:
            self._views[name] = state
            self._log(f"{name} VIEW {r.view} {'active' if r.view_active else 'changing'}")

    def pump(self, limit: int = 1_000_000) -> None:
        for name in self.live():
            self._drain_ready(name)
        steps = 0
        while self.queue:
            steps += 1
            if steps > limit:
                raise AssertionError("message storm: the cluster does not quiesce")
            src, dst, msg = self.queue.popleft()
            if src in self.down or dst in self.down:
                continue
            if self.drop is not None and self.drop(src, dst, msg):
                continue
            self.delivered += 1
            if self.lines is not None:
                self._log(f"{src}->{dst} {describe(msg)}")
            self.replicas[dst].step(msg)
            self._drain_ready(dst)

    # -- checks -------------------------------------------------------------------------

    def heights(self) -> dict[str, int]:
        return {n: self.apps[n].height for n in self.names}

    def check_chains(self, names: Iterable[str] | None = None) -> int:
        """All chains are prefixes of one another with valid certificates; returns the
        common height."""
        names = list(names or self.names)
        longest = max((self.apps[n].chain for n in names), key=len)
        for n in names:
            chain = self.apps[n].chain
            assert [b.hash for b, _ in chain] == [b.hash for b, _ in longest[: len(chain)]], n
        prev = GENESIS_PREV
        for block, cert in longest:
            assert block.header.prev_hash == prev
            verify_certificate(
                cert,
                channel=CHANNEL,
                height=block.height,
                block_hash=block.hash,
                validators=self.apps[names[0]].validators_at(block.height),
                scheme=self.scheme,
            )
            prev = block.hash
        return min(len(self.apps[n].chain) for n in names)

    def committed_tx_ids(self, name: str) -> list[bytes]:
        return [tx.tx_id for b, _ in self.apps[name].chain for tx in b.transactions]

    def transcript(self) -> str:
        assert self.lines is not None
        return "\n".join(self.lines) + "\n"
