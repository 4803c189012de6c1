"""Whole-ledger verification (``ledger.ledger_verify`` and ``wulian ledger verify``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import plyvel
import pytest

from ledger.blocks import Block, channel_genesis_hash
from ledger.certificate import CommitCertificate, ValidatorSet, Vote
from ledger.encoding import encode
from ledger.genesis import Genesis, make_local_genesis
from ledger.governance import ConfigUpdate, RemoveValidator, approve
from ledger.keyfile import load_key_file
from ledger.ledger_verify import VerifyReport, verify_channel
from ledger.store import BlockStore, height_key
from node.cli import main
from tests.helpers_chain import (
    EMPTY_STATE_ROOT,
    Chain,
    certify,
    commit_chain,
    extend_chain,
    make_block,
    make_chain,
    make_tx,
    make_validators,
    state_root_after,
    state_writes,
)

CH = "supervision"


def key(channel: str, kind: str, suffix: bytes) -> bytes:
    return b"c/" + channel.encode() + b"/" + kind.encode() + b"/" + suffix


def bkey(channel: str, height: int) -> bytes:
    return key(channel, "b", height_key(height))


def verify(store: BlockStore, chain: Chain, channel: str = CH, **kw: object) -> VerifyReport:
    return verify_channel(
        store,
        channel,
        chain.genesis_hash,
        lambda _h: chain.validators,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def stored(tmp_path: Path) -> Iterator[tuple[BlockStore, Chain]]:
    chain = make_chain(30, 2)
    store = BlockStore.open(tmp_path / "ledger", chain.genesis_hash, create=True)
    commit_chain(store, chain.blocks)
    yield store, chain
    store.close()


def put_raw(store: BlockStore, k: bytes, v: bytes | None) -> None:
    if v is None:
        store._db.delete(k, sync=True)
    else:
        store._db.put(k, v, sync=True)


def test_clean_ledger_verifies(tmp_path: Path) -> None:
    a = make_chain(8, 3)
    b = make_chain(3, 1, channel="judicial")
    with BlockStore.open(tmp_path / "ledger", a.genesis_hash, create=True) as store:
        commit_chain(store, a.blocks)
        commit_chain(store, b.blocks)
        ra = verify(store, a)
        rb = verify(store, b, "judicial")
        empty = verify(store, a, "risk")
    assert ra.ok and (ra.blocks, ra.transactions) == (8, 24)
    assert ra.tip_hash == a.blocks[-1][0].hash
    assert rb.ok and (rb.blocks, rb.transactions) == (3, 3)
    assert empty.ok and (empty.blocks, empty.transactions, empty.tip_hash) == (0, 0, None)
    assert "8 blocks" in ra.line() and "24 transactions" in ra.line()


def test_every_single_bit_flip_in_a_stored_block_is_found(tmp_path: Path) -> None:
    chain = make_chain(3, 1)
    with BlockStore.open(tmp_path / "ledger", chain.genesis_hash, create=True) as store:
        commit_chain(store, chain.blocks)
        original = store.raw_block(CH, 2)
        assert original is not None
        for pos in range(len(original)):
            for mask in (0x01, 0x80):
                damaged = bytearray(original)
                damaged[pos] ^= mask
                put_raw(store, bkey(CH, 2), bytes(damaged))
                report = verify(store, chain)
                assert not report.ok, (pos, mask)
                assert report.failed_height == 2, (pos, mask, report.problem)
                assert report.blocks == 1
        put_raw(store, bkey(CH, 2), original)
        assert verify(store, chain).ok


def test_payload_corruption_deep_in_the_chain(stored: tuple[BlockStore, Chain]) -> None:
    store, chain = stored
    raw = store.raw_block(CH, 3)
    assert raw is not None
    nonce = chain.blocks[2][0].transactions[0].nonce
    needle = f"key-{nonce}".encode()
    damaged = raw.replace(needle, needle[:-1] + b"X")
    put_raw(store, bkey(CH, 3), damaged)
    report = verify(store, chain)
    assert (report.failed_height, report.blocks) == (3, 2)
    assert "tx_root" in (report.problem or "")
    assert "height 3" in report.line() and "'supervision'" in report.line()


def _forged(cert: CommitCertificate, votes: tuple[Vote, ...]) -> bytes:
    return encode(
        CommitCertificate(cert.channel, cert.height, cert.view, cert.block_hash, votes).to_wire()
    )


def test_forged_certificates_are_named(stored: tuple[BlockStore, Chain]) -> None:
    store, chain = stored
    block7, cert7 = chain.blocks[6]
    ckey = key(CH, "q", height_key(7))
    original = store.raw_certificate(CH, 7)
    v0 = cert7.votes[0]
    bad_sig = Vote(
        v0.validator, v0.signature[:10] + bytes([v0.signature[10] ^ 1]) + v0.signature[11:]
    )
    outsiders_set, outsiders = make_validators(5, seed=9)  # same node ids, other keys
    by_outsiders = certify(block7, outsiders_set, outsiders)
    for forged, expected in [
        (_forged(cert7, (bad_sig, *cert7.votes[1:])), "invalid signature"),
        (_forged(cert7, cert7.votes[:3]), "quorum"),
        (_forged(cert7, (*cert7.votes[:3], cert7.votes[0])), "twice"),
        (encode(by_outsiders.to_wire()), "invalid signature"),
        (encode(cert7.to_wire())[:-3], "does not decode"),
    ]:
        put_raw(store, ckey, forged)
        report = verify(store, chain)
        assert report.failed_height == 7, report.line()
        assert expected in (report.problem or ""), report.problem
    put_raw(store, ckey, original)
    assert verify(store, chain).ok


def test_damaged_transaction_signature(stored: tuple[BlockStore, Chain]) -> None:
    store, chain = stored
    block = chain.blocks[4][0]
    tx = block.transactions[1]
    raw = store.raw_block(CH, 5)
    assert raw is not None and raw.count(tx.signature) == 1
    bad = tx.signature[:-1] + bytes([tx.signature[-1] ^ 1])
    put_raw(store, bkey(CH, 5), raw.replace(tx.signature, bad))
    report = verify(store, chain)
    assert report.failed_height == 5 and "transaction 1" in (report.problem or "")
    # the signature is not covered by the tx id: only the signature check sees it
    assert verify(store, chain, tx_signatures=False).ok


@pytest.mark.parametrize(
    ("damage", "height", "words"),
    [
        ("drop-block", 12, "block missing"),
        ("drop-tip-block", 30, "block missing"),
        ("drop-cert", 9, "certificate missing"),
        ("drop-tx-index", 4, "tx index"),
        ("move-tx-index", 4, "tx index"),
        ("stray-tx-index", 30, "tx index entries"),
        ("drop-hash-index", 6, "hash index"),
        ("block-beyond-tip", 31, "beyond"),
        ("header-copy", 8, "header copy"),
        ("state-root", 11, "state root"),
    ],
)
def test_structural_damage_is_named(
    stored: tuple[BlockStore, Chain], damage: str, height: int, words: str
) -> None:
    store, chain = stored
    block = chain.blocks[min(height, 30) - 1][0]
    hk = height_key(height)
    if damage in ("drop-block", "drop-tip-block"):
        put_raw(store, bkey(CH, height), None)
    elif damage == "drop-cert":
        put_raw(store, key(CH, "q", hk), None)
    elif damage == "drop-tx-index":
        put_raw(store, key(CH, "t", block.transactions[0].tx_id), None)
    elif damage == "move-tx-index":
        put_raw(store, key(CH, "t", block.transactions[0].tx_id), encode([height, 1]))
    elif damage == "stray-tx-index":
        put_raw(store, key(CH, "t", b"\x07" * 32), encode([3, 0]))
    elif damage == "drop-hash-index":
        put_raw(store, key(CH, "h", block.hash), None)
    elif damage == "block-beyond-tip":
        put_raw(store, bkey(CH, height), store.raw_block(CH, 30))
    elif damage == "header-copy":
        put_raw(store, key(CH, "e", hk), chain.blocks[0][0].header.encoded)
    elif damage == "state-root":
        # the root recorded after block 10 is not what block 11's header carries
        put_raw(store, key(CH, "m", b"root/" + height_key(10)), b"\x05" * 32)
    report = verify(store, chain)
    assert report.failed_height == height, report.line()
    assert words in (report.problem or ""), report.problem


def test_validator_set_changes_are_followed(tmp_path: Path) -> None:
    set_a = make_chain(5, 1)
    set_b_validators, set_b_signers = make_validators(4, seed=2)
    chain = extend_chain(
        Chain(set_a.genesis_hash, set_b_validators, set_b_signers, set_a.blocks), 5, 1
    )
    seen: list[int] = []

    def validators_at(h: int) -> ValidatorSet:
        assert seen == list(range(1, h)), "observe must see every earlier block first"
        return set_a.validators if h <= 5 else set_b_validators

    def observe(block: Block) -> None:
        seen.append(block.height)

    with BlockStore.open(tmp_path / "ledger", chain.genesis_hash, create=True) as store:
        commit_chain(store, chain.blocks)
        report = verify_channel(store, CH, chain.genesis_hash, validators_at, observe=observe)
        assert report.ok and report.blocks == 10 and seen == list(range(1, 11))
        stale = verify_channel(store, CH, chain.genesis_hash, lambda _h: set_a.validators)
        assert stale.failed_height == 6 and "certificate" in (stale.problem or "")


# ---------------------------------------------------------------- the CLI


@pytest.fixture(autouse=True)
def only_ledger_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Build the real ``wulian`` parser with just this command, so these tests do not
    depend on other command modules being importable."""
    monkeypatch.setattr("node.cli.COMMAND_MODULES", ("node.commands.ledger_cmd",))


