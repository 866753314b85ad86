"""Transport security in one place: TLS files, gRPC credentials, the peer check, diagnosis.

Nodes, the client library and kvctl all build their gRPC channels and credentials here, so a
TLS problem is found and described (in one line) the same way everywhere.

The scheme (docs/security.md): a node serves TLS on its one port and requires every caller to
present a certificate signed by a CA it trusts (mutual TLS). Client and peer traffic share the
port; the Peer service additionally refuses a caller whose certificate is not a *peer*
certificate: one whose subject alternative names include the URI `PEER_URI`, issued directly
by a certificate of the peer CA bundle.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

# Marks a node's certificate as one that may join the peer stream.
PEER_URI = "urn:kvstore:peer"

ChannelOptions = Sequence[tuple[str, int | str]]


class TlsError(ValueError):
    """A TLS file or setting is unusable; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """A TLS party's files: the CA certificate(s) it trusts, its own certificate and key (PEM).

    A client needs all three: nodes require a certificate from every caller.
    """

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """The checked contents of a `TlsConfig`'s files."""

    ca: bytes
    cert: bytes
    key: bytes
    certificate: x509.Certificate  # the first certificate of `cert`, the party's own
    authorities: tuple[x509.Certificate, ...]  # every certificate of `ca`


def load(config: TlsConfig, what: str = "") -> TlsMaterial:
    """Read and check the files: each parses, and the key belongs to the certificate.

    `what` qualifies the files in messages (e.g. "peer "), so the user knows which one is bad.
    """
    ca = _read(config.ca, f"{what}CA certificate")
    cert = _read(config.cert, f"{what}certificate")
    key = _read(config.key, f"{what}key")
    try:
        authorities = tuple(x509.load_pem_x509_certificates(ca))
    except ValueError:
        raise TlsError(f"{what}CA certificate {config.ca}: not a PEM certificate") from None
    try:
        certificate = x509.load_pem_x509_certificates(cert)[0]
    except ValueError:
        raise TlsError(f"{what}certificate {config.cert}: not a PEM certificate") from None
    try:
        private_key = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        reason = "it is encrypted (give an unencrypted key)" if isinstance(e, TypeError) else "not a PEM private key"
        raise TlsError(f"{what}key {config.key}: {reason}") from None
    if private_key.public_key() != certificate.public_key():
        raise TlsError(f"{what}key {config.key} does not belong to the {what}certificate {config.cert}")
    return TlsMaterial(ca, cert, key, certificate, authorities)


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise TlsError(f"{setting} {path}: {e.strerror or e}") from None


def describe(certificate: x509.Certificate) -> str:
    """Subject, serial and expiry, for log lines."""
    return (f"{certificate.subject.rfc4514_string()} (serial {certificate.serial_number:x}, "
            f"valid until {certificate.not_valid_after_utc:%Y-%m-%d})")


# -- channels --------------------------------------------------------------------------------

def channel_credentials(identity: TlsMaterial, trusted_ca: bytes | None = None) -> grpc.ChannelCredentials:
    """Present `identity`'s certificate; verify the node's against `trusted_ca` (default
    `identity.ca`)."""
    return grpc.ssl_channel_credentials(trusted_ca or identity.ca, identity.key, identity.cert)


def server_configuration(serving: TlsMaterial, trusted_ca: bytes) -> grpc.ServerCertificateConfiguration:
    """Serve `serving`'s certificate; accept callers whose certificate `trusted_ca` vouches for."""
    return grpc.ssl_server_certificate_configuration([(serving.key, serving.cert)], root_certificates=trusted_ca)


def server_credentials(initial: grpc.ServerCertificateConfiguration,
                       fetch: Callable[[], grpc.ServerCertificateConfiguration | None]) -> grpc.ServerCredentials:
    """TLS that requires and verifies a certificate from every caller. gRPC calls `fetch` before
    each new handshake: a configuration it returns replaces the current one, None keeps it."""
    # The grpc stubs type `fetch` as never returning None, which gRPC documents and accepts.
    return grpc.dynamic_ssl_server_credentials(
        initial, fetch, require_client_authentication=True  # type: ignore[arg-type]
    )


