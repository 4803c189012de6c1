"""A five-node network of real processes on loopback, for integration tests.

    net = start_network(tmp_path, rules="test")
    client = net.client(0, "lender1")
    client.submit("supervision", client.tx("supervision", "loan_event", {"k": "a", "v": 1}))
    ...
    net.stop()

Reusable by any test module (import ``tests.node.netfixture``). Nodes run the real
``wulian node`` command; ``kill(i)`` is SIGKILL, ``restart(i)`` starts the node again
on the same data directory.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from channels.credit import SYNC_KEY
from ledger.blocks import Transaction
from ledger.crypto import Ed25519Signer
from ledger.encoding import decode, encode
from ledger.genesis import Genesis
from ledger.keyfile import load_key_file
from ledger.request_auth import sign_request
from node.localnet import LocalNetwork, add_lender_orgs, free_base_port

LENDERS = ("lender1", "lender2")
#: Consensus settings for tests: quick batches, a view-change timeout that tolerates a
#: slow shared CI machine.
FAST_CONSENSUS = {"base_timeout_ms": 2000, "batch_interval_ms": 10}


def add_lenders(data: Path, lenders: Iterable[str] = LENDERS) -> Genesis:
    """Genesis hook: register lender orgs (keys in ``data/keys/<id>.key``)."""
    return add_lender_orgs(data, lenders, name=lambda i: f"Test lender {i}")


_HTTP: list[httpx.Client] = []


def _shared_http() -> httpx.Client:
    """One keep-alive pool for every test client (creating an httpx.Client costs
    ~0.2 s: it loads the CA bundle)."""
    if not _HTTP:
        _HTTP.append(httpx.Client(timeout=30.0, verify=False))
    return _HTTP[0]


@dataclass
class Client:
    """A signing HTTP client for one org against one node."""

    url: str
    network: bytes
    org: str
    signer: Ed25519Signer
    http: httpx.Client = field(default_factory=lambda: _shared_http())
    _nonce: int = 0

    def headers(self, method: str, path: str, body: bytes = b"") -> dict[str, str]:
        self._nonce += 1
        return sign_request(
            self.signer,
            network=self.network,
            org=self.org,
            method=method,
            path=path,
            body=body,
            time_ms=time.time_ns() // 1_000_000,
            nonce=secrets.token_bytes(12) + self._nonce.to_bytes(4, "big"),
        )

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        content_type: str = "application/msgpack",
        accept: str = "application/json",
        extra_headers: dict[str, str] | None = None,
        sign: bool = True,
    ) -> httpx.Response:
        headers = self.headers(method, path, body) if sign else {}
        headers["accept"] = accept
        if body:
            headers["content-type"] = content_type
        headers.update(extra_headers or {})
        return self.http.request(method, self.url + path, content=body, headers=headers)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def tx(
        self, channel: str, tx_type: str, payload: dict[str, Any], *, nonce: int | None = None
    ) -> Transaction:
        return Transaction(
            network=self.network,
            channel=channel,
            type=tx_type,
            sender=self.org,
            public_key=self.signer.public_key,
            nonce=secrets.randbits(62) if nonce is None else nonce,
            time_ms=time.time_ns() // 1_000_000,
            payload=payload,
        ).signed(self.signer)

    def submit(self, channel: str, tx: Transaction, *, wait_ms: int = 0) -> httpx.Response:
        q = f"?wait_ms={wait_ms}" if wait_ms else ""
        return self.request("POST", f"/v1/channels/{channel}/transactions{q}", tx.encoded())

    def submit_batch(
        self, channel: str, txs: Sequence[Transaction], *, wait_ms: int = 0
    ) -> httpx.Response:
        q = f"?wait_ms={wait_ms}" if wait_ms else ""
        body = encode({"txs": [t.to_wire() for t in txs]})
        return self.request("POST", f"/v1/channels/{channel}/transactions/batch{q}", body)

    def height(self, channel: str) -> int:
        r = self.get(f"/v1/channels/{channel}")
        r.raise_for_status()
        return int(r.json()["height"])

    def block(self, channel: str, height: int) -> dict[str, Any]:
        r = self.get(f"/v1/channels/{channel}/blocks/{height}")
        r.raise_for_status()
        doc: dict[str, Any] = r.json()
        return doc

    def close(self) -> None:
        """Nothing to release: clients share one connection pool."""


class TestNetwork(LocalNetwork):
    """A :class:`LocalNetwork` with signing clients for its orgs."""

    __test__ = False

    def signer_of(self, org: str) -> Ed25519Signer:
        """The key of an org (or of a node: ``<org>-node``) from ``DIR/keys``."""
        return load_key_file(self.data_dir / "keys" / f"{org}.key").signer

    def client(self, i: int, org: str) -> Client:
        key = (i, org)
        cache: dict[tuple[int, str], Client] = self.__dict__.setdefault("_clients", {})
        if key not in cache:
            cache[key] = Client(
                self.nodes[i].url, self.genesis.hash, org, self.signer_of(org), self._http()
            )
        return cache[key]

    def _http(self) -> httpx.Client:
        """The shared pool, or (TLS network) one that verifies nodes against the CA."""
        if self.ca_file is None:
            return _shared_http()
        if "_tls_http" not in self.__dict__:
            self.__dict__["_tls_http"] = httpx.Client(timeout=30.0, verify=self.http_verify())
        http: httpx.Client = self.__dict__["_tls_http"]
        return http

    def heights(
        self, channel: str, org: str = "bureau", indexes: Iterable[int] | None = None
    ) -> list[int]:
        out = []
        for i in range(len(self.nodes)) if indexes is None else indexes:
            c = self.client(i, org)
            try:
                out.append(c.height(channel))
            finally:
                c.close()
        return out

    def wait_heights(
        self,
        channel: str,
        at_least: int,
        *,
        timeout_s: float = 30.0,
        indexes: Iterable[int] | None = None,
    ) -> list[int]:
        idx = list(range(len(self.nodes)) if indexes is None else indexes)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                hs = self.heights(channel, indexes=idx)
            except httpx.HTTPError:
                hs = [-1]
            if min(hs) >= at_least:
                return hs
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"heights {hs} on {channel} did not all reach {at_least} in {timeout_s} s"
                )
            time.sleep(0.1)

    def metrics_text(self, i: int) -> str:
        return self._http().get(self.nodes[i].url + "/metrics").text

    def stop(self, timeout_s: float = 10.0) -> dict[str, int | None]:
        """Close this network's TLS client pool first: a node closing a TLS connection
        waits for the idle client's close_notify, which would delay its shutdown."""
        http = self.__dict__.pop("_tls_http", None)
        if http is not None:
            http.close()
        return super().stop(timeout_s)


