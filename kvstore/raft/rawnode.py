"""`RawNode`: the synchronous interface a runtime (or the simulator) drives.

Usage, one loop per node:

    node.tick()                      # every tick of the caller's clock
    node.step(message)               # every message received from a peer
    node.propose([b"..."])           # client writes (leader only)
    if node.has_ready():
        rd = node.ready()
        ...persist, then send, then apply, as `Ready` says...
        node.advance(rd)

`ready()` and `advance()` alternate strictly: nothing else may be called in between except
by the same loop that will call `advance()` next, and `ready()` is not called again before.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from kvstore.raft.log_storage import LogStorage
from kvstore.raft.progress import ProgressState
from kvstore.raft.raft import Config, Raft
from kvstore.raft.types import (
    NONE,
    ConfChange,
    ConfState,
    HardState,
    Message,
    Ready,
    Role,
    SoftState,
)


@dataclass(frozen=True, slots=True)
class PeerStatus:
    match: int
    next: int
    state: ProgressState
    is_learner: bool
    applied: int  # as the peer last reported it (0 for the leader itself: see Status.applied)


@dataclass(frozen=True, slots=True)
class Status:
    id: int
    term: int
    vote: int
    role: Role
    leader: int
    commit: int
    applied: int
    last_index: int
    conf_state: ConfState
    progress: dict[int, PeerStatus]
    lead_transferee: int
    lease_valid: bool


class RawNode:
    def __init__(self, config: Config, storage: LogStorage, rng: random.Random) -> None:
        self.raft = Raft(config, storage, rng)
        self._prev_hard_state = self.raft.hard_state()
        self._prev_soft_state = SoftState(self.raft.lead, self.raft.role)
        self._ready_outstanding = False

    # -- inputs -----------------------------------------------------------------------------

    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        self.raft.campaign()

    def step(self, message: Message) -> None:
        self.raft.step(message)

    def propose(self, data: list[bytes]) -> int:
        """Append entries carrying `data` (leader only: raises NotLeaderError with a hint
        otherwise). Returns the log index of the last entry."""
        return self.raft.propose(data)

    def propose_conf_change(self, change: ConfChange) -> int:
        return self.raft.propose_conf_change(change)

    def apply_conf_change(self, change: ConfChange) -> ConfState:
        return self.raft.apply_conf_change(change)

    def read_index(self, request_id: int, lease: bool = False) -> None:
        """Request a linearizable read point. With `lease`, a leader whose lease holds answers
        at once, without a quorum round."""
        self.raft.read_index(request_id, lease)

    def transfer_leader(self, to: int) -> None:
        self.raft.transfer_leader(to)

    def report_snapshot(self, to: int, success: bool) -> None:
        self.raft.report_snapshot(to, success)

    def report_unreachable(self, to: int) -> None:
        self.raft.report_unreachable(to)

    # -- Ready ------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        # Called for every group on every loop cycle: compare fields, build nothing.
        raft = self.raft
        log = raft.log
        return bool(
            raft.msgs
            or raft.read_states
            or log.unstable_entries
            or log.unstable_snapshot is not None
            or log.has_next_committed_entries()
            or self._hard_state_changed()
            or self._soft_state_changed()
        )

    def ready(self) -> Ready:
        if self._ready_outstanding:
            raise AssertionError("ready() called again before advance()")
        self._ready_outstanding = True
        raft = self.raft
        log = raft.log
        # Build the state records only when they changed: most Readies change neither.
        hard_state = raft.hard_state() if self._hard_state_changed() else None
        soft_state = SoftState(raft.lead, raft.role) if self._soft_state_changed() else None
        entries = tuple(log.unstable_entries)
        messages = tuple(raft.msgs)
        raft.msgs = []
        read_states = tuple(raft.read_states)
        raft.read_states = []
        return Ready(
            soft_state=soft_state,
            hard_state=hard_state,
            entries=entries,
            snapshot=log.unstable_snapshot,
            committed_entries=tuple(log.next_committed_entries()),
            messages=messages,
            read_states=read_states,
            must_sync=bool(entries) or _vote_changed(hard_state, self._prev_hard_state),
        )

    def _hard_state_changed(self) -> bool:
        prev = self._prev_hard_state
        raft = self.raft
        return raft.term != prev.term or raft.vote != prev.vote or raft.log.committed != prev.commit

    def _soft_state_changed(self) -> bool:
        prev = self._prev_soft_state
        return self.raft.lead != prev.leader or self.raft.role != prev.role

    def advance(self, rd: Ready) -> None:
        if not self._ready_outstanding:
            raise AssertionError("advance() without ready()")
        self._ready_outstanding = False
        log = self.raft.log
        if rd.hard_state is not None:
            self._prev_hard_state = rd.hard_state
        if rd.soft_state is not None:
            self._prev_soft_state = rd.soft_state
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.snapshot is not None:
            log.stable_snapshot_to(rd.snapshot.meta.index)
            log.applied = max(log.applied, rd.snapshot.meta.index)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)

    # -- observation ------------------------------------------------------------------------
    # Cheap reads for a runtime that asks on every request; `status()` builds the whole picture.

    @property
    def leader(self) -> int:
        """The leader this node knows of (NONE: none known)."""
        return self.raft.lead

    @property
    def role(self) -> Role:
        return self.raft.role

    @property
    def term(self) -> int:
        return self.raft.term

    @property
    def committed(self) -> int:
        return self.raft.log.committed

    @property
    def lease_valid(self) -> bool:
        """Whether this node leads and its leader lease holds: no other leader can have been
        elected, so its committed index is current (under the lease's clock-drift assumption)."""
        return self.raft.lease_valid()

    def applied_by_all(self) -> int:
        """On a leader: the highest index every replica (voters and learners, this node included)
        has reported applied, from the `applied` of their append and heartbeat responses; 0 on
        any other node. Followers report what they applied before the message they answer."""
        raft = self.raft
        if raft.role is not Role.LEADER:
            return 0
        applied = raft.log.applied
        for node_id, pr in raft.prs.items():
            if node_id != raft.id and pr.applied < applied:
                applied = pr.applied
        return applied

    @property
    def transferring_leadership(self) -> bool:
        """Whether this leader is handing its leadership over (proposals are refused meanwhile)."""
        return self.raft.lead_transferee != NONE

    def conf_state(self) -> ConfState:
        return self.raft.conf_state()

    @property
    def conf_change_pending(self) -> bool:
        """Whether a conf change may be in the log and not applied yet (a new leader counts its
        whole unapplied log): the applied configuration may be about to change, and Raft takes
        no other conf change until it is applied."""
        return self.raft.pending_conf_index > self.raft.log.applied

    def status(self) -> Status:
        raft = self.raft
        return Status(
            id=raft.id,
            term=raft.term,
            vote=raft.vote,
            role=raft.role,
            leader=raft.lead,
            commit=raft.log.committed,
            applied=raft.log.applied,
            last_index=raft.log.last_index(),
            conf_state=raft.conf_state(),
            progress={
                node_id: PeerStatus(pr.match, pr.next, pr.state, pr.is_learner, pr.applied)
                for node_id, pr in raft.prs.items()
            }
            if raft.role is Role.LEADER
            else {},
            lead_transferee=raft.lead_transferee,
            lease_valid=raft.lease_valid(),
        )


def _vote_changed(new: HardState | None, old: HardState) -> bool:
    return new is not None and (new.term != old.term or new.vote != old.vote)
