"""One replica of one Raft group on this node: its Raft node, durable log and state machine
(`Replica`: the control group's); a partition's (`PartitionReplica`) also has its lessor (the
lease deadlines it keeps while it leads the partition)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, Self, TypeVar

from kvstore.errors import KvError, LeaseNotFoundError, NotLeaderError
from kvstore.node.lessor import Lessor
from kvstore.raft import Config, ConfState, Entry, HardState, RawNode, Role, Snapshot, SnapshotMeta
from kvstore.statemachine import PartitionStateMachine
from kvstore.statemachine.control_group import CONTROL_GROUP
from kvstore.storage import DurableLogStorage, Engine, WriteBatch


def group_name(group: int) -> str:
    return "the control group" if group == CONTROL_GROUP else f"partition {group}"


def not_leader(partition: int, leader: int) -> NotLeaderError:
    known = f"; the leader is node {leader}" if leader else "; no leader is known yet"
    return NotLeaderError(f"this node does not lead {group_name(partition)}{known}", leader_hint=leader)


class GroupStateMachine(Protocol):
    """What a replica needs of its group's state machine (`PartitionStateMachine`,
    `ControlStateMachine`): the rules of `PartitionStateMachine`'s docstring bind both."""

    @property
    def applied_index(self) -> int: ...

    @property
    def applied(self) -> SnapshotMeta: ...

    def apply(self, batch: WriteBatch, entries: Iterable[Entry]) -> Any: ...

    def snapshot(self) -> Snapshot: ...

    def restore(self, batch: WriteBatch, snapshot: Snapshot) -> None: ...

    def bootstrap(self, batch: WriteBatch, start: SnapshotMeta) -> None: ...


SM = TypeVar("SM", bound=GroupStateMachine)


@dataclass(slots=True)
class Waiter:
    term: int
    future: asyncio.Future[Any]  # resolves to the state machine's response (a protobuf message)


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
class Replica(Generic[SM]):
    partition: int  # the group id: a partition's, or CONTROL_GROUP
    log: DurableLogStorage
    sm: SM
    raw: RawNode
    proposals: dict[int, Waiter] = field(default_factory=dict)  # log index -> waiter
    reads: dict[int, asyncio.Future[SM]] = field(default_factory=dict)  # request id -> waiter
    ready_reads: list[tuple[int, int]] = field(default_factory=list)  # (read index, request id)
    session_waiters: list[tuple[int, asyncio.Future[SM]]] = field(default_factory=list)
    compact_pending: bool = False

    @classmethod
    def open(cls, engine: Engine, group: int, sm: SM, conf_state: ConfState, config: Config,
             rng: random.Random, log_cache_bytes: int, **more: Any) -> Self:
        """The replica of `group` as `engine` holds it (bootstrapped on first start); its log keeps
        at most `log_cache_bytes` of its tail in memory. `more` fills the fields of a subclass."""
        # A follower that needs entries the log no longer has gets the state machine as it is
        # now (the Ready loop writes each apply batch before it steps Raft again, so the engine
        # holds exactly the applied state when Raft asks).
        log = DurableLogStorage.open(engine, group, sm.snapshot, max_cached_bytes=log_cache_bytes)
        if log.last_index() == 0:
            # First start: every replica begins from the same empty snapshot at index 1, so no
            # bootstrap election or configuration entry is needed.
            # Term 1 belongs to the bootstrap, so the first leader is elected in term 2.
            start = SnapshotMeta(1, 1, conf_state)
            batch = engine.new_batch()
            log.apply_snapshot(batch, Snapshot(start))
            log.set_hard_state(batch, HardState(term=1, commit=1))
            sm.bootstrap(batch, start)
            engine.write(batch, sync=True)
        applied = max(sm.applied_index, log.first_index() - 1)
        return cls(group, log, sm, RawNode(dataclasses.replace(config, applied=applied), log, rng), **more)

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


@dataclass(slots=True)
class PartitionReplica(Replica[PartitionStateMachine]):
    lessor: Lessor[KeepAlive] = field(kw_only=True)
    # The lessor's bookkeeping: the term it was promoted in (0: not promoted); whether an entry
    # of this leader's own term was applied (every earlier one is then applied: time to promote);
    # whether it was fed something since its last poll; when it next has something to do.
    lessor_term: int = 0
    promote_pending: bool = False
    lessor_dirty: bool = False
    lessor_due: float = 0.0

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
