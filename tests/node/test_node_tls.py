"""TLS from the network's own CA: certificates, config, and a real five-node HTTPS network.

The network test starts five node processes with ``[tls]`` configs (``wulian up --tls``
layout): transactions commit over TLS peer links; a client that does not trust the
network CA is refused; a client presenting a certificate from another CA is refused
by the node; a TLS connection expecting another node's name is refused (what a peer
link checks before it sends a frame).
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ledger.errors import ConfigError
from node import tls
from node.config import parse_node_config, render_node_config
from tests.node.netfixture import TestNetwork, start_network

pytestmark = pytest.mark.xdist_group("tls-network")

CH = "supervision"
NODES = [("bureau-node", "https://127.0.0.1:7001"), ("risk_centre-node", "https://10.0.0.7:7003")]


# ---------------------------------------------------------------------------- unit


def test_network_ca_and_node_certificates(tmp_path: Path) -> None:
    ca = tls.ensure_network_tls(tmp_path, "net-a", NODES)
    d = tmp_path / "tls"
    assert ca == d / "ca.crt"
    for name in ("ca.key", "bureau-node.key", "risk_centre-node.key"):
        assert os.stat(d / name).st_mode & 0o777 == 0o600, name
    files = tls.node_tls_files(tmp_path, "risk_centre-node")
    tls.check_tls_files(files, "risk_centre-node")
    assert tls.cert_node_id(files.cert_file) == "risk_centre-node"
    # the certificate names the node, not another one
    with pytest.raises(ConfigError, match="does not name node 'bureau-node'"):
        tls.check_tls_files(files, "bureau-node")
    # re-running reuses everything (same CA, same certificates)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    tls.ensure_network_tls(tmp_path, "net-a", NODES)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


def test_tls_key_must_be_private_and_match(tmp_path: Path) -> None:
    tls.ensure_network_tls(tmp_path, "net-a", NODES)
    files = tls.node_tls_files(tmp_path, "bureau-node")
    os.chmod(files.key_file, 0o644)
    with pytest.raises(ConfigError, match="readable by its owner only"):
        tls.check_tls_files(files, "bureau-node")
    os.chmod(files.key_file, 0o600)
    other = tls.node_tls_files(tmp_path, "risk_centre-node")
    with pytest.raises(ConfigError, match="does not match"):
        tls.check_tls_files(tls.TlsFiles(files.cert_file, other.key_file, files.ca_file), "x")


def test_certificate_request_is_signed_for_its_key(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    tls.make_ca(tmp_path / "ca", "net-a")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "court-node")]))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "court.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    out = tmp_path / "out"
    out.mkdir()
    cert_path = tls.sign_request(
        tmp_path / "ca", tmp_path / "court.csr", "court-node", ["court.example"], out
    )
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.public_key() == key.public_key()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"court-node.node.wulian", "court.example"} <= set(san.get_values_for_type(x509.DNSName))
    assert not (out / "court-node.key").exists()  # the key stays with the institution
    (tmp_path / "bad.csr").write_text("not a request")
    with pytest.raises(ConfigError, match="not a PEM certificate request"):
        tls.sign_request(tmp_path / "ca", tmp_path / "bad.csr", "court-node", [], out)


def test_config_tls_section(tmp_path: Path) -> None:
    text = render_node_config(
        node_id="bureau-node", key_file="k.key", genesis_file="g.json", data_dir=".",
        host="127.0.0.1", port=7001, tls=("t/b.crt", "t/b.key", "t/ca.crt"),
    )  # fmt: skip
    import tomllib

    cfg = parse_node_config(tomllib.loads(text), tmp_path / "node.toml")
    assert cfg.tls == tls.TlsFiles(
        tmp_path / "t/b.crt", tmp_path / "t/b.key", tmp_path / "t/ca.crt"
    )
    doc = tomllib.loads(text)
    del doc["tls"]["ca_file"]
    with pytest.raises(ConfigError, match=r"tls\.ca_file: missing field"):
        parse_node_config(doc, tmp_path / "node.toml")
    doc = tomllib.loads(text)
    doc["tls"]["cert_file"] = " "
    with pytest.raises(ConfigError, match=r"tls\.cert_file: must not be empty"):
        parse_node_config(doc, tmp_path / "node.toml")


def test_cli_genesis_tls_and_tls_cert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ledger.genesis import load_genesis
    from node.cli import main

    out = tmp_path / "net"
    assert main(["genesis", "--out", str(out), "--tls", "--base-port", "7201"]) == 0
    genesis = load_genesis(out / "genesis.json")
    assert all(n.address.startswith("https://127.0.0.1:72") for n in genesis.nodes)
    for n in genesis.nodes:
        tls.check_tls_files(tls.node_tls_files(out, n.node_id), n.node_id)
    assert "network CA" in capsys.readouterr().out
    # --tls belongs to --out; a plain rerun on a TLS directory is refused (addresses differ)
    assert main(["genesis", "--check", str(out / "genesis.json"), "--tls"]) == 1
    assert main(["genesis", "--out", str(out), "--base-port", "7201"]) == 1
    assert "https://127.0.0.1:7201, not http://" in capsys.readouterr().err
    # the coordinator issues a certificate for a node joining later
    certs = tmp_path / "certs"
    certs.mkdir()
    args = ["tls-cert", "--ca-dir", str(out / "tls"), "--node", "late-node"]
    assert main([*args, "--host", "late.example", "--out", str(certs)]) == 0
    files = tls.TlsFiles(certs / "late-node.crt", certs / "late-node.key", out / "tls" / "ca.crt")
    tls.check_tls_files(files, "late-node")
    assert main([*args, "--out", str(tmp_path / "missing")]) == 1
    assert "is not a directory" in capsys.readouterr().err


# ---------------------------------------------------------------------------- network


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestNetwork]:
    network = start_network(tmp_path_factory.mktemp("tlsnet"), tls=True)
    try:
        yield network
    finally:
        codes = network.stop()
        assert all(c == 0 for c in codes.values()), codes


@pytest.mark.network
def test_tls_network_commits_over_https(net: TestNetwork) -> None:
    assert all(n.url.startswith("https://127.0.0.1:") for n in net.nodes)
    lender = net.client(2, "lender1")
    txs = [lender.tx(CH, "loan_event", {"k": f"tls-{i}", "v": i}) for i in range(5)]
    r = lender.submit_batch(CH, txs, wait_ms=30_000)
    assert r.status_code == 200, r.text
    assert all(x["status"] == "committed" for x in r.json()["results"]), r.text
    height = max(x["height"] for x in r.json()["results"])
    net.wait_heights(CH, height, timeout_s=60)
    hashes = {net.client(i, "bureau").block(CH, height)["hash"]["$hex"] for i in range(5)}
    assert len(hashes) == 1
    # every peer link comes up (frames go over TLS). A link may be between retries when
    # the batch commits (a handshake timing out on a loaded machine marks it down until
    # the next frame, at most BACKOFF_MAX_S later), so poll rather than sample once.
    for i in range(5):
        deadline = time.monotonic() + 30.0
        while True:
            text = net.metrics_text(i)
            up = [ln for ln in text.splitlines() if ln.startswith("wulian_peer_up{")]
            if len(up) == 4 and all(ln.endswith((" 1", " 1.0")) for ln in up):
                break
            assert time.monotonic() < deadline, up
            lender.submit_batch(CH, [lender.tx(CH, "loan_event", {"k": f"tls-up-{i}", "v": 0})])
            time.sleep(0.5)


@pytest.mark.network
def test_client_without_the_network_ca_is_refused(net: TestNetwork) -> None:
    url = net.nodes[0].url + "/healthz"
    with httpx.Client(timeout=10.0) as plain, pytest.raises(httpx.ConnectError, match="CERT"):
        plain.get(url)  # the system trust store does not know the network CA
    with httpx.Client(timeout=10.0, verify=net.http_verify()) as good:
        assert good.get(url).status_code == 200
    # plain HTTP to the TLS port gets nowhere either
    with httpx.Client(timeout=10.0) as plain, pytest.raises(httpx.TransportError):
        plain.get(url.replace("https://", "http://"))


@pytest.mark.network
def test_certificate_from_another_ca_is_refused(net: TestNetwork, tmp_path: Path) -> None:
    # A rogue "bureau-node" with a certificate from its own CA.
    tls.ensure_network_tls(tmp_path, "rogue", [("bureau-node", net.nodes[0].url)])
    rogue = tls.node_tls_files(tmp_path, "bureau-node")
    assert net.ca_file is not None
    ctx = tls.client_context(net.ca_file, rogue)  # trusts the real CA, presents the rogue cert
    with httpx.Client(timeout=10.0, verify=ctx) as client, pytest.raises(httpx.TransportError):
        client.get(net.nodes[1].url + "/healthz")
    # the same client with the real node certificate is accepted
    real = tls.node_tls_files(net.data_dir, net.nodes[0].node_id)
    with httpx.Client(timeout=10.0, verify=tls.client_context(net.ca_file, real)) as client:
        assert client.get(net.nodes[1].url + "/healthz").status_code == 200
    # and a node trusting only the rogue CA refuses the real nodes' certificates
    rogue_ctx = tls.client_context(rogue.ca_file, rogue)
    with httpx.Client(timeout=10.0, verify=rogue_ctx) as client, pytest.raises(httpx.ConnectError):
        client.get(net.nodes[1].url + "/healthz")


@pytest.mark.network
def test_peer_certificate_must_name_the_dialled_node(net: TestNetwork) -> None:
    """A peer link dials with the TLS server name of the node it expects: a node at that
    address holding another node's (valid) certificate is refused in the handshake."""
    assert net.ca_file is not None
    me = tls.node_tls_files(net.data_dir, net.nodes[0].node_id)
    ctx = tls.client_context(net.ca_file, me)
    url = net.nodes[1].url + "/healthz"
    with httpx.Client(timeout=10.0, verify=ctx) as client:
        ok = client.get(url, extensions={"sni_hostname": tls.node_tls_name(net.nodes[1].node_id)})
        assert ok.status_code == 200
    with httpx.Client(timeout=10.0, verify=ctx) as client:
        with pytest.raises(httpx.ConnectError) as info:
            client.get(url, extensions={"sni_hostname": tls.node_tls_name(net.nodes[2].node_id)})
        assert isinstance(info.value.__cause__ or info.value.__context__, Exception)
        assert "mismatch" in str(info.value) or "CERTIFICATE_VERIFY_FAILED" in str(info.value)


def test_peer_context_checks_names_and_trusts_only_the_ca(tmp_path: Path) -> None:
    ca = tls.ensure_network_tls(tmp_path, "net-a", NODES)
    ctx = tls.client_context(ca, tls.node_tls_files(tmp_path, "bureau-node"))
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    assert len(ctx.get_ca_certs()) == 1  # the network CA, not the system store