def client_credentials(config: TlsConfig | None) -> grpc.ChannelCredentials | None:
    """Credentials of a client with `config`'s files (None: plaintext); `TlsError` if one is bad."""
    return None if config is None else channel_credentials(load(config))


def aio_channel(address: str, credentials: grpc.ChannelCredentials | None, options: ChannelOptions = (),
                interceptors: Sequence[grpc.aio.ClientInterceptor] = ()) -> grpc.aio.Channel:
    """An asyncio channel to `address`: TLS with `credentials`, plaintext when None; every call
    goes through `interceptors` (the client's sign-in)."""
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(address, credentials, options=options, interceptors=interceptors)


def sync_channel(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
    """A blocking channel to `address`: TLS with `credentials`, plaintext when None."""
    if credentials is None:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, credentials)


# -- the peer check --------------------------------------------------------------------------

def peer_refusal(auth_context: Mapping[str, Iterable[bytes]], peer_authorities: Sequence[x509.Certificate]) -> str | None:
    """Why the caller of a Peer RPC may not take part in the peer stream, or None if it may.

    `auth_context` is the RPC's (`context.auth_context()`): gRPC has verified the caller's
    certificate chain against every CA the node trusts (client and peer CAs alike); this also
    requires the peer marker and an issuer from the peer CA bundle.
    """
    pems = auth_context.get("x509_pem_cert")
    if not pems:
        return "the caller presented no certificate"
    certificate = x509.load_pem_x509_certificate(next(iter(pems)))
    subject = certificate.subject.rfc4514_string()
    if PEER_URI not in _uris(certificate):
        return f"the certificate of {subject} is not a peer certificate (it lacks the URI SAN {PEER_URI})"
    if not any(_issued_by(certificate, authority) for authority in peer_authorities):
        return f"the certificate of {subject} was not issued by the peer CA"
    return None


def _uris(certificate: x509.Certificate) -> list[str]:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return names.get_values_for_type(x509.UniformResourceIdentifier)


def _issued_by(certificate: x509.Certificate, authority: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# -- diagnosis -------------------------------------------------------------------------------

async def diagnose(address: str, config: TlsConfig | None, timeout: float) -> str | None:
    """Why a gRPC connection to `address` failed at the TLS layer, or None if TLS is not why.

    gRPC reports most TLS mismatches as a bare "Socket closed" (a node drops a caller without
    an acceptable certificate before any HTTP/2 frame), so this repeats the handshake with the
    standard library and reads the outcome: a plaintext client meeting a TLS node, a node's
    certificate the client's CA does not vouch for, a node without TLS, or a node that drops
    the connection right after the handshake, which means it refused the client's certificate.
    """
    host, _, port = address.rpartition(":")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_alpn_protocols(["h2"])
    if config is None:  # only asking whether the node speaks TLS at all
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cafile=config.ca)
        context.load_cert_chain(config.cert, config.key)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host.strip("[]"), int(port), ssl=context)
    except ssl.SSLCertVerificationError as e:
        return f"the certificate {address} presents is not vouched for by the client's CA: {e.verify_message}"
    except ssl.SSLError as e:
        if config is not None and e.reason == "WRONG_VERSION_NUMBER":
            return f"{address} does not serve TLS, but this client connects with TLS"
        return None
    except (OSError, TimeoutError, ValueError):
        return None
    if config is None:
        writer.close()
        return (f"{address} requires TLS, but this client connects without it: give it the cluster's CA "
                "certificate and a client certificate (kvctl: --cacert, --cert, --key)")
    try:
        # With TLS 1.3 the node judges the client's certificate after the handshake: it answers
        # the HTTP/2 preface if it accepted the certificate, and hangs up if not.
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        async with asyncio.timeout(timeout):
            answer = await reader.read(1)
        if answer:
            return None
        return _refused(address, config)
    except (ssl.SSLError, ConnectionError):
        return _refused(address, config)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()


def _refused(address: str, config: TlsConfig) -> str:
    return (f"{address} refused this client's certificate {config.cert}: it must be signed by a CA "
            "the node trusts (the cluster's CA)")
