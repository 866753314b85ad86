"""The cluster map record, the rebalance plan between two maps, and a balance report."""

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from kvstore.ring.hashing import key_partition, partition_bits, vnode_tokens
from kvstore.ring.placement import (
    DEFAULT_VNODES,
    Placement,
    check_members,
    check_replication_factor,
    place,
    resolve_tokens,
)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class ClusterMap:
    """Membership, tokens and the partition placement they imply, at one `epoch`.

    `members` maps node id -> address. Each member's ring tokens are `tokens[node]` when
    given, else `vnodes` tokens derived from its id. `placement` is computed, never passed:
    ``placement[p]`` is partition ``p``'s replicas, preferred leader first.
    """

    epoch: int
    members: Mapping[str, str] = field(hash=False)
    partitions: int = 64
    replication_factor: int = 3
    vnodes: int = DEFAULT_VNODES
    tokens: Mapping[str, tuple[int, ...]] = field(default_factory=dict, hash=False)
    placement: Placement = field(init=False)

    def __post_init__(self) -> None:
        _check_int("epoch", self.epoch, 0)
        partition_bits(self.partitions)
        check_replication_factor(self.replication_factor)
        _check_int("vnodes", self.vnodes, 1)
        if not isinstance(self.members, Mapping):
            raise ValueError(
                f"members must be a mapping of node id to address, got {type(self.members).__name__}"
            )
        check_members(self.members)
        for node_id, address in self.members.items():
            if not isinstance(address, str) or not address:
                raise ValueError(f"address of node {node_id!r} must be a non-empty str, got {address!r}")
        resolved = resolve_tokens(self.members, self.vnodes, self.tokens)
        # Read-only copies: the record is shared between tasks and must not change under them.
        object.__setattr__(self, "members", MappingProxyType(dict(sorted(self.members.items()))))
        object.__setattr__(
            self, "tokens", MappingProxyType({node_id: resolved[node_id] for node_id in sorted(self.tokens)})
        )
        object.__setattr__(
            self, "placement", place(list(resolved), resolved, self.partitions, self.replication_factor)
        )

    def partition_for_key(self, key: bytes) -> int:
        """The partition holding `key` (hash tags honoured)."""
        # `partitions` was checked at construction; this hot path skips the re-check.
        return key_partition(key, self.partitions.bit_length() - 1)

    def replicas(self, partition: int) -> tuple[str, ...]:
        """Partition `partition`'s replicas, preferred leader first."""
        if (
            isinstance(partition, bool)
            or not isinstance(partition, int)
            or not 0 <= partition < self.partitions
        ):
            raise ValueError(f"partition must be an int in [0, {self.partitions}), got {partition!r}")
        return self.placement[partition]

    def preferred_leader(self, partition: int) -> str:
        return self.replicas(partition)[0]

    def partitions_of(self, node_id: str) -> tuple[int, ...]:
        """The partitions `node_id` holds a replica of, in increasing order."""
        if node_id not in self.members:
            raise ValueError(f"node {node_id!r} is not a member at epoch {self.epoch}")
        return tuple(p for p, replicas in enumerate(self.placement) if node_id in replicas)

    def node_tokens(self, node_id: str) -> tuple[int, ...]:
        """The ring tokens of `node_id`, explicit or derived."""
        if node_id not in self.members:
            raise ValueError(f"node {node_id!r} is not a member at epoch {self.epoch}")
        return self.tokens[node_id] if node_id in self.tokens else vnode_tokens(node_id, self.vnodes)

    def with_member(self, node_id: str, address: str, tokens: Sequence[int] | None = None) -> "ClusterMap":
        """The next epoch's map, with `node_id` added (or its address and tokens replaced)."""
        new_tokens = {key: value for key, value in self.tokens.items() if key != node_id}
        if tokens is not None:
            new_tokens[node_id] = tuple(tokens)
        return ClusterMap(
            epoch=self.epoch + 1,
            members={**self.members, node_id: address},
            partitions=self.partitions,
            replication_factor=self.replication_factor,
            vnodes=self.vnodes,
            tokens=new_tokens,
        )

    def without_member(self, node_id: str) -> "ClusterMap":
        """The next epoch's map, with `node_id` removed."""
        if node_id not in self.members:
            raise ValueError(f"node {node_id!r} is not a member at epoch {self.epoch}")
        return ClusterMap(
            epoch=self.epoch + 1,
            members={key: value for key, value in self.members.items() if key != node_id},
            partitions=self.partitions,
            replication_factor=self.replication_factor,
            vnodes=self.vnodes,
            tokens={key: value for key, value in self.tokens.items() if key != node_id},
        )

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of str, int and lists (JSON- and msgpack-friendly).

        Tokens are 64-bit unsigned integers: exact in JSON for Python and msgpack, but a
        JavaScript reader needs a BigInt-aware JSON parser. `placement` is included so that
        clients need not recompute it; `from_dict` checks it against its own computation.
        """
        return {
            "epoch": self.epoch,
            "members": dict(self.members),
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "vnodes": self.vnodes,
            "tokens": {node_id: list(tokens) for node_id, tokens in self.tokens.items()},
            "placement": [list(replicas) for replicas in self.placement],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ClusterMap":
        """The map described by `data` (as made by `to_dict`); `ValueError` when it is malformed."""
        if not isinstance(data, Mapping):
            raise ValueError(f"cluster map must be a mapping, got {type(data).__name__}")
        for required in ("epoch", "members", "partitions", "replication_factor", "vnodes"):
            if required not in data:
                raise ValueError(f"cluster map is missing {required!r}")
        tokens = data.get("tokens", {})
        if not isinstance(tokens, Mapping):
            raise ValueError(f"tokens must be a mapping of node id to tokens, got {type(tokens).__name__}")
        for node_id, node_tokens in tokens.items():
            if not isinstance(node_tokens, Sequence) or isinstance(node_tokens, str | bytes):
                raise ValueError(f"tokens of node {node_id!r} must be a list of ints")
        cluster_map = cls(
            epoch=data["epoch"],
            members=data["members"],
            partitions=data["partitions"],
            replication_factor=data["replication_factor"],
            vnodes=data["vnodes"],
            tokens={node_id: tuple(node_tokens) for node_id, node_tokens in tokens.items()},
        )
        # A different placement means the writer ran another placement algorithm: routing
        # with either would send requests to the wrong nodes.
        if "placement" in data and _as_placement(data["placement"]) != cluster_map.placement:
            raise ValueError(
                f"placement in cluster map epoch {cluster_map.epoch} differs from the computed one"
            )
        return cluster_map


def _as_placement(value: object) -> Placement | None:
    """`value` as a placement, or None when it does not have a placement's shape."""
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        return None
    if not all(
        isinstance(replicas, Sequence) and not isinstance(replicas, str | bytes) for replicas in value
    ):
        return None
    return tuple(tuple(replicas) for replicas in value)


