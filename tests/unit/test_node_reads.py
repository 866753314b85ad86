"""A replica's read paths (`kvstore.node.reads`) and write acknowledgements (`kvstore.node.writes`),
driven with explicit times and read states: what each level waits for, what the answer says it
was served as, the staleness bound, and the refusals that send a client to another replica."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from kvstore._pb import kvstore_pb2 as pb
from kvstore.errors import NotLeaderError, UnavailableError
from kvstore.node.reads import Freshness, LeaseTrust, ReadTiming, ReplicaReads
from kvstore.node.writes import WriteAcks
from kvstore.raft import ReadState
from kvstore.rpc.backend import LeaderDurable, WriteOutcome
from kvstore.statemachine.leases import Lease

TIMING = ReadTiming(wait_s=1.0, probe_interval_s=0.1, clock_factor=1.25)


class NoLeases:
    """A lease table without leases (reads never look at it)."""

    def get(self, lease: int) -> Lease | None:
        return None

    def leases(self) -> list[Lease]:
        return []

    def keys(self, lease: int) -> list[bytes]:
        return []


@dataclass
class FakeState:
    """The replica's state machine, as far as reads see it."""

    applied_index: int = 10
    leases: NoLeases = field(default_factory=NoLeases)

    def get(self, key: bytes) -> pb.KeyValue | None:
        return None

    def scan(self, start: bytes, end: bytes | None, limit: int) -> tuple[list[pb.KeyValue], bool]:
        return [], False


def make_reads(applied: int = 10) -> tuple[ReplicaReads, FakeState]:
    state = FakeState(applied)
    return ReplicaReads(node_id=2, partition=5, reader=state, timing=TIMING), state


def answer_probe(reads: ReplicaReads, request_id: int, sent_at: float, index: int, now: float) -> None:
    reads.freshness.probe_sent(request_id, sent_at)
    reads.released((ReadState(index, request_id),), now)


# -- the staleness bound ----------------------------------------------------------------------


def test_the_bound_runs_from_when_the_probe_left_times_the_clock_factor() -> None:
    freshness = Freshness(clock_factor=1.25, probe_interval_s=0.1, probe_timeout_s=1.0, active_for_s=10.0)
    assert freshness.bound_ms(applied=100, now=5.0) is None  # never heard from a live leader
    freshness.probe_sent(1, now=10.0)
    # The answer took 2 s (a slow network, or this node was paused): that time counts.
    assert freshness.take_answer(ReadState(40, 1))
    assert freshness.bound_ms(applied=39, now=12.0) is None  # it has not applied the probe's index
    assert freshness.bound_ms(applied=40, now=12.0) == 2500
    assert freshness.bound_ms(applied=40, now=12.5) == 3125  # and grows until the next probe


def test_a_newer_probe_replaces_older_ones_once_applied() -> None:
    freshness = Freshness(clock_factor=1.0, probe_interval_s=0.1, probe_timeout_s=1.0, active_for_s=10.0)
    freshness.probe_sent(1, now=1.0)
    freshness.take_answer(ReadState(10, 1))
    freshness.probe_sent(2, now=2.0)
    freshness.take_answer(ReadState(20, 2))
    assert freshness.bound_ms(applied=15, now=3.0) == 2000  # only the older one is applied
    assert freshness.bound_ms(applied=20, now=3.0) == 1000
    assert freshness.bound_ms(applied=15, now=3.0) is None  # the older point was dropped meanwhile


def test_probes_run_while_stale_reads_come_one_at_a_time() -> None:
    freshness = Freshness(clock_factor=1.0, probe_interval_s=0.1, probe_timeout_s=1.0, active_for_s=10.0)
    assert not freshness.wants_probe(0.0)  # no STALE read yet: no traffic
    assert freshness.wants_probe(0.0, urgent=True)
    freshness.touch(0.0)
    assert freshness.wants_probe(0.0)
    freshness.probe_sent(1, 0.0)
    assert not freshness.wants_probe(0.5) and not freshness.wants_probe(0.5, urgent=True)  # one in flight
    assert freshness.wants_probe(1.0)  # given up: a deposed leader never answers
    assert not freshness.take_answer(ReadState(5, 1))  # so a late answer is not taken
    freshness.probe_sent(2, 1.0)
    freshness.take_answer(ReadState(5, 2))
    assert not freshness.wants_probe(1.05)  # a probe interval has not passed
    assert freshness.wants_probe(1.1)
    assert not freshness.wants_probe(11.0)  # no STALE read for a while: probing stops


