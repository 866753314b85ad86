"""Running kvstore nodes as local processes: their command line, free ports, probing, waiting.

`kvctl cluster`, `kvctl bench`, the Jepsen harness and the integration tests each own their
node processes in their own way (detached with a state file, supervised, in namespaces, one
per test), but they start, probe and wait for nodes through these functions.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc
from kvstore.node.config import format_peers
from kvstore.tls import sync_channel


def node_command(node_id: int, peers: Mapping[int, str], data_dir: Path, partitions: int, *extra: str) -> list[str]:
    """The argv that runs node `node_id` of the cluster `peers` (id -> address, itself included)."""
    return [
        sys.executable, "-m", "kvstore.node", "--id", str(node_id), "--listen", peers[node_id],
        "--peers", format_peers(dict(peers)), "--data-dir", str(data_dir), "--partitions", str(partitions), *extra,
    ]  # fmt: skip


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Distinct ports the kernel hands out now (every socket is held until all are chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tls_arguments(cert: Path, key: Path, ca: Path) -> list[str]:
    """The flags that make a node serve TLS with `cert` and trust `ca`, for clients and peers alike."""
    return ["--cert", str(cert), "--key", str(key), "--ca", str(ca)]


def node_status(address: str, timeout: float = 1.0,
                credentials: grpc.ChannelCredentials | None = None) -> pb.StatusResponse | None:
    """The node's own status, or None when it does not answer within `timeout`.

    A node serving TLS answers only with `credentials` (`kvstore.tls.client_credentials`).
    """
    with sync_channel(address, credentials) as channel:
        try:
            return kvstore_pb2_grpc.ClusterStub(channel).Status(pb.StatusRequest(), timeout=timeout)
        except grpc.RpcError:
            return None


def leaders(statuses: Iterable[pb.StatusResponse | None]) -> dict[int, int]:
    """Partition -> the node that leads it, as that node itself reports."""
    return {
        p.id: status.node_id
        for status in statuses
        if status is not None
        for p in status.partitions
        if p.leader == status.node_id
    }


def wait_until(condition: Callable[[], bool], what: str, timeout: float, interval: float = 0.1) -> None:
    """Poll `condition` until it holds; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
