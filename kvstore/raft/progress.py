"""What the leader knows of each follower's log, and how fast it may send to it.

A follower is in one of three states:
* PROBE — the leader does not know where the follower's log ends; one append at a time
  (per heartbeat interval) until an acknowledgement shows the match point;
* REPLICATE — the match point is known; appends are pipelined optimistically, bounded by
  `Inflights` so a slow follower cannot make the leader buffer without limit;
* SNAPSHOT — the follower needs entries the leader has compacted; nothing is sent until the
  snapshot is acknowledged (or times out and the follower is probed again).
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """Last indexes of appends sent but not yet acknowledged, oldest first, bounded."""

    __slots__ = ("capacity", "_indexes")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._indexes: deque[int] = deque()

    def add(self, last_index: int) -> None:
        self._indexes.append(last_index)

    def free_up_to(self, index: int) -> None:
        indexes = self._indexes
        while indexes and indexes[0] <= index:
            indexes.popleft()

    def full(self) -> bool:
        return len(self._indexes) >= self.capacity

    def reset(self) -> None:
        self._indexes.clear()

    def __len__(self) -> int:
        return len(self._indexes)


class Progress:
    __slots__ = (
        "match",
        "next",
        "state",
        "pending_snapshot",
        "snapshot_age",
        "recent_active",
        "probe_sent",
        "inflights",
        "is_learner",
        "acked_round",
        "applied",
    )

    def __init__(self, next_index: int, max_inflight: int, is_learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.snapshot_age = 0
        # Set on any message from the follower; CheckQuorum clears it every election timeout.
        self.recent_active = False
        self.probe_sent = False
        self.inflights = Inflights(max_inflight)
        self.is_learner = is_learner
        # Highest heartbeat round the follower acknowledged (ReadIndex and leader lease).
        self.acked_round = 0
        # Highest applied index the follower reported (write concern ALL).
        self.applied = 0

    def _reset_state(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_age = 0
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to `index` arrived. Returns whether it was news."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """The follower rejected an append at `rejected`; move `next` back. Returns False when
        the rejection is stale (for an append we no longer care about)."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def __repr__(self) -> str:
        return f"Progress(match={self.match}, next={self.next}, state={self.state.name})"
