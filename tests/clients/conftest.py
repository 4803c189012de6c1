"""Fixtures for the SDK unit tests: an in-memory fake network and a client of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clients import Client
from tests.clients.fakenet import FakeNetwork, make_client


@pytest.fixture
def fake(tmp_path: Path) -> FakeNetwork:
    return FakeNetwork.create(tmp_path / "net")


@pytest.fixture
def client(fake: FakeNetwork, tmp_path: Path) -> Iterator[Client]:
    c = make_client(fake, tmp_path)
    try:
        yield c
    finally:
        c.close()
