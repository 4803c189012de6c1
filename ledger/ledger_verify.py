"""Offline verification of a node's whole ledger (Fabric's ``ledgerutil verify``).

:func:`verify_channel` walks every stored block of a channel from height 1 and
checks, in this order for each height ``h``:

1. block ``h`` is stored (no gap) and not beyond the recorded tip;
2. it decodes canonically and names this channel and height ``h``;
3. its ``prev_hash`` is the header hash of block ``h−1`` (block 1: the channel
   genesis hash);
4. its transactions match ``tx_count`` and ``tx_root``;
5. the store's header copy, block-hash index and state-root record agree with it;
6. ``state_height < h`` and, when ``state_height ≥ 1``, the header's ``state_root``
   equals the root recorded after block ``state_height``;
7. its commit certificate decodes, names this block and verifies (quorum of valid,
   distinct votes) against the validator set in force at ``h``;
8. every transaction signature verifies (optional; a transaction's signature is not
   covered by its id, so this is the only check that notices a damaged signature);
9. every transaction id is indexed at ``(h, index)``;
10. if a state delta is kept for ``h`` and the caller gives the channel layer's state
    digest (:class:`StateDigest`; the ledger layer does not know it), the delta chains
    the state root recorded at ``h−1`` (block 1: the digest's initial root) to the one
    recorded at ``h`` — a delta the node would serve to a peer catching up.

After the walk: the tip metadata names the last block, and each index holds exactly
one entry per block (or per transaction), so stray entries are noticed.

The walk stops at the FIRST mismatch and the report names its height.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from ledger.blocks import Block, channel_genesis_hash
from ledger.certificate import CommitCertificate, ValidatorSet, verify_certificate
from ledger.crypto import ED25519, SignatureScheme
from ledger.encoding import decode
from ledger.errors import CorruptLedgerError, LedgerError
from ledger.genesis import Genesis
from ledger.governance import ChannelGovernance
from ledger.store import BlockStore

#: Name of the LevelDB directory inside a node's data directory.
LEDGER_DIR_NAME = "ledger"


@dataclass(frozen=True)
class StateDigest:
    """The channel layer's state digest, to check kept state deltas with: the root
    before block 1, and ``root_after(block, prev_root, delta)``, the root that ``delta``
    chains ``prev_root`` to for ``block``."""

    initial_root: bytes
    root_after: Callable[[Block, bytes, bytes], bytes]


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of verifying one channel.

    ``blocks`` and ``transactions`` count what verified before the first mismatch;
    ``failed_height`` and ``problem`` describe that mismatch (both None when ok);
    ``state_deltas`` counts the kept state deltas checked (None: not checked, no
    digest was given); ``size_entries_malformed``: a state-delta size entry of the
    channel is malformed (derived data: the node rebuilds them from the deltas when it
    next opens the ledger; not a mismatch).
    """

    channel: str
    blocks: int
    transactions: int
    tip_hash: bytes | None = None
    failed_height: int | None = None
    problem: str | None = None
    state_deltas: int | None = None
    size_entries_malformed: bool = False

    @property
    def ok(self) -> bool:
        return self.problem is None

    def line(self) -> str:
        """One line for the CLI."""
        if self.problem is not None:
            return f"channel {self.channel!r} height {self.failed_height}: {self.problem}"
        tip = f", tip {self.tip_hash.hex()[:16]}…" if self.tip_hash else ""
        deltas = "" if self.state_deltas is None else f", {self.state_deltas} state deltas"
        sizes = (
            "; a state-delta size entry is malformed (rebuilt when the node next opens it)"
            if self.size_entries_malformed
            else ""
        )
        return (
            f"{self.channel}: ok — {self.blocks} blocks, {self.transactions} transactions"
            f"{deltas}{tip}{sizes}"
        )


class ValidatorTrackerLike(Protocol):
    """What the verifier needs of :class:`ledger.governance.ChannelGovernance` (or a
    :class:`~ledger.governance.ValidatorTracker`)."""

    def validators_at(self, height: int) -> ValidatorSet: ...

    def observe_block(self, block: Block) -> object: ...


class StaticValidators:
    """A tracker whose validator set never changes (for tests and tools that know the
    set is fixed)."""

    def __init__(self, validators: ValidatorSet) -> None:
        self._validators = validators

    def validators_at(self, height: int) -> ValidatorSet:
        return self._validators

    def observe_block(self, block: Block) -> None:
        return None


def governance_tracker(
    genesis: Genesis, channel: str, scheme: SignatureScheme = ED25519
) -> ValidatorTrackerLike:
    """The channel's :class:`~ledger.governance.ChannelGovernance` (validator-set
    changes with their approvals checked, exactly as a node applies them)."""
    return ChannelGovernance(genesis, channel, scheme=scheme)


