"""One replica of one Raft group on this node (a partition, or the meta group): its Raft node,
durable log and state machine."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from kvstore.errors import KvError, NotLeaderError
from kvstore.raft import Config, Entry, HardState, Message, RawNode, Role, Snapshot, SnapshotMeta, Tombstone
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


def not_leader(partition: int, leader: int) -> NotLeaderError:
    known = f"; the leader is node {leader}" if leader else "; no leader is known yet"
    return NotLeaderError(f"this node does not lead partition {partition}{known}", leader_hint=leader)


@dataclass(slots=True)
class Waiter(Generic[R]):
    term: int
    future: asyncio.Future[R]


@dataclass(slots=True)
class Replica(Generic[M, R]):
    partition: int  # the group id: a partition's, or the meta group's
    log: DurableLogStorage
    sm: M
    raw: RawNode
    tombstone: Tombstone | None = None  # of an earlier replica of this group on this node
    proposals: dict[int, Waiter[R]] = field(default_factory=dict)  # log index -> waiter
    reads: dict[int, asyncio.Future[M]] = field(default_factory=dict)  # request id -> waiter
    ready_reads: list[tuple[int, int]] = field(default_factory=list)  # (read index, request id)
    session_waiters: list[tuple[int, asyncio.Future[M]]] = field(default_factory=list)
    compact_pending: bool = False

    @classmethod
    def open(cls, engine: Engine, group: int, sm: M, config: Config, rng: random.Random,
             start: SnapshotMeta | None = None, tombstone: Tombstone | None = None) -> Replica[M, R]:
        """The replica of `group` on `engine`. A new one begins from `start` when given — every
        initial replica of a new cluster begins from the same empty snapshot at index 1, so no
        bootstrap election or configuration entry is needed (term 1 belongs to the bootstrap,
        so the first leader is elected in term 2) — or else empty, to be caught up by the
        leader's snapshot, with the term and vote of its `tombstone`."""
        # A follower that needs entries the log no longer has gets the state machine as it is
        # now (the Ready loop writes each apply batch before it steps Raft again, so the engine
        # holds exactly the applied state when Raft asks).
        log = DurableLogStorage.open(engine, group, sm.snapshot)
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
        return cls(group, log, sm, RawNode(dataclasses.replace(config, applied=applied), log, rng), tombstone)

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
