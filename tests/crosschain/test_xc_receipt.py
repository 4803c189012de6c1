"""Receipts: assembly, offline verification, the vectors, and the independent verifier."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.independent_verifier as independent
from crosschain.receipt import (
    CHECKS,
    Receipt,
    ReceiptUnavailable,
    TrustRoot,
    assemble_receipt,
    verify_receipt,
)
from ledger.blocks import block_record_leaves
from ledger.evidence_code import EvidenceCode, code_for_leaf
from tests.crosschain.harness import Network, RecordRef
from tests.crosschain.receipt_vectors import VECTOR_DIR, Scenario, build_vectors, scenario

VECTOR_FILES = sorted(VECTOR_DIR.glob("*.json"))


@pytest.fixture(scope="module")
def sc() -> Scenario:
    return scenario()


def both(
    receipt: Any, trust: TrustRoot, record: bytes | None = None, salt: bytes | None = None
) -> tuple[list[tuple[str, str, str]], bool, bool]:
    """Verify with both verifiers; assert they agree; return (summary, ok, data_verified)."""
    report = verify_receipt(receipt, trust, record, salt)
    other = independent.verify(receipt, trust.to_json(), record, salt)
    assert [list(c) for c in report.summary()] == other
    return report.summary(), report.ok, report.data_verified


def receipt_of(net: Network, ref: RecordRef) -> dict[str, Any]:
    block = net.sup.committed_block(ref.height)
    assert block is not None
    leaf = block_record_leaves(block[0].transactions)[ref.leaf_index]
    (receipt,) = assemble_receipt(code_for_leaf(leaf), net.receipt_source())
    assert Receipt.from_json(receipt.to_json()) == receipt
    return receipt.to_json()


# -- vectors ------------------------------------------------------------------------


def test_there_are_positive_and_negative_vectors() -> None:
    names = [p.stem for p in VECTOR_FILES]
    assert sum(n.startswith("positive") for n in names) >= 4
    assert sum(n.startswith("negative") for n in names) >= 15


@pytest.mark.parametrize("path", VECTOR_FILES, ids=[p.stem for p in VECTOR_FILES])
def test_both_verifiers_give_the_expected_checks(path: Path) -> None:
    vec = json.loads(path.read_text(encoding="utf-8"))
    inp = {k: None if v is None else bytes.fromhex(v) for k, v in vec["input"].items()}
    trust = TrustRoot.from_json(vec["trust_root"])
    report = verify_receipt(vec["receipt"], trust, inp["record"], inp["salt"], inp["commitment"])
    assert [list(c) for c in report.summary()] == vec["expected"]["checks"]
    assert (report.ok, report.data_verified) == (
        vec["expected"]["ok"],
        vec["expected"]["data_verified"],
    )
    other = independent.verify(
        vec["receipt"], vec["trust_root"], inp["record"], inp["salt"], inp["commitment"]
    )
    assert other == vec["expected"]["checks"]
    assert [c[0] for c in other] == list(CHECKS)
    assert path.stem.startswith("positive") == (
        vec["expected"]["ok"] and all(c[1] != "fail" for c in other)
    )


def test_vector_files_are_current(sc: Scenario) -> None:
    """The vectors are deterministic; WULIAN_UPDATE_VECTORS=1 rewrites them."""
    vectors = build_vectors(sc)
    if os.environ.get("WULIAN_UPDATE_VECTORS") == "1":
        from tests.crosschain.receipt_vectors import write_vectors

        write_vectors()
    for name, vec in vectors.items():
        on_disk = json.loads((VECTOR_DIR / f"{name}.json").read_text(encoding="utf-8"))
        assert on_disk == json.loads(json.dumps(vec)), name
    assert {p.stem for p in VECTOR_FILES} == set(vectors)


# -- genuine receipts -----------------------------------------------------------------


def test_every_record_of_the_scenario_has_a_receipt_that_verifies(sc: Scenario) -> None:
    net = sc.net
    anchored = [r for r in net.records if r.height <= net.light_client().height]
    assert len(anchored) > 20
    for ref in anchored:
        summary, ok, data_ok = both(receipt_of(net, ref), net.trust, ref.record_bytes, ref.salt)
        assert ok and data_ok, summary
    # offline verification time (printed, not asserted): a typical receipt has no config
    # steps; one after validator changes on both channels carries three
    for label, ref in (("typical", sc.early), ("after validator changes", sc.late)):
        receipt = Receipt.from_json(receipt_of(net, ref))
        start = time.perf_counter()
        rounds = 20
        for _ in range(rounds):
            verify_receipt(receipt, net.trust, ref.record_bytes, ref.salt)
        per = (time.perf_counter() - start) / rounds * 1000
        size = len(json.dumps(receipt.to_json()))
        print(f"\noffline receipt verification, {label}: {per:.2f} ms ({size} bytes)")


def test_receipts_report_the_facts(sc: Scenario) -> None:
    report = verify_receipt(receipt_of(sc.net, sc.late), sc.net.trust)
    entry = sc.net.receipt_source().anchor_entry(sc.late.height)
    assert entry is not None
    jblock = sc.net.jud.committed_block(entry.judicial_height)
    assert jblock is not None
    assert report.ok and not report.data_verified
    assert report.check("commitment").status == "skip"
    assert (report.supervision_height, report.judicial_height) == (
        sc.late.height,
        entry.judicial_height,
    )
    assert report.anchored_time_ms == jblock[0].header.time_ms
    assert report.commitment == sc.late.commitment
    assert json.loads(json.dumps(report.to_json()))["ok"] is True


def test_unknown_codes_have_no_receipt(sc: Scenario) -> None:
    with pytest.raises(ReceiptUnavailable):
        assemble_receipt(EvidenceCode(12345), sc.net.receipt_source())


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    blocks=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5)), min_size=1, max_size=3),
    chunk=st.sampled_from([1, 2, 4, 1024]),
)
def test_every_genuine_receipt_verifies(blocks: list[tuple[int, int]], chunk: int) -> None:
    net = Network(chunk_size=chunk)
    for n_txs, per_tx in blocks:
        net.report(n_txs, per_tx)
    reported = net.sup.height
    net.run_relays()  # anchors every block (then commits a block of acks)
    assert net.light_client().height >= reported
    for ref in net.records:
        summary, ok, data_ok = both(receipt_of(net, ref), net.trust, ref.record_bytes, ref.salt)
        assert ok and data_ok, summary


# -- every single-field mutation fails --------------------------------------------------


def _leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for k in sorted(value):
            yield from _leaf_paths(value[k], (*path, k))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaf_paths(item, (*path, i))
    else:
        yield path


def _mutate(receipt: Any, path: tuple[Any, ...], bit: int) -> Any:
    out = json.loads(json.dumps(receipt))
    parent = out
    for p in path[:-1]:
        parent = parent[p]
    v = parent[path[-1]]
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise AssertionError(f"unexpected leaf {v!r}")
    if isinstance(v, int):
        parent[path[-1]] = v + 1 + bit % 3
    elif v and len(v) % 2 == 0 and all(c in "0123456789abcdef" for c in v):
        raw = bytearray(bytes.fromhex(v))
        raw[bit % len(raw)] ^= 1 << (bit % 8)
        parent[path[-1]] = raw.hex()
    else:
        parent[path[-1]] = v + "x"
    return out


@pytest.fixture(scope="module")
def late_receipt(sc: Scenario) -> dict[str, Any]:
    return receipt_of(sc.net, sc.late)


def test_every_field_of_a_typical_receipt_is_load_bearing(sc: Scenario) -> None:
    """Exhaustively: changing any one field of a receipt (no config steps) breaks it."""
    receipt = receipt_of(sc.net, sc.early)
    paths = list(_leaf_paths(receipt))
    assert len(paths) > 60
    for i, path in enumerate(paths):
        mutated = _mutate(receipt, path, i * 37)
        summary, ok, _ = both(mutated, sc.net.trust, sc.early.record_bytes, sc.early.salt)
        assert not ok, (path, summary)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_every_single_field_mutation_fails(
    sc: Scenario, late_receipt: dict[str, Any], data: st.DataObject
) -> None:
    paths = list(_leaf_paths(late_receipt))
    path = data.draw(st.sampled_from(paths), label="path")
    bit = data.draw(st.integers(0, 255), label="bit")
    mutated = _mutate(late_receipt, path, bit)
    summary, ok, data_ok = both(mutated, sc.net.trust, sc.late.record_bytes, sc.late.salt)
    assert not ok and not data_ok, (path, summary)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_dropped_list_items_fail(
    sc: Scenario, late_receipt: dict[str, Any], data: st.DataObject
) -> None:
    """Dropping a proof hash or a vote breaks the receipt."""
    lists = [
        p[:-1]
        for p in _leaf_paths(late_receipt)
        if isinstance(p[-1], int) and p[-2] in ("proof", "votes")
    ]
    path = data.draw(st.sampled_from(sorted(set(lists))), label="list")
    out = json.loads(json.dumps(late_receipt))
    target = out
    for p in path:
        target = target[p]
    target.pop(data.draw(st.integers(0, len(target) - 1)))
    summary, ok, _ = both(out, sc.net.trust)
    assert not ok, (path, summary)


@settings(max_examples=50, deadline=None)
@given(
    garbage=st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**70), 2**70)
        | st.text(max_size=8)
        | st.floats(allow_nan=False),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_garbage_never_raises(garbage: Any) -> None:
    trust = Network().trust
    report = verify_receipt(garbage, trust)
    assert not report.ok and report.checks[0].status == "fail"
    assert independent.verify(garbage, trust.to_json())[0] == ["format", "fail", "malformed"]


def test_the_offline_verifier_needs_only_the_ledger_layer() -> None:
    import subprocess
    import sys

    script = (
        "import sys\n"
        "sys.modules['channels'] = None\n"
        "import crosschain.receipt\n"
        "assert not any(m.startswith('channels') for m in sys.modules if sys.modules[m])\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
