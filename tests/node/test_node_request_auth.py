"""Request signing (ledger.request_auth) and the node's authenticator (node.auth)."""

from __future__ import annotations

import pytest

from ledger.crypto import Ed25519Signer
from ledger.hashing import sha256
from ledger.request_auth import (
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIME,
    RequestAuthError,
    parse_auth_headers,
    request_message,
    sign_request,
    verify_request_signature,
)
from node.auth import Authenticator, NonceCache
from node.errors import ApiError

NET = sha256(b"net")
SIGNER = Ed25519Signer(sha256(b"lender-key"))
NOW = 1_700_000_000_000


def headers(**over: object) -> dict[str, str]:
    kw: dict[str, object] = dict(
        network=NET, org="lender1", method="POST", path="/v1/x?a=1", body=b"{}",
        time_ms=NOW, nonce=b"\x01" * 16,
    )  # fmt: skip
    kw.update(over)
    return sign_request(SIGNER, **kw)  # type: ignore[arg-type]


def resolve(org: str, pk: bytes) -> str | None:
    return "lender" if org == "lender1" and pk == SIGNER.public_key else None


def auth(now: int = NOW, capacity: int = 100) -> Authenticator:
    return Authenticator(network=NET, capacity=capacity, clock_ms=lambda: now)


def check(a: Authenticator, h: dict[str, str], **over: object) -> object:
    kw: dict[str, object] = dict(method="POST", path="/v1/x?a=1", body=b"{}", resolve=resolve)
    kw.update(over)
    return a.authenticate(h, **kw)  # type: ignore[arg-type]


def test_message_binds_every_field() -> None:
    base = request_message(NET, "o", "POST", "/p", 1, b"n" * 8, b"body")
    variants = [
        request_message(sha256(b"other"), "o", "POST", "/p", 1, b"n" * 8, b"body"),
        request_message(NET, "o2", "POST", "/p", 1, b"n" * 8, b"body"),
        request_message(NET, "o", "GET", "/p", 1, b"n" * 8, b"body"),
        request_message(NET, "o", "POST", "/p?x", 1, b"n" * 8, b"body"),
        request_message(NET, "o", "POST", "/p", 2, b"n" * 8, b"body"),
        request_message(NET, "o", "POST", "/p", 1, b"m" * 8, b"body"),
        request_message(NET, "o", "POST", "/p", 1, b"n" * 8, b"body2"),
    ]
    assert len({base, *variants}) == 8
    assert request_message(NET, "o", "post", "/p", 1, b"n" * 8, b"body") == base


def test_good_request_authenticates_once() -> None:
    a = auth()
    caller = check(a, headers())
    assert caller.org == "lender1" and caller.role == "lender"  # type: ignore[attr-defined]
    with pytest.raises(ApiError) as err:
        check(a, headers())
    assert err.value.code == "replayed_request" and err.value.status == 401


@pytest.mark.parametrize(
    ("h_over", "req_over", "code"),
    [
        ({}, {"body": b"{ }"}, "bad_signature"),
        ({}, {"path": "/v1/x?a=2"}, "bad_signature"),
        ({}, {"method": "PUT"}, "bad_signature"),
        ({"network": sha256(b"other")}, {}, "bad_signature"),
        ({"time_ms": NOW - 6 * 60_000}, {}, "stale_request"),
        ({"time_ms": NOW + 6 * 60_000}, {}, "stale_request"),
        ({"org": "lender2"}, {}, "unknown_key"),
    ],
)
def test_bad_requests_are_refused(
    h_over: dict[str, object], req_over: dict[str, object], code: str
) -> None:
    with pytest.raises(ApiError) as err:
        check(auth(), headers(**h_over), **req_over)
    assert err.value.code == code


def test_malformed_headers() -> None:
    good = headers()
    for name, value in [
        (HEADER_TIME, "12.5"),
        (HEADER_NONCE, "zz"),
        (HEADER_NONCE, "00"),
        (HEADER_SIGNATURE, "ab" * 10),
    ]:
        bad = {**good, name: value}
        with pytest.raises(RequestAuthError):
            parse_auth_headers(bad)
        with pytest.raises(ApiError) as err:
            check(auth(), bad)
        assert err.value.code == "unauthenticated"
    missing = {k: v for k, v in good.items() if k != HEADER_TIME}
    with pytest.raises(RequestAuthError, match="missing header"):
        parse_auth_headers(missing)


def test_verify_request_signature_direct() -> None:
    h = headers()
    req = parse_auth_headers(h)
    verify_request_signature(req, network=NET, method="POST", path="/v1/x?a=1", body=b"{}")
    with pytest.raises(RequestAuthError):
        verify_request_signature(req, network=NET, method="POST", path="/v1/x", body=b"{}")


def test_nonce_cache_is_bounded_and_never_forgets_unsafely() -> None:
    cache = NonceCache(capacity=3, window_ms=1000)
    for i in range(3):
        assert cache.check_and_add("o", bytes([i]) * 8, 100 + i, 100) is None
    # full: adding a 4th forgets the oldest (time 100) and raises the watermark to it
    assert cache.check_and_add("o", b"\x09" * 8, 150, 150) is None
    assert len(cache) == 3 and cache.watermark("o") == 100
    # the forgotten nonce cannot be replayed: its time is at/below the watermark
    assert cache.check_and_add("o", b"\x00" * 8, 100, 150) == "stale_request"
    assert cache.check_and_add("o", b"\x01" * 8, 101, 150) == "replayed_request"
    # entries older than the window expire without raising the watermark
    assert cache.check_and_add("o", b"\x0a" * 8, 5000, 5000) is None
    assert len(cache) == 1 and cache.watermark("o") == 100


def test_a_flooding_org_evicts_only_its_own_nonces() -> None:
    """One org signing many requests minutes ahead (the time window allows it) fills
    the memory: the evictions fall on it, and only its watermark rises. Until session
    27 one shared watermark rose to the flood's times and every org was refused."""
    now = 1_000_000
    cache = NonceCache(capacity=10, window_ms=300_000)
    assert cache.check_and_add("court", b"c-0", now, now) is None
    assert cache.check_and_add("bureau", b"b-0", now, now) is None
    for i in range(100):
        assert cache.check_and_add("lender", f"x-{i}".encode(), now + 290_000 + i, now) is None
    assert len(cache) == 10
    assert cache.watermark("lender") == now + 290_000 + 91  # its 92 oldest forgotten
    assert cache.watermark("court") == cache.watermark("bureau") == -1
    # the others are served, and their earlier nonces are still remembered
    assert cache.check_and_add("court", b"c-1", now + 1, now + 1) is None
    assert cache.check_and_add("bureau", b"b-0", now, now + 1) == "replayed_request"
    # the flood's own org is held to its watermark
    assert cache.check_and_add("lender", b"y", now + 2, now + 2) == "stale_request"
