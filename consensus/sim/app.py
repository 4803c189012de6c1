"""An in-memory :class:`consensus.app.Application` per simulated replica.

It stands in for the channel layer and the block store: it holds the replica's
committed chain (which survives a crash: it models the durable block store), answers
``validators_at`` from a fixed schedule (with ``known_ahead``, only as far as it has
learnt it, like a node whose governance learns a change from the block carrying it),
and keeps a toy state digest
``root(h) = tagged_hash(TAG_STATE, root(h−1) ‖ tx_root(h))``.

Transaction rules (stateless, as ``validate_tx`` must be): the network id and channel
match; the type is :data:`TX_TYPE`; the sender is a registered client using its
registered key; the payload is ``{"seq": int}``. Signatures are NOT checked here: the
replica verifies them itself with its configured scheme.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ledger.blocks import Block, Transaction
from ledger.certificate import CommitCertificate, ValidatorSet
from ledger.hashing import TAG_STATE, tagged_hash

TX_TYPE = "sim.op"


class AppInvariantError(Exception):
    """The runner tried to store a block out of order (a simulator or core bug)."""


@dataclass(frozen=True)
class ValidatorSchedule:
    """Validator sets by height: ``entries[i] = (from_height, set)``, first from height 0."""

    entries: tuple[tuple[int, ValidatorSet], ...]

    def __post_init__(self) -> None:
        if not self.entries or self.entries[0][0] != 0:
            raise ValueError("a validator schedule starts at height 0")
        heights = [h for h, _ in self.entries]
        if heights != sorted(set(heights)):
            raise ValueError("validator schedule heights must strictly increase")

    def at(self, height: int) -> ValidatorSet:
        current = self.entries[0][1]
        for start, vset in self.entries:
            if start > height:
                break
            current = vset
        return current

    @staticmethod
    def fixed(validators: ValidatorSet) -> ValidatorSchedule:
        return ValidatorSchedule(((0, validators),))


def genesis_state_root(channel: str) -> bytes:
    return tagged_hash(TAG_STATE, b"sim-genesis\x00" + channel.encode())


def check_sim_tx(
    tx: Transaction, *, network: bytes, channel: str, clients: Mapping[str, bytes]
) -> str | None:
    """The stateless rule shared by the app and the checkers (None = acceptable)."""
    if tx.network != network:
        return "transaction is for another network"
    if tx.channel != channel:
        return f"transaction is for channel {tx.channel!r}"
    if tx.type != TX_TYPE:
        return f"unknown transaction type {tx.type!r}"
    key = clients.get(tx.sender)
    if key is None:
        return f"unknown sender {tx.sender!r}"
    if key != tx.public_key:
        return f"sender {tx.sender!r} signed with a key that is not theirs"
    seq = tx.payload.get("seq")
    if set(tx.payload) != {"seq"} or not isinstance(seq, int) or isinstance(seq, bool):
        return "payload must be {'seq': int}"
    return None


class SimApplication:
    """One replica's application: committed chain, state digests, validator schedule."""

    def __init__(
        self,
        *,
        channel: str,
        network: bytes,
        schedule: ValidatorSchedule,
        clients: Mapping[str, bytes],
        known_ahead: int | None = None,
    ) -> None:
        self.channel = channel
        self.network = network
        self.schedule = schedule
        #: None: the whole schedule is known. Otherwise a change effective from ``e`` is
        #: learnt once block ``e - known_ahead`` is stored (the latest block that may
        #: carry it when replicas run with ``activation_delay = known_ahead - 1``);
        #: above that, ``validators_at`` answers the latest set it knows.
        self.known_ahead = known_ahead
        self._clients = dict(clients)
        self._chain: list[tuple[Block, CommitCertificate]] = []
        self._roots: list[bytes] = [genesis_state_root(channel)]
        self.validate_calls = 0

    # -- the Application protocol ----------------------------------------------------

    def validate_tx(self, tx: Transaction) -> str | None:
        self.validate_calls += 1
        return check_sim_tx(tx, network=self.network, channel=self.channel, clients=self._clients)

    def validators_at(self, height: int) -> ValidatorSet:
        if self.known_ahead is not None:
            height = min(height, len(self._chain) + self.known_ahead)
        return self.schedule.at(height)

    def state_root_at(self, height: int) -> bytes | None:
        if 0 <= height < len(self._roots):
            return self._roots[height]
        return None

    def committed_block(self, height: int) -> tuple[Block, CommitCertificate] | None:
        if 1 <= height <= len(self._chain):
            return self._chain[height - 1]
        return None

    def block_extra(self, height: int) -> bytes | None:
        return None  # the simulated state is rebuilt from the blocks alone

    # -- the block store side ----------------------------------------------------------

    @property
    def height(self) -> int:
        return len(self._chain)

    @property
    def head_hash(self) -> bytes | None:
        return self._chain[-1][0].hash if self._chain else None

    @property
    def head_time_ms(self) -> int:
        return self._chain[-1][0].header.time_ms if self._chain else 0

    def chain(self) -> Sequence[tuple[Block, CommitCertificate]]:
        return tuple(self._chain)

    def store(self, block: Block, cert: CommitCertificate) -> None:
        """Append a committed block; raises AppInvariantError unless it is the next one."""
        if block.height != self.height + 1:
            raise AppInvariantError(
                f"store of height {block.height} on top of height {self.height}"
            )
        self._chain.append((block, cert))
        self._roots.append(tagged_hash(TAG_STATE, self._roots[-1] + block.header.tx_root))