def test_the_clock_factor_cannot_shrink_the_bound() -> None:
    with pytest.raises(ValueError, match="clock_factor"):
        Freshness(clock_factor=0.9, probe_interval_s=0.1, probe_timeout_s=1.0, active_for_s=1.0)


# -- STALE ------------------------------------------------------------------------------------


async def test_a_stale_read_reports_its_bound_and_waits_for_one_under_its_maximum() -> None:
    reads, _ = make_reads(applied=10)
    answer_probe(reads, 1, sent_at=0.0, index=10, now=0.0)
    loose = reads.follower_read(pb.STALE, 0, 0, now=0.4, lease_index=None)
    assert loose.done()
    assert (loose.result().served, loose.result().staleness_ms) == (pb.STALE, 500)
    tight = reads.follower_read(pb.STALE, 0, 200, now=0.4, lease_index=None)
    assert not tight.done() and reads.wants_urgent_probe()
    answer_probe(reads, 2, sent_at=0.45, index=10, now=0.5)
    reads.serve(0.5, lease_index=None)
    assert tight.result().staleness_ms == 63  # ceil(0.05 s x 1.25)


async def test_a_replica_that_cannot_bound_its_staleness_refuses_so_the_client_goes_elsewhere() -> None:
    reads, _ = make_reads(applied=10)
    answer_probe(reads, 1, sent_at=0.0, index=10, now=0.0)
    read = reads.follower_read(pb.STALE, 0, 500, now=2.0, lease_index=None)  # its bound is 2500 ms
    reads.serve(2.9, lease_index=None)
    assert not read.done()
    reads.serve(3.0, lease_index=None)
    with pytest.raises(UnavailableError, match="cannot bound its staleness under 500 ms .*bound is 3750 ms"):
        read.result()


async def test_a_replica_that_never_heard_a_leader_refuses_even_an_unbounded_stale_read() -> None:
    reads, _ = make_reads(applied=10)
    read = reads.follower_read(pb.STALE, 0, 0, now=0.0, lease_index=None)
    reads.serve(1.0, lease_index=None)
    with pytest.raises(UnavailableError, match="cannot bound its staleness: no live leader answered"):
        read.result()


async def test_the_leader_within_its_lease_serves_stale_reads_with_staleness_zero() -> None:
    reads, state = make_reads(applied=10)
    read = reads.follower_read(pb.STALE, 0, 100, now=0.0, lease_index=10)
    assert read.result().staleness_ms == 0
    behind = reads.follower_read(pb.STALE, 0, 100, now=0.0, lease_index=12)  # committed, not applied yet
    assert not behind.done()
    state.applied_index = 12
    reads.serve(0.1, lease_index=12)
    assert behind.result().staleness_ms == 0


# -- SESSION and min_revision -----------------------------------------------------------------


async def test_a_session_read_waits_until_the_replica_applied_the_sessions_revision() -> None:
    reads, state = make_reads(applied=10)
    assert reads.follower_read(pb.SESSION, 10, 0, now=0.0, lease_index=None).result().served == pb.SESSION
    ahead = reads.follower_read(pb.SESSION, 12, 0, now=0.0, lease_index=None)
    assert not ahead.done()
    state.applied_index = 12
    reads.serve(0.5, lease_index=None)
    assert ahead.result().reader is state


async def test_a_lagging_replica_refuses_a_session_read_after_waiting() -> None:
    reads, _ = make_reads(applied=10)
    read = reads.follower_read(pb.SESSION, 99, 0, now=0.0, lease_index=None)
    reads.serve(1.0, lease_index=None)
    with pytest.raises(UnavailableError, match="node 2, partition 5 has applied up to revision 10, short of the 99"):
        read.result()


