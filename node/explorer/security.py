"""Sessions, CSRF tokens and sign-in lockout for the explorer (all in memory).

* **Sessions** are server-side: the browser holds a random 256-bit token in an
  HttpOnly, SameSite=Strict cookie; the table keeps only the token's SHA-256. A session
  ends after ``idle_s`` without a request or ``absolute_s`` after sign-in, on sign-out,
  and when the node restarts. The table is bounded (oldest sessions evicted).
* **CSRF**: each session has its own random token, sent back in a hidden form field or
  the ``X-CSRF-Token`` header of every POST and compared in constant time. The sign-in
  form (no session yet) uses a double-submit token: a random cookie that the form
  must echo.
* **Lockout**: ``max_failures`` failed sign-ins for one username within ``window_s``
  lock that username for ``lock_s`` (whatever the password); the same per client
  address with ``max_ip_failures``. Locked attempts are not checked at all.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

SESSION_COOKIE: Final = "wl_session"
LOGIN_CSRF_COOKIE: Final = "wl_login_csrf"
CSRF_FIELD: Final = "csrf_token"
CSRF_HEADER: Final = "x-csrf-token"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


def tokens_equal(a: str | None, b: str | None) -> bool:
    """Constant-time comparison; ``None`` or empty never equals anything."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


@dataclass
class Session:
    username: str
    org_id: str
    csrf: str
    created_s: float
    last_seen_s: float


@dataclass
class SessionStore:
    """Server-side sessions keyed by the SHA-256 of their token."""

    clock_s: Callable[[], float]
    idle_s: float = 30 * 60
    absolute_s: float = 8 * 3600
    capacity: int = 10_000
    _sessions: OrderedDict[bytes, Session] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self, username: str, org_id: str) -> tuple[str, Session]:
        """A new session; returns ``(token for the cookie, session)``."""
        token = new_token()
        now = self.clock_s()
        sess = Session(username, org_id, new_token(), now, now)
        with self._lock:
            self._sessions[_digest(token)] = sess
            while len(self._sessions) > self.capacity:
                self._sessions.popitem(last=False)
        return token, sess

    def get(self, token: str | None) -> Session | None:
        """The live session of ``token`` (touching it), or None if unknown/expired."""
        if not token:
            return None
        key = _digest(token)
        now = self.clock_s()
        with self._lock:
            sess = self._sessions.get(key)
            if sess is None:
                return None
            if now - sess.last_seen_s > self.idle_s or now - sess.created_s > self.absolute_s:
                del self._sessions[key]
                return None
            sess.last_seen_s = now
            return sess

    def end(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._sessions.pop(_digest(token), None)

    def end_user(self, username: str) -> int:
        """End every session of ``username``; returns how many."""
        with self._lock:
            keys = [k for k, s in self._sessions.items() if s.username == username]
            for k in keys:
                del self._sessions[k]
        return len(keys)

    def __len__(self) -> int:
        return len(self._sessions)


@dataclass
class LoginThrottle:
    """Counts failed sign-ins per username and per client address."""

    clock_s: Callable[[], float]
    max_failures: int = 5
    max_ip_failures: int = 30
    window_s: float = 15 * 60
    lock_s: float = 15 * 60
    capacity: int = 100_000
    _fails: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)
    _locked: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def _keys(username: str, ip: str) -> tuple[str, str]:
        return f"u:{username.lower()}", f"ip:{ip}"

    def locked_until(self, username: str, ip: str) -> float | None:
        """When the lock on ``username`` or ``ip`` ends, or None if neither is locked."""
        now = self.clock_s()
        with self._lock:
            until = None
            for key in self._keys(username, ip):
                t = self._locked.get(key)
                if t is not None and t <= now:
                    del self._locked[key]
                    t = None
                if t is not None:
                    until = t if until is None else max(until, t)
            return until

    def failure(self, username: str, ip: str) -> bool:
        """Record a failed sign-in; True if it locked the username or address."""
        now = self.clock_s()
        locked = False
        with self._lock:
            for key, limit in zip(
                self._keys(username, ip), (self.max_failures, self.max_ip_failures), strict=True
            ):
                q = self._fails.get(key)
                if q is None:
                    q = self._fails[key] = deque()
                self._fails.move_to_end(key)
                q.append(now)
                while q and now - q[0] > self.window_s:
                    q.popleft()
                if len(q) >= limit:
                    self._locked[key] = now + self.lock_s
                    q.clear()
                    locked = True
            while len(self._fails) > self.capacity:
                self._fails.popitem(last=False)
        return locked

    def success(self, username: str) -> None:
        """A successful sign-in clears the username's failures (not the address's)."""
        with self._lock:
            self._fails.pop(self._keys(username, "")[0], None)
