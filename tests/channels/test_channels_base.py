"""Checks every transaction goes through, block application and extension points."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from channels.base import TxType, apply_block
from channels.context import DAY_MS, BlockContext, NetworkParams, TxContext
from channels.errors import NotYetCommitted, Rejection
from channels.judicial import RULES as JUDICIAL
from channels.registry import CHANNEL_RULES, rules_for
from channels.state import GENESIS_STATE_ROOT, MemoryState, WriteSet
from ledger.errors import ConfigError, SchemaError
from tests.channels.helpers import Harness, admit_payload


def test_wrong_channel_unknown_type_unknown_sender_and_role() -> None:
    h = Harness()
    sup = CHANNEL_RULES["supervision"]
    tx = h.tx("risk", "gzjr", "lender_admit", admit_payload("lender-a"))
    assert sup.check_stateless(tx, "bureau") == Rejection(
        "wrong_channel", "transaction is for channel 'risk', not 'supervision'"
    )
    rej = sup.check_stateless(h.tx("supervision", "gzjr", "lender_delete", {}), "bureau")
    assert rej is not None and rej.code == "unknown_tx_type"
    tx = h.tx("supervision", "gzjr", "lender_admit", admit_payload("lender-a"))
    assert sup.check_stateless(tx, "bureau") is None
    rej = sup.check_stateless(tx, None)
    assert rej is not None and rej.code == "unknown_sender"
    rej = sup.check_stateless(tx, "lender")
    assert rej is not None and rej.code == "role_not_permitted"
    assert "bureau" in rej.message
    # the same checks apply when the block is applied
    h.rejected(
        "supervision", "lender-a", "lender_admit", admit_payload("lender-a"), "role_not_permitted"
    )
    h.rejected(
        "supervision", "stranger", "lender_admit", admit_payload("lender-a"), "unknown_sender"
    )
    h.rejected("supervision", "gzjr", "lender_delete", {}, "unknown_tx_type")


def test_bad_payload_names_the_field() -> None:
    h = Harness()
    bad = admit_payload("lender-a")
    bad["public_keys"] = [b"short"]
    out = h.rejected("supervision", "gzjr", "lender_admit", bad, "bad_payload")
    assert "public_keys" in out.message
    extra = admit_payload("lender-a") | {"colour": "red"}
    out = h.rejected("supervision", "gzjr", "lender_admit", extra, "bad_payload")
    assert "colour" in out.message


def test_transaction_time_window() -> None:
    h = Harness()
    p = admit_payload("lender-a")
    h.rejected("supervision", "gzjr", "lender_admit", p, "tx_expired", time_ms=h.now - DAY_MS - 1)
    h.rejected("supervision", "gzjr", "lender_admit", p, "tx_from_future", time_ms=h.now + 300_001)
    h.ok("supervision", "gzjr", "lender_admit", p, time_ms=h.now - DAY_MS)


def test_duplicate_transaction_is_rejected_in_a_later_block_and_in_the_same_block() -> None:
    h = Harness()
    tx = h.tx("supervision", "gzjr", "lender_admit", admit_payload("lender-a"))
    assert [o.code for o in h.block("supervision", [tx])] == ["ok"]
    assert [o.code for o in h.block("supervision", [tx])] == ["duplicate_tx"]
    tx2 = h.tx("supervision", "gzjr", "lender_admit", admit_payload("lender-b"))
    assert [o.code for o in h.block("supervision", [tx2, tx2])] == ["ok", "duplicate_tx"]


def test_caller_rejection_is_recorded_and_rules_are_not_run() -> None:
    h = Harness()
    tx = h.tx("supervision", "gzjr", "lender_admit", admit_payload("lender-a"))
    result = h.net.commit(
        "supervision", [tx], h.now, rejections={tx.tx_id: Rejection("bad_signature", "no")}
    )
    assert [(o.code, o.message) for o in result.outcomes] == [("bad_signature", "no")]
    assert h.snapshot("supervision") == {}


def test_block_metadata_is_written_even_for_an_empty_block() -> None:
    h = Harness()
    result = h.net.commit("judicial", [], h.now)
    assert result.outcomes == ()
    assert [k for k, _ in result.writes] == [b"meta/block/000000000001"]


def test_not_yet_committed_aborts_the_whole_block() -> None:
    h = Harness()
    h.admit("lender-a")
    good = h.tx("credit", "credit", "credit_entry", {
        "entry_id": "e1", "borrower_ref": b"\x01" * 32, "kind": "note",
        "amount_cents": 0, "digest": b"\x02" * 32, "effective_ms": h.now,
    })  # fmt: skip
    ahead = h.tx("credit", "credit", "credit_sync", {"source_height": 99})
    root = h.net.roots["credit"]
    with pytest.raises(NotYetCommitted) as info:
        h.block("credit", [good, ahead])
    assert (info.value.channel, info.value.height, info.value.local_height) == (
        "supervision",
        99,
        1,
    )
    assert h.net.heights["credit"] == 0 and h.net.roots["credit"] == root
    assert len(h.net.states["credit"]) == 0


def test_apply_block_refuses_rules_of_another_channel() -> None:
    ctx = BlockContext("risk", 1, 1)
    with pytest.raises(ValueError):
        apply_block(rules_for("supervision"), MemoryState(), [], ctx, prev_root=GENESIS_STATE_ROOT)
    with pytest.raises(KeyError, match="nowhere"):
        rules_for("nowhere")


def test_extension_points_reject_until_installed() -> None:
    h = Harness()
    out = h.rejected("judicial", "relay-node", "anchor", {"anything": 1}, "rule_not_installed")
    assert "extension point" in out.message
    h.rejected("judicial", "gzcourt", "evidence_ack", {}, "rule_not_installed")
    h.rejected("judicial", "lender-a", "anchor", {}, "role_not_permitted")
    h.rejected("judicial", "gzjr", "anchor", {}, "role_not_permitted")
    h.rejected("supervision", "relay-node", "anchor_receipt", {}, "rule_not_installed")
    for channel in ("supervision", "risk", "judicial", "credit", "service"):
        h.rejected(channel, "credit", "config_update", {"change": {}}, "rule_not_installed")
        h.rejected(channel, "lender-a", "config_update", {}, "role_not_permitted")


def test_installing_an_extension_rule() -> None:
    def parse(raw: dict[str, Any]) -> str:
        return str(raw.get("digest", ""))

    def apply(state: WriteSet, payload: str, ctx: TxContext) -> Mapping[str, Any]:
        state.put_value(b"jud/anchor/x", payload)
        return {"anchored": True}

    anchor = JUDICIAL.tx_types["anchor"]
    installed = JUDICIAL.with_tx_type(TxType("anchor", anchor.roles, parse, apply, "test"))
    assert installed.tx_types["anchor"].extension
    assert JUDICIAL.tx_types["anchor"].apply is anchor.apply  # original unchanged
    h = Harness(rules={**CHANNEL_RULES, "judicial": installed})
    out = h.ok("judicial", "relay-node", "anchor", {"digest": "d"})
    assert out.result == {"anchored": True}
    with pytest.raises(ValueError, match="not an extension point"):
        JUDICIAL.with_tx_type(TxType("case_file", frozenset({"lender"}), parse, apply, "x"))
    with pytest.raises(ValueError, match="roles"):
        JUDICIAL.with_tx_type(TxType("anchor", frozenset({"lender"}), parse, apply, "x"))


def test_a_payload_is_parsed_once_from_admission_to_apply() -> None:
    """Admission keeps the parsed payload on the transaction; apply takes it and drops
    it. A payload that fails its schema is not remembered: each call says so."""
    calls: list[dict[str, Any]] = []

    def parse(raw: dict[str, Any]) -> str:
        calls.append(raw)
        if "digest" not in raw:
            raise SchemaError("field 'digest': missing")
        return str(raw["digest"])

    def apply(state: WriteSet, payload: str, ctx: TxContext) -> Mapping[str, Any]:
        state.put_value(b"jud/anchor/x", payload)
        return {"digest": payload}

    anchor = JUDICIAL.tx_types["anchor"]
    rules = JUDICIAL.with_tx_type(TxType("anchor", anchor.roles, parse, apply, "test"))
    h = Harness(rules={**CHANNEL_RULES, "judicial": rules})
    tx = h.tx("judicial", "relay-node", "anchor", {"digest": "d"})
    assert rules.check_stateless(tx, "node") is None
    assert rules.check_stateless(tx, "node") is None  # the proposal check: no parse
    assert len(calls) == 1
    (out,) = h.block("judicial", [tx])
    assert out.code == "ok" and out.result == {"digest": "d"}
    assert len(calls) == 1  # apply used the admitted parse...
    assert "_derived" not in tx.__dict__  # ...and dropped it (blocks stay cached)
    other = h.tx("judicial", "relay-node", "anchor", {"digest": "e"})
    (out,) = h.block("judicial", [other])  # never admitted here: apply parses it
    assert out.result == {"digest": "e"} and len(calls) == 2
    bad = h.tx("judicial", "relay-node", "anchor", {})
    for _ in range(2):
        rej = rules.check_stateless(bad, "node")
        assert rej is not None and rej.code == "bad_payload"
    assert len(calls) == 4


def test_transaction_derived_values_are_kept_per_key_until_forgotten() -> None:
    tx = Harness().tx("judicial", "relay-node", "anchor", {})
    made: list[str] = []

    def compute(name: str) -> str:
        made.append(name)
        return name.upper()

    assert tx.derived("a", lambda: compute("a")) == "A"
    assert tx.derived("a", lambda: compute("again")) == "A"
    assert tx.derived("b", lambda: compute("b")) == "B"
    assert made == ["a", "b"]
    tx.forget_derived()
    assert tx.derived("a", lambda: compute("fresh")) == "FRESH"
    assert tx == replace(tx)  # equality and hashing ignore the memo
    assert hash(tx) == hash(replace(tx))


def test_params_from_genesis_mapping() -> None:
    p = NetworkParams.from_mapping({"legal_rate_cap_bp": 1540, "multi_lender_threshold": 2})
    assert p.legal_rate_cap_bp == 1540 and p.multi_lender_threshold == 2
    assert p.late_report_bound_ms == NetworkParams().late_report_bound_ms
    assert NetworkParams.from_mapping(p.to_mapping()) == p
    with pytest.raises(ConfigError, match=r"params\.rate_cap: unknown"):
        NetworkParams.from_mapping({"rate_cap": 1})
    assert NetworkParams.from_mapping({"max_block_txs": 2000}, strict=False) == NetworkParams()
    with pytest.raises(ConfigError, match="non-negative integer"):
        NetworkParams.from_mapping({"legal_rate_cap_bp": "24%"})
    assert replace(p, legal_rate_cap_bp=1) != p
