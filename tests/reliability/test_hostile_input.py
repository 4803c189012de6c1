"""Hostile input against five real node processes.

- The HTTP API fuzzed from the node's own ``/openapi.json`` with schemathesis; every
  generated request is signed as a registered lender (a ``requests`` auth hook using
  the scheme of ledger/request_auth.py), so the fuzz reaches past authentication.
  Promise: no 5xx, every answer within the request timeout, a JSON error object with a
  ``code`` on every refusal, and no ledger changed (height and tip hash of every
  channel on every node before == after).
- Random bytes to the peer endpoints ``/v1/peer/frames`` and ``/v1/peer/stream``: 400
  ``bad_frame``, never 5xx.
- Explicit cases that tests/node/test_node_network.py does not already cover: a lender
  writing as another lender (three ways), an org reading a channel its role may not
  read, deeply nested JSON and msgpack bodies, oversized bodies streamed without a
  ``Content-Length``, and transactions replayed to every node (committed once).
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgpack
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ledger.blocks import Transaction
from ledger.crypto import Ed25519Signer
from ledger.encoding import encode
from ledger.errors import LedgerError
from ledger.genesis import Genesis, genesis_document, genesis_from_document, write_genesis
from ledger.keyfile import write_key_file
from tests.node.netfixture import (
    FAST_CONSENSUS,
    Client,
    TestNetwork,
    add_lenders,
    free_base_port,
)

pytestmark = [pytest.mark.network, pytest.mark.xdist_group("hostile")]

CH = "supervision"
CHANNELS = ("supervision", "judicial", "risk", "credit", "service")
#: An org whose role (``clerk``) reads only the judicial channel.
CLERK = "clerk1"
#: Examples per API operation in `make test` (the slow variant runs many more).
QUICK_EXAMPLES = 6
SLOW_EXAMPLES = 300
#: A request answered later than this counts as a hang.
REQUEST_TIMEOUT_S = 20.0
#: Operations left out of the fuzz: the block stream never ends by design.
SKIP_PATHS = ("/v1/channels/{channel}/stream",)


def add_orgs(data: Path) -> Genesis:
    """Genesis hook: the test lenders plus :data:`CLERK` (key in ``keys/clerk1.key``)."""
    genesis = add_lenders(data)
    signer = Ed25519Signer.generate()
    write_key_file(data / "keys" / f"{CLERK}.key", CLERK, signer)
    doc = genesis_document(genesis)
    doc["orgs"].append(
        {
            "id": CLERK,
            "name": "Court clerk",
            "role": "clerk",
            "keys": [{"public_key": signer.public_key.hex(), "valid_from": 0, "revoked_at": None}],
        }
    )
    path = data / "genesis.json"
    new = genesis_from_document(doc, str(path))
    write_genesis(path, new)
    return new


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNetwork]:
    network = TestNetwork.prepare(
        tmp_path_factory.mktemp("hostile"),
        base_port=free_base_port(),
        rules="test",
        consensus=FAST_CONSENSUS,
        genesis_hook=add_orgs,
    )
    assert isinstance(network, TestNetwork)
    network.start()
    try:
        network.wait_healthy(timeout_s=60)
        yield network
    finally:
        network.stop()


def ledger_snapshot(net: TestNetwork) -> dict[tuple[int, str], tuple[int, str]]:
    """(node, channel) -> (height, tip hash) for every channel on every node."""
    out = {}
    for i in range(len(net.nodes)):
        c = net.client(i, "bureau")
        for ch in CHANNELS:
            doc = c.get(f"/v1/channels/{ch}").json()
            out[(i, ch)] = (doc["height"], doc["last_hash"]["$hex"])
    return out


class SignAs(requests.auth.AuthBase):
    """Signs each prepared request (method, path and query as sent, body bytes) as
    ``client.org``."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        assert r.method is not None and isinstance(body, bytes)
        r.headers.update(self.client.headers(r.method, r.path_url, body))
        return r


