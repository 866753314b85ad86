"""Leader balancing: a node hands over the leaderships it holds beyond its fair share."""

from __future__ import annotations

from collections import Counter

from kvstore.node.balance import GroupView, plan_leader_transfers
from kvstore.raft import NONE

VOTERS = frozenset({1, 2, 3})


def views(leaders: list[int]) -> list[GroupView]:
    return [GroupView(partition, leader, VOTERS) for partition, leader in enumerate(leaders)]


def test_an_overloaded_node_hands_leaderships_to_the_least_loaded_replica() -> None:
    groups = views([1] * 32 + [2] * 20 + [3] * 12)
    moves = plan_leader_transfers(1, groups, limit=2)
    assert moves == [(0, 3), (1, 3)]


def test_a_node_at_or_below_its_fair_share_keeps_its_leaderships() -> None:
    groups = views([1] * 22 + [2] * 21 + [3] * 21)
    assert plan_leader_transfers(1, groups, limit=5) == []
    assert plan_leader_transfers(3, views([1] * 32 + [2] * 20 + [3] * 12), limit=5) == []


def test_nothing_moves_while_a_partition_has_no_leader() -> None:
    groups = views([1] * 40 + [2] * 20 + [NONE] * 4)
    assert plan_leader_transfers(1, groups, limit=5) == []


def test_partitions_already_being_transferred_are_left_alone() -> None:
    groups = views([1] * 30 + [2] * 17 + [3] * 17)
    groups[0] = GroupView(0, 1, VOTERS, transferring=True)
    moves = plan_leader_transfers(1, groups, limit=1)
    assert moves and moves[0][0] != 0


def test_repeated_rounds_converge_to_the_fair_share_without_overshooting() -> None:
    leaders = [1] * 40 + [2] * 20 + [3] * 4
    for _ in range(50):
        for node in (1, 2, 3):
            for partition, to in plan_leader_transfers(node, views(leaders), limit=2):
                assert leaders[partition] == node
                leaders[partition] = to
    counts = Counter(leaders)
    assert max(counts.values()) == 22 and min(counts.values()) >= 21


def test_only_replicas_of_the_partition_receive_its_leadership() -> None:
    groups = [GroupView(p, 1, frozenset({1, 2})) for p in range(10)] + [
        GroupView(10 + p, 3, frozenset({1, 3})) for p in range(2)
    ]
    for partition, to in plan_leader_transfers(1, groups, limit=10):
        assert to in groups[partition].voters and to != 1


def test_leadership_never_goes_to_a_replica_not_heard_from_lately() -> None:
    """A transfer to a node cut off by a partition cannot finish, and the partition refuses writes
    while it is pending: the balancer, running every second, would keep the partition stalled."""
    groups = views([1] * 32 + [2] * 20 + [3] * 12)
    assert plan_leader_transfers(1, groups, limit=2, unreachable=frozenset({3})) == [(0, 2), (1, 2)]
    assert plan_leader_transfers(1, groups, limit=2, unreachable=frozenset({2, 3})) == []
