"""The chain explorer's pages, served under ``/explorer`` by every node.

:func:`mount_explorer` adds the routes to a FastAPI app; :class:`Explorer` holds the
state (sessions, lockout counters) and the route handlers. Everything the pages show
comes from an :class:`~node.explorer.port.ExplorerBackend` and is filtered by the
viewer's channel permissions *here*, for every route — pages, fragments and JSON —
so a direct URL shows no more than the navigation would:

* a channel the viewer's role may not read answers 404 exactly like a channel that
  does not exist (nothing about it leaks, not even its existence);
* evidence search, evidence pages, verification and reports need read access to the
  court (``judicial``) channel (403 otherwise); supervision details in a lineage
  (lender, loan, event fields) are shown only to viewers who may read ``supervision``.

Every evidence lookup, evidence page view, verification and report, and every sign-in
attempt, is appended to the audit log (fsynced) before the answer is sent; if the log
cannot be written the request fails (503) rather than going unrecorded.

Routes (all under the prefix): ``/`` overview · ``/api/overview`` live fragment ·
``/channels/{ch}`` · ``/channels/{ch}/blocks/{height}`` ·
``/channels/{ch}/blocks/by-hash/{hash}`` · ``/channels/{ch}/tx/{id}`` · ``/search`` ·
``/evidence`` (search) · ``/evidence/{code}`` · ``/verify`` · ``POST /api/verify`` ·
``/report`` and ``/report.pdf`` (GET with ``item=CODE:DIGEST`` or POST form) ·
``/login`` · ``POST /logout`` · ``/lang/{zh|en}`` · ``/static/{file}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timezone
from typing import Any, Final
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ledger.evidence_code import EvidenceCode, EvidenceCodeError, parse, suggestions
from ledger.schema import is_decimal
from node.explorer.accounts import burn_password_check, verify_password
from node.explorer.audit import AuditError
from node.explorer.decode import CHINA_TZ
from node.explorer.i18n import LANG_COOKIE, LANGS, pick_lang, translator
from node.explorer.port import (
    NOT_ANCHORED,
    EvidenceRecord,
    ExplorerBackend,
    Verification,
)
from node.explorer.render import STATIC_DIR, make_environment
from node.explorer.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    LoginThrottle,
    Session,
    SessionStore,
    new_token,
    tokens_equal,
)

log = logging.getLogger("wulian.explorer")

MAX_FORM_BYTES: Final = 64 * 1024
MAX_JSON_BYTES: Final = 1024 * 1024
MAX_LOAN_ID: Final = 64
_HEX64: Final = re.compile(r"[0-9a-fA-F]{64}")
_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_LOAN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")
STATIC_TYPES: Final = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
EVIDENCE_CHANNEL: Final = "judicial"
SUPERVISION_CHANNEL: Final = "supervision"


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class ExplorerSettings:
    """Tunables; the defaults suit a court's node. Clocks are injectable for tests."""

    prefix: str = "/explorer"
    session_idle_s: float = 30 * 60
    session_absolute_s: float = 8 * 3600
    max_failures: int = 5
    max_ip_failures: int = 30
    lockout_window_s: float = 15 * 60
    lockout_s: float = 15 * 60
    poll_interval_ms: int = 3000
    #: Base URL printed in reports' QR codes (e.g. "https://court.example"); default:
    #: the URL the request came in on.
    public_url: str | None = None
    #: Mark cookies Secure: None = when the request is https.
    secure_cookies: bool | None = None
    tz: timezone = CHINA_TZ
    recent_blocks: int = 12
    page_blocks: int = 25
    page_txs: int = 200
    max_batch: int = 2000
    clock_s: Callable[[], float] = time.monotonic
    wall_ms: Callable[[], int] = _wall_ms


@dataclass(frozen=True)
class Viewer:
    """The signed-in person and what their org's role may read right now."""

    username: str
    display_name: str
    org_id: str
    org_name: str
    role: str
    readable: frozenset[str]

    def can_read(self, channel: str) -> bool:
        return channel in self.readable

    @property
    def evidence(self) -> bool:
        return EVIDENCE_CHANNEL in self.readable


@dataclass
class Page:
    """One request's context: language, viewer, session."""

    request: Request
    lang: str
    t: Callable[[str], str]
    viewer: Viewer | None = None
    session: Session | None = None
    token: str | None = None
    set_cookies: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


@dataclass(frozen=True)
class VerifyItem:
    code_text: str
    commitment: bytes
    code: EvidenceCode | None
    code_error: str = ""
    suggestions: tuple[str, ...] = ()
    verification: Verification | None = None

    @property
    def status(self) -> str:
        return "bad_code" if self.verification is None else self.verification.status


def _hex32(text: str) -> bytes | None:
    return bytes.fromhex(text) if _HEX64.fullmatch(text or "") else None


