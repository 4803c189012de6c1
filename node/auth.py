"""Authentication of client requests (see :mod:`ledger.request_auth` for the message).

The node accepts a request iff: the five headers parse; the time is within
:data:`ledger.request_auth.MAX_SKEW_MS` of the node's clock; the ``(org, nonce)`` pair
was not seen within the window; the key is an active key of the org (from the
channel's governance registry — genesis plus committed changes — or, for the pseudo-
role ``node``, a genesis node's key); and the signature verifies.

Replay memory is bounded: at most ``capacity`` nonces are remembered. When full, the
org holding the most entries forgets its oldest-timed one, and *that org's* watermark
rises to its time: the org's requests signed at or before its watermark are then
refused as stale, so a forgotten nonce can never be replayed. An org that floods the
node (say with requests signed minutes ahead, which the time window allows) evicts
only its own entries and raises only its own watermark: until session 27 the memory
and its watermark were shared, and one flooding org locked every other org out.
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
    """Bounded memory of ``(org, nonce)`` pairs seen within the time window, with a
    watermark per org (module docstring)."""

    def __init__(self, capacity: int, window_ms: int = MAX_SKEW_MS) -> None:
        self._capacity = capacity
        self._window = window_ms
        #: per org: nonce -> signing time, and the same as a heap by time
        self._seen: dict[str, dict[bytes, int]] = {}
        self._heaps: dict[str, list[tuple[int, bytes]]] = {}
        self._size = 0
        self._watermarks: dict[str, int] = {}

    def __len__(self) -> int:
        return self._size

    def watermark(self, org: str) -> int:
        """The org's requests signed at or before this time are refused (-1: none)."""
        return self._watermarks.get(org, -1)

    def check_and_add(self, org: str, nonce: bytes, time_ms: int, now_ms: int) -> str | None:
        """Record the pair; return None if fresh, else ``"stale_request"`` or
        ``"replayed_request"`` (nothing recorded then)."""
        self._expire(org, now_ms)
        if time_ms <= self.watermark(org):
            return "stale_request"
        seen = self._seen.setdefault(org, {})
        if nonce in seen:
            return "replayed_request"
        seen[nonce] = time_ms
        heapq.heappush(self._heaps.setdefault(org, []), (time_ms, nonce))
        self._size += 1
        while self._size > self._capacity:
            self._forget_oldest(max(self._seen, key=lambda o: len(self._seen[o])))
        return None

    def _forget_oldest(self, org: str) -> None:
        """Forget ``org``'s oldest-timed entry and raise its watermark to that time."""
        t, nonce = heapq.heappop(self._heaps[org])
        self._remove(org, nonce)
        self._watermarks[org] = max(self.watermark(org), t)

    def _expire(self, org: str, now_ms: int) -> None:
        """Drop ``org``'s entries older than the window (their requests fail the time
        check anyway), without raising its watermark. Other orgs' old entries go when
        they call, or first when the memory is full."""
        heap = self._heaps.get(org)
        limit = now_ms - self._window - 1
        while heap and heap[0][0] < limit:
            _, nonce = heapq.heappop(heap)
            self._remove(org, nonce)

    def _remove(self, org: str, nonce: bytes) -> None:
        seen = self._seen[org]
        del seen[nonce]
        self._size -= 1
        if not seen:
            del self._seen[org], self._heaps[org]


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
