"""One lying node must not make the record store record a transaction as committed
(or rejected) that the network never committed (or refused): commit claims are
checked against the certified block, refusals against other nodes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from clients import Client, NotCommitted, PreparedTransaction, SubmitRejected
from ledger.blocks import Transaction
from ledger.encoding import decode
from tests.clients.fakenet import FakeNetwork, make_client, wire_to_json

Handler = Callable[[httpx.Request], httpx.Response | None]


def with_liar(fake: FakeNetwork, tmp_path: Path, liar: Handler, **kw: Any) -> Client:
    """A client whose first node answers with ``liar`` (None: honestly)."""
    bad = fake.urls[0]

    def handle(request: httpx.Request) -> httpx.Response:
        if f"{request.url.scheme}://{request.url.host}" == bad:
            answer = liar(request)
            if answer is not None:
                fake.requests.append(request)
                return answer
        return fake.handle(request)

    return make_client(
        fake, tmp_path, http=httpx.Client(transport=httpx.MockTransport(handle)), **kw
    )


def claim(height: int) -> Handler:
    """Answer every submission "committed at ``height``, VALID" without forwarding it."""
    ok = {"valid": True, "code": "ok", "message": ""}

    def claimed(tx: Transaction, index: int) -> dict[str, Any]:
        return {"tx_id": tx.tx_id.hex(), "status": "committed", "height": height,
                "index": index, "outcome": ok}  # fmt: skip

    def liar(request: httpx.Request) -> httpx.Response | None:
        if request.method != "POST":
            return None
        if request.url.path.endswith("/transactions"):
            tx = Transaction.decode(request.read())
            return httpx.Response(200, json=claimed(tx, 0))
        txs = [Transaction.from_wire(t) for t in decode(request.read())["txs"]]
        return httpx.Response(200, json={"results": [claimed(t, k) for k, t in enumerate(txs)]})

    return liar


def kv(client: Client, key: str) -> PreparedTransaction:
    return client.prepare(client.build("supervision", "loan_event", {"k": key}))


def test_a_false_commit_claim_is_not_recorded_and_another_node_commits_it(
    fake: FakeNetwork, tmp_path: Path
) -> None:
    with make_client(fake, tmp_path / "other") as other:  # a real block 1 exists
        other.submit(kv(other, "first"))
    with with_liar(fake, tmp_path, claim(1)) as c:
        p = kv(c, "a")
        st = c.submit(p)
        assert st.valid and st.height == 2  # verified: where the honest node put it
        assert fake.committed[p.tx_id][1] == 2
        assert c.store is not None and c.store.get(p.tx_id).state == "committed"
        assert c.store.get(p.tx_id).height == 2


def test_a_commit_claim_with_a_spliced_block_view_is_refused(
    fake: FakeNetwork, tmp_path: Path
) -> None:
    """The liar also serves block 1: the real, certified view with our transaction
    spliced in (with or without a proof). Only the liar is reachable: never recorded,
    still pending for recover()."""
    with make_client(fake, tmp_path / "other") as other:
        other.submit(kv(other, "first"))
    spliced: dict[str, Any] = {}
    lie = claim(1)

    def liar(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/blocks/1"):
            return httpx.Response(200, json=wire_to_json(spliced))
        return lie(request)

    for u in fake.urls[1:]:
        fake.behaviour[u].down = True
    with with_liar(fake, tmp_path, liar, commit_timeout=1.0) as c:
        p = kv(c, "b")
        view = fake.block_view("supervision", 1, None)  # the honest, complete block
        entry = {"index": 1, "id": p.tx_id, "tx": p.tx.to_wire(),
                 "outcome": {"valid": True, "code": "ok", "message": ""}}  # fmt: skip
        for variant in ({**view, "txs": [*view["txs"], entry]},
                        {**view, "scoped": True, "txs": [{**entry, "proof": []}]}):  # fmt: skip
            spliced.clear()
            spliced.update(variant)
            with pytest.raises(NotCommitted) as err:
                c.submit(p)
            assert "not verified" in err.value.last_status
            assert c.store is not None and c.store.get(p.tx_id).state == "sent"
            assert [q.tx_id for q in c.pending()] == [p.tx_id]
            assert c.status(p.tx_id).status == "unknown"  # status() checks too
        assert p.tx_id not in fake.committed


def test_submit_many_checks_each_claimed_height_once_and_resubmits_false_claims(
    fake: FakeNetwork, tmp_path: Path
) -> None:
    with with_liar(fake, tmp_path, claim(7)) as c:
        items = [kv(c, f"m{i}") for i in range(100)]
        sts = c.submit_many(items)
        assert all(s.valid for s in sts) and all(i.tx_id in fake.committed for i in items)
        assert {s.height for s in sts} == {1}
        # one block request per distinct claimed height per answer: 7 (the lie), then 1
        assert fake.block_requests == 2
        assert c.store is not None and c.store.count("committed") == 100
    # an honest network: 100 transactions in one batch and one block cost one GET
    fake.block_requests = 0
    with make_client(fake, tmp_path / "honest") as c:
        assert all(s.valid for s in c.submit_many([kv(c, f"n{i}") for i in range(100)]))
        assert fake.block_requests == 1


def test_one_nodes_refusal_is_not_final_while_other_nodes_can_be_asked(
    fake: FakeNetwork, tmp_path: Path
) -> None:
    error = {"code": "invalid_transaction", "message": "lie"}

    def refuse(request: httpx.Request) -> httpx.Response | None:
        if request.method != "POST":
            return None
        if request.url.path.endswith("/batch"):
            ids = [Transaction.from_wire(t).tx_id.hex() for t in decode(request.read())["txs"]]
            results = [{"tx_id": i, "status": "rejected", "error": error} for i in ids]
            return httpx.Response(200, json={"results": results})
        return httpx.Response(422, json={"error": error})

    with with_liar(fake, tmp_path, refuse) as c:
        assert c.submit(kv(c, "r1")).valid
        assert all(s.valid for s in c.submit_many([kv(c, f"r{i}") for i in range(2, 12)]))
        assert c.store is not None and c.store.count("rejected") == 0
        # the only node left refuses: not final, the transaction stays pending
        for u in fake.urls[1:]:
            fake.behaviour[u].down = True
        p = kv(c, "alone")
        with pytest.raises(SubmitRejected) as err:
            c.submit_async(p)
        assert not err.value.final
        with pytest.raises(NotCommitted, match="no other node could confirm"):
            c.submit(p, timeout=0.5)
        assert c.store.get(p.tx_id).state in ("unsent", "sent")
        assert p.tx_id in [q.tx_id for q in c.pending()]
    # refused by every node asked (an honest refusal): final after two nodes
    for u in fake.urls[1:]:
        fake.behaviour[u].down = False
    fake.reject = ("invalid_transaction", "bad payload")
    with make_client(fake, tmp_path / "honest") as c:
        p = kv(c, "bad")
        with pytest.raises(SubmitRejected) as err:
            c.submit(p)
        assert err.value.final
        assert c.store is not None and c.store.get(p.tx_id).state == "rejected"
        posts = [
            r for r in fake.requests if r.method == "POST" and r.url.path.endswith("/transactions")
        ]
        assert len({r.url.host for r in posts[-2:]}) == 2
        sts = c.submit_many([kv(c, f"bad{i}") for i in range(3)])
        assert [s.status for s in sts] == ["rejected"] * 3
        assert c.store.count("rejected") == 4


def test_the_verified_outcome_is_the_one_recorded(fake: FakeNetwork, tmp_path: Path) -> None:
    """The status and the block view disagree on the outcome: the certified block's
    view is what the SDK returns and records (here: INVALID)."""
    fake.outcome = ("duplicate_report_id", "seen before")

    def says_valid(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST" and request.url.path.endswith("/transactions"):
            resp = fake.handle(request)
            doc = json.loads(resp.content)
            doc["outcome"] = {"valid": True, "code": "ok", "message": ""}
            return httpx.Response(resp.status_code, json=doc)
        return None

    with with_liar(fake, tmp_path, says_valid) as c:
        st = c.submit(kv(c, "o"), check=False)
        assert st.committed and not st.valid and st.outcome is not None
        assert st.outcome.code == "duplicate_report_id"
        assert c.store is not None and c.store.count("invalid") == 1


def test_status_verifies_a_commit_once(fake: FakeNetwork, tmp_path: Path) -> None:
    """`status()` polls (waiting for evidence codes) of a commit the store already
    holds cost no block request; a client that does not hold it verifies it."""
    with make_client(fake, tmp_path) as c:
        p = kv(c, "s")
        c.submit(p)
        assert fake.block_requests == 1
        assert all(c.status(p.tx_id).valid for _ in range(3))
        assert fake.block_requests == 1
    with make_client(fake, tmp_path / "elsewhere") as c:
        assert c.status(p.tx_id).valid
        assert fake.block_requests == 2


def test_after_the_validators_change_a_commit_needs_f_plus_1_nodes_serving_its_block(
    fake: FakeNetwork, tmp_path: Path
) -> None:
    """Governance re-keyed the validators: the SDK knows only the genesis keys, so it
    cannot check a certificate itself. It takes the commit once f + 1 = 2 distinct
    nodes (at least one honest) serve the very same block header, and not on one
    node's word."""
    fake.rekeyed = True
    with make_client(fake, tmp_path) as c:
        p = kv(c, "after-rekey")
        before = fake.block_requests
        st = c.submit(p)
        assert st.valid and st.height == fake.committed[p.tx_id][1]
        assert fake.block_requests - before == 2  # the block from two distinct nodes
        assert c.store is not None and c.store.get(p.tx_id).state == "committed"
    for url in fake.urls[1:]:  # now only one node answers: its word is not enough
        fake.behaviour[url].down = True
    with make_client(fake, tmp_path / "alone", commit_timeout=1.0) as c:
        p = kv(c, "one-node")
        with pytest.raises(NotCommitted):
            c.submit(p, timeout=0.5)
        assert c.store is not None and c.store.get(p.tx_id).state != "committed"


