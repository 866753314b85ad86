"""Virtual-node placement of partitions on the 64-bit ring.

Partition ``p``'s replicas are the first ``min(RF, N)`` distinct nodes met walking clockwise
from the partition's start point, the first of them being its preferred leader. Because a
node's tokens depend only on its own id, adding a node only inserts its tokens into the walk:
a partition changes exactly when the new node becomes one of its replicas (it displaces the
last one), and removing a node changes exactly the partitions it served. So a membership
change moves about ``RF * P / N`` replicas and nothing else.
"""

from bisect import bisect_left
from collections.abc import Collection, Iterable, Mapping, Sequence

from kvstore.ring.hashing import RING_SIZE, partition_bits, partition_start, vnode_tokens

# Chosen by measurement (benchmarks/ring.py, P=64, RF=3, 3..10 nodes): below 32 tokens per
# node the max/min replicas per node grows quickly, because a node's long arcs cover several
# partition starts; from 32 to 128 the figures are within noise of each other, limited by
# having only 64 partition starts to share out. 64 is the best of them for 4..6 nodes.
DEFAULT_VNODES = 64

# Partition index -> replicas, preferred leader first.
Placement = tuple[tuple[str, ...], ...]


def check_replication_factor(replication_factor: int) -> None:
    if isinstance(replication_factor, bool) or not isinstance(replication_factor, int):
        raise ValueError(f"replication_factor must be an int, got {type(replication_factor).__name__}")
    if replication_factor < 1:
        raise ValueError(f"replication_factor must be >= 1, got {replication_factor}")


def check_members(members: Iterable[str]) -> tuple[str, ...]:
    """The member ids as a tuple, after checking they are non-empty, unique strings."""
    ids = tuple(members)
    if not ids:
        raise ValueError("members must not be empty")
    for node_id in ids:
        if not isinstance(node_id, str) or not node_id:
            raise ValueError(f"node id must be a non-empty str, got {node_id!r}")
    if len(set(ids)) != len(ids):
        duplicates = sorted({node_id for node_id in ids if ids.count(node_id) > 1})
        raise ValueError(f"node ids must be unique, duplicated: {duplicates}")
    return ids


def check_tokens(node_id: str, tokens: Sequence[int]) -> tuple[int, ...]:
    """`tokens` as a tuple, after checking they are distinct ints on the ring."""
    checked = tuple(tokens)
    if not checked:
        raise ValueError(f"node {node_id!r} must have at least one token")
    for token in checked:
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < RING_SIZE:
            raise ValueError(f"token of node {node_id!r} must be an int in [0, 2**64), got {token!r}")
    if len(set(checked)) != len(checked):
        raise ValueError(f"tokens of node {node_id!r} must be distinct")
    return checked


def resolve_tokens(
    members: Iterable[str],
    vnodes: int = DEFAULT_VNODES,
    explicit_tokens: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, tuple[int, ...]]:
    """Every member's tokens: its explicit ones when given, else `vnodes` derived from its id."""
    ids = check_members(members)
    explicit = dict(explicit_tokens or {})
    unknown = sorted(set(explicit) - set(ids))
    if unknown:
        raise ValueError(f"tokens given for nodes that are not members: {unknown}")
    return {
        node_id: check_tokens(node_id, explicit[node_id])
        if node_id in explicit
        else vnode_tokens(node_id, vnodes)
        for node_id in ids
    }


def place(
    members: Collection[str],
    tokens: Mapping[str, Sequence[int]],
    partitions: int,
    replication_factor: int,
) -> Placement:
    """Replicas of every partition, indexed by partition, preferred leader first.

    `tokens` must give every member its ring tokens (see `resolve_tokens`). The result does
    not depend on the order of `members` or of the tokens: ties between nodes holding the
    same token are broken by node id.
    """
    ids = check_members(members)
    partition_bits(partitions)
    check_replication_factor(replication_factor)
    missing = sorted(set(ids) - set(tokens))
    if missing:
        raise ValueError(f"no tokens given for members: {missing}")
    unknown = sorted(set(tokens) - set(ids))
    if unknown:
        raise ValueError(f"tokens given for nodes that are not members: {unknown}")

    ring = sorted((token, node_id) for node_id in ids for token in check_tokens(node_id, tokens[node_id]))
    positions = [token for token, _ in ring]
    owners = [node_id for _, node_id in ring]
    wanted = min(replication_factor, len(ids))

    placement: list[tuple[str, ...]] = []
    for partition in range(partitions):
        # A token at exactly the start point belongs to this partition's walk.
        first = bisect_left(positions, partition_start(partition, partitions))
        replicas: list[str] = []
        for step in range(len(ring)):
            node_id = owners[(first + step) % len(ring)]
            if node_id not in replicas:
                replicas.append(node_id)
                if len(replicas) == wanted:
                    break
        placement.append(tuple(replicas))
    return tuple(placement)