async def test_min_revision_is_a_floor_for_stale_reads_too() -> None:
    reads, state = make_reads(applied=10)
    answer_probe(reads, 1, sent_at=0.0, index=5, now=0.0)
    read = reads.follower_read(pb.STALE, 11, 0, now=0.1, lease_index=None)
    assert not read.done()
    state.applied_index = 11
    reads.serve(0.2, lease_index=None)
    assert read.result().staleness_ms == 250


# -- LINEARIZABLE and LEASE -------------------------------------------------------------------


async def test_served_says_which_path_released_an_indexed_read() -> None:
    reads, state = make_reads(applied=10)
    loop = asyncio.get_running_loop()
    by_lease, fell_back, linearizable = (loop.create_future() for _ in range(3))
    reads.indexed_read(1, by_lease, 0, lease=True)
    reads.indexed_read(2, fell_back, 0, lease=True)
    reads.indexed_read(3, linearizable, 0, lease=False)
    reads.released((ReadState(10, 1, lease=True), ReadState(10, 2), ReadState(11, 3)), now=0.0)
    reads.serve(0.0, lease_index=None)
    assert by_lease.result().served == pb.LEASE
    assert fell_back.result().served == pb.LINEARIZABLE
    assert not linearizable.done()  # its read index is not applied yet
    state.applied_index = 11
    reads.serve(0.1, lease_index=None)
    assert linearizable.result().served == pb.LINEARIZABLE


async def test_losing_leadership_fails_unreleased_reads_and_keeps_released_ones() -> None:
    reads, state = make_reads(applied=10)
    loop = asyncio.get_running_loop()
    released, pending = loop.create_future(), loop.create_future()
    reads.indexed_read(1, released, 0, lease=False)
    reads.indexed_read(2, pending, 0, lease=False)
    reads.released((ReadState(11, 1),), now=0.0)
    reads.fail_indexed(NotLeaderError("deposed"))
    with pytest.raises(NotLeaderError):
        pending.result()
    state.applied_index = 11
    reads.serve(0.1, lease_index=None)  # its read point was confirmed while this node led
    assert released.result().served == pb.LINEARIZABLE


# -- write acknowledgements -------------------------------------------------------------------


async def test_leader_writes_are_acknowledged_once_durable_in_log_order() -> None:
    acks = WriteAcks()
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    acks.when_durable(5, first)
    acks.when_durable(7, second)
    acks.persisted(6)
    assert first.result() == LeaderDurable(5) and not second.done()
    acks.persisted(7)
    assert second.result() == LeaderDurable(7)


async def test_all_writes_wait_for_every_replica_and_fail_with_the_leadership() -> None:
    acks = WriteAcks()
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[WriteOutcome] = loop.create_future()
    lost: asyncio.Future[WriteOutcome] = loop.create_future()
    response = pb.PutResponse()
    acks.hold_for_all(5, answered, response)
    acks.hold_for_all(8, lost, pb.PutResponse())
    acks.applied_by_all(4)
    assert not answered.done() and acks.holding_for_all
    acks.applied_by_all(6)
    assert answered.result() is response
    acks.fail(NotLeaderError("deposed"))
    with pytest.raises(NotLeaderError):
        lost.result()
    assert not acks.holding_for_all


# -- trusting the lease in real time ----------------------------------------------------------


def test_the_lease_is_trusted_only_while_ticks_come_on_time() -> None:
    """A stalled node's Raft core counts fewer ticks than real time passed: a lease confirmed
    before the stall must not be relied on after it."""
    trust = LeaseTrust(tick_s=0.1, election_s=1.0)
    assert not trust.trusted(0.0)  # no tick fed yet
    trust.tick_due(0.1, late_s=0.001)
    trust.fed(0.1)
    assert trust.trusted(0.15) and trust.trusted(0.2)
    assert not trust.trusted(0.21)  # a tick interval without a tick fed: stalled, or just resumed
    trust.tick_due(4.0, late_s=3.7)  # the first tick after a pause of the whole process
    trust.fed(4.0)
    assert not trust.trusted(4.05)
    for at in (4.1, 4.5, 4.9):
        trust.tick_due(at, late_s=0.0)
        trust.fed(at)
        assert not trust.trusted(at)  # an election timeout after the late tick
    trust.fed(5.0)
    assert trust.trusted(5.0)
