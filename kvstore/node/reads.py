"""The reads of one replica: which consistency level may be served here and when, what the answer
says about itself (`served`, `staleness_ms`), and the freshness probes that bound the staleness
of a STALE read.

Levels, as this replica serves them (the client picks the replica, see `kvstore.client.routing`):

* LINEARIZABLE: on the leader, after a ReadIndex round: a quorum confirmed that this node still
  led when the read arrived, and the read waits until the replica applied the commit index of
  that moment. `served` says LINEARIZABLE.
* LEASE: on the leader, at once while its leader lease holds (no messages; correct as long as
  clocks drift no more than the lease's margin); `served` says LEASE. A lease that does not hold
  makes the read fall back to a ReadIndex round, and `served` then says LINEARIZABLE. The Raft
  core says which path released the read (`ReadState.lease`).
* SESSION: any replica, once it applied the session's revision (`min_revision`): the session's
  own writes and everything it read before are then in this replica's state.
* STALE: any replica, now, with a bound on how stale the answer may be (`Freshness`). A read
  that asks for at most `max_staleness_ms` waits briefly for a bound that small and is refused
  otherwise, so that the client asks another replica.

`min_revision` is a floor at every level: the replica answers only once it applied that revision.
A read that cannot be served within `wait_s` (the replica lags, is cut off, or the revision does
not exist yet) is refused with UNAVAILABLE and a message saying why, never left to time out:
another replica may serve it.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from kvstore._pb import kvstore_pb2 as pb
from kvstore.errors import UnavailableError
from kvstore.raft import ReadState
from kvstore.rpc.backend import ServedRead


@dataclass(frozen=True, slots=True)
class FreshnessPoint:
    """A probe's answer: every write acknowledged to any client before `sent_at` (this node's
    monotonic clock, seconds) is at a log index <= `index`."""

    sent_at: float
    index: int


class Freshness:
    """How far behind the present a replica's state may be, measured on this node's own clock.

    A *freshness probe* is a ReadIndex request this replica sends to its leader (or, on the
    leader, answers itself from its lease or a heartbeat round), stamped with the local time
    `sent_at` it left. The leader answers with its commit index `i` after confirming with a
    quorum that it still led after the request arrived, so every write acknowledged to a client
    before `sent_at` (real time) had been committed by then, at an index <= `i`. A write is
    acknowledged only after it is applied, hence committed, so this holds whichever leader
    acknowledged it.

    The bound. Let (s, i) be the newest answered probe with i <= `applied`, and n the local time
    now. The replica's state contains every write acknowledged before s, so no version it returns
    was overwritten by a write acknowledged before s: the answer was current at s. If this node's
    clock runs slow by at most a factor `clock_factor` (real elapsed time <= local elapsed time x
    `clock_factor`), then s was at most (n - s) x `clock_factor` ago in real time, and

        staleness_ms = ceil((n - s) x clock_factor x 1000)

    is a bound on how long before now the answer was current. It needs no bound on message
    delays: a probe delayed in the network, or a node paused between sending it and hearing
    back, only makes (n - s) larger. It does need the clock-rate bound, the same assumption as
    the leader lease (`clock_factor` = election timeout / lease duration): a clock running
    slower than that understates the bound. A replica with no answered probe it has applied up to
    cannot bound its staleness at all.

    Probes run while STALE reads arrive: one every `probe_interval_s` for `active_for_s` after
    the last such read, and one at once for a read that needs a tighter bound. A probe not
    answered within `probe_timeout_s` (a deposed leader never answers) is given up.
    """

    def __init__(self, clock_factor: float, probe_interval_s: float, probe_timeout_s: float,
                 active_for_s: float) -> None:  # fmt: skip
        if clock_factor < 1:
            raise ValueError(f"clock_factor must be >= 1, got {clock_factor}")
        self.clock_factor = clock_factor
        self._probe_interval_s = probe_interval_s
        self._probe_timeout_s = probe_timeout_s
        self._active_for_s = active_for_s
        self._points: list[FreshnessPoint] = []  # by sent_at; at most one the replica applied
        self._probe: tuple[int, float] | None = None  # (request id, sent at) of the probe in flight
        self._last_probe_at = -math.inf
        self._active_until = -math.inf

    def bound_ms(self, applied: int, now: float) -> int | None:
        """The staleness bound of this replica's state at `applied`, now; None when there is none."""
        usable = [point for point in self._points if point.index <= applied]
        if not usable:
            return None
        newest = usable[-1]
        # Older applied points can never be better than the newest one again.
        self._points = [point for point in self._points if point.index > applied or point is newest]
        return math.ceil((now - newest.sent_at) * self.clock_factor * 1000)

    def touch(self, now: float) -> None:
        """A STALE read arrived: keep probing for a while."""
        self._active_until = now + self._active_for_s

    def wants_probe(self, now: float, urgent: bool = False) -> bool:
        """Whether to send a probe now: none in flight, and (unless `urgent`) STALE reads came
        recently and the last probe left at least a probe interval ago."""
        if self._probe is not None:
            if now - self._probe[1] < self._probe_timeout_s:
                return False
            self._probe = None  # lost: its leader was deposed, or the answer was
        if urgent:
            return True
        return now <= self._active_until and now - self._last_probe_at >= self._probe_interval_s

    def probe_sent(self, request_id: int, now: float) -> None:
        self._probe = (request_id, now)
        self._last_probe_at = now

    def take_answer(self, read_state: ReadState) -> bool:
        """Record `read_state` if it answers the probe in flight; False if it is not a probe's."""
        if self._probe is None or self._probe[0] != read_state.request_id:
            return False
        point = FreshnessPoint(self._probe[1], read_state.index)
        self._probe = None
        self._points = [p for p in self._points if p.index < point.index] + [point]
        return True


