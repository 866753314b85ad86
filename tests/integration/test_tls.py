"""Transport security with real node processes: a TLS cluster of 3 made from `cert init`.

Who gets in (a TLS client; not a plaintext one, nor one with another CA's certificate, nor a
client certificate on the peer stream, nor a node whose peer certificate another CA issued),
certificate rotation on SIGHUP, and the request and stream limits.
"""

from __future__ import annotations

import datetime
import functools
import json
import signal
import socket
import ssl
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kvctl.main import cli

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc, peer_pb2, peer_pb2_grpc
from kvstore.certs import CertificateFiles, ClusterCertificates, init_certificates
from kvstore.client import InvalidArgumentError, SyncClient, TlsConfig, TransportSecurityError, ops
from kvstore.node.identity import derive_cluster_id
from kvstore.tls import sync_channel
from tests.integration.harness import LocalCluster, wait_for

pytestmark = pytest.mark.slow

MIB = 1 << 20


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> ClusterCertificates:
    return init_certificates(tmp_path_factory.mktemp("certs"), nodes=3)


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> ClusterCertificates:
    """Certificates of another CA, which the cluster has never heard of."""
    return init_certificates(tmp_path_factory.mktemp("foreign"), nodes=3)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, certs: ClusterCertificates) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("tls-cluster"), size=3, partitions=8, certificates=certs,
                         metrics=True)
    with local.running():
        local.start_all()
        yield local


def tls_client(cluster: LocalCluster) -> SyncClient:
    return SyncClient(cluster.endpoints, timeout=20.0, tls=cluster.client_tls)


def kvctl(*arguments: str, tls: TlsConfig | None = None) -> tuple[int, str, str]:
    flags = [] if tls is None else ["--cacert", str(tls.ca), "--cert", str(tls.cert), "--key", str(tls.key)]
    result = CliRunner().invoke(cli, [*arguments, *flags, "--timeout", "10"])
    return result.exit_code, result.stdout, result.stderr


def logged(cluster: LocalCluster, node: int, text: str) -> bool:
    return text in cluster.log_tail(node, 400)


def served_serial(address: str, tls: TlsConfig) -> int:
    """The serial of the certificate the node presents in a new TLS handshake."""
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context(cafile=tls.ca)
    context.load_cert_chain(tls.cert, tls.key)
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=host) as connection:
        der = connection.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def renew(files: CertificateFiles, ca: CertificateFiles) -> int:
    """Replace a certificate with a fresh one from the same CA (same names, new serial); the
    new serial. Written to a temporary file and renamed, as a deployment tool would."""
    old = x509.load_pem_x509_certificate(files.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(old.subject).issuer_name(old.issuer).public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
    )
    for extension in old.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    renewed = builder.sign(ca_key, hashes.SHA256())
    staging = files.cert.with_suffix(".new")
    staging.write_bytes(renewed.public_bytes(serialization.Encoding.PEM))
    staging.replace(files.cert)
    return renewed.serial_number


def test_a_tls_client_reads_and_writes(cluster: LocalCluster) -> None:
    with tls_client(cluster) as client:
        for i in range(20):
            client.put(f"tls/{i:02d}", f"value-{i}")
        stored = client.get("tls/07")
        assert stored is not None and stored.value == b"value-7"
        assert len(client.scan(prefix="tls/")) == 20

    code, out, err = kvctl("get", "tls/07", "-o", "simple", "--endpoints", cluster.address(2), tls=cluster.client_tls)
    assert (code, out) == (0, "value-7\n"), err


def test_the_status_page_gathers_every_node_over_tls(cluster: LocalCluster) -> None:
    """The node serving the page asks its peers for their status with its own certificate."""
    with urllib.request.urlopen(cluster.metrics_url(1) + "/api/cluster", timeout=10) as response:
        view = json.load(response)
    assert [(node["id"], node["up"], node["reason"]) for node in view["nodes"]] == [(n, True, "") for n in (1, 2, 3)]
    assert all(partition["leader"] for partition in view["partitions"])


def test_a_plaintext_client_is_refused_and_told_tls_is_required(cluster: LocalCluster) -> None:
    with pytest.raises(TransportSecurityError, match="requires TLS, but this client connects without it"):
        SyncClient(cluster.endpoints, timeout=10.0).connect()

    code, _, err = kvctl("get", "tls/07", "--endpoints", ",".join(cluster.endpoints))
    assert code == 2
    assert err.count("\n") == 1 and f"{cluster.address(1)} requires TLS" in err and "--cacert" in err


