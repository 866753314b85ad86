"""One replica of one partition on this node: its Raft node, durable log and state machine."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from dataclasses import dataclass, field

from kvstore._pb import kvstore_pb2 as pb
from kvstore.errors import KvError, NotLeaderError
from kvstore.node.reads import ReadTiming, ReplicaReads
from kvstore.node.writes import WriteAcks
from kvstore.raft import Config, ConfState, HardState, RawNode, Role, Snapshot, SnapshotMeta
from kvstore.rpc.backend import WriteOutcome
from kvstore.statemachine import PartitionStateMachine
from kvstore.storage import DurableLogStorage, Engine


def not_leader(partition: int, leader: int) -> NotLeaderError:
    known = f"; the leader is node {leader}" if leader else "; no leader is known yet"
    return NotLeaderError(f"this node does not lead partition {partition}{known}", leader_hint=leader)


@dataclass(slots=True)
class Waiter:
    term: int
    future: asyncio.Future[WriteOutcome]
    concern: int = pb.MAJORITY


@dataclass(slots=True)
class Replica:
    partition: int
    log: DurableLogStorage
    sm: PartitionStateMachine
    raw: RawNode
    reads: ReplicaReads
    proposals: dict[int, Waiter] = field(default_factory=dict)  # log index -> waiter
    acks: WriteAcks = field(default_factory=WriteAcks)  # LEADER and ALL writes held back
    compact_pending: bool = False

    @classmethod
    def open(cls, engine: Engine, partition: int, voters: frozenset[int], config: Config,
             rng: random.Random, timing: ReadTiming) -> Replica:
        sm = PartitionStateMachine(engine, partition)
        # A follower that needs entries the log no longer has gets the state machine as it is
        # now (the Ready loop writes each apply batch before it steps Raft again, so the engine
        # holds exactly the applied state when Raft asks).
        log = DurableLogStorage.open(engine, partition, sm.snapshot)
        if log.last_index() == 0:
            # First start: every replica begins from the same empty snapshot at index 1, so no
            # bootstrap election or configuration entry is needed.
            # Term 1 belongs to the bootstrap, so the first leader is elected in term 2.
            start = SnapshotMeta(1, 1, ConfState(voters))
            batch = engine.new_batch()
            log.apply_snapshot(batch, Snapshot(start))
            log.set_hard_state(batch, HardState(term=1, commit=1))
            sm.bootstrap(batch, start)
            engine.write(batch, sync=True)
        applied = max(sm.applied_index, log.first_index() - 1)
        raw = RawNode(dataclasses.replace(config, applied=applied), log, rng)
        return cls(partition, log, sm, raw, ReplicaReads(config.id, partition, sm, timing))

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
        self.acks.fail(error)
        self.reads.fail_indexed(error)

    def lease_index(self) -> int | None:
        """The commit index while this node leads under a valid lease: a state that applied it
        is current (a STALE read from it has staleness 0); None otherwise."""
        raw = self.raw
        return raw.committed if raw.lease_valid else None
