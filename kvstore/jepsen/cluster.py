"""Real node processes, one per network namespace: start, kill -9, pause, restart with a skewed
clock, add, remove and replace members, ask who leads what, stop. Nodes are driven only through
their command line, signals and the public client API (the membership RPCs included).

A `secure` cluster serves TLS to clients and peers alike (certificates from `kvstore.certs` for
the namespace addresses) and runs with auth enabled: the harness acts as root through the client
certificate (CN root), and the workload's clients sign in as the user `jepsen`, whose one role
grants readwrite on the workload's keys and nothing else. (Its members are the initial ones: a
node added later would need a certificate of its own.)
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kvstore.certs import ClusterCertificates, init_certificates
from kvstore.client import Client, KvError, Member, MemberState, NodeStatus, Permission, TlsConfig
from kvstore.jepsen.netns import Network
from kvstore.node.local import join_command, node_command, tls_arguments

NODE_PORT = 7000
WORKLOAD_USER = "jepsen"
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
_STOP_GRACE_S = 20.0
_STATUS_TIMEOUT_S = 2.0
_SETUP_TIMEOUT_S = 30.0
_POLL_INTERVAL_S = 0.2
# Membership changes go through the meta group's leader, which may be electing after a fault.
_MEMBERSHIP_TIMEOUT_S = 10.0
_MEMBERSHIP_CHANGE_S = 30.0


class ClusterError(RuntimeError):
    """The cluster did not reach a state the harness waited for; the message says which."""


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    node_ids: tuple[int, ...]
    partitions: int
    tick_ms: int = 100
    election_ticks: int = 10
    secure: bool = False  # TLS everywhere and auth enabled (the module docstring)
    key_prefix: str = ""  # what the workload's user may read and write, when secure


class Cluster:
    """The node processes of one run, on ``network``. Not thread-safe; owned by one event loop.

    The members change when a nemesis adds, removes or replaces nodes: ``node_ids`` are the
    members of now, each on a host (namespace) of its own. The initial nodes run with the initial
    peer list; a node added later runs with ``--join`` and the members of the moment as seeds.
    """

    def __init__(self, spec: ClusterSpec, network: Network, data_root: Path, log_dir: Path) -> None:
        self.spec = spec
        self.network = network
        self.data_root = data_root
        self.log_dir = log_dir
        self._hosts: dict[int, int] = {node_id: node_id for node_id in spec.node_ids}  # node id -> host
        self._joined: set[int] = set()  # nodes that run with --join
        self._removing: set[int] = set()  # asked to leave; stopped and forgotten once REMOVED
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self._paused: set[int] = set()
        self._admin: Client | None = None
        self.certificates: ClusterCertificates | None = None
        self._password = ""  # the workload user's, once `enable_auth` has made it

    @property
    def node_ids(self) -> tuple[int, ...]:
        """The members the harness runs now (REMOVED ones are dropped once settled)."""
        return tuple(sorted(self._hosts))

    def address(self, node_id: int) -> str:
        return f"{self.network.address_of(self._hosts[node_id])}:{NODE_PORT}"

    @property
    def endpoints(self) -> list[str]:
        return [self.address(node_id) for node_id in self.node_ids]

    def log_path(self, node_id: int) -> Path:
        return self.log_dir / f"node-{node_id}.log"

    def data_dir(self, node_id: int) -> Path:
        return self.data_root / f"node-{node_id}"

    def cut(self, links: Sequence[tuple[int, int]]) -> None:
        """Drop all traffic between each pair of nodes (by node id), both ways; ``heal`` undoes it."""
        self.network.cut([(self._hosts[a], self._hosts[b]) for a, b in links])

    def heal(self) -> None:
        self.network.heal()

    # ---- processes --------------------------------------------------------------------------

    def start(self, node_id: int, clock_rate: float | None = None) -> None:
        """Start the node in its namespace; with ``clock_rate`` its clocks (monotonic included) run
        that many times as fast as real time, through libfaketime."""
        if self.is_running(node_id):
            raise ClusterError(f"node {node_id} is already running")
        timing = ("--tick-ms", str(self.spec.tick_ms), "--election-ticks", str(self.spec.election_ticks))
        if node_id in self._joined:
            seeds = [self.address(peer) for peer in self.node_ids if peer != node_id]
            command = join_command(self.address(node_id), seeds, self.data_dir(node_id), *timing)
        else:
            initial = {peer: f"{self.network.address_of(peer)}:{NODE_PORT}" for peer in self.spec.node_ids}
            command = node_command(node_id, initial, self.data_dir(node_id), self.spec.partitions, *timing)
        if self.certificates is not None:
            own = self.certificates.nodes[node_id]
            command += tls_arguments(own.cert, own.key, self.certificates.ca.cert)
        skew: list[str] = []
        if clock_rate is not None:
            # `env` after `ip netns exec` so that only the node, not `ip`, runs on the fake clock.
            skew = [
                "env",
                f"LD_PRELOAD={LIBFAKETIME}",
                f"FAKETIME=+0 x{clock_rate:g}",
                "DONT_FAKE_MONOTONIC=0",
            ]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path(node_id).open("ab") as log:
            clock_note = "" if clock_rate is None else f" with its clock at x{clock_rate:g}"
            log.write(f"--- harness: starting node {node_id}{clock_note} at {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            self._processes[node_id] = subprocess.Popen(
                [*self.network.exec_prefix(self._hosts[node_id]), *skew, *command],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C on the terminal reaches the harness alone
            )
        self._paused.discard(node_id)

    def is_running(self, node_id: int) -> bool:
        process = self._processes.get(node_id)
        return process is not None and process.poll() is None

    def kill(self, node_id: int) -> None:
        """kill -9: no chance to flush or say goodbye."""
        process = self._processes.pop(node_id, None)
        self._paused.discard(node_id)
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()

    def pause(self, node_id: int) -> None:
        process = self._processes.get(node_id)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGSTOP)
            self._paused.add(node_id)

    def resume(self, node_id: int) -> None:
        process = self._processes.get(node_id)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)
        self._paused.discard(node_id)

    def stop(self, node_id: int) -> None:
        """SIGTERM (after SIGCONT, as a stopped process cannot act on it); SIGKILL after a grace period."""
        process = self._processes.pop(node_id, None)
        self._paused.discard(node_id)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop_all(self) -> None:
        for process in self._processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for node_id in list(self._processes):
            self.stop(node_id)

    # ---- membership ---------------------------------------------------------------------------

    def _membership_client(self) -> Client:
        return Client(self.endpoints, timeout=_MEMBERSHIP_TIMEOUT_S)

    async def _change_members(self, what: str, change: Callable[[Client], Awaitable[Member]],
                              took_effect: Callable[[Member], bool]) -> Member:
        """Run a membership change until the cluster has made it, for at most
        ``_MEMBERSHIP_CHANGE_S``. Right after a fault the meta group may have no leader (the
        change is refused) or lose it while the change is in flight (the outcome is unknown): the
        member list, read before trying again, says whether an earlier attempt took effect."""
        deadline = time.monotonic() + _MEMBERSHIP_CHANGE_S
        async with self._membership_client() as client:
            while True:
                try:
                    return await change(client)
                except KvError as error:
                    if time.monotonic() > deadline:
                        raise ClusterError(f"{what} did not succeed within {_MEMBERSHIP_CHANGE_S:g}s: {error}; "
                                           f"see {self.log_dir}") from None
                await asyncio.sleep(_POLL_INTERVAL_S)
                with contextlib.suppress(KvError):
                    done = [member for member in await client.members() if took_effect(member)]
                    if done:
                        return done[0]

    async def add_node(self) -> int:
        """Plug in a new host, add a member at its address (the cluster gives it its id) and start
        it there with ``--join``; its partitions then move to it. Returns its id."""
        host = 1 + max(self.network.hosts)
        await asyncio.to_thread(self.network.add_host, host)
        address = f"{self.network.address_of(host)}:{NODE_PORT}"
        added = await self._change_members(
            f"adding a member at {address}", lambda client: client.member_add(address),
            lambda member: member.address == address and member.state is not MemberState.REMOVED,
        )
        self._hosts[added.id] = host
        self._joined.add(added.id)
        self.start(added.id)
        return added.id

    async def remove_node(self, node_id: int) -> None:
        """Ask the cluster to remove ``node_id``: its partitions drain to the others first. The
        process runs on until ``wait_settled`` finds it REMOVED."""
        await self._change_members(
            f"removing node {node_id}", lambda client: client.member_remove(node_id),
            lambda member: member.id == node_id and member.state in (MemberState.LEAVING, MemberState.REMOVED),
        )
        self._removing.add(node_id)

    async def replace_node(self, node_id: int) -> int:
        """A node dies with its disk: kill -9, delete its data dir, then replace it by a fresh
        member at the same address (a new id: ids are never reused) started with ``--join``.
        Returns the new id."""
        await asyncio.to_thread(self.kill, node_id)
        await asyncio.to_thread(shutil.rmtree, self.data_dir(node_id), True)
        host, address = self._hosts[node_id], self.address(node_id)
        fresh = await self._change_members(
            f"replacing node {node_id}", lambda client: client.member_replace(node_id, address),
            lambda member: member.address == address and member.id != node_id and not member.lost
            and member.state is not MemberState.REMOVED,
        )
        del self._hosts[node_id]
        self._hosts[fresh.id] = host
        self._joined.add(fresh.id)
        self.start(fresh.id)
        return fresh.id

    async def wait_settled(self, timeout_s: float) -> None:
        """Wait until every node the harness runs is an ACTIVE member, no member is joining or
        leaving and no partition is moving; then stop the nodes removed meanwhile (a member is
        safe to stop once REMOVED, and the map lists it no more) and forget them."""
        deadline = time.monotonic() + timeout_s
        unsettled = "the cluster map was never read"
        async with self._membership_client() as client:
            while time.monotonic() < deadline:
                try:
                    layout = await client.partitions()
                except KvError as error:
                    unsettled = f"the cluster map could not be read: {error}"
                else:
                    states = {member.id: member.state for member in layout.members}
                    changing = sorted(node for node, state in states.items()
                                      if state in (MemberState.JOINING, MemberState.LEAVING))
                    staying = [node for node in self._hosts if node not in self._removing]
                    not_active = [node for node in staying if states.get(node) is not MemberState.ACTIVE]
                    moving = [info.id for info in layout.partitions if info.moving_to]
                    gone = [node for node in self._removing if states.get(node, MemberState.REMOVED) is MemberState.REMOVED]
                    if not changing and not not_active and not moving and len(gone) == len(self._removing):
                        for node_id in gone:
                            await asyncio.to_thread(self.stop, node_id)
                            del self._hosts[node_id]
                        self._removing.clear()
                        return
                    unsettled = (f"members joining or leaving {changing or 'none'}, not active {not_active or 'none'}, "
                                 f"partitions moving {moving or 'none'}")
                await asyncio.sleep(_POLL_INTERVAL_S)
        raise ClusterError(f"the membership change did not settle within {timeout_s:g}s: {unsettled}; "
                           f"see {self.log_dir}")

    # ---- what the nodes say -----------------------------------------------------------------

    @property
    def client_tls(self) -> TlsConfig | None:
        certs = self.certificates
        return None if certs is None else TlsConfig(certs.ca.cert, certs.client.cert, certs.client.key)

    def client(self, endpoints: Sequence[str], timeout_s: float) -> Client:
        """A client of the workload: in a secure cluster, signed in as the workload's user."""
        if self.certificates is None:
            return Client(endpoints, timeout=timeout_s)
        return Client(endpoints, timeout=timeout_s, tls=self.client_tls, user=WORKLOAD_USER, password=self._password)

    def make_certificates(self) -> None:
        """Certificates for every node's namespace address, and the root client's."""
        self.certificates = init_certificates(
            self.data_root / "tls", len(self.node_ids), hosts=[self.network.address_of(n) for n in self.node_ids])

    async def enable_auth(self) -> None:
        """Create root and the workload's user and role, and enable auth (as root, by certificate)."""
        self._password = secrets.token_urlsafe(12)
        async with Client(self.endpoints, timeout=_SETUP_TIMEOUT_S, tls=self.client_tls) as admin:
            await admin.auth.user_add("root", secrets.token_urlsafe(12))
            await admin.auth.enable()
            await admin.auth.role_add(WORKLOAD_USER)
            await admin.auth.role_grant(WORKLOAD_USER, self.spec.key_prefix, Permission.READWRITE)
            await admin.auth.user_add(WORKLOAD_USER, self._password)
            await admin.auth.user_grant_role(WORKLOAD_USER, WORKLOAD_USER)

    def _admin_client(self) -> Client:
        if self._admin is None:
            self._admin = Client(self.endpoints, timeout=_STATUS_TIMEOUT_S, tls=self.client_tls)
        return self._admin

    async def close_admin(self) -> None:
        if self._admin is not None:
            admin, self._admin = self._admin, None
            await admin.close()

    async def status(self, node_id: int) -> NodeStatus | None:
        """The node's own status, or None when it is down, paused or unreachable."""
        if not self.is_running(node_id) or node_id in self._paused:
            return None
        try:
            return await self._admin_client().status(self.address(node_id))
        except KvError:
            return None

    async def leaders(self) -> dict[int, int]:
        """Partition -> the node leading it, as the leaders themselves report (highest term wins)."""
        statuses = await asyncio.gather(*(self.status(node_id) for node_id in self.node_ids))
        best: dict[int, tuple[int, int]] = {}  # partition -> (term, node)
        for status in statuses:
            if status is None:
                continue
            for partition in status.partitions:
                if partition.leader == status.node_id:
                    if partition.id not in best or partition.term > best[partition.id][0]:
                        best[partition.id] = (partition.term, status.node_id)
        return {partition: node for partition, (_, node) in best.items()}

    async def leader_of(self, partition: int) -> int | None:
        return (await self.leaders()).get(partition)

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until every node runs and answers, and every partition has a leader."""
        wanted = set(range(self.spec.partitions))
        deadline = time.monotonic() + timeout_s
        led: set[int] = set()
        while time.monotonic() < deadline:
            statuses = await asyncio.gather(*(self.status(node_id) for node_id in self.node_ids))
            if all(status is not None for status in statuses):
                led = set(await self.leaders())
                if wanted <= led:
                    return
            await asyncio.sleep(_POLL_INTERVAL_S)
        down = [node_id for node_id in self.node_ids if not self.is_running(node_id)]
        raise ClusterError(
            f"the cluster was not ready within {timeout_s:g}s: nodes down {down or 'none'}, "
            f"partitions without a leader {sorted(wanted - led) or 'none'}; see {self.log_dir}"
        )

    async def wait_leader_change(self, partition: int, old_leader: int, timeout_s: float) -> int:
        """Wait until a node other than ``old_leader`` leads ``partition``; returns it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            statuses = await asyncio.gather(
                *(self.status(node_id) for node_id in self.node_ids if node_id != old_leader)
            )
            for status in statuses:
                if status is None:
                    continue
                for info in status.partitions:
                    if info.id == partition and info.leader == status.node_id:
                        return status.node_id
            await asyncio.sleep(_POLL_INTERVAL_S)
        raise ClusterError(f"no node other than {old_leader} took over partition {partition} within {timeout_s:g}s")


@contextlib.asynccontextmanager
async def running_cluster(
    spec: ClusterSpec, network: Network, data_root: Path, log_dir: Path, ready_timeout_s: float
) -> AsyncIterator[Cluster]:
    """Start every node, wait until all partitions are led, and stop them all on the way out."""
    cluster = Cluster(spec, network, data_root, log_dir)
    try:
        if spec.secure:
            cluster.make_certificates()
        for node_id in spec.node_ids:
            cluster.start(node_id)
        await cluster.wait_ready(ready_timeout_s)
        if spec.secure:
            await cluster.enable_auth()
        yield cluster
    finally:
        await cluster.close_admin()
        # Stopping waits on processes; off the loop thread so a Ctrl-C handler still runs.
        await asyncio.shield(asyncio.to_thread(cluster.stop_all))
