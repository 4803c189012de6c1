"""Receipt test vectors (tests/vectors/receipts/), made from a deterministic scenario.

    python -m tests.crosschain.receipt_vectors      # rewrite the vector files

The scenario: a supervision chain and a judicial chain, each changing validator set
(a sixth validator added, the first removed) and certifying later blocks with the new
member's vote, joined by the relay. Receipt A is for a record anchored before any
change (no config steps); receipt B for one anchored after both changes (config steps
on both sides, needed to verify). Each negative vector breaks one thing and names the
check that must fail first; :func:`build_vectors` asserts the project verifier agrees
before a vector is written.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crosschain.receipt import TrustRoot, assemble_receipt, verify_receipt
from ledger.blocks import block_record_leaves
from ledger.evidence_code import code_for_leaf
from ledger.governance import RemoveValidator
from tests.crosschain.harness import (
    Network,
    RecordRef,
    add_validator,
    config_tx,
    make_validators,
    signer,
)

VECTOR_DIR = Path(__file__).resolve().parents[1] / "vectors" / "receipts"


@dataclass
class Scenario:
    net: Network
    early: RecordRef  # anchored before any validator change
    late: RecordRef  # anchored after both channels changed validators

    def receipt(self, ref: RecordRef) -> dict[str, Any]:
        block = self.net.sup.committed_block(ref.height)
        assert block is not None
        leaf = block_record_leaves(block[0].transactions)[ref.leaf_index]
        (receipt,) = assemble_receipt(code_for_leaf(leaf), self.net.receipt_source())
        return receipt.to_json()


def scenario() -> Scenario:
    net = Network(chunk_size=4)
    net.sup.prefer, net.jud.prefer = ("s6",), ("j6",)
    s6, j6 = signer("s/6"), signer("j/6")
    net.sup.keys["s6"], net.jud.keys["j6"] = s6, j6
    net.report(2, 3)  # supervision 1
    net.run_relays()  # judicial 1 anchors it (no judicial config yet)
    early = net.records[1]
    net.jud.commit([config_tx("judicial", add_validator("j6", j6), 14, 11)])
    net.jud.commit([config_tx("judicial", RemoveValidator("j1"), 16, 12)])
    cfg = [
        config_tx("supervision", add_validator("s6", s6), 12, 1),
        config_tx("supervision", RemoveValidator("s1"), 14, 2),
    ]
    net.report(1, 1, extra=cfg)  # supervision 2
    while net.sup.height < 15:
        net.report(1, 2)
    while net.jud.height < 16:
        net.run_relays()
        net.jud.commit([])
    net.report(3, 2)  # supervision 16+: after both changes
    net.run_relays(2)
    late = net.records[-2]
    assert net.light_client().height >= late.height
    return Scenario(net, early, late)


def _hex_flip(h: str, byte: int = 0) -> str:
    b = bytearray(bytes.fromhex(h))
    b[byte] ^= 0x01
    return b.hex()


def _vector(
    description: str,
    trust: TrustRoot | dict[str, Any],
    receipt: Any,
    *,
    record: bytes | None = None,
    salt: bytes | None = None,
    commitment: bytes | None = None,
    fails: str | None = None,
) -> dict[str, Any]:
    trust_json = trust.to_json() if isinstance(trust, TrustRoot) else trust
    report = verify_receipt(receipt, TrustRoot.from_json(trust_json), record, salt, commitment)
    first = next((c for c in report.checks if c.status == "fail"), None)
    if fails is None:
        assert first is None, f"{description}: {first}"
    else:
        assert first is not None and first.name == fails, f"{description}: {report.summary()}"
    return {
        "description": description,
        "trust_root": trust_json,
        "receipt": receipt,
        "input": {
            "record": None if record is None else record.hex(),
            "salt": None if salt is None else salt.hex(),
            "commitment": None if commitment is None else commitment.hex(),
        },
        "expected": {
            "ok": report.ok,
            "data_verified": report.data_verified,
            "checks": [list(c) for c in report.summary()],
        },
    }


def _mutated(receipt: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    out = copy.deepcopy(receipt)
    change(out)
    return out


def build_vectors(sc: Scenario | None = None) -> dict[str, dict[str, Any]]:
    """Every vector, by file name (without ``.json``)."""
    sc = sc or scenario()
    trust = sc.net.trust
    a, b = sc.receipt(sc.early), sc.receipt(sc.late)
    ra, rb = sc.early, sc.late
    assert a["judicial"]["config"] == [] and a["supervision"]["config"] == []
    assert b["judicial"]["config"] and b["supervision"]["config"]
    other_jud, _ = make_validators("imposter", 5)
    wrong_court = TrustRoot(other_jud, trust.supervision)
    v: dict[str, dict[str, Any]] = {}

    def add(name: str, *args: Any, **kw: Any) -> None:
        v[name] = _vector(name.replace("_", " "), *args, **kw)

    add("positive_basic", trust, a)
    add("positive_with_record", trust, a, record=ra.record_bytes, salt=ra.salt)
    add("positive_with_commitment", trust, a, commitment=ra.commitment)
    add("positive_validator_changes", trust, b, record=rb.record_bytes, salt=rb.salt)
    add(
        "negative_tampered_record",
        trust,
        a,
        record=ra.record_bytes[:-1] + b"\x00",
        salt=ra.salt,
        fails="commitment",
    )
    add("negative_wrong_salt", trust, a, record=ra.record_bytes, salt=rb.salt, fails="commitment")
    add("negative_record_without_salt", trust, a, record=ra.record_bytes, fails="commitment")
    add(
        "negative_flipped_record_proof_byte",
        trust,
        _mutated(
            a, lambda r: r["record"]["proof"].__setitem__(0, _hex_flip(r["record"]["proof"][0], 7))
        ),
        fails="record_inclusion",
    )
    add(
        "negative_truncated_record_proof",
        trust,
        _mutated(a, lambda r: r["record"]["proof"].pop()),
        fails="record_inclusion",
    )
    add(
        "negative_flipped_anchor_proof_byte",
        trust,
        _mutated(
            b, lambda r: r["anchor"]["proof"].__setitem__(0, _hex_flip(r["anchor"]["proof"][0]))
        ),
        fails="anchor_inclusion",
    )

    def forge(side: str) -> Callable[[dict[str, Any]], None]:
        def change(r: dict[str, Any]) -> None:
            vote = r[side]["certificate"]["votes"][1]
            vote[1] = _hex_flip(vote[1], 40)

        return change

    add(
        "negative_forged_judicial_signature",
        trust,
        _mutated(a, forge("judicial")),
        fails="judicial_certificate",
    )
    add(
        "negative_forged_supervision_signature",
        trust,
        _mutated(b, forge("supervision")),
        fails="supervision_certificate",
    )
    add("negative_wrong_court_validator_set", wrong_court, a, fails="judicial_certificate")
    add("negative_wrong_court_validator_set_history", wrong_court, b, fails="court_validators")
    add(
        "negative_wrong_evidence_code",
        trust,
        _mutated(a, lambda r: r.__setitem__("evidence_code", b["evidence_code"])),
        fails="evidence_code",
    )
    add(
        "negative_supervision_config_step_left_out",
        trust,
        _mutated(b, lambda r: r["supervision"].__setitem__("config", [])),
        fails="supervision_certificate",
    )
    add(
        "negative_tampered_config_transaction",
        trust,
        _mutated(
            b,
            lambda r: r["judicial"]["config"][0]["txs"][0].__setitem__(
                "body", _hex_flip(r["judicial"]["config"][0]["txs"][0]["body"], 30)
            ),
        ),
        fails="court_validators",
    )
    add(
        "negative_record_leaf_changed",
        trust,
        _mutated(a, lambda r: r["record"]["leaf"].__setitem__("i", r["record"]["leaf"]["i"] + 1)),
        fails="record_inclusion",
    )
    add(
        "negative_wrong_channel",
        trust,
        _mutated(a, lambda r: r["judicial"]["header"].__setitem__("ch", "supervision")),
        fails="judicial_certificate",
    )
    add(
        "negative_malformed_missing_key",
        trust,
        _mutated(a, lambda r: r["anchor"].pop("index")),
        fails="format",
    )
    add(
        "negative_malformed_uppercase_hex",
        trust,
        _mutated(a, lambda r: r["anchor"].__setitem__("tx", r["anchor"]["tx"].upper())),
        fails="format",
    )
    return v


def write_vectors(directory: Path = VECTOR_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, vec in build_vectors().items():
        path = directory / f"{name}.json"
        path.write_text(json.dumps(vec, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write_vectors():
        print(p)
