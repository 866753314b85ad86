"""How a partition's replica set changes safely, step by step, and how many change at once.

`rebalance_plan` says which partitions change (only those whose replica set differs); this
module turns each such `PartitionMove` into the ordered steps that carry it out without ever
lowering the partition's durability:

1. ``ADD_LEARNER n``: the new replica joins the Raft group as a learner. A learner receives the
   log (or a snapshot) but does not vote, so a replica with an empty log cannot make the group
   lose its quorum or elect a stale leader while it catches up;
2. ``CATCH_UP n``: wait until the learner has caught up with the leader's commit index;
3. ``PROMOTE n``: the learner becomes a voter (only now does the quorum grow);
4. ``REMOVE n`` for each old replica: it leaves the group (when it leads, it hands leadership
   to another voter first, so the group does not wait for an election);
5. ``TRANSFER_LEADER n``: the new preferred leader takes over, unless it already leads;
6. ``DELETE_DATA n`` for each removed replica: its copy of the partition is deleted, last,
   once nothing can ask it for the data any more.

Adds come before removes, one server at a time (single-server membership changes), so the
voters are at every step a superset of the smaller of the old and new replica sets.

`schedule` picks which moves may advance now: every move already started, then new ones in
partition order, so that at most `limit` run at once and foreground traffic keeps most of the
machine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from kvstore.ring.cluster_map import ClusterMap, PartitionMove, rebalance_plan


class StepKind(IntEnum):
    ADD_LEARNER = 1
    CATCH_UP = 2
    PROMOTE = 3
    REMOVE = 4
    TRANSFER_LEADER = 5
    DELETE_DATA = 6


@dataclass(frozen=True, slots=True)
class MoveStep:
    kind: StepKind
    node: str  # the replica the step is about; for TRANSFER_LEADER the new leader


def move_steps(move: PartitionMove) -> tuple[MoveStep, ...]:
    """The steps of `move`, in the order they must run (see the module docstring)."""
    steps: list[MoveStep] = []
    for node in move.add:
        steps += (MoveStep(StepKind.ADD_LEARNER, node), MoveStep(StepKind.CATCH_UP, node),
                  MoveStep(StepKind.PROMOTE, node))
    steps += (MoveStep(StepKind.REMOVE, node) for node in move.remove)
    steps.append(MoveStep(StepKind.TRANSFER_LEADER, move.new_replicas[0]))
    steps += (MoveStep(StepKind.DELETE_DATA, node) for node in move.remove)
    return tuple(steps)


@dataclass(frozen=True, slots=True)
class MoveProgress:
    """A move and how many of its steps are done."""

    move: PartitionMove
    done: int = 0

    @property
    def steps(self) -> tuple[MoveStep, ...]:
        return move_steps(self.move)

    @property
    def started(self) -> bool:
        return self.done > 0

    @property
    def finished(self) -> bool:
        return self.done >= len(self.steps)

    def next_step(self) -> MoveStep:
        if self.finished:
            raise ValueError(f"the move of partition {self.move.partition} is finished")
        return self.steps[self.done]

    def advanced(self) -> MoveProgress:
        """The progress once the next step is done."""
        self.next_step()
        return MoveProgress(self.move, self.done + 1)


def plan_moves(old: ClusterMap, new: ClusterMap) -> tuple[MoveProgress, ...]:
    """Every move from `old` to `new`, none started, in partition order."""
    return tuple(MoveProgress(move) for move in rebalance_plan(old, new))


def schedule(moves: Iterable[MoveProgress], limit: int) -> list[MoveProgress]:
    """The moves that may take their next step now: every started, unfinished one (a move that
    began is never left half-way), then unstarted ones in partition order, while fewer than
    `limit` are in flight."""
    if limit < 1:
        raise ValueError(f"at least one move must be allowed at once, got {limit}")
    pending = [progress for progress in moves if not progress.finished]
    running = [progress for progress in pending if progress.started]
    waiting = sorted((progress for progress in pending if not progress.started), key=lambda p: p.move.partition)
    return running + waiting[: max(0, limit - len(running))]
