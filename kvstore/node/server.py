"""The node runtime: many Raft groups (one per hosted partition) driven by one Ready loop.

Only the Ready-loop task touches Raft. RPC handlers and the transport put work into inboxes
and wake the loop; each cycle of the loop then:

1. ticks every group (when the ticker fired), steps received messages, proposes queued
   commands and queues read requests;
2. collects a `Ready` from every group that has one and persists them all in ONE engine
   write batch, synced when any Ready needs it (group commit) on a disk thread, while the
   loop keeps taking in requests and peer messages for the next cycle;
3. sends their messages (persist BEFORE send);
4. applies committed entries of all groups in one more batch — apply state travels in the
   same batch as the data it covers — then answers the waiting requests;
5. advances every group.

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
from dataclasses import dataclass
from typing import TypeVar

import grpc

from kvstore.node.balance import GroupView, plan_leader_transfers
from kvstore.node.config import NodeConfig
from kvstore.node.errors import RequestError, not_leader, timeout, wrong_node
from kvstore.node.identity import IdentityError, PeerAdmission, derive_cluster_id, open_identity
from kvstore.node.replica import Replica, Waiter
from kvstore.node.transport import GRPC_OPTIONS, PeerTransport
from kvstore.raft import (
    NONE,
    ConfChange,
    Config,
    EntryType,
    Message,
    NotLeaderError,
    ProposalDroppedError,
    Ready,
    Role,
    SnapshotMeta,
)
from kvstore.ring import ClusterMap
from kvstore.storage import Engine, LevelDBEngine, StorageError, WriteBatch

log = logging.getLogger("kvstore.node")

BALANCE_EVERY_TICKS = 10
MAX_TRANSFERS_PER_ROUND = 2
MAX_TICKS_PER_CYCLE = 5  # after a stall, catch up a few ticks, not an election's worth
COMPACT_KEEP_ENTRIES = 1000  # at most this many entries stay behind a snapshot, so a slightly
# lagging follower catches up from the log instead of needing a whole snapshot


T = TypeVar("T")


async def wait_within(future: asyncio.Future[T], timeout_s: float, what: str) -> T:
    """The future's result, or a TIMEOUT error naming `what` after `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            return await future
    except TimeoutError:
        raise timeout(what, timeout_s) from None


class AddressInUseError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    partition: int
    replicas: tuple[int, ...]
    leader: int
    term: int
    commit: int
    applied: int


