"""Leader balancing: which leaderships this node should hand to a less loaded replica.

Elections pick leaders at random, so a node often ends up leading far more partitions than its
share (12/20/32 of 64 was seen), and that node then bounds the cluster's throughput: the leader
does the most work per write and per linearizable read. Each node looks at the partitions it
hosts and hands over leaderships it holds beyond its fair share, one Raft leadership transfer
each, to the replica that leads the fewest. A node only gives leadership away, never takes it,
and moves a few per round, so nodes acting on slightly different views do not oscillate.

A pure function of what the node sees; the node calls it every few ticks.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from kvstore.raft import NONE


@dataclass(frozen=True, slots=True)
class GroupView:
    """One hosted partition as this node sees it: its leader (NONE if unknown) and its voters."""

    partition: int
    leader: int
    voters: frozenset[int]
    transferring: bool = False


def plan_leader_transfers(
    me: int, groups: Iterable[GroupView], limit: int, unreachable: frozenset[int] = frozenset()
) -> list[tuple[int, int]]:
    """Up to `limit` (partition, new leader) moves that bring this node toward its fair share.

    The fair share is ceil(partitions hosted / replicas per partition). Nothing is planned while
    a partition has no known leader (an election is on: wait for it), and a move only goes to a
    replica that would still lead fewer partitions than this node afterwards, and never to one
    in `unreachable` (not heard from lately): a transfer to it could not finish, and the
    partition refuses writes while a transfer is pending.
    """
    views = list(groups)
    if not views or any(view.leader == NONE for view in views):
        return []
    replicas = max(len(view.voters) for view in views)
    fair = math.ceil(len(views) / replicas)
    counts: Counter[int] = Counter(view.leader for view in views)
    for view in views:
        for voter in view.voters:
            counts.setdefault(voter, 0)
    moves: list[tuple[int, int]] = []
    for view in sorted(views, key=lambda v: v.partition):
        if len(moves) >= limit or counts[me] <= fair:
            break
        if view.leader != me or view.transferring:
            continue
        followers = sorted(view.voters - {me} - unreachable, key=lambda node: (counts[node], node))
        if not followers or counts[followers[0]] + 1 >= counts[me]:
            continue
        target = followers[0]
        moves.append((view.partition, target))
        counts[me] -= 1
        counts[target] += 1
    return moves
