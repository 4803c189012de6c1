"""The SDK and its CLI against a REAL local network: five node processes running the
production channel rules (tests/node/netfixture.py), two admitted lenders.

One network for the module. The failover test kills a node and runs last.
"""

from __future__ import annotations

import json
import runpy
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clients import (
    Client,
    LoanEvent,
    NotFound,
    PseudonymKey,
    TransactionInvalid,
    write_pseudonym_key_file,
)
from clients.cli import main as cli_main
from tests.node.netfixture import TestNetwork, credit_synced, start_network

# One network per module: with `-n 2 --dist loadgroup` (or loadfile) xdist keeps these
# tests on one worker instead of starting a second network on the other.
pytestmark = [pytest.mark.network, pytest.mark.xdist_group("sdk-network")]

ROOT = Path(__file__).resolve().parents[2]
ID_A = "11010519491231002X"
ID_B = "44030419900307123X"
PSEUDONYM = PseudonymKey(bytes(range(32, 64)))


def institution(net: TestNetwork, org: str) -> Client:
    return Client(genesis=net.genesis, key_file=net.data_dir / "keys" / f"{org}.key")


def lender(net: TestNetwork, store: Path, org: str = "lender1", **kw: Any) -> Client:
    return Client(
        genesis=net.genesis,
        key_file=net.data_dir / "keys" / f"{org}.key",
        store=store,
        pseudonym_key=PSEUDONYM,
        **kw,
    )


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNetwork]:
    network = start_network(tmp_path_factory.mktemp("sdknet"), rules="channels")
    try:
        write_pseudonym_key_file(network.data_dir / "keys" / "pseudonym.key", PSEUDONYM)
        with institution(network, "bureau") as bureau:
            for org in ("lender1", "lender2"):
                pk = network.signer_of(org).public_key
                payload = {
                    "lender": org, "licence_id": f"LIC-{org}", "name": f"Lender {org}",
                    "public_keys": [pk],
                    "limits": {"max_principal_cents": 10**10, "max_outstanding_cents": 10**13},
                }  # fmt: skip
                assert bureau.submit(
                    bureau.prepare(bureau.build("supervision", "lender_admit", payload))
                ).valid
        yield network
    finally:
        network.stop()


def contract(client: Client, loan: str, id_number: str = ID_A, amount: int = 100_000) -> LoanEvent:
    return LoanEvent(
        report_id=f"{loan}-c", loan_id=loan, borrower_ref=client.borrower_ref(id_number),
        event="contract", amount_cents=amount, rate_bp=1500, term_months=12,
        event_time_ms=int(time.time() * 1000), details={"contract_no": f"HT-{loan}"},
    )  # fmt: skip


def credit_sync(net: TestNetwork, height: int) -> None:
    """Wait until the credit agency node's worker has synced the credit channel up to
    supervision ``height`` (syncs are the worker's job, not the test's)."""
    deadline = time.monotonic() + 60
    while credit_synced(net) < height:
        assert time.monotonic() < deadline, f"credit channel not synced to {height}"
        time.sleep(0.2)


def committed_ids(net: TestNetwork, node: int) -> list[str]:
    """Every transaction id on the supervision chain, as node ``node`` serves it."""
    c = net.client(node, "bureau")
    out = []
    for h in range(1, c.height("supervision") + 1):
        out += [t["id"]["$hex"] for t in c.block("supervision", h)["txs"]]
    return out


# ---------------------------------------------------------------------------- SDK


def test_report_follow_and_query_across_nodes(net: TestNetwork, tmp_path: Path) -> None:
    with lender(net, tmp_path / "s") as c:
        st = c.report(contract(c, "NET-1"))
        assert st.valid and st.height is not None
        ev = contract(c, "NET-1")
        later = [
            LoanEvent(**{**ev.__dict__, "report_id": "NET-1-d", "event": "disbursement"}),
            LoanEvent(**{**ev.__dict__, "report_id": "NET-1-r", "event": "repayment",
                         "amount_cents": 10_000}),
        ]  # fmt: skip
        handle = c.submit_async(c.prepare_report(later))
        assert handle.first_status.status in ("pending", "committed")
        done = handle.wait()
        assert done.valid and done.outcome is not None and done.outcome.result == {"events": 2}
        assert c.store is not None and c.store.get(done.tx_id).state == "committed"
        # evidence codes are computable now; anchoring needs the relay (not asserted here)
        assert len(c.store.get(done.tx_id).prepared().expected_evidence_codes()) == 2
        # a duplicate report id is committed INVALID and raised as such
        with pytest.raises(TransactionInvalid) as err:
            c.report(later[0])
        assert err.value.reason == "duplicate_report_id"
    # another client, starting from another node, sees the same status
    urls = [n.url for n in net.nodes]
    with lender(net, tmp_path / "s2", nodes=urls[3:] + urls[:3]) as other:
        again = other.status(done.tx_id)
        assert (again.height, again.index, again.valid) == (done.height, done.index, True)


