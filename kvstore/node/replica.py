"""One replica of one Raft group on this node (a partition, or the meta group): its Raft node,
durable log and state machine; a partition's also has its lessor (the lease deadlines it keeps
while it leads the partition)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from kvstore.errors import KvError, LeaseNotFoundError, NotLeaderError
from kvstore.node.lessor import Lessor
from kvstore.raft import (
    ConfChange,
    Config,
    Entry,
    EntryType,
    HardState,
    Message,
    RawNode,
    Role,
    Snapshot,
    SnapshotMeta,
    Tombstone,
)
from kvstore.statemachine import PartitionStateMachine, WriteResponse
from kvstore.storage import DurableLogStorage, Engine, WriteBatch

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class GroupMachine(Protocol[R_co]):
    """What the Ready loop needs of a group's state machine (`PartitionStateMachine`,
    `MetaStateMachine`): see `PartitionStateMachine` for the rules of staging."""

    @property
    def applied_index(self) -> int: ...

    @property
    def applied(self) -> SnapshotMeta: ...

    def apply(self, batch: WriteBatch, entries: Iterable[Entry]) -> Sequence[tuple[Entry, R_co | None]]: ...

    def restore(self, batch: WriteBatch, snapshot: Snapshot) -> None: ...

    def snapshot(self) -> Snapshot: ...

    def bootstrap(self, batch: WriteBatch, start: SnapshotMeta) -> None: ...


M = TypeVar("M", bound=GroupMachine[object])

BOOTSTRAP_INDEX = 1
"""Every initial replica of a new cluster starts from an empty snapshot at this index (holding
no change; see `open_group`)."""


def not_leader(partition: int, leader: int) -> NotLeaderError:
    known = f"; the leader is node {leader}" if leader else "; no leader is known yet"
    return NotLeaderError(f"this node does not lead partition {partition}{known}", leader_hint=leader)


@dataclass(slots=True)
class Waiter(Generic[R]):
    term: int
    future: asyncio.Future[R]


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A keepalive waiting in the lessor: its future resolves to the lease's TTL."""

    lease: int
    future: asyncio.Future[int]

    def answer(self, ttl: int) -> None:
        if not self.future.done():
            self.future.set_result(ttl)

    def refuse(self) -> None:
        self.fail(LeaseNotFoundError(f"lease {self.lease} does not exist (expired or revoked)"))

    def fail(self, error: KvError) -> None:
        if not self.future.done():
            self.future.set_exception(error)


@dataclass(slots=True)
class Replica(Generic[M, R]):
    partition: int  # the group id: a partition's, or the meta group's
    log: DurableLogStorage
    sm: M
    raw: RawNode
    tombstone: Tombstone | None = None  # of an earlier replica of this group on this node
    proposals: dict[int, Waiter[R]] = field(default_factory=dict)  # log index -> waiter
    # Reads waiting for a ReadIndex round or a revision; each future resolves to `sm` (which
    # the RPC layer reads through its own protocol, `kvstore.rpc.Reader`).
    reads: dict[int, asyncio.Future[Any]] = field(default_factory=dict)  # request id -> waiter
    ready_reads: list[tuple[int, int]] = field(default_factory=list)  # (read index, request id)
    session_waiters: list[tuple[int, asyncio.Future[Any]]] = field(default_factory=list)
    compact_pending: bool = False

    def step(self, message: Message) -> bool:
        """Step a message from a peer; False when it is dropped: a vote this replica's tombstone
        refuses (see `Tombstone`)."""
        if self.tombstone is not None and self.tombstone.refuses(message):
            return False
        self.raw.step(message)
        return True

    @property
    def leader(self) -> int:
        return self.raw.leader

    def require_leader(self) -> None:
        if self.raw.role is not Role.LEADER:
            raise not_leader(self.partition, self.raw.leader)

    def fail_waiters(self, error: KvError) -> None:
        """Leadership was lost: the outcome of pending proposals is unknown to us, so the client
        retries (with the same request id, which the applier deduplicates)."""
        for waiter in self.proposals.values():
            if not waiter.future.done():
                waiter.future.set_exception(error)
        self.proposals.clear()
        for future in self.reads.values():
            if not future.done():
                future.set_exception(error)
        self.reads.clear()
        self.ready_reads.clear()

    def serve_reads(self) -> None:
        """Hand the state machine to the reads it now may serve."""
        applied = self.sm.applied_index
        if self.ready_reads:
            remaining = []
            for index, request_id in self.ready_reads:
                if index <= applied:
                    future = self.reads.pop(request_id, None)
                    if future is not None and not future.done():
                        future.set_result(self.sm)
                else:
                    remaining.append((index, request_id))
            self.ready_reads = remaining
        if self.session_waiters:
            waiting = []
            for revision, future in self.session_waiters:
                if revision <= applied:
                    if not future.done():
                        future.set_result(self.sm)
                elif not future.done():
                    waiting.append((revision, future))
            self.session_waiters = waiting


