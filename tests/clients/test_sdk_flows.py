"""Evidence, verification, the event stream, queries and the async twin, against the
in-memory fake network (real blocks, certificates and receipts)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from clients import (
    AsyncClient,
    Client,
    EvidenceNotAnchored,
    LoanEvent,
    PseudonymKey,
    ReceiptInvalid,
    Record,
    SubmitRejected,
    record_document,
    record_from_document,
)
from clients._sse import SSEDecoder
from tests.clients.fakenet import LENDER, FakeNetwork, make_client

ID = "11010519491231002X"


def with_records(client: Client, key: str, n: int = 2) -> tuple[object, list[Record]]:
    recs = [Record.new({"loan": key, "i": i}) for i in range(n)]
    payload = {"k": key, "records": [{"c": r.commitment} for r in recs]}
    return client.prepare(client.build("supervision", "loan_event", payload, records=recs)), recs


# ---------------------------------------------------------------------------- SSE


def test_sse_decoder_handles_split_chunks_crlf_comments_and_multiline() -> None:
    stream = (
        b': hello\r\n\r\nid: 4\r\nevent: block\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
        b"event: block\ndata: x\n\n"
    )
    for step in (1, 3, len(stream)):
        d = SSEDecoder()
        events = []
        for i in range(0, len(stream), step):
            events += d.feed(stream[i : i + step])
        assert [(e.event, e.data, e.id) for e in events] == [
            ("block", '{"a":\n1}', "4"),
            ("block", "x", None),
        ]
        assert d.last_id == "4"


# ---------------------------------------------------------------------------- evidence


def test_evidence_waits_for_anchoring_then_verifies_the_receipt(
    fake: FakeNetwork, client: Client, tmp_path: Path
) -> None:
    fake.anchor_after = 3  # anchored after a few status polls
    p, recs = with_records(client, "ev1")
    client.submit(p)  # type: ignore[arg-type]
    ev = client.evidence(p.tx_id, index=1, timeout=30)  # type: ignore[attr-defined]
    assert ev.code == p.expected_evidence_codes()[1]  # type: ignore[attr-defined]
    assert ev.report.ok and ev.report.data_verified
    assert ev.record == recs[1]
    assert client.store is not None
    assert client.store.record(p.tx_id, 1).evidence_code == ev.code  # type: ignore[attr-defined]
    # by record too
    assert client.evidence(recs[0], timeout=5).code == p.expected_evidence_codes()[0]  # type: ignore[attr-defined]
    # offline verification, record file round trip
    doc = json.loads(json.dumps(record_document(recs[1])))
    assert client.verify(ev.receipt, record_from_document(doc)).data_verified
    tampered = Record(recs[1].data.replace(b"ev1", b"ev2"), recs[1].salt)
    report = client.verify(ev.receipt, tampered)
    assert not report.data_verified
    assert [c.name for c in report.failures] == ["commitment"]


def test_a_receipt_that_does_not_verify_is_refused(fake: FakeNetwork, client: Client) -> None:
    p, _ = with_records(client, "ev2", n=1)
    client.submit(p)  # type: ignore[arg-type]
    (code,) = fake.anchor(1)
    fake.receipts[code]["judicial"]["certificate"]["votes"] = fake.receipts[code]["judicial"][
        "certificate"
    ]["votes"][:2]
    with pytest.raises(ReceiptInvalid) as err:
        client.evidence(p.tx_id, timeout=5)  # type: ignore[attr-defined]
    assert "judicial_certificate" in str(err.value) and err.value.stage == "verify"


def test_evidence_times_out_when_not_anchored(fake: FakeNetwork, client: Client) -> None:
    p, _ = with_records(client, "ev3", n=1)
    client.submit(p)  # type: ignore[arg-type]
    with pytest.raises(EvidenceNotAnchored) as err:
        client.evidence(p.tx_id, timeout=1.0)  # type: ignore[attr-defined]
    assert err.value.tx_id == p.tx_id and "no receipt yet" in str(err.value)  # type: ignore[attr-defined]


def test_evidence_of_a_transaction_without_record_leaves(client: Client) -> None:
    p = client.prepare(client.build("supervision", "loan_event", {"k": "plain"}))
    client.submit(p)
    with pytest.raises(EvidenceNotAnchored, match="no record leaves"):
        client.evidence(p.tx_id, timeout=1.0)


# ---------------------------------------------------------------------------- stream


def test_event_stream_yields_our_transactions_and_resumes_from_checkpoint(
    fake: FakeNetwork, tmp_path: Path
) -> None:
    with make_client(fake, tmp_path) as c:
        mine = [c.submit(c.prepare(c.build("supervision", "loan_event", {"k": f"s{i}"})))
                for i in range(3)]  # fmt: skip
        fake.stream_blocks = 2  # the node closes the stream after two blocks
        it = c.events(start=1, checkpoint="sup")
        first = [next(it), next(it)]
        assert [(e.height, e.tx_id) for e in first] == [(1, mine[0].tx_id), (2, mine[1].tx_id)]
        assert all(e.valid and e.tx_type == "loan_event" for e in first)
        it.close()  # type: ignore[attr-defined]
        assert c.store is not None and c.store.checkpoint("sup") == 1  # block 2 not consumed
    fake.stream_blocks = None
    with make_client(fake, tmp_path) as c:
        it = c.events(checkpoint="sup")
        again = [next(it), next(it)]
        assert [e.height for e in again] == [2, 3]
        it.close()  # type: ignore[attr-defined]


def test_event_stream_verifies_certificates_when_asked(fake: FakeNetwork, client: Client) -> None:
    st = client.submit(client.prepare(client.build("supervision", "loan_event", {"k": "v"})))
    block, cert, outcomes = fake.blocks["supervision"][0]
    it = client.events(start=1, verify=True)
    assert next(it).tx_id == st.tx_id
    it.close()  # type: ignore[attr-defined]
    # a certificate with too few votes makes every node's stream unusable
    from ledger.certificate import CommitCertificate

    fake.blocks["supervision"][0] = (
        block,
        CommitCertificate(cert.channel, cert.height, cert.view, cert.block_hash, cert.votes[:1]),
        outcomes,
    )
    from clients import NodeUnreachable

    with pytest.raises(NodeUnreachable) as err:
        next(client.events(start=1, verify=True))
    assert "certificate" in str(err.value) or "quorum" in str(err.value)


# ---------------------------------------------------------------------------- queries


def test_credit_check_reads_the_answer_with_bytes(fake: FakeNetwork, client: Client) -> None:
    ref = PseudonymKey(b"\x01" * 32).borrower_ref(ID)
    fake.result = {"borrower_ref": ref, "lenders_with_open_loans": 3,
                   "other_lenders_with_open_loans": 2, "open_loans": 4}  # fmt: skip
    report = client.credit_check(ref)
    assert report.answer["borrower_ref"] == ref
    assert report.other_lenders_with_open_loans == 2 and report.multi_lender
    posts = [r for r in fake.requests if r.method == "POST"]
    assert len(posts) == 1 and "wait_ms" not in str(posts[0].url)
    with pytest.raises(Exception, match="purpose"):
        client.credit_check(ref, purpose="curiosity")


def test_raw_id_number_never_leaves_the_process(fake: FakeNetwork, tmp_path: Path) -> None:
    key = PseudonymKey(b"\x01" * 32)
    with make_client(fake, tmp_path, pseudonym_key=key) as c:
        doc = {
            "report_id": "r-1", "loan_id": "L-1", "id_number": ID, "event": "contract",
            "amount_cents": 100, "rate_bp": 100, "term_months": 3, "event_time_ms": 5,
        }  # fmt: skip
        ev = LoanEvent.from_json(doc, pseudonym=key)
        fake.result = {"lenders_with_open_loans": 0}
        assert not c.credit_check(c.borrower_ref(ID)).multi_lender
        p = c.prepare_report(ev)
        fake.reject = ("invalid_transaction", "test rules")  # the fake does not model loans
        with pytest.raises(SubmitRejected):
            c.submit(p)
    sent = b"".join(r.read() + str(r.url).encode() + str(r.headers).encode() for r in fake.requests)
    needles = [ID.encode(), ID[:17].encode(), ID.lower().encode()]
    assert all(n not in sent for n in needles)
    stored = b"".join(f.read_bytes() for f in (tmp_path / "store").iterdir() if f.is_file())
    assert stored and all(n not in stored for n in needles)
    assert key.borrower_ref(ID) in stored  # the reference is what is kept


def test_register_asset_and_feedback_build_valid_payloads(
    fake: FakeNetwork, client: Client
) -> None:
    st = client.register_asset(
        asset_id="A-1", loan_id="L-1", claimed_state="active", claimed_outstanding_cents=100,
        source_height=3,
    )  # fmt: skip
    assert st.valid
    with pytest.raises(Exception, match="claimed_state"):
        client.register_asset(
            asset_id="A-2", loan_id="L-1", claimed_state="bogus", claimed_outstanding_cents=1,
            source_height=3,
        )  # fmt: skip
    st = client.risk_feedback(b"\x09" * 32, "rectified the rate")
    assert st.valid
    assert client.risk_alerts() == []


# ---------------------------------------------------------------------------- async twin


def test_async_client_does_the_same(fake: FakeNetwork, tmp_path: Path) -> None:
    fake.behaviour[fake.urls[0]].down = True

    async def main() -> None:
        async with AsyncClient(
            fake.urls,
            genesis=fake.genesis,
            key_file=fake.data_dir / "keys" / f"{LENDER}.key",
            store=tmp_path / "astore",
            commit_timeout=2,
            timeout=1,
            http=fake.async_client(),
        ) as c:
            recs = [Record.new({"a": 1})]
            p = await c.prepare(
                c.build("supervision", "loan_event",
                        {"k": "a1", "records": [{"c": recs[0].commitment}]}, records=recs)
            )  # fmt: skip
            st = await c.submit(p)
            assert st.valid and st.height == 1
            fake.auto_commit = False
            h = await c.submit_async(
                await c.prepare(c.build("supervision", "loan_event", {"k": "a2"}))
            )
            assert (await h.status()).status == "pending"
            fake.commit_pending()
            assert (await h.wait()).valid
            fake.anchor_after = 1
            ev = await c.evidence(p.tx_id, timeout=10)
            assert ev.report.data_verified
            got = []
            async for e in c.events(start=1):
                got.append(e.height)
                if len(got) == 2:
                    break
            assert got == [1, 2]
            assert c.store is not None and c.store.count("committed") == 2

    asyncio.run(main())
    assert {r.url.host for r in fake.requests if "x-wulian-signature" in r.headers} == {
        "node1.test"
    }


def test_evidence_refuses_a_code_the_verified_receipt_does_not_prove(
    fake: FakeNetwork, client: Client, tmp_path: Path
) -> None:
    """A node names another record's code for ours (the tx is not in the asking
    client's store, so the codes cannot be computed) and serves our genuine receipt
    under it: the receipt verifies, but it does not prove the code handed out."""
    import httpx

    from ledger.encoding import decode, encode

    p, _ = with_records(client, "ev4", n=2)
    client.submit(p)  # type: ignore[arg-type]
    ours, other = fake.anchor(1)
    honest = fake.handle

    def lying(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.endswith(p.tx_id.hex()):  # type: ignore[attr-defined]
            doc = decode(honest(request).content)
            doc["evidence_codes"] = [other, ours]
            return httpx.Response(
                200, content=encode(doc), headers={"content-type": "application/msgpack"}
            )
        if request.url.path == f"/v1/evidence/{other}/receipt":
            return httpx.Response(200, json={"receipts": [fake.receipts[ours]]})
        return honest(request)

    lied_to = tmp_path / "elsewhere"
    with make_client(fake, lied_to, http=httpx.Client(transport=httpx.MockTransport(lying))) as c:
        with pytest.raises(ReceiptInvalid) as err:
            c.evidence(p.tx_id, index=0, timeout=5)  # type: ignore[attr-defined]
        assert [f.name for f in err.value.report.failures] == ["requested_code"]
        assert err.value.stage == "verify"
    with make_client(fake, tmp_path / "fresh") as c:  # an honest node: the true code
        assert c.evidence(p.tx_id.hex(), index=0, timeout=5).code == ours  # type: ignore[attr-defined]


def _serve_view(fake: FakeNetwork, client: Client, view: dict[str, object]) -> None:
    """Make every node's stream serve ``view`` as its one block event."""
    import httpx

    from tests.clients.fakenet import wire_to_json

    def lying(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stream"):
            data = json.dumps(wire_to_json(view))
            return httpx.Response(
                200,
                headers={"content-type": "text/event-stream"},
                content=f"id: 1\nevent: block\ndata: {data}\n\n".encode(),
            )
        return fake.handle(request)

    client._http = httpx.Client(transport=httpx.MockTransport(lying))


def test_event_stream_refuses_a_transaction_without_an_inclusion_proof(
    fake: FakeNetwork, client: Client
) -> None:
    """A genuine, certified, empty block; the node attaches one of "our" transactions
    without a proof (a scoped view, as lenders get): never yielded."""
    from clients import NodeUnreachable
    from ledger.blocks import Transaction

    fake.add_block("supervision", [], [])
    forged = Transaction(
        network=fake.genesis.hash, channel="supervision", type="loan_event", sender=LENDER,
        public_key=client.settings.signer.public_key, nonce=42, time_ms=1,
        payload={"records": [{"c": b"\x11" * 32}]}, signature=b"\x00" * 64,
    )  # fmt: skip
    view = fake.block_view("supervision", 1, LENDER)
    view["txs"] = [{"index": 0, "id": forged.tx_id, "tx": forged.to_wire(),
                    "outcome": {"valid": True, "code": "ok", "message": ""}}]  # fmt: skip
    _serve_view(fake, client, view)
    with pytest.raises(NodeUnreachable, match="no inclusion proof"):
        next(client.events("supervision", start=1, verify=True))
    view["scoped"] = False  # claiming a whole-block view does not help: tx_count is 0
    with pytest.raises(NodeUnreachable, match="no inclusion proof"):
        next(client.events("supervision", start=1, verify=True))


def test_event_stream_of_a_full_reader_checks_the_whole_block_against_tx_root(
    fake: FakeNetwork, tmp_path: Path
) -> None:
    """An institution reads unscoped views (every transaction, no proofs): accepted
    when the ids hash to the certified tx_root, refused when one is left out."""
    from clients import NodeUnreachable

    with make_client(fake, tmp_path / "l") as lender:
        lender.submit(lender.prepare(lender.build("supervision", "loan_event", {"k": "a"})))
    bureau_key = fake.data_dir / "keys" / "bureau.key"
    with make_client(fake, tmp_path / "b", key_file=bureau_key) as bureau:
        fake.auto_commit = False
        for k in ("b1", "b2"):
            bureau.submit_async(
                bureau.prepare(bureau.build("supervision", "lender_update", {"k": k}))
            )
        fake.commit_pending()
        it = bureau.events("supervision", start=1, verify=True)
        assert [(e.height, e.tx_type) for e in (next(it), next(it))] == [
            (2, "lender_update"), (2, "lender_update")
        ]  # fmt: skip
        it.close()  # type: ignore[attr-defined]
        view = fake.block_view("supervision", 2, None)
        assert view["scoped"] is False and all("proof" not in t for t in view["txs"])
        view["txs"] = view["txs"][:1]  # type: ignore[index]
        _serve_view(fake, bureau, view)
        with pytest.raises(NodeUnreachable, match="no inclusion proof"):
            next(bureau.events("supervision", start=2, verify=True))
