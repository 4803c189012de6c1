"""Verification reports as PDF (reportlab) with embedded CJK font and QR codes (segno).

The font is Debian's WenQuanYi Micro Hei (package ``fonts-wqy-microhei``), embedded
(subset) so the PDF reads the same on any machine; :data:`FONT_PATHS` lists where it
is looked for. Each item gets a QR code leading back to its evidence page, drawn as
vector squares (no image library needed).

:func:`render_pdf` raises :class:`ReportFontError` if no CJK font is installed.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timezone
from typing import Any, Final

import segno
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from ledger.errors import LedgerError
from node.explorer.decode import format_ms
from node.explorer.i18n import translator

FONT_NAME: Final = "WQYMicroHei"
FONT_PATHS: Final = (
    os.environ.get("WULIAN_CJK_FONT", ""),
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/wqy-microhei/wqy-microhei.ttc",
)


class ReportFontError(LedgerError):
    code = "report_font_missing"


@dataclass(frozen=True)
class ReportInput:
    items: Sequence[Any]  # node.explorer.app.VerifyItem
    links: Mapping[str, str]  # evidence code -> absolute evidence-page URL
    generated_ms: int
    viewer: str
    org: str
    node: str
    lang: str
    tz: timezone


_font_ready = False


def font_path() -> str | None:
    """The first of :data:`FONT_PATHS` that exists (None: no CJK font here)."""
    return next((p for p in FONT_PATHS if p and os.path.exists(p)), None)


def _register_font() -> None:
    global _font_ready
    if _font_ready:
        return
    path = font_path()
    if path is not None:
        kwargs: dict[str, Any] = {"subfontIndex": 0} if path.endswith(".ttc") else {}
        pdfmetrics.registerFont(TTFont(FONT_NAME, path, **kwargs))
        _font_ready = True
        return
    raise ReportFontError(
        "no CJK font for PDF reports: install Debian's fonts-wqy-microhei "
        "(deploy/install-system-deps.sh) or set WULIAN_CJK_FONT"
    )


def qr_svg_data_uri(url: str) -> str:
    """A QR code of ``url`` as an SVG data URI (for the HTML print view)."""
    return str(segno.make(url, error="m").svg_data_uri(scale=3, border=2))


def _draw_qr(c: Canvas, url: str, x: float, y: float, size: float) -> None:
    """QR of ``url`` with its lower-left corner at (x, y), ``size`` points wide."""
    qr = segno.make(url, error="m")
    matrix = [list(row) for row in qr.matrix]
    n = len(matrix)
    border = 2
    cell = size / (n + 2 * border)
    c.setFillColor(colors.white)
    c.rect(x, y, size, size, stroke=0, fill=1)
    c.setFillColor(colors.black)
    for r, row in enumerate(matrix):
        for col, dark in enumerate(row):
            if dark:
                c.rect(
                    x + (col + border) * cell,
                    y + size - (r + border + 1) * cell,
                    cell + 0.05,
                    cell + 0.05,
                    stroke=0,
                    fill=1,
                )


class _Writer:
    """A tiny flowing-text writer over a canvas (new pages as needed)."""

    def __init__(self, c: Canvas, footer: str) -> None:
        self.c = c
        self.width, self.height = A4
        self.left = 18 * mm
        self.right = self.width - 18 * mm
        self.top = self.height - 18 * mm
        self.bottom = 20 * mm
        self.y = self.top
        self.page = 1
        self.footer = footer

    def _footer(self) -> None:
        self.c.setFont(FONT_NAME, 7.5)
        self.c.setFillColor(colors.grey)
        self.c.drawString(self.left, 10 * mm, self.footer)
        self.c.drawRightString(self.right, 10 * mm, str(self.page))
        self.c.setFillColor(colors.black)

    def new_page(self) -> None:
        self._footer()
        self.c.showPage()
        self.page += 1
        self.y = self.top

    def need(self, h: float) -> None:
        if self.y - h < self.bottom:
            self.new_page()

    def wrap(self, text: str, size: float, width: float) -> list[str]:
        """Break ``text`` into lines no wider than ``width`` (per character, which
        suits Chinese and hex alike)."""
        lines: list[str] = []
        for para in text.split("\n"):
            line = ""
            for ch in para:
                if pdfmetrics.stringWidth(line + ch, FONT_NAME, size) > width and line:
                    lines.append(line)
                    line = ch
                else:
                    line += ch
            lines.append(line)
        return lines

    def text(
        self,
        text: str,
        size: float = 10,
        *,
        x: float | None = None,
        width: float | None = None,
        color: Any = colors.black,
        gap: float = 1.5,
    ) -> None:
        x0 = self.left if x is None else x
        w = (self.right - x0) if width is None else width
        for line in self.wrap(text, size, w):
            self.need(size + gap)
            self.c.setFont(FONT_NAME, size)
            self.c.setFillColor(color)
            self.c.drawString(x0, self.y - size, line)
            self.y -= size + gap
        self.c.setFillColor(colors.black)

    def row(self, label: str, value: str, size: float = 9) -> None:
        label_w = 38 * mm
        lines = self.wrap(value, size, self.right - self.left - label_w)
        self.need((size + 2) * len(lines))
        self.c.setFont(FONT_NAME, size)
        self.c.setFillColor(colors.HexColor("#555555"))
        self.c.drawString(self.left, self.y - size, label)
        self.c.setFillColor(colors.black)
        for line in lines:
            self.c.drawString(self.left + label_w, self.y - size, line)
            self.y -= size + 2

    def space(self, h: float) -> None:
        self.y -= h


_STATUS_COLOURS: Final = {
    "verified": "#1b7f3b",
    "mismatch": "#b3261e",
    "not_anchored": "#8a5a00",
    "chain_failed": "#b3261e",
    "bad_code": "#8a5a00",
}


def render_pdf(report: ReportInput) -> bytes:
    """The report as PDF bytes. Raises :class:`ReportFontError` without a CJK font."""
    _register_font()
    t = translator(report.lang)
    buf = io.BytesIO()
    c = Canvas(buf, pagesize=A4, invariant=False)
    c.setTitle(t("report_title"))
    c.setAuthor(report.node)
    c.setSubject(t("report_title"))
    generated = format_ms(report.generated_ms, report.tz)
    w = _Writer(c, f"wulian · {report.node} · {t('report_generated')} {generated}")

    w.text(t("report_title"), 17, gap=5)
    if report.lang != "zh":
        w.text("电子数据存证核验报告", 10, color=colors.grey)
    else:
        w.text("Electronic evidence verification report", 9, color=colors.grey)
    w.space(4)
    w.row(t("report_generated"), format_ms(report.generated_ms, report.tz))
    w.row(t("report_by"), f"{report.viewer} · {report.org}")
    w.row(t("report_node"), report.node)
    counts: dict[str, int] = {}
    for it in report.items:
        counts[it.status] = counts.get(it.status, 0) + 1
    w.row(
        t("summary"),
        f"{len(report.items)} {t('items')}: "
        + ", ".join(f"{t('st_' + k)} {v}" for k, v in sorted(counts.items())),
    )
    w.space(3)
    w.text(t("report_note"), 8.5, color=colors.HexColor("#444444"))
    w.space(6)

    qr_size = 30 * mm
    for n, it in enumerate(report.items, start=1):
        v = it.verification
        code = str(it.code) if it.code is not None else it.code_text
        w.need(qr_size + 20)
        c.setStrokeColor(colors.HexColor("#cccccc"))
        c.line(w.left, w.y, w.right, w.y)
        w.space(4)
        top = w.y
        link = report.links.get(code)
        text_right = w.right - (qr_size + 4 * mm if link else 0)
        w.text(f"{n}. {t('evidence_code')}: {code}", 11.5, width=text_right - w.left, gap=3)
        w.text(
            t(f"st_{it.status}"),
            11,
            color=colors.HexColor(_STATUS_COLOURS.get(it.status, "#000000")),
            width=text_right - w.left,
            gap=4,
        )
        if link:
            _draw_qr(c, link, w.right - qr_size, top - qr_size, qr_size)
            c.setFont(FONT_NAME, 6.5)
            c.drawCentredString(w.right - qr_size / 2, top - qr_size - 7, t("report_qr"))
        saved_right = w.right
        w.right = text_right
        w.row(t("submitted_digest"), it.commitment.hex(), 8)
        if v is not None:
            if v.anchored_commitment is not None:
                w.row(t("anchored_digest"), v.anchored_commitment.hex(), 8)
            if v.supervision_height is not None:
                w.row(
                    t("step_supervision"),
                    f"#{v.supervision_height} · {format_ms(v.supervision_time_ms, report.tz)}",
                    8,
                )
            if v.judicial_height is not None:
                w.row(
                    t("step_court"),
                    f"#{v.judicial_height} · {format_ms(v.anchored_time_ms, report.tz)}",
                    8,
                )
                w.row(t("anchored_by"), format_ms(v.anchored_time_ms, report.tz), 8)
        elif it.code_error:
            w.row(t("result"), t(it.code_error), 8)
            if it.suggestions:
                w.row(t("did_you_mean"), ", ".join(it.suggestions), 8)
        w.right = saved_right
        if link and w.y > top - qr_size - 10:
            w.y = top - qr_size - 10
        if v is not None and v.checks:
            w.space(2)
            w.text(t("checks"), 9, gap=2)
            for chk in v.checks:
                mark = {"pass": "✓", "fail": "×", "skip": "–"}.get(chk.status, "?")
                line = f"{mark} {t('chk_' + chk.name)} ({chk.name}): {t(chk.status)}"
                if chk.reason:
                    line += f" — {chk.reason}"
                if chk.detail and chk.status == "fail":
                    line += f": {chk.detail}"
                colour = colors.HexColor("#b3261e") if chk.status == "fail" else colors.black
                w.text(line, 8, x=w.left + 4 * mm, color=colour, gap=1.5)
        w.space(6)
    w._footer()
    c.save()
    return buf.getvalue()