def test_a_refusal_that_depends_on_governance_never_becomes_final(
    fake: FakeNetwork, tmp_path: Path
) -> None:
    """``not_permitted`` depends on governance as each node stands: two nodes behind a
    key rotation refuse what the others take. Such a refusal is raised but never
    recorded as final; a refusal every node decides alike (a bad payload) is."""
    fake.reject = ("not_permitted", "the key is not an active key of 'lender1'")
    with make_client(fake, tmp_path) as c:
        p = kv(c, "rotated")
        with pytest.raises(NotCommitted, match="not_permitted"):
            c.submit(p, timeout=0.5)  # every node asked refused; none of it final
        assert c.store is not None and c.store.get(p.tx_id).state in ("unsent", "sent")
        assert p.tx_id in [q.tx_id for q in c.pending()]


def test_two_urls_of_one_node_count_once(fake: FakeNetwork, tmp_path: Path) -> None:
    """Every URL names the same node id: they are one node, counted once however many
    URLs repeat it, and the quorums are capped at the one node the client knows."""
    for url in fake.urls:
        fake.behaviour[url].node_id = fake.genesis.nodes[0].node_id
    fake.reject = ("invalid_transaction", "bad payload")
    with make_client(fake, tmp_path) as c:
        p = kv(c, "one-node")
        with pytest.raises(SubmitRejected) as err:
            c.submit(p)
        assert c._core.pool.distinct(range(len(fake.urls))) == 1
        # one node, so its word is all this client has: final only because the client
        # knows no other node (refusal_quorum is capped at the distinct nodes known)
        assert c._core.refusal_quorum("supervision") == 1
        assert err.value.final