def test_a_client_of_another_ca_is_refused(cluster: LocalCluster, certs: ClusterCertificates,
                                          foreign: ClusterCertificates) -> None:
    stranger = TlsConfig(ca=certs.ca.cert, cert=foreign.client.cert, key=foreign.client.key)
    misled = TlsConfig(ca=foreign.ca.cert, cert=certs.client.cert, key=certs.client.key)

    with pytest.raises(TransportSecurityError, match="refused this client's certificate"):
        SyncClient(cluster.endpoints, timeout=10.0, tls=stranger).connect()
    with pytest.raises(TransportSecurityError, match="not vouched for by the client's CA"):
        SyncClient(cluster.endpoints, timeout=10.0, tls=misled).connect()
    code, _, err = kvctl("get", "k", "--endpoints", cluster.address(1), tls=stranger)
    assert code == 2 and "refused this client's certificate" in err


def open_peer_stream(address: str, files: CertificateFiles, ca: Path, cluster_id: str) -> grpc.RpcError:
    """How the node ends a Peer stream opened with `files` as the client certificate."""
    tls = TlsConfig(ca=ca, cert=files.cert, key=files.key)
    credentials = grpc.ssl_channel_credentials(tls.ca.read_bytes(), tls.key.read_bytes(), tls.cert.read_bytes())
    with sync_channel(address, credentials) as channel:
        hello = peer_pb2.PeerFrame(hello=peer_pb2.PeerHello(node_id=99, cluster_id=cluster_id))
        with pytest.raises(grpc.RpcError) as raised:
            list(peer_pb2_grpc.PeerStub(channel).Stream(iter([hello]), timeout=10))
    return raised.value


def test_a_client_certificate_cannot_join_the_peer_stream(cluster: LocalCluster, certs: ClusterCertificates) -> None:
    refused = open_peer_stream(cluster.address(1), certs.client, certs.ca.cert, "kvstore")
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "CN=root" in (refused.details() or "") and "not a peer certificate" in (refused.details() or "")
    wait_for(lambda: "not a peer certificate" in cluster.log_tail(1, 400), "node 1 to log the refusal")

    # A node's certificate gets past the peer check, as far as the hello's cluster id.
    admitted = open_peer_stream(cluster.address(1), certs.nodes[3], certs.ca.cert, "another-cluster")
    assert admitted.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "refuses node 99 of cluster 'another-cluster': OTHER_CLUSTER" in (admitted.details() or "")


def test_an_oversized_request_is_refused_with_a_clear_error(cluster: LocalCluster) -> None:
    megabyte = bytes(MIB)
    with tls_client(cluster) as client:
        # Over the node's gRPC limit (--max-request-bytes, default 8 MiB, plus framing room).
        with pytest.raises(InvalidArgumentError, match=r"the request is \d+ bytes; the node accepts at most 8454144"):
            client.txn([], [ops.put(f"{{big}}:{i}", megabyte) for i in range(9)])
        # Within the framing room, but an entry that large could not be replicated.
        with pytest.raises(InvalidArgumentError, match=r"bytes once encoded; the limit is 8388608"):
            client.txn([], [ops.put(f"{{big}}:{i}", megabyte) for i in range(8)])
        client.put("{big}:one", megabyte)  # the largest value still goes through
        assert client.get("{big}:0") is None


