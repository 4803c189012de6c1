"""The explorer in a real browser: Debian's Chromium driven by Playwright.

The explorer runs in a uvicorn subprocess over the in-memory backend (its evidence is
real: receipts from the spec's vectors, verified by the project's verifier). A clerk
signs in, watches the overview update, finds evidence through a mistyped code, and
verifies a genuine and a tampered record file — hashed in the page, only digests
posted — then prints the report and downloads the PDF. Screenshots (laptop and
tablet sizes) are kept in ``test-artifacts/explorer/``.

Skipped with a message when Chromium or the playwright package is missing (install:
``deploy/install-system-deps.sh``; never ``playwright install``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.explorer.fake_backend import FakeBackend, load_fixtures
from tests.explorer.helpers import PASSWORD, commitment_hex, write_accounts

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "explorer"
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
TIMEOUT_MS = 30_000

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover
    sync_playwright = None  # type: ignore[assignment]

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="the playwright package is not installed"),
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason="Chromium is not installed (deploy/install-system-deps.sh installs Debian's)",
    ),
]

CODE_A = "WL-H41C-4KMH-2HD8-W5NY-~"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    data = tmp_path_factory.mktemp("explorer-data")
    write_accounts(data)
    port = _free_port()
    log = open(data / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.explorer.fake_backend", "--port", str(port),
         "--data", str(data), "--poll-ms", "700"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/explorer/login", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((data / "server.log").read_text("utf-8", "replace"))
            time.sleep(0.2)
        yield url, data
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        yield b
        b.close()


def new_page(browser: Browser, width: int = 1366, height: int = 900, **kw: Any) -> Page:
    ctx = browser.new_context(
        viewport={"width": width, "height": height},
        accept_downloads=True,
        locale="zh-CN",
        **kw,
    )
    ctx.set_default_timeout(TIMEOUT_MS)
    return ctx.new_page()


def sign_in(page: Page, url: str, user: str = "clerk.li") -> None:
    page.goto(url + "/explorer/")
    assert "/explorer/login" in page.url
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("#sign-in")
    page.wait_for_url(url + "/explorer/")


def shot(page: Page, name: str, full: bool = True) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full)


def test_sign_in_and_live_overview(server: tuple[str, Path], browser: Browser) -> None:
    url, _ = server
    page = new_page(browser)
    page.goto(url + "/explorer/")
    page.fill("input[name=username]", "clerk.li")
    page.fill("input[name=password]", "wrong password!!")
    page.click("#sign-in")
    assert "用户名或密码错误" in page.inner_text("#login-message")
    shot(page, "01-sign-in-failed")
    sign_in(page, url)
    assert page.locator('tr[data-channel="judicial"]').count() == 1
    assert page.locator('tr[data-channel="supervision"]').count() == 0  # a clerk's view
    stamp = page.inner_text("#live-stamp")
    page.wait_for_function(
        "s => document.getElementById('live-stamp').textContent !== s", arg=stamp
    )  # the polling fetch replaced the fragment
    shot(page, "02-overview-laptop")
    tablet = new_page(browser, 768, 1024, is_mobile=True, has_touch=True)
    sign_in(tablet, url)
    overflow = tablet.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1  # no sideways scrolling of the page on a tablet
    shot(tablet, "03-overview-tablet")
    page.click("a[data-lang=en]")
    page.wait_for_selector("text=Overview")
    shot(page, "04-overview-english")
    page.context.close()
    tablet.context.close()


def test_evidence_search_with_a_typo(server: tuple[str, Path], browser: Browser) -> None:
    url, _ = server
    page = new_page(browser)
    sign_in(page, url)
    page.click("nav >> text=存证")
    page.fill("#code-input", CODE_A[:-1] + "0")  # mistyped check symbol
    page.click("#code-search")
    assert "校验位不符" in page.inner_text("#search-error")
    shot(page, "05-evidence-did-you-mean")
    page.click(f"#suggestions >> text={CODE_A}")
    page.wait_for_selector("ol.lineage")
    text = page.inner_text("main")
    for step in ("放贷机构上报", "监管链区块", "跨链锚定", "司法链区块"):
        assert step in text
    assert "无监管链查看权限" in text  # a clerk does not see the lender's details
    shot(page, "06-evidence-lineage")
    page.set_viewport_size({"width": 768, "height": 1024})
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1
    shot(page, "07-evidence-lineage-tablet")
    page.context.close()


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


def test_verify_genuine_and_tampered_files_then_print(
    server: tuple[str, Path], browser: Browser, tmp_path: Path
) -> None:
    url, data = server
    fx = {f.code: f for f in load_fixtures()}[CODE_A]
    files = tmp_path / "filing"
    files.mkdir()
    genuine = files / "loan-L-2024-001.bin"
    genuine.write_bytes(fx.record)
    (files / "loan-L-2024-001.bin.salt").write_text(fx.salt.hex() + "\n")
    (files / "loan-L-2024-001.bin.receipt.json").write_text(json.dumps({"evidence_code": CODE_A}))
    tampered = files / "tampered.bin"
    tampered.write_bytes(fx.record.replace(b"r1", b"r9"))
    assert tampered.read_bytes() != fx.record
    (files / "tampered.bin.salt").write_bytes(fx.salt)  # raw 32-byte salt file
    (files / "tampered.bin.receipt.json").write_text(json.dumps({"evidence_code": CODE_A}))

    page = new_page(browser)
    posted: list[str] = []
    page.on(
        "request",
        lambda req: posted.append(req.post_data or "") if req.method == "POST" else None,
    )
    sign_in(page, url)
    page.goto(url + "/explorer/verify")
    check_js_sha256(page)
    page.set_input_files("#batch-files", sorted(str(p) for p in files.iterdir()))
    page.wait_for_function(
        "() => [...document.querySelectorAll('input.code')].filter(i => i.value).length === 2"
    )
    page.click("#verify-all")
    page.wait_for_selector("#rows .status .badge.st-verified")
    page.wait_for_selector("#rows .status .badge.st-mismatch")
    statuses = page.eval_on_selector_all(
        "#rows .status .badge", "els => els.map(e => e.getAttribute('data-status'))"
    )
    assert statuses == ["verified", "mismatch"]
    failed = page.eval_on_selector_all(
        "li.chk-fail", "els => els.map(e => e.getAttribute('data-check'))"
    )
    assert failed == ["commitment"]
    shot(page, "08-verify-batch")

    (body,) = [json.loads(p) for p in posted if p.startswith("{")]
    assert [set(i) for i in body["items"]] == [{"code", "commitment"}] * 2
    assert body["items"][0]["commitment"] == commitment_hex(fx.record, fx.salt)
    everything_sent = "".join(posted)
    assert fx.record.hex() not in everything_sent and "amount_cents" not in everything_sent

    with page.context.expect_page() as report_info:
        page.click("#print-report")
    report = report_info.value
    report.wait_for_load_state()
    assert "电子数据存证核验报告" in report.inner_text("h1")
    assert report.locator("figure.qr img").count() == 2
    report.emulate_media(media="print")
    shot(report, "09-report-print-view")
    report.pdf(path=str(ARTIFACTS / "10-report-printed.pdf"))

    with page.expect_download() as dl_info:
        page.click("#download-pdf")
    dl = dl_info.value
    target = ARTIFACTS / "11-report-download.pdf"
    dl.save_as(str(target))
    assert target.read_bytes().startswith(b"%PDF-")
    assert dl.suggested_filename.endswith(".pdf")

    log = [
        json.loads(line) for line in (data / "explorer" / "audit.jsonl").read_text().splitlines()
    ]
    verifies = [e for e in log if e["action"] == "verify"]
    assert [i["status"] for i in verifies[-1]["result"]["items"]] == ["verified", "mismatch"]
    assert {"report", "report_pdf"} <= {e["action"] for e in log}
    page.context.close()


def test_fake_backend_is_what_the_server_serves() -> None:
    """Guard: the fixtures the browser test files come from verify in-process too."""
    import tempfile

    from ledger.evidence_code import parse

    b = FakeBackend(tempfile.mkdtemp())
    fx = b.fixtures[CODE_A]
    assert (
        b.verify(parse(CODE_A), bytes.fromhex(commitment_hex(fx.record, fx.salt))).status
        == "verified"
    )