def api_schema(net: TestNetwork) -> Any:
    """The node's OpenAPI schema with ``channel`` limited to real channels (an unknown
    channel is refused before anything interesting happens; it is fuzzed elsewhere)."""
    doc = httpx.get(net.nodes[0].url + "/openapi.json", timeout=30).json()
    for item in doc["paths"].values():
        for op in item.values():
            for p in op.get("parameters", []) if isinstance(op, dict) else []:
                if p.get("name") == "channel":
                    p["schema"] = {"type": "string", "enum": list(CHANNELS)}
    return schemathesis.openapi.from_dict(doc)


def run_operation(
    op: Any, examples: int, org: str, session: requests.Session, base_url: str, problems: list[str]
) -> int:
    """Fuzz one API operation; record 5xx answers and refusals without an error code
    in ``problems``; fail on a hang. Returns the number of requests made."""
    calls = 0

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy())
    def run(case: Any) -> None:
        nonlocal calls
        calls += 1
        t0 = time.monotonic()
        resp = case.call(base_url=base_url, session=session, timeout=REQUEST_TIMEOUT_S)
        where = f"{org} {case.method} {resp.request.path_url}"
        if resp.status_code >= 500:
            problems.append(f"{where}: {resp.status_code} {resp.text[:300]}")
        elif resp.status_code >= 400:
            try:
                code = resp.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = None
            if not isinstance(code, str):
                problems.append(f"{where}: {resp.status_code} without an error code")
        assert time.monotonic() - t0 < REQUEST_TIMEOUT_S

    run()
    return calls


def fuzz(net: TestNetwork, examples: int, orgs: tuple[str, ...]) -> int:
    schema = api_schema(net)
    base_url = net.nodes[1].url
    before = ledger_snapshot(net)
    calls = 0
    problems: list[str] = []
    for org in orgs:
        session = requests.Session()
        session.auth = SignAs(net.client(1, org))
        for result in schema.get_all_operations():
            op = result.ok()
            if op.path in SKIP_PATHS:
                continue
            calls += run_operation(op, examples, org, session, base_url, problems)
        session.close()
    assert not problems, "\n".join(problems[:20])
    assert ledger_snapshot(net) == before, "a fuzzed request changed a ledger"
    for node in net.nodes:
        assert httpx.get(node.url + "/healthz", timeout=10).status_code == 200
    return calls


def test_fuzz_api_signed_as_a_lender(net: TestNetwork) -> None:
    calls = fuzz(net, QUICK_EXAMPLES, ("lender1",))
    print(f"{calls} fuzzed requests")
    assert calls >= QUICK_EXAMPLES * 3


@pytest.mark.slow
def test_fuzz_api_long(net: TestNetwork) -> None:
    calls = fuzz(net, SLOW_EXAMPLES, ("lender1", "bureau", CLERK))
    print(f"{calls} fuzzed requests")


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
_TYPES = st.sampled_from(["loan_event", "lender_admit", "case_file", "credit_query"]) | st.text(
    max_size=20
)


