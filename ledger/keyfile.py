"""Key files: an ed25519 secret in a JSON file readable by its owner only (mode 0600).

Format (``wulian keygen`` writes it)::

    {"type": "wulian-ed25519-key", "version": 1, "org": "bureau",
     "public_key": "<64 hex>", "secret_seed": "<64 hex>"}

Loading refuses a file that group or others can read, so a key that leaked through
loose permissions is noticed rather than used.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.crypto import Ed25519Signer
from ledger.errors import ConfigError

KEY_FILE_TYPE = "wulian-ed25519-key"


@dataclass(frozen=True)
class KeyFile:
    """A loaded key: who it belongs to and the signer."""

    owner: str
    signer: Ed25519Signer

    @property
    def public_key(self) -> bytes:
        return self.signer.public_key


def write_key_file(path: str | os.PathLike[str], owner: str, signer: Ed25519Signer) -> None:
    """Create ``path`` with mode 0600 holding ``signer``'s seed.

    Raises :class:`ConfigError` if the file already exists (keys are never overwritten).
    The file is written to a temporary name, fsynced and renamed, so a crash leaves
    either no key file or a whole one.
    """
    p = Path(path)
    if p.exists():
        raise ConfigError(str(p), "", "key file already exists; refusing to overwrite")
    doc = {
        "type": KEY_FILE_TYPE,
        "version": 1,
        "org": owner,
        "public_key": signer.public_key.hex(),
        "secret_seed": signer.seed.hex(),
    }
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (json.dumps(doc, indent=2) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, p)


def _hex_field(path: str, doc: dict[str, Any], name: str, size: int) -> bytes:
    raw = doc.get(name)
    if not isinstance(raw, str):
        raise ConfigError(path, name, "missing or not a string")
    try:
        value = bytes.fromhex(raw)
    except ValueError:
        raise ConfigError(path, name, "not hexadecimal") from None
    if len(value) != size:
        raise ConfigError(path, name, f"must be {size} bytes ({2 * size} hex digits)")
    return value


def load_key_file(path: str | os.PathLike[str], *, check_mode: bool = True) -> KeyFile:
    """Load a key file.

    Raises :class:`ConfigError` (one line naming file and field) if the file is
    missing, readable by group/others (when ``check_mode``), not JSON, of another
    type, or if its public key does not match its seed.
    """
    p = str(path)
    try:
        st = os.stat(p)
    except OSError as exc:
        raise ConfigError(p, "", f"cannot read key file ({exc.strerror})") from None
    if check_mode and stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(
            p, "", f"mode is {stat.S_IMODE(st.st_mode):04o}; key files must be 0600 (chmod 600)"
        )
    try:
        doc = json.loads(Path(p).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(p, "", f"not a JSON key file ({exc})") from None
    if not isinstance(doc, dict):
        raise ConfigError(p, "", "not a JSON object")
    if doc.get("type") != KEY_FILE_TYPE:
        raise ConfigError(p, "type", f"expected {KEY_FILE_TYPE!r}")
    owner = doc.get("org")
    if not isinstance(owner, str) or not owner:
        raise ConfigError(p, "org", "missing or empty")
    seed = _hex_field(p, doc, "secret_seed", 32)
    public = _hex_field(p, doc, "public_key", 32)
    signer = Ed25519Signer(seed)
    if signer.public_key != public:
        raise ConfigError(p, "public_key", "does not match secret_seed")
    return KeyFile(owner=owner, signer=signer)
