"""What the RPC layer needs from a node: the `Backend` protocol, and `MemoryBackend`, an
in-memory implementation (the real applier without Raft) that the services' tests run against.

The servicers know a node only through `Backend`; `kvstore.node.server.Node` implements it.
Which read path a consistency level takes, leadership, waiting for a revision, lease deadlines,
waiting for a lock and the watch history are the node's business: the servicers validate, call
`propose`, `read`, `keep_alive`, `hold_lock` or `watch`, and fill in the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import meta_pb2, peer_pb2
from kvstore._pb.internal_pb2 import LeaseExpiries, LogCommand
from kvstore.errors import (
    KvError,
    LeaseNotFoundError,
    LockNotHeldError,
    NotLeaderError,
    UnavailableError,
    WrongNodeError,
)
from kvstore.hub import ChangeHub, Cursor
from kvstore.raft import ConfState, Entry, Message, SnapshotMeta
from kvstore.statemachine import Lease, PartitionStateMachine, WriteResponse, lease_partition
from kvstore.statemachine.cluster_state import ClusterState, CommandResult
from kvstore.statemachine.control import ControlState
from kvstore.statemachine.meta import META_GROUP, MetaStateMachine
from kvstore.storage import MemoryEngine


class LeaseReader(Protocol):
    """A partition's lease table as a replica applied it."""

    def get(self, lease: int) -> Lease | None: ...

    def leases(self) -> list[Lease]:
        """Every lease, by id."""
        ...

    def keys(self, lease: int) -> list[bytes]:
        """The keys attached to `lease`, in byte order."""
        ...


class Reader(Protocol):
    """A replica's state machine, handed out once a read may be served from it."""

    @property
    def applied_index(self) -> int: ...

    @property
    def leases(self) -> LeaseReader: ...

    def get(self, key: bytes) -> pb.KeyValue | None: ...

    def scan(self, start: bytes, end: bytes | None, limit: int) -> tuple[list[pb.KeyValue], bool]: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """What a node accepts from clients."""

    max_key_bytes: int
    max_value_bytes: int
    request_timeout_s: float  # when the request does not say (RequestHeader.timeout_ms)
    quota_backend_bytes: int = 0  # the space quota this node watches its storage against (0: none)


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    """One hosted partition as this node sees it."""

    partition: int
    replicas: tuple[int, ...]
    leader: int  # 0: unknown
    term: int
    commit: int
    applied: int


class PeerCaller(Protocol):
    """What the peer check reads of a Peer RPC's gRPC context (`grpc.aio.ServicerContext`)."""

    def auth_context(self) -> Mapping[str, Iterable[bytes]]: ...

    def peer(self) -> str: ...


class MetaReader(Protocol):
    """The meta group's replica, handed out once a read may be served from it."""

    @property
    def applied_index(self) -> int: ...

    @property
    def control(self) -> ControlState: ...


