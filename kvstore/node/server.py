"""The node runtime: many Raft groups (one per hosted partition, and the meta group, the one
system group: the cluster state, users, roles and alarms) driven by one Ready loop.

`Node` is the `kvstore.rpc.Backend` the servicers delegate to. Only the Ready-loop task touches
Raft. RPC handlers and the transport put work into inboxes and wake the loop; each cycle of the
loop then:

1. ticks every group (when the ticker fired), steps received messages, proposes queued
   commands and queues read requests;
2. collects a `Ready` from every group that has one and persists them all in ONE engine
   write batch, synced when any Ready needs it (group commit) on a disk thread, while the
   loop keeps taking in requests and peer messages for the next cycle;
3. sends their messages (persist BEFORE send);
4. applies committed entries of all groups in one more batch — apply state travels in the
   same batch as the data it covers — then answers the waiting requests with the applier's
   responses, publishes the applied key changes to the change-notification hub (`kvstore/hub.py`:
   lock waiters, watches) and feeds the lease changes to the partition's lessor;
5. advances every group.

Membership: the meta group (`META_GROUP`) holds the cluster state (members, each partition's
replicas, moves under way, the epoch) and the control section (users, roles, auth on/off, the
token secret, the alarms: `kvstore.statemachine.control`, which the guard judges calls by);
every member hosts a replica of it, as a voter or a learner. Every few ticks the node reads the meta group linearizably and, once it applied that
far, reconciles itself with the state (`kvstore.node.reconcile`): it creates and deletes
replicas, proposes the conf changes of the moves it leads, hands leadership over, and reports
the steps it took to the meta group — all inside the loop, like every other Raft input.

The lessor of each partition this node leads (`lessor.py`, docs/locks.md) keeps lease
deadlines on the node's monotonic clock. It is promoted once an entry of the leader's own term
is applied (every earlier entry is then applied) and demoted when leadership is lost; the loop
polls it when it was fed something or its next deadline passed (checked every tick), proposes
its checkpoints and expiries, and starts a ReadIndex round for each batch of keepalives to
confirm leadership before they are acknowledged.

Lifecycle follows grpclib: `await start()`, `close()`, `await wait_closed()`; every task is
owned by the node and cancelled on close.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import itertools
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import meta_pb2, peer_pb2
from kvstore._pb.control_pb2 import ControlCommand
from kvstore._pb.internal_pb2 import LeaseCheckpoints, LeaseExpiries, LogCommand
from kvstore.codec import decode_tombstone, encode_tombstone
from kvstore.errors import (
    InvalidArgumentError,
    KvError,
    LeaseNotFoundError,
    LockNotHeldError,
    NotLeaderError,
    UnavailableError,
    WrongNodeError,
)
from kvstore.hub import ChangeHub, Cursor, HubTotals
from kvstore.node import membership
from kvstore.node.balance import GroupView, plan_leader_transfers
from kvstore.node.config import NodeConfig
from kvstore.node.identity import (
    IdentityError,
    PeerAdmission,
    derive_cluster_id,
    load_identity,
    open_identity,
)
from kvstore.node.lessor import Lessor, LessorConfig, LessorWork, MonotonicClock
from kvstore.node.metrics import NodeMetrics, timed
from kvstore.node.reconcile import (
    Action,
    CreateReplica,
    DeleteReplica,
    ProposeConfChange,
    ReportStep,
    TransferLeader,
    initial_meta_conf,
    reconcile,
)
from kvstore.node.replica import (
    BOOTSTRAP_INDEX,
    KeepAlive,
    PartitionReplica,
    Replica,
    Waiter,
    not_leader,
    open_group,
)
from kvstore.node.security import NodeSecurity
from kvstore.node.transport import KEEPALIVE_OPTIONS, PeerTransport
from kvstore.raft import (
    NONE,
    ConfChange,
    Config,
    ConfState,
    EntryType,
    Message,
    ProposalDroppedError,
    Ready,
    Role,
    SnapshotMeta,
    SoftState,
    Tombstone,
)
from kvstore.raft import NotLeaderError as RaftNotLeaderError
from kvstore.rpc.backend import Limits, MetaReader, PartitionStatus, PeerCaller, Reader
from kvstore.statemachine import LeaseCheckpointed, LeaseGranted, LeaseRemoved, WriteResponse, lease_partition
from kvstore.statemachine.cluster_state import ClusterState, CommandResult, MemberState
from kvstore.statemachine.control import Alarm, AlarmType, ControlState
from kvstore.statemachine.meta import META_GROUP, MetaStateMachine
from kvstore.storage import Engine, LevelDBEngine, StorageError, WriteBatch
from kvstore.storage.keys import TOMBSTONE_TAG, parse_group_key, prefix_end, tombstone_key
from kvstore.storage.raft_log import stored_groups

log = logging.getLogger("kvstore.node")

BALANCE_EVERY_TICKS = 10
RECONCILE_EVERY_TICKS = 5
FRESH_READ_TIMEOUT_TICKS = 30  # a read of the meta group lost on the way is asked again
REPORT_AGAIN_TICKS = 30  # a step report not seen applied by then is sent again
MOVES_AT_ONCE = 2  # moves the whole cluster runs at once: the rest of the machine serves clients
MAX_TRANSFERS_PER_ROUND = 2
MAX_TICKS_PER_CYCLE = 5  # after a stall, catch up a few ticks, not an election's worth
QUOTA_CHECK_S = 1.0
COMPACT_KEEP_ENTRIES = 1000  # at most this many entries stay behind a snapshot, so a slightly
# lagging follower catches up from the log instead of needing a whole snapshot
LOG_CACHE_BYTES = 8 << 20  # the log tails all hosted groups keep in memory, together (split
# evenly): enough for what leaders are replicating; a follower further behind is read from LevelDB


def group_name(group: int) -> str:
    """How logs name a Raft group: "partition 3", or "the meta group"."""
    return "the meta group" if group == META_GROUP else f"partition {group}"


class AddressInUseError(RuntimeError):
    pass


MetaReplica = Replica[MetaStateMachine, CommandResult]


class Node:
    def __init__(self, config: NodeConfig) -> None:
        config.validate()
        self.config = config
        self.node_id = config.node_id  # with --join, the cluster's choice, known once start() joined
        self.address = config.listen
        self.limits = Limits(config.max_key_bytes, config.max_value_bytes, config.request_timeout_s,
                             config.quota_backend_bytes)
        self.engine: Engine | None = None
        self.replicas: dict[int, PartitionReplica] = {}
        # Every group's replica, the meta group's too: what the Ready loop drives.
        self._groups: dict[int, Replica[Any, Any]] = {}
        self.meta: MetaReplica  # set by start()
        self._tombstones: dict[int, Tombstone] = {}
        self.metrics = NodeMetrics()
        self.security = NodeSecurity(config)
        self.transport: PeerTransport  # set by start(), once the node id and members are known
        self.admission: PeerAdmission  # set by start(), once the data dir's identity is known
        self._known_members: dict[int, str] = dict(config.peers)  # until the cluster state is known
        self._members: frozenset[int] = frozenset()  # ids of `_member_addresses()`, for every peer frame
        self._raft_config: Config
        self._rng = random.Random(time.time_ns())
        self._ticks_since_reconcile = 0
        self._fresh_read: tuple[int, asyncio.Future[Any]] | None = None  # (tick asked, future)
        self._reconcile_due = False
        self._reported: dict[tuple[int, int], int] = {}  # (partition, step) -> tick reported
        self._ticks = 0
        self._background: set[asyncio.Task[Any]] = set()
        self.fatal: IdentityError | StorageError | None = None  # why the node stopped on its own
        self.server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()
        self._closing = False
        self._pending_ticks = 0
        self._ticks_since_balance = 0
        self._inbound: list[tuple[int, Message]] = []
        self._proposals: list[tuple[Replica[Any, Any], bytes, asyncio.Future[Any]]] = []
        self._read_requests: list[tuple[Replica[Any, Any], int, bool, asyncio.Future[Any]]] = []
        self._unreachable: set[int] = set()
        self._carry_over: list[Replica[Any, Any]] = []
        self._snapshot_reports: list[tuple[int, int, bool]] = []
        self._request_ids = itertools.count(1)
        self._known_leaders: dict[int, tuple[int, int]] = {}  # partition -> (leader, term) last logged
        self._disk = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kvstore-fsync")
        self.started_at = time.monotonic()
        self.clock = MonotonicClock()
        self.lessor_config = LessorConfig()
        self.hub = ChangeHub()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, servicers: Sequence[Callable[[grpc.aio.Server], None]] = (),
                    interceptors: Sequence[grpc.aio.ServerInterceptor] = ()) -> None:
        """Open storage (joining the cluster first with --join and a new data dir), start
        serving `servicers` (each adds an RPC layer service to the server) through
        `interceptors`, then drive Raft."""
        config = self.config
        self.engine = engine = LevelDBEngine(str(config.data_dir / "db"))
        try:
            await self._open_groups(engine)
        except (IdentityError, StorageError, UnavailableError, WrongNodeError):
            engine.close()
            raise
        self.transport = PeerTransport(self.node_id, self._peer_addresses(), self.security, self._on_unreachable,
                                       self._on_snapshot_sent, self.metrics)
        # No SO_REUSEPORT: a second node on the same port must fail, not silently share it.
        self.server = grpc.aio.server(
            interceptors=interceptors,
            options=[*KEEPALIVE_OPTIONS, *self.security.server_options(), ("grpc.so_reuseport", 0)],
        )
        for add_servicer in servicers:
            add_servicer(self.server)
        try:
            port = self.security.add_port(self.server, config.listen)
        except RuntimeError:
            port = 0
        if port == 0:
            self.engine.close()
            raise AddressInUseError(f"cannot listen on {config.listen}: the address is in use or not available")
        await self.server.start()
        self.transport.start(self.admission)
        self._tasks = [
            asyncio.create_task(self._ticker(), name="ticker"),
            asyncio.create_task(self._ready_loop(), name="ready-loop"),
        ]
        if config.quota_backend_bytes:
            self._tasks.append(asyncio.create_task(self._watch_quota(), name="quota"))
        log.info("node %d of cluster %s serving %s (%s) with %d replicas", self.node_id,
                 self.admission.identity.cluster_id, config.listen, "TLS" if self.security.enabled else "plaintext",
                 len(self.replicas))

    async def _open_groups(self, engine: Engine) -> None:
        """The data dir's identity, then a replica of every group it holds. A new data dir is a
        new cluster's (with --peers: every initial node starts from the same cluster state and
        the same empty partitions) or a joining node's (with --join: the cluster says who it is;
        its replicas come from the leaders, as snapshots)."""
        config = self.config
        stored_identity = load_identity(engine)
        joined: membership.JoinInfo | None = None
        if config.join and stored_identity is None:
            joined = await membership.join(config.join, config.listen, self.security)
            self._known_members = dict(joined.members)
        if joined is not None:
            node_id, partitions, cluster_id = joined.node_id, joined.partitions, joined.cluster_id
        else:
            # A joined node restarts with --join alone: its data dir says who it is.
            node_id = config.node_id or (stored_identity.node_id if stored_identity is not None else 0)
            partitions = stored_identity.partitions if config.join and stored_identity is not None else config.partitions
            cluster_id = derive_cluster_id(config.initial_cluster_token, config.peers)
        identity = open_identity(engine, config.data_dir, node_id, partitions, lambda: cluster_id)
        self.node_id = identity.node_id
        self.admission = PeerAdmission(identity, engine, lambda: self._member_addresses().keys(), self._refused,
                                       also_counted=config.peers.keys())
        # Followers learn commits from the next append or heartbeat: half the messages per write.
        self._raft_config = Config(self.node_id, election_tick=config.election_ticks,
                                   heartbeat_tick=config.heartbeat_ticks, skip_bcast_commit=True)
        self._tombstones = {parse_group_key(key): decode_tombstone(raw)
                            for key, raw in engine.iterate(TOMBSTONE_TAG, prefix_end(TOMBSTONE_TAG))}
        stored = set(stored_groups(engine))
        initial = None
        if stored_identity is None and joined is None:  # a new cluster's first start
            initial = ClusterState.bootstrap(identity.cluster_id, config.peers, config.partitions,
                                             config.replication_factor, config.vnodes)
        start = None if initial is None else SnapshotMeta(1, 1, initial_meta_conf(initial))
        meta_sm = MetaStateMachine(engine, META_GROUP, initial)
        meta_log, meta_raw = open_group(engine, META_GROUP, meta_sm, self._raft_config, self._rng, start, None,
                                        self._log_cache_share(meta_sm.state))
        self.meta = Replica(META_GROUP, meta_log, meta_sm, meta_raw)
        self._groups[META_GROUP] = self.meta
        self._members = frozenset(self._member_addresses())
        for group in sorted(stored - {META_GROUP}):
            self._open_partition(group)
        if initial is not None:
            for partition, current in enumerate(initial.partitions):
                if self.node_id in current.replicas:
                    self._open_partition(
                        partition, SnapshotMeta(BOOTSTRAP_INDEX, 1, ConfState(frozenset(current.replicas))))

    def _open_partition(self, partition: int, start: SnapshotMeta | None = None) -> PartitionReplica:
        assert self.engine is not None
        replica = PartitionReplica.open(
            self.engine, partition, self._raft_config, self._rng, Lessor(self.clock, self.lessor_config),
            self._log_cache_share(self.meta.sm.state), start, self._tombstones.get(partition))
        self.replicas[partition] = self._groups[partition] = replica
        # The watch history holds what is applied from now on (docs/watch.md); a replica that
        # applied nothing but its bootstrap has all of its history (a new one gets a snapshot:
        # `replaced`).
        applied = replica.sm.applied_index
        self.hub.open(partition, applied, 0 if applied <= BOOTSTRAP_INDEX else None)
        return replica

    def _log_cache_share(self, state: ClusterState | None) -> int:
        """A group's part of LOG_CACHE_BYTES: split evenly among the groups `state` places on
        this node, the meta group included (among those open, while the state is not known)."""
        if state is None:
            hosted = len(self._groups) + 1
        else:
            hosted = 1 + sum(1 for current in state.partitions
                             if self.node_id in current.replicas or self.node_id in current.learners
                             or (current.move is not None and self.node_id in current.move.target))
        return LOG_CACHE_BYTES // max(1, hosted)

    # -- membership -------------------------------------------------------------------------

    @property
    def cluster_id(self) -> str:
        return self.admission.identity.cluster_id

    @property
    def cluster_state(self) -> ClusterState:
        """The cluster state this node has applied from the meta group."""
        state = self.meta.sm.state
        if state is None:
            raise UnavailableError(f"node {self.node_id} is joining and does not know the cluster state yet")
        return state

    @property
    def control_state(self) -> ControlState:
        """The control section (users, roles, auth on/off, alarms) this node has applied from the
        meta group; `UnavailableError` while it does not know the cluster state yet (it joined
        and waits for the meta group's snapshot: until then it knows neither)."""
        if self.meta.sm.state is None:
            raise UnavailableError(f"node {self.node_id} is joining and does not know the cluster's users yet")
        return self.meta.sm.control

    @property
    def meta_applied(self) -> int:
        """The index of the meta group's last entry applied here."""
        return self.meta.sm.applied_index

    @property
    def epoch(self) -> int:
        state = self.meta.sm.state
        return 0 if state is None else state.epoch

    def _member_addresses(self) -> dict[int, str]:
        state = self.meta.sm.state
        return state.addresses() if state is not None else self._known_members

    def is_member(self, node_id: int) -> bool:
        return node_id in self._members


    def _peer_addresses(self) -> dict[int, str]:
        return {node_id: address for node_id, address in self._member_addresses().items() if node_id != self.node_id}

    def propose_meta(self, command: meta_pb2.MetaCommand, forward: bool = True) -> asyncio.Future[CommandResult]:
        """Propose `command` to the meta group; the future resolves to its result once this node
        applied it, or, when another node leads the meta group, to the leader's answer (unless
        not `forward`: then NOT_LEADER, as the leader answers a command passed to it)."""
        meta = self.meta
        if meta.raw.role is Role.LEADER:
            future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
            self._proposals.append((meta, command.SerializeToString(), future))
            self._wake.set()
            return future
        leader = meta.raw.leader
        address = self._member_addresses().get(leader)
        if not forward or not address:
            known = f"node {leader} leads it" if leader else "no leader is known yet"
            raise NotLeaderError(f"node {self.node_id} does not lead the meta group; {known}", leader_hint=leader)
        task = asyncio.ensure_future(membership.forward(self.security, address, command))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _report(self, step: ReportStep) -> None:
        """Tell the meta group a step is done (again only after a while: a report may be lost,
        and a second one of the same step changes nothing)."""
        key = (step.partition, step.step)
        if self._ticks - self._reported.get(key, -REPORT_AGAIN_TICKS) < REPORT_AGAIN_TICKS:
            return
        self._reported[key] = self._ticks
        command = meta_pb2.MetaCommand(move_step_done=meta_pb2.MoveStepDone(partition=step.partition, step=step.step))
        try:
            future = self.propose_meta(command)
        except NotLeaderError:
            return
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # a lost report is sent again

    def _ask_fresh_state(self) -> None:
        """A linearizable read of the meta group: once this node applied that far, its copy of
        the state is fresh enough to act on (see `reconcile`), and reconcile runs."""
        if self._fresh_read is not None and self._ticks - self._fresh_read[0] < FRESH_READ_TIMEOUT_TICKS:
            return
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(self._fresh_state_read)
        self._fresh_read = (self._ticks, future)
        self._read_requests.append((self.meta, next(self._request_ids), True, future))

    def _fresh_state_read(self, future: asyncio.Future[Any]) -> None:
        failed = future.cancelled() or future.exception() is not None
        if self._fresh_read is not None and self._fresh_read[1] is future:
            self._fresh_read = None
            if not failed:
                self._reconcile_due = True
                self._wake.set()

    def _reconcile(self) -> list[Replica[Any, Any]]:
        """Carry out what reconcile asks of this node now; returns the groups it touched."""
        state = self.meta.sm.state
        if state is None:
            return []
        views = {partition: membership.replica_view(partition, replica.raw)
                 for partition, replica in self.replicas.items()}
        meta_view = membership.replica_view(META_GROUP, self.meta.raw)
        touched: list[Replica[Any, Any]] = []
        for action in reconcile(self.node_id, state, views, meta_view, MOVES_AT_ONCE):
            touched += self._act(action)
        return touched

    def _act(self, action: Action) -> list[Replica[Any, Any]]:
        if isinstance(action, ReportStep):
            self._report(action)
            return []
        if isinstance(action, CreateReplica):
            log.info("creating a replica of partition %d: a move brings it here", action.group)
            return [self._open_partition(action.group)]
        if isinstance(action, DeleteReplica):
            self._delete_partition(action.group)
            return []
        replica = self._groups[action.group]
        try:
            if isinstance(action, ProposeConfChange):
                log.info("%s: proposing %s of node %d", group_name(action.group), action.change.type.name,
                         action.change.node_id)
                replica.raw.propose_conf_change(action.change)
            elif isinstance(action, TransferLeader):
                replica.raw.transfer_leader(action.to)
        except (RaftNotLeaderError, ProposalDroppedError, ValueError) as e:
            log.debug("%s: %s not taken: %s", group_name(action.group), action, e)
        return [replica]

    def _delete_partition(self, partition: int) -> None:
        """Delete this node's replica of `partition` (it left the group), keeping a tombstone."""
        assert self.engine is not None
        replica = self.replicas.pop(partition)
        del self._groups[partition]
        self._carry_over = [r for r in self._carry_over if r is not replica]
        gone = WrongNodeError(f"node {self.node_id} no longer holds partition {partition}")
        replica.fail_waiters(gone)
        replica.demote_lessor(gone)
        self.hub.drop_partition(partition, gone.message)
        hard_state, last = replica.log.hard_state, replica.log.last_index()
        deleted = Tombstone(hard_state.term, hard_state.vote, last, replica.log.term(last))
        previous = self._tombstones.get(partition)
        tombstone = self._tombstones[partition] = deleted if previous is None else previous.merged(deleted)
        batch = self.engine.new_batch()
        replica.log.destroy(batch)
        replica.sm.destroy(batch)
        batch.put(tombstone_key(partition), encode_tombstone(tombstone))
        self.engine.write(batch, sync=True)
        log.info("deleted the replica of partition %d: it moved to other nodes", partition)

    def _refused(self, message: str) -> None:
        """A majority of the members refuse this node. After it was removed, that is how it
        learns it (the meta group lets it go at the same time): it stops, its work done."""
        state = self.meta.sm.state
        me = state.member(self.node_id) if state is not None else None
        if me is not None and me.state in (MemberState.LEAVING, MemberState.REMOVED):
            log.info("node %d has left the cluster (its peers no longer count it as a member): stopping",
                     self.node_id)
            self.close()
        else:
            self._fail(IdentityError(message))

    def _on_state_applied(self, before: ClusterState | None, state: ClusterState) -> None:
        """The meta group applied a new epoch: connect to new members, forget removed ones, and
        reconcile soon (after a fresh read: this copy may still lag)."""
        self._members = frozenset(self._member_addresses())
        self.transport.set_peers(self._peer_addresses())
        self._ask_fresh_state()
        if self.meta.raw.role is not Role.LEADER:
            return  # the meta leader tells the moves; every node applies them
        for partition, current in enumerate(state.partitions):
            previous = before.partitions[partition].move if before is not None else None
            if current.move is not None and previous is None:
                log.info("partition %d moves from %s to %s", partition, current.move.source, current.move.target)
            elif current.move is None and previous is not None:
                log.info("partition %d moved to %s", partition, current.replicas)

    def reload_certificates(self) -> None:
        """SIGHUP: new handshakes use the certificate files as they are now (if all are good)."""
        if self.security.reload():
            self.transport.certificates_changed()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        asyncio.get_running_loop().create_task(self._shutdown(), name="shutdown")

    async def _shutdown(self) -> None:
        """Stop taking requests, let in-flight ones finish briefly, then stop Raft and storage."""
        if self.server is not None:
            await self.server.stop(grace=1.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.transport.close()
        error = UnavailableError("the node is shutting down")
        for replica in self._groups.values():
            replica.fail_waiters(error)
        for replica in self.replicas.values():
            replica.demote_lessor(error)
        self.hub.close()
        for task in self._background:
            task.cancel()
        self._disk.shutdown(wait=True)  # a write still on the disk thread finishes first
        if self.engine is not None:
            self.engine.close()
        log.info("node %d stopped", self.node_id)
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def _fail(self, error: IdentityError | StorageError) -> None:
        """Stop because this node cannot go on (its data dir is damaged, or its peers refuse it);
        `fatal` tells why, in one line."""
        if self.fatal is None:
            self.fatal = error
            log.error("stopping: %s", error)
        self.close()

    # -- inputs (any task) ------------------------------------------------------------------

    def deliver(self, items: list[tuple[int, Message]]) -> None:
        """Messages from the transport; stepped by the Ready loop."""
        self._inbound.extend(items)
        self._wake.set()

    def peer_refusal(self, caller: PeerCaller) -> str | None:
        return self.security.peer_refusal(caller)

    def answer_hello(self, hello: peer_pb2.PeerHello) -> peer_pb2.PeerHello:
        return self.admission.hello(self.admission.judge(hello))

    def _on_unreachable(self, peer_id: int) -> None:
        self._unreachable.add(peer_id)
        self._wake.set()

    def _on_snapshot_sent(self, group: int, peer_id: int, ok: bool) -> None:
        self._snapshot_reports.append((group, peer_id, ok))
        self._wake.set()

    def replica(self, partition: int) -> PartitionReplica:
        replica = self.replicas.get(partition)
        if replica is None:
            raise WrongNodeError(f"node {self.node_id} holds no replica of partition {partition}")
        return replica

    # `propose` and `read` queue a request and return its future at once: the RPC layer hands
    # over a whole batch, then waits once.

    def propose(self, partition: int, command: bytes) -> asyncio.Future[WriteResponse]:
        """Queue `command` (a serialized `LogCommand`) for the partition's Raft group; the
        future resolves to the applier's response once the entry is committed and applied on
        this node."""
        if len(command) > self.config.max_request_bytes:
            # Peers refuse frames much past this size: such an entry could never be replicated.
            raise InvalidArgumentError(f"the request is {len(command)} bytes once encoded; the limit is "
                                       f"{self.config.max_request_bytes}")
        replica = self.replica(partition)
        replica.require_leader()
        future: asyncio.Future[WriteResponse] = asyncio.get_running_loop().create_future()
        self._proposals.append((replica, command, future))
        self._wake.set()
        return future

    def read(self, partition: int, consistency: int, min_revision: int) -> asyncio.Future[Reader]:
        """The future resolves to the partition's state machine once a read at `consistency`
        may be served from this replica: STALE at once; SESSION once it applied `min_revision`
        (read-your-writes); LINEARIZABLE on the leader after a ReadIndex round, LEASE on the
        leader from its lease when it holds (else as LINEARIZABLE)."""
        return self._read(self.replica(partition), consistency, min_revision)

    def read_meta(self, consistency: int, min_revision: int) -> asyncio.Future[MetaReader]:
        """The meta group's state machine, once a read at `consistency` may be served from this
        node's replica of it (as `read`)."""
        return self._read(self.meta, consistency, min_revision)

    def _read(self, replica: Replica[Any, Any], consistency: int, min_revision: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if consistency == pb.STALE or (consistency == pb.SESSION and replica.sm.applied_index >= min_revision):
            future.set_result(replica.sm)
        elif consistency == pb.SESSION:
            replica.session_waiters.append((min_revision, future))
        else:
            replica.require_leader()
            self._read_requests.append((replica, next(self._request_ids), consistency == pb.LEASE, future))
            self._wake.set()
        return future

    # Leases and locks (docs/locks.md).

    def lease_keys(self, lease: int) -> Sequence[bytes]:
        replica = self.replicas.get(lease_partition(lease))
        return () if replica is None else replica.sm.leases.keys(lease)

    def keep_alive(self, lease: int) -> asyncio.Future[int]:
        """Renew `lease` in its partition's lessor (this node must lead the partition); the
        future resolves to its TTL once no leader can expire it before that long from now."""
        partition = lease_partition(lease)
        replica = self.replica(partition)
        replica.require_leader()
        if not replica.lessor.primary:
            raise UnavailableError(
                f"node {self.node_id} was just elected leader of partition {partition} and does not keep "
                "lease deadlines yet; retry"
            )
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if not replica.lessor.keep_alive(lease, KeepAlive(lease, future)):
            raise LeaseNotFoundError(f"lease {lease} does not exist (expired or revoked)")
        replica.lessor_dirty = True
        self._wake.set()
        return future

    def lease_remaining(self, partition: int, lease: int) -> float | None:
        """Seconds before `lease` can expire at the earliest, as this node's lessor sees it;
        None when it keeps no deadline for it (it does not lead the partition, or not yet)."""
        return self.replica(partition).lessor.remaining(lease)

    async def hold_lock(self, partition: int, name: bytes, key: bytes) -> None:
        """Return once `key` heads the queue of the lock `name` in `partition` (its holder).

        Waits on the hub for the deletion of the key just ahead (its predecessor) or of `key`
        itself, then looks again: each deletion wakes the one waiter behind it. Raises
        `LockNotHeldError` when `key` is gone (unlocked, or its lease expired)."""
        replica = self.replica(partition)
        while True:
            queue = [queued for _, queued in replica.sm.lock_queue(name)]
            if key not in queue:
                raise LockNotHeldError(f"lock key {key!r:.80} is gone: its lease expired or it was unlocked")
            position = queue.index(key)
            if position == 0:
                return
            predecessor = queue[position - 1]
            # Ask before looking again, so that a deletion in between is not missed.
            waits = [self.hub.deleted(partition, predecessor), self.hub.deleted(partition, key)]
            try:
                queue = [queued for _, queued in replica.sm.lock_queue(name)]
                if key in queue and predecessor in queue and queue.index(key) == queue.index(predecessor) + 1:
                    done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    for future in done:
                        if future.exception() is not None:
                            raise UnavailableError(f"stopped waiting for lock key {key!r:.80}: {future.exception()}")
            finally:
                for future in waits:
                    future.cancel()

    def watch(self, partition: int, start: bytes, end: bytes | None, start_revision: int) -> Cursor:
        """A cursor over the changes this replica of `partition` applies to keys in ``[start,
        end)``, from `start_revision` on (0: from the next one), read from its watch history."""
        self.replica(partition)
        return self.hub.watch(partition, start, end, start_revision)

    def status(self) -> list[PartitionStatus]:
        result = []
        for partition, replica in sorted(self.replicas.items()):
            raw = replica.raw
            voters = tuple(sorted(raw.conf_state().voters))
            result.append(PartitionStatus(partition, voters, raw.leader, raw.term, raw.committed,
                                          replica.sm.applied_index))
        return result

    def db_size_bytes(self) -> int:
        return self.engine.approximate_size() if self.engine is not None else 0

    def stored_bytes(self) -> int:
        return sum(replica.sm.stored_bytes for replica in self.replicas.values())

    # -- the space quota --------------------------------------------------------------------

    async def _watch_quota(self) -> None:
        """Raise this member's NOSPACE alarm once its replicas' keys and values pass the quota,
        and clear it once deletes bring them back under: through the meta group, so every node
        refuses writes that add data (the guard) while any member's alarm is raised. Checked
        every `QUOTA_CHECK_S`; a change that fails (no leader yet) is tried again at the next
        check."""
        quota = self.config.quota_backend_bytes
        mine = Alarm(self.node_id, AlarmType.NOSPACE)
        while True:
            await asyncio.sleep(QUOTA_CHECK_S)
            if self.meta.sm.state is None:
                continue  # joining: the alarms are not known yet
            stored = self.stored_bytes()
            over, raised = stored > quota, mine in self.meta.sm.control.alarms
            if over == raised:
                continue
            alarm = pb.Alarm(node_id=self.node_id, type=pb.NOSPACE)
            change = ControlCommand(raise_alarm=alarm) if over else ControlCommand(clear_alarm=alarm)
            try:
                async with asyncio.timeout(self.config.request_timeout_s):
                    result = await self.propose_meta(meta_pb2.MetaCommand(control=change))
            except (KvError, TimeoutError) as error:
                log.info("could not %s the NOSPACE alarm yet: %s", "raise" if over else "clear", error)
                continue
            if result.refusal is not None:
                log.info("could not %s the NOSPACE alarm yet: %s", "raise" if over else "clear", result.message)
            elif over:
                log.warning("NOSPACE alarm raised: this node stores %d bytes of keys and values, over the quota of "
                            "%d; the cluster refuses writes that add data until deletes free space", stored, quota)
            else:
                log.warning("NOSPACE alarm cleared: this node stores %d bytes, under the quota of %d", stored, quota)

    def address_of(self, node_id: int) -> str:
        return self._member_addresses().get(node_id, "")

    def watch_totals(self) -> HubTotals:
        return self.hub.totals()

    def peer_connections(self) -> dict[int, bool]:
        return {peer_id: self.transport.connected(peer_id) for peer_id in self._peer_addresses()}

    # -- the loop ---------------------------------------------------------------------------

    async def _ticker(self) -> None:
        interval = self.config.tick_ms / 1000
        next_at = time.monotonic()
        while True:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            self._pending_ticks += 1
            self._wake.set()

    async def _ready_loop(self) -> None:
        cycle_seconds = self.metrics.ready_cycle_seconds
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                started = time.perf_counter()
                if await self.cycle():
                    self._wake.set()
                cycle_seconds.observe(time.perf_counter() - started)
            except asyncio.CancelledError:
                raise
            except StorageError as e:
                self._fail(e)
                return
            except Exception:
                # A bug: stop rather than risk acting on half-handled state.
                log.exception("fatal error in the Ready loop; stopping the node")
                self.close()
                return

    async def cycle(self) -> bool:
        """One turn of the Ready loop (the module docstring's steps); whether work is left."""
        touched = self._take_inputs()
        readies = [(r, r.raw.ready()) for r in touched if r.raw.has_ready()]
        if readies:
            await self._handle_readies(readies)
        # Applying may leave work behind (conf changes, more committed entries than one batch).
        if any(r.raw.has_ready() for r, _ in readies):
            self._carry_over = [r for r, _ in readies]
            return True
        return False

    def _take_inputs(self) -> list[Replica[Any, Any]]:
        """Feed queued inputs to Raft; returns the replicas that may now have a Ready."""
        touched: dict[int, Replica[Any, Any]] = {r.partition: r for r in self._carry_over}
        self._carry_over = []
        ticks = min(self._pending_ticks, MAX_TICKS_PER_CYCLE)
        self._pending_ticks = 0
        replicas = self._groups
        if ticks:
            touched = dict(replicas)
            for replica in replicas.values():
                for _ in range(ticks):
                    replica.raw.tick()
            self._ticks += ticks
            self._ticks_since_balance += ticks
            if self._ticks_since_balance >= BALANCE_EVERY_TICKS:
                self._ticks_since_balance = 0
                self._balance_leaders()
            self._ticks_since_reconcile += ticks
            if self._ticks_since_reconcile >= RECONCILE_EVERY_TICKS:
                self._ticks_since_reconcile = 0
                self._ask_fresh_state()
        if self._reconcile_due:
            self._reconcile_due = False
            for replica in self._reconcile():
                touched[replica.partition] = replica
        if self._unreachable:
            for peer_id in self._unreachable:
                for replica in replicas.values():
                    replica.raw.report_unreachable(peer_id)
            self._unreachable.clear()
        if self._snapshot_reports:
            reports, self._snapshot_reports = self._snapshot_reports, []
            for group, peer_id, ok in reports:
                replica = replicas.get(group)
                if replica is not None:
                    replica.raw.report_snapshot(peer_id, ok)
                    touched[group] = replica
        if self._inbound:
            inbound, self._inbound = self._inbound, []
            for group, message in inbound:
                replica = replicas.get(group)
                if replica is not None and replica.step(message):
                    touched[group] = replica
        if self._proposals:
            for replica in self._propose_queued():
                touched[replica.partition] = replica
        if self._read_requests:
            requests, self._read_requests = self._read_requests, []
            for replica, request_id, lease, future in requests:
                if future.done():
                    continue
                try:
                    replica.raw.read_index(request_id, lease)
                except RaftNotLeaderError:
                    future.set_exception(not_leader(replica.partition, replica.leader))
                    continue
                replica.reads[request_id] = future
                touched[replica.partition] = replica
        now = self.clock.now()
        for replica in self.replicas.values():
            raw = replica.raw
            if replica.lessor.primary and (raw.role is not Role.LEADER or raw.term != replica.lessor_term):
                replica.demote_lessor(not_leader(replica.partition, raw.leader))
            if replica.lessor.primary and (replica.lessor_dirty or now >= replica.lessor_due):
                if self._drive_lessor(replica):
                    touched[replica.partition] = replica
        return list(touched.values())

    def _drive_lessor(self, replica: PartitionReplica) -> bool:
        """Do what the replica's lessor asks now; whether Raft was given anything."""
        lessor = replica.lessor
        replica.lessor_dirty = False
        work = lessor.poll()
        for keep_alive, ttl in work.acknowledged:
            keep_alive.answer(ttl)
        for keep_alive in work.refused:
            keep_alive.refuse()
        gave = False
        if work.checkpoints:
            command = LogCommand(lease_checkpoints=LeaseCheckpoints())
            for checkpoint in work.checkpoints:
                command.lease_checkpoints.checkpoints.add(
                    id=checkpoint.lease, revision=checkpoint.revision, remaining_ms=checkpoint.remaining_ms
                )
            if self._propose_own(replica, command):
                gave = True
            else:
                lessor.checkpoints_dropped(work.checkpoints)
        if work.expiries:
            command = LogCommand(lease_expiries=LeaseExpiries())
            for expiry in work.expiries:
                command.lease_expiries.expiries.add(id=expiry.lease, revision=expiry.revision)
            gave = self._propose_own(replica, command) or gave  # if dropped, retried after expire_retry
        if work.confirm is not None:
            gave = self._confirm_leadership(replica, work) or gave
        due = lessor.next_deadline()
        replica.lessor_due = due if due is not None else float("inf")
        return gave

    def _propose_own(self, replica: PartitionReplica, command: LogCommand) -> bool:
        """Propose a command of this node's own (nobody waits for its answer)."""
        try:
            replica.raw.propose([command.SerializeToString()])
        except (RaftNotLeaderError, ProposalDroppedError):
            return False
        return True

    def _confirm_leadership(self, replica: PartitionReplica, work: LessorWork[KeepAlive]) -> bool:
        """Start the ReadIndex round that confirms the keepalives of `work.confirm`."""
        round_number = work.confirm
        assert round_number is not None
        request_id = next(self._request_ids)
        try:
            replica.raw.read_index(request_id, False)
        except RaftNotLeaderError:
            replica.lessor.confirmation_failed(round_number)
            return False
        future: asyncio.Future[Reader] = asyncio.get_running_loop().create_future()
        replica.reads[request_id] = future
        future.add_done_callback(functools.partial(self._leadership_confirmed, replica, round_number))
        return True

    def _leadership_confirmed(self, replica: PartitionReplica, round_number: int, future: asyncio.Future[Reader]) -> None:
        if future.cancelled() or future.exception() is not None:
            replica.lessor.confirmation_failed(round_number)
        else:
            replica.lessor.confirmed(round_number)
        replica.lessor_dirty = True
        self._wake.set()

    def _balance_leaders(self) -> None:
        views = []
        for partition, replica in self.replicas.items():
            raw = replica.raw
            views.append(GroupView(partition, raw.leader, raw.conf_state().voters, raw.transferring_leadership))
        state = self.meta.sm.state
        leaving = {m.id for m in state.members if m.state is not MemberState.ACTIVE} if state is not None else set()
        for partition, to in plan_leader_transfers(self.node_id, views, MAX_TRANSFERS_PER_ROUND):
            # Not to a member on its way out (its partitions are moving away) or in (still catching up).
            if self.transport.connected(to) and to not in leaving:
                log.info("handing the leadership of partition %d to node %d to balance leaders", partition, to)
                self.replicas[partition].raw.transfer_leader(to)

    def _propose_queued(self) -> list[Replica[Any, Any]]:
        by_replica: dict[int, list[tuple[bytes, asyncio.Future[Any]]]] = {}
        for replica, data, future in self._proposals:
            if not future.done() and replica.partition in self._groups:
                by_replica.setdefault(replica.partition, []).append((data, future))
        self._proposals = []
        for partition, items in by_replica.items():
            replica = self._groups[partition]
            raw = replica.raw
            try:
                last = raw.propose([data for data, _ in items])
            except (RaftNotLeaderError, ProposalDroppedError) as e:
                self.metrics.proposals_failed += len(items)
                error = (
                    not_leader(partition, e.leader_hint)
                    if isinstance(e, RaftNotLeaderError)
                    else UnavailableError(str(e))
                )
                for _, future in items:
                    future.set_exception(error)
                continue
            self.metrics.proposals += len(items)
            term = raw.term
            first = last - len(items) + 1
            for offset, (_, future) in enumerate(items):
                replica.proposals[first + offset] = Waiter(term, future)
        return [self._groups[partition] for partition in by_replica]

    async def _handle_readies(self, readies: list[tuple[Replica[Any, Any], Ready]]) -> None:
        engine = self.engine
        assert engine is not None
        metrics = self.metrics
        # 1. persist every group's Ready in one batch
        batch = engine.new_batch()
        must_sync = False
        entries = 0
        for replica, rd in readies:
            log_storage = replica.log
            if rd.snapshot is not None:
                log_storage.apply_snapshot(batch, rd.snapshot)
            if rd.entries:
                log_storage.append(batch, rd.entries)
                entries += len(rd.entries)
            if rd.hard_state is not None:
                log_storage.set_hard_state(batch, rd.hard_state)
            must_sync = must_sync or rd.must_sync
            if replica.compact_pending:
                self._stage_compaction(replica, batch)
                must_sync = True
        if len(batch):
            if must_sync:
                # The fsync runs on the disk thread (the GIL is released meanwhile), so the loop keeps
                # reading requests and peer frames; they all join the next cycle: group commit.
                # Shielded: a cancelled loop must not leave a write half-way when storage closes.
                write = functools.partial(engine.write, batch, sync=True)
                loop = asyncio.get_running_loop()
                metrics.fsync_seconds.observe(await asyncio.shield(loop.run_in_executor(self._disk, timed, write)))
            else:
                engine.write(batch, sync=False)
        metrics.ready_groups.observe(len(readies))
        if entries:
            metrics.ready_entries.observe(entries)
        # 2. send
        self.transport.send((replica.partition, message) for replica, rd in readies for message in rd.messages)
        # 3. apply
        apply_batch = engine.new_batch()
        completions: list[tuple[asyncio.Future[Any], Any]] = []
        before = self.meta.sm.state
        for replica, rd in readies:
            if rd.snapshot is not None:
                replica.sm.restore(apply_batch, rd.snapshot)
                metrics.snapshots_installed += 1
                log.info("%s installed a snapshot at index %d from the leader",
                         group_name(replica.partition), rd.snapshot.meta.index)
            if rd.committed_entries:
                self._apply(replica, rd, apply_batch, completions)
                metrics.entries_applied += len(rd.committed_entries)
        if len(apply_batch):
            engine.write(apply_batch, sync=False)
        for future, response in completions:
            if not future.done():
                future.set_result(response)
        for replica, rd in readies:
            if isinstance(replica, PartitionReplica):
                if rd.snapshot is not None:
                    self.hub.replaced(replica.partition, rd.snapshot.meta.index)
                self._after_apply(replica)
        state = self.meta.sm.state
        if state is not None and state is not before:
            self._on_state_applied(before, state)
        # 4. reads, role changes, advance
        for replica, rd in readies:
            if rd.soft_state is not None:
                self._note_leader(replica, rd.soft_state)
                if rd.soft_state.role is not Role.LEADER:
                    error = not_leader(replica.partition, rd.soft_state.leader)
                    replica.fail_waiters(error)
                    if isinstance(replica, PartitionReplica) and replica.lessor.primary:
                        replica.demote_lessor(error)
            if rd.read_states:
                replica.ready_reads.extend((rs.index, rs.request_id) for rs in rd.read_states)
            replica.serve_reads()
            replica.raw.advance(rd)
            if replica.sm.applied_index - replica.log.first_index() > self.config.snapshot_entries:
                replica.compact_pending = True

    def _note_leader(self, replica: Replica[Any, Any], soft_state: SoftState) -> None:
        """One log line (and one count) per leader a group gets, a leader being a node in a
        term; losing a leader is not logged: the election that follows is."""
        partition, leader = replica.partition, soft_state.leader
        if leader == NONE:
            return
        term = replica.raw.term
        if self._known_leaders.get(partition) == (leader, term):
            return
        self._known_leaders[partition] = (leader, term)
        self.metrics.leader_changes += 1
        what = group_name(partition)
        if leader == self.node_id:
            self.metrics.elections_won += 1
            log.info("%s: won the election in term %d; this node leads it", what, term)
        else:
            log.info("%s: node %d leads it in term %d", what, leader, term)

    def _apply(self, replica: Replica[Any, Any], rd: Ready, batch: WriteBatch,
               completions: list[tuple[asyncio.Future[Any], Any]]) -> None:
        outcomes = replica.sm.apply(batch, rd.committed_entries)
        raw = replica.raw
        if (
            outcomes
            and isinstance(replica, PartitionReplica)
            and not replica.lessor.primary
            and raw.role is Role.LEADER
            and outcomes[-1][0].term == raw.term
        ):
            replica.promote_pending = True  # an entry of its own term: every earlier one is applied
        proposals = replica.proposals
        for entry, response in outcomes:
            if entry.type is EntryType.CONF_CHANGE:
                replica.raw.apply_conf_change(ConfChange.decode(entry.data))
            waiter = proposals.pop(entry.index, None) if proposals else None
            if waiter is None or waiter.future.done():
                continue
            if waiter.term == entry.term and response is not None:
                completions.append((waiter.future, response))
            else:
                # A newer leader's entry took the index of ours: ours was never applied.
                waiter.future.set_exception(not_leader(replica.partition, replica.leader))

    def _after_apply(self, replica: PartitionReplica) -> None:
        """The apply batch is written: publish the key changes, feed the lessor, promote it."""
        changes, events = replica.sm.take_events()
        self.hub.publish(replica.partition, replica.sm.applied_index, changes)
        lessor = replica.lessor
        if lessor.primary and events:
            for event in events:
                if isinstance(event, LeaseGranted):
                    lessor.granted(event.lease)
                elif isinstance(event, LeaseRemoved):
                    for keep_alive in lessor.removed(event.lease):
                        keep_alive.refuse()
                elif isinstance(event, LeaseCheckpointed):
                    lessor.checkpointed(event.lease, event.remaining_ms)
            replica.lessor_dirty = True
        if replica.promote_pending:
            replica.promote_pending = False
            if replica.raw.role is Role.LEADER and not lessor.primary:
                replica.promote_lessor()
        if replica.lessor_dirty:
            self._wake.set()

    def _stage_compaction(self, replica: Replica[Any, Any], batch: WriteBatch) -> None:
        """Record a snapshot point at the applied index and drop the log behind it. This batch
        is synced and comes after the apply batch that made `applied` durable-in-order, so a
        restart never finds its log compacted beyond its applied state."""
        replica.compact_pending = False
        applied = replica.sm.applied_index
        if applied <= replica.log.first_index():
            return
        replica.log.set_snapshot_meta(batch, replica.sm.applied)
        keep = min(COMPACT_KEEP_ENTRIES, self.config.snapshot_entries // 2)
        replica.log.compact(batch, max(replica.log.first_index(), applied - keep))
