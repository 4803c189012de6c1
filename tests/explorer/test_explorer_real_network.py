"""The explorer in Chromium against a REAL local network (issue #8's "done means").

Five node processes with the production rules, prepared exactly as ``wulian up``
prepares them (demo lender, the explorer orgs ``court-clerks``/``audit-office`` and the
demo explorer accounts). People are registered with ``wulian explorer add-user``; the
demo lender reports loan events through the SDK and waits for their evidence codes.
Then Playwright drives Debian's Chromium on the court node's explorer:

* a clerk signs in (after a failed attempt), sees only the judicial channel on the
  live overview, finds a record through a mistyped evidence code ("did you mean"),
  opens its lineage (laptop, tablet, English);
* verifies the SDK-stored record file (genuine → verified) and a tampered copy
  (→ mismatch, only the ``commitment`` check fails) — hashed in the page, only
  digests posted — also as the lender's ``wulian-record/1`` file; prints the report
  (HTML print view) and downloads the PDF, whose text (pdftotext) carries the
  Chinese labels and the code; every step is in the hash-chained audit log;
* the clerk's org may not read the supervision channel: its pages, blocks (by height
  and hash), transactions and the search answer exactly like a channel that does not
  exist, and the overview's live fragment lists no supervision data; an auditor, who
  may read it, sees the same URLs (the control).

The default role table is what is tested: ``clerk`` reads only ``judicial``, ``auditor``
reads every channel (ledger/genesis.py ``DEFAULT_READ``).

Screenshots and the PDFs go to ``test-artifacts/explorer/real-network/`` (ignored by
git, overwritten on each run; a CI job collects the directory). Skipped with a message
when Chromium or the playwright package is missing (``deploy/install-system-deps.sh``;
never ``playwright install``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from clients import Client, Evidence, LoanEvent
from ledger.hashing import TAG_RECORD, tagged_hash
from node.localnet import AUDITOR_ORG, CLERK_ORG, explorer_accounts_file
from tests.node.netfixture import FAST_CONSENSUS, TestNetwork, free_base_port

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover
    sync_playwright = None  # type: ignore[assignment]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts" / "explorer" / "real-network"
TIMEOUT_MS = 45_000
PASSWORD = "a long passphrase 长口令"
COURT, BUREAU = 1, 0  # node indexes (INSTITUTION_ROLES order)

pytestmark = [
    pytest.mark.network,
    pytest.mark.xdist_group("explorer-real-network"),
    pytest.mark.skipif(sync_playwright is None, reason="the playwright package is not installed"),
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason="Chromium is not installed (deploy/install-system-deps.sh installs Debian's)",
    ),
]


@dataclass(frozen=True)
class World:
    net: TestNetwork
    court_url: str
    bureau_url: str
    ev: Evidence  # the record the clerk verifies
    other: Evidence  # a second record of the same loan
    tx_height: int  # the supervision block of ev's transaction


def wulian(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        input=stdin, capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip


def add_users(net: TestNetwork, node: int, users: dict[str, tuple[str, str]]) -> None:
    """``wulian explorer add-user`` for each ``user: (org, name)`` (run concurrently)."""
    config = str(net.nodes[node].config_path)
    add = [sys.executable, "-m", "node.cli", "explorer", "add-user", "--config", config]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    procs = [
        subprocess.Popen(
            [*add, "--user", user, "--org", org, "--name", name, "--password-stdin"],
            text=True,
            cwd=REPO,
            **pipes,
        )
        for user, (org, name) in users.items()
    ]
    for proc in procs:
        _, err = proc.communicate(PASSWORD + "\n", timeout=120)
        assert proc.returncode == 0, err


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data = tmp_path_factory.mktemp("explorer-net")
    # exactly what `wulian up` prepares (demo lender, explorer orgs and accounts)
    net = TestNetwork.prepare(
        data, base_port=free_base_port(), rules="channels", consensus=FAST_CONSENSUS
    )
    assert isinstance(net, TestNetwork)
    net.start()
    try:
        net.wait_healthy(timeout_s=90)  # also admits the demo lender
        add_users(
            net, COURT, {"clerk.li": (CLERK_ORG, "李明"), "auditor.wang": (AUDITOR_ORG, "王芳")}
        )
        with Client.from_network(data, evidence_timeout=90.0) as lender:
            ref = lender.borrower_ref("11010519491231002X")
            now = int(time.time() * 1000)
            events = [
                LoanEvent(
                    report_id=f"R-{kind}", loan_id="L-2026-0042", borrower_ref=ref, event=kind,
                    amount_cents=2_000_000, rate_bp=1800, term_months=12, event_time_ms=now,
                    details={"contract_no": "HT-0042", "备注": "网络借贷"},
                )
                for kind in ("contract", "disbursement")
            ]  # fmt: skip
            st = lender.report(events)
            assert st.valid, st
            assert st.height is not None
            ev = lender.evidence(st.tx_id, index=0)
            other = lender.evidence(st.tx_id, index=1)
        assert ev.record is not None and ev.report.ok
        yield World(net, net.nodes[COURT].url, net.nodes[BUREAU].url, ev, other, st.height)
    finally:
        net.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        yield b
        b.close()


def new_page(browser: Browser, **kw: Any) -> Page:
    ctx = browser.new_context(
        viewport={"width": 1366, "height": 900}, accept_downloads=True, locale="zh-CN", **kw
    )
    ctx.set_default_timeout(TIMEOUT_MS)
    return ctx.new_page()


def sign_in(page: Page, url: str, user: str, password: str = PASSWORD) -> None:
    page.goto(url + "/explorer/")
    assert "/explorer/login" in page.url
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("#sign-in")
    page.wait_for_url(url + "/explorer/")


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def typo_of(code: str) -> str:
    """The code with one data symbol changed (its check symbol then disagrees)."""
    body = code.replace("-", "")
    i = 5
    changed = body[:i] + ("A" if body[i] != "A" else "B") + body[i + 1 :]
    return changed.lower()  # typed in lower case, without hyphens


def audit_lines(net: TestNetwork, node: int) -> list[dict[str, Any]]:
    path = net.nodes[node].config_path.parent / "explorer" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def check_js_sha256(page: Page) -> None:
    """The shipped SHA-256 against the FIPS 180-4 vectors, inside Chromium."""
    got = page.evaluate(
        """() => {
          const S = window.WulianSHA256, enc = t => S.utf8(t);
          const h = new S.Sha256(); const a = enc('a'.repeat(1000));
          for (let i = 0; i < 1000; i++) h.update(a);
          return [S.toHex(S.sha256(enc(''))), S.toHex(S.sha256(enc('abc'))),
                  S.toHex(S.sha256(enc('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq'))),
                  S.toHex(h.digest())];
        }"""
    )
    assert got == [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
    ]


# ---------------------------------------------------------------------------- tests


def test_demo_accounts_of_wulian_up_sign_in(world: World) -> None:
    """A newcomer's `wulian up` network has a clerk and an auditor account to try."""
    lines = explorer_accounts_file(world.net.data_dir).read_text("utf-8").splitlines()
    rows = {line.split("\t")[2]: line.split("\t") for line in lines}
    assert set(rows) == {"clerk", "auditor"}
    assert explorer_accounts_file(world.net.data_dir).stat().st_mode & 0o777 == 0o600
    for user, url in (("clerk", world.court_url), ("auditor", world.bureau_url)):
        node_id, page_url, _, password = rows[user]
        assert page_url == url + "/explorer/"
        with httpx.Client(base_url=url, timeout=30, follow_redirects=True) as http:
            form = http.get("/explorer/login")
            token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
            assert token is not None
            r = http.post(
                "/explorer/login",
                data={"username": user, "password": password, "csrf_token": token.group(1),
                      "next": "/explorer/"},
            )  # fmt: skip
            assert r.status_code == 200 and 'data-channel="judicial"' in r.text, node_id
            assert ('data-channel="supervision"' in r.text) == (user == "auditor")


