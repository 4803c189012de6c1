"""The shared core against an in-memory fake network (httpx.MockTransport): request
signing, node identity checks, failover and retries, typed errors, submit/wait."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from clients import (
    AuthenticationFailed,
    Client,
    NodeUnreachable,
    NotCommitted,
    SubmitRejected,
    TransactionInvalid,
    WrongNetwork,
)
from clients._core import Core, Failure, Request, Response, Sleep
from ledger.request_auth import parse_auth_headers, verify_request_signature
from tests.clients.fakenet import FakeNetwork, make_client


def kv(client: Client, key: str, value: object = 1) -> object:
    return client.prepare(client.build("supervision", "loan_event", {"k": key, "v": value}))


def signed_requests(fake: FakeNetwork) -> list[httpx.Request]:
    return [r for r in fake.requests if "x-wulian-signature" in r.headers]


def test_every_request_is_signed_over_its_exact_target_and_body(
    fake: FakeNetwork, client: Client
) -> None:
    p = kv(client, "a")
    client.submit(p)  # type: ignore[arg-type]
    client.status(p.tx_id)  # type: ignore[attr-defined]
    reqs = signed_requests(fake)
    assert len(reqs) >= 2
    nonces = set()
    for r in reqs:
        auth = parse_auth_headers(r.headers)
        assert auth.org == "lender1"
        verify_request_signature(
            auth, network=fake.genesis.hash, method=r.method,
            path=r.url.raw_path.decode(), body=r.read(),
        )  # fmt: skip
        nonces.add(auth.nonce)
    assert len(nonces) == len(reqs), "a nonce was reused"
    # /v1/info (identity check) is the only unsigned request, once per node used
    unsigned = [r for r in fake.requests if "x-wulian-signature" not in r.headers]
    assert {r.url.path for r in unsigned} == {"/v1/info"}
    assert len(unsigned) == 1


def test_node_serving_another_genesis_is_never_used(fake: FakeNetwork, tmp_path: Path) -> None:
    fake.behaviour[fake.urls[0]].genesis_hash = "ab" * 32
    fake.behaviour[fake.urls[1]].node_id = "impostor-node"
    with make_client(fake, tmp_path) as c:
        st = c.submit(kv(c, "b"))  # type: ignore[arg-type]
        assert st.valid
    used = {r.url.host for r in signed_requests(fake)}
    assert used == {"node2.test"}


def test_all_nodes_of_another_network_raise_wrong_network(
    fake: FakeNetwork, tmp_path: Path
) -> None:
    for u in fake.urls:
        fake.behaviour[u].genesis_hash = "cd" * 32
    with make_client(fake, tmp_path) as c, pytest.raises(WrongNetwork) as err:
        c.status(b"\x01" * 32)
    assert err.value.stage == "connect"
    assert "genesis hash" in str(err.value)
    assert signed_requests(fake) == []


def test_failover_to_the_next_node_and_stickiness(fake: FakeNetwork, client: Client) -> None:
    fake.behaviour[fake.urls[0]].down = True
    client.submit(kv(client, "c"))  # type: ignore[arg-type]
    fake.behaviour[fake.urls[0]].down = False
    client.submit(kv(client, "d"))  # type: ignore[arg-type]
    hosts = [r.url.host for r in signed_requests(fake)]
    # everything signed went to node1 (node0 down, then the pool sticks to node1)
    assert set(hosts) == {"node1.test"}


def test_overloaded_and_5xx_fail_over(fake: FakeNetwork, client: Client) -> None:
    fake.behaviour[fake.urls[0]].overloaded = True
    fake.behaviour[fake.urls[1]].fail_next = 1
    st = client.submit(kv(client, "e"))  # type: ignore[arg-type]
    assert st.valid
    assert signed_requests(fake)[-1].url.host == "node2.test"


def test_every_node_down_raises_node_unreachable_listing_attempts(
    fake: FakeNetwork, tmp_path: Path
) -> None:
    for u in fake.urls:
        fake.behaviour[u].down = True
    with make_client(fake, tmp_path, retries=1) as c:
        p = kv(c, "f")
        with pytest.raises(NodeUnreachable) as err:
            c.submit_async(p)  # type: ignore[arg-type]
        # the transaction was stored before the attempt, and is still there to resend
        assert c.store is not None
        assert [s.tx_id for s in c.store.unfinished()] == [p.tx_id]  # type: ignore[attr-defined]
    e = err.value
    assert e.stage == "submit" and e.tx_id == p.tx_id  # type: ignore[attr-defined]
    assert len(e.attempts) == 2 * len(fake.urls)  # two rounds over three nodes
    assert {a.url for a in e.attempts} == set(fake.urls)


def test_retry_rounds_back_off_and_respect_the_deadline(fake: FakeNetwork, tmp_path: Path) -> None:
    """Drive the core by hand: the sleeps between rounds grow, and the deadline holds."""
    with make_client(fake, tmp_path, retries=3) as c:
        core: Core = c._core
        op = core.call("GET", "/v1/channels/supervision", stage="query")
        sleeps: list[float] = []
        reply: object = None
        with pytest.raises(NodeUnreachable) as err:
            while True:
                eff = op.send(reply)
                if isinstance(eff, Sleep):
                    sleeps.append(eff.seconds)
                    reply = None
                else:
                    assert isinstance(eff, Request)
                    reply = Failure("connection refused", sent=False)
        assert len(sleeps) == 3
        # jittered exponential back-off: each round's ceiling doubles
        s = core.settings
        for k, pause in enumerate(sleeps):
            assert s.backoff_s * 2**k / 2 <= pause <= min(s.max_backoff_s, s.backoff_s * 2**k)
        assert len(err.value.attempts) == 4 * len(fake.urls)


def test_non_idempotent_call_is_not_retried_after_the_request_left(
    fake: FakeNetwork, client: Client
) -> None:
    op = client._core.call("POST", "/v1/x", idempotent=False)
    eff = op.send(None)
    assert isinstance(eff, Request) and eff.target == "/v1/info"
    eff = op.send(
        Response(
            200,
            {},
            b'{"genesis_hash": "%s", "node": "bureau-node"}' % (fake.genesis.hash.hex().encode()),
        )
    )
    assert isinstance(eff, Request) and eff.target == "/v1/x"
    with pytest.raises(NodeUnreachable):
        op.send(Failure("read timeout", sent=True))


def test_stale_request_is_signed_again_once(fake: FakeNetwork, client: Client) -> None:
    fake.behaviour[fake.urls[0]].stale_next = 1
    st = client.submit(kv(client, "g"))  # type: ignore[arg-type]
    assert st.valid
    subs = [r for r in signed_requests(fake) if r.method == "POST"]
    assert len(subs) == 2 and subs[0].headers["x-wulian-nonce"] != subs[1].headers["x-wulian-nonce"]
    assert {r.url.host for r in subs} == {"node0.test"}


def test_rejection_is_typed_with_reason_and_tx_id(fake: FakeNetwork, client: Client) -> None:
    fake.reject = ("invalid_transaction", "bad_payload: loan_event: field 'x'")
    p = kv(client, "h")
    with pytest.raises(SubmitRejected) as err:
        client.submit(p)  # type: ignore[arg-type]
    assert err.value.reason == "invalid_transaction"
    assert err.value.tx_id == p.tx_id  # type: ignore[attr-defined]
    assert err.value.stage == "submit"
    assert client.store is not None
    assert client.store.get(p.tx_id).state == "rejected"  # type: ignore[attr-defined]


def test_invalid_outcome_raises_transaction_invalid(fake: FakeNetwork, client: Client) -> None:
    fake.outcome = ("duplicate_report_id", "report id 'r-1' was already used")
    p = kv(client, "i")
    with pytest.raises(TransactionInvalid) as err:
        client.submit(p)  # type: ignore[arg-type]
    assert err.value.reason == "duplicate_report_id"
    assert err.value.status.height == 1
    assert client.store is not None
    assert client.store.get(p.tx_id).state == "invalid"  # type: ignore[attr-defined]
    # check=False returns the status instead
    st = client.wait(p.tx_id, check=False)  # type: ignore[attr-defined]
    assert st.committed and not st.valid


def test_not_committed_after_timeout(fake: FakeNetwork, client: Client) -> None:
    fake.auto_commit = False
    p = kv(client, "j")
    with pytest.raises(NotCommitted) as err:
        client.submit(p, timeout=0.3)  # type: ignore[arg-type]
    assert err.value.tx_id == p.tx_id and err.value.last_status == "pending"  # type: ignore[attr-defined]
    assert client.store is not None
    assert client.store.get(p.tx_id).state == "sent"  # type: ignore[attr-defined]


def test_unknown_key_is_authentication_failed(fake: FakeNetwork, tmp_path: Path) -> None:
    fake.behaviour[fake.urls[0]].stale_next = 5  # re-signing does not help forever
    with make_client(fake, tmp_path) as c, pytest.raises(AuthenticationFailed) as err:
        c.status(b"\x02" * 32)
    assert err.value.status == 401 and err.value.reason == "stale_request"


def test_submit_async_returns_a_handle(fake: FakeNetwork, client: Client) -> None:
    fake.auto_commit = False
    p = kv(client, "k")
    handle = client.submit_async(p)  # type: ignore[arg-type]
    assert handle.tx_id == p.tx_id and handle.first_status.status == "pending"  # type: ignore[attr-defined]
    assert handle.status().status == "pending"
    fake.commit_pending()
    st = handle.wait(timeout=1)
    assert st.valid and st.height == 1
    assert client.status(p.tx_id).committed  # type: ignore[attr-defined]


def test_status_of_unknown_transaction(client: Client) -> None:
    st = client.status("ab" * 32)
    assert st.status == "unknown" and not st.committed


def test_submit_many_batches_and_records_final_states(fake: FakeNetwork, client: Client) -> None:
    items = client.prepare_many(
        [client.build("supervision", "loan_event", {"k": f"m{i}", "v": i}) for i in range(450)]
    )
    seen: list[tuple[int, int]] = []
    sts = client.submit_many(items, progress=lambda d, n: seen.append((d, n)))
    assert [s.tx_id for s in sts] == [i.tx_id for i in items]
    assert all(s.valid for s in sts)
    batches = [r for r in fake.requests if r.url.path.endswith("/batch")]
    assert len(batches) == 3  # 200 + 200 + 50
    assert seen[-1] == (450, 450) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert client.store is not None and client.store.count("committed") == 450


class HsmSigner:
    """A ledger.crypto.Signer backed by something that only signs bytes (an HSM)."""

    def __init__(self, seed: bytes) -> None:
        import nacl.signing

        self._key = nacl.signing.SigningKey(seed)
        self.calls = 0

    @property
    def public_key(self) -> bytes:
        return bytes(self._key.verify_key)

    def sign(self, tag: str, message: bytes) -> bytes:
        from ledger.crypto import signing_payload

        self.calls += 1
        return bytes(self._key.sign(signing_payload(tag, message)).signature)


def test_a_signer_instead_of_a_key_file(fake: FakeNetwork, tmp_path: Path) -> None:
    from ledger.keyfile import load_key_file

    seed = load_key_file(fake.data_dir / "keys" / "lender1.key").signer.seed
    hsm = HsmSigner(seed)
    with make_client(fake, tmp_path, key_file=None, signer=hsm, org="lender1") as c:
        st = c.submit(kv(c, "hsm"))  # type: ignore[arg-type]
        assert st.valid
    assert hsm.calls >= 2  # the transaction and every request
    from ledger.errors import ConfigError

    with pytest.raises(ConfigError, match="exactly one"):
        make_client(fake, tmp_path, signer=hsm, org="lender1")
    with pytest.raises(ConfigError, match="org"):
        make_client(fake, tmp_path, key_file=None, signer=hsm)
