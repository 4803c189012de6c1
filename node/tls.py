"""TLS from the network's own certificate authority.

``wulian genesis --tls`` (and ``wulian up --tls``) make, next to the genesis::

    DIR/tls/ca.key                 the network CA's private key (mode 0600; keep offline)
    DIR/tls/ca.crt                 the CA certificate every node and client trusts
    DIR/tls/<node-id>.key          a node's TLS key (mode 0600)
    DIR/tls/<node-id>.crt          its certificate, signed by the CA

A node certificate names its node twice: the subject CN is the node id, and one DNS
subject-alternative name is :func:`node_tls_name` (``<node-id>.node.wulian``); the
other SANs are the host names / IP addresses clients use to reach it (the host of its
genesis address, plus ``localhost`` and ``127.0.0.1``). The certificate is good for
server and client authentication.

How it is used:

* the node serves HTTPS (uvicorn) with its certificate and asks peers for theirs
  (``CERT_OPTIONAL``: SDK clients present none, but a certificate from another CA
  fails the handshake);
* a peer link verifies the peer against the CA **and** checks the certificate names
  the genesis node it dials (the TLS server name is set to :func:`node_tls_name`,
  so the handshake fails before any frame leaves for an impostor), and presents its own
  certificate;
* SDK clients verify nodes against ``ca.crt`` (``Client(ca_file=…)``, or
  ``DIR/tls/ca.crt`` picked up by ``--network DIR``).

Keys are ECDSA P-256. Errors: :class:`ledger.errors.ConfigError` (one line) for
unreadable, mismatched or group-readable files.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ledger.errors import ConfigError
from node.config import TlsFiles

TLS_DIR: Final = "tls"
CA_KEY: Final = "ca.key"
CA_CERT: Final = "ca.crt"
#: Validity of generated certificates.
CA_DAYS: Final = 3650
NODE_DAYS: Final = 825
#: Host names every node certificate also carries (the local network and health checks).
LOCAL_HOSTS: Final = ("localhost", "127.0.0.1")


def node_tls_name(node_id: str) -> str:
    """The DNS name in a node's certificate that names the node (node ids may hold
    ``_``, which is kept: it is matched exactly, never resolved)."""
    return f"{node_id}.node.wulian"


def tls_dir(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / TLS_DIR


def node_tls_files(data_dir: str | os.PathLike[str], node_id: str) -> TlsFiles:
    d = tls_dir(data_dir)
    return TlsFiles(d / f"{node_id}.crt", d / f"{node_id}.key", d / CA_CERT)


def _write_private(path: Path, data: bytes) -> None:
    """Write a new file readable by its owner only (mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read key ({exc.strerror})") from None
    except ValueError as exc:
        raise ConfigError(str(path), "", f"not a PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(str(path), "", "not an EC private key")
    return key


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read certificate ({exc.strerror})") from None
    except ValueError as exc:
        raise ConfigError(str(path), "", f"not a PEM certificate: {exc}") from None


_CA_USAGE: Final = x509.KeyUsage(
    digital_signature=False, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


def make_ca(directory: str | os.PathLike[str], network: str) -> tuple[Path, Path]:
    """Create ``ca.key`` (0600) and ``ca.crt`` in ``directory`` (created 0700) unless
    both exist (then they are reused). Returns ``(key_path, cert_path)``. Raises
    :class:`ConfigError` if only one of them exists or they do not match."""
    d = Path(directory)
    key_path, cert_path = d / CA_KEY, d / CA_CERT
    if key_path.exists() and cert_path.exists():
        key, cert = _load_key(key_path), _load_cert(cert_path)
        if cert.public_key() != key.public_key():
            raise ConfigError(str(cert_path), "", f"does not match {key_path}")
        return key_path, cert_path
    if key_path.exists() or cert_path.exists():
        raise ConfigError(str(d), "", f"has only one of {CA_KEY} and {CA_CERT}")
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(str(d), "", f"cannot create directory ({exc.strerror})") from None
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, network),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{network} network CA"),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _pem_key(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def _san(node_id: str, hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [x509.DNSName(node_tls_name(node_id))]
    seen: set[str] = {node_tls_name(node_id)}
    for h in hosts:
        if not h or h in seen:
            continue
        seen.add(h)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def issue_node_cert(
    ca_dir: str | os.PathLike[str],
    node_id: str,
    hosts: Sequence[str],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    public_key: ec.EllipticCurvePublicKey | None = None,
) -> Path:
    """Issue ``<node-id>.crt`` in ``out_dir`` (default ``ca_dir``), signed by the CA of
    ``ca_dir``, for ``hosts`` plus :func:`node_tls_name`. Without ``public_key`` a new
    key is written beside it as ``<node-id>.key`` (0600); with one (from an
    institution's certificate request) only the certificate is written. Overwrites an
    existing certificate, never an existing key. Returns the certificate path."""
    ca = Path(ca_dir)
    ca_key, ca_cert = _load_key(ca / CA_KEY), _load_cert(ca / CA_CERT)
    out = Path(out_dir) if out_dir is not None else ca
    cert_path, key_path = out / f"{node_id}.crt", out / f"{node_id}.key"
    if public_key is None:
        if key_path.exists():
            public_key = _load_key(key_path).public_key()
        else:
            new = ec.generate_private_key(ec.SECP256R1())
            _write_private(key_path, _pem_key(new))
            public_key = new.public_key()
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=NODE_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(_san(node_id, [*hosts, *LOCAL_HOSTS]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def sign_request(
    ca_dir: str | os.PathLike[str],
    csr_file: str | os.PathLike[str],
    node_id: str,
    hosts: Sequence[str],
    out_dir: str | os.PathLike[str],
) -> Path:
    """Issue a node certificate for the key of a PEM certificate signing request (an
    institution keeps its TLS key on its own host: ``openssl req -new -newkey ec …``).
    Raises :class:`ConfigError` for an unreadable or badly signed request."""
    p = Path(csr_file)
    try:
        csr = x509.load_pem_x509_csr(p.read_bytes())
    except OSError as exc:
        raise ConfigError(str(p), "", f"cannot read ({exc.strerror})") from None
    except ValueError as exc:
        raise ConfigError(str(p), "", f"not a PEM certificate request: {exc}") from None
    if not csr.is_signature_valid:
        raise ConfigError(str(p), "", "the request's signature does not verify")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError(str(p), "", "the request's key is not an EC key")
    return issue_node_cert(ca_dir, node_id, hosts, out_dir=out_dir, public_key=key)


def address_host(address: str) -> str:
    return urlsplit(address).hostname or ""


def ensure_network_tls(
    data_dir: str | os.PathLike[str], network: str, nodes: Sequence[tuple[str, str]]
) -> Path:
    """Make (or reuse) the CA and one key + certificate per ``(node_id, address)`` in
    ``DATA/tls``. A node whose certificate exists, chains to the CA and names its node
    and host is left alone. Returns the CA certificate path. Raises ConfigError."""
    d = tls_dir(data_dir)
    make_ca(d, network)
    ca_cert = _load_cert(d / CA_CERT)
    for node_id, address in nodes:
        host = address_host(address)
        files = node_tls_files(data_dir, node_id)
        if files.cert_file.exists() and files.key_file.exists():
            cert = _load_cert(files.cert_file)
            if cert.issuer == ca_cert.subject and _names(cert, node_id, host):
                continue
        issue_node_cert(d, node_id, [host])
    return d / CA_CERT


def _names(cert: x509.Certificate, node_id: str, host: str) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    dns = set(san.get_values_for_type(x509.DNSName))
    ips = {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    return node_tls_name(node_id) in dns and (host in dns or host in ips)


def cert_node_id(cert_file: str | os.PathLike[str]) -> str | None:
    """The node a certificate names (its subject CN), or None."""
    cert = _load_cert(Path(cert_file))
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else None


def check_tls_files(files: TlsFiles, node_id: str) -> None:
    """Check a node's TLS files before serving: readable, the key is mode 0600 (no
    group/other access) and matches the certificate, and the certificate names
    ``node_id``. Raises :class:`ConfigError` naming the file."""
    try:
        mode = stat.S_IMODE(files.key_file.stat().st_mode)
    except OSError as exc:
        raise ConfigError(str(files.key_file), "", f"cannot read ({exc.strerror})") from None
    if mode & 0o077:
        raise ConfigError(
            str(files.key_file), "", f"mode {mode:04o}: TLS key must be readable by its owner only"
        )
    key = _load_key(files.key_file)
    cert = _load_cert(files.cert_file)
    _load_cert(files.ca_file)
    if cert.public_key() != key.public_key():
        raise ConfigError(str(files.cert_file), "", f"does not match {files.key_file}")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns = []
    if node_tls_name(node_id) not in dns:
        raise ConfigError(
            str(files.cert_file), "", f"does not name node {node_id!r} ({node_tls_name(node_id)})"
        )


def server_context_kwargs(files: TlsFiles) -> dict[str, object]:
    """uvicorn.Config keyword arguments for serving HTTPS, asking peers for their
    certificate (optional: SDK clients have none; one from another CA is refused)."""
    return {
        "ssl_certfile": str(files.cert_file),
        "ssl_keyfile": str(files.key_file),
        "ssl_ca_certs": str(files.ca_file),
        "ssl_cert_reqs": int(ssl.CERT_OPTIONAL),
    }


def client_context(
    ca_file: str | os.PathLike[str], files: TlsFiles | None = None
) -> ssl.SSLContext:
    """An SSL context that trusts only the network CA (not the system store) and, with
    ``files``, presents the node's certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if files is not None:
        ctx.load_cert_chain(str(files.cert_file), str(files.key_file))
    return ctx
