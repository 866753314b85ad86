"""The lessor: the leader's half of leases — deadlines on the leader's clock (see docs/locks.md).

The replicated lease table (`kvstore.statemachine.leases`) holds no time. The leader of a
partition keeps a deadline per lease here and turns time into log entries: it proposes
*checkpoints* (the remaining TTL, so that a new leader does not restart an abandoned lease from
its full TTL forever) and *expiries* (which delete the lease and its keys on every replica). It
acknowledges a keepalive only once no later leader could expire the lease before ``ttl`` has
passed since the keepalive was received.

Pure logic: no I/O and no tasks. The node feeds it what happened (`promote`, `demote`, applied
grants, revocations and checkpoints, keepalives received, leadership confirmations) and
`poll` tells it what to do (acknowledge, refuse, propose, confirm). Time comes from an injected
monotonic `Clock`.

**Clock assumption.** Every node's clock runs at a rate within ``1 ± max_drift`` of real time;
offsets between nodes are arbitrary (no timestamp leaves the node that took it, only
durations do). The lessor measures every TTL as ``ttl * (1 + max_drift)`` on its clock, so its
clock cannot show a TTL elapsed before the TTL has passed in real time, and a remaining TTL it
checkpoints is at least ``1 + max_drift`` times the real time left.

**Rules that bind the caller (the node):**

* `promote` only once every entry of earlier terms is applied (the node waits until the first
  entry of its own term is applied), with the leases of the table as applied; `demote` as soon
  as the node is no longer leader (or stops), and fail the tickets it returns.
* Report every applied grant, revoke, expiry and checkpoint of the partition while promoted
  (`granted`, `removed`, `checkpointed`), in apply order.
* Propose what `poll` returns, checkpoints in the order given; if a checkpoint entry could not
  be proposed, hand it back with `checkpoints_dropped`.
* For `LessorWork.confirm = n`, start a ReadIndex round (not a leader-lease read) and call
  `confirmed(n)` when it completes, `confirmation_failed(n)` if it cannot.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from kvstore.statemachine.leases import Lease

T = TypeVar("T")

_NEVER = -math.inf


class Clock(Protocol):
    """A monotonic clock: seconds since an arbitrary origin, never going back."""

    def now(self) -> float: ...


class MonotonicClock:
    """The process's monotonic clock."""

    def now(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told: for tests and the simulator."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds} s)")
        self._now += seconds

    def set(self, now: float) -> None:
        self.advance(now - self._now)


