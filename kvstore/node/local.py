"""Running kvstore nodes as local processes: their command line, free ports, probing, waiting.

`kvctl cluster`, `kvctl bench`, the Jepsen harness and the integration tests each own their
node processes in their own way (detached with a state file, supervised, in namespaces, one
per test), but they start, probe and wait for nodes through these functions. Benchmarks that
look inside the nodes (their engines, their memory) run them in their own process instead
(`start_in_process`).
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc
from kvstore.node.config import NodeConfig, format_peers
from kvstore.tls import sync_channel

if TYPE_CHECKING:
    from kvstore.node.server import Node


def node_command(node_id: int, peers: Mapping[int, str], data_dir: Path, partitions: int, *extra: str) -> list[str]:
    """The argv that runs node `node_id` of the cluster `peers` (id -> address, itself included)."""
    return [
        sys.executable, "-m", "kvstore.node", "--id", str(node_id), "--listen", peers[node_id],
        "--peers", format_peers(dict(peers)), "--data-dir", str(data_dir), "--partitions", str(partitions), *extra,
    ]  # fmt: skip


def join_command(address: str, seeds: Sequence[str], data_dir: Path, *extra: str) -> list[str]:
    """The argv that runs a node joining the cluster of `seeds` at `address` (added as a member
    with that address first); restarted later, the same command finds its data dir."""
    return [sys.executable, "-m", "kvstore.node", "--join", ",".join(seeds), "--listen", address,
            "--data-dir", str(data_dir), *extra]


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


def cluster_layout(address: str, timeout: float = 1.0,
                   credentials: grpc.ChannelCredentials | None = None) -> pb.PartitionsResponse | None:
    """The cluster map as the node sees it (with the moves under way), or None when it does not
    answer within `timeout`."""
    with sync_channel(address, credentials) as channel:
        try:
            return kvstore_pb2_grpc.ClusterStub(channel).Partitions(pb.PartitionsRequest(), timeout=timeout)
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


async def start_in_process(root: Path, partitions: int, size: int = 3) -> list[Node]:
    """A cluster of `size` nodes in this process and event loop (gRPC on loopback, data under
    `root`), once every partition has a leader; stop them with `stop_in_process`."""
    # Imported here: kvctl and the test harnesses use this module without running a node.
    from kvstore.node.server import Node
    from kvstore.rpc import ClusterService, KVService, PeerService

    ports = free_ports(size)
    peers = {n: f"127.0.0.1:{ports[n - 1]}" for n in range(1, size + 1)}
    nodes = []
    for node_id, address in peers.items():
        config = NodeConfig(node_id=node_id, listen=address, data_dir=root / f"node-{node_id}", peers=peers,
                            partitions=partitions, log_level="warning")
        config.data_dir.mkdir(parents=True)
        node = Node(config)
        await node.start([KVService(node).add_to, ClusterService(node).add_to, PeerService(node).add_to])
        nodes.append(node)
    while len({s.partition for node in nodes for s in node.status() if s.leader == node.node_id}) < partitions:
        await asyncio.sleep(0.1)
    return nodes


async def stop_in_process(nodes: Iterable[Node]) -> None:
    nodes = list(nodes)
    for node in nodes:
        node.close()
    await asyncio.gather(*(node.wait_closed() for node in nodes))
