"""An in-memory :class:`~node.explorer.port.ExplorerBackend` for the explorer's tests.

Blocks and transactions are synthetic (deterministic hashes); the evidence is real:
two receipts from the spec's test vectors (``tests/vectors/receipts/``), each with the
lender's record bytes and salt, verified with the project's receipt verifier — so a
genuine file verifies and a tampered one does not, exactly as on a node.

    python -m tests.explorer.fake_backend --port 8123 --data DIR    # serve it
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crosschain.receipt import Receipt, TrustRoot
from ledger.evidence_code import EvidenceCode
from ledger.genesis import DEFAULT_READ
from ledger.identity import CHANNELS
from node.explorer.accounts import AccountFile, accounts_path, audit_path
from node.explorer.audit import AuditError, AuditLog
from node.explorer.decode import flatten_fields
from node.explorer.port import (
    NOT_ANCHORED,
    Account,
    AnchorInfo,
    BlockDetail,
    BlockSummary,
    CertificateView,
    ChannelSummary,
    EvidenceRecord,
    NodeSummary,
    OrgView,
    RecordRef,
    SupervisionDetail,
    TxDetail,
    TxSummary,
    ValidatorChannel,
    ValidatorHealth,
    Verification,
    ViewChange,
    VoteView,
)
from node.explorer.verification import verification_from_receipts

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "receipts"
NODES = (
    "bureau-node",
    "court-node",
    "risk_centre-node",
    "credit_agency-node",
    "service_platform-node",
)
BASE_MS = 1_700_000_000_000
HEIGHTS = {"supervision": 30, "judicial": 24, "risk": 6, "credit": 4, "service": 3}
#: Heights from which the channel runs in view 1 (a view change happened there).
VIEW_CHANGE_AT = {"supervision": 20}
TXS_PER_BLOCK = 3

ORGS = {
    "court": OrgView("court", "互联网法院 Internet Court", "court"),
    "bureau": OrgView("bureau", "地方金融监管局 Bureau", "bureau"),
    "court-clerks": OrgView("court-clerks", "互联网法院立案庭 Clerks' office", "clerk"),
    "audit-office": OrgView("audit-office", "审计处 Audit office", "auditor"),
    "acme-lending": OrgView("acme-lending", "Acme 小贷", "lender"),
}


def _h(*parts: object) -> bytes:
    return hashlib.sha256("/".join(map(str, parts)).encode()).digest()


@dataclass(frozen=True)
class EvidenceFixture:
    code: str
    receipt: dict[str, Any]
    trust: TrustRoot
    record: bytes
    salt: bytes
    loan_id: str


def load_fixtures() -> list[EvidenceFixture]:
    """The two positive vectors that carry a record and its salt."""
    out = []
    for name, loan in (
        ("positive_with_record", "L-2024-001"),
        ("positive_validator_changes", "L-2024-002"),
    ):
        doc = json.loads((VECTORS / f"{name}.json").read_text("utf-8"))
        inp = doc["input"]
        out.append(
            EvidenceFixture(
                doc["receipt"]["evidence_code"],
                doc["receipt"],
                TrustRoot.from_json(doc["trust_root"]),
                bytes.fromhex(inp["record"]),
                bytes.fromhex(inp["salt"]),
                loan,
            )
        )
    return out


class FakeBackend:
    """See the module docstring. ``fail_audit`` makes the audit log refuse writes."""

    def __init__(self, data_dir: str | Path) -> None:
        data = Path(data_dir)
        self.accounts = AccountFile(accounts_path(data))
        self.audit = AuditLog(audit_path(data), lambda: BASE_MS)
        self.fail_audit = False
        self.read = {ch: frozenset(DEFAULT_READ[ch]) for ch in CHANNELS}
        self.fixtures = {f.code: f for f in load_fixtures()}
        self._receipts = {code: Receipt.from_json(f.receipt) for code, f in self.fixtures.items()}
        # Synthetic transactions, plus the receipts' record transactions on supervision.
        self.txs: dict[tuple[str, bytes], tuple[int, int]] = {}
        for ch, tip in HEIGHTS.items():
            for h in range(1, tip + 1):
                for i in range(TXS_PER_BLOCK):
                    self.txs[(ch, self._tx_id(ch, h, i))] = (h, i)
        self.record_txs: dict[bytes, tuple[str, Receipt]] = {}
        for code, r in self._receipts.items():
            self.record_txs[r.record.tx_id] = (code, r)

    # -- basics

    def node_summary(self) -> NodeSummary:
        return NodeSummary("wulian-test", "court-node", "court", _h("genesis"))

    def channel_ids(self) -> Sequence[str]:
        return CHANNELS

    def read_roles(self, channel: str) -> frozenset[str]:
        return self.read.get(channel, frozenset())

    def org(self, org_id: str) -> OrgView | None:
        return ORGS.get(org_id)

    # -- synthetic chain

    @staticmethod
    def _tx_id(ch: str, h: int, i: int) -> bytes:
        return _h("tx", ch, h, i)

    @staticmethod
    def _view(ch: str, h: int) -> int:
        at = VIEW_CHANGE_AT.get(ch)
        return 1 if at is not None and h >= at else 0

    @staticmethod
    def _time(ch: str, h: int) -> int:
        return BASE_MS + h * 1000 + CHANNELS.index(ch) * 7

    def channel_summaries(self) -> list[ChannelSummary]:
        out = []
        for ch in CHANNELS:
            tip = HEIGHTS[ch]
            view = self._view(ch, tip)
            out.append(
                ChannelSummary(
                    ch,
                    tip,
                    _h("block", ch, tip),
                    self._time(ch, tip),
                    5,
                    4,
                    view,
                    NODES[view % 5],
                    True,
                    "",
                )
            )
        return out

    def validators(self) -> list[ValidatorHealth]:
        out = []
        for n, node in enumerate(NODES):
            link = "self" if node == "court-node" else "down" if n == 4 else "up"
            chans = tuple(
                ValidatorChannel(
                    ch,
                    NODES[self._view(ch, HEIGHTS[ch]) % 5] == node,
                    None if n == 4 else HEIGHTS[ch],
                    0 if n == 4 else min(20, HEIGHTS[ch]),
                    min(20, HEIGHTS[ch]),
                )
                for ch in CHANNELS
            )
            out.append(
                ValidatorHealth(
                    node,
                    node.removesuffix("-node"),
                    f"http://127.0.0.1:{7001 + n}",
                    node == "court-node",
                    link,
                    "connect refused" if n == 4 else "",
                    chans,
                )
            )
        return out

    def recent_blocks(
        self, channel: str, limit: int, before: int | None = None
    ) -> list[BlockSummary]:
        tip = HEIGHTS.get(channel)
        if tip is None:
            return []
        top = tip if before is None else min(tip, before - 1)
        return [
            BlockSummary(
                channel,
                h,
                _h("block", channel, h),
                self._time(channel, h),
                TXS_PER_BLOCK,
                NODES[self._view(channel, h) % 5],
                self._view(channel, h),
            )
            for h in range(top, max(0, top - limit), -1)
        ]

    def view_changes(self, channel: str, limit: int) -> list[ViewChange]:
        at = VIEW_CHANGE_AT.get(channel)
        if at is None or at > HEIGHTS[channel]:
            return []
        return [ViewChange(channel, at, 0, 1, self._time(channel, at), NODES[1])][:limit]

    def block(self, channel: str, height: int) -> BlockDetail | None:
        tip = HEIGHTS.get(channel)
        if tip is None or not 1 <= height <= tip:
            return None
        bh = _h("block", channel, height)
        view = self._view(channel, height)
        votes = tuple(VoteView(NODES[i], _h("sig", channel, height, i) * 2, True) for i in range(4))
        txs = tuple(
            TxSummary(
                i,
                self._tx_id(channel, height, i),
                "test_tx",
                "acme-lending",
                self._time(channel, height) - 50,
                True,
                "ok",
            )
            for i in range(TXS_PER_BLOCK)
        )
        return BlockDetail(
            channel,
            height,
            bh,
            _h("block", channel, height - 1),
            self._time(channel, height),
            NODES[view % 5],
            view,
            _h("txr", channel, height),
            TXS_PER_BLOCK,
            _h("rr", channel, height),
            0,
            height - 1,
            _h("sr", channel, height),
            CertificateView(view, bh, votes, 5, 4),
            txs,
            tip,
        )

    def block_by_hash(self, channel: str, block_hash: bytes) -> BlockDetail | None:
        for h in range(1, HEIGHTS.get(channel, 0) + 1):
            if _h("block", channel, h) == block_hash:
                return self.block(channel, h)
        return None

    def transaction(self, channel: str, tx_id: bytes) -> TxDetail | None:
        if channel == "supervision" and tx_id in self.record_txs:
            code, r = self.record_txs[tx_id]
            fx = self.fixtures[code]
            sh = r.supervision_header
            record = {
                "loan_id": fx.loan_id,
                "event": "contract",
                "amount_cents": 1_000_000,
                "event_time_ms": sh.time_ms - 500,
                "c": r.record.commitment,
            }
            payload = {
                "records": [record],
            }
            return TxDetail(
                "supervision",
                tx_id,
                sh.height,
                0,
                sh.hash,
                sh.time_ms,
                r.record.tx_type,
                "acme-lending",
                "lender",
                _h("pk"),
                _h("s") * 2,
                True,
                7,
                sh.time_ms - 400,
                flatten_fields(payload),
                True,
                "ok",
                "",
                (RecordRef(r.record.index, r.record.commitment, code),),
            )
        loc = self.txs.get((channel, tx_id))
        if loc is None:
            return None
        h, i = loc
        payload = {
            "k": f"key-{h}-{i}",
            "amount_cents": 12345,
            "note": "测试交易",
            "ref": _h("ref", h),
        }
        return TxDetail(
            channel,
            tx_id,
            h,
            i,
            _h("block", channel, h),
            self._time(channel, h),
            "test_tx",
            "acme-lending",
            "lender",
            _h("pk"),
            _h("s") * 2,
            True,
            h * 10 + i,
            self._time(channel, h) - 50,
            flatten_fields(payload),
            True,
            "ok",
            "",
        )

    # -- evidence

    def _record(self, code: str) -> EvidenceRecord:
        r = self._receipts[code]
        fx = self.fixtures[code]
        sh, jh = r.supervision_header, r.judicial_header
        return EvidenceRecord(
            evidence_code=code,
            commitment=r.record.commitment,
            tx_id=r.record.tx_id,
            tx_type=r.record.tx_type,
            record_index=r.record.index,
            leaf_index=r.record_index,
            supervision_height=sh.height,
            supervision_hash=sh.hash,
            supervision_time_ms=sh.time_ms,
            anchor=AnchorInfo(jh.height, jh.hash, jh.time_ms, r.anchor_tx, r.anchor_index),
            supervision=SupervisionDetail(
                "acme-lending",
                sh.time_ms - 400,
                0,
                fx.loan_id,
                "contract",
                flatten_fields({"loan_id": fx.loan_id, "amount_cents": 1_000_000}),
            ),
        )

    def evidence_by_code(self, code: EvidenceCode) -> list[EvidenceRecord]:
        c = str(code)
        return [self._record(c)] if c in self._receipts else []

    def evidence_by_tx(self, tx_id: bytes) -> list[EvidenceRecord]:
        hit = self.record_txs.get(tx_id)
        return [self._record(hit[0])] if hit else []

    def evidence_by_loan(self, loan_id: str, lender: str | None) -> list[EvidenceRecord]:
        if lender not in (None, "acme-lending"):
            return []
        return [self._record(c) for c, f in self.fixtures.items() if f.loan_id == loan_id]

    def verify(self, code: EvidenceCode, commitment: bytes) -> Verification:
        c = str(code)
        if c not in self._receipts:
            return Verification(c, NOT_ANCHORED, commitment, detail="no anchored record")
        return verification_from_receipts(
            c, commitment, [self._receipts[c]], self.fixtures[c].trust
        )

    # -- accounts and audit

    def find_account(self, username: str) -> Account | None:
        return self.accounts.find(username)

    def append_audit(self, entry: Mapping[str, Any]) -> None:
        if self.fail_audit:
            raise AuditError("audit log unavailable (test)")
        self.audit.append(entry)


def main() -> None:  # pragma: no cover - used by the browser tests' server process
    import uvicorn
    from fastapi import FastAPI

    from node.explorer import ExplorerSettings, mount_explorer

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--poll-ms", type=int, default=1000)
    args = ap.parse_args()
    app = FastAPI()
    mount_explorer(app, FakeBackend(args.data), ExplorerSettings(poll_interval_ms=args.poll_ms))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":  # pragma: no cover
    main()
