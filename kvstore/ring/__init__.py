"""Hashing, partitioning, virtual-node placement and rebalance plans. Pure: moves no data."""

from kvstore.ring.cluster_map import BalanceReport, ClusterMap, PartitionMove, balance_report, rebalance_plan
from kvstore.ring.hashing import (
    MAX_PARTITIONS,
    RING_SIZE,
    hash64,
    partition_for_key,
    partition_start,
    routing_key,
    vnode_tokens,
)
from kvstore.ring.moves import MoveProgress, MoveStep, StepKind, move_steps, plan_moves, schedule
from kvstore.ring.placement import DEFAULT_VNODES, Placement, place, resolve_tokens

__all__ = [
    "DEFAULT_VNODES",
    "MAX_PARTITIONS",
    "RING_SIZE",
    "BalanceReport",
    "ClusterMap",
    "MoveProgress",
    "MoveStep",
    "PartitionMove",
    "Placement",
    "StepKind",
    "balance_report",
    "hash64",
    "move_steps",
    "partition_for_key",
    "partition_start",
    "place",
    "plan_moves",
    "rebalance_plan",
    "resolve_tokens",
    "routing_key",
    "schedule",
    "vnode_tokens",
]
