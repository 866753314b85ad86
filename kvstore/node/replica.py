"""One replica of one partition on this node: its Raft node, durable log, state machine and
lessor (the lease deadlines it keeps while it leads the partition)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from dataclasses import dataclass, field

from kvstore.errors import KvError, LeaseNotFoundError, NotLeaderError
from kvstore.node.lessor import Lessor
from kvstore.raft import Config, ConfState, HardState, RawNode, Role, Snapshot, SnapshotMeta
from kvstore.rpc.backend import Reader
from kvstore.statemachine import PartitionStateMachine, WriteResponse
from kvstore.storage import DurableLogStorage, Engine

BOOTSTRAP_INDEX = 1
"""Every replica of a new partition starts from an empty snapshot at this index (holding no
change)."""


def not_leader(partition: int, leader: int) -> NotLeaderError:
    known = f"; the leader is node {leader}" if leader else "; no leader is known yet"
    return NotLeaderError(f"this node does not lead partition {partition}{known}", leader_hint=leader)


@dataclass(slots=True)
class Waiter:
    term: int
    future: asyncio.Future[WriteResponse]


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
class Replica:
    partition: int
    log: DurableLogStorage
    sm: PartitionStateMachine
    raw: RawNode
    lessor: Lessor[KeepAlive]
    proposals: dict[int, Waiter] = field(default_factory=dict)  # log index -> waiter
    reads: dict[int, asyncio.Future[Reader]] = field(default_factory=dict)  # request id -> waiter
    ready_reads: list[tuple[int, int]] = field(default_factory=list)  # (read index, request id)
    session_waiters: list[tuple[int, asyncio.Future[Reader]]] = field(default_factory=list)
    compact_pending: bool = False
    # The lessor's bookkeeping: the term it was promoted in (0: not promoted); whether an entry
    # of this leader's own term was applied (every earlier one is then applied: time to promote);
    # whether it was fed something since its last poll; when it next has something to do.
    lessor_term: int = 0
    promote_pending: bool = False
    lessor_dirty: bool = False
    lessor_due: float = 0.0

    @classmethod
    def open(cls, engine: Engine, partition: int, voters: frozenset[int], config: Config,
             rng: random.Random, lessor: Lessor[KeepAlive], log_cache_bytes: int) -> Replica:
        """The replica as `engine` holds it; its log keeps at most `log_cache_bytes` of its
        tail in memory."""
        sm = PartitionStateMachine(engine, partition)
        # A follower that needs entries the log no longer has gets the state machine as it is
        # now (the Ready loop writes each apply batch before it steps Raft again, so the engine
        # holds exactly the applied state when Raft asks).
        log = DurableLogStorage.open(engine, partition, sm.snapshot, max_cached_bytes=log_cache_bytes)
        if log.last_index() == 0:
            # First start: every replica begins from the same empty snapshot at index 1, so no
            # bootstrap election or configuration entry is needed.
            # Term 1 belongs to the bootstrap, so the first leader is elected in term 2.
            start = SnapshotMeta(BOOTSTRAP_INDEX, 1, ConfState(voters))
            batch = engine.new_batch()
            log.apply_snapshot(batch, Snapshot(start))
            log.set_hard_state(batch, HardState(term=1, commit=1))
            sm.bootstrap(batch, start)
            engine.write(batch, sync=True)
        applied = max(sm.applied_index, log.first_index() - 1)
        return cls(partition, log, sm, RawNode(dataclasses.replace(config, applied=applied), log, rng), lessor)

    @property
    def leader(self) -> int:
        return self.raw.leader

    def require_leader(self) -> None:
        if self.raw.role is not Role.LEADER:
            raise not_leader(self.partition, self.raw.leader)

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
