"""Local 3-member clusters for the benchmark: kvstore nodes or etcd members, on free loopback
ports, in a temp dir. Every process is owned: stopped on close, SIGKILLed by the kernel if this
process dies first (util-linux `setpriv --pdeathsig`), and the temp dir is removed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import grpc

from kvstore._pb import etcd_kv_pb2 as etcd_pb
from kvstore._pb import etcd_kv_pb2_grpc as etcd_grpc
from kvstore._pb import kvstore_pb2 as pb
from kvstore.bench.drivers import TargetKind, TargetSpec
from kvstore.certs import init_certificates
from kvstore.node.local import free_ports, leaders, node_command, node_status, tls_arguments, wait_until
from kvstore.ring import partition_for_key
from kvstore.tls import TlsConfig, client_credentials

READY_TIMEOUT_S = 90.0


class BenchError(Exception):
    """The benchmark cannot go on (a cluster did not start, a client process failed, ...)."""


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (VmRSS, in kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def open_files(pid: int) -> int:
    """File descriptors a process holds open (sockets and pipes included), from /proc/PID/fd."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command name: state is field 3 of stat(5), utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def wait_ready(condition: Callable[[], bool], what: str) -> None:
    try:
        wait_until(condition, what, READY_TIMEOUT_S)
    except TimeoutError as e:
        raise BenchError(str(e)) from None


