"""Killing the relaying node mid-stream loses no anchor and duplicates none.

Its own five-process network (it breaks a node). A lender streams records; right after
a report commits, the node whose turn it is to anchor it (rank 0 in node/relays.py's
staggering) is SIGKILLed while the stream goes on, then restarted. Once the network is
idle, every supervision block has exactly one valid header anchor on the judicial
chain (heights 1..tip, no gap, no duplicate), the acknowledgements on the supervision
chain are in height order with no gap or duplicate, and every record has its evidence
code. A quick variant (5 reports) runs by default; a 30-report stream with a longer
outage is ``slow``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clients import Client, LoanEvent, PseudonymKey, write_pseudonym_key_file
from crosschain.ack import ACK_TX_TYPE, EvidenceAck
from crosschain.anchor import ANCHOR_TX_TYPE, HeaderAnchor, parse_anchor
from ledger.blocks import Transaction
from ledger.encoding import decode
from node.localnet import admit_lenders
from tests.node.netfixture import TestNetwork, start_network

pytestmark = [pytest.mark.network, pytest.mark.xdist_group("relay-kill-network")]

PSEUDONYM = PseudonymKey(bytes(range(32, 64)))
ID_A = "11010519491231002X"


@pytest.fixture
def net(tmp_path: Path) -> Iterator[TestNetwork]:
    network = start_network(tmp_path / "net", rules="channels")
    try:
        write_pseudonym_key_file(network.data_dir / "keys" / "pseudonym.key", PSEUDONYM)
        admit_lenders(network.data_dir, network.genesis, ["lender1"])
        yield network
    finally:
        network.stop()


def event(client: Client, loan: str) -> LoanEvent:
    return LoanEvent(
        report_id=f"{loan}-contract", loan_id=loan, borrower_ref=client.borrower_ref(ID_A),
        event="contract", amount_cents=100_000, rate_bp=1500, term_months=12,
        event_time_ms=int(time.time() * 1000), details={"contract_no": f"HT-{loan}"},
    )  # fmt: skip


def block_txs(net: TestNetwork, i: int, channel: str) -> list[tuple[int, Transaction, str]]:
    """``(height, tx, outcome code)`` of every transaction in every committed block of
    ``channel``, in chain order (read from node ``i`` as msgpack block views)."""
    client = net.client(i, "bureau")
    out = []
    for h in range(1, client.height(channel) + 1):
        r = client.get(f"/v1/channels/{channel}/blocks/{h}", accept="application/msgpack")
        r.raise_for_status()
        view: dict[str, Any] = decode(r.content)
        for item in view["txs"]:
            out.append((h, Transaction.from_wire(item["tx"]), item["outcome"]["code"]))
    return out


def valid_txs(net: TestNetwork, i: int, channel: str, tx_type: str) -> list[Transaction]:
    """The VALID transactions of ``tx_type`` in every committed block of ``channel``."""
    return [
        tx for _h, tx, code in block_txs(net, i, channel) if tx.type == tx_type and code == "ok"
    ]


def header_anchor_heights(net: TestNetwork, i: int) -> list[int]:
    return [
        a.height
        for tx in valid_txs(net, i, "judicial", ANCHOR_TX_TYPE)
        if isinstance(a := parse_anchor(tx.payload), HeaderAnchor)
    ]


def next_relayer(net: TestNetwork) -> str:
    """The node at rank 0 for the next anchor: node/relays.py ranks node ``i`` (in
    sorted node-id order) ``(anchored height + i) mod n`` for that work."""
    ids = sorted(n.node_id for n in net.genesis.nodes)
    anchored = header_anchor_heights(net, 0)
    last = anchored[-1] if anchored else 0
    return ids[-last % len(ids)]


def acked_heights(supervision: list[tuple[int, Transaction, str]]) -> list[int]:
    """The source heights of the VALID acks among ``block_txs(…, "supervision")``."""
    return [
        EvidenceAck.from_payload(tx.payload).source_height
        for _h, tx, code in supervision
        if tx.type == ACK_TX_TYPE and code == "ok"
    ]


#: How long both chains must stay still to count as settled: longer than an ack's
#: delay (``[relay] ack_delay_ms``, 2 s) plus a relay's turn (``STAGGER_MS``, 1.5 s).
#: A restarted node's relays, before they see what the others did while it was down,
#: may send copies of acks that were already made: refused, but in a block of their
#: own, which is then anchored — after a shorter still spell (1.5 s) that block came
#: once, past the tip the test had taken as final.
SETTLED_S = 4.5


def wait_idle_and_anchored(net: TestNetwork, timeout_s: float) -> tuple[int, int]:
    """Wait until the supervision tip is anchored, every block holding anything but
    acks is acknowledged (acks wait ``[relay] ack_delay_ms``; ack-only blocks wait for
    the next block of records) and both chains have not grown for :data:`SETTLED_S`."""
    probe = net.client(0, "bureau")
    deadline = time.monotonic() + timeout_s
    last = (-1, -1)
    still_since = time.monotonic()
    while True:
        now = (probe.height("supervision"), probe.height("judicial"))
        if now != last:
            still_since = time.monotonic()
        elif time.monotonic() - still_since >= SETTLED_S:  # anchored and acknowledged?
            anchored = header_anchor_heights(net, 0)
            sup = block_txs(net, 0, "supervision")
            due = max((h for h, tx, _c in sup if tx.type != ACK_TX_TYPE), default=0)
            acked = acked_heights(sup)
            if anchored and anchored[-1] >= now[0] and (acked[-1] if acked else 0) >= due:
                return now
        assert time.monotonic() < deadline, f"not settled: heights {now}"
        last = now
        time.sleep(1.5)


def stream_with_relay_kill(
    net: TestNetwork, store: Path, *, stream: int, kill_at: int, restart_at: int
) -> dict[str, float]:
    """Stream ``stream`` reports (two records each); SIGKILL the node that carried the
    latest anchor after report ``kill_at`` (once it is anchored), restart it after
    ``restart_at``; then check anchors, acks and codes. Returns phase timings (s)."""
    t0 = time.monotonic()
    times: dict[str, float] = {}
    index_of = {n.node_id: i for i, n in enumerate(net.nodes)}
    sent: list[bytes] = []
    killed: int | None = None
    with Client(
        genesis=net.genesis,
        key_file=net.data_dir / "keys" / "lender1.key",
        store=store,
        pseudonym_key=PSEUDONYM,
        evidence_timeout=180.0,
    ) as c:
        for k in range(stream):
            # generous: a killed primary means a view change on a loaded machine
            st = c.report([event(c, f"RK-{k}-a"), event(c, f"RK-{k}-b")], timeout=180)
            assert st.valid, (k, st)
            sent.append(st.tx_id)
            if k == kill_at:
                # the node whose turn it is (rank 0) to anchor the next block, which
                # holds the records just committed: killed while it relays them
                killed = index_of[next_relayer(net)]
                net.kill(killed)
                times["killed"] = time.monotonic() - t0
            if k == restart_at:
                assert killed is not None
                net.restart(killed, wait=False)
                net.wait_healthy(indexes=[killed], timeout_s=120)
                times["restarted"] = time.monotonic() - t0
        assert killed is not None
        # every record gets its evidence code (the last one waited for end to end)
        c.evidence(sent[-1], index=1)
        times["last_code"] = time.monotonic() - t0
        record_heights = []
        for tx_id in sent:
            st = c.status(tx_id)
            assert len(st.evidence_codes) == 2 and len(set(st.evidence_codes)) == 2, st
            assert st.height is not None
            record_heights.append(st.height)
        sup_tip, jud_tip = wait_idle_and_anchored(net, timeout_s=180)
        times["settled"] = time.monotonic() - t0

    net.wait_heights("judicial", jud_tip, timeout_s=120, indexes=[killed])
    net.wait_heights("supervision", sup_tip, timeout_s=120, indexes=[killed])
    for i in (0, killed):  # the restarted node caught up and agrees
        heights = header_anchor_heights(net, i)
        assert heights == list(range(1, sup_tip + 1)), (i, heights)
        acked = acked_heights(block_txs(net, i, "supervision"))
        assert acked == list(range(1, len(acked) + 1)), (i, acked)
        # every block with records is acknowledged (ack-only blocks may wait: deferred)
        assert acked and acked[-1] >= max(record_heights), (acked[-3:], record_heights)
    return times


@pytest.mark.timeout(600)  # kill + restart + catch-up: slow on an overloaded machine
def test_killing_the_relaying_node_loses_and_duplicates_no_anchor(
    net: TestNetwork, tmp_path: Path
) -> None:
    times = stream_with_relay_kill(net, tmp_path / "s", stream=5, kill_at=1, restart_at=3)
    print(f"relay kill (quick): {times}")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_relay_kill_during_a_long_stream(net: TestNetwork, tmp_path: Path) -> None:
    times = stream_with_relay_kill(net, tmp_path / "s", stream=30, kill_at=5, restart_at=20)
    print(f"relay kill (long): {times}")