REPLAY_PAGE_BYTES = 1 << 20
"""How much of the log a restart reads at once to find the conf changes applied since the snapshot point."""


def open_group(engine: Engine, group: int, sm: GroupMachine[object], config: Config, rng: random.Random,
               start: SnapshotMeta | None, tombstone: Tombstone | None, log_cache_bytes: int
               ) -> tuple[DurableLogStorage, RawNode]:
    """The log and Raft node of `group` as `engine` holds them; the log keeps at most
    `log_cache_bytes` of its tail in memory. A new replica begins from `start` when given —
    every initial replica of a new cluster begins from the same empty snapshot at index 1, so no
    bootstrap election or configuration entry is needed (term 1 belongs to the bootstrap, so the
    first leader is elected in term 2) — or else empty, to be caught up by the leader's
    snapshot, with the term and vote of its `tombstone`."""
    # A follower that needs entries the log no longer has gets the state machine as it is
    # now (the Ready loop writes each apply batch before it steps Raft again, so the engine
    # holds exactly the applied state when Raft asks).
    log = DurableLogStorage.open(engine, group, sm.snapshot, max_cached_bytes=log_cache_bytes)
    if log.last_index() == 0 and (start is not None or tombstone is not None):
        batch = engine.new_batch()
        if start is not None:
            log.apply_snapshot(batch, Snapshot(start))
            log.set_hard_state(batch, HardState(term=1, commit=1))
            sm.bootstrap(batch, start)
        elif tombstone is not None and log.hard_state.term == 0:
            log.set_hard_state(batch, HardState(tombstone.term, tombstone.vote, 0))
        engine.write(batch, sync=True)
    applied = max(sm.applied_index, log.first_index() - 1)
    raw = RawNode(dataclasses.replace(config, applied=applied), log, rng)
    # Raft starts from the configuration of the log's snapshot point, and is not handed the
    # entries applied since: the conf changes among them (a move's) are replayed onto it, as etcd
    # does, or a restarted replica would campaign and vote in an old configuration.
    index = log.snapshot_meta.index + 1
    while index <= applied:
        page = log.entries(index, applied + 1, REPLAY_PAGE_BYTES)
        for entry in page:
            if entry.type is EntryType.CONF_CHANGE:
                raw.apply_conf_change(ConfChange.decode(entry.data))
        index = page[-1].index + 1
    return log, raw


@dataclass(slots=True)
class PartitionReplica(Replica[PartitionStateMachine, WriteResponse]):
    """A partition's replica, with its lessor."""

    lessor: Lessor[KeepAlive] = field(kw_only=True)
    # The lessor's bookkeeping: the term it was promoted in (0: not promoted); whether an entry
    # of this leader's own term was applied (every earlier one is then applied: time to promote);
    # whether it was fed something since its last poll; when it next has something to do.
    lessor_term: int = 0
    promote_pending: bool = False
    lessor_dirty: bool = False
    lessor_due: float = 0.0

    @classmethod
    def open(cls, engine: Engine, partition: int, config: Config, rng: random.Random, lessor: Lessor[KeepAlive],
             log_cache_bytes: int, start: SnapshotMeta | None = None,
             tombstone: Tombstone | None = None) -> PartitionReplica:
        """The replica of `partition` on `engine` (see `open_group`)."""
        sm = PartitionStateMachine(engine, partition)
        log, raw = open_group(engine, partition, sm, config, rng, start, tombstone, log_cache_bytes)
        return cls(partition, log, sm, raw, tombstone, lessor=lessor)

    def promote_lessor(self) -> None:
        """Start keeping lease deadlines: every entry of earlier terms is applied."""
        self.lessor.promote(self.sm.leases.leases())
        self.lessor_term = self.raw.term
        self.lessor_dirty = True

    def demote_lessor(self, error: KvError) -> None:
        """Stop keeping lease deadlines; unanswered keepalives fail with `error`."""
        for keep_alive in self.lessor.demote():
            keep_alive.fail(error)
        self.lessor_term = 0