def test_clerk_finds_evidence_through_a_typo(world: World, browser: Browser) -> None:
    url, code = world.court_url, world.ev.code
    page = new_page(browser)
    page.goto(url + "/explorer/")
    page.fill("input[name=username]", "clerk.li")
    page.fill("input[name=password]", "not the password")
    page.click("#sign-in")
    assert "用户名或密码错误" in page.inner_text("#login-message")
    sign_in(page, url, "clerk.li")
    assert page.locator('tr[data-channel="judicial"]').count() == 1
    assert page.locator('tr[data-channel="supervision"]').count() == 0  # a clerk's view
    stamp = page.inner_text("#live-stamp")
    page.wait_for_function(
        "s => document.getElementById('live-stamp').textContent !== s", arg=stamp
    )  # the live update (polling fetch) replaced the fragment
    shot(page, "01-clerk-overview")

    page.click("nav >> text=存证")
    page.fill("#code-input", typo_of(code))
    page.click("#code-search")
    assert "校验位不符" in page.inner_text("#search-error")
    assert code in page.inner_text("#suggestions")
    shot(page, "02-did-you-mean")
    page.click(f"#suggestions >> text={code}")
    page.wait_for_selector("ol.lineage")
    assert unquote(page.url) == f"{url}/explorer/evidence/{code}"  # the URL the QR leads to
    text = page.inner_text("main")
    for step in ("放贷机构上报", "监管链区块", "跨链锚定", "司法链区块"):
        assert step in text
    assert "无监管链查看权限" in text  # the clerk does not see the lender's details
    assert "demo-lender" not in text and "L-2026-0042" not in text
    assert f"#{world.tx_height}" in text  # the supervision block of the report
    shot(page, "03-lineage")
    page.set_viewport_size({"width": 768, "height": 1024})  # a tablet
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 1
    shot(page, "03-lineage-tablet")
    page.click("a[data-lang=en]")
    page.wait_for_selector("text=Anchored by")
    shot(page, "03-lineage-english")
    page.click("a[data-lang=zh]")
    page.wait_for_selector("ol.lineage")
    page.set_viewport_size({"width": 1366, "height": 900})

    # the search box takes the code too (in any case, without hyphens)
    page.fill("header input[name=q]", world.other.code.replace("-", "").lower())
    page.press("header input[name=q]", "Enter")
    page.wait_for_selector(f'article.evidence[data-code="{world.other.code}"]')
    page.context.close()

    log = audit_lines(world.net, COURT)
    signs = [(e["action"], e["query"]) for e in log if e["action"].startswith("sign_in")]
    assert ("sign_in_failed", {"username": "clerk.li"}) in signs
    assert ("sign_in", {"username": "clerk.li"}) in signs
    lookups = [e for e in log if e.get("user") == "clerk.li"]
    found = [e for e in lookups if e["action"] == "evidence_lookup"]
    assert found[0]["result"]["found"] == 0 and code in found[0]["result"]["suggestions"]
    assert any(e["action"] == "evidence_view" and e["query"]["code"] == code for e in lookups)