def _network(tmp_path: Path) -> tuple[Path, Genesis, dict[str, Chain]]:
    """A real local genesis, and a ledger whose blocks its validators signed."""
    data = tmp_path / "node"
    genesis = make_local_genesis(data, created_ms=1_700_000_000_000)
    chains: dict[str, Chain] = {}
    with BlockStore.open(data / "ledger", genesis.hash, create=True) as store:
        for n_blocks, channel in zip((6, 3), ("supervision", "judicial"), strict=True):
            vset = genesis.channel(channel).validators
            signers = [
                load_key_file(data / "keys" / f"{v.node_id.removesuffix('-node')}-node.key").signer
                for v in vset.validators
            ]
            assert [s.public_key for s in signers] == [v.public_key for v in vset.validators]
            chain = extend_chain(
                Chain(genesis.hash, vset, signers, []), n_blocks, 2, channel=channel
            )
            commit_chain(store, chain.blocks)
            chains[channel] = chain
    return data, genesis, chains


def test_cli_verify_ok_and_corrupt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, genesis, chains = _network(tmp_path)
    assert main(["ledger", "verify", "--data", str(data)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(genesis.channels)
    assert any(line.startswith("supervision: ok — 6 blocks, 12 transactions") for line in out)
    assert any(line.startswith("judicial: ok — 3 blocks") for line in out)
    assert any(line.startswith("risk: ok — 0 blocks") for line in out)

    # an old block of judicial damaged: the store still opens, verify names it
    nonce = chains["judicial"].blocks[1][0].transactions[0].nonce
    db = plyvel.DB(str(data / "ledger"))
    raw = db.get(bkey("judicial", 2))
    db.put(bkey("judicial", 2), raw.replace(f"key-{nonce}".encode(), f"kez-{nonce}".encode()))
    db.close()
    assert (
        main(["ledger", "verify", "--data", str(data), "--genesis", str(data / "genesis.json")])
        == 1
    )
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "'judicial' height 2" in err[0]
    assert "Traceback" not in captured.err


def test_cli_verify_notes_a_malformed_size_entry_and_leaves_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A state-delta size entry is derived data the node rebuilds on opening: verify
    passes the ledger, says so on the channel's line, and writes nothing."""
    data, _genesis, _chains = _network(tmp_path)
    junk_key = b"c/supervision/ds/\x02"
    db = plyvel.DB(str(data / "ledger"))
    db.put(junk_key, b"junk")
    db.close()
    assert main(["ledger", "verify", "--data", str(data)]) == 0
    out = capsys.readouterr().out.splitlines()
    (line,) = [line for line in out if line.startswith("supervision: ok")]
    assert "size entry is malformed" in line
    assert not any("malformed" in other for other in out if other != line)
    db = plyvel.DB(str(data / "ledger"))
    assert db.get(junk_key) == b"junk"
    db.close()


def test_cli_verify_forged_certificate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, _genesis, chains = _network(tmp_path)
    _block, cert = chains["supervision"].blocks[3]
    v = cert.votes[2]
    forged = (*cert.votes[:2], Vote(v.validator, bytes(64)), *cert.votes[3:])
    db = plyvel.DB(str(data / "ledger"))
    db.put(key(CH, "q", height_key(4)), _forged(cert, forged))
    db.close()
    assert main(["ledger", "verify", "--data", str(data)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "'supervision' height 4" in err[0] and "invalid signature" in err[0]


def test_cli_verify_finds_the_genesis_through_the_nodes_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from node.config import render_node_config

    data, genesis, _ = _network(tmp_path)
    # the layout of `wulian up`: DIR/nodes/<node>/{node.toml,ledger}, DIR/genesis.json
    node_dir = tmp_path / "nodes" / "bureau-node"
    node_dir.mkdir(parents=True)
    (data / "ledger").rename(node_dir / "ledger")
    config = render_node_config(
        node_id="bureau-node", key_file="../../node/keys/bureau-node.key",
        genesis_file="../../node/genesis.json", data_dir=".", host="127.0.0.1", port=7001,
    )  # fmt: skip
    (node_dir / "node.toml").write_text(config)
    assert main(["ledger", "verify", "--data", str(node_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(genesis.channels)
    assert any(line.startswith("supervision: ok — 6 blocks") for line in out)

    (node_dir / "node.toml").write_text('node_id = "bureau-node"\n')  # not a node config
    assert main(["ledger", "verify", "--data", str(node_dir)]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err
    assert "node.toml" in lines[0] and "missing field" in lines[0]


def test_cli_verify_bad_data_dirs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, genesis, _ = _network(tmp_path)
    genesis_file = str(data / "genesis.json")

    def run(*args: str) -> str:
        assert main(["ledger", "verify", *args]) == 1
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1, captured.err
        return lines[0]

    assert "no ledger database" in run(
        "--data", str(tmp_path / "nowhere"), "--genesis", genesis_file
    )
    assert "genesis" in run("--data", str(tmp_path / "nowhere"))  # no genesis file there
    with BlockStore.open(data / "ledger", genesis.hash, create=False):
        assert "locked" in run("--data", str(data))
    junk = tmp_path / "junk"
    (junk / "ledger").mkdir(parents=True)
    (junk / "ledger" / "CURRENT").write_text("garbage\n")
    assert "LevelDB" in run("--data", str(junk), "--genesis", genesis_file)
    other = make_local_genesis(tmp_path / "other", created_ms=1)
    assert "genesis" in run(
        "--data", str(data), "--genesis", str(tmp_path / "other" / "genesis.json")
    )
    assert other.hash != genesis.hash


def test_state_roots_helper_matches_store(stored: tuple[BlockStore, Chain]) -> None:
    store, chain = stored
    for block, _ in chain.blocks[:3]:
        assert store.state_root_at(CH, block.height) == state_root_after(block)
        assert all(store.get_state(CH, k) == v for k, v in state_writes(block).items())


def test_cli_follows_committed_validator_set_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config_update removing a validator (approved by 3 institutions) is committed
    at height 2, effective at 12: from 12 on, the 4 remaining validators certify, and a
    vote by the removed node no longer counts."""
    data = tmp_path / "node"
    genesis = make_local_genesis(data, created_ms=1_700_000_000_000)
    vset5 = genesis.channel(CH).validators
    keys = data / "keys"
    signer_of = {
        v.node_id: load_key_file(keys / f"{v.node_id.removesuffix('-node')}-node.key").signer
        for v in vset5.validators
    }
    removed = vset5.validators[-1].node_id
    vset4 = ValidatorSet(tuple(v for v in vset5.validators if v.node_id != removed))
    change = RemoveValidator(removed)
    orgs = [o.org_id for o in genesis.institutions][:3]
    approvals = tuple(
        approve(org, load_key_file(keys / f"{org}.key").signer, genesis.hash, CH, change, 12)
        for org in orgs
    )
    org_signer = load_key_file(keys / f"{orgs[0]}.key").signer
    update_tx = make_tx(
        genesis.hash,
        CH,
        1,
        signer=org_signer,
        sender=orgs[0],
        tx_type="config_update",
        payload=ConfigUpdate(change, 12, approvals).to_payload(),
    )
    blocks: list[tuple[Block, CommitCertificate]] = []
    prev, root = channel_genesis_hash(genesis.hash, CH), EMPTY_STATE_ROOT
    for h in range(1, 15):
        txs = [update_tx] if h == 2 else [make_tx(genesis.hash, CH, 1000 + h)]
        vset = vset5 if h < 12 else vset4
        block = make_block(CH, h, prev, txs, state_root=root, proposer=vset.primary(0))
        signers = [signer_of[v.node_id] for v in vset.validators]
        blocks.append((block, certify(block, vset, signers)))
        prev, root = block.hash, state_root_after(block)
    with BlockStore.open(data / "ledger", genesis.hash, create=True) as store:
        commit_chain(store, blocks)
    assert main(["ledger", "verify", "--data", str(data)]) == 0
    assert "supervision: ok — 14 blocks" in capsys.readouterr().out

    # block 12 certified by a quorum that counts the removed validator: refused
    block12 = blocks[11][0]
    stale = certify(
        block12, vset5, [signer_of[v.node_id] for v in vset5.validators], voters=[1, 2, 3, 4]
    )
    db = plyvel.DB(str(data / "ledger"))
    db.put(key(CH, "q", height_key(12)), encode(stale.to_wire()))
    db.close()
    assert main(["ledger", "verify", "--data", str(data)]) == 1
    err = capsys.readouterr().err
    assert "'supervision' height 12" in err and f"{removed!r} is not a validator" in err
