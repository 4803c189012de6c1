"""Explorer accounts: people (court clerks, bureau auditors) who sign in to a node's
explorer, each acting for one organisation of the network.

The accounts file is ``<data_dir>/explorer/accounts.json`` (mode 0600), written by
``wulian explorer add-user`` and read by the running node (re-read when it changes)::

    {"version": 1,
     "accounts": [{"username": "clerk.li", "org": "court-clerks",
                   "name": "Li Ming", "password": "scrypt$16384$8$1$<salt hex>$<hash hex>",
                   "disabled": false, "created_ms": 1700000000000}, ...]}

An account holds no permissions of its own: the org's role (from the genesis or as
registered by governance) decides which channels its holder may read.

Passwords are hashed with scrypt (RFC 7914, :func:`hashlib.scrypt`) with a random
16-byte salt per user; the cost parameters are stored with each hash so they can be
raised later without invalidating old hashes.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ledger.errors import ConfigError, LedgerError
from node.explorer.port import Account

ACCOUNTS_VERSION: Final = 1
EXPLORER_DIR: Final = "explorer"
ACCOUNTS_FILE: Final = "accounts.json"
AUDIT_FILE: Final = "audit.jsonl"

SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
SCRYPT_DKLEN: Final = 32
#: Upper bounds accepted when *reading* a hash (a crafted file must not make a sign-in
#: allocate gigabytes).
_MAX_N: Final = 2**20
_MAX_RP: Final = 64
MIN_PASSWORD_CHARS: Final = 10
MAX_PASSWORD_CHARS: Final = 1024
MAX_ACCOUNTS_BYTES: Final = 4 * 1024 * 1024

_USERNAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")


class AccountError(LedgerError):
    """A bad username, password or accounts file."""

    code = "bad_account"


def valid_username(name: str) -> bool:
    """1–64 chars of ``a-z 0-9 . _ @ -``, starting with a letter or digit."""
    return _USERNAME_RE.fullmatch(name) is not None


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """``scrypt$N$r$p$<salt hex>$<hash hex>`` of ``password`` with a fresh random salt."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, n, r, p)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=256 * r * n * p + 1024 * 1024,
        dklen=SCRYPT_DKLEN,
    )


def _parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
    except ValueError:
        return None
    if n < 2 or n & (n - 1) or n > _MAX_N or not 1 <= r <= _MAX_RP or not 1 <= p <= _MAX_RP:
        return None
    if len(salt) < 8 or len(digest) != SCRYPT_DKLEN:
        return None
    return n, r, p, salt, digest


def verify_password(password: str, stored: str) -> bool:
    """True iff ``password`` hashes to ``stored`` (constant-time compare). A malformed
    ``stored`` never verifies."""
    parsed = _parse_hash(stored)
    if parsed is None or len(password) > MAX_PASSWORD_CHARS:
        return False
    n, r, p, salt, digest = parsed
    return hmac.compare_digest(_scrypt(password, salt, n, r, p), digest)


#: Verified against when the username is unknown, so that answering takes as long.
_DUMMY_HASH: Final = f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${'00' * 16}${'00' * SCRYPT_DKLEN}"


def burn_password_check(password: str) -> None:
    """Spend the time of one password check (for unknown users)."""
    verify_password(password, _DUMMY_HASH)


