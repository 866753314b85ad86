"""A development certificate authority: `kvctl cert init` and `kvctl cluster up --tls`.

Everything cryptographic is done by the `cryptography` library; this module only decides what
goes into the certificates:

* `ca.crt`/`ca.key`: a self-signed CA that may sign end-entity certificates only (path length 0).
* `node-N.crt`/`node-N.key`: a node's certificate, for serving TLS and for dialling peers
  (extended key usages serverAuth and clientAuth). Its subject alternative names are
  127.0.0.1, localhost, the hosts asked for, and the URI `PEER_URI`, which marks it as a
  peer certificate: the Peer service refuses a caller whose certificate lacks it.
* `client-root.crt`/`client-root.key`: a client certificate (clientAuth only) for the user `root`:
  its common name, and a URI SAN `urn:kvstore:user:root`.

Keys are ECDSA P-256 and are written with mode 0600, certificates with 0644. Existing files
are never overwritten unless `force` is set.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kvstore.tls import PEER_URI

CA_NAME = "ca"
CLIENT_NAME = "client-root"
CLIENT_USER = "root"
USER_URI_PREFIX = "urn:kvstore:user:"  # a client certificate's SAN: RFC 5280 profiles want one
DEFAULT_DAYS = 365
DEFAULT_HOSTS = ("127.0.0.1", "localhost")
_ORGANIZATION = "kvstore development CA"
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


class CertificateError(ValueError):
    """The certificates cannot be made as asked; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    """Where `init_certificates` wrote one certificate and its key."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class ClusterCertificates:
    ca: CertificateFiles
    nodes: dict[int, CertificateFiles]  # node id (1-based) -> its files
    client: CertificateFiles  # CN root


def node_name(node_id: int) -> str:
    return f"node-{node_id}"


def files_in(directory: Path, nodes: int) -> ClusterCertificates:
    """The file names `init_certificates(directory, nodes)` writes."""

    def pair(name: str) -> CertificateFiles:
        return CertificateFiles(directory / f"{name}.crt", directory / f"{name}.key")

    return ClusterCertificates(
        ca=pair(CA_NAME),
        nodes={node_id: pair(node_name(node_id)) for node_id in range(1, nodes + 1)},
        client=pair(CLIENT_NAME),
    )


def init_certificates(directory: Path, nodes: int, hosts: Sequence[str] = (), days: int = DEFAULT_DAYS,
                      force: bool = False) -> ClusterCertificates:
    """Create a CA, `nodes` node certificates and the root client certificate in `directory`."""
    if nodes < 1:
        raise CertificateError(f"--nodes must be at least 1, got {nodes}")
    if days < 1:
        raise CertificateError(f"--days must be at least 1, got {days}")
    names = [_subject_alternative_name(host) for host in dict.fromkeys([*DEFAULT_HOSTS, *hosts])]
    layout = files_in(directory, nodes)
    paths = [p for files in (layout.ca, *layout.nodes.values(), layout.client) for p in (files.cert, files.key)]
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        names = ", ".join(p.name for p in existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise CertificateError(f"{directory} already holds {names}; pass --force to replace them")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CertificateError(f"cannot create {directory}: {e.strerror or e}") from None

    now = datetime.datetime.now(datetime.UTC)
    # Backdated a little: a machine whose clock is slightly behind still accepts fresh certificates.
    not_before, not_after = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("kvstore CA")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(layout.ca, ca_cert, ca_key)

    def issue(files: CertificateFiles, common_name: str, usages: list[x509.ObjectIdentifier],
              alternative_names: list[x509.GeneralName]) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            _builder(_name(common_name), ca_name, key.public_key(), not_before, not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        )
        _write(files, builder.sign(ca_key, hashes.SHA256()), key)

    for node_id, files in layout.nodes.items():
        issue(files, node_name(node_id), [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
              [*names, x509.UniformResourceIdentifier(PEER_URI)])
    issue(layout.client, CLIENT_USER, [ExtendedKeyUsageOID.CLIENT_AUTH],
          [x509.UniformResourceIdentifier(f"{USER_URI_PREFIX}{CLIENT_USER}")])
    return layout


def _subject_alternative_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if len(host) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in host.split(".")):
        raise CertificateError(f"--hosts: {host!r} is neither an IP address nor a DNS name")
    return x509.DNSName(host)


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             not_before: datetime.datetime, not_after: datetime.datetime) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False, decipher_only=False,
    )


def _write(files: CertificateFiles, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    _write_file(files.key, key_pem, 0o600)
    _write_file(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` with `data`; the file has `mode` from the moment it exists (no window in
    which another user could read a key)."""
    try:
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(path, mode)  # the umask may have taken bits away from `mode`
    except OSError as e:
        raise CertificateError(f"cannot write {path}: {e.strerror or e}") from None
