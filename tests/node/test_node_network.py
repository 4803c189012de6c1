"""Five real node processes: commits agree, bad input is refused, reads are scoped.

One network for the module (started once); tests here do not kill nodes (see
test_node_faults.py for crashes and catch-up).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ledger.blocks import Transaction
from ledger.encoding import encode
from ledger.merkle import verify_inclusion
from node.jsonwire import json_to_wire, wire_to_json
from tests.node.netfixture import TestNetwork, start_network

pytestmark = pytest.mark.network

CH = "supervision"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNetwork]:
    network = start_network(tmp_path_factory.mktemp("net"))
    try:
        yield network
    finally:
        codes = network.stop()
        # a clean SIGTERM shutdown exits 0
        assert all(c == 0 for c in codes.values()), codes


def block_hashes(net: TestNetwork, channel: str, height: int) -> set[str]:
    hashes = set()
    for i in range(5):
        c = net.client(i, "bureau")
        try:
            hashes.add(c.block(channel, height)["hash"]["$hex"])
        finally:
            c.close()
    return hashes


def test_transactions_commit_and_all_nodes_agree(net: TestNetwork) -> None:
    lender = net.client(1, "lender1")
    txs = [lender.tx(CH, "loan_event", {"k": f"agree-{i}", "v": i}) for i in range(30)]
    r = lender.submit_batch(CH, txs[:20], wait_ms=20_000)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["tx_id"] for x in results] == [t.tx_id.hex() for t in txs[:20]]
    assert all(x["status"] == "committed" for x in results), results
    # single submissions through other nodes
    for i, tx in enumerate(txs[20:]):
        c = net.client(i % 5, "lender1")
        r = c.submit(CH, tx, wait_ms=20_000)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "committed"
        assert r.json()["outcome"]["valid"] is True
    top = max(net.heights(CH))
    hs = net.wait_heights(CH, top)
    assert min(hs) >= 1
    for h in range(1, min(hs) + 1):
        assert len(block_hashes(net, CH, h)) == 1, f"nodes disagree at height {h}"
    # every committed transaction is in exactly one block, at the reported place
    st = lender.get(f"/v1/channels/{CH}/transactions/{txs[0].tx_id.hex()}").json()
    blk = lender.block(CH, st["height"])
    assert blk["txs"][st["index"]]["id"]["$hex"] == txs[0].tx_id.hex()


def test_stateful_outcome_and_idempotent_resubmission(net: TestNetwork) -> None:
    lender = net.client(2, "lender1")
    first = lender.tx(CH, "loan_event", {"k": "once", "v": 1})
    again = lender.tx(CH, "loan_event", {"k": "once", "v": 2})
    r1 = lender.submit(CH, first, wait_ms=20_000)
    assert r1.status_code == 200 and r1.json()["outcome"] == {
        "valid": True,
        "code": "ok",
        "message": "",
    }
    r2 = lender.submit(CH, again, wait_ms=20_000)
    assert r2.status_code == 200
    assert r2.json()["outcome"]["valid"] is False
    assert r2.json()["outcome"]["code"] == "exists"
    # the very same signed tx, resubmitted to other nodes: same id, same place (once
    # every node has committed that height: node 2's answer does not wait for the rest)
    net.wait_heights(CH, r1.json()["height"])
    for i in range(5):
        r = net.client(i, "lender1").submit(CH, first)
        assert r.status_code == 200, r.text
        assert r.json()["tx_id"] == first.tx_id.hex()
        assert (r.json()["height"], r.json()["index"]) == (
            r1.json()["height"],
            r1.json()["index"],
        )
    # JSON submission of a tx is accepted too (bytes as {"$hex"})
    j = lender.tx(CH, "loan_event", {"k": "json-sub", "v": b"\x00\x01"})
    body = json.dumps(wire_to_json(j.to_wire())).encode()
    r = lender.request(
        "POST", f"/v1/channels/{CH}/transactions?wait_ms=20000", body,
        content_type="application/json",
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["tx_id"] == j.tx_id.hex()


def test_bad_input_is_refused_and_changes_nothing(net: TestNetwork) -> None:
    lender = net.client(0, "lender1")
    other_net_tx = Transaction(
        network=b"\x00" * 32, channel=CH, type="loan_event", sender="lender1",
        public_key=lender.signer.public_key, nonce=1, time_ms=int(time.time() * 1000),
        payload={"k": "x", "v": 1},
    ).signed(lender.signer)  # fmt: skip
    good = lender.tx(CH, "loan_event", {"k": "never-1", "v": 1})
    wrong_type = lender.tx(CH, "set_rule", {"k": "never-2", "v": 1})
    bad_payload = lender.tx(CH, "loan_event", {"zzz": 1})
    other_channel = lender.tx("judicial", "file_case", {"k": "never-3", "v": 1})
    forged = Transaction(
        good.network, good.channel, good.type, good.sender, good.public_key, good.nonce,
        good.time_ms, {"k": "never-4", "v": 9}, good.signature,
    )  # fmt: skip
    before = net.heights(CH)
    path = f"/v1/channels/{CH}/transactions"
    cases: list[tuple[str, httpx.Response, int, str]] = [
        ("garbage msgpack", lender.request("POST", path, b"\xc1\xc1"), 400, "bad_encoding"),
        (
            "non-canonical msgpack",
            lender.request("POST", path, b"\x81\xa1a\xcc\x01"),
            400,
            "bad_encoding",
        ),
        (
            "bad json",
            lender.request("POST", path, b"{", content_type="application/json"),
            400,
            "bad_json",
        ),
        (
            "json float",
            lender.request("POST", path, b'{"a": 1.5}', content_type="application/json"),
            400,
            "bad_json",
        ),
        ("not a tx", lender.request("POST", path, encode({"a": 1})), 400, "bad_schema"),
        (
            "wrong media type",
            lender.request("POST", path, b"x", content_type="text/plain"),
            415,
            "unsupported_media_type",
        ),
        (
            "oversized body",
            lender.request("POST", path, b"\x00" * (5 * 1024 * 1024)),
            413,
            "body_too_large",
        ),
        (
            "unsigned",
            lender.request("POST", path, good.encoded(), sign=False),
            401,
            "unauthenticated",
        ),
        (
            "tampered signature",
            lender.request(
                "POST",
                path,
                good.encoded(),
                extra_headers={"X-Wulian-Signature": "00" * 64},
            ),
            401,
            "bad_signature",
        ),
        (
            "unknown channel",
            lender.request("POST", "/v1/channels/nope/transactions", good.encoded()),
            404,
            "unknown_channel",
        ),
        ("other network", lender.submit(CH, other_net_tx), 400, "wrong_network"),
        (
            "channel mismatch",
            lender.request("POST", path, other_channel.encoded()),
            400,
            "wrong_channel",
        ),
        ("unpermitted type", lender.submit(CH, wrong_type), 403, "not_permitted"),
        ("payload rules", lender.submit(CH, bad_payload), 422, "invalid_transaction"),
        ("forged tx signature", lender.submit(CH, forged), 422, "bad_transaction_signature"),
        (
            "not own tx",
            net.client(0, "lender2").submit(CH, lender.tx(CH, "loan_event", {"k": "n5"})),
            403,
            "forbidden",
        ),
        ("bad tx id", lender.get(f"{path}/xyz"), 400, "bad_request"),
        ("unknown tx", lender.get(f"{path}/{'00' * 32}"), 404, "not_found"),
        ("bad height", lender.get(f"/v1/channels/{CH}/blocks/-1"), 400, "bad_request"),
        # "³" is a digit to str.isdigit, not to int(): was a 500 (found by hypothesis)
        ("unicode digit", lender.get(f"/v1/channels/{CH}/blocks/%C2%B39"), 400, "bad_request"),
        ("missing block", lender.get(f"/v1/channels/{CH}/blocks/999999"), 404, "not_found"),
        ("bad hash", lender.get(f"/v1/channels/{CH}/blocks/by-hash/00"), 400, "bad_request"),
        ("lender state query", lender.get(f"/v1/channels/{CH}/state?prefix="), 403, "forbidden"),
        (
            "batch too big",
            lender.submit_batch(CH, [good] * 2001),
            413,
            "too_many_transactions",
        ),
        ("no route", lender.get("/v1/nothing"), 404, "not_found"),
        (
            "batch not a map of txs",
            lender.request("POST", f"{path}/batch", encode([good.to_wire()])),
            400,
            "bad_schema",
        ),
        (
            "batch with a bad tx",
            lender.request("POST", f"{path}/batch", encode({"txs": [{"v": 1}]})),
            400,
            "bad_schema",
        ),
        (
            "batch repeats a tx",
            lender.submit_batch(CH, [good, good]),
            400,
            "bad_request",
        ),
        ("stream bad from", lender.get(f"/v1/channels/{CH}/stream?from=abc"), 400, "bad_request"),
        # over 4,300 digits int() itself refuses: was a 500
        (
            "stream from of 4,301 digits",
            lender.get(f"/v1/channels/{CH}/stream?from={'9' * 4301}"),
            400,
            "bad_request",
        ),
        (
            "state limit of 4,301 digits",
            net.client(0, "bureau").get(f"/v1/channels/{CH}/state?prefix=&limit={'9' * 4301}"),
            400,
            "bad_request",
        ),
        ("status unknown channel", lender.get("/v1/channels/nope"), 404, "unknown_channel"),
        (
            "state bad hex",
            net.client(0, "bureau").get(f"/v1/channels/{CH}/state?key=zz"),
            400,
            "bad_request",
        ),
        (
            "state both params",
            net.client(0, "bureau").get(f"/v1/channels/{CH}/state?key=00&prefix=00"),
            400,
            "bad_request",
        ),
        (
            "wait_ms out of range",
            lender.submit(CH, good, wait_ms=10**9),
            400,
            "bad_request",
        ),
        (
            "GET with a body",
            lender.request("GET", f"/v1/channels/{CH}", b"x"),
            413,
            "body_too_large",
        ),
    ]
    # replay of an accepted request: same headers, same body
    headers = lender.headers("GET", f"/v1/channels/{CH}")
    first = lender.http.get(lender.url + f"/v1/channels/{CH}", headers=headers)
    assert first.status_code == 200
    replay = lender.http.get(lender.url + f"/v1/channels/{CH}", headers=headers)
    cases.append(("replayed request", replay, 401, "replayed_request"))
    failures = []
    for name, resp, status, code in cases:
        try:
            doc = resp.json()
            got = (resp.status_code, doc["error"]["code"])
        except (ValueError, KeyError, TypeError):
            got = (resp.status_code, resp.text[:80])
        if got != (status, code):
            failures.append(f"{name}: expected {(status, code)}, got {got}")
    assert not failures, "\n".join(failures)
    # nothing refused was committed, and every node still serves
    for tx in (good, wrong_type, bad_payload, forged):
        r = lender.get(f"{path}/{tx.tx_id.hex()}")
        assert r.status_code == 404 or r.json()["status"] == "rejected", r.text
    time.sleep(0.5)
    assert net.heights(CH) == before or min(net.heights(CH)) >= min(before)
    for i in range(5):
        assert lender.http.get(net.nodes[i].url + "/healthz").status_code == 200


def test_scoped_reads_hide_other_lenders(net: TestNetwork) -> None:
    l1, l2 = net.client(3, "lender1"), net.client(3, "lender2")
    mine = l1.tx(CH, "loan_event", {"k": "scoped-l1", "v": 1})
    theirs = l2.tx(CH, "loan_event", {"k": "scoped-l2", "v": 2})
    r = l1.submit_batch(CH, [mine], wait_ms=20_000)
    assert r.status_code == 200
    r = l2.submit_batch(CH, [theirs], wait_ms=20_000)
    assert r.json()["results"][0]["status"] == "committed"
    # status: own visible, other's hidden
    assert l1.get(f"/v1/channels/{CH}/transactions/{mine.tx_id.hex()}").status_code == 200
    assert l1.get(f"/v1/channels/{CH}/transactions/{theirs.tx_id.hex()}").status_code == 404
    # block views: only own transactions, each with a valid inclusion proof
    bureau = net.client(3, "bureau")
    for tx, owner in ((mine, l1), (theirs, l2)):
        st = bureau.get(f"/v1/channels/{CH}/transactions/{tx.tx_id.hex()}").json()
        full = bureau.block(CH, st["height"])
        assert full["scoped"] is False and len(full["txs"]) == full["tx_count"]
        for viewer in (l1, l2):
            view = viewer.block(CH, st["height"])
            assert view["scoped"] is True
            senders = {t["tx"]["from"] for t in view["txs"]}
            assert senders <= {viewer.org}
            for t in view["txs"]:
                header = json_to_wire(view["header"])
                verify_inclusion(  # raises ProofError if the proof is wrong
                    bytes.fromhex(t["id"]["$hex"]),
                    t["index"],
                    view["tx_count"],
                    [bytes.fromhex(p["$hex"]) for p in t["proof"]],
                    header["txr"],
                )
        assert any(t["id"]["$hex"] == tx.tx_id.hex() for t in owner.block(CH, st["height"])["txs"])
    # full readers may query state; msgpack answers are canonical
    key = b"kv/scoped-l1".hex()
    r = bureau.get(f"/v1/channels/{CH}/state?key={key}", accept="application/msgpack")
    assert r.status_code == 200 and r.headers["content-type"] == "application/msgpack"


def test_stream_is_resumable(net: TestNetwork) -> None:
    bureau = net.client(0, "bureau")
    lender = net.client(0, "lender1")
    while bureau.height(CH) < 3:  # independent of the other tests (xdist may split them)
        tx = lender.tx(CH, "loan_event", {"k": f"stream-{bureau.height(CH)}-{time.time_ns()}"})
        assert lender.submit(CH, tx, wait_ms=20_000).status_code == 200
    top = bureau.height(CH)
    path = f"/v1/channels/{CH}/stream?from=2"
    ids: list[int] = []
    with bureau.http.stream(
        "GET", bureau.url + path, headers=bureau.headers("GET", path), timeout=10
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("id: "):
                ids.append(int(line[4:]))
            if line.startswith("data: "):
                doc = json.loads(line[6:])
                assert doc["height"] == ids[-1]
            if len(ids) >= 2:
                break
    assert ids == [2, 3]
    # a Last-Event-ID that is no height (here over 4,300 digits: was a 500) is ignored
    path = f"/v1/channels/{CH}/stream"
    headers = {**bureau.headers("GET", path), "Last-Event-ID": "9" * 4301}
    with bureau.http.stream("GET", bureau.url + path, headers=headers, timeout=10) as resp:
        assert resp.status_code == 200
    # resume after 3 with Last-Event-ID; a new block arrives live
    headers = {**bureau.headers("GET", path), "Last-Event-ID": str(top)}
    with bureau.http.stream("GET", bureau.url + path, headers=headers, timeout=20) as resp:
        lender.submit(CH, lender.tx(CH, "loan_event", {"k": "live", "v": 1}))
        for line in resp.iter_lines():
            if line.startswith("id: "):
                assert int(line[4:]) == top + 1
                break


def test_operations_endpoints(net: TestNetwork, tmp_path: Path) -> None:
    url = net.nodes[0].url
    http = net.client(0, "bureau").http
    lender = net.client(0, "lender1")  # a commit through node 0 fills its latency histogram
    tx = lender.tx(CH, "loan_event", {"k": f"ops-{time.time_ns()}"})
    assert lender.submit(CH, tx, wait_ms=20_000).status_code == 200
    assert http.get(url + "/healthz").json()["status"] == "ok"
    deadline = time.monotonic() + 15  # "catching up" may show for a moment after commits
    while (ready := http.get(url + "/readyz")).status_code != 200:
        assert time.monotonic() < deadline, ready.text
        time.sleep(0.2)
    assert ready.json()["channels"][CH]["ready"] is True
    assert http.get(url + f"/v1/channels/{CH}").status_code == 401  # counted by code
    text = net.metrics_text(0)
    for name in (
        "wulian_height{",
        "wulian_view{",
        "wulian_commit_latency_seconds_bucket",
        "wulian_peer_up{",
        'wulian_rejected_requests_total{code="unauthenticated"}',
    ):
        assert name in text, name
    assert http.get(url + "/openapi.json").json()["info"]["title"] == "wulian node"
    info = http.get(url + "/v1/info").json()
    assert info["genesis_hash"] == net.genesis.hash.hex()
    # structured logs carry the node id
    line = net.nodes[0].log_path.read_text().splitlines()[0]
    assert json.loads(line)["node"] == net.nodes[0].node_id