def check_new_password(password: str) -> None:
    """Raises :class:`AccountError` unless ``password`` is acceptable for a new account."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise AccountError(f"the password must have at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise AccountError(f"the password must have at most {MAX_PASSWORD_CHARS} characters")


def accounts_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / EXPLORER_DIR / ACCOUNTS_FILE


def audit_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / EXPLORER_DIR / AUDIT_FILE


def _account_from_doc(doc: Any, where: str, path: str) -> Account:
    if not isinstance(doc, dict):
        raise ConfigError(path, where, "expected an object")
    known = {"username", "org", "name", "password", "disabled", "created_ms"}
    extra = set(doc) - known
    if extra:
        raise ConfigError(path, f"{where}.{sorted(extra)[0]}", "unknown field")
    username, org, pw = doc.get("username"), doc.get("org"), doc.get("password")
    if not isinstance(username, str) or not valid_username(username):
        raise ConfigError(path, f"{where}.username", "not a valid username")
    if not isinstance(org, str) or not org:
        raise ConfigError(path, f"{where}.org", "expected an org id")
    if not isinstance(pw, str) or _parse_hash(pw) is None:
        raise ConfigError(path, f"{where}.password", "not a scrypt password hash")
    name = doc.get("name", "")
    disabled = doc.get("disabled", False)
    created = doc.get("created_ms", 0)
    if not isinstance(name, str) or not isinstance(disabled, bool):
        raise ConfigError(path, where, "name must be a string and disabled a boolean")
    if not isinstance(created, int) or isinstance(created, bool):
        raise ConfigError(path, f"{where}.created_ms", "expected an integer")
    return Account(username, org, pw, name, disabled, created)


def _account_to_doc(a: Account) -> dict[str, Any]:
    return {
        "username": a.username,
        "org": a.org_id,
        "name": a.display_name,
        "password": a.password_hash,
        "disabled": a.disabled,
        "created_ms": a.created_ms,
    }


@dataclass(frozen=True)
class _Snapshot:
    stamp: tuple[int, int, int] | None
    accounts: dict[str, Account]


class AccountFile:
    """The accounts file of one node. Reads are cached and refreshed when the file
    changes (size, mtime, inode), so ``wulian explorer add-user`` takes effect on a
    running node without a restart."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._snap = _Snapshot(None, {})

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def load(self) -> dict[str, Account]:
        """Every account by username. A missing file is no accounts. Raises
        :class:`ConfigError` (one line) for an unreadable or malformed file."""
        p = str(self.path)
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read(MAX_ACCOUNTS_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigError(p, "", f"cannot read accounts file ({exc.strerror})") from None
        if len(raw) > MAX_ACCOUNTS_BYTES:
            raise ConfigError(p, "", f"larger than {MAX_ACCOUNTS_BYTES} bytes")
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(p, "", f"not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("version") != ACCOUNTS_VERSION:
            raise ConfigError(p, "version", f"expected version {ACCOUNTS_VERSION}")
        items = doc.get("accounts")
        if not isinstance(items, list):
            raise ConfigError(p, "accounts", "expected a list")
        out: dict[str, Account] = {}
        for i, item in enumerate(items):
            acc = _account_from_doc(item, f"accounts[{i}]", p)
            if acc.username in out:
                raise ConfigError(p, f"accounts[{i}].username", f"duplicate {acc.username!r}")
            out[acc.username] = acc
        return out

    def find(self, username: str) -> Account | None:
        """The account named ``username`` from the current file (cached). A file that
        became unreadable or malformed keeps the last good contents."""
        stamp = self._stamp()
        with self._lock:
            if stamp != self._snap.stamp:
                try:
                    self._snap = _Snapshot(stamp, self.load())
                except ConfigError:
                    if stamp is None:
                        self._snap = _Snapshot(None, {})
            return self._snap.accounts.get(username)

    @contextlib.contextmanager
    def editing(self) -> Iterator[dict[str, Account]]:
        """Read-modify-write under an exclusive lock (``flock`` on a ``.accounts.lock``
        file beside it), so two concurrent ``wulian explorer`` commands cannot lose each
        other's change: yields the current accounts; saves them when the block ends
        without an exception (nothing is written otherwise). Raises
        :class:`ConfigError` as :meth:`load` and :meth:`save` do."""
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(
                self.path.with_name(f".{self.path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600
            )
        except OSError as exc:
            raise ConfigError(str(self.path), "", f"cannot lock ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            accounts = self.load()
            yield accounts
            self.save(accounts)
        finally:
            os.close(fd)  # releases the lock

    def save(self, accounts: dict[str, Account]) -> None:
        """Write every account atomically (temp file, fsync, rename; mode 0600).
        Raises :class:`ConfigError` on an OS error (the old file is kept)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        doc = {
            "version": ACCOUNTS_VERSION,
            "accounts": [_account_to_doc(accounts[k]) for k in sorted(accounts)],
        }
        data = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise ConfigError(
                str(self.path), "", f"cannot write accounts file ({exc.strerror})"
            ) from None
