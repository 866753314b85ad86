"""`kvctl cert init`: the files it writes, their modes and names, and that the chains verify."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from kvctl.main import cli

from kvstore.certs import CertificateError, init_certificates
from kvstore.tls import PEER_URI


def certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def alternative_names(cert: x509.Certificate) -> list[x509.GeneralName]:
    return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_a_ca_node_certificates_and_the_root_client_certificate(tmp_path: Path) -> None:
    made = init_certificates(tmp_path / "certs", nodes=3, hosts=["db1.example.com", "10.0.0.7"], days=30)

    written = sorted(p.name for p in (tmp_path / "certs").iterdir())
    assert written == ["ca.crt", "ca.key", "client-root.crt", "client-root.key", "node-1.crt", "node-1.key",
                       "node-2.crt", "node-2.key", "node-3.crt", "node-3.key"]
    for files in (made.ca, made.client, *made.nodes.values()):
        assert mode(files.key) == 0o600, files.key
        assert mode(files.cert) == 0o644, files.cert
    node = certificate(made.nodes[2].cert)
    assert node.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node-2"
    assert set(alternative_names(node)) == {
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
        x509.DNSName("db1.example.com"), x509.IPAddress(ipaddress.ip_address("10.0.0.7")),
        x509.UniformResourceIdentifier(PEER_URI),
    }
    client = certificate(made.client.cert)
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "root"
    assert x509.UniformResourceIdentifier(PEER_URI) not in alternative_names(client)  # no peer mark
    assert (client.not_valid_after_utc - client.not_valid_before_utc).days == 30


def test_the_chains_verify_for_their_purposes(tmp_path: Path) -> None:
    made = init_certificates(tmp_path, nodes=2, hosts=["db1.example.com"])
    store = Store([certificate(made.ca.cert)])
    node = certificate(made.nodes[1].cert)

    for name in (x509.DNSName("localhost"), x509.DNSName("db1.example.com"),
                 x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        chain = PolicyBuilder().store(store).build_server_verifier(name).verify(node, [])
        assert chain[-1] == certificate(made.ca.cert)
    PolicyBuilder().store(store).build_client_verifier().verify(node, [])  # nodes dial peers with it
    PolicyBuilder().store(store).build_client_verifier().verify(certificate(made.client.cert), [])
    with pytest.raises(VerificationError):  # a client certificate cannot serve
        PolicyBuilder().store(store).build_server_verifier(x509.DNSName("localhost")).verify(
            certificate(made.client.cert), [])
    usages = certificate(made.client.cert).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_another_init_is_another_ca(tmp_path: Path) -> None:
    ours = init_certificates(tmp_path / "ours", nodes=1)
    theirs = init_certificates(tmp_path / "theirs", nodes=1)

    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([certificate(ours.ca.cert)])).build_client_verifier().verify(
            certificate(theirs.client.cert), [])


def test_existing_files_are_kept_unless_forced(tmp_path: Path) -> None:
    first = init_certificates(tmp_path, nodes=1)
    before = first.ca.cert.read_bytes()

    with pytest.raises(CertificateError, match="already holds ca.crt, ca.key, node-1.crt and 3 more; pass --force"):
        init_certificates(tmp_path, nodes=1)
    assert first.ca.cert.read_bytes() == before

    init_certificates(tmp_path, nodes=1, force=True)
    assert first.ca.cert.read_bytes() != before
    assert mode(first.ca.key) == 0o600


@pytest.mark.parametrize("host", ["bad host", "-leading.example", "a..b", ""])
def test_a_host_that_is_neither_ip_nor_dns_name_is_refused(tmp_path: Path, host: str) -> None:
    with pytest.raises(CertificateError, match="neither an IP address nor a DNS name"):
        init_certificates(tmp_path / "certs", nodes=1, hosts=[host])
    assert not (tmp_path / "certs").exists()


def test_kvctl_cert_init_says_what_to_do_next_and_refuses_to_overwrite(tmp_path: Path) -> None:
    runner = CliRunner()

    made = runner.invoke(cli, ["cert", "init", str(tmp_path), "--nodes", "2", "--hosts", "a.example,10.1.2.3"])
    again = runner.invoke(cli, ["cert", "init", str(tmp_path)])

    assert made.exit_code == 0, made.output
    assert f"--cert {tmp_path}/node-1.crt --key {tmp_path}/node-1.key --ca {tmp_path}/ca.crt" in made.output
    assert f"KVSTORE_CERT={tmp_path}/client-root.crt" in made.output
    assert x509.DNSName("a.example") in alternative_names(certificate(tmp_path / "node-2.crt"))
    assert again.exit_code == 2
    assert again.output.strip().count("\n") == 0 and "pass --force" in again.output