def signed_tx_cases(net: TestNetwork, examples: int) -> tuple[int, int]:
    """Transactions with arbitrary type, payload, nonce and time, correctly signed by
    lender1 (so they reach the replica and the channel rules), to random channels and
    nodes. Promise: no 5xx; a refused transaction is not in the ledger. Returns
    ``(accepted, refused)``."""
    lender = net.client(0, "lender1")
    refused: list[tuple[int, str, str]] = []
    accepted = 0
    problems: list[str] = []

    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(
        channel=st.just(CH) | st.sampled_from(CHANNELS), node=st.integers(0, 4),
        tx_type=st.just("loan_event") | _TYPES,
        payload=st.dictionaries(st.text(max_size=12), _VALUES, max_size=5),
        nonce=st.integers(0, 2**63 - 1), skew_ms=st.just(0) | st.integers(-(10**9), 10**9),
        batch=st.booleans(),
    )  # fmt: skip
    def run(
        channel: str, node: int, tx_type: str, payload: dict[str, Any], nonce: int,
        skew_ms: int, batch: bool,
    ) -> None:  # fmt: skip
        nonlocal accepted
        try:
            tx = Transaction(
                network=lender.network, channel=channel, type=tx_type, sender="lender1",
                public_key=lender.signer.public_key, nonce=nonce,
                time_ms=max(0, time.time_ns() // 1_000_000 + skew_ms), payload=payload,
            ).signed(lender.signer)  # fmt: skip
        except LedgerError:
            return  # not even encodable: the client library refuses it
        c = net.client(node, "lender1")
        r = c.submit_batch(channel, [tx]) if batch else c.submit(channel, tx)
        if r.status_code >= 500:
            problems.append(f"{channel} {tx_type}: {r.status_code} {r.text[:300]}")
            return
        doc = r.json()
        res = doc["results"][0] if batch and r.status_code == 200 else doc
        if r.status_code < 300 and res.get("status") in ("pending", "committed"):
            accepted += 1
        else:
            refused.append((node, channel, tx.tx_id.hex()))

    run()
    assert not problems, "\n".join(problems[:20])
    time.sleep(1.0)  # anything wrongly ordered would commit within a few batch intervals
    for node, channel, tx_id in refused:
        r = net.client(node, "bureau").get(f"/v1/channels/{channel}/transactions/{tx_id}")
        assert r.status_code == 404 or r.json()["status"] == "rejected", r.text
    return accepted, len(refused)


def test_signed_transactions_with_arbitrary_fields(net: TestNetwork) -> None:
    accepted, refused = signed_tx_cases(net, 30)
    print(f"arbitrary signed transactions: {accepted} accepted, {refused} refused")
    assert refused > 0


@pytest.mark.slow
def test_signed_transactions_with_arbitrary_fields_long(net: TestNetwork) -> None:
    signed_tx_cases(net, 2000)


@settings(max_examples=25, deadline=None, database=None, phases=[Phase.generate])
@given(body=st.binary(max_size=2048))
def _post_frames(http: httpx.Client, url: str, body: bytes) -> None:
    r = http.post(
        url + "/v1/peer/frames",
        content=body,
        headers={"content-type": "application/msgpack"},
        timeout=REQUEST_TIMEOUT_S,
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_frame", r.text


@settings(max_examples=25, deadline=None, database=None, phases=[Phase.generate])
@given(frame=st.binary(min_size=1, max_size=2048), cut=st.integers(0, 3))
def _stream_frames(http: httpx.Client, url: str, frame: bytes, cut: int) -> None:
    """A stream holding one random (length-prefixed) frame, sometimes cut short."""
    body = len(frame).to_bytes(4, "big") + frame
    body = body[: len(body) - cut]
    r = http.post(
        url + "/v1/peer/stream",
        content=iter([body]),  # a generator body travels chunked, like a real stream
        headers={"content-type": "application/x-wulian-frames"},
        timeout=REQUEST_TIMEOUT_S,
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_frame", r.text


def test_random_peer_frames_are_refused(net: TestNetwork) -> None:
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as http:
        _post_frames(http, net.nodes[2].url)
        _stream_frames(http, net.nodes[2].url)
    text = net.metrics_text(2)
    assert "wulian_peer_rejected_frames_total" in text


def expect(resp: httpx.Response, status: int, code: str) -> None:
    try:
        got = (resp.status_code, resp.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        got = (resp.status_code, resp.text[:200])
    assert got == (status, code)


def result_of(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    results: list[dict[str, Any]] = resp.json()["results"]
    assert len(results) == 1
    return results[0]


def test_a_lender_cannot_write_as_another(net: TestNetwork) -> None:
    l1, l2 = net.client(0, "lender1"), net.client(0, "lender2")
    path = f"/v1/channels/{CH}/transactions"
    before = ledger_snapshot(net)
    # 1. request headers claiming to be lender2, signed with lender1's key
    forged = Client(l1.url, l1.network, "lender2", l1.signer)
    tx = l2.tx(CH, "loan_event", {"k": "as-other-1"})
    expect(forged.request("POST", path, tx.encoded()), 401, "unknown_key")
    # 2. a transaction naming lender2 as sender but signed with lender1's key, sent by lender1
    fake = Transaction(
        network=l1.network, channel=CH, type="loan_event", sender="lender2",
        public_key=l1.signer.public_key, nonce=secrets.randbits(62),
        time_ms=time.time_ns() // 1_000_000, payload={"k": "as-other-2"},
    ).signed(l1.signer)  # fmt: skip
    expect(l1.submit(CH, fake), 403, "forbidden")
    # 3. the same transaction sent by lender2 itself: the key is not lender2's
    expect(l2.submit(CH, fake), 403, "not_permitted")
    # 4. in a batch: the other lender's transaction is refused, the own one goes through
    own = l1.tx(CH, "loan_event", {"k": "as-other-own"})
    theirs = l2.tx(CH, "loan_event", {"k": "as-other-theirs"})
    r = l1.submit_batch(CH, [own, theirs], wait_ms=30_000)
    assert r.status_code == 200, r.text
    res = {x["tx_id"]: x for x in r.json()["results"]}
    assert res[own.tx_id.hex()]["status"] == "committed"
    assert res[theirs.tx_id.hex()]["status"] == "rejected"
    assert res[theirs.tx_id.hex()]["error"]["code"] == "forbidden"
    bureau = net.client(0, "bureau")
    for t in (tx, fake, theirs):
        assert bureau.get(f"{path}/{t.tx_id.hex()}").status_code == 404
    after = ledger_snapshot(net)
    assert after[(0, CH)][0] >= before[(0, CH)][0] + 1  # only `own` was committed
    assert {k: v for k, v in after.items() if k[1] != CH} == {
        k: v for k, v in before.items() if k[1] != CH
    }


def test_reading_without_permission(net: TestNetwork) -> None:
    clerk = net.client(0, CLERK)
    assert clerk.get("/v1/channels/judicial").status_code == 200
    for path in (
        f"/v1/channels/{CH}",
        f"/v1/channels/{CH}/blocks/1",
        f"/v1/channels/{CH}/transactions/{'00' * 32}",
        f"/v1/channels/{CH}/state?prefix=",
        f"/v1/channels/{CH}/stream?from=1",
    ):
        expect(clerk.get(path), 403, "forbidden")
    # a key that is not the org's (someone else's key, or a fresh one) reads nothing
    stranger = Client(clerk.url, clerk.network, "bureau", Ed25519Signer.generate())
    expect(stranger.get(f"/v1/channels/{CH}"), 401, "unknown_key")
    impostor = Client(clerk.url, clerk.network, "bureau", net.signer_of("lender1"))
    expect(impostor.get(f"/v1/channels/{CH}/state?prefix="), 401, "unknown_key")


def nested_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_msgpack(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"  # fixarray(1) … nil


def test_deeply_nested_bodies(net: TestNetwork) -> None:
    lender = net.client(3, "lender1")
    before = ledger_snapshot(net)
    path = f"/v1/channels/{CH}/transactions"
    for depth in (100, 10_000, 1_000_000):
        for target in (path, f"{path}/batch"):
            r = lender.request("POST", target, nested_json(depth), content_type="application/json")
            expect(r, 400, "bad_json")
            expect(lender.request("POST", target, nested_msgpack(depth)), 400, "bad_encoding")
        # nesting inside an otherwise valid batch map
        inner = b'{"txs": [' + nested_json(depth) + b"]}"
        r = lender.request("POST", f"{path}/batch", inner, content_type="application/json")
        assert r.status_code == 400, r.text
        deep_payload = b"\x81\xa3txs\x91" + nested_msgpack(depth)
        r = lender.request("POST", f"{path}/batch", deep_payload)
        assert r.status_code == 400, r.text
    # a signed transaction whose payload nests deeper than the encoding allows
    deep: Any = 1
    for _ in range(200):
        deep = {"d": deep}
    wire = lender.tx(CH, "loan_event", {"k": "shallow"}).to_wire()
    wire["p"] = deep
    body = msgpack.packb(wire, use_bin_type=True)  # no depth limit, unlike ledger.encoding
    assert lender.request("POST", path, body).status_code == 400
    assert ledger_snapshot(net) == before
    assert httpx.get(lender.url + "/healthz", timeout=10).status_code == 200


def test_oversized_bodies_without_content_length(net: TestNetwork) -> None:
    lender = net.client(4, "lender1")
    path = f"/v1/channels/{CH}/transactions"
    before = ledger_snapshot(net)
    chunk = b"\x00" * 65536

    def stream(total: int) -> Iterator[bytes]:
        for _ in range(total // len(chunk)):
            yield chunk

    for target in (path, f"{path}/batch"):
        headers = lender.headers("POST", target, b"")
        headers["content-type"] = "application/msgpack"
        r = lender.http.post(lender.url + target, content=stream(8 * 1024 * 1024), headers=headers)
        expect(r, 413, "body_too_large")
    # a declared length far beyond the limit is refused before the body is read
    headers = lender.headers("POST", path, b"")
    head = f"POST {path} HTTP/1.1\r\nhost: node\r\ncontent-type: application/msgpack\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"content-length: {10**12}\r\n\r\n"
    parts = urlsplit(lender.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=REQUEST_TIMEOUT_S) as s:
        s.sendall(head.encode() + chunk)
        answer = b""
        while b"body_too_large" not in answer and (data := s.recv(65536)):
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"body_too_large" in answer
    # GET routes take no body at all
    r = lender.request("GET", f"/v1/channels/{CH}", b"\x00" * 1024)
    expect(r, 413, "body_too_large")
    assert ledger_snapshot(net) == before


def test_replayed_transactions_commit_once(net: TestNetwork) -> None:
    lenders = [net.client(i, "lender2") for i in range(5)]
    tx = lenders[0].tx(CH, "loan_event", {"k": "replay-me", "v": 7})
    first = lenders[0].submit(CH, tx, wait_ms=30_000)
    assert first.status_code == 200 and first.json()["status"] == "committed", first.text
    height = first.json()["height"]
    net.wait_heights(CH, height, timeout_s=60)  # a node a block behind would say "pending"
    # the same signed transaction, in fresh requests, to every node, alone and in batches
    for c in lenders:
        r = c.submit(CH, tx)
        assert r.status_code == 200 and r.json()["status"] == "committed", r.text
        assert r.json()["height"] == height
        res = result_of(c.submit_batch(CH, [tx]))
        assert res["status"] == "committed" and res["height"] == height
    # replayed while a copy is still pending: one copy is ordered
    tx2 = lenders[1].tx(CH, "loan_event", {"k": "replay-pending", "v": 8})
    answers = [c.submit(CH, tx2) for c in lenders]
    assert all(a.status_code in (200, 202) for a in answers), [a.text for a in answers]
    r = lenders[2].submit(CH, tx2, wait_ms=30_000)
    assert r.json()["status"] == "committed", r.text
    top = max(net.heights(CH))
    net.wait_heights(CH, top, timeout_s=60)
    bureau = net.client(0, "bureau")
    seen = {tx.tx_id.hex(): 0, tx2.tx_id.hex(): 0}
    for h in range(height, top + 1):
        for t in bureau.block(CH, h)["txs"]:
            tid = t["id"]["$hex"]
            if tid in seen:
                seen[tid] += 1
    assert seen == {tx.tx_id.hex(): 1, tx2.tx_id.hex(): 1}, seen
    # a request replayed byte for byte (same headers) is refused as such
    body = encode({"txs": [tx.to_wire()]})
    target = f"/v1/channels/{CH}/transactions/batch"
    headers = lenders[3].headers("POST", target, body)
    headers["content-type"] = "application/msgpack"
    ok = lenders[3].http.post(lenders[3].url + target, content=body, headers=headers)
    assert ok.status_code == 200
    again = lenders[3].http.post(lenders[3].url + target, content=body, headers=headers)
    expect(again, 401, "replayed_request")
