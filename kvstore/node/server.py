"""The node runtime: many Raft groups (one per hosted partition, and the control group that holds
users, roles and alarms, `kvstore.statemachine.control`) driven by one Ready loop.

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
   responses, publishes the applied key changes to the change-notification hub (`hub.py`:
   lock waiters, watches) and feeds the lease changes to the partition's lessor;
5. advances every group.

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
from kvstore._pb import peer_pb2, peer_pb2_grpc
from kvstore._pb.control_pb2 import ControlCommand
from kvstore._pb.internal_pb2 import LeaseCheckpoints, LeaseExpiries, LogCommand
from kvstore.errors import (
    InvalidArgumentError,
    KvError,
    LeaseNotFoundError,
    LockNotHeldError,
    UnavailableError,
    WrongNodeError,
)
from kvstore.node.balance import GroupView, plan_leader_transfers
from kvstore.node.config import NodeConfig
from kvstore.node.hub import ChangeHub
from kvstore.node.lessor import Lessor, LessorConfig, LessorWork, MonotonicClock
from kvstore.node.metrics import NodeMetrics, timed
from kvstore.node.replica import KeepAlive, PartitionReplica, Replica, Waiter, group_name, not_leader
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
    SoftState,
)
from kvstore.raft import NotLeaderError as RaftNotLeaderError
from kvstore.ring import ClusterMap
from kvstore.rpc.backend import ControlReader, Limits, PartitionStatus, PeerCaller, Reader
from kvstore.statemachine import (
    LeaseCheckpointed,
    LeaseGranted,
    LeaseRemoved,
    PartitionStateMachine,
    WriteResponse,
    lease_partition,
)
from kvstore.statemachine.control import Alarm, AlarmType, ControlState
from kvstore.statemachine.control_group import CONTROL_GROUP, ControlStateMachine
from kvstore.storage import Engine, LevelDBEngine, WriteBatch

log = logging.getLogger("kvstore.node")

BALANCE_EVERY_TICKS = 10
MAX_TRANSFERS_PER_ROUND = 2
MAX_TICKS_PER_CYCLE = 5  # after a stall, catch up a few ticks, not an election's worth
QUOTA_CHECK_S = 1.0
MAX_CONTROL_VOTERS = 5  # the control group's voters: the lowest ids; every other node learns
COMPACT_KEEP_ENTRIES = 1000  # at most this many entries stay behind a snapshot, so a slightly
# lagging follower catches up from the log instead of needing a whole snapshot
LOG_CACHE_BYTES = 8 << 20  # the log tails all hosted groups keep in memory, together (split
# evenly): enough for what leaders are replicating; a follower further behind is read from LevelDB
CONTROL_LOG_CACHE_BYTES = 256 << 10  # the control group's log tail: its entries are few and small


class AddressInUseError(RuntimeError):
    pass


class Node:
    def __init__(self, config: NodeConfig) -> None:
        config.validate()
        self.config = config
        self.node_id = config.node_id
        self.address = config.listen
        self.cluster_id = config.cluster_id
        self.limits = Limits(config.max_key_bytes, config.max_value_bytes, config.request_timeout_s,
                             config.quota_backend_bytes)
        self.cluster_map = ClusterMap(
            epoch=1,
            members={str(node_id): address for node_id, address in config.peers.items()},
            partitions=config.partitions,
            replication_factor=min(config.replication_factor, len(config.peers)),
            vnodes=config.vnodes,
        )
        self.engine: Engine | None = None
        self.replicas: dict[int, PartitionReplica] = {}
        self.control: Replica[ControlStateMachine] | None = None
        self._groups: dict[int, Replica[Any]] = {}  # every group the Ready loop drives: partitions, control
        self.metrics = NodeMetrics()
        self.security = NodeSecurity(config)
        self.transport = PeerTransport(config.node_id, config.peers, config.cluster_id, self.security,
                                       self._on_unreachable, self._on_snapshot_sent, self.metrics)
        self.server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()
        self._closing = False
        self._pending_ticks = 0
        self._ticks_since_balance = 0
        self._inbound: list[tuple[int, Message]] = []
        self._proposals: list[tuple[Replica[Any], bytes, asyncio.Future[Any]]] = []
        self._read_requests: list[tuple[Replica[Any], int, bool, asyncio.Future[Any]]] = []
        self._unreachable: set[int] = set()
        self._carry_over: list[Replica[Any]] = []
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
        """Open storage, start serving `servicers` (each adds an RPC layer service to the
        server) behind `interceptors` (the guard), then drive Raft."""
        config = self.config
        self.engine = LevelDBEngine(str(config.data_dir / "db"))
        # Followers learn commits from the next append or heartbeat: half the messages per write.
        raft_config = Config(config.node_id, election_tick=config.election_ticks, heartbeat_tick=config.heartbeat_ticks,
                             skip_bcast_commit=True)
        rng = random.Random(config.node_id * 7919 + int(time.time_ns() % 1_000_003))
        hosted = self.cluster_map.partitions_of(str(self.node_id))
        for partition in hosted:
            voters = ConfState(frozenset(int(n) for n in self.cluster_map.replicas(partition)))
            lessor: Lessor[KeepAlive] = Lessor(self.clock, self.lessor_config)
            self.replicas[partition] = PartitionReplica.open(
                self.engine, partition, PartitionStateMachine(self.engine, partition), voters, raft_config, rng,
                LOG_CACHE_BYTES // max(1, len(hosted)), lessor=lessor)
        members = sorted(config.peers)
        control_conf = ConfState(frozenset(members[:MAX_CONTROL_VOTERS]), frozenset(members[MAX_CONTROL_VOTERS:]))
        self.control = Replica.open(self.engine, CONTROL_GROUP, ControlStateMachine(self.engine), control_conf,
                                    raft_config, rng, CONTROL_LOG_CACHE_BYTES)
        self._groups = {**self.replicas, CONTROL_GROUP: self.control}
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
        self.transport.start()
        self._tasks = [
            asyncio.create_task(self._ticker(), name="ticker"),
            asyncio.create_task(self._ready_loop(), name="ready-loop"),
        ]
        if config.quota_backend_bytes:
            self._tasks.append(asyncio.create_task(self._watch_quota(), name="quota"))
        log.info("node %d serving %s (%s) with %d replicas", self.node_id, config.listen,
                 "TLS" if self.security.enabled else "plaintext", len(self.replicas))

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
        for partition_replica in self.replicas.values():
            partition_replica.demote_lessor(error)
        self.hub.close()
        self._disk.shutdown(wait=True)  # a write still on the disk thread finishes first
        if self.engine is not None:
            self.engine.close()
        log.info("node %d stopped", self.node_id)
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    # -- inputs (any task) ------------------------------------------------------------------

    def deliver(self, items: list[tuple[int, Message]]) -> None:
        """Messages from the transport; stepped by the Ready loop."""
        self._inbound.extend(items)
        self._wake.set()

    def peer_refusal(self, caller: PeerCaller) -> str | None:
        return self.security.peer_refusal(caller)

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
        return self._propose(self.replica(partition), command)

    def propose_control(self, command: bytes) -> asyncio.Future[pb.AuthChangeResponse]:
        """Queue `command` (a serialized `ControlCommand`) for the control group, as `propose`."""
        return self._propose(self._control(), command)

    def _propose(self, replica: Replica[Any], command: bytes) -> asyncio.Future[Any]:
        if len(command) > self.config.max_request_bytes:
            # Peers refuse frames much past this size: such an entry could never be replicated.
            raise InvalidArgumentError(f"the request is {len(command)} bytes once encoded; the limit is "
                                       f"{self.config.max_request_bytes}")
        replica.require_leader()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._proposals.append((replica, command, future))
        self._wake.set()
        return future

    def read(self, partition: int, consistency: int, min_revision: int) -> asyncio.Future[Reader]:
        """The future resolves to the partition's state machine once a read at `consistency`
        may be served from this replica: STALE at once; SESSION once it applied `min_revision`
        (read-your-writes); LINEARIZABLE on the leader after a ReadIndex round, LEASE on the
        leader from its lease when it holds (else as LINEARIZABLE)."""
        return self._read(self.replica(partition), consistency, min_revision)

    def read_control(self, consistency: int, min_revision: int) -> asyncio.Future[ControlReader]:
        """The control group's state machine, once a read at `consistency` may be served from
        this replica (as `read`)."""
        return self._read(self._control(), consistency, min_revision)

    @property
    def control_state(self) -> ControlState:
        """The control state as this node has applied it."""
        return self._control().sm.state

    @property
    def control_applied(self) -> int:
        return self._control().sm.applied_index

    def _control(self) -> Replica[ControlStateMachine]:
        if self.control is None:
            raise UnavailableError(f"node {self.node_id} has not started")
        return self.control

    def _read(self, replica: Replica[Any], consistency: int, min_revision: int) -> asyncio.Future[Any]:
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
        and clear it once deletes bring them back under: through the control group, so every
        node refuses writes that add data (the guard) while any member's alarm is raised.
        Checked every `QUOTA_CHECK_S`; a change that fails (no leader yet) is tried again at
        the next check."""
        quota = self.config.quota_backend_bytes
        mine = Alarm(self.node_id, AlarmType.NOSPACE)
        while True:
            await asyncio.sleep(QUOTA_CHECK_S)
            stored = self.stored_bytes()
            over, raised = stored > quota, mine in self.control_state.alarms
            if over == raised:
                continue
            alarm = pb.Alarm(node_id=self.node_id, type=pb.NOSPACE)
            command = ControlCommand(raise_alarm=alarm) if over else ControlCommand(clear_alarm=alarm)
            try:
                response = await self._propose_control_at_leader(command.SerializeToString())
            except (KvError, grpc.aio.AioRpcError, TimeoutError) as error:
                log.info("could not %s the NOSPACE alarm yet: %s", "raise" if over else "clear", error)
                continue
            if response.error.code:
                log.info("could not %s the NOSPACE alarm yet: %s", "raise" if over else "clear",
                         response.error.message)
            elif over:
                log.warning("NOSPACE alarm raised: this node stores %d bytes of keys and values, over the quota of "
                            "%d; the cluster refuses writes that add data until deletes free space", stored, quota)
            else:
                log.warning("NOSPACE alarm cleared: this node stores %d bytes, under the quota of %d", stored, quota)

    async def _propose_control_at_leader(self, command: bytes) -> pb.AuthChangeResponse:
        """Propose `command` to the control group here if this node leads it, else ask its leader
        to (`Peer.ProposeControl`)."""
        control = self._control()
        timeout = self.config.request_timeout_s
        if control.raw.role is Role.LEADER:
            async with asyncio.timeout(timeout):
                response: pb.AuthChangeResponse = await self.propose_control(command)
                return response
        leader = control.leader
        if not leader or leader not in self.config.peers:
            raise UnavailableError("the control group has no leader yet")
        channel = self.security.peer_channel(self.config.peers[leader], KEEPALIVE_OPTIONS)
        try:
            forwarded: pb.AuthChangeResponse = await peer_pb2_grpc.PeerStub(channel).ProposeControl(
                peer_pb2.ProposeControlRequest(command=command), timeout=timeout)
            return forwarded
        finally:
            await channel.close()

    def address_of(self, node_id: int) -> str:
        return self.config.peers.get(node_id, "")

    def peer_connections(self) -> dict[int, bool]:
        return {peer_id: self.transport.connected(peer_id) for peer_id in self.config.peers if peer_id != self.node_id}

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
                touched = self._take_inputs()
                readies = [(r, r.raw.ready()) for r in touched if r.raw.has_ready()]
                if readies:
                    await self._handle_readies(readies)
                cycle_seconds.observe(time.perf_counter() - started)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug or a storage failure: stop rather than risk acting on half-handled state.
                log.exception("fatal error in the Ready loop; stopping the node")
                self.close()
                return
            # Applying may leave work behind (conf changes, more committed entries than one batch).
            if any(r.raw.has_ready() for r, _ in readies):
                self._carry_over = [r for r, _ in readies]
                self._wake.set()

    def _take_inputs(self) -> list[Replica[Any]]:
        """Feed queued inputs to Raft; returns the replicas that may now have a Ready."""
        touched: dict[int, Replica[Any]] = {r.partition: r for r in self._carry_over}
        self._carry_over = []
        ticks = min(self._pending_ticks, MAX_TICKS_PER_CYCLE)
        self._pending_ticks = 0
        replicas = self._groups
        if ticks:
            touched = dict(replicas)
            for replica in replicas.values():
                for _ in range(ticks):
                    replica.raw.tick()
            self._ticks_since_balance += ticks
            if self._ticks_since_balance >= BALANCE_EVERY_TICKS:
                self._ticks_since_balance = 0
                self._balance_leaders()
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
                if replica is not None:
                    replica.raw.step(message)
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
        for replica in self.replicas.values():  # the lessors: partitions have leases
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
        future: asyncio.Future[PartitionStateMachine] = asyncio.get_running_loop().create_future()
        replica.reads[request_id] = future
        future.add_done_callback(functools.partial(self._leadership_confirmed, replica, round_number))
        return True

    def _leadership_confirmed(self, replica: PartitionReplica, round_number: int,
                              future: asyncio.Future[PartitionStateMachine]) -> None:
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
        for partition, to in plan_leader_transfers(self.node_id, views, MAX_TRANSFERS_PER_ROUND):
            if self.transport.connected(to):
                log.info("handing the leadership of partition %d to node %d to balance leaders", partition, to)
                self.replicas[partition].raw.transfer_leader(to)

    def _propose_queued(self) -> list[Replica[Any]]:
        by_replica: dict[int, list[tuple[bytes, asyncio.Future[Any]]]] = {}
        for replica, data, future in self._proposals:
            if not future.done():
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

    async def _handle_readies(self, readies: list[tuple[Replica[Any], Ready]]) -> None:
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
        for replica, rd in readies:
            if rd.snapshot is not None:
                replica.sm.restore(apply_batch, rd.snapshot)
                metrics.snapshots_installed += 1
                log.info("partition %d installed a snapshot at index %d from the leader",
                         replica.partition, rd.snapshot.meta.index)
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

    def _note_leader(self, replica: Replica[Any], soft_state: SoftState) -> None:
        """One log line (and one count) per leader a partition gets, a leader being a node in a
        term; losing a leader is not logged: the election that follows is."""
        partition, leader = replica.partition, soft_state.leader
        if leader == NONE:
            return
        term = replica.raw.term
        if self._known_leaders.get(partition) == (leader, term):
            return
        self._known_leaders[partition] = (leader, term)
        self.metrics.leader_changes += 1
        if leader == self.node_id:
            self.metrics.elections_won += 1
            log.info("%s: won the election in term %d; this node leads it", group_name(partition), term)
        else:
            log.info("%s: node %d leads it in term %d", group_name(partition), leader, term)

    def _apply(self, replica: Replica[Any], rd: Ready, batch: WriteBatch,
               completions: list[tuple[asyncio.Future[Any], Any]]) -> None:
        outcomes = replica.sm.apply(batch, rd.committed_entries)
        raw = replica.raw
        if (
            isinstance(replica, PartitionReplica)
            and outcomes
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
        if changes:
            self.hub.publish(changes)
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

    def _stage_compaction(self, replica: Replica[Any], batch: WriteBatch) -> None:
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