def verify_channel(
    store: BlockStore,
    channel: str,
    genesis_hash: bytes,
    validators_at: Callable[[int], ValidatorSet],
    scheme: SignatureScheme = ED25519,
    *,
    observe: Callable[[Block], object] | None = None,
    tx_signatures: bool = True,
    state_digest: StateDigest | None = None,
) -> VerifyReport:
    """Verify every block of ``channel`` in ``store`` (see the module docstring; the
    kept state deltas only with ``state_digest``).

    ``validators_at(h)`` gives the validator set for the certificate at height ``h``;
    ``observe(block)`` is called after block ``h`` verified and before
    ``validators_at(h + 1)`` (a governance tracker applies validator-set changes
    there). Never raises for ledger content; returns a report naming the first mismatch.
    """
    tip = store.tip(channel)
    prev = channel_genesis_hash(genesis_hash, channel)
    blocks = 0
    txs = 0
    deltas = 0

    def fail(height: int, problem: str) -> VerifyReport:
        return VerifyReport(channel, blocks, txs, None, height, problem)

    try:
        for h, raw in store.iter_stored_blocks(channel):
            expected = blocks + 1
            if h != expected:
                return fail(expected, "block missing")
            if h > tip.height:
                return fail(h, f"block stored beyond the recorded tip {tip.height}")
            try:
                block = Block.decode(raw)
            except LedgerError as exc:
                return fail(h, f"block does not decode: {exc}")
            if block.header.channel != channel or block.height != h:
                return fail(h, "stored block names another channel or height")
            problem = store.check_block_record(channel, block, prev)
            if problem is not None:
                return fail(h, problem)
            header = block.header
            if header.state_height >= h:
                return fail(h, f"state height {header.state_height} is not below the height")
            if header.state_height >= 1:
                recorded = store.state_root_at(channel, header.state_height)
                if recorded != header.state_root:
                    return fail(
                        h,
                        "header state root differs from the state root recorded at "
                        f"height {header.state_height}",
                    )
            if state_digest is not None:
                kept = store.state_delta_at(channel, h)
                if kept is not None:
                    problem = _check_delta(store, channel, block, kept, state_digest)
                    if problem is not None:
                        return fail(h, problem)
                    deltas += 1
            raw_cert = store.raw_certificate(channel, h)
            if raw_cert is None:  # check_block_record saw it; a concurrent writer did not
                return fail(h, "certificate missing")
            try:
                cert = CommitCertificate.from_wire(decode(raw_cert))
                verify_certificate(
                    cert,
                    channel=channel,
                    height=h,
                    block_hash=block.hash,
                    validators=validators_at(h),
                    scheme=scheme,
                )
            except LedgerError as exc:
                return fail(h, f"certificate: {exc}")
            if tx_signatures:
                for index, tx in enumerate(block.transactions):
                    try:
                        tx.verify_signature(scheme)
                    except LedgerError:
                        return fail(h, f"transaction {index} has an invalid signature")
            if observe is not None:
                try:
                    observe(block)
                except LedgerError as exc:
                    return fail(h, f"governance: {exc}")
            prev = block.hash
            blocks += 1
            txs += len(block.transactions)
    except CorruptLedgerError as exc:  # malformed keys or tip: nothing to decode
        return fail(exc.height if exc.height is not None else blocks + 1, str(exc))
    if blocks < tip.height:
        return fail(blocks + 1, f"block missing (the tip says {tip.height})")
    if blocks and prev != tip.hash:
        return fail(blocks, "tip metadata names another block hash")
    sizes = store.index_sizes(channel)
    for what, count, want in (
        ("header copies", sizes.headers, blocks),
        ("certificates", sizes.certificates, blocks),
        ("block-hash index entries", sizes.hashes, blocks),
        ("state-root records", sizes.state_roots, blocks),
        ("tx index entries", sizes.transactions, txs),
    ):
        if count != want:
            return fail(blocks, f"{count} {what} stored for {want} expected (stray entries)")
    checked = None if state_digest is None else deltas
    return VerifyReport(channel, blocks, txs, prev if blocks else None, state_deltas=checked)


def _check_delta(
    store: BlockStore, channel: str, block: Block, delta: bytes, digest: StateDigest
) -> str | None:
    """Why ``delta``, the state delta kept for ``block``, does not lead from the root
    recorded below it to the one recorded at it (None: it does)."""
    h = block.height
    prev = digest.initial_root if h == 1 else store.state_root_at(channel, h - 1)
    if prev is None or digest.root_after(block, prev, delta) != store.state_root_at(channel, h):
        return "the state delta kept for this block does not lead to its recorded state root"
    return None


def verify_ledger(
    data_dir: str | Path,
    genesis: Genesis,
    *,
    tracker_factory: Callable[[Genesis, str, SignatureScheme], ValidatorTrackerLike] = (
        governance_tracker
    ),
    scheme: SignatureScheme = ED25519,
    tx_signatures: bool = True,
    state_digests: Mapping[str, StateDigest] | None = None,
) -> list[VerifyReport]:
    """Verify every channel of the node ledger in ``data_dir/ledger`` (the kept state
    deltas of the channels ``state_digests`` names, with their channel's digest).

    Channels come in genesis order; a channel stored in the ledger but absent from the
    genesis is reported as a mismatch at height 1. The store is opened read-only: nothing
    is written (no delta pruned, a format-1 ledger left format 1; every delta on disk
    is checked). Raises
    :class:`ledger.store.StoreError` if the database is missing, locked or not LevelDB,
    :class:`ledger.errors.ConfigError` if it belongs to another genesis, and
    :class:`ledger.errors.CorruptLedgerError` if LevelDB reports damage on opening.
    """
    path = Path(data_dir) / LEDGER_DIR_NAME
    reports: list[VerifyReport] = []
    with BlockStore.open(
        path,
        genesis.hash,
        create=False,
        verify_recent=0,
        read_only=True,
    ) as store:
        known = [entry.channel_id for entry in genesis.channels]
        for channel in known:
            tracker = tracker_factory(genesis, channel, scheme)
            report = verify_channel(
                store,
                channel,
                genesis.hash,
                tracker.validators_at,
                scheme,
                observe=tracker.observe_block,
                tx_signatures=tx_signatures,
                state_digest=(state_digests or {}).get(channel),
            )
            if channel in store.rebuilt_size_entries:
                report = replace(report, size_entries_malformed=True)
            reports.append(report)
        for channel in store.channels():
            if channel not in known:
                reports.append(
                    VerifyReport(channel, 0, 0, None, 1, "channel is not in the genesis")
                )
    return reports
