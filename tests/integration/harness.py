"""Real node processes on loopback for integration tests: start, kill -9, restart, stop.

Every wait polls a condition with a generous deadline; nothing sleeps a fixed time to hope.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore.certs import ClusterCertificates
from kvstore.node.balance import GroupView, plan_leader_transfers
from kvstore.node.local import free_ports, leaders, node_command, node_status, tls_arguments, wait_until
from kvstore.tls import TlsConfig, client_credentials

WAIT_S = 60.0


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    wait_until(condition, what, timeout)


@dataclass
class LocalCluster:
    root: Path
    size: int = 3
    partitions: int = 8
    extra_args: list[str] = field(default_factory=list)
    certificates: ClusterCertificates | None = None  # serve TLS: each node with its own certificate
    node_args: dict[int, list[str]] = field(default_factory=dict)  # more flags for one node
    metrics: bool = False  # each node serves --metrics-address on a port of its own
    ports: list[int] = field(default_factory=list)
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    credentials: grpc.ChannelCredentials | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.ports = free_ports(self.size * 2 if self.metrics else self.size)
        self.credentials = client_credentials(self.client_tls)

    @property
    def client_tls(self) -> TlsConfig | None:
        """The root client certificate's files, when the cluster serves TLS."""
        certs = self.certificates
        return None if certs is None else TlsConfig(certs.ca.cert, certs.client.cert, certs.client.key)

    @property
    def node_ids(self) -> list[int]:
        return list(range(1, self.size + 1))

    def address(self, node_id: int) -> str:
        return f"127.0.0.1:{self.ports[node_id - 1]}"

    def metrics_url(self, node_id: int) -> str:
        """The base URL of the node's HTTP side (metrics, probes, status page)."""
        assert self.metrics, "the cluster was started without metrics"
        return f"http://127.0.0.1:{self.ports[self.size + node_id - 1]}"

    @property
    def endpoints(self) -> list[str]:
        return [self.address(n) for n in self.node_ids]

    def start(self, node_id: int) -> None:
        peers = {n: self.address(n) for n in self.node_ids}
        tls_flags = [] if self.certificates is None else tls_arguments(
            self.certificates.nodes[node_id].cert, self.certificates.nodes[node_id].key, self.certificates.ca.cert)
        metrics_flags = ["--metrics-address", self.metrics_url(node_id).removeprefix("http://")] if self.metrics else []
        command = node_command(node_id, peers, self.root / f"node-{node_id}", self.partitions, *self.extra_args,
                               *tls_flags, *metrics_flags, *self.node_args.get(node_id, []))
        with (self.root / f"node-{node_id}.log").open("ab") as log:
            self.processes[node_id] = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def start_all(self) -> None:
        for node_id in self.node_ids:
            self.start(node_id)
        self.wait_leaders_balanced()

    @contextmanager
    def running(self) -> Iterator[LocalCluster]:
        """Every node is stopped on the way out (also when starting them failed), and then no
        node may have hit a fatal error."""
        try:
            yield self
        finally:
            self.stop_all()
            assert not self.any_fatal(), self.any_fatal()

    def kill(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(node_id)
        process.send_signal(sig)
        process.wait(timeout=WAIT_S)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def status(self, node_id: int) -> pb.StatusResponse | None:
        return node_status(self.address(node_id), timeout=2, credentials=self.credentials)

    def leaders(self) -> dict[int, int]:
        """Partition -> the node that currently leads it (as that node itself reports)."""
        return leaders(self.status(node_id) for node_id in list(self.processes))

    def wait_all_partitions_led(self) -> None:
        wait_for(lambda: len(self.leaders()) == self.partitions, f"all {self.partitions} partitions to have a leader")

    def wait_leaders_balanced(self) -> None:
        """Every partition led, and no node's leader balancing (`plan_leader_transfers`) would
        move a leadership: none moves while a test counts on who leads what."""

        def balanced() -> bool:
            statuses = [self.status(node_id) for node_id in list(self.processes)]
            led = leaders(statuses)
            if len(led) != self.partitions:
                return False
            replicas = {p.id: frozenset(p.replicas) for s in statuses if s is not None for p in s.partitions}
            views = [GroupView(partition, leader, replicas[partition]) for partition, leader in led.items()]
            return not any(plan_leader_transfers(node_id, views, 1) for node_id in self.node_ids)

        wait_for(balanced, f"all {self.partitions} partitions led, and their leaders balanced")

    def applied_index(self, node_id: int, partition: int) -> int:
        status = self.status(node_id)
        if status is None:
            return -1
        return next(p.applied_index for p in status.partitions if p.id == partition)

    def log_tail(self, node_id: int, lines: int = 20) -> str:
        path = self.root / f"node-{node_id}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def any_fatal(self) -> str:
        """Log lines of any node that hit a fatal error (a bug), for assertion messages."""
        found = []
        for node_id in self.node_ids:
            path = self.root / f"node-{node_id}.log"
            if path.exists():
                found += [f"node {node_id}: {line}" for line in path.read_text(errors="replace").splitlines()
                          if "level=error" in line]
        return "\n".join(found)
