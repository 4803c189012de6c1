"""Build valid, really signed chains of blocks for tests.

Everything is deterministic from ``seed``: the validators' ed25519 keys, the client
key, the genesis hash, the transactions and therefore every block hash.

    genesis_hash, validators, signers, blocks = make_chain(10, 3)
    for block, cert in blocks: ...

Block ``h`` carries ``state_height = h - 1`` and the toy state root after block
``h - 1`` (:func:`state_root_after`); :func:`commit_chain` commits blocks to a
``BlockStore`` with the matching toy state writes and roots, so ``wulian ledger
verify`` accepts the result.

API: :func:`make_chain`, :func:`extend_chain` (more blocks, or another validator set
from some height on), :func:`make_validators`, :func:`make_tx`, :func:`make_block`,
:func:`certify` (any subset of voters), :func:`state_writes`, :func:`state_root_after`,
:func:`commit_chain`, :func:`fake_genesis_hash`. With a real genesis
(``ledger.genesis.make_local_genesis``), pass its hash, validator set and node keys
to ``extend_chain(Chain(genesis.hash, vset, signers, []), n, k, channel=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from ledger.blocks import Block, Transaction, build_block, channel_genesis_hash
from ledger.certificate import CommitCertificate, Validator, ValidatorSet, Vote
from ledger.crypto import Ed25519Signer, Signer
from ledger.encoding import encode
from ledger.hashing import TAG_COMMIT_VOTE, TAG_GENESIS, TAG_STATE, sha256, tagged_hash
from ledger.store import BlockStore

BASE_TIME_MS = 1_700_000_000_000
#: State root recorded "before block 1" in toy chains (state_height 0).
EMPTY_STATE_ROOT = tagged_hash(TAG_STATE, b"test-empty-state")


class Chain(NamedTuple):
    genesis_hash: bytes
    validators: ValidatorSet
    signers: Sequence[Signer]  # validators' keys, in ValidatorSet order (any Signer)
    blocks: list[tuple[Block, CommitCertificate]]


def _seeded(label: str, seed: int, i: int = 0) -> Ed25519Signer:
    return Ed25519Signer(sha256(f"wulian-test/{label}/{seed}/{i}".encode()))


def fake_genesis_hash(seed: int = 0) -> bytes:
    """A stand-in genesis hash (tests that need a real genesis use ledger.genesis)."""
    return tagged_hash(TAG_GENESIS, f"test-genesis/{seed}".encode())


def make_validators(n: int = 5, seed: int = 0) -> tuple[ValidatorSet, list[Ed25519Signer]]:
    """``n`` validators named ``node1``..``noden`` with deterministic keys."""
    signers = [_seeded("validator", seed, i) for i in range(n)]
    vset = ValidatorSet(
        tuple(Validator(f"node{i + 1}", s.public_key) for i, s in enumerate(signers))
    )
    return vset, signers


def client_signer(seed: int = 0) -> Ed25519Signer:
    return _seeded("client", seed)


def make_tx(
    genesis_hash: bytes,
    channel: str,
    nonce: int,
    *,
    signer: Signer | None = None,
    payload: dict[str, object] | None = None,
    tx_type: str = "test.put",
    sender: str = "lender1",
) -> Transaction:
    """A signed transaction; distinct ``nonce`` values give distinct tx ids."""
    signer = signer or client_signer()
    body = payload if payload is not None else {"k": f"key-{nonce}", "v": nonce}
    tx = Transaction(
        network=genesis_hash,
        channel=channel,
        type=tx_type,
        sender=sender,
        public_key=signer.public_key,
        nonce=nonce,
        time_ms=BASE_TIME_MS + nonce,
        payload=dict(body),
    )
    return tx.signed(signer)


def state_writes(block: Block) -> dict[bytes, bytes | None]:
    """Toy state transition: each tx ``{"k": K, "v": V}`` sets key K to encode(V)."""
    writes: dict[bytes, bytes | None] = {}
    for tx in block.transactions:
        key = tx.payload.get("k")
        if isinstance(key, str):
            writes[key.encode()] = encode(tx.payload.get("v"))
    return writes


def state_root_after(block: Block) -> bytes:
    """Toy state root recorded after applying ``block``."""
    return tagged_hash(TAG_STATE, b"test-state" + block.hash)


def certify(
    block: Block,
    validators: ValidatorSet,
    signers: Sequence[Signer],
    *,
    view: int = 0,
    voters: Sequence[int] | None = None,
) -> CommitCertificate:
    """A commit certificate for ``block`` signed by the validators at indexes ``voters``
    (default: the first quorum)."""
    idx = list(range(validators.quorum)) if voters is None else list(voters)
    cert = CommitCertificate(block.header.channel, block.height, view, block.hash, ())
    msg = cert.message()
    votes = tuple(
        Vote(validators.validators[i].node_id, signers[i].sign(TAG_COMMIT_VOTE, msg)) for i in idx
    )
    return CommitCertificate(cert.channel, cert.height, view, cert.block_hash, votes)


def make_block(
    channel: str,
    height: int,
    prev_hash: bytes,
    transactions: Sequence[Transaction],
    *,
    state_root: bytes,
    proposer: str = "node1",
    view: int = 0,
) -> Block:
    return build_block(
        channel=channel,
        height=height,
        prev_hash=prev_hash,
        transactions=tuple(transactions),
        state_height=height - 1,
        state_root=state_root,
        proposer=proposer,
        view=view,
        time_ms=BASE_TIME_MS + height * 1000,
    )


def extend_chain(
    chain: Chain, n_blocks: int, txs_per_block: int, *, channel: str | None = None
) -> Chain:
    """A new Chain with ``n_blocks`` more blocks appended (same keys and genesis)."""
    blocks = list(chain.blocks)
    if blocks:
        last = blocks[-1][0]
        channel = channel or last.header.channel
        prev_hash, height, root = last.hash, last.height, state_root_after(last)
    else:
        channel = channel or "supervision"
        prev_hash, height, root = (
            channel_genesis_hash(chain.genesis_hash, channel),
            0,
            EMPTY_STATE_ROOT,
        )
    for _ in range(n_blocks):
        height += 1
        txs = [
            make_tx(chain.genesis_hash, channel, height * 100_000 + i) for i in range(txs_per_block)
        ]
        block = make_block(
            channel, height, prev_hash, txs, state_root=root, proposer=chain.validators.primary(0)
        )
        blocks.append((block, certify(block, chain.validators, chain.signers)))
        prev_hash, root = block.hash, state_root_after(block)
    return Chain(chain.genesis_hash, chain.validators, chain.signers, blocks)


def make_chain(
    n_blocks: int,
    txs_per_block: int,
    validators: int = 5,
    *,
    channel: str = "supervision",
    seed: int = 0,
) -> Chain:
    """A valid chain of ``n_blocks`` blocks (heights 1..n) on ``channel``, each with
    ``txs_per_block`` signed transactions and a quorum commit certificate."""
    vset, signers = make_validators(validators, seed)
    return extend_chain(
        Chain(fake_genesis_hash(seed), vset, signers, []), n_blocks, txs_per_block, channel=channel
    )


def commit_chain(store: BlockStore, blocks: Sequence[tuple[Block, CommitCertificate]]) -> None:
    """Commit ``blocks`` in order (each to its own channel) with the toy state."""
    for block, cert in blocks:
        store.commit_block(
            block.header.channel, block, cert, state_writes(block), state_root_after(block)
        )