class Backend(Protocol):
    """The node, as the services and the guard use it.

    `propose` and `read` raise a `KvError` at once when the node cannot take the request
    (NOT_LEADER, WRONG_NODE); otherwise their future resolves to the answer or fails with one.
    A caller that gives up cancels the future, and the node skips it if it can.
    """

    @property
    def node_id(self) -> int: ...

    @property
    def address(self) -> str: ...

    @property
    def cluster_id(self) -> str: ...

    @property
    def cluster_state(self) -> ClusterState:
        """The cluster state as this node applied it (members, each partition's replicas, the
        moves under way, the epoch); `UnavailableError` while a joining node has none yet."""
        ...

    @property
    def epoch(self) -> int:
        """The epoch of `cluster_state` (0 while there is none)."""
        ...

    @property
    def limits(self) -> Limits: ...

    def address_of(self, node_id: int) -> str:
        """The address of a member ("" when unknown)."""
        ...

    def propose(self, partition: int, command: bytes) -> asyncio.Future[WriteResponse]:
        """Replicate `command` (a serialized `LogCommand`) through the partition's Raft group;
        the future resolves to the applier's response once this node applied it."""
        ...

    def read(self, partition: int, consistency: int, min_revision: int) -> asyncio.Future[Reader]:
        """The future resolves to the partition's replica once a read at `consistency` (a
        `ReadConsistency`) may be served from it; `min_revision` is a SESSION read's floor."""
        ...

    @property
    def control_state(self) -> ControlState:
        """The meta group's control section (users, roles, auth on/off, alarms) as this node has
        applied it; `UnavailableError` while a joining node does not know it yet."""
        ...

    @property
    def meta_applied(self) -> int:
        """The index of the meta group's last entry applied here (the control revision)."""
        ...

    def read_meta(self, consistency: int, min_revision: int) -> asyncio.Future[MetaReader]:
        """The meta group's state machine once a read at `consistency` may be served from it, as
        `read`."""
        ...

    def lease_keys(self, lease: int) -> Sequence[bytes]:
        """The keys attached to `lease` as this node's replica of its partition has applied them
        (none when it holds no replica of that partition)."""
        ...

    def keep_alive(self, lease: int) -> asyncio.Future[int]:
        """Renew `lease` on this node, which must lead its partition; the future resolves to
        the lease's TTL once no leader can expire it before that long from now (docs/locks.md),
        or fails with LEASE_NOT_FOUND when it expires or is revoked meanwhile."""
        ...

    def lease_remaining(self, partition: int, lease: int) -> float | None:
        """Seconds before `lease` can expire at the earliest, as this node's lessor sees it;
        None when it keeps no deadline for it (it does not lead the partition, or not yet)."""
        ...

    async def hold_lock(self, partition: int, name: bytes, key: bytes) -> None:
        """Return once lock key `key` heads the queue of the lock named `name` (FIFO by create
        revision); LOCK_NOT_HELD when the key is gone (unlocked, or its lease expired)."""
        ...

    def watch(self, partition: int, start: bytes, end: bytes | None, start_revision: int) -> Cursor:
        """A cursor over the changes this replica of `partition` applies to the keys in
        ``[start, end)`` (`end` None: to the partition's end), from `start_revision` on (0: from
        the next revision applied), read from its watch history (docs/watch.md); COMPACTED when
        the history no longer reaches back that far, WRONG_NODE when the node holds no replica."""
        ...

    def status(self) -> list[PartitionStatus]: ...

    def db_size_bytes(self) -> int: ...

    def stored_bytes(self) -> int:
        """The bytes of the keys and values of every replica this node holds (what the space quota
        counts)."""
        ...

    def deliver(self, items: list[tuple[int, Message]]) -> None:
        """Raft messages (group, message) received from a peer."""
        ...

    def peer_refusal(self, caller: PeerCaller) -> str | None:
        """Why `caller` may not use the Peer service (with TLS: it presented no peer certificate
        from the peer CA), or None to admit it."""
        ...

    def answer_hello(self, hello: peer_pb2.PeerHello) -> peer_pb2.PeerHello:
        """This node's hello in reply to a peer's, with the reason it refuses the peer if it does
        (another cluster, not a member, a known id with another data dir)."""
        ...

    def is_member(self, node_id: int) -> bool:
        """Whether `node_id` is a member this node talks to (not removed, not replaced)."""
        ...

    def propose_meta(self, command: meta_pb2.MetaCommand, forward: bool = True) -> asyncio.Future[CommandResult]:
        """Propose a command to the meta group (a membership change, or a change of the control
        section); the future resolves to its result once applied. A node that does not lead the meta group passes it to the leader (unless not
        `forward`: then it raises `NotLeaderError`)."""
        ...


_FOLLOWER_READS = (pb.STALE, pb.SESSION)


