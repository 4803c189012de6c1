"""What the explorer shows: overview, blocks, transactions, evidence, verification,
reports (HTML and PDF) and the language switch — over the in-memory backend."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from node.explorer.i18n import LABELS
from node.explorer.render import STATIC_DIR, TEMPLATE_DIR
from node.explorer.report_pdf import qr_svg_data_uri
from tests.explorer.fake_backend import HEIGHTS
from tests.explorer.helpers import Site, commitment_hex, make_site, session_csrf, sign_in

CODE_A = "WL-H41C-4KMH-2HD8-W5NY-~"
CODE_B = "WL-XYZ2-8AFF-C2Y9-27Y7-H"


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path)


def client_for(site: Site, user: str = "auditor.wang") -> TestClient:
    c = site.client()
    assert sign_in(c, user).status_code == 303
    return c


def good_digest(site: Site, code: str) -> str:
    fx = site.backend.fixtures[code]
    return commitment_hex(fx.record, fx.salt)


def verify(c: TestClient, items: list[dict[str, str]]) -> Any:
    r = c.post(
        "/explorer/api/verify", json={"items": items}, headers={"X-CSRF-Token": session_csrf(c)}
    )
    assert r.status_code == 200, r.text
    return r.json()["results"]


# ---------------------------------------------------------------------------- overview


def test_overview_shows_channels_validators_blocks_and_view_changes(site: Site) -> None:
    c = client_for(site)
    for page in (c.get("/explorer/"), c.get("/explorer/api/overview")):
        assert page.status_code == 200
        text = page.text
        for ch, h in HEIGHTS.items():
            assert f'data-channel="{ch}"' in text
            assert f"/explorer/channels/{ch}/blocks/{h}" in text
        assert "service_platform-node" in text and "不可达" in text  # the down validator
        assert "本节点" in text  # this node marked
        assert "0 → 1" in text  # the supervision view change at height 20
    assert 'data-src="/explorer/api/overview"' in c.get("/explorer/").text
    assert "<html" not in c.get("/explorer/api/overview").text  # a fragment


def test_channel_page_pages_back_through_blocks(site: Site) -> None:
    c = client_for(site)
    first = c.get("/explorer/channels/supervision")
    assert "/explorer/channels/supervision/blocks/30" in first.text
    assert "?before=6" in first.text  # 25 per page: 30..6
    older = c.get("/explorer/channels/supervision?before=6")
    assert "/explorer/channels/supervision/blocks/5" in older.text
    assert '/explorer/channels/supervision/blocks/6"' not in older.text


# ---------------------------------------------------------------------------- blocks, txs


def test_block_by_height_and_by_hash_show_the_same_certificate(site: Site) -> None:
    c = client_for(site)
    r = c.get("/explorer/channels/judicial/blocks/7")
    assert r.status_code == 200
    block_hash = re.search(r'id="block-hash">([0-9a-f]{64})<', r.text).group(1)  # type: ignore[union-attr]
    by_hash = c.get(f"/explorer/channels/judicial/blocks/by-hash/{block_hash}")
    assert by_hash.status_code == 200 and "#7" in by_hash.text
    for text in (r.text, by_hash.text):
        assert "4/5" in text and "court-node" in text  # 4 valid votes of 5, signer shown
    assert "/explorer/channels/judicial/blocks/6" in r.text  # previous
    assert "/explorer/channels/judicial/blocks/8" in r.text  # next
    for bad in ("0", "25", "x", "-1", "1" * 30):
        assert c.get(f"/explorer/channels/judicial/blocks/{bad}").status_code == 404
    assert c.get(f"/explorer/channels/judicial/blocks/by-hash/{'0' * 64}").status_code == 404


def test_transaction_page_decodes_fields_and_names_the_signer(site: Site) -> None:
    c = client_for(site)
    block = c.get("/explorer/channels/risk/blocks/2").text
    tx_url = re.search(r'href="(/explorer/channels/risk/tx/[0-9a-f]{64})"', block).group(1)  # type: ignore[union-attr]
    r = c.get(tx_url)
    assert r.status_code == 200
    assert "acme-lending (lender)" in r.text
    assert "12345 (¥123.45)" in r.text and "测试交易" in r.text
    assert "✓" in r.text  # signature valid
    # The record transaction lists its evidence code, linked to the evidence page.
    tx = site.backend._receipts[CODE_A].record.tx_id.hex()
    rec = c.get(f"/explorer/channels/supervision/tx/{tx}")
    assert rec.status_code == 200
    assert f"/explorer/evidence/{CODE_A}" in rec.text.replace("%7E", "~")
    assert c.get(f"/explorer/channels/risk/tx/{'ab' * 32}").status_code == 404
    assert c.get("/explorer/channels/risk/tx/xyz").status_code == 404


def test_search_box_finds_heights_hashes_ids_and_codes(site: Site) -> None:
    c = client_for(site)
    r = c.get("/explorer/search?q=23", follow_redirects=False)  # only judicial and supervision
    assert r.status_code == 200 and "/channels/judicial/blocks/23" in r.text
    r = c.get("/explorer/search?q=28", follow_redirects=False)  # only supervision is that high
    assert r.headers["location"] == "/explorer/channels/supervision/blocks/28"
    tx = site.backend._receipts[CODE_A].record.tx_id.hex()
    r = c.get(f"/explorer/search?q={tx}", follow_redirects=False)
    assert r.headers["location"] == f"/explorer/channels/supervision/tx/{tx}"
    r = c.get(f"/explorer/search?q={CODE_A}", follow_redirects=False)
    assert r.headers["location"].startswith("/explorer/evidence?code=")
    assert c.get(f"/explorer/search?q={'cd' * 32}").status_code == 404


# ---------------------------------------------------------------------------- evidence


def test_evidence_by_code_shows_the_lineage_with_times(site: Site) -> None:
    c = client_for(site)
    r = c.get("/explorer/evidence", params={"code": CODE_A.lower().replace("-", " ")})
    assert r.status_code == 200
    text = r.text
    for step in ("放贷机构上报", "监管链区块", "跨链锚定", "司法链区块"):
        assert step in text
    receipt = site.backend._receipts[CODE_A]
    assert receipt.record.commitment.hex() in text
    assert receipt.anchor_tx.hex()[:16] in text
    assert "2023-11-15 06:13:21.500 UTC+08:00" in text  # anchored by (judicial block time)
    assert "acme-lending" in text and "L-2024-001" in text


def test_typo_in_a_code_suggests_codes_that_exist(site: Site) -> None:
    c = client_for(site, "clerk.li")
    typo = CODE_A[:-1] + "0"  # wrong check symbol
    r = c.get("/explorer/evidence", params={"code": typo})
    assert "校验位不符" in r.text
    assert re.findall(r'class="code">([^<]+)</a>', r.text) == [CODE_A]
    swapped = "WL-H41C-4KMH-2HD8-WN5Y-~"  # two adjacent symbols swapped
    r = c.get("/explorer/evidence", params={"code": swapped})
    assert re.findall(r'class="code">([^<]+)</a>', r.text) == [CODE_A]
    r = c.get("/explorer/evidence", params={"code": "WL-ZZZZ-ZZZZ-ZZZZ-ZZZZ-0"})
    assert "没有相近的已存证编码" in r.text
    r = c.get("/explorer/evidence", params={"code": "hello"})
    assert "不是有效的存证编码" in r.text
    r = c.get(f"/explorer/evidence/{typo}", follow_redirects=False)  # typed into the URL
    assert r.status_code == 303 and "/explorer/evidence?code=" in r.headers["location"]


def test_evidence_by_transaction_and_by_loan(site: Site) -> None:
    c = client_for(site)
    tx = site.backend._receipts[CODE_B].record.tx_id.hex()
    r = c.get("/explorer/evidence", params={"tx": tx})
    assert CODE_B in r.text and CODE_A not in r.text
    r = c.get("/explorer/evidence", params={"loan": "L-2024-001"})
    assert CODE_A in r.text and CODE_B not in r.text
    r = c.get("/explorer/evidence", params={"loan": "L-2024-001", "lender": "other-lender"})
    assert "没有找到存证记录" in r.text
    r = c.get("/explorer/evidence", params={"loan": "<script>"})
    assert "请求有误" in r.text and "<script>" not in r.text


def test_evidence_page_is_canonical_and_404s_when_not_anchored(site: Site) -> None:
    c = client_for(site)
    r = c.get("/explorer/evidence/wl-h41c-4kmh-2hd8-w5ny-~", follow_redirects=False)
    assert r.status_code == 301
    assert c.get(r.headers["location"]).status_code == 200
    missing = "WL-0000-0000-0000-0001-1"
    assert c.get(f"/explorer/evidence/{missing}").status_code == 404


# ---------------------------------------------------------------------------- verification


def test_verify_genuine_tampered_unknown_and_mistyped_in_one_batch(site: Site) -> None:
    c = client_for(site, "clerk.li")
    fx = site.backend.fixtures[CODE_A]
    tampered = commitment_hex(fx.record[:-1] + b"X", fx.salt)
    results = verify(
        c,
        [
            {"code": CODE_A, "commitment": good_digest(site, CODE_A)},
            {"code": CODE_A, "commitment": tampered},
            {"code": CODE_B.lower(), "commitment": good_digest(site, CODE_B)},
            {"code": "WL-0000-0000-0000-0001-1", "commitment": tampered},
            {"code": CODE_A[:-1] + "0", "commitment": tampered},
        ],
    )
    assert [r["status"] for r in results] == [
        "verified",
        "mismatch",
        "verified",
        "not_anchored",
        "bad_code",
    ]
    ok, bad = results[0], results[1]
    assert [ch["status"] for ch in ok["checks"]] == ["pass"] * 9
    assert {ch["name"]: ch["status"] for ch in bad["checks"]}["commitment"] == "fail"
    assert all(ch["status"] == "pass" for ch in bad["checks"] if ch["name"] != "commitment")
    assert bad["anchored"] == ok["submitted"] != bad["submitted"]
    assert ok["anchored_time"] == "2023-11-15 06:13:21.500 UTC+08:00"
    assert results[2]["code"] == CODE_B  # normalised
    assert results[4]["suggestions"] == [CODE_A]
    assert ok["status_label"] == "核验一致"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"items": []},
        {"items": [{"code": CODE_A}]},
        {"items": [{"code": CODE_A, "commitment": "zz" * 32}]},
        {"items": [{"code": 5, "commitment": "00" * 32}]},
        {"items": [{"code": CODE_A, "commitment": "00" * 32}] * 2001},
    ],
)
def test_verify_rejects_bad_requests(site: Site, body: dict[str, Any]) -> None:
    c = client_for(site)
    r = c.post("/explorer/api/verify", json=body, headers={"X-CSRF-Token": session_csrf(c)})
    assert r.status_code == 400


def test_verify_rejects_deeply_nested_json(site: Site) -> None:
    """json.loads raises RecursionError on deep nesting: a 400, not a 500."""
    c = client_for(site)
    body = b"[" * 100_000 + b"]" * 100_000
    r = c.post(
        "/explorer/api/verify",
        content=body,
        headers={"X-CSRF-Token": session_csrf(c), "content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"] == "bad_request"


def test_verify_page_ships_the_hasher_and_posts_only_digests(site: Site) -> None:
    c = client_for(site, "clerk.li")
    page = c.get(f"/explorer/verify?code={CODE_A}")
    assert page.status_code == 200
    assert 'src="/explorer/static/sha256.js"' in page.text
    assert f'data-initial-code="{CODE_A}"' in page.text
    js = c.get("/explorer/static/verify.js").text
    assert "wulian:record/v1\\u0000" in js  # the commitment tag of docs/receipts.md
    assert "FormData" not in js and "readAsDataURL" not in js  # no file upload


# ---------------------------------------------------------------------------- reports


def report_items(site: Site) -> list[tuple[str, str]]:
    return [
        ("item", f"{CODE_A}:{good_digest(site, CODE_A)}"),
        ("item", f"{CODE_B}:{'00' * 32}"),
    ]


def test_html_report_has_statuses_checks_and_qr_codes(site: Site) -> None:
    c = client_for(site, "clerk.li")
    r = c.get("/explorer/report", params=report_items(site))
    assert r.status_code == 200
    text = r.text
    assert "电子数据存证核验报告" in text and "李明" in text
    assert "核验一致" in text and "不一致" in text
    assert text.count('class="qr"') == 2
    url = f"http://testserver/explorer/evidence/{CODE_A.replace('~', '~')}"
    assert qr_svg_data_uri(url).replace("&", "&amp;")[:200] in text
    assert "/explorer/report.pdf?item=" in text
    assert c.get("/explorer/report?item=nonsense").status_code == 400


def test_report_qr_uses_the_configured_public_url(tmp_path: Path) -> None:
    site = make_site(tmp_path, public_url="https://court.example")
    c = client_for(site)
    text = c.get("/explorer/report", params=report_items(site)[:1]).text
    assert f"https://court.example/explorer/evidence/{CODE_A}" in text


def _require_cjk_font() -> None:
    from node.explorer.report_pdf import font_path

    if font_path() is None:
        pytest.skip(
            "no CJK font (Debian fonts-wqy-microhei) is installed: deploy/install-system-deps.sh"
        )


def _pdftotext(data: bytes, tmp_path: Path) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip(
            "pdftotext (Debian poppler-utils) is not installed: deploy/install-system-deps.sh"
        )
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(data)
    out = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(pdf), "-"], capture_output=True, check=True, timeout=30
    )
    return out.stdout.decode("utf-8")


def test_pdf_report_carries_chinese_text_codes_and_digests(site: Site, tmp_path: Path) -> None:
    _require_cjk_font()
    c = client_for(site, "clerk.li")
    r = c.get("/explorer/report.pdf", params=report_items(site))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/pdf"
    assert r.content.startswith(b"%PDF-")
    text = _pdftotext(r.content, tmp_path)
    fonts = subprocess.run(
        ["pdffonts", str(tmp_path / "report.pdf")], capture_output=True, check=True, timeout=30
    ).stdout.decode()
    (cjk,) = [line for line in fonts.splitlines() if "WenQuanYiMicroHei" in line]
    assert cjk.split()[-5:-2] == ["yes", "yes", "yes"]  # embedded, subset, with ToUnicode
    flat = re.sub(r"\s+", "", text)
    for phrase in (
        "电子数据存证核验报告",
        "核验一致",
        "不一致",
        "司法链区块提交证书",
        "李明",
        "扫码查看存证",
    ):
        assert phrase in flat, phrase
    assert CODE_A in flat and CODE_B in flat
    assert good_digest(site, CODE_A) in flat
    assert "2023-11-1506:13:21.500UTC+08:00" in flat  # anchored-by time


def test_pdf_report_in_english(site: Site, tmp_path: Path) -> None:
    _require_cjk_font()
    c = client_for(site)
    c.get("/explorer/lang/en")
    r = c.get("/explorer/report.pdf", params=report_items(site)[:1])
    flat = re.sub(r"\s+", " ", _pdftotext(r.content, tmp_path))
    assert "Electronic evidence verification report" in flat
    assert "Verified" in flat and "电子数据存证核验报告" in flat


def test_pdf_report_without_a_cjk_font_is_a_clear_503(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node whose machine lacks the font answers the PDF with a page saying so and
    how to install it (it raised through to a 500 before), and the HTML report works."""
    from node.explorer import report_pdf

    monkeypatch.setattr(report_pdf, "FONT_PATHS", ("/nonexistent/wqy-microhei.ttc",))
    monkeypatch.setattr(report_pdf, "_font_ready", False)
    c = client_for(site)
    r = c.get("/explorer/report.pdf", params=report_items(site)[:1])
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("text/html")
    assert "fonts-wqy-microhei" in r.text and "PDF 报告不可用" in r.text
    assert c.get("/explorer/report", params=report_items(site)[:1]).status_code == 200


