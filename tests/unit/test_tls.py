"""kvstore.tls and the node's TLS state: file checks, the peer check, diagnosis, reloading."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc
from kvstore.certs import ClusterCertificates, init_certificates
from kvstore.node.config import NodeConfig
from kvstore.node.security import NodeSecurity
from kvstore.tls import (
    TlsConfig,
    TlsError,
    diagnose,
    load,
    peer_refusal,
    server_configuration,
    server_credentials,
)


@dataclass(frozen=True, slots=True)
class Pki:
    ours: ClusterCertificates
    theirs: ClusterCertificates  # another CA: strangers to the cluster


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    return Pki(init_certificates(root / "ours", nodes=2), init_certificates(root / "theirs", nodes=1))


def client_config(certs: ClusterCertificates, ca: Path | None = None) -> TlsConfig:
    return TlsConfig(ca=ca or certs.ca.cert, cert=certs.client.cert, key=certs.client.key)


def node_config(certs: ClusterCertificates, node_id: int) -> TlsConfig:
    return TlsConfig(ca=certs.ca.cert, cert=certs.nodes[node_id].cert, key=certs.nodes[node_id].key)


# -- files ----------------------------------------------------------------------------------

def test_load_reads_and_checks_the_files(pki: Pki) -> None:
    material = load(node_config(pki.ours, 1))

    assert material.certificate.subject.rfc4514_string().startswith("CN=node-1")
    assert [a.subject for a in material.authorities] == [material.authorities[0].issuer]  # the self-signed CA


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("missing-ca", "CA certificate .*missing.crt: No such file or directory"),
        ("garbage-cert", "certificate .*garbage.pem: not a PEM certificate"),
        ("garbage-key", "key .*garbage.pem: not a PEM private key"),
        ("other-key", "key .*node-2.key does not belong to the certificate .*node-1.crt"),
    ],
)
def test_a_bad_file_is_named_in_one_line(pki: Pki, tmp_path: Path, broken: str, message: str) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not pem at all\n")
    good = node_config(pki.ours, 1)
    config = {
        "missing-ca": TlsConfig(tmp_path / "missing.crt", good.cert, good.key),
        "garbage-cert": TlsConfig(good.ca, garbage, good.key),
        "garbage-key": TlsConfig(good.ca, good.cert, garbage),
        "other-key": TlsConfig(good.ca, good.cert, pki.ours.nodes[2].key),
    }[broken]

    with pytest.raises(TlsError, match=message) as raised:
        load(config)
    assert "\n" not in str(raised.value)


# -- the peer check -------------------------------------------------------------------------

def auth_context(cert: Path) -> dict[str, list[bytes]]:
    """What gRPC hands a servicer about a caller that presented `cert` (the fields we read)."""
    return {"transport_security_type": [b"ssl"], "x509_pem_cert": [cert.read_bytes()]}


def test_only_a_peer_certificate_from_the_peer_ca_may_join_the_peer_stream(pki: Pki) -> None:
    peer_ca = load(node_config(pki.ours, 1)).authorities

    assert peer_refusal(auth_context(pki.ours.nodes[2].cert), peer_ca) is None
    assert "not a peer certificate" in (peer_refusal(auth_context(pki.ours.client.cert), peer_ca) or "")
    assert "not issued by the peer CA" in (peer_refusal(auth_context(pki.theirs.nodes[1].cert), peer_ca) or "")
    assert peer_refusal({"transport_security_type": [b"ssl"]}, peer_ca) == "the caller presented no certificate"


# -- the node's TLS state -------------------------------------------------------------------

def node_settings(tmp_path: Path, files: TlsConfig | None, **extra: Any) -> NodeConfig:
    tls: dict[str, Any] = {} if files is None else {"cert": files.cert, "key": files.key, "ca": files.ca}
    return NodeConfig(1, "127.0.0.1:1", tmp_path, **tls, **extra)


@dataclass
class FakeContext:
    cert: Path

    def auth_context(self) -> dict[str, list[bytes]]:
        return auth_context(self.cert)

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5555"


def test_a_plaintext_node_admits_any_peer_and_has_nothing_to_reload(tmp_path: Path) -> None:
    security = NodeSecurity(node_settings(tmp_path, None))

    assert not security.enabled
    assert security.peer_refusal(FakeContext(tmp_path / "never-read")) is None
    assert not security.reload()


def test_a_separate_peer_ca_decides_who_is_a_peer(pki: Pki, tmp_path: Path) -> None:
    theirs = node_config(pki.theirs, 1)
    security = NodeSecurity(node_settings(tmp_path, node_config(pki.ours, 1), peer_cert=theirs.cert,
                                          peer_key=theirs.key, peer_ca=theirs.ca))

    assert security.peer_refusal(FakeContext(pki.theirs.nodes[1].cert)) is None
    assert "not issued by the peer CA" in (security.peer_refusal(FakeContext(pki.ours.nodes[2].cert)) or "")


def test_a_refused_caller_that_keeps_dialling_is_logged_once_per_reason(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    security = NodeSecurity(node_settings(tmp_path, node_config(pki.ours, 1)))

    with caplog.at_level(logging.WARNING, logger="kvstore.security"):
        for _ in range(3):
            for stranger in (pki.ours.client.cert, pki.theirs.nodes[1].cert):
                assert security.peer_refusal(FakeContext(stranger)) is not None

    assert len(caplog.records) == 2


def test_reload_swaps_in_good_files_and_keeps_the_old_ones_when_a_file_is_bad(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = tmp_path / "node.crt", tmp_path / "node.key"
    cert.write_bytes(pki.ours.nodes[1].cert.read_bytes())
    key.write_bytes(pki.ours.nodes[1].key.read_bytes())
    security = NodeSecurity(node_settings(tmp_path, TlsConfig(pki.ours.ca.cert, cert, key)))
    fetch = security._fetch  # what gRPC calls before each handshake

    assert fetch() is None  # nothing new yet
    cert.write_bytes(pki.ours.nodes[2].cert.read_bytes())
    key.write_bytes(pki.ours.nodes[2].key.read_bytes())
    assert security.reload()
    assert security.generation == 1
    assert fetch() is not None and fetch() is None  # handed to gRPC once

    cert.write_text("truncated")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="kvstore.security"):
        assert not security.reload()
    assert security.generation == 1 and fetch() is None
    assert [r.getMessage() for r in caplog.records] == [
        f"certificate reload failed, the old certificates stay in use: certificate {cert}: not a PEM certificate"
    ]


# -- diagnosis ------------------------------------------------------------------------------

class _Cluster(kvstore_pb2_grpc.ClusterServicer):
    async def Status(self, request: pb.StatusRequest, context: object) -> pb.StatusResponse:
        return pb.StatusResponse(node_id=1)


@pytest.fixture
async def servers(pki: Pki) -> AsyncIterator[tuple[str, str]]:
    """A TLS server with node-1's certificate (client certificates required) and a plaintext one."""
    server = grpc.aio.server()
    kvstore_pb2_grpc.add_ClusterServicer_to_server(_Cluster(), server)
    node = load(node_config(pki.ours, 1))
    tls_port = server.add_secure_port("127.0.0.1:0", server_credentials(server_configuration(node, node.ca),
                                                                      lambda: None))
    plain_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{tls_port}", f"127.0.0.1:{plain_port}"
    finally:
        await server.stop(None)


def unused_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


async def test_diagnose_tells_each_tls_mismatch_apart(pki: Pki, servers: tuple[str, str]) -> None:
    tls_address, plain_address = servers
    ours, foreign_client = client_config(pki.ours), client_config(pki.theirs, ca=pki.ours.ca.cert)

    assert await diagnose(tls_address, ours, 2.0) is None
    assert "requires TLS, but this client connects without it" in (await diagnose(tls_address, None, 2.0) or "")
    assert "refused this client's certificate" in (await diagnose(tls_address, foreign_client, 2.0) or "")
    assert "not vouched for by the client's CA" in (await diagnose(tls_address, client_config(pki.theirs), 2.0) or "")
    assert "does not serve TLS" in (await diagnose(plain_address, ours, 2.0) or "")
    assert await diagnose(plain_address, None, 2.0) is None  # plaintext both sides: not a TLS problem
    assert await diagnose(unused_address(), ours, 2.0) is None  # nobody there: not a TLS problem