class _Supervisor:
    """Owns the member processes of one cluster, by member number (1-based)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._argv: dict[int, list[str]] = {}
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        # A wrapper rather than a preexec_fn: preexec_fn forces a plain fork() of this
        # multi-threaded (gRPC) process. The death signal is tied to the spawning *thread*, so
        # members are only ever started from the main thread.
        setpriv = shutil.which("setpriv")
        self._prefix = [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []

    def log_path(self, member: int) -> Path:
        return self._root / f"member-{member}.log"

    def start(self, member: int, argv: list[str] | None = None) -> None:
        if argv is not None:
            self._argv[member] = argv
        with self.log_path(member).open("ab") as log:
            self._processes[member] = subprocess.Popen(
                [*self._prefix, *self._argv[member]], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def pid(self, member: int) -> int:
        return self._processes[member].pid

    def alive(self, member: int) -> bool:
        return self._processes[member].poll() is None

    def check_alive(self) -> None:
        for member in self._processes:
            if not self.alive(member):
                tail = self.log_path(member).read_text(errors="replace").strip().splitlines()[-5:]
                raise BenchError(f"member {member} exited:\n  " + "\n  ".join(tail))

    def kill(self, member: int) -> None:
        process = self._processes[member]
        process.kill()
        process.wait()

    def stop_all(self, timeout: float = 15.0) -> None:
        for process in self._processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in self._processes.values():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class LocalCluster(Protocol):
    """What the scenarios need from a cluster the benchmark started itself."""

    @property
    def target(self) -> TargetSpec: ...

    @property
    def members(self) -> Sequence[int]: ...

    @property
    def root(self) -> Path: ...

    def pid(self, member: int) -> int: ...

    def failover_victim(self, round_number: int) -> tuple[int, list[bytes]]:
        """The member to kill (the leader of a partition) and keys whose writes that kill
        interrupts: one per partition the member leads."""
        ...

    def kill(self, member: int) -> None: ...

    def restart(self, member: int) -> None: ...

    def close(self) -> None: ...


class _ClusterBase:
    def __init__(self, prefix: str, size: int) -> None:
        self._root = Path(tempfile.mkdtemp(prefix=prefix))
        self._size = size
        self._supervisor = _Supervisor(self._root)

    @property
    def members(self) -> Sequence[int]:
        return range(1, self._size + 1)

    @property
    def root(self) -> Path:
        return self._root

    def pid(self, member: int) -> int:
        return self._supervisor.pid(member)

    def kill(self, member: int) -> None:
        self._supervisor.kill(member)

    def close(self) -> None:
        try:
            self._supervisor.stop_all()
        finally:
            shutil.rmtree(self._root, ignore_errors=True)


class KvstoreCluster(_ClusterBase):
    """kvstore nodes started as `python -m kvstore.node`, 3 replicas per partition; with `tls`,
    serving TLS with certificates made for them in the temp dir."""

    def __init__(self, size: int = 3, partitions: int = 64, tls: bool = False) -> None:
        super().__init__("kvstore-bench-", size)
        self._partitions = partitions
        ports = free_ports(size)
        self._addresses = {m: f"127.0.0.1:{ports[m - 1]}" for m in self.members}
        self._tls: TlsConfig | None = None
        self._credentials: grpc.ChannelCredentials | None = None
        try:
            certificates = init_certificates(self._root / "tls", size) if tls else None
            if certificates is not None:
                self._tls = TlsConfig(certificates.ca.cert, certificates.client.cert, certificates.client.key)
                self._credentials = client_credentials(self._tls)
            for member in self.members:
                tls_flags = [] if certificates is None else tls_arguments(
                    certificates.nodes[member].cert, certificates.nodes[member].key, certificates.ca.cert)
                self._supervisor.start(member, node_command(
                    member, self._addresses, self._root / f"node-{member}", partitions,
                    "--replication-factor", str(min(3, size)), *tls_flags,
                ))  # fmt: skip
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    @property
    def target(self) -> TargetSpec:
        return TargetSpec(TargetKind.KVSTORE, tuple(self._addresses.values()), self._tls)

    def _statuses(self) -> dict[int, pb.StatusResponse]:
        statuses = {}
        for member, address in self._addresses.items():
            status = node_status(address, credentials=self._credentials) if self._supervisor.alive(member) else None
            if status is not None:
                statuses[member] = status
        return statuses

    def _leaders(self) -> dict[int, int]:
        """partition -> the member that says it leads it now."""
        return leaders(self._statuses().values())

    def _wait_ready(self) -> None:
        def ready() -> bool:
            self._supervisor.check_alive()
            return len(self._statuses()) == self._size and len(self._leaders()) == self._partitions

        wait_ready(ready, f"{self._size} kvstore nodes with a leader for all {self._partitions} partitions")

    def failover_victim(self, round_number: int) -> tuple[int, list[bytes]]:
        leaders = self._leaders()
        # Rotate over members, so successive kills hit different nodes.
        for offset in range(self._size):
            victim = self.members[(round_number + offset) % self._size]
            led = sorted(p for p, member in leaders.items() if member == victim)
            if led:
                return victim, _one_key_per_partition(led, self._partitions)
        raise BenchError("no kvstore node leads a partition")

    def restart(self, member: int) -> None:
        self._supervisor.start(member)
        self._wait_ready()


def _one_key_per_partition(partitions: Sequence[int], partition_count: int) -> list[bytes]:
    wanted = set(partitions)
    keys: dict[int, bytes] = {}
    index = 0
    while len(keys) < len(wanted):
        key = f"failover/{index}".encode()
        partition = partition_for_key(key, partition_count)
        if partition in wanted:
            keys.setdefault(partition, key)
        index += 1
    return [keys[p] for p in sorted(keys)]


# The etcd failover writes this many keys; one Raft group holds them all.
ETCD_FAILOVER_KEYS = 8


class EtcdCluster(_ClusterBase):
    """etcd members with default settings (fsync on, 100 ms heartbeat, 1 s election timeout)."""

    def __init__(self, binary: str, size: int = 3) -> None:
        super().__init__("etcd-bench-", size)
        ports = free_ports(2 * size)
        self._client_urls = {m: f"http://127.0.0.1:{ports[m - 1]}" for m in self.members}
        peer_urls = {m: f"http://127.0.0.1:{ports[size + m - 1]}" for m in self.members}
        initial = ",".join(f"m{m}={url}" for m, url in peer_urls.items())
        self._member_ids: dict[int, int] = {}
        try:
            for member in self.members:
                self._supervisor.start(member, [
                    binary, "--name", f"m{member}", "--data-dir", str(self._root / f"m{member}"),
                    "--listen-client-urls", self._client_urls[member],
                    "--advertise-client-urls", self._client_urls[member],
                    "--listen-peer-urls", peer_urls[member], "--initial-advertise-peer-urls", peer_urls[member],
                    "--initial-cluster", initial, "--initial-cluster-token", "kvstore-bench",
                    "--initial-cluster-state", "new", "--logger", "zap", "--log-outputs", "stderr",
                ])
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _address(self, member: int) -> str:
        return self._client_urls[member].removeprefix("http://")

    @property
    def target(self) -> TargetSpec:
        return TargetSpec(TargetKind.ETCD, tuple(self._address(m) for m in self.members))

    def _statuses(self) -> dict[int, etcd_pb.StatusResponse]:
        statuses = {}
        for member in self.members:
            if not self._supervisor.alive(member):
                continue
            with grpc.insecure_channel(self._address(member)) as channel:
                try:
                    statuses[member] = etcd_grpc.MaintenanceStub(channel).Status(etcd_pb.StatusRequest(), timeout=1.0)
                except grpc.RpcError:
                    continue
        return statuses

    def _wait_ready(self) -> None:
        def ready() -> bool:
            self._supervisor.check_alive()
            statuses = self._statuses()
            for member, status in statuses.items():
                self._member_ids[member] = status.header.member_id
            return len(statuses) == self._size and all(s.leader != 0 for s in statuses.values())

        wait_ready(ready, f"{self._size} etcd members with a leader")

    def failover_victim(self, round_number: int) -> tuple[int, list[bytes]]:
        leader_ids = {status.leader for status in self._statuses().values()}
        by_id = {member_id: member for member, member_id in self._member_ids.items()}
        if len(leader_ids) != 1 or next(iter(leader_ids)) not in by_id:
            raise BenchError(f"etcd members disagree on the leader: {leader_ids}")
        return by_id[next(iter(leader_ids))], [f"failover/{i}".encode() for i in range(ETCD_FAILOVER_KEYS)]

    def restart(self, member: int) -> None:
        # Same command line: with a data dir present etcd rejoins and ignores the --initial-* flags.
        self._supervisor.start(member)
        self._wait_ready()


def start_cluster(kind: TargetKind, partitions: int, etcd_binary: str | None, tls: bool = False) -> LocalCluster:
    """A cluster of `kind`; `tls` applies to kvstore only (etcd runs as it always does)."""
    if kind is TargetKind.KVSTORE:
        return KvstoreCluster(partitions=partitions, tls=tls)
    if etcd_binary is None:
        raise BenchError("no etcd binary on PATH (Debian: apt-get install etcd-server, or `make bench`)")
    return EtcdCluster(etcd_binary)
