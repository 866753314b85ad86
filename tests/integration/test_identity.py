"""Peers check each other's identity: a node that does not belong is refused and stops, in one
line, while the cluster keeps serving (real processes on loopback)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kvstore.client import SyncClient
from kvstore.node.local import free_ports, node_command, node_status
from tests.integration.harness import WAIT_S, LocalCluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("identity"), size=3, partitions=4)
    with local.running():
        local.start_all()
        yield local


def run_until_exit(command: list[str], log_path: Path) -> tuple[int, str]:
    """Run a node to its end; its exit code and last line (its one-line reason)."""
    with log_path.open("wb") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              timeout=WAIT_S).returncode
    lines = log_path.read_text(errors="replace").splitlines()
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    return code, lines[-1]


@contextmanager
def node_3_stopped(cluster: LocalCluster) -> Iterator[str]:
    """Node 3 stopped (its address free) for the block; back and caught up after it."""
    cluster.kill(3, signal.SIGTERM)
    try:
        yield cluster.address(3)
    finally:
        cluster.start(3)
        cluster.wait_all_partitions_led()


def peers_of(cluster: LocalCluster) -> dict[int, str]:
    return {node_id: cluster.address(node_id) for node_id in cluster.node_ids}


def test_a_node_started_by_hand_with_a_longer_peer_list_is_refused(cluster: LocalCluster, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    peers = {**peers_of(cluster), 4: f"127.0.0.1:{port}"}
    code, reason = run_until_exit(node_command(4, peers, tmp_path / "node-4", cluster.partitions),
                                  tmp_path / "node-4.log")
    assert code == 2
    assert "3 of its 3 peers (1, 2, 3) refuse each other" in reason and "--peers" in reason


def test_a_node_that_lost_its_data_dir_is_refused(cluster: LocalCluster, tmp_path: Path) -> None:
    with node_3_stopped(cluster):
        code, reason = run_until_exit(node_command(3, peers_of(cluster), tmp_path / "empty", cluster.partitions),
                                      tmp_path / "empty.log")
    assert code == 2
    assert "2 of its 2 peers (1, 2)" in reason and "a node id is never reused" in reason


def test_another_clusters_data_dir_is_refused_and_never_serves_its_keys(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    # A one-node cluster whose node is also numbered 3, holding a key of its own.
    (port,) = free_ports(1)
    foreign_address = f"127.0.0.1:{port}"
    foreign = subprocess.Popen(node_command(3, {3: foreign_address}, tmp_path / "foreign", cluster.partitions),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with SyncClient([foreign_address], timeout=20.0) as client:
            client.put("foreign-key", "foreign-value")
    finally:
        foreign.send_signal(signal.SIGTERM)
        foreign.wait(timeout=WAIT_S)
    with node_3_stopped(cluster):
        code, reason = run_until_exit(
            node_command(3, peers_of(cluster), tmp_path / "foreign", cluster.partitions), tmp_path / "moved.log")
        assert code == 2
        assert "this node's data dir belongs to another cluster" in reason
        assert node_status(cluster.address(3)) is None
    with SyncClient(cluster.endpoints, timeout=20.0) as client:
        assert client.get("foreign-key") is None
        client.put("own-key", "own-value")
    with SyncClient([cluster.address(3)], timeout=20.0) as client:
        stored = client.get("own-key")
        assert stored is not None and stored.value == b"own-value"
