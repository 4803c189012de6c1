"""Turn receipt verification reports into the explorer's :class:`Verification`.

Status, from the nine checks of docs/receipts.md §8 (``commitment`` given as the
digest the clerk's browser computed):

* ``verified``     — every check passes: the file is the anchored record;
* ``mismatch``     — checks 1–8 pass (the receipt is genuine) but the digest differs:
  the file was altered, or the salt is wrong;
* ``chain_failed`` — one of checks 1–8 fails: the node's own data does not verify
  (report it: it is not the clerk's file that is at fault).

With several receipts for one code (an 80-bit collision; practically never) the best
outcome wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crosschain.receipt import CertificateVerifier, Receipt, TrustRoot, verify_receipt
from ledger.certificate import verify_certificate
from node.explorer.port import CHAIN_FAILED, MISMATCH, VERIFIED, CheckResult, Verification

_RANK = {VERIFIED: 0, MISMATCH: 1, CHAIN_FAILED: 2}


def verification_from_receipts(
    code: str,
    commitment: bytes,
    receipts: Sequence[Receipt | dict[str, Any]],
    trust: TrustRoot,
    *,
    certificate_verifier: CertificateVerifier = verify_certificate,
) -> Verification:
    """Verify each receipt against ``trust`` with ``commitment``; the best result.
    ``receipts`` must not be empty (no receipt means "not anchored": the caller's case).
    ``certificate_verifier`` is passed to :func:`verify_receipt` (a node's memo)."""
    if not receipts:
        raise ValueError("no receipt to verify")
    best: Verification | None = None
    for receipt in receipts:
        report = verify_receipt(
            receipt, trust, commitment=commitment, certificate_verifier=certificate_verifier
        )
        # Checks 1-8 (all but "commitment") say whether the receipt itself is genuine.
        chain_ok = all(c.status == "pass" for c in report.checks if c.name != "commitment")
        if chain_ok and report.data_verified:
            status = VERIFIED
        elif chain_ok:
            status = MISMATCH
        else:
            status = CHAIN_FAILED
        v = Verification(
            evidence_code=code,
            status=status,
            submitted_commitment=commitment,
            anchored_commitment=report.commitment,
            checks=tuple(CheckResult(c.name, c.status, c.reason, c.detail) for c in report.checks),
            supervision_height=report.supervision_height,
            supervision_time_ms=report.supervision_time_ms,
            judicial_height=report.judicial_height,
            anchored_time_ms=report.anchored_time_ms,
        )
        if best is None or _RANK[v.status] < _RANK[best.status]:
            best = v
    assert best is not None
    return best
