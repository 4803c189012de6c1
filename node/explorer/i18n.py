"""Labels in Chinese and English. Templates call ``t("key")``; the language comes
from the ``wl_lang`` cookie (default Chinese: the clerks' language)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

LANGS: Final = ("zh", "en")
DEFAULT_LANG: Final = "zh"
LANG_COOKIE: Final = "wl_lang"

#: key → (Chinese, English)
LABELS: Final[Mapping[str, tuple[str, str]]] = {
    "app_title": ("五链浏览器", "wulian chain explorer"),
    "node": ("节点", "Node"),
    "network": ("网络", "Network"),
    "overview": ("总览", "Overview"),
    "evidence": ("存证", "Evidence"),
    "verify": ("核验", "Verify"),
    "search": ("搜索", "Search"),
    "sign_in": ("登录", "Sign in"),
    "sign_out": ("退出", "Sign out"),
    "username": ("用户名", "Username"),
    "password": ("密码", "Password"),
    "signed_in_as": ("当前用户", "Signed in as"),
    "org": ("机构", "Organisation"),
    "role": ("角色", "Role"),
    "bad_credentials": ("用户名或密码错误。", "Wrong username or password."),
    "locked_out": (
        "失败次数过多，账户已暂时锁定，请稍后再试。",
        "Too many failed attempts: sign-in is locked for a while. Try again later.",
    ),
    "session_expired": (
        "会话已过期，请重新登录。",
        "Your session has expired. Please sign in again.",
    ),
    "csrf_failed": (
        "表单已失效（安全令牌不符），请刷新页面后重试。",
        "The form has expired (security token mismatch). Reload the page and try again.",
    ),
    "org_not_permitted": (
        "该账户所属机构在网络中不存在或无权查看。",
        "This account's organisation is unknown to the network or may read nothing.",
    ),
    "channels": ("通道", "Channels"),
    "channel": ("通道", "Channel"),
    "height": ("高度", "Height"),
    "last_block": ("最新区块", "Last block"),
    "time": ("时间", "Time"),
    "view": ("视图", "View"),
    "primary": ("主节点", "Primary"),
    "ready": ("就绪", "Ready"),
    "status": ("状态", "Status"),
    "validators": ("验证节点", "Validators"),
    "health": ("健康", "Health"),
    "health_ok": ("正常", "healthy"),
    "health_degraded": ("近期未签名", "not signing lately"),
    "health_down": ("不可达", "unreachable"),
    "link": ("连接", "Link"),
    "this_node": ("本节点", "this node"),
    "last_signed": ("最近签名高度", "Last signed"),
    "recent_blocks": ("最近区块", "Recent blocks"),
    "view_changes": ("视图切换", "View changes"),
    "no_view_changes": ("近期无视图切换。", "No view change in recent blocks."),
    "in_progress": ("进行中", "in progress"),
    "live": ("实时更新", "Live"),
    "paused": ("已暂停", "paused"),
    "updated": ("更新于", "updated"),
    "block": ("区块", "Block"),
    "blocks": ("区块", "Blocks"),
    "hash": ("哈希", "Hash"),
    "prev_hash": ("前一区块哈希", "Previous hash"),
    "proposer": ("提议者", "Proposer"),
    "tx_root": ("交易根", "Transaction root"),
    "record_root": ("记录根", "Record root"),
    "records": ("记录", "Records"),
    "state_root": ("状态根", "State root"),
    "state_height": ("状态高度", "State height"),
    "certificate": ("提交证书", "Commit certificate"),
    "votes": ("投票", "Votes"),
    "quorum": ("法定票数", "Quorum"),
    "signature": ("签名", "Signature"),
    "valid": ("有效", "valid"),
    "invalid": ("无效", "invalid"),
    "transactions": ("交易", "Transactions"),
    "transaction": ("交易", "Transaction"),
    "tx_id": ("交易编号", "Transaction id"),
    "type": ("类型", "Type"),
    "sender": ("发送方", "Sender"),
    "signer": ("签名者", "Signer"),
    "public_key": ("公钥", "Public key"),
    "nonce": ("随机数", "Nonce"),
    "index": ("序号", "Index"),
    "outcome": ("执行结果", "Outcome"),
    "fields": ("字段", "Fields"),
    "field": ("字段", "Field"),
    "value": ("值", "Value"),
    "key_not_active": ("签名密钥未生效", "key not active"),
    "older": ("更早", "Older"),
    "newer": ("更新", "Newer"),
    "not_found": ("未找到", "Not found"),
    "not_found_text": (
        "没有找到该内容，或您无权查看。",
        "Nothing here, or you may not see it.",
    ),
    "forbidden": ("无权访问", "Not permitted"),
    "forbidden_text": (
        "您的机构角色无权使用此功能。",
        "Your organisation's role may not use this.",
    ),
    "bad_request": ("请求有误", "Bad request"),
    "evidence_search": ("存证查询", "Evidence search"),
    "evidence_code": ("存证编码", "Evidence code"),
    "by_code": ("按存证编码", "By evidence code"),
    "by_tx": ("按交易编号", "By transaction id"),
    "by_loan": ("按贷款编号", "By loan id"),
    "loan_id": ("贷款编号", "Loan id"),
    "lender": ("放贷机构", "Lender"),
    "lender_optional": ("放贷机构（可选）", "Lender (optional)"),
    "did_you_mean": ("您是否要找：", "Did you mean:"),
    "code_typo": (
        "存证编码校验位不符，可能有输入错误。",
        "The evidence code's check symbol does not match: it has a typo.",
    ),
    "code_malformed": ("这不是有效的存证编码。", "This is not a well-formed evidence code."),
    "no_suggestion": (
        "没有相近的已存证编码。",
        "No anchored code is one typo away.",
    ),
    "no_evidence": ("没有找到存证记录。", "No evidence record found."),
    "lineage": ("存证链路", "Lineage"),
    "step_lender": ("放贷机构上报", "Lender reports"),
    "step_supervision": ("监管链区块", "Supervision block"),
    "step_anchor": ("跨链锚定", "Anchor"),
    "step_court": ("司法链区块", "Court block"),
    "not_anchored_yet": ("尚未锚定到司法链", "not anchored on the court chain yet"),
    "withheld": ("无监管链查看权限，已隐去", "withheld: no supervision read permission"),
    "commitment": ("记录摘要（承诺值）", "Record commitment"),
    "anchored_by": ("锚定时间（不晚于）", "Anchored by"),
    "reported_at": ("上报时间", "Reported at"),
    "latency": ("锚定耗时", "Anchoring delay"),
    "verify_title": ("存证核验", "Verify evidence"),
    "verify_intro": (
        "选择原始记录文件及其盐值。文件在您的浏览器中计算摘要，不会上传；只发送摘要。",
        "Pick the original record file and its salt. The file is hashed in your browser "
        "and never leaves this computer; only the digest is sent.",
    ),
    "record_file": ("原始记录文件", "Record file"),
    "salt": ("盐值", "Salt"),
    "salt_hint": (
        "64 位十六进制，或选择 .salt 文件",
        "64 hex digits, or pick the .salt file",
    ),
    "add_row": ("添加一行", "Add a row"),
    "add_files": ("批量选择文件", "Add files (batch)"),
    "batch_hint": (
        "批量立案：可一次选择多个记录文件，同名的 .salt 与 .receipt.json 文件会自动配对。"
        "放贷机构导出的记录文件（wulian-record/1，如 record.json）自带盐值。",
        "Case filing in bulk: pick many files at once; NAME.salt and NAME.receipt.json "
        "files are paired with the record NAME automatically. A lender's record document "
        "(wulian-record/1, e.g. record.json) carries its salt.",
    ),
    "verify_all": ("全部核验", "Verify all"),
    "remove": ("移除", "Remove"),
    "computing": ("正在计算摘要…", "Hashing…"),
    "result": ("结果", "Result"),
    "st_verified": ("核验一致", "Verified"),
    "st_mismatch": ("不一致（数据被篡改或盐值错误）", "Mismatch (tampered data or wrong salt)"),
    "st_not_anchored": ("未存证", "Not anchored"),
    "st_chain_failed": ("链上校验失败", "Chain checks failed"),
    "st_bad_code": ("存证编码有误", "Bad evidence code"),
    "checks": ("校验项", "Checks"),
    "check": ("校验项", "Check"),
    "pass": ("通过", "pass"),
    "fail": ("失败", "fail"),
    "skip": ("跳过", "skipped"),
    "chk_format": ("回执格式", "Receipt format"),
    "chk_court_validators": ("司法链验证节点集合", "Court validator set"),
    "chk_judicial_certificate": ("司法链区块提交证书", "Court block certificate"),
    "chk_anchor_inclusion": ("锚定包含证明", "Anchor inclusion proof"),
    "chk_supervision_validators": ("监管链验证节点集合", "Supervision validator set"),
    "chk_supervision_certificate": ("监管链区块提交证书", "Supervision block certificate"),
    "chk_record_inclusion": ("记录包含证明", "Record inclusion proof"),
    "chk_evidence_code": ("存证编码一致", "Evidence code matches"),
    "chk_commitment": ("摘要一致", "Digest matches"),
    "chk_anchored": ("已存证", "Anchored"),
    "submitted_digest": ("提交的摘要", "Submitted digest"),
    "anchored_digest": ("链上摘要", "Anchored digest"),
    "report": ("核验报告", "Verification report"),
    "print": ("打印", "Print"),
    "print_report": ("打印核验报告", "Print report"),
    "download_pdf": ("下载 PDF", "Download PDF"),
    "report_title": ("电子数据存证核验报告", "Electronic evidence verification report"),
    "report_generated": ("报告生成时间", "Report generated"),
    "report_by": ("核验人", "Verified by"),
    "report_node": ("核验节点", "Verifying node"),
    "report_qr": ("扫码查看存证", "Scan to open the evidence page"),
    "report_note": (
        "本报告依据司法链上的存证回执生成：摘要由核验人本地计算，节点按回执逐项校验。",
        "Produced from the court chain's evidence receipt: the digest was computed on "
        "the clerk's computer and the node checked the receipt step by step.",
    ),
    "summary": ("汇总", "Summary"),
    "items": ("项", "items"),
    "language": ("语言", "Language"),
    "open": ("查看", "Open"),
    "none": ("无", "none"),
    "yes": ("是", "yes"),
    "no": ("否", "no"),
    "unknown": ("未知", "unknown"),
    "go": ("查询", "Go"),
    "search_hint": (
        "区块高度、区块哈希、交易编号或存证编码",
        "Block height, block hash, transaction id or evidence code",
    ),
    "js_needed": (
        "核验需要启用 JavaScript（在本机计算文件摘要）。",
        "Verification needs JavaScript (the file is hashed on this computer).",
    ),
    "ch_supervision": ("监管链", "Supervision chain"),
    "ch_judicial": ("司法链", "Court chain"),
    "ch_risk": ("风控链", "Risk chain"),
    "ch_credit": ("征信链", "Credit chain"),
    "ch_service": ("服务链", "Service chain"),
}


def translator(lang: str) -> Callable[[str], str]:
    """``t(key)`` for ``lang``; an unknown key shows itself (visible, never a crash)."""
    i = LANGS.index(lang) if lang in LANGS else 0

    def t(key: str) -> str:
        pair = LABELS.get(key)
        return key if pair is None else pair[i]

    return t


def pick_lang(cookie: str | None, accept_language: str | None = None) -> str:
    if cookie in LANGS:
        return str(cookie)
    if accept_language and accept_language.strip().lower().startswith("en"):
        return "en"
    return DEFAULT_LANG
