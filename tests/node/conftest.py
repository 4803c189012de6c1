"""Fixtures shared by the node tests that drive one node's runtime in process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from node.config import load_node_config
from node.runtime import NodeRuntime
from tests.node.test_node_runtime import write_config


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[NodeRuntime]:
    """A bureau node's runtime (``rules = "test"``) on a fresh ledger, closed after."""
    rt = NodeRuntime.open(load_node_config(write_config(tmp_path)))
    try:
        yield rt
    finally:
        rt.store.close()