# ---------------------------------------------------------------------------- i18n, static


def test_language_switch(site: Site) -> None:
    c = client_for(site)
    assert "总览" in c.get("/explorer/").text
    r = c.get("/explorer/lang/en?next=/explorer/channels/judicial", follow_redirects=False)
    assert r.headers["location"] == "/explorer/channels/judicial"
    page = c.get("/explorer/").text
    assert "Overview" in page and "Court chain" in page and "总览" not in page
    assert c.get("/explorer/lang/fr").status_code == 404


def test_every_label_used_by_a_template_exists() -> None:
    used: set[str] = set()
    for path in TEMPLATE_DIR.glob("*.html"):
        used |= set(re.findall(r"\bt\('([a-z_]+)'\)", path.read_text("utf-8")))
    assert used, "no labels found"
    assert used - set(LABELS) == set()
    assert all(zh and en and zh != en for zh, en in LABELS.values())


def test_static_files_are_served_with_etags(site: Site) -> None:
    c = site.client()
    r = c.get("/explorer/static/sha256.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert r.content == (STATIC_DIR / "sha256.js").read_bytes()
    again = c.get("/explorer/static/sha256.js", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304
    assert c.get("/explorer/static/../app.py").status_code == 404
    assert c.get("/explorer/static/nope.js").status_code == 404