class Node:
    def __init__(self, config: NodeConfig) -> None:
        config.validate()
        self.config = config
        self.id = config.node_id
        self.cluster_map = ClusterMap(
            epoch=1,
            members={str(node_id): address for node_id, address in config.peers.items()},
            partitions=config.partitions,
            replication_factor=min(config.replication_factor, len(config.peers)),
            vnodes=config.vnodes,
        )
        self.engine: Engine | None = None
        self.replicas: dict[int, Replica] = {}
        self.transport = PeerTransport(config.node_id, config.peers, self._on_unreachable, self._on_snapshot_sent)
        self.admission: PeerAdmission  # set by start(), once the data dir's identity is known
        self.fatal: IdentityError | StorageError | None = None  # why the node stopped on its own
        self.server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()
        self._closing = False
        self._pending_ticks = 0
        self._ticks_since_balance = 0
        self._inbound: list[tuple[int, Message]] = []
        self._proposals: list[tuple[Replica, bytes, asyncio.Future[object]]] = []
        self._read_requests: list[tuple[Replica, int, bool, asyncio.Future[None]]] = []
        self._unreachable: set[int] = set()
        self._carry_over: list[Replica] = []
        self._snapshot_reports: list[tuple[int, int, bool]] = []
        self._request_ids = itertools.count(1)
        self._disk = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kvstore-fsync")
        self.started_at = time.monotonic()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, servicers: list[object] | None = None) -> None:
        """Open storage, start serving `servicers` (the RPC layer's), then drive Raft."""
        config = self.config
        self.engine = LevelDBEngine(str(config.data_dir / "db"))
        try:
            identity = open_identity(self.engine, config.data_dir, config.node_id, config.partitions,
                                     lambda: derive_cluster_id(config.initial_cluster_token, config.peers))
        except IdentityError:
            self.engine.close()
            raise
        self.admission = PeerAdmission(identity, self.engine, config.peers.keys,
                                       lambda message: self._fail(IdentityError(message)))
        # Followers learn commits from the next append or heartbeat: half the messages per write.
        raft_config = Config(config.node_id, election_tick=config.election_ticks, heartbeat_tick=config.heartbeat_ticks,
                             skip_bcast_commit=True)
        rng = random.Random(config.node_id * 7919 + int(time.time_ns() % 1_000_003))
        for partition in self.cluster_map.partitions_of(str(self.id)):
            voters = frozenset(int(n) for n in self.cluster_map.replicas(partition))
            self.replicas[partition] = Replica.open(self.engine, partition, self.id, voters, raft_config, rng)
        # No SO_REUSEPORT: a second node on the same port must fail, not silently share it.
        self.server = grpc.aio.server(options=[*GRPC_OPTIONS, ("grpc.so_reuseport", 0)])
        for add_servicer in servicers or []:
            add_servicer(self.server)  # type: ignore[operator]
        try:
            port = self.server.add_insecure_port(config.listen)
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
        log.info("node %d of cluster %s serving %s with %d replicas", self.id, self.admission.identity.cluster_id,
                 config.listen, len(self.replicas))

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
        error = RequestError("UNAVAILABLE", "the node is shutting down")
        for replica in self.replicas.values():
            replica.fail_waiters(error)
        self._disk.shutdown(wait=True)  # a write still on the disk thread finishes first
        if self.engine is not None:
            self.engine.close()
        log.info("node %d stopped", self.id)
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

    def _on_unreachable(self, peer_id: int) -> None:
        self._unreachable.add(peer_id)
        self._wake.set()

    def _on_snapshot_sent(self, group: int, peer_id: int, ok: bool) -> None:
        self._snapshot_reports.append((group, peer_id, ok))
        self._wake.set()

    def replica(self, partition: int) -> Replica:
        replica = self.replicas.get(partition)
        if replica is None:
            raise wrong_node(partition, self.id)
        return replica

    # Each request kind has a `submit_*` that queues it and returns a future at once: the RPC
    # layer submits a whole batch, then waits once (`wait_within` bounds a single wait).

    def submit_proposal(self, partition: int, data: bytes) -> asyncio.Future[object]:
        """Queue a command for the partition's Raft group; the future resolves to the applier's
        result once the entry is committed and applied on this node."""
        replica = self.replica(partition)
        replica.require_leader()
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._proposals.append((replica, data, future))
        self._wake.set()
        return future

    def submit_read(self, partition: int, lease: bool) -> asyncio.Future[None]:
        """The future resolves once this replica may serve a linearizable read (ReadIndex or lease)."""
        replica = self.replica(partition)
        replica.require_leader()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._read_requests.append((replica, next(self._request_ids), lease, future))
        self._wake.set()
        return future

    def submit_session_read(self, partition: int, min_revision: int) -> asyncio.Future[None] | None:
        """None when this replica has applied `min_revision` already (read-your-writes), else a
        future that resolves once it has."""
        replica = self.replica(partition)
        if replica.sm.applied_index >= min_revision:
            return None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        replica.session_waiters.append((min_revision, future))
        return future

    def status(self) -> list[ReplicaStatus]:
        result = []
        for partition, replica in sorted(self.replicas.items()):
            raft = replica.raw.raft  # type: ignore[union-attr]
            result.append(
                ReplicaStatus(partition, tuple(sorted(raft.voters)), raft.lead, raft.term, raft.log.committed,
                              replica.sm.applied_index)
            )
        return result

    def address_of(self, node_id: int) -> str:
        return self.config.peers.get(node_id, "")

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
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                touched = self._take_inputs()
                readies = [(r, r.raw.ready()) for r in touched if r.raw.has_ready()]  # type: ignore[union-attr]
                if readies:
                    await self._handle_readies(readies)
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
            # Applying may leave work behind (conf changes, more committed entries than one batch).
            if any(r.raw.has_ready() for r, _ in readies):  # type: ignore[union-attr]
                self._carry_over = [r for r, _ in readies]
                self._wake.set()

    def _take_inputs(self) -> list[Replica]:
        """Feed queued inputs to Raft; returns the replicas that may now have a Ready."""
        touched: dict[int, Replica] = {r.partition: r for r in self._carry_over}
        self._carry_over = []
        ticks = min(self._pending_ticks, MAX_TICKS_PER_CYCLE)
        self._pending_ticks = 0
        replicas = self.replicas
        if ticks:
            touched = dict(replicas)
            for replica in replicas.values():
                for _ in range(ticks):
                    replica.raw.tick()  # type: ignore[union-attr]
            self._ticks_since_balance += ticks
            if self._ticks_since_balance >= BALANCE_EVERY_TICKS:
                self._ticks_since_balance = 0
                self._balance_leaders()
        if self._unreachable:
            for peer_id in self._unreachable:
                for replica in replicas.values():
                    replica.raw.report_unreachable(peer_id)  # type: ignore[union-attr]
            self._unreachable.clear()
        if self._snapshot_reports:
            reports, self._snapshot_reports = self._snapshot_reports, []
            for group, peer_id, ok in reports:
                replica = replicas.get(group)
                if replica is not None:
                    replica.raw.report_snapshot(peer_id, ok)  # type: ignore[union-attr]
                    touched[group] = replica
        if self._inbound:
            inbound, self._inbound = self._inbound, []
            for group, message in inbound:
                replica = replicas.get(group)
                if replica is not None:
                    replica.raw.step(message)  # type: ignore[union-attr]
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
                    replica.raw.read_index(request_id, lease)  # type: ignore[union-attr]
                except NotLeaderError:
                    future.set_exception(not_leader(replica.partition, replica.leader))
                    continue
                replica.reads[request_id] = future
                touched[replica.partition] = replica
        return list(touched.values())

    def _balance_leaders(self) -> None:
        views = []
        for partition, replica in self.replicas.items():
            raft = replica.raw.raft  # type: ignore[union-attr]
            views.append(GroupView(partition, raft.lead, frozenset(raft.voters), raft.lead_transferee != NONE))
        for partition, to in plan_leader_transfers(self.id, views, MAX_TRANSFERS_PER_ROUND):
            if self.transport.connected(to):
                log.info("handing the leadership of partition %d to node %d to balance leaders", partition, to)
                self.replicas[partition].raw.transfer_leader(to)  # type: ignore[union-attr]

    def _propose_queued(self) -> list[Replica]:
        by_replica: dict[int, list[tuple[bytes, asyncio.Future[object]]]] = {}
        for replica, data, future in self._proposals:
            if not future.done():
                by_replica.setdefault(replica.partition, []).append((data, future))
        self._proposals = []
        for partition, items in by_replica.items():
            replica = self.replicas[partition]
            raw = replica.raw
            assert raw is not None
            try:
                last = raw.propose([data for data, _ in items])
            except (NotLeaderError, ProposalDroppedError) as e:
                error = (
                    not_leader(partition, e.leader_hint)
                    if isinstance(e, NotLeaderError)
                    else RequestError("UNAVAILABLE", str(e))
                )
                for _, future in items:
                    future.set_exception(error)
                continue
            term = raw.raft.term
            first = last - len(items) + 1
            for offset, (_, future) in enumerate(items):
                replica.proposals[first + offset] = Waiter(term, future)
        return [self.replicas[partition] for partition in by_replica]

    async def _handle_readies(self, readies: list[tuple[Replica, Ready]]) -> None:
        engine = self.engine
        assert engine is not None
        # 1. persist every group's Ready in one batch
        batch = engine.new_batch()
        must_sync = False
        for replica, rd in readies:
            log_storage = replica.log
            if rd.snapshot is not None:
                log_storage.apply_snapshot(batch, rd.snapshot)
            if rd.entries:
                log_storage.append(batch, rd.entries)
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
                await asyncio.shield(asyncio.get_running_loop().run_in_executor(self._disk, write))
            else:
                engine.write(batch, sync=False)
        # 2. send
        self.transport.send((replica.partition, message) for replica, rd in readies for message in rd.messages)
        # 3. apply
        apply_batch = engine.new_batch()
        completions: list[tuple[asyncio.Future[object], object]] = []
        for replica, rd in readies:
            if rd.snapshot is not None:
                replica.sm.restore(apply_batch, rd.snapshot.data, rd.snapshot.meta.index)
                log.info("partition %d installed a snapshot at index %d from the leader",
                         replica.partition, rd.snapshot.meta.index)
            if rd.committed_entries:
                self._apply(replica, rd, apply_batch, completions)
        if len(apply_batch):
            engine.write(apply_batch, sync=False)
        for future, result in completions:
            if not future.done():
                future.set_result(result)
        # 4. reads, role changes, advance
        for replica, rd in readies:
            if rd.soft_state is not None and rd.soft_state.role is not Role.LEADER:
                replica.fail_waiters(not_leader(replica.partition, rd.soft_state.leader))
            if rd.read_states:
                replica.ready_reads.extend((rs.index, rs.request_id) for rs in rd.read_states)
            replica.serve_reads()
            replica.raw.advance(rd)  # type: ignore[union-attr]
            if replica.sm.applied_index - replica.log.first_index() > self.config.snapshot_entries:
                replica.compact_pending = True

    def _apply(self, replica: Replica, rd: Ready, batch: WriteBatch,
               completions: list[tuple[asyncio.Future[object], object]]) -> None:
        results = replica.sm.apply(batch, rd.committed_entries)
        proposals = replica.proposals
        for entry, result in results:
            if entry.type is EntryType.CONF_CHANGE:
                replica.raw.apply_conf_change(ConfChange.decode(entry.data))  # type: ignore[union-attr]
            waiter = proposals.pop(entry.index, None) if proposals else None
            if waiter is None:
                continue
            if waiter.term == entry.term:
                completions.append((waiter.future, result))
            elif not waiter.future.done():
                # Our entry was overwritten by a newer leader's: it was never applied.
                waiter.future.set_exception(not_leader(replica.partition, replica.leader))

    def _stage_compaction(self, replica: Replica, batch: WriteBatch) -> None:
        """Record a snapshot point at the applied index and drop the log behind it. This batch
        is synced and comes after the apply batch that made `applied` durable-in-order, so a
        restart never finds its log compacted beyond its applied state."""
        replica.compact_pending = False
        applied = replica.sm.applied_index
        if applied <= replica.log.first_index():
            return
        meta = SnapshotMeta(applied, replica.log.term(applied), replica.raw.raft.conf_state())  # type: ignore[union-attr]
        replica.log.set_snapshot_meta(batch, meta)
        keep = min(COMPACT_KEEP_ENTRIES, self.config.snapshot_entries // 2)
        replica.log.compact(batch, max(replica.log.first_index(), applied - keep))