@dataclass(frozen=True, slots=True)
class LessorConfig:
    max_drift: float = 0.01
    """Bound on how far any node's clock rate may differ from real time (0.01: 1 %)."""
    checkpoint_interval: float = 5.0
    """How often (seconds) the leader checkpoints the remaining TTL of every lease that was
    not renewed for that long. Under leader churn an abandoned lease still expires as long as
    leaders reign longer than this plus a commit; a lease renewed more often than this is
    never checkpointed."""
    expire_retry: float = 3.0
    """How long after proposing a lease's expiry the leader proposes it again if the lease is
    still there (the first entry was lost to a leader change)."""
    max_expiries: int = 1000
    """At most this many leases per expire entry (one entry per `poll`)."""
    max_checkpoints: int = 1000
    """At most this many leases per checkpoint entry (one entry per `poll`)."""

    def __post_init__(self) -> None:
        if not 0 <= self.max_drift < 1:
            raise ValueError(f"max_drift must be in [0, 1), got {self.max_drift}")
        if self.checkpoint_interval <= 0 or self.expire_retry <= 0:
            raise ValueError("checkpoint_interval and expire_retry must be positive")
        if self.max_expiries < 1 or self.max_checkpoints < 1:
            raise ValueError("max_expiries and max_checkpoints must be at least 1")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint to propose: lease `lease` granted at `revision` has `remaining_ms` left
    (0: clear the checkpoint; a new leader restarts the lease from its full TTL)."""

    lease: int
    revision: int
    remaining_ms: int


@dataclass(frozen=True, slots=True)
class Expiry:
    """An expiry to propose: lease `lease` granted at `revision`."""

    lease: int
    revision: int


@dataclass(frozen=True, slots=True)
class LessorWork(Generic[T]):
    """What `poll` asks the node to do now."""

    acknowledged: tuple[tuple[T, int], ...] = ()
    """Keepalives to answer: (ticket, the lease's TTL in seconds)."""
    refused: tuple[T, ...] = ()
    """Keepalives to refuse: the lease is gone or being expired (LEASE_NOT_FOUND)."""
    checkpoints: tuple[Checkpoint, ...] = ()
    """To propose as one entry, unless empty."""
    expiries: tuple[Expiry, ...] = ()
    """To propose as one entry, unless empty."""
    confirm: int | None = None
    """Start a ReadIndex round for confirmation number `confirm`."""


@dataclass(slots=True)
class _Ticket(Generic[T]):
    ticket: T
    lease: int
    received: int  # the lessor's event number at receipt (orders it against checkpoints)
    round: int = 0  # the confirmation round that covers it (0: none started yet)
    confirmed: bool = False


@dataclass(slots=True)
class _LeaseClock:
    """The leader's view of one lease. Mutable: it changes with every keepalive."""

    lease: int
    revision: int
    ttl: int
    deadline: float
    # The remaining TTL of the lease's last applied checkpoint (0: none or cleared) and the
    # lessor's event number when this leader proposed it (0: before this leader's term).
    # Event numbers rather than times: a clock may show the same time twice.
    applied_remaining_ms: int
    applied_proposed: int
    # Event numbers of this leader's checkpoints of the lease not applied yet, in log order.
    in_flight: deque[int] = field(default_factory=deque)
    expiry_proposed_at: float | None = None  # clock time

    def restart_value(self, full: float) -> float:
        """What a new leader would restart the lease from, in seconds."""
        return self.applied_remaining_ms / 1000 if self.applied_remaining_ms else full

    def safe_for(self, received: int) -> bool:
        """Whether no checkpoint in the log, now or later, could make a new leader expire the
        lease before `received` + TTL: every checkpoint proposed before `received` is applied,
        and the last one applied is a clear or was proposed at or after `received`."""
        if self.in_flight and self.in_flight[0] < received:
            return False
        return self.applied_remaining_ms == 0 or self.applied_proposed > received


class Lessor(Generic[T]):
    """The lease deadlines of one partition while this node leads it (see the module doc).

    `T` is the type of the caller's keepalive tickets (a future, a request id...): the lessor
    hands them back in `LessorWork` to be answered.
    """

    def __init__(self, clock: Clock, config: LessorConfig | None = None) -> None:
        self._clock = clock
        self.config = config or LessorConfig()
        self._leases: dict[int, _LeaseClock] = {}
        self._tickets: list[_Ticket[T]] = []
        self._rounds_started = 0
        self._events = 0  # numbers keepalives and checkpoint proposals in the order they happen
        self._primary = False
        self._next_checkpoint_at = _NEVER

    @property
    def primary(self) -> bool:
        """Whether the lessor is promoted (keeps deadlines and answers keepalives)."""
        return self._primary

    def _full(self, ttl: int) -> float:
        return ttl * (1 + self.config.max_drift)

    # -- leadership -------------------------------------------------------------------------

    def promote(self, leases: Iterable[Lease]) -> None:
        """Start keeping deadlines for `leases` (the table as applied): each restarts from now,
        for its checkpointed remaining TTL if it has one, else its full TTL."""
        now = self._clock.now()
        self._primary = True
        self._leases = {
            lease.id: _LeaseClock(
                lease.id,
                lease.revision,
                lease.ttl,
                self._restart_deadline(now, lease),
                lease.remaining_ms,
                0,
            )
            for lease in leases
        }
        self._next_checkpoint_at = now + self.config.checkpoint_interval

    def _restart_deadline(self, now: float, lease: Lease) -> float:
        return now + (lease.remaining_ms / 1000 if lease.remaining_ms else self._full(lease.ttl))

    def demote(self) -> list[T]:
        """Forget every deadline; return the keepalives not yet answered, to fail (the client
        retries on the new leader)."""
        pending = [ticket.ticket for ticket in self._tickets]
        self._primary = False
        self._leases = {}
        self._tickets = []
        return pending

    # -- applied changes --------------------------------------------------------------------

    def granted(self, lease: Lease) -> None:
        """A grant was applied: the lease starts now, for its full TTL."""
        if self._primary:
            now = self._clock.now()
            self._leases[lease.id] = _LeaseClock(
                lease.id, lease.revision, lease.ttl, now + self._full(lease.ttl), 0, 0
            )

    def removed(self, lease: int) -> list[T]:
        """A revoke or an expiry of `lease` was applied; return its unanswered keepalives, to
        refuse (LEASE_NOT_FOUND)."""
        self._leases.pop(lease, None)
        gone = [ticket.ticket for ticket in self._tickets if ticket.lease == lease]
        if gone:
            self._tickets = [ticket for ticket in self._tickets if ticket.lease != lease]
        return gone

    def checkpointed(self, lease: int, remaining_ms: int) -> None:
        """A checkpoint of `lease` was applied (the table accepted it)."""
        clock = self._leases.get(lease)
        if clock is None:
            return
        # While promoted, every applied checkpoint is one of this leader's, in proposal order.
        clock.applied_proposed = clock.in_flight.popleft() if clock.in_flight else 0
        clock.applied_remaining_ms = remaining_ms

    def checkpoints_dropped(self, checkpoints: Iterable[Checkpoint]) -> None:
        """These checkpoints (the last `poll` returned) could not be proposed."""
        for checkpoint in checkpoints:
            clock = self._leases.get(checkpoint.lease)
            if clock is not None and clock.in_flight:
                clock.in_flight.pop()

    # -- keepalives -------------------------------------------------------------------------

    def keep_alive(self, lease: int, ticket: T) -> bool:
        """A keepalive of `lease` was received now. Extends the lease at once; `ticket` comes
        back from `poll` once it may be acknowledged (or refused). False (answer at once with
        LEASE_NOT_FOUND) when this lessor does not know the lease or is expiring it."""
        clock = self._leases.get(lease)
        if not self._primary or clock is None or clock.expiry_proposed_at is not None:
            return False
        clock.deadline = max(clock.deadline, self._clock.now() + self._full(clock.ttl))
        self._events += 1
        self._tickets.append(_Ticket(ticket, lease, self._events))
        return True

    def confirmed(self, round_number: int) -> None:
        """The ReadIndex round `round_number` completed: this node was leader after every
        keepalive that round covers was received."""
        for ticket in self._tickets:
            if ticket.round and ticket.round <= round_number:
                ticket.confirmed = True

    def confirmation_failed(self, round_number: int) -> None:
        """The ReadIndex round `round_number` will not complete: its keepalives need another."""
        for ticket in self._tickets:
            if ticket.round == round_number and not ticket.confirmed:
                ticket.round = 0

    def remaining(self, lease: int) -> float | None:
        """Seconds until the lease may expire at the earliest, in real time; None when this
        lessor does not keep it."""
        clock = self._leases.get(lease)
        if not self._primary or clock is None:
            return None
        return max(0.0, clock.deadline - self._clock.now()) / (1 + self.config.max_drift)

    # -- the work ---------------------------------------------------------------------------

    def poll(self) -> LessorWork[T]:
        """What to do now: keepalives to answer, an expire and a checkpoint entry to propose, a
        ReadIndex round to start. Call it after every change fed in and on a timer (the next
        deadline, or at least every `checkpoint_interval`)."""
        if not self._primary:
            return LessorWork()
        now = self._clock.now()
        expiries, refused = self._expire(now)
        acknowledged, clears = self._answer()
        self._proposing(clears)
        checkpoints = clears + self._proposing(
            self._due_checkpoints(now, self.config.max_checkpoints - len(clears))
        )
        confirm = None
        if any(not ticket.round for ticket in self._tickets):
            self._rounds_started += 1
            confirm = self._rounds_started
            for ticket in self._tickets:
                if not ticket.round:
                    ticket.round = confirm
        return LessorWork(tuple(acknowledged), tuple(refused), tuple(checkpoints), tuple(expiries), confirm)

    def _proposing(self, checkpoints: list[Checkpoint]) -> list[Checkpoint]:
        for checkpoint in checkpoints:
            self._events += 1
            self._leases[checkpoint.lease].in_flight.append(self._events)
        return checkpoints

    def next_deadline(self) -> float | None:
        """The earliest time `poll` may have something new to do without being fed anything
        (a deadline passing, checkpoints due, an expiry to retry); None when not promoted."""
        if not self._primary:
            return None
        retry = self.config.expire_retry
        times = [self._next_checkpoint_at]
        for clock in self._leases.values():
            times.append(
                clock.deadline if clock.expiry_proposed_at is None else clock.expiry_proposed_at + retry
            )
        return min(times)

    def _expire(self, now: float) -> tuple[list[Expiry], list[T]]:
        retry = self.config.expire_retry
        due = sorted(
            (clock.deadline, clock.lease)
            for clock in self._leases.values()
            if clock.deadline <= now
            and (clock.expiry_proposed_at is None or now - clock.expiry_proposed_at >= retry)
        )[: self.config.max_expiries]
        expiries: list[Expiry] = []
        expiring: set[int] = set()
        for _, lease in due:
            clock = self._leases[lease]
            clock.expiry_proposed_at = now
            expiries.append(Expiry(lease, clock.revision))
            expiring.add(lease)
        refused = [ticket.ticket for ticket in self._tickets if ticket.lease in expiring]
        if refused:
            self._tickets = [ticket for ticket in self._tickets if ticket.lease not in expiring]
        return expiries, refused

    def _answer(self) -> tuple[list[tuple[T, int]], list[Checkpoint]]:
        """Acknowledge the confirmed keepalives whose lease no checkpoint endangers; for the
        endangered ones, clear the lease's checkpoint (at once, alongside the confirmation)
        unless a checkpoint proposed after them is on its way."""
        acknowledged: list[tuple[T, int]] = []
        clears: dict[int, Checkpoint] = {}
        waiting: list[_Ticket[T]] = []
        for ticket in self._tickets:
            clock = self._leases[ticket.lease]
            if ticket.confirmed and clock.safe_for(ticket.received):
                acknowledged.append((ticket.ticket, clock.ttl))
                continue
            waiting.append(ticket)
            if not clock.safe_for(ticket.received) and not (
                clock.in_flight and clock.in_flight[-1] > ticket.received
            ):
                clears[clock.lease] = Checkpoint(clock.lease, clock.revision, 0)
        self._tickets = waiting
        return acknowledged, list(clears.values())

    def _due_checkpoints(self, now: float, limit: int) -> list[Checkpoint]:
        """Checkpoints of the leases whose remaining TTL dropped by `checkpoint_interval` or more
        below what a new leader would restart them from, once per interval, soonest deadline
        first."""
        if now < self._next_checkpoint_at or limit <= 0:
            return []
        self._next_checkpoint_at = now + self.config.checkpoint_interval
        interval = self.config.checkpoint_interval
        due: list[tuple[float, _LeaseClock]] = []
        for clock in self._leases.values():
            if clock.in_flight or clock.expiry_proposed_at is not None:
                continue
            remaining = clock.deadline - now
            restart = clock.restart_value(self._full(clock.ttl))
            if remaining > 0 and restart - remaining >= interval:
                due.append((clock.deadline, clock))
        due.sort(key=lambda item: (item[0], item[1].lease))
        # Rounded up: a longer remaining TTL only delays an expiry, a shorter one could hasten it.
        return [
            Checkpoint(clock.lease, clock.revision, math.ceil((clock.deadline - now) * 1000))
            for _, clock in due[:limit]
        ]
