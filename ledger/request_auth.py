"""Request signing: how a client proves who sends an HTTP request to a node.

Pure and shared: the SDK signs with it, the node checks with it. Every request to a
node's client API (``/v1/...``) carries five headers::

    X-Wulian-Org        the calling organisation's id (e.g. ``lender7``)
    X-Wulian-Key        the hex public key it signs with (one of the org's active keys)
    X-Wulian-Time       the signing time, integer milliseconds since the Unix epoch
    X-Wulian-Nonce      16–64 hex digits, fresh for every request
    X-Wulian-Signature  hex ed25519 signature

The signature is over :func:`request_message` under the tag
:data:`ledger.hashing.TAG_REQUEST`: the canonical encoding of ::

    {"v": 1, "net": <genesis hash>, "org": <org id>, "m": <METHOD>,
     "path": <path with query, exactly as sent>, "t": <time ms>,
     "nonce": <nonce bytes>, "body": SHA-256(<body bytes>)}

so a signature binds the network, the caller, the exact request line and body, and a
moment. The node additionally checks that the key is active for the org, that the time
is within :data:`MAX_SKEW_MS` of its clock and that the nonce was not used before
inside that window (replay protection).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ledger.crypto import ED25519, SignatureScheme, Signer
from ledger.encoding import encode
from ledger.errors import LedgerError
from ledger.hashing import TAG_REQUEST, sha256
from ledger.schema import is_decimal, is_name

HEADER_ORG: Final = "X-Wulian-Org"
HEADER_KEY: Final = "X-Wulian-Key"
HEADER_TIME: Final = "X-Wulian-Time"
HEADER_NONCE: Final = "X-Wulian-Nonce"
HEADER_SIGNATURE: Final = "X-Wulian-Signature"
AUTH_HEADERS: Final = (HEADER_ORG, HEADER_KEY, HEADER_TIME, HEADER_NONCE, HEADER_SIGNATURE)

#: A request signed further than this from the node's clock is refused.
MAX_SKEW_MS: Final = 5 * 60 * 1000
NONCE_MIN_BYTES: Final = 8
NONCE_MAX_BYTES: Final = 32


class RequestAuthError(LedgerError):
    """The request's authentication headers are missing, malformed or do not verify."""

    code = "unauthenticated"


@dataclass(frozen=True)
class SignedRequest:
    """The authentication fields of one request, parsed from its headers."""

    org: str
    public_key: bytes
    time_ms: int
    nonce: bytes
    signature: bytes


def request_message(
    network: bytes,
    org: str,
    method: str,
    path: str,
    time_ms: int,
    nonce: bytes,
    body: bytes,
) -> bytes:
    """The exact bytes a request signature covers (see the module docstring).

    ``path`` is the request target as sent: path plus ``?query`` if any, percent-encoded
    exactly as on the wire. ``method`` is upper-cased.
    """
    return encode(
        {
            "v": 1,
            "net": network,
            "org": org,
            "m": method.upper(),
            "path": path,
            "t": time_ms,
            "nonce": nonce,
            "body": sha256(body),
        }
    )


def sign_request(
    signer: Signer,
    *,
    network: bytes,
    org: str,
    method: str,
    path: str,
    body: bytes,
    time_ms: int,
    nonce: bytes,
) -> dict[str, str]:
    """Return the five authentication headers for a request (the caller supplies the
    clock and a fresh random nonce: this module does no I/O)."""
    if not NONCE_MIN_BYTES <= len(nonce) <= NONCE_MAX_BYTES:
        raise RequestAuthError(f"nonce must be {NONCE_MIN_BYTES}–{NONCE_MAX_BYTES} bytes")
    message = request_message(network, org, method, path, time_ms, nonce, body)
    return {
        HEADER_ORG: org,
        HEADER_KEY: signer.public_key.hex(),
        HEADER_TIME: str(time_ms),
        HEADER_NONCE: nonce.hex(),
        HEADER_SIGNATURE: signer.sign(TAG_REQUEST, message).hex(),
    }


def _hex(value: str, name: str, lo: int, hi: int) -> bytes:
    if len(value) > 2 * hi:
        raise RequestAuthError(f"header {name}: too long")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise RequestAuthError(f"header {name}: not hexadecimal") from None
    if not lo <= len(raw) <= hi:
        raise RequestAuthError(
            f"header {name}: expected {lo}" + (f"–{hi}" if hi != lo else "") + " bytes"
        )
    return raw


def parse_auth_headers(headers: Mapping[str, str]) -> SignedRequest:
    """Parse the authentication headers (looked up case-insensitively by the caller's
    mapping, e.g. Starlette's ``Headers``). Raises :class:`RequestAuthError` naming the
    first missing or malformed header."""
    values: dict[str, str] = {}
    for name in AUTH_HEADERS:
        value = headers.get(name)
        if value is None:
            raise RequestAuthError(f"missing header {name}")
        values[name] = value.strip()
    org = values[HEADER_ORG]
    if not is_name(org):
        raise RequestAuthError(f"header {HEADER_ORG}: not a valid organisation id")
    time_text = values[HEADER_TIME]
    if not is_decimal(time_text) or len(time_text) > 16:
        raise RequestAuthError(f"header {HEADER_TIME}: expected integer milliseconds")
    return SignedRequest(
        org=org,
        public_key=_hex(values[HEADER_KEY], HEADER_KEY, 32, 32),
        time_ms=int(time_text),
        nonce=_hex(values[HEADER_NONCE], HEADER_NONCE, NONCE_MIN_BYTES, NONCE_MAX_BYTES),
        signature=_hex(values[HEADER_SIGNATURE], HEADER_SIGNATURE, 64, 64),
    )


def verify_request_signature(
    request: SignedRequest,
    *,
    network: bytes,
    method: str,
    path: str,
    body: bytes,
    scheme: SignatureScheme = ED25519,
) -> None:
    """Raise :class:`RequestAuthError` unless ``request.signature`` is ``request``'s key's
    signature over this request. Whether the key belongs to the org, the time window and
    nonce reuse are the node's checks."""
    message = request_message(
        network, request.org, method, path, request.time_ms, request.nonce, body
    )
    if not scheme.verify(request.public_key, TAG_REQUEST, message, request.signature):
        raise RequestAuthError("request signature does not verify")