def _height(text: str) -> int | None:
    return int(text) if is_decimal(text) and 0 < len(text) <= 18 and int(text) > 0 else None


class Explorer:
    """The explorer of one node: routes, sessions, lockout counters."""

    def __init__(self, backend: ExplorerBackend, settings: ExplorerSettings | None = None) -> None:
        self.backend = backend
        self.settings = s = settings or ExplorerSettings()
        self.prefix = s.prefix.rstrip("/")
        self.env = make_environment(s.tz)
        self.sessions = SessionStore(s.clock_s, s.session_idle_s, s.session_absolute_s)
        self.throttle = LoginThrottle(
            s.clock_s, s.max_failures, s.max_ip_failures, s.lockout_window_s, s.lockout_s
        )
        self.static: dict[str, tuple[bytes, str, str]] = {}
        for path in sorted(STATIC_DIR.iterdir()):
            ctype = STATIC_TYPES.get(path.suffix)
            if ctype is not None and path.is_file():
                data = path.read_bytes()
                etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
                self.static[path.name] = (data, ctype, etag)

    # ------------------------------------------------------------------ plumbing

    def url(self, path: str = "/") -> str:
        return self.prefix + path

    def _page(self, request: Request) -> Page:
        lang = pick_lang(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))
        page = Page(request, lang, translator(lang))
        token = request.cookies.get(SESSION_COOKIE)
        session = self.sessions.get(token)
        if session is not None:
            viewer = self._viewer(session)
            if viewer is None:
                self.sessions.end(token)
            else:
                page.viewer, page.session, page.token = viewer, session, token
        return page

    def _viewer(self, session: Session) -> Viewer | None:
        """The viewer now: the account must still exist, be enabled and name the
        same org; the org's *current* role decides what it may read."""
        account = self.backend.find_account(session.username)
        if account is None or account.disabled or account.org_id != session.org_id:
            return None
        org = self.backend.org(account.org_id)
        if org is None:
            return None
        readable = frozenset(
            ch for ch in self.backend.channel_ids() if org.role in self.backend.read_roles(ch)
        )
        return Viewer(
            account.username,
            account.display_name or account.username,
            org.org_id,
            org.name,
            org.role,
            readable,
        )

    def _secure(self, request: Request) -> bool:
        s = self.settings.secure_cookies
        return request.url.scheme == "https" if s is None else s

    def _finish(self, page: Page | None, response: Response, *, cache: bool = False) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        if not cache:
            response.headers["Cache-Control"] = "no-store"
        if page is not None:
            for name, value, opts in page.set_cookies:
                response.set_cookie(name, value, **opts)
        return response

    def _cookie_opts(self, request: Request, *, max_age: int | None = None) -> dict[str, Any]:
        return {
            "path": self.prefix + "/",
            "httponly": True,
            # strict: a page reached from another site (whose GETs may write audit
            # entries in the clerk's name) comes without the session
            "samesite": "strict",
            "secure": self._secure(request),
            "max_age": max_age,
        }

    def _globals(self, page: Page) -> dict[str, Any]:
        req = page.request
        here = req.url.path + (f"?{req.url.query}" if req.url.query else "")
        try:
            node = self.backend.node_summary()
        except Exception:  # the header must render even if the node is unwell
            log.exception("node_summary failed")
            node = None
        return {
            "t": page.t,
            "lang": page.lang,
            "langs": LANGS,
            "viewer": page.viewer,
            "csrf": page.session.csrf if page.session else "",
            "csrf_field": CSRF_FIELD,
            "u": self.url,
            "here": here,
            "here_q": quote(here, safe=""),
            "node": node,
            "ch_label": lambda ch: page.t(f"ch_{ch}"),
            "poll_ms": self.settings.poll_interval_ms,
        }

    def render(self, page: Page, template: str, status: int = 200, **ctx: Any) -> Response:
        html = self.env.get_template(template).render(**self._globals(page), **ctx)
        return self._finish(page, HTMLResponse(html, status_code=status))

    def error(self, page: Page, status: int, title_key: str, text_key: str, **ctx: Any) -> Response:
        return self.render(
            page, "error.html", status, title=page.t(title_key), text=page.t(text_key), **ctx
        )

    def not_found(self, page: Page) -> Response:
        return self.error(page, 404, "not_found", "not_found_text")

    def forbidden(self, page: Page) -> Response:
        return self.error(page, 403, "forbidden", "forbidden_text")

    def to_login(self, page: Page) -> Response:
        req = page.request
        nxt = req.url.path + (f"?{req.url.query}" if req.url.query else "")
        target = self.url("/login") + "?" + urlencode({"next": nxt})
        return self._finish(page, RedirectResponse(target, status_code=303))

    def safe_next(self, nxt: str | None) -> str:
        """Only a path inside the explorer (no scheme, host, or ``//``) is followed."""
        if (
            nxt
            and nxt.startswith(self.prefix + "/")
            and not nxt.startswith("//")
            and "\\" not in nxt
            and all(31 < ord(c) < 127 for c in nxt)
        ):
            return nxt
        return self.url("/")

    async def form(
        self, request: Request, limit: int = MAX_FORM_BYTES
    ) -> dict[str, list[str]] | None:
        """The urlencoded body, or None if too large or not a form."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return None
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return None
        try:
            return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=10_000)
        except (UnicodeDecodeError, ValueError):
            return None

    def csrf_ok(self, page: Page, supplied: str | None) -> bool:
        return page.session is not None and tokens_equal(page.session.csrf, supplied)

    def audit(self, page: Page, action: str, query: Any, result: Any) -> None:
        """Append to the audit log; raises :class:`AuditError` if that fails."""
        v = page.viewer
        client = page.request.client
        self.backend.append_audit(
            {
                "user": v.username if v else None,
                "org": v.org_id if v else None,
                "role": v.role if v else None,
                "ip": client.host if client else None,
                "action": action,
                "query": query,
                "result": result,
            }
        )

    def audit_failed(self, page: Page, exc: AuditError) -> Response:
        return self.unavailable(page, "audit log unavailable", "审计日志不可用", exc)

    def unavailable(self, page: Page, what: str, what_zh: str, exc: Exception) -> Response:
        """A 503 page: something the node's machine lacks, not the request (logged)."""
        log.error("%s: %s", what, exc)
        return self.render(page, "error.html", 503, title=f"{what} / {what_zh}", text=str(exc))

    # ------------------------------------------------------------------ routes

    def router(self) -> APIRouter:
        r = APIRouter(include_in_schema=False)
        p = self.prefix
        r.add_api_route(p, self.root_redirect, methods=["GET"])
        r.add_api_route(p + "/", self.overview, methods=["GET"])
        r.add_api_route(p + "/api/overview", self.overview_fragment, methods=["GET"])
        r.add_api_route(p + "/login", self.login_form, methods=["GET"])
        r.add_api_route(p + "/login", self.login, methods=["POST"])
        r.add_api_route(p + "/logout", self.logout, methods=["POST"])
        r.add_api_route(p + "/lang/{lang}", self.set_lang, methods=["GET"])
        r.add_api_route(p + "/static/{name}", self.static_file, methods=["GET"])
        r.add_api_route(p + "/channels/{channel}", self.channel_page, methods=["GET"])
        r.add_api_route(
            p + "/channels/{channel}/blocks/by-hash/{block_hash}",
            self.block_by_hash,
            methods=["GET"],
        )
        r.add_api_route(p + "/channels/{channel}/blocks/{height}", self.block_page, methods=["GET"])
        r.add_api_route(p + "/channels/{channel}/tx/{tx_id}", self.tx_page, methods=["GET"])
        r.add_api_route(p + "/search", self.search, methods=["GET"])
        r.add_api_route(p + "/evidence", self.evidence_search, methods=["GET"])
        r.add_api_route(p + "/evidence/{code}", self.evidence_page, methods=["GET"])
        r.add_api_route(p + "/verify", self.verify_page, methods=["GET"])
        r.add_api_route(p + "/api/verify", self.verify_api, methods=["POST"])
        r.add_api_route(p + "/report", self.report, methods=["GET", "POST"])
        r.add_api_route(p + "/report.pdf", self.report_pdf, methods=["GET", "POST"])
        r.add_api_route(p + "/{rest:path}", self.fallback, methods=["GET", "POST"])
        return r

    async def root_redirect(self, request: Request) -> Response:
        return self._finish(None, RedirectResponse(self.url("/"), status_code=307))

    async def fallback(self, request: Request, rest: str) -> Response:
        return self.not_found(self._page(request))

    async def static_file(self, request: Request, name: str) -> Response:
        item = self.static.get(name)
        if item is None:
            return self.not_found(self._page(request))
        data, ctype, etag = item
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return self._finish(None, Response(status_code=304, headers=headers), cache=True)
        return self._finish(
            None, Response(data, media_type=ctype.split(";")[0], headers=headers), cache=True
        )

    async def set_lang(self, request: Request, lang: str) -> Response:
        page = self._page(request)
        if lang not in LANGS:
            return self.not_found(page)
        target = self.safe_next(request.query_params.get("next"))
        resp = RedirectResponse(target, status_code=303)
        opts = self._cookie_opts(request, max_age=365 * 24 * 3600)
        opts["httponly"] = False
        resp.set_cookie(LANG_COOKIE, lang, **opts)
        return self._finish(page, resp)

    # -- sign-in

    async def login_form(self, request: Request) -> Response:
        page = self._page(request)
        nxt = self.safe_next(request.query_params.get("next"))
        if page.viewer is not None:
            return self._finish(page, RedirectResponse(nxt, status_code=303))
        return self._login_page(page, nxt, "", 200)

    def _login_page(self, page: Page, nxt: str, message_key: str, status: int) -> Response:
        token = new_token()
        page.set_cookies.append(
            (LOGIN_CSRF_COOKIE, token, {**self._cookie_opts(page.request), "samesite": "strict"})
        )
        return self.render(
            page,
            "login.html",
            status,
            login_csrf=token,
            next=nxt,
            message=page.t(message_key) if message_key else "",
        )

    async def login(self, request: Request) -> Response:
        page = self._page(request)
        form = await self.form(request)
        if form is None:
            return self.error(page, 400, "bad_request", "csrf_failed")
        username = (form.get("username") or [""])[0].strip().lower()[:64]
        password = (form.get("password") or [""])[0]
        nxt = self.safe_next((form.get("next") or [""])[0])
        supplied = (form.get(CSRF_FIELD) or [""])[0]
        if not tokens_equal(request.cookies.get(LOGIN_CSRF_COOKIE), supplied):
            return self._login_page(page, nxt, "csrf_failed", 403)
        ip = request.client.host if request.client else "?"
        try:
            if self.throttle.locked_until(username, ip) is not None:
                self.audit(page, "sign_in_locked", {"username": username}, {"ok": False})
                return self._login_page(page, nxt, "locked_out", 429)
            account = self.backend.find_account(username) if username else None
            if account is None or account.disabled:
                await run_in_threadpool(burn_password_check, password)
                ok = False
            else:
                ok = await run_in_threadpool(verify_password, password, account.password_hash)
            if not ok or account is None:
                locked = self.throttle.failure(username, ip)
                self.audit(
                    page, "sign_in_failed", {"username": username}, {"ok": False, "locked": locked}
                )
                return self._login_page(
                    page, nxt, "locked_out" if locked else "bad_credentials", 401
                )
            self.throttle.success(username)
            token, session = self.sessions.create(account.username, account.org_id)
            viewer = self._viewer(session)
            if viewer is None or not viewer.readable:
                self.sessions.end(token)
                self.audit(
                    page,
                    "sign_in_failed",
                    {"username": username},
                    {"ok": False, "org": account.org_id},
                )
                return self._login_page(page, nxt, "org_not_permitted", 403)
            page.viewer, page.session = viewer, session
            self.audit(page, "sign_in", {"username": username}, {"ok": True})
        except AuditError as exc:
            return self.audit_failed(page, exc)
        resp = RedirectResponse(nxt, status_code=303)
        resp.set_cookie(SESSION_COOKIE, token, **self._cookie_opts(request))
        resp.delete_cookie(LOGIN_CSRF_COOKIE, path=self.prefix + "/")
        return self._finish(page, resp)

    async def logout(self, request: Request) -> Response:
        page = self._page(request)
        form = await self.form(request) or {}
        if page.viewer is not None:
            if not self.csrf_ok(page, (form.get(CSRF_FIELD) or [""])[0]):
                return self.error(page, 403, "forbidden", "csrf_failed")
            try:
                self.audit(page, "sign_out", {}, {"ok": True})
            except AuditError as exc:
                log.error("audit log unavailable at sign-out: %s", exc)
            self.sessions.end(page.token)
        resp = RedirectResponse(self.url("/login"), status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path=self.prefix + "/")
        return self._finish(page, resp)

    # -- overview

    def _overview_data(self, viewer: Viewer) -> dict[str, Any]:
        b = self.backend
        channels = [c for c in b.channel_summaries() if viewer.can_read(c.channel)]
        validators = [
            replace(v, channels=tuple(c for c in v.channels if viewer.can_read(c.channel)))
            for v in b.validators()
        ]
        n = self.settings.recent_blocks
        blocks = [blk for c in channels for blk in b.recent_blocks(c.channel, n)]
        blocks.sort(key=lambda blk: (blk.time_ms, blk.height), reverse=True)
        changes = [vc for c in channels for vc in b.view_changes(c.channel, n)]
        changes.sort(key=lambda vc: (vc.in_progress, vc.time_ms or 0), reverse=True)
        return {
            "channels": channels,
            "validators": validators,
            "blocks": blocks[:n],
            "view_changes": changes[:n],
            "generated_ms": self.settings.wall_ms(),
        }

    async def overview(self, request: Request) -> Response:
        page = self._page(request)
        if page.viewer is None:
            return self.to_login(page)
        return self.render(page, "overview.html", **self._overview_data(page.viewer))

    async def overview_fragment(self, request: Request) -> Response:
        page = self._page(request)
        if page.viewer is None:
            return self._finish(page, JSONResponse({"error": "session_expired"}, status_code=401))
        return self.render(page, "_overview_live.html", **self._overview_data(page.viewer))

    # -- channels, blocks, transactions

    def _channel_or_none(self, page: Page, channel: str) -> str | None:
        """``channel`` if the viewer may read it; None (→ 404) if unknown *or* not
        readable, so the two cannot be told apart."""
        assert page.viewer is not None
        return channel if page.viewer.can_read(channel) else None

    async def channel_page(self, request: Request, channel: str) -> Response:
        page = self._page(request)
        if page.viewer is None:
            return self.to_login(page)
        if self._channel_or_none(page, channel) is None:
            return self.not_found(page)
        summary = next((c for c in self.backend.channel_summaries() if c.channel == channel), None)
        if summary is None:
            return self.not_found(page)
        before_raw = request.query_params.get("before", "")
        before = _height(before_raw) if before_raw else None
        blocks = self.backend.recent_blocks(channel, self.settings.page_blocks, before)
        older = blocks[-1].height if blocks and blocks[-1].height > 1 else None
        return self.render(
            page,
            "channel.html",
            channel=channel,
            summary=summary,
            blocks=blocks,
            older=older,
            view_changes=self.backend.view_changes(channel, self.settings.recent_blocks),
        )

    def _block_response(self, page: Page, channel: str, detail: Any) -> Response:
        if detail is None:
            return self.not_found(page)
        offset_raw = page.request.query_params.get("offset", "0")
        offset = int(offset_raw) if is_decimal(offset_raw) and len(offset_raw) < 9 else 0
        n = self.settings.page_txs
        txs = detail.txs[offset : offset + n]
        return self.render(
            page,
            "block.html",
            channel=channel,
            block=detail,
            txs=txs,
            offset=offset,
            next_offset=offset + n if offset + n < len(detail.txs) else None,
            prev_offset=max(0, offset - n) if offset else None,
        )

    async def block_page(self, request: Request, channel: str, height: str) -> Response:
        page = self._page(request)
        if page.viewer is None:
            return self.to_login(page)
        h = _height(height)
        if self._channel_or_none(page, channel) is None or h is None:
            return self.not_found(page)
        return self._block_response(page, channel, self.backend.block(channel, h))

    async def block_by_hash(self, request: Request, channel: str, block_hash: str) -> Response:
        page = self._page(request)
        if page.viewer is None:
            return self.to_login(page)
        bh = _hex32(block_hash)
        if self._channel_or_none(page, channel) is None or bh is None:
            return self.not_found(page)
        return self._block_response(page, channel, self.backend.block_by_hash(channel, bh))

    async def tx_page(self, request: Request, channel: str, tx_id: str) -> Response:
        page = self._page(request)
        if page.viewer is None:
            return self.to_login(page)
        tid = _hex32(tx_id)
        if self._channel_or_none(page, channel) is None or tid is None:
            return self.not_found(page)
        tx = self.backend.transaction(channel, tid)
        if tx is None:
            return self.not_found(page)
        return self.render(page, "tx.html", channel=channel, tx=tx)

    async def search(self, request: Request) -> Response:
        """One box: a height, a block hash, a tx id (readable channels only) or an
        evidence code (handed to the evidence search)."""
        page = self._page(request)
        if page.viewer is None:
            return self.to_login(page)
        q = request.query_params.get("q", "").strip()[:200]
        if not q:
            return self._finish(page, RedirectResponse(self.url("/"), status_code=303))
        viewer = page.viewer
        readable = [ch for ch in self.backend.channel_ids() if viewer.can_read(ch)]
        hits: list[tuple[str, str, str]] = []  # (kind, channel, url)
        h = _height(q)
        raw = _hex32(q)
        if h is not None:
            tips = {s.channel: s.height for s in self.backend.channel_summaries()}
            for ch in readable:
                if tips.get(ch, 0) >= h:
                    hits.append(("block", ch, self.url(f"/channels/{ch}/blocks/{h}")))
        elif raw is not None:
            for ch in readable:
                if self.backend.transaction(ch, raw) is not None:
                    hits.append(("transaction", ch, self.url(f"/channels/{ch}/tx/{raw.hex()}")))
                if self.backend.block_by_hash(ch, raw) is not None:
                    hits.append(
                        ("block", ch, self.url(f"/channels/{ch}/blocks/by-hash/{raw.hex()}"))
                    )
        else:
            return self._finish(
                page,
                RedirectResponse(self.url("/evidence?" + urlencode({"code": q})), status_code=303),
            )
        if len(hits) == 1:
            return self._finish(page, RedirectResponse(hits[0][2], status_code=303))
        return self.render(page, "search.html", q=q, hits=hits, status=404 if not hits else 200)

    # -- evidence

    def redact(self, viewer: Viewer, records: Sequence[EvidenceRecord]) -> list[EvidenceRecord]:
        """Drop supervision details the viewer may not read."""
        if viewer.can_read(SUPERVISION_CHANNEL):
            return list(records)
        return [replace(r, supervision=None) for r in records]

    def existing_suggestions(self, text: str) -> list[str]:
        """Codes one typo away from ``text`` that name anchored records."""
        return [str(c) for c in suggestions(text) if self.backend.evidence_by_code(c)][:10]

    def _lookup_code(self, text: str) -> tuple[EvidenceCode | None, str, list[str]]:
        """``(code, error message key, suggestions)``."""
        try:
            return parse(text), "", []
        except EvidenceCodeError as exc:
            if "check symbol does not match" in exc.message:
                return None, "code_typo", self.existing_suggestions(text)
            return None, "code_malformed", []

    async def evidence_search(self, request: Request) -> Response:
        page = self._page(request)
        if page.viewer is None:
            return self.to_login(page)
        if not page.viewer.evidence:
            return self.forbidden(page)
        qp = request.query_params
        code_q = qp.get("code", "").strip()[:100]
        tx_q = qp.get("tx", "").strip()[:100]
        loan_q = qp.get("loan", "").strip()[:100]
        lender_q = qp.get("lender", "").strip().lower()[:100]
        by = "code" if code_q else "tx" if tx_q else "loan" if loan_q else ""
        ctx: dict[str, Any] = {
            "by": by,
            "code_q": code_q,
            "tx_q": tx_q,
            "loan_q": loan_q,
            "lender_q": lender_q,
            "records": [],
            "error": "",
            "suggestions": [],
            "searched": bool(by),
        }
        if not by:
            return self.render(page, "evidence_search.html", **ctx)
        records: list[EvidenceRecord] = []
        query: dict[str, Any] = {"by": by}
        if by == "code":
            query["text"] = code_q
            code, err, sugg = self._lookup_code(code_q)
            ctx["error"], ctx["suggestions"] = err, sugg
            if code is not None:
                query["code"] = str(code)
                records = self.backend.evidence_by_code(code)
        elif by == "tx":
            query["text"] = tx_q
            tid = _hex32(tx_q)
            if tid is None:
                ctx["error"] = "bad_request"
            else:
                records = self.backend.evidence_by_tx(tid)
        else:
            query.update(loan=loan_q, lender=lender_q or None)
            if not _LOAN.fullmatch(loan_q) or (lender_q and not _NAME.fullmatch(lender_q)):
                ctx["error"] = "bad_request"
            else:
                records = self.backend.evidence_by_loan(loan_q, lender_q or None)
        try:
            self.audit(
                page,
                "evidence_lookup",
                query,
                {
                    "found": len(records),
                    "codes": [r.evidence_code for r in records][:50],
                    "error": ctx["error"] or None,
                    "suggestions": ctx["suggestions"],
                },
            )
        except AuditError as exc:
            return self.audit_failed(page, exc)
        ctx["records"] = self.redact(page.viewer, records)
        return self.render(page, "evidence_search.html", **ctx)

    async def evidence_page(self, request: Request, code: str) -> Response:
        page = self._page(request)
        if page.viewer is None:
            return self.to_login(page)
        if not page.viewer.evidence:
            return self.forbidden(page)
        parsed, _err, _ = self._lookup_code(code[:100])
        if parsed is None:
            target = self.url("/evidence?" + urlencode({"code": code[:100]}))
            return self._finish(page, RedirectResponse(target, status_code=303))
        if str(parsed) != code:
            return self._finish(
                page, RedirectResponse(self.url(f"/evidence/{quote(str(parsed))}"), status_code=301)
            )
        records = self.backend.evidence_by_code(parsed)
        try:
            self.audit(page, "evidence_view", {"code": str(parsed)}, {"found": len(records)})
        except AuditError as exc:
            return self.audit_failed(page, exc)
        if not records:
            return self.render(page, "evidence.html", 404, code=str(parsed), records=[])
        return self.render(
            page, "evidence.html", code=str(parsed), records=self.redact(page.viewer, records)
        )

    # -- verification

    async def verify_page(self, request: Request) -> Response:
        page = self._page(request)
        if page.viewer is None:
            return self.to_login(page)
        if not page.viewer.evidence:
            return self.forbidden(page)
        code = request.query_params.get("code", "").strip()[:100]
        labels = {
            k: page.t(k)
            for k in (
                "computing", "st_verified", "st_mismatch", "st_not_anchored", "st_chain_failed",
                "st_bad_code", "pass", "fail", "skip", "did_you_mean", "submitted_digest",
                "anchored_digest", "anchored_by", "remove", "evidence_code", "record_file",
                "salt", "salt_hint", "open", "session_expired", "csrf_failed",
            )
        }  # fmt: skip
        checks = {
            k: page.t(f"chk_{k}")
            for k in (
                "format", "court_validators", "judicial_certificate", "anchor_inclusion",
                "supervision_validators", "supervision_certificate", "record_inclusion",
                "evidence_code", "commitment", "anchored",
            )
        }  # fmt: skip
        return self.render(
            page,
            "verify.html",
            code=code,
            labels_json=json.dumps({**labels, **{"chk_" + k: v for k, v in checks.items()}}),
        )

    def _verify_items(self, pairs: Sequence[tuple[str, bytes]]) -> list[VerifyItem]:
        out: list[VerifyItem] = []
        for text, commitment in pairs:
            code, err, sugg = self._lookup_code(text)
            if code is None:
                out.append(VerifyItem(text, commitment, None, err, tuple(sugg)))
                continue
            v = self.backend.verify(code, commitment)
            out.append(VerifyItem(text, commitment, code, verification=v))
        return out

    @staticmethod
    def _audit_items(items: Sequence[VerifyItem]) -> list[dict[str, Any]]:
        return [
            {
                "code": str(it.code) if it.code else it.code_text,
                "digest": it.commitment.hex(),
                "status": it.status,
                "failed": [c.name for c in it.verification.checks if c.status == "fail"]
                if it.verification
                else [],
            }
            for it in items
        ]

    def _item_json(self, page: Page, it: VerifyItem) -> dict[str, Any]:
        t = page.t
        v = it.verification
        code = str(it.code) if it.code else it.code_text
        doc: dict[str, Any] = {
            "code": code,
            "status": it.status,
            "status_label": t(f"st_{it.status}"),
            "submitted": it.commitment.hex(),
            "error": t(it.code_error) if it.code_error else "",
            "suggestions": list(it.suggestions),
            "checks": [],
        }
        if v is not None:
            doc.update(
                anchored=v.anchored_commitment.hex() if v.anchored_commitment else None,
                supervision_height=v.supervision_height,
                judicial_height=v.judicial_height,
                anchored_time=self.env.filters["ms"](v.anchored_time_ms),
                supervision_time=self.env.filters["ms"](v.supervision_time_ms),
                evidence_url=(
                    self.url(f"/evidence/{quote(code)}") if v.status != NOT_ANCHORED else None
                ),
                checks=[
                    {
                        "name": c.name,
                        "label": t(f"chk_{c.name}"),
                        "status": c.status,
                        "status_label": t(c.status),
                        "reason": c.reason,
                        "detail": c.detail,
                    }
                    for c in v.checks
                ],
                detail=v.detail,
            )
        return doc

    async def verify_api(self, request: Request) -> Response:
        """``POST {"items": [{"code": str, "commitment": hex64}, ...]}`` with the
        session's CSRF token in ``X-CSRF-Token``. Only digests travel: the files were
        hashed in the browser."""
        page = self._page(request)
        if page.viewer is None:
            return self._finish(page, JSONResponse({"error": "session_expired"}, status_code=401))
        if not self.csrf_ok(page, request.headers.get(CSRF_HEADER)):
            return self._finish(page, JSONResponse({"error": "csrf_failed"}, status_code=403))
        if not page.viewer.evidence:
            return self._finish(page, JSONResponse({"error": "forbidden"}, status_code=403))
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_JSON_BYTES:
                return self._finish(page, JSONResponse({"error": "too_large"}, status_code=413))
        try:
            doc = json.loads(body)
            raw_items = doc["items"]
            limit = self.settings.max_batch
            if not isinstance(raw_items, list) or not 1 <= len(raw_items) <= limit:
                raise ValueError("items")
            pairs: list[tuple[str, bytes]] = []
            for item in raw_items:
                code_text = item["code"]
                digest = _hex32(item["commitment"])
                if not isinstance(code_text, str) or digest is None or len(code_text) > 100:
                    raise ValueError("item")
                pairs.append((code_text.strip(), digest))
        except (ValueError, KeyError, TypeError, RecursionError):
            return self._finish(
                page,
                JSONResponse(
                    {
                        "error": "bad_request",
                        "message": 'expected {"items": [{"code", "commitment"}]}',
                    },
                    status_code=400,
                ),
            )
        items = await run_in_threadpool(self._verify_items, pairs)
        try:
            self.audit(page, "verify", {"items": len(items)}, {"items": self._audit_items(items)})
        except AuditError as exc:
            log.error("audit log unavailable: %s", exc)
            return self._finish(page, JSONResponse({"error": "audit_unavailable"}, status_code=503))
        results = [self._item_json(page, it) for it in items]
        return self._finish(page, JSONResponse({"results": results}))

    # -- reports

    async def _report_items(
        self, page: Page
    ) -> tuple[list[tuple[str, bytes]] | None, Response | None]:
        """Items from the query (GET) or the form (POST, CSRF-checked)."""
        request = page.request
        if request.method == "POST":
            form = await self.form(request, MAX_JSON_BYTES)
            if form is None or not self.csrf_ok(page, (form.get(CSRF_FIELD) or [""])[0]):
                return None, self.error(page, 403, "forbidden", "csrf_failed")
            raw = form.get("item", [])
        else:
            raw = request.query_params.getlist("item")
        pairs: list[tuple[str, bytes]] = []
        for item in raw[: self.settings.max_batch]:
            code_text, _, digest_hex = item.strip().rpartition(":")
            digest = _hex32(digest_hex)
            if not code_text or digest is None:
                return None, self.error(page, 400, "bad_request", "bad_request")
            pairs.append((code_text[:100], digest))
        if not pairs:
            return None, self.error(page, 400, "bad_request", "bad_request")
        return pairs, None

    def _report_context(self, page: Page, items: Sequence[VerifyItem]) -> dict[str, Any]:
        base = (self.settings.public_url or str(page.request.base_url)).rstrip("/")
        links = {
            str(it.code): f"{base}{self.url('/evidence/')}{quote(str(it.code))}"
            for it in items
            if it.code is not None
        }
        counts: dict[str, int] = {}
        for it in items:
            counts[it.status] = counts.get(it.status, 0) + 1
        return {
            "items": items,
            "links": links,
            "counts": counts,
            "generated_ms": self.settings.wall_ms(),
            "item_params": [f"{it.code or it.code_text}:{it.commitment.hex()}" for it in items],
        }

    async def report(self, request: Request) -> Response:
        page = self._page(request)
        if page.viewer is None:
            return self.to_login(page)
        if not page.viewer.evidence:
            return self.forbidden(page)
        pairs, problem = await self._report_items(page)
        if pairs is None:
            assert problem is not None
            return problem
        items = await run_in_threadpool(self._verify_items, pairs)
        try:
            self.audit(page, "report", {"items": len(items)}, {"items": self._audit_items(items)})
        except AuditError as exc:
            return self.audit_failed(page, exc)
        from node.explorer.report_pdf import qr_svg_data_uri

        ctx = self._report_context(page, items)
        ctx["qr"] = {code: qr_svg_data_uri(url) for code, url in ctx["links"].items()}
        return self.render(page, "report.html", **ctx)

    async def report_pdf(self, request: Request) -> Response:
        page = self._page(request)
        if page.viewer is None:
            return self.to_login(page)
        if not page.viewer.evidence:
            return self.forbidden(page)
        pairs, problem = await self._report_items(page)
        if pairs is None:
            assert problem is not None
            return problem
        items = await run_in_threadpool(self._verify_items, pairs)
        try:
            self.audit(
                page, "report_pdf", {"items": len(items)}, {"items": self._audit_items(items)}
            )
        except AuditError as exc:
            return self.audit_failed(page, exc)
        from node.explorer.report_pdf import ReportFontError, ReportInput, render_pdf

        ctx = self._report_context(page, items)
        viewer = page.viewer
        node = self.backend.node_summary()
        try:
            data = await run_in_threadpool(
                render_pdf,
                ReportInput(
                    items=list(items),
                    links=ctx["links"],
                    generated_ms=ctx["generated_ms"],
                    viewer=f"{viewer.display_name} ({viewer.username})",
                    org=f"{viewer.org_name} ({viewer.org_id})",
                    node=f"{node.node_id} · {node.network}",
                    lang=page.lang,
                    tz=self.settings.tz,
                ),
            )
        except ReportFontError as exc:  # the printable HTML report (/report) still works
            return self.unavailable(page, "PDF report unavailable", "PDF 报告不可用", exc)
        name = "verification-report.pdf"
        if len(items) == 1 and items[0].code is not None:
            name = "verification-" + re.sub(r"[^A-Z0-9-]", "-", str(items[0].code)) + ".pdf"
        resp = Response(
            data,
            media_type="application/pdf",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
        return self._finish(page, resp)


def create_explorer_router(
    backend: ExplorerBackend, settings: ExplorerSettings | None = None
) -> tuple[APIRouter, Explorer]:
    """The explorer's routes (to include in any FastAPI app) and its state."""
    explorer = Explorer(backend, settings)
    return explorer.router(), explorer


def mount_explorer(
    app: FastAPI, backend: ExplorerBackend, settings: ExplorerSettings | None = None
) -> Explorer:
    """Serve the explorer from ``app`` under ``settings.prefix`` (``/explorer``).

    Mount it *before* any catch-all route of ``app``. Returns the :class:`Explorer`
    (its ``sessions`` can be used to end a removed user's sessions)."""
    router, explorer = create_explorer_router(backend, settings)
    app.include_router(router)
    return explorer