def test_clerk_verifies_genuine_and_tampered_files_and_prints(
    world: World, browser: Browser, tmp_path: Path
) -> None:
    url, ev = world.court_url, world.ev
    record = ev.record
    assert record is not None
    genuine_bytes = record.data  # the exact bytes the SDK stored and committed
    tampered_bytes = bytearray(genuine_bytes)
    tampered_bytes[-1] ^= 0x01
    files = tmp_path / "filing"
    files.mkdir()
    (files / "L-2026-0042.bin").write_bytes(genuine_bytes)
    (files / "L-2026-0042.bin.salt").write_text(record.salt.hex() + "\n")
    (files / "L-2026-0042.bin.receipt.json").write_text(json.dumps(dict(ev.receipt)))
    (files / "tampered.bin").write_bytes(bytes(tampered_bytes))
    (files / "tampered.bin.salt").write_bytes(record.salt)  # raw 32 bytes
    (files / "tampered.bin.receipt.json").write_text(json.dumps({"evidence_code": ev.code}))
    # the lender's `wulian evidence --record-out` file (bytes and salt inside)
    (files / "disbursement.record.json").write_text(json.dumps(world.other.record_document()))
    (files / "disbursement.record.json.receipt.json").write_text(
        json.dumps(dict(world.other.receipt))
    )

    page = new_page(browser)
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.post_data or "") if r.method == "POST" else None)
    sign_in(page, url, "clerk.li")
    page.goto(url + "/explorer/verify")
    check_js_sha256(page)
    page.set_input_files("#batch-files", sorted(str(p) for p in files.iterdir()))
    page.wait_for_function(
        "() => [...document.querySelectorAll('input.code')].filter(i => i.value).length === 3"
    )
    page.click("#verify-all")
    page.wait_for_selector("#rows .status .badge.st-mismatch")
    statuses = {
        row.locator(".fname").inner_text(): row.locator(".badge").get_attribute("data-status")
        for row in page.locator("#rows tr.vrow").all()
    }
    assert statuses == {
        "L-2026-0042.bin": "verified",
        "tampered.bin": "mismatch",
        "disbursement.record.json": "verified",
    }
    failed = page.eval_on_selector_all(
        "li.chk-fail", "els => els.map(e => e.getAttribute('data-check'))"
    )
    assert failed == ["commitment"]  # the receipt is genuine; only the digest differs
    shot(page, "04-verify-genuine-and-tampered")

    (body,) = [json.loads(p) for p in posted if p.startswith("{")]
    by_code = {}
    for item in body["items"]:
        assert set(item) == {"code", "commitment"}
        by_code.setdefault(item["code"], []).append(item["commitment"])
    genuine_digest = tagged_hash(TAG_RECORD, record.salt + genuine_bytes).hex()
    assert genuine_digest == record.commitment.hex()
    assert genuine_digest in by_code[ev.code]
    sent = "".join(posted)
    assert genuine_bytes.hex() not in sent and record.salt.hex() not in sent  # stays local

    with page.context.expect_page() as report_info:
        page.click("#print-report")
    report = report_info.value
    report.wait_for_load_state()
    assert "电子数据存证核验报告" in report.inner_text("h1")
    report_text = report.inner_text("body")
    assert ev.code in report_text and genuine_digest in report_text
    assert report.locator("figure.qr img").count() == 3
    report.emulate_media(media="print")
    shot(report, "05-report-print-view")
    report.pdf(path=str(ARTIFACTS / "06-report-printed.pdf"))

    with page.expect_download() as dl_info:
        page.click("#download-pdf")
    pdf = ARTIFACTS / "07-report-download.pdf"
    dl_info.value.save_as(str(pdf))
    assert pdf.read_bytes().startswith(b"%PDF-")
    if shutil.which("pdftotext"):
        text = subprocess.run(
            ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, check=True, timeout=60
        ).stdout.decode("utf-8")
        flat = re.sub(r"\s+", "", text)
        for label in ("电子数据存证核验报告", "存证编码", "核验一致", "不一致"):
            assert label in flat, label
        assert ev.code.replace("-", "") in flat.replace("-", "")
    page.context.close()

    log = audit_lines(world.net, COURT)
    verifies = [e for e in log if e["action"] == "verify" and e["user"] == "clerk.li"]
    got = {(i["code"], i["status"]) for i in verifies[-1]["result"]["items"]}
    assert got == {(ev.code, "verified"), (ev.code, "mismatch"), (world.other.code, "verified")}
    assert {"report", "report_pdf"} <= {e["action"] for e in log}
    check = wulian("explorer", "check-audit", "--config", str(world.net.nodes[COURT].config_path))
    assert check.returncode == 0 and "hash chain intact" in check.stdout, check.stderr


