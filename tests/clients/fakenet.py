"""An in-memory stand-in for a wulian network's client API, for the SDK's unit tests.

It speaks the node's HTTP contract (docs/node.md) through ``httpx.MockTransport``:
every request's signature is checked with ``ledger.request_auth`` exactly as the node
does, transactions are decoded and their signatures verified, committed transactions
go into really built and really certified blocks (the local genesis's node keys), and
an anchored supervision block yields a real receipt (``crosschain.receipt``). Each
node URL can be made to fail (down, slow, overloaded, wrong genesis).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from clients import Client
from crosschain.receipt import build_receipt
from ledger.blocks import Block, Transaction, build_block, channel_genesis_hash, record_leaves
from ledger.certificate import CommitCertificate, Vote
from ledger.crypto import Ed25519Signer
from ledger.encoding import decode, encode
from ledger.errors import LedgerError
from ledger.evidence_code import code_for_leaf
from ledger.evidence_code import parse as parse_code
from ledger.genesis import Genesis, make_local_genesis, node_key_path
from ledger.hashing import TAG_COMMIT_VOTE
from ledger.keyfile import load_key_file
from ledger.merkle import inclusion_proof
from ledger.request_auth import parse_auth_headers, verify_request_signature
from tests.node.netfixture import add_lenders

LENDER = "lender1"


def wire_to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$hex": value.hex()}
    if isinstance(value, list | tuple):
        return [wire_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: wire_to_json(v) for k, v in value.items()}
    return value


def local_network_files(tmp: Path, lenders: tuple[str, ...] = (LENDER, "lender2")) -> Genesis:
    """A local genesis (five institutions + lenders) with its key files under ``tmp``."""
    make_local_genesis(tmp, base_port=7101)
    return add_lenders(tmp, lenders)


@dataclass
class NodeBehaviour:
    """How one fake node misbehaves (all off: a healthy node)."""

    down: bool = False
    timeout: bool = False
    overloaded: bool = False
    genesis_hash: str | None = None
    node_id: str | None = None
    fail_next: int = 0  # answer 503 to the next N requests
    stale_next: int = 0  # answer 401 stale_request to the next N signed requests


@dataclass
class FakeNetwork:
    data_dir: Path
    genesis: Genesis
    urls: list[str]
    behaviour: dict[str, NodeBehaviour] = field(default_factory=dict)
    #: tx id -> (channel, tx); pending until committed
    pending: dict[bytes, Transaction] = field(default_factory=dict)
    committed: dict[bytes, tuple[str, int, int]] = field(default_factory=dict)
    blocks: dict[str, list[tuple[Block, CommitCertificate, list[dict[str, Any]]]]] = field(
        default_factory=dict
    )
    #: commit submitted transactions at once (else: only when commit_pending() is called)
    auto_commit: bool = True
    #: reject submissions with this (code, message)
    reject: tuple[str, str] | None = None
    #: outcome for committed transactions: (code, message) or None for ok
    outcome: tuple[str, str] | None = None
    #: outcome result map (credit answers)
    result: dict[str, Any] | None = None
    #: anchor supervision blocks automatically after this many status queries
    anchor_after: int | None = None
    receipts: dict[str, dict[str, Any]] = field(default_factory=dict)
    anchored: set[int] = field(default_factory=set)
    requests: list[httpx.Request] = field(default_factory=list)
    submissions: list[bytes] = field(default_factory=list)
    status_queries: int = 0
    block_requests: int = 0
    stream_blocks: int | None = None  # close the SSE stream after this many blocks
    #: certify blocks with keys the genesis does not name (as after governance
    #: re-keyed the validators): the SDK cannot check such certificates itself
    rekeyed: bool = False

    @classmethod
    def create(cls, tmp: Path, n_urls: int = 3) -> FakeNetwork:
        genesis = local_network_files(tmp)
        urls = [f"http://node{i}.test" for i in range(n_urls)]
        return cls(tmp, genesis, urls, {u: NodeBehaviour() for u in urls})

    # ------------------------------------------------------------------ chain

    def _signers(self) -> dict[str, Ed25519Signer]:
        return {
            n.node_id: load_key_file(node_key_path(self.data_dir, n.org_id)).signer
            for n in self.genesis.nodes
        }

    def certify(self, block: Block) -> CommitCertificate:
        vset = self.genesis.channel(block.header.channel).validators
        keys = self._signers()
        if self.rekeyed:
            keys = {
                n: Ed25519Signer(hashlib.sha256(f"rekeyed/{n}".encode()).digest()) for n in keys
            }
        names = [v.node_id for v in vset.validators][: vset.quorum]
        bare = CommitCertificate(block.header.channel, block.height, 0, block.hash, ())
        votes = tuple(Vote(n, keys[n].sign(TAG_COMMIT_VOTE, bare.message())) for n in names)
        return CommitCertificate(bare.channel, bare.height, 0, bare.block_hash, votes)

    def add_block(
        self, channel: str, txs: list[Transaction], outcomes: list[dict[str, Any]]
    ) -> Block:
        chain = self.blocks.setdefault(channel, [])
        height = len(chain) + 1
        prev = chain[-1][0].hash if chain else channel_genesis_hash(self.genesis.hash, channel)
        block = build_block(
            channel=channel,
            height=height,
            prev_hash=prev,
            transactions=txs,
            state_height=0,
            state_root=bytes(32),
            proposer="bureau-node",
            view=0,
            time_ms=time.time_ns() // 1_000_000,
        )
        chain.append((block, self.certify(block), outcomes))
        for i, tx in enumerate(txs):
            self.committed[tx.tx_id] = (channel, height, i)
            self.pending.pop(tx.tx_id, None)
        return block

    def commit_pending(self) -> None:
        by_channel: dict[str, list[Transaction]] = {}
        for tx in self.pending.values():
            by_channel.setdefault(tx.channel, []).append(tx)
        for ch, txs in by_channel.items():
            self.add_block(ch, txs, [self._outcome() for _ in txs])

    def _outcome(self) -> dict[str, Any]:
        if self.outcome is None:
            o: dict[str, Any] = {"valid": True, "code": "ok", "message": ""}
        else:
            o = {"valid": False, "code": self.outcome[0], "message": self.outcome[1]}
        if self.result is not None:
            o["result"] = self.result
        return o

    def anchor(self, sup_height: int) -> list[str]:
        """Anchor supervision block ``sup_height`` on the judicial chain; returns the
        evidence codes of its records."""
        block, cert, _ = self.blocks["supervision"][sup_height - 1]
        relay = Ed25519Signer(b"\x07" * 32)
        anchor_tx = Transaction(
            network=self.genesis.hash, channel="judicial", type="anchor", sender="court-node",
            public_key=relay.public_key, nonce=sup_height, time_ms=time.time_ns() // 1_000_000,
            payload={"records": [{"c": block.hash}]},
        ).signed(relay)  # fmt: skip
        jblock = self.add_block("judicial", [anchor_tx], [self._ok()])
        jcert = self.blocks["judicial"][-1][1]
        leaves = [leaf for tx in block.transactions for leaf in record_leaves(tx)]
        codes = []
        for i, leaf in enumerate(leaves):
            receipt = build_receipt(
                leaf_index=i,
                supervision_block=block,
                supervision_certificate=cert,
                judicial_block=jblock,
                judicial_certificate=jcert,
                anchor_tx_index=0,
            )
            code = str(code_for_leaf(leaf))
            self.receipts[code] = receipt.to_json()
            codes.append(code)
        self.anchored.add(sup_height)
        return codes

    @staticmethod
    def _ok() -> dict[str, Any]:
        return {"valid": True, "code": "ok", "message": ""}

    # ------------------------------------------------------------------ HTTP

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def async_transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=self.transport())

    def async_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.async_transport())

    def _error(self, status: int, code: str, message: str) -> httpx.Response:
        return httpx.Response(status, json={"error": {"code": code, "message": message}})

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        base = f"{request.url.scheme}://{request.url.host}"
        b = self.behaviour.get(base)
        if b is None or b.down:
            raise httpx.ConnectError("connection refused", request=request)
        if b.timeout:
            raise httpx.ReadTimeout("timed out", request=request)
        path = request.url.path
        if path == "/v1/info":
            return httpx.Response(
                200,
                json={
                    # each URL is a distinct genesis node, as in a real network
                    "node": b.node_id
                    or self.genesis.nodes[self.urls.index(base) % len(self.genesis.nodes)].node_id,
                    "network": self.genesis.network,
                    "genesis_hash": b.genesis_hash or self.genesis.hash.hex(),
                    "channels": {},
                },
            )
        if b.overloaded:
            return self._error(503, "overloaded", "the node is overloaded; retry later")
        if b.fail_next > 0:
            b.fail_next -= 1
            return self._error(503, "overloaded", "the node is overloaded; retry later")
        body = request.read()
        target = request.url.raw_path.decode()
        try:
            auth = parse_auth_headers(request.headers)
            verify_request_signature(
                auth, network=self.genesis.hash, method=request.method, path=target, body=body
            )
        except LedgerError as exc:
            return self._error(401, "bad_signature", str(exc))
        org = self.genesis.org(auth.org)
        if org.find_key(auth.public_key) is None:
            return self._error(401, "unknown_key", "not a key of the org")
        if b.stale_next > 0:
            b.stale_next -= 1
            return self._error(401, "stale_request", "request too old")
        parts = path.strip("/").split("/")
        try:
            return self._route(request, parts, body, auth.org)
        except LedgerError as exc:
            return self._error(400, "bad_schema", str(exc))

    def _respond(self, request: httpx.Request, doc: Any, status: int = 200) -> httpx.Response:
        if "application/msgpack" in request.headers.get("accept", ""):
            return httpx.Response(
                status, content=encode(doc), headers={"content-type": "application/msgpack"}
            )
        return httpx.Response(status, json=wire_to_json(doc))

    def _status_doc(self, channel: str, tx_id: bytes) -> dict[str, Any] | None:
        if tx_id in self.committed:
            ch, h, i = self.committed[tx_id]
            doc: dict[str, Any] = {
                "channel": ch, "tx_id": tx_id.hex(), "status": "committed", "height": h,
                "index": i, "outcome": self.blocks[ch][h - 1][2][i],
            }  # fmt: skip
            if ch == "supervision" and h in self.anchored:
                block = self.blocks[ch][h - 1][0]
                doc["evidence_codes"] = [
                    str(code_for_leaf(leaf)) for leaf in record_leaves(block.transactions[i])
                ]
            return doc
        if tx_id in self.pending:
            return {"channel": channel, "tx_id": tx_id.hex(), "status": "pending"}
        return None

    def _accept(self, tx: Transaction) -> dict[str, Any]:
        self.submissions.append(tx.tx_id)
        tx.verify_signature()
        if self.reject is not None:
            return {
                "tx_id": tx.tx_id.hex(),
                "status": "rejected",
                "error": {"code": self.reject[0], "message": self.reject[1]},
            }
        if tx.tx_id not in self.committed:
            self.pending[tx.tx_id] = tx
        return {"tx_id": tx.tx_id.hex(), "status": "pending"}

    def _route(
        self, request: httpx.Request, parts: list[str], body: bytes, org: str
    ) -> httpx.Response:
        if parts[:2] == ["v1", "channels"] and len(parts) >= 3:
            ch = parts[2]
            if len(parts) == 3:
                height = len(self.blocks.get(ch, []))
                return self._respond(request, {"channel": ch, "height": height})
            if parts[3:] == ["transactions"] and request.method == "POST":
                tx = Transaction.decode(body)
                res = self._accept(tx)
                if res["status"] == "rejected":
                    err = res["error"]
                    return self._error(422, err["code"], err["message"])
                if self.auto_commit:
                    self.commit_pending()
                doc = self._status_doc(ch, tx.tx_id) or res
                status = 200 if doc["status"] == "committed" else 202
                return httpx.Response(status, json=wire_to_json(doc))
            if parts[3:] == ["transactions", "batch"] and request.method == "POST":
                raw = decode(body)
                txs = [Transaction.from_wire(t) for t in raw["txs"]]
                results = [self._accept(t) for t in txs]
                if self.auto_commit:
                    self.commit_pending()
                out = []
                for t, r in zip(txs, results, strict=True):
                    out.append(r if r["status"] == "rejected" else self._status_doc(ch, t.tx_id))
                return httpx.Response(200, json=wire_to_json({"results": out}))
            if len(parts) == 5 and parts[3] == "transactions":
                self.status_queries += 1
                if self.anchor_after is not None and self.status_queries >= self.anchor_after:
                    for h in range(1, len(self.blocks.get("supervision", [])) + 1):
                        if h not in self.anchored:
                            self.anchor(h)
                found = self._status_doc(ch, bytes.fromhex(parts[4]))
                if found is None:
                    return self._error(404, "not_found", "no such transaction known to this node")
                return self._respond(request, found)
            if parts[3:] == ["stream"]:
                return self._stream(request, ch, org)
            if len(parts) == 5 and parts[3] == "blocks" and request.method == "GET":
                self.block_requests += 1
                chain = self.blocks.get(ch, [])
                if not parts[4].isdigit() or not 1 <= int(parts[4]) <= len(chain):
                    return self._error(404, "not_found", f"no block at height {parts[4]}")
                return self._respond(
                    request, self.block_view(ch, int(parts[4]), self.scope(ch, org))
                )
        if parts[:2] == ["v1", "evidence"] and len(parts) == 4 and parts[3] == "receipt":
            code = str(parse_code(parts[2]))
            receipt = self.receipts.get(code)
            if receipt is None:
                return self._error(404, "not_found", "no such evidence code")
            return httpx.Response(200, json=receipt)
        if parts == ["v1", "channels", "risk", "alerts"]:
            return self._respond(request, {"alerts": []})
        return self._error(404, "not_found", "no such route")

    def block_view(self, channel: str, height: int, org: str | None) -> dict[str, Any]:
        """The node's block view (node/views.py): scoped to ``org`` (its transactions,
        each with an inclusion proof), or the whole block without proofs (None)."""
        block, cert, outcomes = self.blocks[channel][height - 1]
        ids = [t.tx_id for t in block.transactions]
        txs = []
        for i, tx in enumerate(block.transactions):
            if org is not None and tx.sender != org:
                continue
            item = {"index": i, "id": ids[i], "tx": tx.to_wire(), "outcome": outcomes[i]}
            if org is not None:
                item["proof"] = inclusion_proof(ids, i)
            txs.append(item)
        return {
            "channel": channel, "height": height, "hash": block.hash,
            "header": block.header.to_wire(), "certificate": cert.to_wire(),
            "tx_count": len(ids), "scoped": org is not None, "txs": txs,
        }  # fmt: skip

    def scope(self, channel: str, org: str) -> str | None:
        """The node's read scope: None for a full reader of ``channel``, else ``org``."""
        role = self.genesis.org(org).role
        full = self.genesis.channel(channel).permissions.read_access(role) == "full"
        return None if full else org

    def _stream(self, request: httpx.Request, channel: str, org: str) -> httpx.Response:
        q = request.url.params.get("from")
        chain = self.blocks.get(channel, [])
        start = int(q) if q else len(chain) + 1
        out = [b": wulian block stream\n\n"]
        end = len(chain) + 1
        if self.stream_blocks is not None:
            end = min(end, start + self.stream_blocks)
        for h in range(start, end):
            data = json.dumps(wire_to_json(self.block_view(channel, h, self.scope(channel, org))))
            out.append(f"id: {h}\nevent: block\ndata: {data}\n\n".encode())
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=b"".join(out)
        )


def count_requests(net: FakeNetwork, pred: Callable[[httpx.Request], bool]) -> int:
    return sum(1 for r in net.requests if pred(r))


def make_client(fake: FakeNetwork, tmp_path: Path, **kw: Any) -> Client:
    """A client of ``fake`` as lender1 (store under ``tmp_path``; short timeouts)."""
    opts: dict[str, Any] = {
        "genesis": fake.genesis,
        "key_file": fake.data_dir / "keys" / f"{LENDER}.key",
        "store": tmp_path / "store",
        "commit_timeout": 2.0,
        "timeout": 1.0,
        "retries": 1,
        "http": fake.client(),
    }
    opts.update(kw)
    return Client(fake.urls, **opts)