class LeaseTrust:
    """Whether this node may rely on its leader lease right now, in real time.

    The Raft core counts the lease in ticks. A stall (the process paused, its event loop starved
    of CPU) stops the ticks while real time goes on, and the node then feeds the core only a few
    ticks per loop cycle, so that it does not start an election's worth of ticks at once: for a
    while, or for good, the core's tick count is behind real time, and a lease confirmed before
    the stall still looks valid in ticks while the followers, on real time, may have elected a
    new leader. A stalled leader must not answer from such a lease. So the lease is trusted only
    while ticks come on time and the loop feeds them, and not for an election timeout after a
    tick came more than a tick late: by then every lease confirmed before the stall has run out
    in ticks too. Reads then take a ReadIndex round instead (and say so: `served`).
    """

    __slots__ = ("_tick_s", "_election_s", "_fed_at", "_distrust_until")

    def __init__(self, tick_s: float, election_s: float) -> None:
        self._tick_s = tick_s
        self._election_s = election_s
        self._fed_at = -math.inf
        self._distrust_until = -math.inf

    def tick_due(self, now: float, late_s: float) -> None:
        """A tick fell due `late_s` after its time."""
        if late_s > self._tick_s:
            self._distrust_until = now + self._election_s

    def fed(self, now: float) -> None:
        """The loop fed Raft its pending ticks."""
        self._fed_at = now

    def trusted(self, now: float) -> bool:
        """No late tick for an election timeout, and ticks fed within the last tick interval (a
        loop that has not fed them for longer is stalled, or just resumed from a stall). What
        is left, a tick not yet fed and the tick's own granularity, is what the lease's drift
        margin absorbs besides clock drift."""
        return now >= self._distrust_until and now - self._fed_at <= self._tick_s


class AppliedState(Protocol):
    """What reads need of a replica's state machine: how far it applied."""

    @property
    def applied_index(self) -> int: ...


S = TypeVar("S", bound=AppliedState)


@dataclass(slots=True)
class _Waiting(Generic[S]):
    """A read that may be answered once the replica applied `floor` (and, STALE, has a bound)."""

    future: asyncio.Future[ServedRead[S]]
    served: pb.ReadConsistency  # the level the answer reports
    floor: int
    deadline: float  # refused after this (local monotonic seconds)
    max_staleness_ms: int = 0  # STALE: 0 = any bound will do, but there must be one


@dataclass(frozen=True, slots=True)
class ReadTiming:
    """How long reads wait on a replica, and the clock-drift factor of its staleness bounds."""

    wait_s: float  # a read this replica cannot serve yet is refused after this long
    probe_interval_s: float  # freshness probes while STALE reads come: one per heartbeat
    clock_factor: float  # election timeout / lease duration: the lease's drift margin
    probe_for_s: float = 60.0  # ...for this long after the last STALE read