@dataclass(eq=False)
class MemoryBackend:
    """A `Backend` in memory: one node hosting every partition, which applies each proposal at
    once with the real applier over a `MemoryEngine` (no Raft, no log).

    Test knobs: `leaders[partition]` names another node as the partition's leader (proposals and
    leader reads there are refused with NOT_LEADER and that hint); meta commands are applied at
    once by the real meta applier, as if this node led the meta group; with `hold_proposals`,
    proposals wait until `apply_held()` or `fail_held()`; `refuse_peers` is the reason every
    Peer caller is refused (None: every caller is admitted, as by a plaintext node); `joining`
    makes the control section unknown, as on a node that joined and awaits the meta group's
    snapshot. Leases keep
    no time here: a keepalive of an existing lease is answered at once, and `expire(lease)`
    applies the expiry a node's lessor would propose. Lock waiters look again after every apply
    (the node's hub wakes only the next waiter). Applied changes go to a change hub, as on a
    node, which serves `watch`.
    """

    node_id: int = 1
    members: Mapping[int, str] = field(
        default_factory=lambda: {1: "10.0.0.1:2379", 2: "10.0.0.2:2379", 3: "10.0.0.3:2379"}
    )
    partitions: int = 4
    limits: Limits = Limits(max_key_bytes=64, max_value_bytes=64, request_timeout_s=5.0)
    cluster_id: str = "kvstore"
    hold_proposals: bool = False
    refuse_peers: str | None = None
    joining: bool = False  # as a node that joined and has no meta state yet: no users, no alarms known
    leaders: dict[int, int] = field(default_factory=dict)
    delivered: list[tuple[int, Message]] = field(default_factory=list)
    held: list[tuple[int, bytes, asyncio.Future[WriteResponse]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._engine = MemoryEngine()
        initial = ClusterState.bootstrap(self.cluster_id, self.members, self.partitions, len(self.members), 16)
        self.meta = MetaStateMachine(self._engine, META_GROUP, initial)
        batch = self._engine.new_batch()
        self.meta.bootstrap(batch, SnapshotMeta(1, 1, ConfState(frozenset(self.members))))
        self._engine.write(batch, sync=False)
        self._machines = {p: PartitionStateMachine(self._engine, p) for p in range(self.partitions)}
        self._session_reads: list[tuple[int, int, asyncio.Future[Reader]]] = []
        self._applied = asyncio.Event()
        self.hub = ChangeHub()
        for partition in self._machines:
            self.hub.open(partition, 0)

    @property
    def cluster_state(self) -> ClusterState:
        state = self.meta.state
        assert state is not None  # bootstrapped
        return state

    @property
    def address(self) -> str:
        return self.members[self.node_id]

    @property
    def epoch(self) -> int:
        return self.cluster_state.epoch

    def is_member(self, node_id: int) -> bool:
        return node_id in self.cluster_state.addresses()

    def propose_meta(self, command: meta_pb2.MetaCommand, forward: bool = True) -> asyncio.Future[CommandResult]:
        """Applies the command to the meta state at once."""
        batch = self._engine.new_batch()
        ((_, result),) = self.meta.apply(batch, [Entry(self.meta.applied_index + 1, 1, command.SerializeToString())])
        self._engine.write(batch, sync=False)
        assert result is not None  # an entry with a command has a result
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        future.set_result(result)
        return future

    def address_of(self, node_id: int) -> str:
        return self.members.get(node_id, "")

    def _machine(self, partition: int) -> PartitionStateMachine:
        machine = self._machines.get(partition)
        if machine is None:
            raise WrongNodeError(f"node {self.node_id} holds no replica of partition {partition}")
        return machine

    def _require_leader(self, partition: int) -> None:
        leader = self.leaders.get(partition, self.node_id)
        if leader != self.node_id:
            raise NotLeaderError(f"node {self.node_id} does not lead partition {partition}", leader_hint=leader)

    def propose(self, partition: int, command: bytes) -> asyncio.Future[WriteResponse]:
        self._machine(partition)
        self._require_leader(partition)
        future: asyncio.Future[WriteResponse] = asyncio.get_running_loop().create_future()
        self.held.append((partition, command, future))
        if not self.hold_proposals:
            self.apply_held()
        return future

    def apply_held(self) -> None:
        """Apply every held proposal whose caller still waits, in order, and answer it."""
        held, self.held = self.held, []
        for partition, command, future in held:
            if future.done():
                continue
            response = self._apply(partition, command)
            if response is not None:
                future.set_result(response)
        waiting = []
        for partition, revision, read in self._session_reads:
            if self._machines[partition].applied_index >= revision:
                if not read.done():
                    read.set_result(self._machines[partition])
            else:
                waiting.append((partition, revision, read))
        self._session_reads = waiting

    def _apply(self, partition: int, command: bytes) -> WriteResponse | None:
        machine = self._machines[partition]
        batch = self._engine.new_batch()
        ((_, response),) = machine.apply(batch, [Entry(machine.applied_index + 1, 1, command)])
        self._engine.write(batch, sync=False)
        self.hub.publish(partition, machine.applied_index, machine.take_events()[0])
        self._applied.set()
        self._applied = asyncio.Event()
        return response

    def expire(self, lease: int) -> None:
        """Apply the expiry of `lease`, as a node's lessor proposes it when its deadline passed."""
        found = self._machine(lease_partition(lease)).leases.get(lease)
        if found is None:
            raise LeaseNotFoundError(f"lease {lease} does not exist")
        command = LogCommand(lease_expiries=LeaseExpiries())
        command.lease_expiries.expiries.add(id=lease, revision=found.revision)
        self._apply(lease_partition(lease), command.SerializeToString())

    def lease_keys(self, lease: int) -> Sequence[bytes]:
        machine = self._machines.get(lease_partition(lease))
        return () if machine is None else machine.leases.keys(lease)

    def keep_alive(self, lease: int) -> asyncio.Future[int]:
        partition = lease_partition(lease)
        found = self._machine(partition).leases.get(lease)
        self._require_leader(partition)
        if found is None:
            raise LeaseNotFoundError(f"lease {lease} does not exist")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.set_result(found.ttl)
        return future

    def lease_remaining(self, partition: int, lease: int) -> float | None:
        return None

    async def hold_lock(self, partition: int, name: bytes, key: bytes) -> None:
        machine = self._machine(partition)
        while True:
            queue = [queued for _, queued in machine.lock_queue(name)]
            if key not in queue:
                raise LockNotHeldError(f"lock key {key!r} is gone")
            if queue[0] == key:
                return
            await self._applied.wait()

    def watch(self, partition: int, start: bytes, end: bytes | None, start_revision: int) -> Cursor:
        self._machine(partition)
        return self.hub.watch(partition, start, end, start_revision)

    def fail_held(self, error: KvError) -> None:
        """Fail every held proposal with `error`, as a node that lost its leadership does."""
        held, self.held = self.held, []
        for _, _, future in held:
            if not future.done():
                future.set_exception(error)

    def read(self, partition: int, consistency: int, min_revision: int) -> asyncio.Future[Reader]:
        machine = self._machine(partition)
        if consistency not in _FOLLOWER_READS:
            self._require_leader(partition)
        future: asyncio.Future[Reader] = asyncio.get_running_loop().create_future()
        if consistency == pb.SESSION and machine.applied_index < min_revision:
            self._session_reads.append((partition, min_revision, future))
        else:
            future.set_result(machine)
        return future

    @property
    def control_state(self) -> ControlState:
        if self.joining:
            raise UnavailableError(f"node {self.node_id} is joining and does not know the cluster's users yet")
        return self.meta.control

    @property
    def meta_applied(self) -> int:
        return self.meta.applied_index

    def read_meta(self, consistency: int, min_revision: int) -> asyncio.Future[MetaReader]:
        future: asyncio.Future[MetaReader] = asyncio.get_running_loop().create_future()
        future.set_result(self.meta)  # everything proposed here is applied at once
        return future

    def status(self) -> list[PartitionStatus]:
        return [
            PartitionStatus(
                partition,
                self.cluster_state.partitions[partition].replicas,
                self.leaders.get(partition, self.node_id),
                1,
                machine.applied_index,
                machine.applied_index,
            )
            for partition, machine in sorted(self._machines.items())
        ]

    def db_size_bytes(self) -> int:
        return self._engine.approximate_size()

    def stored_bytes(self) -> int:
        return sum(machine.stored_bytes for machine in self._machines.values())

    def deliver(self, items: list[tuple[int, Message]]) -> None:
        self.delivered.extend(items)

    def peer_refusal(self, caller: PeerCaller) -> str | None:
        return self.refuse_peers

    def answer_hello(self, hello: peer_pb2.PeerHello) -> peer_pb2.PeerHello:
        refusal = peer_pb2.ACCEPTED if hello.cluster_id == self.cluster_id else peer_pb2.OTHER_CLUSTER
        return peer_pb2.PeerHello(node_id=self.node_id, cluster_id=self.cluster_id, refusal=refusal)
