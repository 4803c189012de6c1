"""Ed25519 signatures (PyNaCl) behind a small scheme interface.

Everything signed in wulian is signed over ``b"wulian-sig:" + tag + b"\\x00" + message``
so that a signature made for one purpose (a commit vote, a transaction, an HTTP
request) can never be replayed as another.

:class:`SignatureScheme` exists so the deterministic consensus simulator can swap in a
fast keyed-hash stand-in; production code always uses :data:`ED25519`.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final, Protocol

import nacl.bindings
import nacl.exceptions
import nacl.signing

from ledger.errors import SignatureError

PUBLIC_KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
SEED_SIZE: Final = 32


def signing_payload(tag: str, message: bytes) -> bytes:
    """The exact bytes a signature covers for ``(tag, message)``."""
    return b"wulian-sig:" + tag.encode("ascii") + b"\x00" + message


class Signer(Protocol):
    """Something holding a private key."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, tag: str, message: bytes) -> bytes: ...


class SignatureScheme(Protocol):
    """Verification side of a signature scheme."""

    name: str

    def verify(self, public_key: bytes, tag: str, message: bytes, signature: bytes) -> bool:
        """True iff ``signature`` is valid; never raises on malformed input."""
        ...

    def signer_from_seed(self, seed: bytes) -> Signer: ...


@lru_cache(maxsize=4096)
def _verify_key(public_key: bytes) -> nacl.signing.VerifyKey:
    return nacl.signing.VerifyKey(public_key)


@dataclass(frozen=True)
class Ed25519Signer:
    """An ed25519 private key. ``seed`` is the 32-byte secret."""

    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_SIZE:
            raise SignatureError(f"ed25519 seed must be {SEED_SIZE} bytes")

    @property
    def _key(self) -> nacl.signing.SigningKey:
        return _signing_key(self.seed)

    @property
    def public_key(self) -> bytes:
        return bytes(self._key.verify_key)

    def sign(self, tag: str, message: bytes) -> bytes:
        return bytes(self._key.sign(signing_payload(tag, message)).signature)

    @staticmethod
    def generate() -> Ed25519Signer:
        return Ed25519Signer(bytes(nacl.signing.SigningKey.generate()))

    def shared_key(self, peer_public_key: bytes, context: bytes) -> bytes:
        """A 32-byte key that only this key's holder and the holder of the ed25519
        key ``peer_public_key`` can compute: X25519 (RFC 7748) of both keys mapped to
        Curve25519 as libsodium does, hashed with ``context`` (keyed BLAKE2b).
        The same for both sides; ``context`` makes keys for different uses (and
        directions) independent. Raises :class:`SignatureError` if the public key is
        malformed or of small order."""
        try:
            peer = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(peer_public_key)
            _pk, secret_key = nacl.bindings.crypto_sign_seed_keypair(self.seed)
            mine = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(secret_key)
            secret = nacl.bindings.crypto_scalarmult(mine, peer)
        except (nacl.exceptions.CryptoError, RuntimeError, TypeError, ValueError) as exc:
            raise SignatureError(f"cannot agree a key with this public key: {exc}") from None
        if not any(secret):
            raise SignatureError("public key of small order")
        return hashlib.blake2b(context, key=secret, digest_size=32).digest()


@lru_cache(maxsize=256)
def _signing_key(seed: bytes) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(seed)


class Ed25519Scheme:
    """The production scheme."""

    name = "ed25519"

    def verify(self, public_key: bytes, tag: str, message: bytes, signature: bytes) -> bool:
        if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
            return False
        try:
            _verify_key(bytes(public_key)).verify(signing_payload(tag, message), signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
            return False
        return True

    def signer_from_seed(self, seed: bytes) -> Signer:
        return Ed25519Signer(seed)


@dataclass(frozen=True)
class FastSigner:
    """Keyed-hash stand-in signer for the simulator only (NOT a signature scheme).

    The "public key" is a hash of the seed and the "signature" a keyed hash that the
    matching :class:`FastScheme` can recompute because it is handed the seeds.
    """

    seed: bytes = field(repr=False)

    @property
    def public_key(self) -> bytes:
        return hashlib.sha256(b"fast-pk" + self.seed).digest()

    def sign(self, tag: str, message: bytes) -> bytes:
        mac = hmac.new(self.seed, signing_payload(tag, message), hashlib.sha512).digest()
        return mac[:SIGNATURE_SIZE]


class FastScheme:
    """Simulator-only scheme: verifies :class:`FastSigner` tags by recomputation."""

    name = "fast-sim"

    def __init__(self) -> None:
        self._seeds: dict[bytes, bytes] = {}

    def signer_from_seed(self, seed: bytes) -> Signer:
        signer = FastSigner(seed)
        self._seeds[signer.public_key] = seed
        return signer

    def verify(self, public_key: bytes, tag: str, message: bytes, signature: bytes) -> bool:
        seed = self._seeds.get(bytes(public_key))
        if seed is None or len(signature) != SIGNATURE_SIZE:
            return False
        expected = FastSigner(seed).sign(tag, message)
        return hmac.compare_digest(expected, signature)


ED25519: Final = Ed25519Scheme()