@dataclass(slots=True)
class ReplicaReads(Generic[S]):
    """The reads waiting on one replica, and its freshness. Used by the node's Ready loop (and
    by `Node.read`, on the same event loop); `lease_index` is the leader's committed index while
    its lease holds (None otherwise): a state that applied it is current, staleness 0."""

    node_id: int
    partition: int
    reader: S
    timing: ReadTiming
    freshness: Freshness = field(init=False)
    # ReadIndex reads sent to Raft: request id -> (future, min_revision, lease asked)
    indexed: dict[int, tuple[asyncio.Future[ServedRead[S]], int, bool]] = field(default_factory=dict)
    waiting: list[_Waiting[S]] = field(default_factory=list)

    def __post_init__(self) -> None:
        timing = self.timing
        self.freshness = Freshness(timing.clock_factor, timing.probe_interval_s, timing.wait_s, timing.probe_for_s)

    # -- new reads --------------------------------------------------------------------------

    def follower_read(self, consistency: pb.ReadConsistency, min_revision: int, max_staleness_ms: int, now: float,
                      lease_index: int | None) -> asyncio.Future[ServedRead[S]]:  # fmt: skip
        """A SESSION or STALE read: answered now if this replica may, else parked until it may
        or until `wait_s` has passed."""
        future: asyncio.Future[ServedRead[S]] = asyncio.get_running_loop().create_future()
        if consistency == pb.STALE:
            self.freshness.touch(now)
        waiting = _Waiting(future, consistency, min_revision, now + self.timing.wait_s, max_staleness_ms)
        if not self._try(waiting, now, lease_index):
            self.waiting.append(waiting)
        return future

    def indexed_read(self, request_id: int, future: asyncio.Future[ServedRead[S]], min_revision: int,
                     lease: bool) -> None:  # fmt: skip
        """A LINEARIZABLE or LEASE read handed to Raft as `request_id`."""
        self.indexed[request_id] = (future, min_revision, lease)

    def released(self, read_states: tuple[ReadState, ...], now: float) -> None:
        """Raft released these read states: probe answers, or ReadIndex reads that may be served
        once the replica applied their index."""
        for read_state in read_states:
            if self.freshness.take_answer(read_state):
                continue
            entry = self.indexed.pop(read_state.request_id, None)
            if entry is None:
                continue
            future, min_revision, lease = entry
            served = pb.LEASE if lease and read_state.lease else pb.LINEARIZABLE
            self.waiting.append(
                _Waiting(future, served, max(read_state.index, min_revision), now + self.timing.wait_s)
            )

    # -- answering ----------------------------------------------------------------------------

    def serve(self, now: float, lease_index: int | None) -> None:
        """Answer every waiting read this replica may answer now; refuse those past their deadline."""
        if not self.waiting:
            return
        waiting = []
        for read in self.waiting:
            if read.future.done() or self._try(read, now, lease_index):
                continue
            if now >= read.deadline:
                read.future.set_exception(self._refusal(read, now))
            else:
                waiting.append(read)
        self.waiting = waiting

    def wants_urgent_probe(self) -> bool:
        """A STALE read waits for a bound this replica does not have yet."""
        return any(read.served == pb.STALE for read in self.waiting)

    def fail_indexed(self, error: Exception) -> None:
        """Leadership was lost: ReadIndex reads not yet released never will be. Those released
        stay: their read point was confirmed while this node led, and applying up to it suffices."""
        for future, _, _ in self.indexed.values():
            if not future.done():
                future.set_exception(error)
        self.indexed.clear()

    def _try(self, read: _Waiting[S], now: float, lease_index: int | None) -> bool:
        applied = self.reader.applied_index
        if applied < read.floor:
            return False
        staleness_ms = 0
        if read.served == pb.STALE:
            if lease_index is not None and applied >= lease_index:
                staleness_ms = 0  # the leader, within its lease: nothing newer exists anywhere
            else:
                bound = self.freshness.bound_ms(applied, now)
                if bound is None or (read.max_staleness_ms and bound > read.max_staleness_ms):
                    return False
                staleness_ms = bound
        read.future.set_result(ServedRead(self.reader, read.served, staleness_ms))
        return True

    def _refusal(self, read: _Waiting[S], now: float) -> UnavailableError:
        where = f"node {self.node_id}, partition {self.partition}"
        applied = self.reader.applied_index
        if applied < read.floor:
            return UnavailableError(
                f"{where} has applied up to revision {applied}, short of the {read.floor} this read needs "
                f"after waiting {self.timing.wait_s:g}s; another replica may have it"
            )
        bound = self.freshness.bound_ms(applied, now)
        if bound is None:
            return UnavailableError(
                f"{where} cannot bound its staleness: no live leader answered it within {self.timing.wait_s:g}s; "
                "another replica may"
            )
        return UnavailableError(
            f"{where} cannot bound its staleness under {read.max_staleness_ms} ms (its bound is {bound} ms: "
            "it has not heard from a live leader recently enough); another replica may"
        )
