"""Borrower references, computed in the lender's process from the bureau's pseudonym key.

``borrower_ref = HMAC-SHA256(pseudonym key, normalised resident ID number)``
(:func:`channels.pseudonym.borrower_ref`; normalisation: spaces and hyphens removed,
``x`` upper-cased, 18 characters with a valid GB 11643 check character). The raw ID
number is an argument of :meth:`PseudonymKey.borrower_ref` and nothing else: the SDK
never sends it, stores it, logs it or puts it in an error message.

Pseudonym key file (issued by the bureau to an admitted lender; mode 0600)::

    {"type": "wulian-pseudonym-key", "version": 1, "key": "<64 hex>"}
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from channels.pseudonym import MIN_KEY_SIZE, borrower_ref, normalise_id_number
from ledger.errors import ConfigError

PSEUDONYM_KEY_TYPE: Final = "wulian-pseudonym-key"


@dataclass(frozen=True)
class PseudonymKey:
    """The network's borrower pseudonym key (a secret: never sent to a node)."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) < MIN_KEY_SIZE:
            raise ConfigError("pseudonym key", "key", f"must be at least {MIN_KEY_SIZE} bytes")

    def borrower_ref(self, id_number: str) -> bytes:
        """The 32-byte borrower reference of a resident ID number.

        Raises :class:`~ledger.errors.SchemaError` (without echoing the number) if it is
        not 17 digits and a valid check character once normalised.
        """
        return borrower_ref(self.key, id_number)

    @staticmethod
    def generate() -> PseudonymKey:
        return PseudonymKey(secrets.token_bytes(32))


def is_id_number(text: str) -> bool:
    """True if ``text`` normalises to a valid resident ID number (used to refuse raw ID
    numbers inside records)."""
    if not 15 <= len(text) <= 40:
        return False
    try:
        normalise_id_number(text)
    except Exception:
        return False
    return True


def write_pseudonym_key_file(path: str | os.PathLike[str], key: PseudonymKey) -> None:
    """Create ``path`` (mode 0600) holding ``key``. Raises :class:`ConfigError` if it
    exists (keys are never overwritten) or cannot be written."""
    p = Path(path)
    doc = {"type": PSEUDONYM_KEY_TYPE, "version": 1, "key": key.key.hex()}
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(str(p), "", "pseudonym key file already exists") from None
    except OSError as exc:
        raise ConfigError(str(p), "", f"cannot create ({exc.strerror})") from None
    try:
        os.write(fd, (json.dumps(doc) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def load_pseudonym_key_file(path: str | os.PathLike[str]) -> PseudonymKey:
    """Load a pseudonym key file. Raises :class:`ConfigError` (one line naming the file
    and field) if it is missing, readable by group/others, or malformed."""
    p = str(path)
    try:
        st = os.stat(p)
    except OSError as exc:
        raise ConfigError(p, "", f"cannot read pseudonym key file ({exc.strerror})") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(
            p, "", f"mode is {stat.S_IMODE(st.st_mode):04o}; key files must be 0600 (chmod 600)"
        )
    try:
        doc = json.loads(Path(p).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(p, "", f"not a JSON key file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("type") != PSEUDONYM_KEY_TYPE:
        raise ConfigError(p, "type", f"expected {PSEUDONYM_KEY_TYPE!r}")
    raw = doc.get("key")
    try:
        key = bytes.fromhex(raw) if isinstance(raw, str) else b""
    except ValueError:
        key = b""
    if len(key) < MIN_KEY_SIZE:
        raise ConfigError(p, "key", f"expected at least {MIN_KEY_SIZE} bytes of hex")
    return PseudonymKey(key)
