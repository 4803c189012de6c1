"""The risk and credit workers (node/workers.py) over the real channel rules, in memory.

The workers read the committed state through a store adapter over
:class:`channels.memory.MemoryNetwork` and hand transactions to a stand-in for the
channel driver that commits them as the next block (or holds them, to play a crash or
a lost transaction). The same workers over five real node processes are exercised by
tests/node/test_node_month.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from channels.context import DAY_MS, NetworkParams
from channels.credit import synced_height
from channels.state import OK, read_value
from ledger.blocks import Transaction
from ledger.crypto import Ed25519Signer
from ledger.errors import ConfigError
from ledger.genesis import make_local_genesis, org_key_path
from ledger.keyfile import write_key_file
from ledger.store import BlockStore
from node import workers
from node.channel import ChannelService, SubmitOutcome, TxStatus
from node.config import load_node_config, render_node_config
from node.rules import TxOutcome
from node.workers import (
    RESUBMIT_AFTER_MS,
    ChannelWorker,
    CreditWorker,
    OrgSigner,
    RiskWorker,
    org_workers,
    resume_height,
    sync_target,
)
from tests.channels.helpers import NET, Harness, bref

PARAMS = NetworkParams(multi_lender_threshold=2, concentration_min_book_cents=10**12)


class MemoryStore:
    """The part of :class:`BlockStore` the workers read, over a MemoryNetwork."""

    def __init__(self, h: Harness) -> None:
        self.h = h

    def height(self, channel: str) -> int:
        return self.h.net.heights[channel]

    def get_state(self, channel: str, key: bytes) -> bytes | None:
        return self.h.net.states[channel].get(key)

    def iter_state(self, channel: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self.h.net.states[channel].iter_prefix(prefix)

    def last_state_below(
        self, channel: str, prefix: bytes, stop: bytes
    ) -> tuple[bytes, bytes] | None:
        return self.h.net.states[channel].last_below(prefix, stop)


class Driver:
    """Stands in for a channel's driver: ``submit`` commits the transactions as the next
    block unless ``hold`` is set (then they stay pending: a lost submission)."""

    replica = SimpleNamespace(view_active=True)
    failed: str | None = None

    def __init__(self, h: Harness, channel: str) -> None:
        self.h = h
        self.channel = channel
        self.hold = False
        self.refuse_first = False  # the driver refuses the first tx of the next batch
        self.submitted: list[Transaction] = []
        self.pending: dict[bytes, Transaction] = {}

    async def submit(self, txs: Sequence[Transaction]) -> list[SubmitOutcome]:
        self.submitted += txs
        if self.refuse_first:
            self.refuse_first = False
            refused = SubmitOutcome(txs[0].tx_id, False, "mempool full")
            return [refused, *await self.submit(txs[1:])]
        if self.hold:
            self.pending.update({t.tx_id: t for t in txs})
        else:
            self.h.net.commit(self.channel, list(txs), self.h.now)
        return [SubmitOutcome(t.tx_id, True) for t in txs]

    def commit_pending(self, keep: int) -> None:
        """Commit the first ``keep`` held transactions; forget the rest (a crash)."""
        txs = list(self.pending.values())[:keep]
        self.pending.clear()
        if txs:
            self.h.net.commit(self.channel, txs, self.h.now)

    def tx_status(self, tx_id: bytes) -> TxStatus | None:
        found = self.h.net.outcomes.get(tx_id)
        if found is not None:
            _ch, height, code, message = found
            return TxStatus("committed", "", height, 0, TxOutcome(code, message))
        return TxStatus("pending", "") if tx_id in self.pending else None


class Rig:
    """A harness with three admitted lenders, the two drivers and worker factories."""

    def __init__(self, params: NetworkParams = PARAMS) -> None:
        self.h = Harness(params)
        self.params = params
        self.store = MemoryStore(self.h)
        self.drivers = {ch: Driver(self.h, ch) for ch in ("risk", "credit")}
        for lender in ("lender-a", "lender-b", "lender-c"):
            self.h.admit(lender)

    def worker(self, cls: type[ChannelWorker], org: str) -> Any:
        signer = OrgSigner(NET, org, Ed25519Signer.generate())
        return cls(
            store=cast(BlockStore, self.store),
            channels=cast(dict[str, ChannelService], self.drivers),
            org=signer,
            params=self.params,
            clock_ms=lambda: self.h.now,
        )

    def risk(self) -> RiskWorker:
        w: RiskWorker = self.worker(RiskWorker, "riskc")
        return w

    def credit(self) -> CreditWorker:
        w: CreditWorker = self.worker(CreditWorker, "credit")
        return w

    def alerts(self) -> list[dict[str, Any]]:
        state = self.h.net.states["risk"]
        return [dict(read_value(state, k)) for k, _ in state.iter_prefix(b"risk/alert/")]

    def day(self) -> None:
        self.h.advance(DAY_MS // 4)


def steps(worker: ChannelWorker, n: int = 3) -> int:
    return sum(asyncio.run(worker.step()) for _ in range(n))


def over_cap(rig: Rig, loan: str, lender: str = "lender-c", borrower: int = 5) -> None:
    rig.h.lend(lender, loan, 1_000_000, borrower=borrower, rate_bp=3600)


def test_each_new_height_is_one_window_and_findings_are_posted_once() -> None:
    rig = Rig()
    risk = rig.risk()
    rig.h.lend("lender-a", "a-1", 500_000, borrower=1)  # nothing to find
    assert steps(risk) == 0 and risk.scanned == rig.h.height("supervision")
    over_cap(rig, "c-1")
    top = rig.h.height("supervision")
    assert steps(risk) == 1
    [alert] = rig.alerts()
    assert (alert["rule"], alert["from_height"], alert["source_height"]) == (
        "rate_above_cap",
        top - 1,
        top,
    )
    assert alert["subject"]["loan_id"] == "c-1"
    # the committed alert is the worker's progress: nothing more, however often it runs
    assert steps(risk, 5) == 0 and risk.scanned == top
    assert rig.h.height("risk") == 1


def test_several_windows_in_one_step_keep_their_own_heights() -> None:
    rig = Rig()
    for i, borrower in enumerate((7, 7, 7)):  # a multi-lender borrower, one lender a block
        rig.h.lend(("lender-a", "lender-b", "lender-c")[i], f"m-{i}", 100_000, borrower=borrower)
    over_cap(rig, "c-9", borrower=9)
    risk = rig.risk()
    assert steps(risk, 4) == 2
    found = sorted((a["rule"], a["source_height"]) for a in rig.alerts())
    top = rig.h.height("supervision")
    assert found == [("multi_lender", top - 1), ("rate_above_cap", top)]
    outcomes = [o for o in rig.h.net.outcomes.values() if o[0] == "risk"]
    assert all(code == OK for _, _, code, _ in outcomes)


def test_restart_resumes_from_the_risk_chain_and_repairs_a_half_committed_window() -> None:
    rig = Rig()
    # two findings in one window: a multi-lender borrower whose third loan is over cap
    rig.h.lend("lender-a", "a-1", 100_000, borrower=3)
    rig.h.lend("lender-b", "b-1", 100_000, borrower=3)
    over_cap(rig, "c-1", borrower=3)
    top = rig.h.height("supervision")
    risk = rig.risk()
    rig.drivers["risk"].hold = True
    assert steps(risk, 1) == 2
    rig.drivers["risk"].commit_pending(keep=1)  # the node crashes with one alert committed
    assert len(rig.alerts()) == 1
    assert resume_height(cast(BlockStore, rig.store)) == top - 1

    rig.drivers["risk"].hold = False
    again = rig.risk()  # a new process: no local memory
    assert steps(again) == 1
    assert sorted(a["rule"] for a in rig.alerts()) == ["multi_lender", "rate_above_cap"]
    assert again.scanned == top
    # and a third process finds nothing to add
    assert steps(rig.risk()) == 0


def test_a_lost_submission_is_recomputed_after_the_timeout() -> None:
    rig = Rig()
    over_cap(rig, "c-1")
    risk = rig.risk()
    rig.drivers["risk"].hold = True
    assert steps(risk, 1) == 1
    rig.drivers["risk"].pending.clear()  # dropped (e.g. the mempool was lost)
    assert steps(risk, 3) == 0  # still waiting for it
    rig.h.advance(RESUBMIT_AFTER_MS + 1)
    rig.drivers["risk"].hold = False
    assert steps(risk, 2) == 1
    assert [a["rule"] for a in rig.alerts()] == ["rate_above_cap"]
    assert len(rig.drivers["risk"].submitted) == 2


def test_credit_worker_syncs_to_the_committed_height_and_then_stays_quiet() -> None:
    rig = Rig()
    credit = rig.credit()
    rig.h.lend("lender-a", "a-1", 100_000, borrower=1)
    assert steps(credit) == 1
    assert synced_height(rig.h.net.states["credit"]) == rig.h.height("supervision")
    assert steps(credit, 5) == 0 and rig.h.height("credit") == 1
    # a new process resumes from the chain's cred/sync: nothing to redo
    assert steps(rig.credit(), 3) == 0
    rig.h.lend("lender-b", "b-1", 100_000, borrower=1)
    assert steps(rig.credit()) == 1
    answer = rig.h.ok(
        "credit",
        "lender-c",
        "credit_query",
        {"query_id": "q1", "borrower_ref": bref(1), "purpose": "loan_application"},
    ).result
    assert answer is not None and answer["lenders_with_open_loans"] == 2


def test_credit_sync_is_split_to_the_fact_limit() -> None:
    rig = Rig(NetworkParams(credit_sync_max_facts=5))
    for i in range(4):  # 3 admissions, then 2 facts (contract, disbursement) a block
        rig.h.lend("lender-a", f"a-{i}", 100_000, borrower=i)
    store = cast(BlockStore, rig.store)
    tip = rig.h.height("supervision")
    assert sync_target(store, 0, tip, 5) == 4  # 3 admissions + 2 facts of height 4
    assert sync_target(store, 4, tip, 5) == tip - 1  # two whole blocks
    assert sync_target(store, tip, tip, 5) is None
    assert sync_target(store, 3, tip, 1) is None  # one height alone holds 2 facts
    assert sync_target(store, 3, tip, 1, 2) == 4  # …named alone within the hard limit
    assert sync_target(store, 3, tip, 1, 50) == 4
    assert sync_target(store, 0, tip, 2, 50) == 2  # not a height past the soft limit
    credit = rig.credit()
    assert steps(credit, 6) == 3
    assert synced_height(rig.h.net.states["credit"]) == tip
    assert all(o[2] == OK for o in rig.h.net.outcomes.values() if o[0] == "credit")


def test_the_worker_syncs_fewer_facts_than_the_rule_allows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from node import workers

    rig = Rig(NetworkParams(credit_sync_max_facts=50_000))
    for i in range(4):  # 3 admissions, then 2 facts (contract, disbursement) a block
        rig.h.lend("lender-a", f"a-{i}", 100_000, borrower=i)
    tip = rig.h.height("supervision")
    monkeypatch.setattr(workers, "SYNC_FACTS", 5)
    credit = rig.credit()
    assert steps(credit, 6) == 3  # as with a rule limit of 5: (0, 4], (4, tip-1], (tip-1, tip]
    assert synced_height(rig.h.net.states["credit"]) == tip
    # a height holding more facts than the worker's step (2 > 1) is synced on its own
    monkeypatch.setattr(workers, "SYNC_FACTS", 1)
    rig.h.lend("lender-a", "a-8", 100_000, borrower=8)
    rig.h.lend("lender-a", "a-9", 100_000, borrower=9)
    assert rig.h.height("supervision") == tip + 2
    assert steps(rig.credit(), 4) == 2
    assert synced_height(rig.h.net.states["credit"]) == tip + 2
    assert all(o[2] == OK for o in rig.h.net.outcomes.values() if o[0] == "credit")


def test_org_workers_follow_the_role_and_check_the_key(tmp_path: Path) -> None:
    genesis = make_local_genesis(tmp_path)
    store = cast(BlockStore, object())
    kw: dict[str, Any] = {"store": store, "channels": {}, "clock_ms": lambda: 0}

    def workers(org: str, key: Path) -> list[ChannelWorker]:
        return org_workers(genesis=genesis, node_id=f"{org}-node", org_key_file=key, **kw)

    [risk] = workers("risk_centre", org_key_path(tmp_path, "risk_centre"))
    assert isinstance(risk, RiskWorker) and risk.org.org == "risk_centre"
    [credit] = workers("credit_agency", org_key_path(tmp_path, "credit_agency"))
    assert isinstance(credit, CreditWorker)
    assert workers("bureau", org_key_path(tmp_path, "bureau")) == []
    with pytest.raises(ConfigError, match="not a key of organisation 'risk_centre'"):
        workers("risk_centre", org_key_path(tmp_path, "bureau"))
    stranger = tmp_path / "stranger.key"
    write_key_file(stranger, "risk_centre", Ed25519Signer.generate())
    with pytest.raises(ConfigError, match="not a key of organisation"):
        workers("risk_centre", stranger)
    org_key_path(tmp_path, "court").chmod(0o644)
    with pytest.raises(ConfigError, match="0600"):
        workers("court", org_key_path(tmp_path, "court"))


def test_node_config_names_the_org_key_relative_to_the_file(tmp_path: Path) -> None:
    text = render_node_config(
        node_id="risk_centre-node", key_file="k/node.key", genesis_file="g.json",
        data_dir=".", host="127.0.0.1", port=7003, org_key_file="k/risk_centre.key",
    )  # fmt: skip
    path = tmp_path / "node.toml"
    path.write_text(text)
    config = load_node_config(path)
    assert config.org_key_file == tmp_path / "k" / "risk_centre.key"
    path.write_text(text.replace('org_key_file = "k/risk_centre.key"\n', ""))
    assert load_node_config(path).org_key_file is None


def test_workers_wait_while_their_channel_is_changing_views() -> None:
    rig = Rig()
    over_cap(rig, "c-1")
    risk, credit = rig.risk(), rig.credit()
    for driver in rig.drivers.values():
        driver.replica = SimpleNamespace(view_active=False, view=1)
    assert steps(risk) == 0 and steps(credit) == 0
    for driver in rig.drivers.values():
        driver.replica = SimpleNamespace(view_active=True)
    assert steps(risk) == 1 and steps(credit) == 1


def test_a_window_with_a_refused_alert_is_scanned_again() -> None:
    rig = Rig()
    rig.h.lend("lender-a", "a-1", 100_000, borrower=3)
    rig.h.lend("lender-b", "b-1", 100_000, borrower=3)
    over_cap(rig, "c-1", borrower=3)  # two findings in the last window
    risk = rig.risk()
    rig.drivers["risk"].refuse_first = True
    assert steps(risk, 1) == 1 and len(rig.alerts()) == 1
    assert steps(risk, 3) == 1  # the refused one, again
    assert sorted(a["rule"] for a in rig.alerts()) == ["multi_lender", "rate_above_cap"]
    assert risk.scanned == rig.h.height("supervision")


@pytest.mark.parametrize(
    ("make", "expected_s"),
    [("credit", workers.CREDIT_SYNC_INTERVAL_S), ("risk", workers.WORKER_INTERVAL_S)],
)
def test_each_worker_steps_at_its_own_interval(
    make: str, expected_s: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The credit worker looks for facts every second (each sync is a credit block: a
    block costs the network the same whatever it holds), the risk worker every 0.3 s."""
    worker = getattr(Rig(), make)()
    pauses: list[float] = []
    real_sleep = asyncio.sleep

    async def no_step() -> int:
        return 0

    async def sleep(s: float) -> None:
        pauses.append(s)
        if len(pauses) == 3:
            raise asyncio.CancelledError
        await real_sleep(0)

    monkeypatch.setattr(worker, "step", no_step)
    monkeypatch.setattr(workers.asyncio, "sleep", sleep)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(worker.run())
    assert pauses == [expected_s] * 3
    assert workers.CREDIT_SYNC_INTERVAL_S > workers.WORKER_INTERVAL_S
