"""A realistic month over five real node processes (production rules, issue #5).

Three admitted lenders report ~4 new loans a day each for 30 days (360 loans, one
batch transaction per lender and day, through the SDK); short loans are settled. The
risk centre's node runs the monitoring worker and the credit agency's node the credit
sync worker (node/workers.py); nothing else posts alerts or syncs. Planted, as in the
in-memory scenario (tests/channels/month_scenario.py):

* day 5 — lender-c contracts a loan at 36% a year (above the 24% cap);
* days 10/12/14 — one borrower borrows from lender-a, lender-b, then lender-c
  (lender-c runs a credit check first and sees two other lenders);
* day 8/9 — a repayment before disbursement and a reused report id (rejected);
* day 17 — lender-a reports five 3-day-old loans late;
* day 20 — 15 of lender-b's loans fall overdue at once;
* day 22/23 — lender-a finances a loan on the service channel, then tries to register
  it again (double financing), and lender-b tries to register lender-a's loan.

Checked: exactly the four planted alerts appear on the risk channel (through the
alerts route and the SDK, each lender seeing only its own), the closed loop up to the
lender's feedback, the credit answers, the rejection reasons, that a restarted risk
node resumes without posting anything twice, and that the idle network goes quiet.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from clients import Client, LoanEvent, PseudonymKey, TransactionInvalid, write_pseudonym_key_file
from ledger.genesis import Genesis, genesis_document, genesis_from_document, write_genesis
from node.config import DEFAULT_ACK_DELAY_MS
from node.localnet import admit_lenders
from tests.channels.helpers import id_number
from tests.node.netfixture import (
    FAST_CONSENSUS,
    TestNetwork,
    add_lenders,
    credit_synced,
    free_base_port,
)

pytestmark = [
    pytest.mark.network,
    pytest.mark.xdist_group("month-network"),
    pytest.mark.timeout(600),  # one module-scoped network plays the whole month
]

LENDERS3 = ("lender-a", "lender-b", "lender-c")
PSEUDONYM = PseudonymKey(bytes(range(100, 132)))
#: Risk parameters of this network: three lenders are "many" (more than two).
RISK_PARAMS = {"multi_lender_threshold": 2, "concentration_min_book_cents": 10**12}
SPECIAL_BORROWER = 999
DAY = 86_400_000
WAIT_S = 90.0
#: Days after which the pending events are submitted (and the planted steps run).
FLUSH_AFTER = frozenset({6, 9, 13, 20, 22, 29})


def month_genesis(data: Path) -> Genesis:
    """Genesis hook: the three lenders, and the risk parameters above."""
    path = data / "genesis.json"
    doc = genesis_document(add_lenders(data, LENDERS3))
    for ch in doc["channels"]:
        if ch["id"] == "risk":
            ch["params"] = {**ch["params"], **RISK_PARAMS}
    genesis = genesis_from_document(doc, str(path))
    write_genesis(path, genesis)
    return genesis


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNetwork]:
    network = TestNetwork.prepare(
        tmp_path_factory.mktemp("monthnet"),
        base_port=free_base_port(),
        rules="channels",
        consensus=FAST_CONSENSUS,
        genesis_hook=month_genesis,
    )
    assert isinstance(network, TestNetwork)
    network.start()
    try:
        network.wait_healthy(timeout_s=60.0)
        write_pseudonym_key_file(network.data_dir / "keys" / "pseudonym.key", PSEUDONYM)
        admit_lenders(network.data_dir, network.genesis, LENDERS3)
        yield network
    finally:
        network.stop()


@dataclass(frozen=True)
class Loan:
    lender: str
    loan_id: str
    borrower: int
    principal: int
    rate_bp: int
    term: int


ORPHAN = Loan("lender-b", "b-orphan", 77_777, 10_000, 1500, 3)


@dataclass
class Month:
    loans: dict[tuple[str, str], Loan]
    rejections: dict[str, str]
    answers: dict[str, dict[str, Any]]
    clients: dict[str, Client]


def sdk(net: TestNetwork, org: str, store: Path | None = None) -> Client:
    return Client(
        genesis=net.genesis,
        key_file=net.data_dir / "keys" / f"{org}.key",
        store=store,
        pseudonym_key=PSEUDONYM,
        commit_timeout=WAIT_S,
    )


def wait_for(what: str, check: Any, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def play_month(net: TestNetwork, tmp: Path, seed: int = 2020_08_12) -> Month:
    rng = random.Random(seed)
    clients = {x: sdk(net, x, tmp / x) for x in LENDERS3}
    month = Month({}, {}, {}, clients)
    seq = dict.fromkeys(LENDERS3, 0)
    settle_on: dict[int, list[tuple[str, str]]] = {}

    def ref(borrower: int) -> bytes:
        return clients["lender-a"].borrower_ref(id_number(borrower))

    def ev(loan: Loan, kind: str, amount: int, at: int, report_id: str | None = None) -> LoanEvent:
        return LoanEvent(
            report_id=report_id or f"{loan.loan_id}-{kind}", loan_id=loan.loan_id,
            borrower_ref=ref(loan.borrower), event=kind, amount_cents=amount,
            rate_bp=loan.rate_bp, term_months=loan.term, event_time_ms=at,
            details={"contract_no": f"HT-{loan.loan_id}"},
        )  # fmt: skip

    def new_loan(lender: str, day: int, now: int, **kw: Any) -> list[LoanEvent]:
        seq[lender] += 1
        lid = kw.pop("loan_id", None) or f"{lender[-1]}-{day:02d}-{seq[lender]:03d}"
        loan = Loan(
            lender=lender,
            loan_id=lid,
            borrower=kw.pop("borrower", LENDERS3.index(lender) * 10_000 + seq[lender]),
            principal=rng.randrange(1_000, 50_000) * 100,
            rate_bp=kw.pop("rate", rng.choice((1200, 1500, 1800, 2000, 2400))),
            term=kw.pop("term", rng.choice((1, 3, 6, 12))),
        )
        month.loans[(lender, lid)] = loan
        if loan.term == 1 and day + 20 < 30:
            settle_on.setdefault(day + 20, []).append((lender, lid))
        at = kw.pop("event_time", now)
        return [
            ev(loan, "contract", loan.principal, at),
            ev(loan, "disbursement", loan.principal, at),
        ]

    def expect_invalid(reports: dict[str, tuple[str, list[LoanEvent]]]) -> None:
        """Submit the reports at once; record each one's rejection reason by label."""
        handles = {
            label: clients[x].submit_async(clients[x].prepare_report(evs))
            for label, (x, evs) in reports.items()
        }
        for label, handle in handles.items():
            with pytest.raises(TransactionInvalid) as info:
                handle.wait(WAIT_S)
            month.rejections[label] = info.value.reason

    batches: dict[str, list[LoanEvent]] = {x: [] for x in LENDERS3}
    top = 0

    def flush() -> int:
        """Submit the pending events (one batch per lender, in parallel); their height."""
        handles = [
            clients[x].submit_async(clients[x].prepare_report(evs)) for x, evs in batches.items()
        ]
        for evs in batches.values():
            evs.clear()
        return max(h.wait(WAIT_S).height or 0 for h in handles)

    for day in range(30):
        now = time.time_ns() // 1_000_000
        for lender in LENDERS3:
            for i in range(4):
                batches[lender] += new_loan(lender, day, now, **({"term": 12} if i == 0 else {}))
        for lender, lid in settle_on.pop(day, []):
            loan = month.loans[(lender, lid)]
            batches[lender].append(ev(loan, "settlement", loan.principal, now))
        if day == 5:
            batches["lender-c"] += new_loan(
                "lender-c", day, now, rate=3600, term=12, loan_id="c-over-cap"
            )
        if day in (10, 12, 14):
            lender = {10: "lender-a", 12: "lender-b", 14: "lender-c"}[day]
            if day == 14:  # lender-c checks the borrower first (days 10 and 12 are committed)
                wait_for("the credit sync of day 13", lambda h=top: credit_synced(net) >= h)
                report = clients["lender-c"].credit_check(ref(SPECIAL_BORROWER))
                month.answers["before"] = dict(report.answer)
            batches[lender] += new_loan(
                lender, day, now, borrower=SPECIAL_BORROWER, term=12, loan_id=f"{lender[-1]}-999"
            )
        if day == 17:
            for _ in range(5):
                batches["lender-a"] += new_loan("lender-a", day, now, event_time=now - 3 * DAY)
        if day == 8:
            batches["lender-b"].append(ev(ORPHAN, "contract", ORPHAN.principal, now))
        if day == 20:
            longer = [k[1] for k, x in month.loans.items() if k[0] == "lender-b" and x.term > 1]
            for lid in longer[:15]:
                loan = month.loans[("lender-b", lid)]
                batches["lender-b"].append(ev(loan, "overdue", loan.principal // 2, now))
        if day not in FLUSH_AFTER:
            continue  # several days go in one batch per lender: fewer round trips
        top = flush()
        if day == 9:  # a repayment before disbursement; a reused report id
            first = next(iter(month.loans.values()))
            assert first.lender == "lender-a"
            dup = Loan("lender-a", "a-dup", 88_888, 10_000, 1500, 3)
            expect_invalid(
                {
                    "repayment_before_disbursement": (
                        "lender-b",
                        [ev(ORPHAN, "repayment", 1_000, now)],
                    ),
                    "reused_report_id": (
                        "lender-a",
                        [ev(dup, "contract", 10_000, now, report_id=f"{first.loan_id}-contract")],
                    ),
                }
            )
        if day == 22:
            first = month.loans[("lender-a", "a-00-001")]
            register = clients["lender-a"].register_asset
            kw = {
                "loan_id": first.loan_id,
                "claimed_state": "active",
                "claimed_outstanding_cents": first.principal,
                "purpose": "financing",
            }
            st = register(asset_id="asset-a-001", **kw)
            assert st.valid
            # again (double financing), and by a lender that does not hold the loan
            tries = {
                "double_financing": (clients["lender-a"], "asset-a-001-again"),
                "someone_elses_loan": (clients["lender-b"], "stolen"),
            }
            handles = {
                label: c.submit_async(
                    c.prepare(
                        c.build(
                            "service",
                            "asset_register",
                            {"asset_id": asset, "source_height": top, **kw},
                        )
                    )
                )
                for label, (c, asset) in tries.items()
            }
            for label, handle in handles.items():
                with pytest.raises(TransactionInvalid) as info:
                    handle.wait(WAIT_S)
                month.rejections[label] = info.value.reason
    wait_for("the month-end credit sync", lambda: credit_synced(net) >= top)
    month.answers["after"] = dict(clients["lender-a"].credit_check(ref(SPECIAL_BORROWER)).answer)
    return month


@pytest.fixture(scope="module")
def month(net: TestNetwork, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Month]:
    played = play_month(net, tmp_path_factory.mktemp("month-stores"))
    try:
        yield played
    finally:
        for c in played.clients.values():
            c.close()


def bureau_alerts(net: TestNetwork, i: int = 0, query: str = "") -> httpx.Response:
    return net.client(i, "bureau").get("/v1/channels/risk/alerts" + query)


def all_alerts(net: TestNetwork, n: int) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        r = bureau_alerts(net)
        r.raise_for_status()
        alerts: list[dict[str, Any]] = r.json()["alerts"]
        return alerts if len(alerts) >= n else None

    alerts: list[dict[str, Any]] = wait_for(f"{n} alerts on the risk channel", check)
    return alerts


def test_volume_and_rejections(month: Month) -> None:
    assert len(month.loans) >= 360
    assert month.rejections == {
        "repayment_before_disbursement": "bad_transition",
        "reused_report_id": "duplicate_report_id",
        "double_financing": "asset_already_registered",
        "someone_elses_loan": "loan_not_found",
    }


def test_exactly_the_planted_alerts_appear(net: TestNetwork, month: Month) -> None:
    alerts = all_alerts(net, 4)
    by_rule = {a["rule"]: a for a in alerts}
    assert sorted(by_rule) == ["late_report", "multi_lender", "overdue_jump", "rate_above_cap"]
    assert len(alerts) == 4, [(a["rule"], a["subject"]) for a in alerts]
    assert by_rule["rate_above_cap"]["subject"]["loan_id"] == "c-over-cap"
    assert by_rule["rate_above_cap"]["details"]["rate_bp"] == 3600
    assert by_rule["multi_lender"]["details"]["lenders"] == 3
    assert len(by_rule["multi_lender"]["evidence"]) == 3
    assert by_rule["late_report"]["subject"] == {"lender": "lender-a"}
    assert by_rule["late_report"]["details"]["late_events"] == 10
    assert by_rule["overdue_jump"]["subject"] == {"lender": "lender-b"}
    assert by_rule["overdue_jump"]["details"]["delinquent_loans"] == 15
    for a in alerts:  # each window is one supervision height
        assert a["source_height"] == a["from_height"] + 1
    # every node serves the same alerts
    ids = sorted(a["alert_id"]["$hex"] for a in alerts)
    for i in (1, 4):
        other = wait_for(
            f"the alerts on node {i}",
            lambda i=i: (
                bureau_alerts(net, i).json()["alerts"]
                if len(bureau_alerts(net, i).json()["alerts"]) == 4
                else None
            ),
        )
        assert sorted(a["alert_id"]["$hex"] for a in other) == ids


def test_lenders_see_only_their_alerts_and_give_feedback(net: TestNetwork, month: Month) -> None:
    alerts = {a["rule"]: a for a in all_alerts(net, 4)}
    assert [a["rule"] for a in month.clients["lender-a"].risk_alerts()] == ["late_report"]
    assert [a["rule"] for a in month.clients["lender-b"].risk_alerts()] == ["overdue_jump"]
    [mine] = month.clients["lender-c"].risk_alerts(status="open")
    assert mine["rule"] == "rate_above_cap" and isinstance(mine["alert_id"], bytes)

    # the bureau disposes the rate alert and, naming lender-c, the multi-lender one
    with sdk(net, "bureau") as bureau:
        for rule, note in (("rate_above_cap", "rate above the legal cap"), ("multi_lender", "x")):
            payload: dict[str, Any] = {
                "alert_id": bytes.fromhex(alerts[rule]["alert_id"]["$hex"]),
                "action": "rectification",
                "note": note,
            }
            if rule == "multi_lender":
                payload["respondent"] = "lender-c"
            assert bureau.submit(
                bureau.prepare(bureau.build("risk", "alert_disposition", payload))
            ).valid

    lender_c = month.clients["lender-c"]
    disposed = {a["rule"]: a for a in lender_c.risk_alerts(status="disposed")}
    assert sorted(disposed) == ["multi_lender", "rate_above_cap"]
    # the multi-lender alert shows lender-c only its own report, not the other lenders'
    [own] = disposed["multi_lender"]["evidence"]
    assert lender_c.status(own["tx"]).valid
    assert [s["step"] for s in disposed["rate_above_cap"]["steps"]] == ["alert", "disposition"]

    st = lender_c.risk_feedback(disposed["rate_above_cap"]["alert_id"], "will reprice and settle")
    assert st.valid
    [fed] = lender_c.risk_alerts(status="feedback")
    assert fed["rule"] == "rate_above_cap" and fed["respondent"] == "lender-c"
    # feedback out of turn is refused by the state machine
    with pytest.raises(TransactionInvalid) as info:
        lender_c.risk_feedback(disposed["rate_above_cap"]["alert_id"], "again")
    assert info.value.reason == "bad_alert_state"
    # a lender that is not the respondent may not answer
    with pytest.raises(TransactionInvalid) as info:
        month.clients["lender-a"].risk_feedback(disposed["multi_lender"]["alert_id"], "not mine")
    assert info.value.reason == "not_respondent"


def test_alert_route_permissions_and_errors(net: TestNetwork, month: Month) -> None:
    alerts = all_alerts(net, 4)
    # the court reads the whole risk channel (by default), so it reads every alert
    r = net.client(1, "court").get("/v1/channels/risk/alerts")
    assert r.status_code == 200
    assert {a["alert_id"]["$hex"] for a in r.json()["alerts"]} >= {
        a["alert_id"]["$hex"] for a in alerts
    }
    r = bureau_alerts(net, 2, "?status=bogus")
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    r = net.client(2, "risk_centre").get("/v1/channels/risk/alerts?status=open")
    assert r.status_code == 200 and all(a["status"] == "open" for a in r.json()["alerts"])
    r = net.client(2, "lender-a").get("/v1/channels/risk/alerts", sign=False)
    assert r.status_code == 401


def test_credit_answers_show_the_multi_lender_borrower(month: Month) -> None:
    before = month.answers["before"]
    assert before["lenders_with_open_loans"] == 2 and before["asker_has_open_loans"] is False
    assert before["total_outstanding_cents"] == sum(
        x.principal for x in month.loans.values()
        if x.borrower == SPECIAL_BORROWER and x.lender != "lender-c"
    )  # fmt: skip
    after = month.answers["after"]
    assert after["lenders_with_open_loans"] == 3 and after["other_lenders_with_open_loans"] == 2
    assert after["asker_has_open_loans"] is True
    assert after["recent_queries_by_others"] == 1  # lender-c's pre-loan check
    assert "lender-" not in repr(after)


def quiet_heights(
    net: TestNetwork, *, still_s: float = DEFAULT_ACK_DELAY_MS / 1000 + 2.0
) -> dict[str, int]:
    """Wait until no channel's height changes for ``still_s`` seconds (longer than
    acknowledgements wait: ``[relay] ack_delay_ms``); the heights."""
    channels = ("supervision", "risk", "judicial", "credit", "service")

    def snap() -> dict[str, int]:
        c = net.client(0, "bureau")
        return {ch: c.height(ch) for ch in channels}

    last = snap()
    since = time.monotonic()
    deadline = since + WAIT_S
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = snap()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= still_s:
            return now
    raise AssertionError(f"the network did not go quiet: {last}")


def test_a_restarted_risk_node_resumes_without_duplicates_and_the_network_goes_quiet(
    net: TestNetwork, month: Month
) -> None:
    alerts = all_alerts(net, 4)
    quiet = quiet_heights(net)
    i = next(k for k, n in enumerate(net.nodes) if n.node_id == "risk_centre-node")
    net.restart(i, wait=False)
    net.wait_healthy(timeout_s=WAIT_S, indexes=[i])
    net.wait_heights("risk", quiet["risk"], indexes=[i], timeout_s=WAIT_S)
    assert quiet_heights(net) == quiet  # the restarted worker re-scans, finds it all done
    assert len(bureau_alerts(net).json()["alerts"]) == len(alerts)