def test_clerk_sees_no_supervision_data_even_by_direct_url(world: World, browser: Browser) -> None:
    url = world.court_url
    tx = world.ev.tx_id.hex()
    auditor = new_page(browser)
    sign_in(auditor, url, "auditor.wang")
    auditor.goto(f"{url}/explorer/channels/supervision/blocks/{world.tx_height}")
    block_hash = auditor.inner_text("#block-hash").strip()
    assert len(block_hash) == 64
    urls = [
        "/explorer/channels/supervision",
        f"/explorer/channels/supervision/blocks/{world.tx_height}",
        f"/explorer/channels/supervision/blocks/by-hash/{block_hash}",
        f"/explorer/channels/supervision/tx/{tx}",
        "/explorer/channels/supervision/blocks/1",
        "/explorer/channels/risk",
        "/explorer/channels/credit",
    ]
    # the control: an auditor reads the supervision channel
    for path in urls:
        r = auditor.request.get(url + path)
        assert r.status == 200, path
    auditor.goto(f"{url}/explorer/channels/supervision/tx/{tx}")
    assert "demo-lender" in auditor.inner_text("main")
    auditor.goto(f"{url}/explorer/evidence/{world.ev.code}")
    assert "L-2026-0042" in auditor.inner_text("main")  # an auditor sees the loan id
    shot(auditor, "08-auditor-supervision-tx")
    auditor.context.close()

    clerk = new_page(browser)
    sign_in(clerk, url, "clerk.li")
    missing = clerk.request.get(url + "/explorer/channels/no-such-channel")
    assert missing.status == 404

    def main_text(html: str) -> str:
        m = re.search(r"<main.*?</main>", html, re.S)
        assert m is not None
        return m.group(0)

    nothing = main_text(missing.text())
    for path in urls:
        r = clerk.request.get(url + path)
        assert r.status == 404, path
        # indistinguishable from a channel that is not there, and no data in it
        assert main_text(r.text()) == nothing, path
        assert "demo-lender" not in r.text() and block_hash not in main_text(r.text()), path
    r = clerk.goto(f"{url}/explorer/channels/supervision/tx/{tx}")
    assert r is not None and r.status == 404
    assert tx not in clerk.inner_text("main")
    shot(clerk, "09-clerk-supervision-url-404")
    for q in (tx, block_hash):  # nor does the search box
        r = clerk.request.get(f"{url}/explorer/search?q={q}")
        assert r.status == 404 and "demo-lender" not in r.text(), q
    r = clerk.request.get(f"{url}/explorer/search?q={world.tx_height}")  # a judicial block
    assert "/channels/supervision" not in r.text()
    live = clerk.request.get(url + "/explorer/api/overview")
    assert live.status == 200
    assert "judicial" in live.text() and "supervision" not in live.text()
    clerk.context.close()
