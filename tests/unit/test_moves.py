"""Move plans: each changed partition's steps keep it safe, and running every step of every move,
at most K at once, in any interleaving, ends exactly in the new map's placement."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvstore.ring import (
    ClusterMap,
    MoveStep,
    PartitionMove,
    StepKind,
    move_steps,
    plan_moves,
    schedule,
)

PARTITIONS = 32


def make_map(ids: list[str], replication_factor: int = 3) -> ClusterMap:
    return ClusterMap(epoch=1, members={node_id: f"{node_id}:7000" for node_id in ids},
                      partitions=PARTITIONS, replication_factor=replication_factor, vnodes=16)


@dataclass
class Group:
    """A partition's Raft group as the steps change it."""

    voters: set[str]
    leader: str
    learners: set[str] = field(default_factory=set)
    caught_up: set[str] = field(default_factory=set)
    holders: set[str] = field(default_factory=set)  # nodes with a copy of the data

    @classmethod
    def of(cls, replicas: tuple[str, ...]) -> Group:
        return cls(set(replicas), replicas[0], holders=set(replicas))

    def apply(self, step: MoveStep) -> None:
        node = step.node
        if step.kind is StepKind.ADD_LEARNER:
            assert node not in self.voters | self.learners
            self.learners.add(node)
            self.holders.add(node)
        elif step.kind is StepKind.CATCH_UP:
            assert node in self.learners
            self.caught_up.add(node)
        elif step.kind is StepKind.PROMOTE:
            assert node in self.caught_up, "a learner is promoted only once it caught up"
            self.learners.remove(node)
            self.voters.add(node)
        elif step.kind is StepKind.REMOVE:
            self.voters.remove(node)
            if self.leader == node:
                self.leader = min(self.voters)
        elif step.kind is StepKind.TRANSFER_LEADER:
            assert node in self.voters
            self.leader = node
        else:
            assert node not in self.voters | self.learners, "data is deleted only after the replica left"
            self.holders.remove(node)


def test_a_move_adds_learners_first_then_removes_then_moves_leadership_then_deletes() -> None:
    move = PartitionMove(7, ("a", "b", "c"), ("d", "a", "b"), add=("d",), remove=("c",))
    kinds = StepKind
    assert move_steps(move) == (
        MoveStep(kinds.ADD_LEARNER, "d"), MoveStep(kinds.CATCH_UP, "d"), MoveStep(kinds.PROMOTE, "d"),
        MoveStep(kinds.REMOVE, "c"), MoveStep(kinds.TRANSFER_LEADER, "d"), MoveStep(kinds.DELETE_DATA, "c"),
    )


changes = st.sampled_from(["add", "remove", "replace"])
node_counts = st.integers(min_value=1, max_value=7)


def changed_maps(count: int, change: str, replication_factor: int) -> tuple[ClusterMap, ClusterMap]:
    ids = [f"n{i}" for i in range(1, count + 1)]
    old = make_map(ids, replication_factor)
    if change == "add" or count == 1:
        return old, old.with_member("new", "new:7000")
    if change == "remove":
        return old, old.without_member(ids[0])
    return old, old.without_member(ids[0]).with_member("new", "new:7000")


@given(count=node_counts, change=changes, replication_factor=st.integers(1, 4),
       limit=st.integers(1, 6), seed=st.integers(0, 2**32))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_running_the_plan_in_any_order_ends_in_the_new_placement_and_stays_safe(
    count: int, change: str, replication_factor: int, limit: int, seed: int
) -> None:
    old, new = changed_maps(count, change, replication_factor)
    groups = {p: Group.of(old.placement[p]) for p in range(PARTITIONS)}
    progress = {m.move.partition: m for m in plan_moves(old, new)}
    # Only partitions whose replica set changes move.
    assert set(progress) == {p for p in range(PARTITIONS) if set(old.placement[p]) != set(new.placement[p])}
    rng = random.Random(seed)
    while True:
        runnable = schedule(progress.values(), limit)
        if not runnable:
            break
        assert sum(1 for m in progress.values() if m.started and not m.finished) <= limit
        chosen = rng.choice(runnable)
        partition = chosen.move.partition
        groups[partition].apply(chosen.next_step())
        progress[partition] = chosen.advanced()
        floor = min(len(old.placement[partition]), len(new.placement[partition]))
        assert len(groups[partition].voters) >= floor, "a step lowered the partition's durability"
    for partition, group in groups.items():
        wanted = new.placement[partition]
        assert group.voters == group.holders == set(wanted) and not group.learners
        if partition in progress:
            assert group.leader == wanted[0]


def test_schedule_finishes_what_it_started_before_starting_more() -> None:
    old, new = changed_maps(4, "add", 3)
    moves = {m.move.partition: m for m in plan_moves(old, new)}
    assert len(moves) > 3
    first, second, third = sorted(moves)[:3]
    assert [m.move.partition for m in schedule(moves.values(), 2)] == [first, second]
    moves[second] = moves[second].advanced()
    assert [m.move.partition for m in schedule(moves.values(), 2)] == [second, first]
    while not moves[second].finished:
        moves[second] = moves[second].advanced()
    assert [m.move.partition for m in schedule(moves.values(), 2)] == [first, third]
    assert {m.move.partition for m in schedule(moves.values(), 1)} == {first}


def test_limits_and_finished_moves_are_checked() -> None:
    (move, *_) = plan_moves(*changed_maps(3, "add", 3))
    with pytest.raises(ValueError, match="at least one move"):
        schedule([move], 0)
    while not move.finished:
        move = move.advanced()
    assert schedule([move], 3) == []
    with pytest.raises(ValueError, match="finished"):
        move.advanced()
