"""The node's evidence verification path with its caches (over the real runtime and
store of tests/explorer/test_explorer_runtime_backend.py): the batch route answers
every item as before, in order, while each block is proven once and each
certificate's signatures are checked once; a scoped lender still sees only its own
records."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from crosschain.receipt import assemble_receipt
from ledger.blocks import block_record_leaves
from ledger.crypto import Signer
from ledger.evidence_code import code_for_leaf
from ledger.hashing import TAG_RECORD, tagged_hash
from ledger.keyfile import load_key_file
from ledger.request_auth import sign_request
from node.evidence_routes import install_evidence_routes
from node.explorer.backend import RuntimeBackend
from tests.explorer.test_explorer_runtime_backend import World, world

__all__ = ["world"]  # the module-scoped fixture, shared


def commitment(world: World, i: int) -> str:
    record, salt = world.records[i]
    return tagged_hash(TAG_RECORD, salt + record).hex()


class Api:
    def __init__(self, world: World) -> None:
        self.world = world
        self.backend = RuntimeBackend(world.rt)
        app = FastAPI()
        install_evidence_routes(app, world.rt, self.backend)
        self.client = TestClient(app)

    def post(self, signer: Signer, org: str, path: str, doc: Any) -> Any:
        body = json.dumps(doc).encode()
        headers = sign_request(
            signer, network=self.world.rt.genesis.hash, org=org, method="POST", path=path,
            body=body, time_ms=time.time_ns() // 1_000_000, nonce=secrets.token_bytes(16),
        )  # fmt: skip
        headers["content-type"] = "application/json"
        r = self.client.post(path, content=body, headers=headers)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture()
def api(world: World) -> Api:
    return Api(world)


def court(world: World) -> Signer:
    return load_key_file(world.rt.config.key_file).signer


def test_batch_answers_in_order_and_proves_each_block_once(world: World, api: Api) -> None:
    codes = [str(code_for_leaf(leaf)) for leaf in world.leaves]
    unanchored = str(code_for_leaf(block_record_leaves([world.unanchored])[0]))
    items = [
        {"code": codes[2], "commitment": commitment(world, 2)},
        {"code": unanchored, "commitment": "00" * 32},
        {"code": codes[0], "commitment": commitment(world, 1)},  # another record's
        {"code": "not-a-code", "commitment": "00" * 32},
        {"code": codes[1], "commitment": commitment(world, 1)},
        {"code": codes[0], "commitment": commitment(world, 0)},
    ]
    want = ["verified", "not_anchored", "mismatch", "bad_evidence_code", "verified", "verified"]
    for _round in range(3):
        doc = api.post(court(world), "court-node", "/v1/evidence/verify", {"items": items})
        results = doc["results"]
        assert [r["result"] for r in results] == want
        assert [r["code"] for r in results] == [
            codes[2], unanchored, codes[0], "not-a-code", codes[1], codes[0],
        ]  # fmt: skip
        assert all(c["status"] == "pass" for c in results[0]["checks"])
    # one supervision and one judicial block, proven once for the three batches
    assert api.backend.proven_blocks.misses == 2
    assert len(api.backend.proven_blocks) == 2
    # two certificates (one per channel), their signatures checked once
    assert api.backend.certificates.misses == 2
    assert api.backend.certificates.hits == 3 * 2 * 4 - 2  # 4 anchored items a batch


def test_single_route_and_the_explorer_verify_share_the_caches(world: World, api: Api) -> None:
    code = str(code_for_leaf(world.leaves[1]))
    doc = api.post(
        court(world), "court-node", f"/v1/evidence/{code}/verify",
        {"commitment": commitment(world, 1)},
    )  # fmt: skip
    assert doc["result"] == "verified"
    v = api.backend.verify(code_for_leaf(world.leaves[1]), bytes.fromhex(commitment(world, 1)))
    assert v.status == "verified"
    assert api.backend.proven_blocks.misses == 2 and api.backend.proven_blocks.hits == 2
    assert api.backend.certificates.misses == 2 and api.backend.certificates.hits == 2


def test_a_scoped_lender_sees_its_own_records_only(world: World, api: Api) -> None:
    code = str(code_for_leaf(world.leaves[0]))
    items = [{"code": code, "commitment": commitment(world, 0)}]
    doc = api.post(world.lender, "acme", "/v1/evidence/verify", {"items": items})
    assert [r["result"] for r in doc["results"]] == ["verified"]
    # the owner comes from the proven block; a tx not in it falls back to the store
    (receipt,) = assemble_receipt(code_for_leaf(world.leaves[0]), api.backend._receipt_source())
    assert api.backend.record_owner(receipt) == "acme"
