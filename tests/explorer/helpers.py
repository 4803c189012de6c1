"""Shared set-up for the explorer tests: an app over the fake backend, accounts, sign-in."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from ledger.hashing import TAG_RECORD, tagged_hash
from node.explorer import Explorer, ExplorerSettings, mount_explorer
from node.explorer.accounts import AccountFile, accounts_path, hash_password
from node.explorer.port import Account
from tests.explorer.fake_backend import FakeBackend

#: Cheap scrypt for test accounts (the production cost is exercised in test_accounts).
TEST_N = 2**8
PASSWORD = "correct horse battery"
USERS = {
    "clerk.li": ("court-clerks", "李明"),  # clerk: reads the judicial channel only
    "auditor.wang": ("audit-office", "王芳"),  # auditor: reads every channel
    "court.zhao": ("court", "赵法官"),  # the court institution: every channel
    "lender.acme": ("acme-lending", "Acme"),  # lender: scoped reads only -> no explorer
    "ghost": ("no-such-org", ""),  # org unknown to the network
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write_accounts(data_dir: Path, users: dict[str, tuple[str, str]] = USERS) -> None:
    AccountFile(accounts_path(data_dir)).save(
        {
            name: Account(name, org, hash_password(PASSWORD, n=TEST_N), display)
            for name, (org, display) in users.items()
        }
    )


@dataclass
class Site:
    app: FastAPI
    explorer: Explorer
    backend: FakeBackend
    clock: FakeClock
    data_dir: Path
    clients: list[TestClient] = field(default_factory=list)

    def client(self) -> TestClient:
        c = TestClient(self.app, base_url="http://testserver")
        self.clients.append(c)
        return c

    def audit_lines(self) -> list[dict[str, Any]]:
        import json

        path = self.data_dir / "explorer" / "audit.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def make_site(tmp_path: Path, **settings: Any) -> Site:
    clock = FakeClock()
    backend = FakeBackend(tmp_path)
    write_accounts(tmp_path)
    app = FastAPI()
    explorer = mount_explorer(app, backend, ExplorerSettings(clock_s=clock, **settings))
    return Site(app, explorer, backend, clock, tmp_path)


def login_token(client: TestClient) -> str:
    r = client.get("/explorer/login")
    assert r.status_code == 200
    m = re.search(r'name="csrf_token" value="([^"]+)"', r.text)
    assert m is not None
    return m.group(1)


def sign_in(
    client: TestClient, user: str, password: str = PASSWORD, nxt: str = "/explorer/"
) -> Any:
    token = login_token(client)
    return client.post(
        "/explorer/login",
        data={"username": user, "password": password, "csrf_token": token, "next": nxt},
        follow_redirects=False,
    )


def session_csrf(client: TestClient) -> str:
    """The signed-in session's CSRF token (from any page's sign-out form)."""
    r = client.get("/explorer/")
    m = re.search(r'name="csrf_token" value="([^"]+)"', r.text)
    assert m is not None, r.text[:500]
    return m.group(1)


def commitment_hex(record: bytes, salt: bytes) -> str:
    return tagged_hash(TAG_RECORD, salt + record).hex()
