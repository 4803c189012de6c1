"""A node runs every channel that a channel it runs reads (``READS_FROM``): here the
court's node validates supervision but not judicial, whose accepted anchors the
supervision channel's acknowledgement rule reads — so it follows judicial, else its
supervision blocks holding acknowledgements would wait for ever."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.node.single_node import SingleNode


def drop_from_judicial(doc: dict[str, Any]) -> None:
    (judicial,) = [ch for ch in doc["channels"] if ch["id"] == "judicial"]
    judicial["validators"] = [v for v in judicial["validators"] if v != "court-node"]


def test_a_supervision_validator_follows_the_judicial_channel(tmp_path: Path) -> None:
    node = SingleNode(tmp_path / "channels", drop_from_judicial, rules="channels")
    try:
        judicial = node.rt.channels["judicial"]
        assert not judicial.is_validator and judicial.replica is not None
        assert node.rt.reads_not_run() == set()
    finally:
        node.close()


def test_the_test_rules_read_no_other_channel(tmp_path: Path) -> None:
    node = SingleNode(tmp_path / "test", drop_from_judicial)
    try:
        assert node.rt.channels["judicial"].replica is None
    finally:
        node.close()