@dataclass(frozen=True, slots=True)
class PartitionMove:
    """How one partition's replica set changes between two maps."""

    partition: int
    old_replicas: tuple[str, ...]
    new_replicas: tuple[str, ...]
    add: tuple[str, ...]
    remove: tuple[str, ...]

    @classmethod
    def between(cls, partition: int, old_replicas: tuple[str, ...], new_replicas: tuple[str, ...]) -> "PartitionMove":
        """The move from `old_replicas` to `new_replicas`: `add` lists the new replicas in the new
        order, `remove` the dropped ones in the old order."""
        add = tuple(node_id for node_id in new_replicas if node_id not in old_replicas)
        remove = tuple(node_id for node_id in old_replicas if node_id not in new_replicas)
        return cls(partition, old_replicas, new_replicas, add, remove)


def rebalance_plan(old_map: ClusterMap, new_map: ClusterMap) -> list[PartitionMove]:
    """The partitions whose replica set differs between the two maps, in partition order
    (`PartitionMove.between`). A partition whose replicas are the same set but whose preferred
    leader changed is not a move (no data has to be copied) and is left out.
    """
    if old_map.partitions != new_map.partitions:
        raise ValueError(
            f"partition count is fixed for a cluster: {old_map.partitions} in the old map, {new_map.partitions} in the new one"
        )
    return [
        PartitionMove.between(partition, old_replicas, new_replicas)
        for partition, (old_replicas, new_replicas) in enumerate(
            zip(old_map.placement, new_map.placement, strict=True)
        )
        if set(old_replicas) != set(new_replicas)
    ]


@dataclass(frozen=True, slots=True)
class BalanceReport:
    """Replicas and preferred leaderships per node; every member appears, with 0 if it has none."""

    replicas_per_node: Mapping[str, int] = field(hash=False)
    leaders_per_node: Mapping[str, int] = field(hash=False)
    max_replicas: int
    min_replicas: int

    @property
    def max_min_ratio(self) -> float:
        """max / min replicas per node; infinite when some member holds none."""
        return self.max_replicas / self.min_replicas if self.min_replicas else float("inf")


def balance_report(cluster_map: ClusterMap) -> BalanceReport:
    replica_counts = Counter(node_id for replicas in cluster_map.placement for node_id in replicas)
    leader_counts = Counter(replicas[0] for replicas in cluster_map.placement)
    per_node = {node_id: replica_counts[node_id] for node_id in cluster_map.members}
    return BalanceReport(
        replicas_per_node=MappingProxyType(per_node),
        leaders_per_node=MappingProxyType(
            {node_id: leader_counts[node_id] for node_id in cluster_map.members}
        ),
        max_replicas=max(per_node.values()),
        min_replicas=min(per_node.values()),
    )
