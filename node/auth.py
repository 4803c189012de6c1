"""Authentication of client requests (see :mod:`ledger.request_auth` for the message).

The node accepts a request iff: the five headers parse; the time is within
:data:`ledger.request_auth.MAX_SKEW_MS` of the node's clock; the ``(org, nonce)`` pair
was not seen within the window; the key is an active key of the org (from the
channel's governance registry — genesis plus committed changes — or, for the pseudo-
role ``node``, a genesis node's key); and the signature verifies.

Replay memory is bounded: at most ``capacity`` nonces are remembered. When full, the
oldest-timed entry is forgotten and the *watermark* rises to its time: requests signed
at or before the watermark are then refused as stale, so a forgotten nonce can never be
replayed.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ledger.crypto import ED25519, SignatureScheme
from ledger.request_auth import (
    MAX_SKEW_MS,
    RequestAuthError,
    SignedRequest,
    parse_auth_headers,
    verify_request_signature,
)
from node.errors import ApiError

#: Role given to genesis nodes authenticating with their node key.
NODE_ROLE = "node"


@dataclass(frozen=True)
class Caller:
    """An authenticated caller."""

    org: str
    role: str
    public_key: bytes


class NonceCache:
    """Bounded memory of ``(org, nonce)`` pairs seen within the time window."""

    def __init__(self, capacity: int, window_ms: int = MAX_SKEW_MS) -> None:
        self._capacity = capacity
        self._window = window_ms
        self._seen: dict[tuple[str, bytes], int] = {}
        self._heap: list[tuple[int, str, bytes]] = []
        self.watermark = -1

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_add(self, org: str, nonce: bytes, time_ms: int, now_ms: int) -> str | None:
        """Record the pair; return None if fresh, else an error code."""
        self._expire(now_ms)
        if time_ms <= self.watermark:
            return "stale_request"
        key = (org, nonce)
        if key in self._seen:
            return "replayed_request"
        self._seen[key] = time_ms
        heapq.heappush(self._heap, (time_ms, org, nonce))
        while len(self._seen) > self._capacity:
            t, o, n = heapq.heappop(self._heap)
            if self._seen.get((o, n)) == t:
                del self._seen[(o, n)]
                self.watermark = max(self.watermark, t)
        return None

    def _expire(self, now_ms: int) -> None:
        limit = now_ms - self._window - 1
        while self._heap and self._heap[0][0] < limit:
            t, o, n = heapq.heappop(self._heap)
            if self._seen.get((o, n)) == t:
                del self._seen[(o, n)]


#: ``(org, public_key) -> role`` if the key is active for the org now, else None.
KeyResolver = Callable[[str, bytes], str | None]


class Authenticator:
    """Checks request headers; raises :class:`ApiError` with a 401 code on failure."""

    def __init__(
        self,
        *,
        network: bytes,
        capacity: int,
        clock_ms: Callable[[], int],
        scheme: SignatureScheme = ED25519,
    ) -> None:
        self._network = network
        self._clock = clock_ms
        self._scheme = scheme
        self.nonces = NonceCache(capacity)

    def authenticate(
        self,
        headers: Mapping[str, str],
        *,
        method: str,
        path: str,
        body: bytes,
        resolve: KeyResolver,
    ) -> Caller:
        try:
            req: SignedRequest = parse_auth_headers(headers)
        except RequestAuthError as exc:
            raise ApiError(401, "unauthenticated", exc.message) from None
        now = self._clock()
        if abs(req.time_ms - now) > MAX_SKEW_MS:
            raise ApiError(
                401,
                "stale_request",
                f"request time is {(req.time_ms - now) / 1000:+.0f} s from the node's clock "
                f"(allowed ±{MAX_SKEW_MS // 1000} s)",
            )
        role = resolve(req.org, req.public_key)
        if role is None:
            raise ApiError(
                401, "unknown_key", f"the key is not an active key of organisation {req.org!r}"
            )
        try:
            verify_request_signature(
                req, network=self._network, method=method, path=path, body=body,
                scheme=self._scheme,
            )  # fmt: skip
        except RequestAuthError as exc:
            raise ApiError(401, "bad_signature", exc.message) from None
        problem = self.nonces.check_and_add(req.org, req.nonce, req.time_ms, now)
        if problem == "replayed_request":
            raise ApiError(401, problem, "this request (org, nonce) was already used")
        if problem is not None:
            raise ApiError(401, problem, "request is older than the node's replay memory")
        return Caller(req.org, role, req.public_key)
