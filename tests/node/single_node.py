"""One real node without peers, for HTTP boundary tests: a :class:`NodeRuntime` and
its LevelDB store over the local five-institution genesis (edited by the test), the
FastAPI app in-process, and blocks committed straight into the store with four
validators' real commit votes."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from ledger.blocks import Block, Transaction, build_block, channel_genesis_hash
from ledger.certificate import CommitCertificate, Vote
from ledger.crypto import Signer
from ledger.encoding import encode
from ledger.genesis import (
    Genesis,
    genesis_document,
    genesis_from_document,
    load_genesis,
    make_local_genesis,
    node_key_path,
    write_genesis,
)
from ledger.hashing import TAG_COMMIT_VOTE
from ledger.identity import INSTITUTION_ROLES
from ledger.keyfile import load_key_file
from ledger.request_auth import sign_request
from node.api import create_app
from node.channel import outcomes_key
from node.config import load_node_config, render_node_config
from node.rules import TxOutcome
from node.runtime import NodeRuntime

T0 = 1_700_000_000_000


def org_entry(
    org_id: str, role: str, signer: Signer, revoked_at: int | None = None, name: str = ""
) -> dict[str, Any]:
    """A genesis org (named ``name``, default its id) with one key, valid from height
    0 until ``revoked_at``."""
    key = {"public_key": signer.public_key.hex(), "valid_from": 0, "revoked_at": revoked_at}
    return {"id": org_id, "name": name or org_id, "role": role, "keys": [key]}


class SingleNode:
    """The court's node of a local genesis that ``edit`` may change (a genesis
    document, edited in place), on ``rules`` (the test rules by default). Close with
    :meth:`close`."""

    def __init__(
        self, tmp: Path, edit: Callable[[dict[str, Any]], None], rules: str = "test"
    ) -> None:
        self.net = tmp / "net"
        make_local_genesis(self.net, created_ms=T0)
        doc = genesis_document(load_genesis(self.net / "genesis.json"))
        edit(doc)
        self.genesis: Genesis = genesis_from_document(doc)
        write_genesis(self.net / "genesis.json", self.genesis)
        cfg = tmp / "node.toml"
        cfg.write_text(
            render_node_config(
                node_id="court-node",
                key_file=str(node_key_path(self.net, "court")),
                genesis_file=str(self.net / "genesis.json"),
                data_dir=str(tmp / "data"),
                host="127.0.0.1",
                port=9,
                rules=rules,
            )
        )
        self.rt = NodeRuntime.open(load_node_config(cfg))
        #: the genesis nodes' keys (``<org>-node``)
        self.node_keys = {
            f"{o}-node": load_key_file(node_key_path(self.net, o)).signer for o in INSTITUTION_ROLES
        }

    @cached_property
    def client(self) -> TestClient:
        """The node's FastAPI app in-process (built on first use)."""
        return TestClient(create_app(self.rt, manage_lifecycle=False))

    def close(self) -> None:
        self.rt.store.close()

    def commit(
        self,
        channel: str,
        txs: Sequence[Transaction] = (),
        writes: Mapping[bytes, bytes] | None = None,
        *,
        time_ms: int | None = None,
        view: int = 0,
    ) -> Block:
        """Commit the next block of ``channel`` holding ``txs`` (all VALID) and the
        state ``writes`` (at ``time_ms``, default ``T0`` + 1 s a height, in ``view``),
        certified by four validators (the first is silent); returns it."""
        store, vset = self.rt.store, self.genesis.channel(channel).validators
        h = store.height(channel) + 1
        prev = (
            store.last_hash(channel) if h > 1 else channel_genesis_hash(self.genesis.hash, channel)
        )
        block = build_block(
            channel=channel, height=h, prev_hash=prev, transactions=list(txs),
            state_height=h - 1, state_root=b"\x11" * 32, proposer=vset.primary(view),
            view=view, time_ms=T0 + 1000 * h if time_ms is None else time_ms,
        )  # fmt: skip
        msg = CommitCertificate(channel, h, view, block.hash, ()).message()
        votes = tuple(
            Vote(v.node_id, self.node_keys[v.node_id].sign(TAG_COMMIT_VOTE, msg))
            for v in vset.validators[1:5]
        )
        store.commit_block(
            channel, block, CommitCertificate(channel, h, view, block.hash, votes),
            dict(writes or {}), b"\x22" * 32,
            wal={outcomes_key(h): encode([TxOutcome().to_wire() for _ in txs])},
        )  # fmt: skip
        return block

    def headers(self, signer: Signer, org: str, path: str) -> dict[str, str]:
        """Signed headers of a GET of ``path`` by ``org``."""
        return sign_request(
            signer, network=self.genesis.hash, org=org, method="GET", path=path, body=b"",
            time_ms=time.time_ns() // 1_000_000, nonce=secrets.token_bytes(16),
        )  # fmt: skip

    def get(self, signer: Signer, org: str, path: str) -> Any:
        return self.client.get(path, headers=self.headers(signer, org, path))