def start_network(
    tmp: str | os.PathLike[str],
    *,
    rules: str = "test",
    consensus: dict[str, int] | None = None,
    limits: dict[str, int] | None = None,
    lenders: Iterable[str] = LENDERS,
    timeout_s: float = 60.0,
    tls: bool = False,
) -> TestNetwork:
    """Prepare a five-node network in ``tmp`` on free loopback ports and start it
    (``tls``: HTTPS everywhere, certificates from a network CA in ``tmp/tls``)."""
    base = free_base_port()
    lender_ids = tuple(lenders)
    net = TestNetwork.prepare(
        Path(tmp),
        base_port=base,
        rules=rules,
        consensus={**FAST_CONSENSUS, **(consensus or {})},
        limits=limits,
        genesis_hook=lambda d: add_lenders(d, lender_ids),
        tls=tls,
    )
    assert isinstance(net, TestNetwork)
    net.start()
    try:
        net.wait_healthy(timeout_s=timeout_s)
    except BaseException:
        net.stop()
        raise
    return net


def credit_synced(net: TestNetwork) -> int:
    """The supervision height the credit channel reflects (the credit agency node's
    worker posts the syncs), as the credit agency's node serves it; 0 before any."""
    c = net.client(3, "credit_agency")
    r = c.get(f"/v1/channels/credit/state?key={SYNC_KEY.hex()}")
    if r.status_code == 404:
        return 0
    r.raise_for_status()
    return int(decode(bytes.fromhex(r.json()["value"]["$hex"]))["h"])


def log_events(net: LocalNetwork, i: int) -> list[dict[str, Any]]:
    """The JSON log lines of node ``i`` (non-JSON lines skipped)."""
    out = []
    for line in net.nodes[i].log_path.read_text("utf-8", "replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def seed_blocks(
    net: LocalNetwork,
    channel: str,
    n_blocks: int,
    *,
    into: Sequence[int],
    txs_per_block: int = 2,
    sender: str = "lender1",
) -> int:
    """Append ``n_blocks`` valid, certified blocks to the ledgers of the STOPPED nodes
    ``into`` (which must agree on the channel's tip) with :func:`node.seed.seed_blocks`
    — as the nodes would have committed them: ``rules = "test"`` transactions signed by
    ``sender``, a quorum's commit certificate, applied by each node's own driver.
    Returns the new height.

    Lets a catch-up test put hundreds of blocks between a node and its peers in
    seconds, whatever the machine's load.
    """
    from node.seed import seed_blocks as seed

    keys = net.data_dir / "keys"
    validators = net.genesis.channel(channel).validators
    node_signers = {
        v.node_id: load_key_file(keys / f"{v.node_id}.key").signer for v in validators.validators
    }
    client = load_key_file(keys / f"{sender}.key").signer

    def txs(h: int) -> list[Transaction]:
        now = time.time_ns() // 1_000_000
        return [
            Transaction(
                network=net.genesis.hash, channel=channel, type="loan_event", sender=sender,
                public_key=client.public_key, nonce=secrets.randbits(62), time_ms=now,
                payload={"k": f"seed-{h}-{j}", "v": j},
            ).signed(client)
            for j in range(txs_per_block)
        ]  # fmt: skip

    return seed([net.nodes[i].config_path for i in into], channel, n_blocks, txs, node_signers)