def test_credit_check_and_asset_registration(net: TestNetwork, tmp_path: Path) -> None:
    with lender(net, tmp_path / "a") as a, lender(net, tmp_path / "b", org="lender2") as b:
        a.report(contract(a, "CR-A", ID_B))
        st = b.report(contract(b, "CR-B", ID_B))
        assert st.height is not None
        credit_sync(net, st.height)
        report = a.credit_check(a.borrower_ref(ID_B))
        assert report.answer["lenders_with_open_loans"] >= 2
        assert report.other_lenders_with_open_loans >= 1 and report.multi_lender
        assert report.answer["borrower_ref"] == a.borrower_ref(ID_B)
        st = a.register_asset(
            asset_id="AS-1", loan_id="CR-A", claimed_state="contracted",
            claimed_outstanding_cents=0,
        )  # fmt: skip
        assert st.valid
        with pytest.raises(TransactionInvalid) as err:  # no double financing
            a.register_asset(
                asset_id="AS-2", loan_id="CR-A", claimed_state="contracted",
                claimed_outstanding_cents=0,
            )  # fmt: skip
        assert err.value.reason == "asset_already_registered"


def test_crash_between_store_and_send_loses_nothing(net: TestNetwork, tmp_path: Path) -> None:
    """A child process stores two reports — one never sent, one sent without waiting —
    and is SIGKILLed. A new client finds both and resubmits the same signed bytes."""
    store = tmp_path / "crash"
    script = textwrap.dedent(
        f"""
        import os, signal, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from clients import Client, LoanEvent, PseudonymKey
        c = Client(genesis={str(net.data_dir / "genesis.json")!r},
                   key_file={str(net.data_dir / "keys" / "lender1.key")!r},
                   store={str(store)!r}, pseudonym_key=PseudonymKey(bytes(range(32, 64))))
        def ev(loan):
            return LoanEvent(report_id=loan + "-c", loan_id=loan,
                             borrower_ref=c.borrower_ref({ID_A!r}), event="contract",
                             amount_cents=5000, rate_bp=1000, term_months=6,
                             event_time_ms=int(time.time() * 1000))
        sent = c.submit_async(c.prepare_report(ev("CRASH-SENT")))
        unsent = c.prepare_report(ev("CRASH-UNSENT"))
        print(unsent.tx_id.hex(), sent.tx_id.hex(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    unsent_id, sent_id = (bytes.fromhex(h) for h in done.stdout.split())
    with lender(net, store) as c:
        assert c.status(unsent_id).status == "unknown"  # never left the process
        pending = {p.tx_id for p in c.pending()}
        assert pending == {unsent_id, sent_id}
        statuses = c.recover()
        assert {s.tx_id for s in statuses} == {unsent_id, sent_id}
        assert all(s.valid for s in statuses)
        assert c.pending() == []
        assert c.store is not None and c.store.get(unsent_id).state == "committed"
    ids = committed_ids(net, 0)
    assert ids.count(unsent_id.hex()) == 1 and ids.count(sent_id.hex()) == 1


def test_event_stream_resumes_from_its_checkpoint(net: TestNetwork, tmp_path: Path) -> None:
    store = tmp_path / "stream"
    with lender(net, store) as c:
        mine = [c.report(contract(c, f"EV-{i}")) for i in range(3)]
        start = mine[0].height
        it = c.events(start=start, checkpoint="sup")
        first = next(it)
        assert (first.height, first.tx_id) == (mine[0].height, mine[0].tx_id)
        assert first.valid and first.tx_type == "loan_event"
        second = next(it)  # consuming the next block saves the first as the checkpoint
        it.close()  # type: ignore[attr-defined]
        assert second.tx_id == mine[1].tx_id
        # Every block before the second's was fully consumed (blocks in between carry
        # nothing of ours), the second's was not: the checkpoint lies in between.
        saved = c.store.checkpoint("sup") if c.store is not None else None
        assert saved is not None and first.height <= saved < second.height
    with lender(net, store) as c:
        it = c.events(checkpoint="sup", verify=True)
        resumed = next(it)
        it.close()  # type: ignore[attr-defined]
        assert resumed.tx_id == mine[1].tx_id  # not re-delivered: the first one


def test_reads_of_other_lenders_transactions_are_refused(net: TestNetwork, tmp_path: Path) -> None:
    with lender(net, tmp_path / "x") as a, lender(net, tmp_path / "y", org="lender2") as b:
        st = a.report(contract(a, "SCOPE-1"))
        assert b.status(st.tx_id).status == "unknown"  # scoped: 404 for others' txs
        with pytest.raises(NotFound):
            b._run(b._core.get_doc(f"/v1/channels/supervision/blocks/{10**9}"))


# ---------------------------------------------------------------------------- CLI


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_submit_status_and_failures(
    net: TestNetwork, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = int(time.time() * 1000)
    events = [
        {"report_id": f"CLI-{i}-c", "loan_id": f"CLI-{i}", "id_number": ID_A,
         "event": "contract", "amount_cents": 1000 + i, "rate_bp": 900, "term_months": 3,
         "event_time_ms": now, "details": {"branch": "north"}}
        for i in range(5)
    ]  # fmt: skip
    f = tmp_path / "events.json"
    f.write_text(json.dumps({"events": events}))
    conn = ["--network", str(net.data_dir), "--org", "lender1"]
    code, out, err = run_cli(capsys, "submit", str(f), "--per-tx", "2", "--json", *conn)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["summary"] == {"transactions": 3, "events": 5, "committed": 3, "invalid": 0,
                              "rejected": 0, "not_committed": 0}  # fmt: skip
    assert "progress: 3/3 transactions" in err  # plain-text progress on stderr
    assert ID_A not in out + err
    tx_id = doc["results"][0]["tx_id"]
    code, out, _ = run_cli(capsys, "status", tx_id, *conn)
    assert code == 0 and out.startswith(f"committed {tx_id}") and "VALID" in out
    code, out, _ = run_cli(capsys, "status", "ab" * 32, "--json", *conn)
    assert code == 3 and json.loads(out)["status"] == "unknown"
    # the same file again: every transaction is new (fresh salts), every event a duplicate
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**events[0], "report_id": "CLI-x", "loan_id": "NOPE",
                               "event": "repayment"}))  # fmt: skip
    code, out, err = run_cli(capsys, "submit", str(bad), *conn)
    assert code == 1
    assert "INVALID (loan_not_found" in out and len(err.strip().splitlines()) == 1
    # bad input: one line, exit 1, no traceback
    code, _, err = run_cli(capsys, "submit", str(tmp_path / "missing.json"), *conn)
    assert code == 1 and err.startswith("wulian: error:") and len(err.strip().splitlines()) == 1
    # the relays anchor the record on the court chain: the receipt comes back and verifies
    receipt = tmp_path / "r.json"
    code, _, err = run_cli(capsys, "evidence", tx_id, "--out", str(receipt),
                           "--timeout", "60", *conn)  # fmt: skip
    assert code == 0, err
    assert json.loads(receipt.read_text())
    code, _, err = run_cli(capsys, "evidence", "ab" * 32, "--out", str(tmp_path / "x.json"),
                           "--timeout", "1", *conn)  # fmt: skip
    assert code != 0 and not (tmp_path / "x.json").exists()


def test_cli_credit_check_and_recover(
    net: TestNetwork, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = ["--network", str(net.data_dir), "--org", "lender1"]
    with lender(net, tmp_path / "cr") as c:
        st = c.report(contract(c, "CLI-CR"))
    assert st.height is not None
    credit_sync(net, st.height)
    ref = PSEUDONYM.borrower_ref(ID_A).hex()
    code, out, err = run_cli(capsys, "credit-check", ref, "--json", *conn)
    assert code == 0, err
    assert json.loads(out)["answer"]["asker_has_open_loans"] is True
    code, _, err = run_cli(capsys, "credit-check", ID_A, *conn)
    assert code == 1 and "not an ID" in err
    code, out, _ = run_cli(capsys, "recover", *conn)
    assert code == 0 and out.startswith("resubmitted")


# ---------------------------------------------------------------------------- examples


@pytest.mark.parametrize(
    ("example", "expect"),
    [
        ("quickstart.py", "batch committed at height"),
        ("offline_signing.py", "same tx id True"),
        ("async_reports.py", "5 loans committed"),
    ],
)
def test_examples_run(
    net: TestNetwork,
    example: str,
    expect: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The examples in examples/ run as scripts (in this process, to save start-up)."""
    argv = [example, "--network", str(net.data_dir), "--org", "lender2"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(ROOT / "examples" / example), run_name="__main__")
    out = capsys.readouterr().out
    assert stop.value.code == 0, out
    assert expect in out


# ---------------------------------------------------------------------------- failover


def test_a_node_dies_mid_batch_and_the_batch_completes_once(
    net: TestNetwork, tmp_path: Path
) -> None:
    """The node serving a batch is SIGKILLed while the batch is in flight: the rest goes
    through other nodes, every report commits, none twice. (Runs last: leaves one node
    down.)"""
    victim = 2
    urls = [n.url for n in net.nodes]
    order = urls[victim:] + urls[:victim]
    with lender(net, tmp_path / "fo", nodes=order, commit_timeout=90, batch_size=30) as c:
        items = c.prepare_reports([contract(c, f"FO-{i}", amount=1000 + i) for i in range(120)])
        seen: list[int] = []
        killer = threading.Timer(0.3, net.kill, args=(victim,))
        killer.start()
        try:
            statuses = c.submit_many(items, progress=lambda d, n: seen.append(d))
        finally:
            killer.join()
        assert not net.nodes[victim].running
        assert [s.tx_id for s in statuses] == [i.tx_id for i in items]
        assert all(s.valid for s in statuses), {s.status for s in statuses}
        assert seen[-1] == 120
        assert c.store is not None and c.store.count("committed") == 120
    # the answers came from the nodes that served the batch: node 0 may still be a
    # block or two behind them
    top = max(s.height for s in statuses if s.height is not None)
    net.wait_heights("supervision", top, timeout_s=60, indexes=[0])
    ids = committed_ids(net, 0)
    assert len(ids) == len(set(ids)), "a transaction was committed twice"
    assert {i.tx_id.hex() for i in items} <= set(ids)
