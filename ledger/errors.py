"""The ledger's exception tree.

Every error the pure ledger code raises derives from :class:`LedgerError`, so callers
can catch the family. Errors that describe *bad input* carry a machine-readable
``code`` and a human ``message``; the HTTP layer maps them to 4xx answers and the CLI
to a one-line message and a non-zero exit.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error raised by ``ledger``."""

    code: str = "ledger_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class EncodingError(LedgerError):
    """Bytes are not the canonical encoding of a well-formed value."""

    code = "bad_encoding"


class SchemaError(LedgerError):
    """A decoded value does not have the fields and types its schema requires."""

    code = "bad_schema"


class SignatureError(LedgerError):
    """A signature or public key is malformed or does not verify."""

    code = "bad_signature"


class CertificateError(LedgerError):
    """A commit certificate does not prove what it claims."""

    code = "bad_certificate"


class ProofError(LedgerError):
    """A Merkle inclusion or consistency proof does not verify."""

    code = "bad_proof"


class ConfigError(LedgerError):
    """A key, genesis or config file is malformed.

    ``str()`` is one line naming the file and the field, for CLI output.
    """

    code = "bad_config"

    def __init__(self, path: str, field: str, problem: str) -> None:
        where = f"{path}: {field}" if field else path
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.field = field
        self.problem = problem


class CorruptLedgerError(LedgerError):
    """The block store's contents contradict themselves (broken hash chain, bad root…)."""

    code = "corrupt_ledger"

    def __init__(self, message: str, *, channel: str | None = None, height: int | None = None):
        super().__init__(message)
        self.channel = channel
        self.height = height
