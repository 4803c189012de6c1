"""A byzantine relay among five real node processes with the real channel rules.

One node runs ``WULIAN_TEST_BYZANTINE=bad-anchors`` (allowed by ``test_misbehaviour =
true`` in its config; node/byzantine.py): its relay never submits its anchors and
instead sends the judicial validators FORWARDs of the same anchors with the supervision
certificate's votes forged, each anchor transaction correctly signed by the node. A
lender reports records through the SDK. The forged anchors are refused by the anchor
rule's light-client check in the blocks that carry them (INVALID, ``bad_certificate``
or, when an honest copy landed first, ``duplicate_anchor``/``out_of_sequence``: kept on
the court chain as the record of the misbehaviour), none is applied, the other relays
carry every block
in order (one header anchor per supervision height, no gap, no duplicate) and every
record gets its evidence code.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clients import Client, write_pseudonym_key_file
from crosschain.anchor import ANCHOR_TX_TYPE
from ledger.blocks import Transaction
from ledger.encoding import decode
from node.byzantine import ENV
from node.localnet import NodeProcess, admit_lenders, free_base_port
from tests.node.netfixture import TestNetwork, add_lenders, log_events
from tests.node.test_node_relay_kill import (
    PSEUDONYM,
    event,
    header_anchor_heights,
    valid_txs,
    wait_idle_and_anchored,
)

pytestmark = [pytest.mark.network, pytest.mark.xdist_group("byzantine-relay")]

FORGER = 2
REPORTS = 6
MAX_REPORTS = 40


class ForgingRelayNetwork(TestNetwork):
    """Node :data:`FORGER` runs the ``bad-anchors`` mode (its config allows it)."""

    __test__ = False

    def _command(self, node: NodeProcess) -> list[str]:
        cmd = super()._command(node)
        if self.nodes.index(node) == FORGER:
            return ["env", f"{ENV}=bad-anchors", *cmd]
        return cmd


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForgingRelayNetwork]:
    network = ForgingRelayNetwork.prepare(
        tmp_path_factory.mktemp("byzantine-relay"),
        base_port=free_base_port(),
        rules="channels",
        genesis_hook=add_lenders,
    )
    assert isinstance(network, ForgingRelayNetwork)
    config = network.nodes[FORGER].config_path
    config.write_text("test_misbehaviour = true\n" + config.read_text())
    for node in network.nodes:
        # every block anchored on its own, as soon as it commits: the relays take turns
        # by anchored height, and batched anchors (the default delay) skip most of the
        # heights that are the forger's turn
        node.config_path.write_text(
            node.config_path.read_text() + "\n[relay]\nanchor_delay_ms = 0\n"
        )
    network.start()
    try:
        network.wait_healthy(timeout_s=90)
        write_pseudonym_key_file(network.data_dir / "keys" / "pseudonym.key", PSEUDONYM)
        admit_lenders(network.data_dir, network.genesis, ["lender1"])
        yield network
    finally:
        network.stop()


def test_forged_anchors_are_refused_and_honest_relays_carry_every_record(
    net: ForgingRelayNetwork, tmp_path: Path
) -> None:
    forger_id = net.nodes[FORGER].node_id
    assert any(
        "byzantine mode 'bad-anchors' installed" in str(e.get("msg", ""))
        for e in log_events(net, FORGER)
    )
    sent = []
    with Client(
        genesis=net.genesis,
        key_file=net.data_dir / "keys" / "lender1.key",
        store=tmp_path / "store",
        pseudonym_key=PSEUDONYM,
        evidence_timeout=180.0,
    ) as c:
        # report until the forger has had its turn at relaying (the relays take turns by
        # anchored height; a burst of blocks may skip a node's turn) and sent forgeries
        for k in range(MAX_REPORTS):
            st = c.report([event(c, f"BZ-{k}-a"), event(c, f"BZ-{k}-b")], timeout=120)
            assert st.valid, (k, st)
            sent.append(st.tx_id)
            if k + 1 >= REPORTS and forged_sent(net):
                break
        assert forged_sent(net), f"the forger never relayed in {MAX_REPORTS} reports"
        c.evidence(sent[-1], index=1)  # the last record's code, end to end
        sup_tip, _ = wait_idle_and_anchored(net, timeout_s=180)
        for tx_id in sent:
            st = c.status(tx_id)
            assert len(set(st.evidence_codes)) == 2, st
    # every supervision block anchored once, in order, by honest relays only
    assert header_anchor_heights(net, 0) == list(range(1, sup_tip + 1))
    anchors = valid_txs(net, 0, "judicial", ANCHOR_TX_TYPE)
    assert anchors and all(tx.sender != forger_id for tx in anchors)
    # the forged copies reached the honest validators, were proposed (admission does
    # not run the light client) and refused in their blocks: INVALID, with the light
    # client's reason, on the court chain for anyone to see
    forged = [code for tx, code in judicial_anchors(net, 0) if tx.sender == forger_id]
    assert forged and all(code != "ok" for code in forged), forged
    print(f"forged anchors on the court chain, refused as: {forged}")


def forged_sent(net: TestNetwork) -> bool:
    return any("forged anchor" in str(e.get("msg", "")) for e in log_events(net, FORGER))


def judicial_anchors(net: TestNetwork, i: int) -> list[tuple[Transaction, str]]:
    """Every anchor transaction on the judicial chain with its outcome code."""
    client = net.client(i, "bureau")
    out = []
    for h in range(1, client.height("judicial") + 1):
        r = client.get(f"/v1/channels/judicial/blocks/{h}", accept="application/msgpack")
        r.raise_for_status()
        for item in decode(r.content)["txs"]:
            tx = Transaction.from_wire(item["tx"])
            if tx.type == ANCHOR_TX_TYPE:
                out.append((tx, str(item["outcome"]["code"])))
    return out