def test_sighup_rotates_the_served_certificate_and_a_bad_file_changes_nothing(
    cluster: LocalCluster, certs: ClusterCertificates
) -> None:
    node, address = 3, cluster.address(3)
    assert cluster.client_tls is not None
    old_serial = served_serial(address, cluster.client_tls)
    with tls_client(cluster) as client:  # connected before the rotation, used after it
        client.put("rotation", "before")

        new_serial = renew(certs.nodes[node], certs.ca)
        cluster.processes[node].send_signal(signal.SIGHUP)
        wait_for(lambda: served_serial(address, cluster.client_tls) == new_serial,  # type: ignore[arg-type]
                 "node 3 to serve its renewed certificate")
        assert new_serial != old_serial
        for peer in (1, 2):  # its peer streams were renewed with the new client certificate
            renewed = f"reconnected to peer {peer} at {cluster.address(peer)} with the new certificates"
            wait_for(functools.partial(logged, cluster, node, renewed), f"node 3 to renew its stream to node {peer}")
        client.put("rotation", "after")
        stored = client.get("rotation")
        assert stored is not None and stored.value == b"after"

        good = certs.nodes[node].cert.read_bytes()
        certs.nodes[node].cert.write_text("-----BEGIN CERTIFICATE-----\ntruncated\n")
        try:
            cluster.processes[node].send_signal(signal.SIGHUP)
            wait_for(lambda: "certificate reload failed, the old certificates stay in use" in
                     cluster.log_tail(node, 400), "node 3 to report the bad file")
            assert served_serial(address, cluster.client_tls) == new_serial
        finally:
            certs.nodes[node].cert.write_bytes(good)
    with tls_client(cluster) as fresh:
        fresh.put("rotation", "still served")
        stored = fresh.get("rotation")
        assert stored is not None and stored.value == b"still served"


def test_a_node_whose_peer_certificate_another_ca_issued_cannot_join(
    tmp_path: Path, certs: ClusterCertificates, foreign: ClusterCertificates
) -> None:
    """Node 3 serves clients with the cluster's certificate, but dials its peers with, and
    admits as peers only, certificates of another CA: nodes 1 and 2 carry on without it."""
    outsider = foreign.nodes[3]
    local = LocalCluster(tmp_path, size=3, partitions=4, certificates=certs, node_args={
        3: ["--peer-cert", str(outsider.cert), "--peer-key", str(outsider.key), "--peer-ca", str(foreign.ca.cert)],
    })
    with local.running():
        for node_id in local.node_ids:
            local.start(node_id)
        local.wait_all_partitions_led()
        with SyncClient([local.address(1), local.address(2)], timeout=20.0, tls=local.client_tls) as client:
            for i in range(10):
                client.put(f"k{i}", "v")
        leaders = local.leaders()
        assert set(leaders.values()) <= {1, 2}
        led_commit = {p.id: p.commit_index for n in (1, 2) if (s := local.status(n)) for p in s.partitions
                      if leaders[p.id] == n}
        outsider_status = local.status(3)
        assert outsider_status is not None  # it serves clients
        for partition in outsider_status.partitions:  # but no leader ever reached it
            assert partition.leader == 0 and partition.commit_index < led_commit[partition.id]
        log = local.log_tail(3, 400)
        assert f"cannot connect to peer 1 at {local.address(1)}: {local.address(1)} refused this client's " \
               f"certificate {outsider.cert}" in log
        assert "refused a peer connection from" in log and "was not issued by the peer CA" in log
        assert "PERMISSION_DENIED: node 3 refuses this caller as a peer" in local.log_tail(1, 400)


def test_calls_past_the_stream_cap_wait_for_a_free_stream(tmp_path: Path) -> None:
    local = LocalCluster(tmp_path, size=1, partitions=1, extra_args=["--max-concurrent-streams", "1"])
    done = threading.Event()

    def hello_then_wait() -> Iterator[peer_pb2.PeerFrame]:
        # A hello the node admits: its own cluster's id (the default token and its one member).
        cluster_id = derive_cluster_id("kvstore", {1: local.address(1)})
        yield peer_pb2.PeerFrame(hello=peer_pb2.PeerHello(node_id=1, cluster_id=cluster_id))
        done.wait(30)

    # Channels of one process to one address share a connection unless told otherwise.
    own_connection = [("grpc.use_local_subchannel_pool", 1)]
    with local.running():
        local.start_all()
        with grpc.insecure_channel(local.address(1)) as channel, \
                grpc.insecure_channel(local.address(1), options=own_connection) as other:
            status = kvstore_pb2_grpc.ClusterStub(channel).Status
            assert status(pb.StatusRequest(), timeout=10).node_id == 1
            stream = peer_pb2_grpc.PeerStub(channel).Stream(hello_then_wait(), timeout=30)
            try:
                stream.initial_metadata()  # the node has admitted it: the connection's one stream is taken
                with pytest.raises(grpc.RpcError) as raised:
                    status(pb.StatusRequest(), timeout=1)
                assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
                assert kvstore_pb2_grpc.ClusterStub(other).Status(pb.StatusRequest(), timeout=10).node_id == 1
            finally:
                done.set()
                stream.cancel()
            assert status(pb.StatusRequest(), timeout=10).node_id == 1
