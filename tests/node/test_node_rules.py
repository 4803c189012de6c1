"""The node's view of channel rules: the test logic and the production adapter."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.blocks import Transaction, build_block
from ledger.crypto import Ed25519Signer
from ledger.genesis import DEFAULT_PARAMS, make_local_genesis
from ledger.hashing import sha256
from ledger.store import BlockStore
from node.rules import StoreCrossReader, StoreState, TestLogic, TxOutcome, channel_logic

NET = sha256(b"net")
LENDER = Ed25519Signer(sha256(b"lender"))


def tx(payload: dict[str, object], nonce: int = 1, channel: str = "supervision") -> Transaction:
    return Transaction(
        NET, channel, "loan_event", "lender1", LENDER.public_key, nonce, 1_700_000_000_000, payload
    ).signed(LENDER)


def block(txs: list[Transaction], height: int = 1) -> object:
    return build_block(
        channel="supervision", height=height, prev_hash=b"\x00" * 32, transactions=txs,
        state_height=0, state_root=b"\x00" * 32, proposer="n", view=0, time_ms=1,
    )  # fmt: skip


def test_test_logic_checks_and_applies_write_once(tmp_path: Path) -> None:
    logic = TestLogic("supervision")
    assert logic.check_stateless(tx({"k": "a", "v": 1}), "lender") is None
    assert logic.check_stateless(tx({"k": "a"}), None) is not None
    assert logic.check_stateless(tx({"x": 1}), "lender") is not None
    assert logic.check_stateless(tx({"k": "a", "zz": 1}), "lender") is not None
    with BlockStore.open(tmp_path / "db", NET, create=True) as store:
        state, cross = StoreState(store, "supervision"), StoreCrossReader(store)
        txs = [tx({"k": "a", "v": 1}, 1), tx({"k": "a", "v": 2}, 2), tx({"k": "b"}, 3)]
        b = block(txs)
        root0 = logic.initial_state_root()
        eff = logic.apply_block(b, ["lender", "lender", None], state, cross, root0)  # type: ignore[arg-type]
        assert [o.code for o in eff.outcomes] == ["ok", "exists", "unknown_sender"]
        assert set(eff.writes) == {b"kv/a"}
        again = logic.apply_block(b, ["lender", "lender", None], state, cross, root0)  # type: ignore[arg-type]
        assert again.state_root == eff.state_root  # deterministic
        other = logic.apply_block(b, ["lender"] * 3, state, cross, root0)  # type: ignore[arg-type]
        assert other.state_root != eff.state_root  # outcomes are part of the root


def test_outcome_wire_round_trip() -> None:
    o = TxOutcome("bad", "why", {"n": 1})
    assert not o.valid and TxOutcome.from_wire(o.to_wire()) == o
    assert TxOutcome.from_wire("junk").code == "unknown"


def test_production_rules_load_for_every_channel_with_genesis_params() -> None:
    for channel in ("supervision", "judicial", "risk", "credit", "service"):
        logic = channel_logic(channel, "channels", DEFAULT_PARAMS)
        assert len(logic.initial_state_root()) == 32
        rejected = logic.check_stateless(tx({"nonsense": 1}, channel=channel), "lender")
        assert rejected is not None and rejected.code


def test_production_rules_apply_an_empty_block(tmp_path: Path) -> None:
    g = make_local_genesis(tmp_path / "net", base_port=17001)
    logic = channel_logic("supervision", "channels", g.channel("supervision").params)
    with BlockStore.open(tmp_path / "db", g.hash, create=True) as store:
        eff = logic.apply_block(
            block([]),  # type: ignore[arg-type]
            [],
            StoreState(store, "supervision"),
            StoreCrossReader(store),
            logic.initial_state_root(),
        )
        assert eff.outcomes == () and len(eff.state_root) == 32


def test_unknown_mode_is_a_config_error() -> None:
    with pytest.raises(Exception, match="rules"):
        channel_logic("nochannel", "channels", {})
