"""Sign-in, CSRF, lockout, sessions, permissions by direct URL, and the audit log."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from urllib.parse import quote

import pytest

from ledger.errors import ConfigError
from node.explorer.accounts import (
    AccountFile,
    accounts_path,
    hash_password,
    verify_password,
)
from node.explorer.audit import AuditLog, check_audit_log
from tests.explorer.helpers import (
    PASSWORD,
    Site,
    commitment_hex,
    make_site,
    session_csrf,
    sign_in,
)

CODE_A = "WL-H41C-4KMH-2HD8-W5NY-~"
CODE_B = "WL-XYZ2-8AFF-C2Y9-27Y7-H"


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path)


def signed_in(site: Site, user: str = "clerk.li"):  # type: ignore[no-untyped-def]
    c = site.client()
    r = sign_in(c, user)
    assert r.status_code == 303, r.text[:300]
    return c


# ---------------------------------------------------------------------------- sign-in


def test_pages_redirect_to_sign_in_and_apis_answer_401(site: Site) -> None:
    c = site.client()
    for path in ("/explorer/", "/explorer/channels/judicial", "/explorer/evidence?code=x"):
        r = c.get(path, follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"].startswith("/explorer/login?next=")
    assert c.get("/explorer/api/overview").status_code == 401
    r = c.post("/explorer/api/verify", json={"items": []})
    assert r.status_code == 401
    assert "results" not in r.text


def test_sign_in_sets_httponly_session_cookie_and_follows_next(site: Site) -> None:
    c = site.client()
    r = sign_in(c, "clerk.li", nxt="/explorer/evidence")
    assert r.status_code == 303
    assert r.headers["location"] == "/explorer/evidence"
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("wl_session="))
    low = cookie.lower()
    assert "httponly" in low and "samesite=strict" in low and "path=/explorer/" in low
    page = c.get("/explorer/")
    assert page.status_code == 200 and "李明" in page.text
    (entry,) = [e for e in site.audit_lines() if e["action"] == "sign_in"]
    assert entry["user"] == "clerk.li" and entry["org"] == "court-clerks"
    assert entry["role"] == "clerk"


def test_wrong_password_and_unknown_user_get_the_same_answer(site: Site) -> None:
    a = sign_in(site.client(), "clerk.li", "wrong password!")
    b = sign_in(site.client(), "nobody", "wrong password!")
    assert a.status_code == b.status_code == 401
    for r in (a, b):
        assert "用户名或密码错误" in r.text
        assert not any(h.startswith("wl_session=") for h in r.headers.get_list("set-cookie"))
    actions = [e["action"] for e in site.audit_lines()]
    assert actions.count("sign_in_failed") == 2


def test_sign_in_form_needs_its_csrf_token(site: Site) -> None:
    c = site.client()
    c.get("/explorer/login")  # sets the login CSRF cookie
    r = c.post(
        "/explorer/login",
        data={"username": "clerk.li", "password": PASSWORD, "csrf_token": "forged"},
        follow_redirects=False,
    )
    assert r.status_code == 403
    assert c.get("/explorer/", follow_redirects=False).status_code == 303


def test_lockout_after_repeated_failures_then_release(site: Site) -> None:
    for _ in range(5):
        assert sign_in(site.client(), "clerk.li", "not the password").status_code == 401
    locked = sign_in(site.client(), "clerk.li", PASSWORD)
    assert locked.status_code == 429
    assert "锁定" in locked.text
    assert [e for e in site.audit_lines() if e["action"] == "sign_in_locked"]
    # Other users are not locked by it.
    assert sign_in(site.client(), "auditor.wang").status_code == 303
    site.clock.now += 15 * 60 + 1
    assert sign_in(site.client(), "clerk.li", PASSWORD).status_code == 303


def test_lockout_per_client_address(tmp_path: Path) -> None:
    site = make_site(tmp_path, max_ip_failures=4)
    for i in range(4):
        sign_in(site.client(), f"guess{i}", "x" * 12)
    assert sign_in(site.client(), "clerk.li", PASSWORD).status_code == 429


def test_session_expires_when_idle(site: Site) -> None:
    c = signed_in(site)
    site.clock.now += 29 * 60
    assert c.get("/explorer/").status_code == 200  # activity keeps it alive
    site.clock.now += 29 * 60
    assert c.get("/explorer/").status_code == 200
    site.clock.now += 31 * 60
    r = c.get("/explorer/", follow_redirects=False)
    assert r.status_code == 303 and "/explorer/login" in r.headers["location"]
    assert c.get("/explorer/api/overview").status_code == 401


def test_session_has_an_absolute_lifetime(site: Site) -> None:
    c = signed_in(site)
    for _ in range(17):  # 17 x 29 min > 8 h, never idle for long
        site.clock.now += 29 * 60
        c.get("/explorer/api/overview")
    assert c.get("/explorer/", follow_redirects=False).status_code == 303


def test_sign_out_needs_csrf_and_kills_the_session_server_side(site: Site) -> None:
    c = signed_in(site)
    stolen = c.cookies.get("wl_session")
    assert c.post("/explorer/logout", data={"csrf_token": "nope"}).status_code == 403
    assert c.get("/explorer/").status_code == 200
    r = c.post("/explorer/logout", data={"csrf_token": session_csrf(c)}, follow_redirects=False)
    assert r.status_code == 303
    replay = site.client()
    replay.cookies.set("wl_session", stolen or "", path="/explorer/")
    assert replay.get("/explorer/", follow_redirects=False).status_code == 303


def test_state_changing_posts_require_the_session_csrf_token(site: Site) -> None:
    c = signed_in(site)
    fx = site.backend.fixtures[CODE_A]
    body = {"items": [{"code": CODE_A, "commitment": commitment_hex(fx.record, fx.salt)}]}
    assert c.post("/explorer/api/verify", json=body).status_code == 403
    bad = c.post("/explorer/api/verify", json=body, headers={"X-CSRF-Token": "x" * 43})
    assert bad.status_code == 403
    good = c.post("/explorer/api/verify", json=body, headers={"X-CSRF-Token": session_csrf(c)})
    assert good.status_code == 200
    item = f"{CODE_A}:{body['items'][0]['commitment']}"
    assert c.post("/explorer/report", data={"item": item}).status_code == 403
    ok = c.post("/explorer/report", data={"item": item, "csrf_token": session_csrf(c)})
    assert ok.status_code == 200


def test_removed_or_disabled_accounts_lose_their_sessions(site: Site) -> None:
    from dataclasses import replace

    c = signed_in(site)
    d = signed_in(site, "auditor.wang")
    store = AccountFile(accounts_path(site.data_dir))
    accounts = store.load()
    accounts["clerk.li"] = replace(accounts["clerk.li"], disabled=True)
    del accounts["auditor.wang"]
    os.utime(store.path, (1, 1))  # make sure the change is seen even within one mtime tick
    store.save(accounts)
    assert c.get("/explorer/", follow_redirects=False).status_code == 303
    assert d.get("/explorer/", follow_redirects=False).status_code == 303
    assert sign_in(site.client(), "clerk.li").status_code == 401


def test_lenders_and_unknown_orgs_cannot_use_the_explorer(site: Site) -> None:
    for user in ("lender.acme", "ghost"):
        r = sign_in(site.client(), user)
        assert r.status_code == 403
        assert "无权查看" in r.text or "不存在" in r.text


def test_next_parameter_cannot_redirect_off_site(site: Site) -> None:
    for evil in ("https://evil.example/", "//evil.example/x", "/explorer/\\\\evil", "javascript:x"):
        r = sign_in(site.client(), "clerk.li", nxt=evil)
        assert r.headers["location"] == "/explorer/"
    r = site.client().get("/explorer/lang/en?next=https://evil.example", follow_redirects=False)
    assert r.headers["location"] == "/explorer/"


# ---------------------------------------------------------------------------- permissions


def test_clerk_cannot_reach_other_channels_by_direct_url(site: Site) -> None:
    """A clerk reads the court channel only: every URL of another channel answers 404
    exactly like a channel that does not exist, and no data of it appears anywhere."""
    clerk = signed_in(site)
    auditor = signed_in(site, "auditor.wang")
    sup_block = auditor.get("/explorer/channels/supervision/blocks/5")
    assert sup_block.status_code == 200
    block_hash = re.search(r'id="block-hash">([0-9a-f]{64})<', sup_block.text).group(1)  # type: ignore[union-attr]
    tx_id = re.search(r"/channels/supervision/tx/([0-9a-f]{64})", sup_block.text).group(1)  # type: ignore[union-attr]
    urls = [
        "/explorer/channels/supervision",
        "/explorer/channels/supervision/blocks/5",
        f"/explorer/channels/supervision/blocks/by-hash/{block_hash}",
        f"/explorer/channels/supervision/tx/{tx_id}",
        "/explorer/channels/risk/blocks/1",
    ]
    missing = clerk.get("/explorer/channels/no-such-channel")
    assert missing.status_code == 404
    for url in urls:
        r = clerk.get(url)
        assert r.status_code == 404, url
        text = r.text.replace(quote(url, safe=""), "")  # the page's own URL, echoed
        assert block_hash not in text and tx_id not in text
        assert text.count("监管链") == missing.text.count("监管链") == 0
    # Not in the overview, its live fragment, or the search either.
    for page in (clerk.get("/explorer/"), clerk.get("/explorer/api/overview")):
        assert 'data-channel="supervision"' not in page.text
        assert 'data-channel="judicial"' in page.text
        assert "监管链" not in page.text
    search = clerk.get(f"/explorer/search?q={tx_id}")
    assert search.status_code == 404 and tx_id not in search.text.split("<code>")[-1][70:]
    assert clerk.get(f"/explorer/search?q={block_hash}").status_code == 404


def test_lineage_hides_supervision_details_from_clerks_only(site: Site) -> None:
    clerk = signed_in(site)
    auditor = signed_in(site, "auditor.wang")
    a = clerk.get(f"/explorer/evidence?code={CODE_A}")
    b = auditor.get(f"/explorer/evidence?code={CODE_A}")
    assert a.status_code == b.status_code == 200
    for r in (a, b):
        assert CODE_A in r.text and "司法链区块" in r.text
    assert "acme-lending" in b.text and "L-2024-001" in b.text
    assert "acme-lending" not in a.text and "L-2024-001" not in a.text
    assert "无监管链查看权限" in a.text
    assert "/channels/supervision/" not in a.text


def test_evidence_features_need_the_court_channel(site: Site) -> None:
    site.backend.read["judicial"] = site.backend.read["judicial"] - {"auditor"}
    c = signed_in(site, "auditor.wang")
    for path in ("/explorer/evidence", f"/explorer/evidence/{CODE_A}", "/explorer/verify"):
        assert c.get(path).status_code == 403, path
    fx = site.backend.fixtures[CODE_A]
    body = {"items": [{"code": CODE_A, "commitment": commitment_hex(fx.record, fx.salt)}]}
    r = c.post("/explorer/api/verify", json=body, headers={"X-CSRF-Token": session_csrf(c)})
    assert r.status_code == 403 and CODE_A not in r.text


def test_permission_changes_apply_to_open_sessions(site: Site) -> None:
    c = signed_in(site)
    assert c.get("/explorer/channels/judicial").status_code == 200
    site.backend.read["judicial"] = site.backend.read["judicial"] - {"clerk"}
    assert c.get("/explorer/channels/judicial").status_code == 404


# ---------------------------------------------------------------------------- audit log


def test_every_evidence_lookup_and_verification_is_audited(site: Site) -> None:
    c = signed_in(site)
    fx = site.backend.fixtures[CODE_A]
    good = commitment_hex(fx.record, fx.salt)
    tx = site.backend._receipts[CODE_A].record.tx_id.hex()
    c.get(f"/explorer/evidence?code={CODE_A}")
    c.get("/explorer/evidence?code=WL-H41C-4KMH-2HD8-W5NY-0")
    c.get(f"/explorer/evidence?tx={tx}")
    c.get("/explorer/evidence?loan=L-2024-001&lender=acme-lending")
    c.get(f"/explorer/evidence/{CODE_A}")
    token = session_csrf(c)
    c.post(
        "/explorer/api/verify",
        json={
            "items": [
                {"code": CODE_A, "commitment": good},
                {"code": CODE_B, "commitment": "00" * 32},
            ]
        },
        headers={"X-CSRF-Token": token},
    )
    c.get("/explorer/report", params={"item": f"{CODE_A}:{good}"})
    c.get("/explorer/report.pdf", params={"item": f"{CODE_A}:{good}"})
    log = site.audit_lines()
    lookups = [e for e in log if e["action"] == "evidence_lookup"]
    assert [e["query"]["by"] for e in lookups] == ["code", "code", "tx", "loan"]
    assert lookups[0]["result"]["codes"] == [CODE_A]
    assert lookups[1]["result"]["suggestions"] == [CODE_A]
    assert lookups[3]["query"] == {"by": "loan", "loan": "L-2024-001", "lender": "acme-lending"}
    (view,) = [e for e in log if e["action"] == "evidence_view"]
    assert view["query"]["code"] == CODE_A
    (verify,) = [e for e in log if e["action"] == "verify"]
    assert [(i["code"], i["status"]) for i in verify["result"]["items"]] == [
        (CODE_A, "verified"),
        (CODE_B, "mismatch"),
    ]
    assert verify["result"]["items"][1]["failed"] == ["commitment"]
    assert {"report", "report_pdf"} <= {e["action"] for e in log}
    assert all(e["user"] == "clerk.li" and e["ip"] for e in log)
    path = site.data_dir / "explorer" / "audit.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert check_audit_log(path) == (len(log), None)


def test_lookups_are_refused_when_the_audit_log_cannot_be_written(site: Site) -> None:
    c = signed_in(site)
    site.backend.fail_audit = True
    r = c.get(f"/explorer/evidence?code={CODE_A}")
    assert r.status_code == 503 and "L-2024-001" not in r.text and "司法链区块" not in r.text
    fx = site.backend.fixtures[CODE_A]
    body = {"items": [{"code": CODE_A, "commitment": commitment_hex(fx.record, fx.salt)}]}
    v = c.post("/explorer/api/verify", json=body, headers={"X-CSRF-Token": session_csrf(c)})
    assert v.status_code == 503 and "verified" not in v.text


def test_audit_log_hash_chain_detects_edits_and_removals(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, lambda: 1)
    for i in range(4):
        log.append({"action": "verify", "n": i})
    assert check_audit_log(path) == (4, None)
    again = AuditLog(path, lambda: 2)  # a restarted node continues the chain
    again.append({"action": "verify", "n": 4})
    assert check_audit_log(path) == (5, None)
    lines = path.read_text("utf-8").splitlines(keepends=True)
    edited = json.loads(lines[1])
    edited["n"] = 99
    path.write_text(lines[0] + json.dumps(edited) + "\n" + "".join(lines[2:]), "utf-8")
    assert check_audit_log(path)[0] == 3
    path.write_text(lines[0] + "".join(lines[2:]), "utf-8")
    assert check_audit_log(path)[0] == 2
    path.rename(tmp_path / "audit.jsonl.1")  # rotated away: a new file, a new chain
    again.append({"action": "verify", "n": 5})
    assert check_audit_log(path) == (1, None)


# ---------------------------------------------------------------------------- accounts


def test_scrypt_hashes_are_salted_and_verify(tmp_path: Path) -> None:
    h1, h2 = hash_password("a long passphrase"), hash_password("a long passphrase")
    assert h1 != h2 and h1.startswith("scrypt$16384$8$1$")
    assert verify_password("a long passphrase", h1)
    assert not verify_password("a long passphrasE", h1)
    assert not verify_password("a long passphrase", "scrypt$3$8$1$00$00")
    assert not verify_password("x", "plaintext")
    assert not verify_password("x", "scrypt$1099511627776$8$1$" + "00" * 16 + "$" + "00" * 32)


def test_accounts_file_is_private_and_checked(tmp_path: Path) -> None:
    path = accounts_path(tmp_path)
    store = AccountFile(path)
    from node.explorer.port import Account

    store.save({"a": Account("a", "court", hash_password("pw", n=2**8))})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.find("a") is not None and store.find("b") is None
    path.write_text('{"version": 1, "accounts": [{"username": "A!", "org": "x", "password": "p"}]}')
    with pytest.raises(ConfigError, match="username"):
        AccountFile(path).load()
    assert store.find("a") is not None  # a broken file keeps the last good contents


def test_security_headers_on_pages(site: Site) -> None:
    r = site.client().get("/explorer/login")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"
    assert "<script>" not in r.text  # no inline scripts (the CSP forbids them)
