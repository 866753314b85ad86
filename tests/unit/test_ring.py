import dataclasses
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kvstore.ring import (
    DEFAULT_VNODES,
    RING_SIZE,
    ClusterMap,
    balance_report,
    hash64,
    partition_for_key,
    partition_start,
    place,
    rebalance_plan,
    resolve_tokens,
    routing_key,
    vnode_tokens,
)

# The worst max/min replicas per node measured over 2000 random clusters of each size 3..10
# (P=64, RF=3, V=64; `benchmarks/ring.py --clusters 2000`) was 3.57, and 3.71 with other seeds,
# both at N=10: with 192 replicas over 10 nodes each node's count is roughly Binomial(64, 0.3),
# so ~19 +/- 3.7. The bound leaves margin above that measurement; a
# broken walk or token derivation (e.g. V=1) gives ratios of 10-60 or members with no replica.
MAX_MIN_BOUND = 4.5
# Moves (replicas added, or removed when the set shrinks) on one membership change, as a
# multiple of the ideal RF*P/N; the worst measured over 3000 random changes was 1.49.
MOVE_BOUND = 2.0

node_ids = st.text(min_size=1, max_size=8)
member_lists = st.lists(node_ids, min_size=1, max_size=10, unique=True)
partition_counts = st.sampled_from([1, 2, 8, 64])
replication_factors = st.integers(min_value=1, max_value=5)
vnode_counts = st.sampled_from([1, 3, 16, DEFAULT_VNODES])
fast = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_map(
    ids: list[str], partitions: int = 64, replication_factor: int = 3, vnodes: int = DEFAULT_VNODES
) -> ClusterMap:
    return ClusterMap(
        epoch=1,
        members={node_id: f"{node_id}.example:7000" for node_id in ids},
        partitions=partitions,
        replication_factor=replication_factor,
        vnodes=vnodes,
    )


# --- hashing and routing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (b"{user42}:cart", b"user42"),
        (b"order:{user42}:7", b"user42"),
        (b"{a}{b}", b"a"),
        (b"{{a}}", b"{a"),
        (b"{}{user42}", b"{}{user42}"),  # empty first tag: the whole key, as in Redis Cluster
        (b"user42{", b"user42{"),
        (b"user}42{", b"user}42{"),
        (b"plain", b"plain"),
        (b"", b""),
    ],
)
def test_routing_key_follows_redis_hash_tags(key: bytes, expected: bytes) -> None:
    assert routing_key(key) == expected


def test_keys_with_the_same_hash_tag_share_a_partition() -> None:
    partitions = {partition_for_key(key, 1024) for key in (b"{user42}:cart", b"{user42}:profile", b"user42")}
    assert len(partitions) == 1


def test_hash_and_tokens_are_pinned() -> None:
    # Clients in other processes and languages route with these values: they must never change.
    assert hash64(b"") == 1753510642322843535
    assert hash64(b"hello") == 11310837208866718150
    assert [partition_for_key(key, 64) for key in (b"", b"a", b"hello", b"{user42}:cart")] == [6, 15, 39, 30]
    assert vnode_tokens("node-1", 2) == (15002807998866342471, 14634201961394867320)


def test_placement_is_the_same_in_another_process_with_another_hash_seed() -> None:
    script = (
        "from kvstore.ring import ClusterMap;"
        "m = ClusterMap(epoch=1, members={f'node-{i}': 'a' for i in range(7)});"
        "print(repr((m.placement, m.partition_for_key(b'{x}y'))))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    output = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout
    here = make_map([f"node-{i}" for i in range(7)])
    assert output.strip() == repr((here.placement, here.partition_for_key(b"{x}y")))


@given(key=st.binary(max_size=40), bits=st.integers(min_value=0, max_value=16))
@settings(max_examples=200)
def test_partition_is_the_one_whose_range_holds_the_hash(key: bytes, bits: int) -> None:
    partitions = 1 << bits
    partition = partition_for_key(key, partitions)
    start = partition_start(partition, partitions)
    assert start <= hash64(routing_key(key)) < start + RING_SIZE // partitions


def test_one_partition_holds_every_key() -> None:
    assert {partition_for_key(bytes([b]), 1) for b in range(256)} == {0}


@pytest.mark.parametrize("partitions", [0, -4, 3, 6, 100, True, 1 << 17, 2.0])
def test_partition_count_must_be_a_power_of_two(partitions: int) -> None:
    with pytest.raises(ValueError, match="partitions"):
        partition_for_key(b"k", partitions)
    with pytest.raises(ValueError, match="partitions"):
        make_map(["a"], partitions=partitions)


def test_keys_must_be_bytes() -> None:
    with pytest.raises(ValueError, match="bytes"):
        partition_for_key("user42", 64)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bytes"):
        make_map(["a"]).partition_for_key("user42")  # type: ignore[arg-type]


# --- placement with explicit tokens ----------------------------------------------------


def test_replicas_are_the_next_distinct_nodes_clockwise_from_the_partition_start() -> None:
    quarter = RING_SIZE // 4
    tokens = {"a": [0], "b": [quarter], "c": [2 * quarter], "d": [3 * quarter]}
    # A token exactly at a partition's start is the first one met from it.
    assert place(tokens, tokens, 4, 2) == (("a", "b"), ("b", "c"), ("c", "d"), ("d", "a"))
    # Tokens just after the starts, with a node owning two of them: the walk skips its repeat.
    tokens = {"a": [1, quarter + 1], "b": [2 * quarter + 1], "c": [3 * quarter + 1]}
    assert place(tokens, tokens, 4, 2) == (("a", "b"), ("a", "b"), ("b", "c"), ("c", "a"))


def test_walk_wraps_around_the_end_of_the_ring() -> None:
    tokens = {"a": [1], "b": [2]}
    assert place(tokens, tokens, 2, 1) == (("a",), ("a",))


def test_nodes_sharing_a_token_are_ordered_by_id_whatever_the_input_order() -> None:
    tokens = {"b": [5], "a": [5], "c": [9]}
    assert place(["b", "c", "a"], tokens, 1, 3) == place(["a", "b", "c"], tokens, 1, 3) == (("a", "b", "c"),)


def test_replication_factor_is_capped_by_cluster_size() -> None:
    cluster_map = make_map(["a", "b"], replication_factor=3)
    assert all(sorted(replicas) == ["a", "b"] for replicas in cluster_map.placement)


def test_explicit_tokens_override_derived_ones_per_node() -> None:
    cluster_map = ClusterMap(
        epoch=1, members={"a": "h:1", "b": "h:2"}, partitions=2, replication_factor=1, tokens={"a": (0,)}
    )
    assert cluster_map.node_tokens("a") == (0,)
    assert cluster_map.node_tokens("b") == vnode_tokens("b", DEFAULT_VNODES)
    assert cluster_map.placement[0] == ("a",)


@pytest.mark.parametrize(
    ("members", "tokens", "partitions", "replication_factor", "message"),
    [
        ([], {}, 4, 1, "members must not be empty"),
        (["a", "a"], {"a": [1]}, 4, 1, "unique"),
        ([""], {"": [1]}, 4, 1, "non-empty str"),
        (["a"], {}, 4, 1, "no tokens given"),
        (["a"], {"a": [1], "b": [2]}, 4, 1, "not members"),
        (["a"], {"a": []}, 4, 1, "at least one token"),
        (["a"], {"a": [RING_SIZE]}, 4, 1, r"\[0, 2\*\*64\)"),
        (["a"], {"a": [-1]}, 4, 1, r"\[0, 2\*\*64\)"),
        (["a"], {"a": [3, 3]}, 4, 1, "distinct"),
        (["a"], {"a": [1]}, 4, 0, "replication_factor"),
        (["a"], {"a": [1]}, 5, 1, "power of two"),
    ],
)
def test_bad_placement_input_is_rejected(
    members: list[str], tokens: dict[str, list[int]], partitions: int, replication_factor: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        place(members, tokens, partitions, replication_factor)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epoch": -1}, "epoch"),
        ({"members": {}}, "members must not be empty"),
        ({"members": {"a": ""}}, "address"),
        ({"replication_factor": 0}, "replication_factor"),
        ({"vnodes": 0}, "vnodes"),
        ({"tokens": {"zz": (1,)}}, "not members"),
    ],
)
def test_bad_cluster_map_is_rejected(changes: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"epoch": 1, "members": {"a": "h:1"}, **changes}
    with pytest.raises(ValueError, match=message):
        ClusterMap(**arguments)  # type: ignore[arg-type]


# --- the cluster map record --------------------------------------------------------------


def test_cluster_map_cannot_be_changed_after_construction() -> None:
    members = {"a": "h:1", "b": "h:2"}
    cluster_map = ClusterMap(epoch=1, members=members)
    members["c"] = "h:3"
    assert set(cluster_map.members) == {"a", "b"}
    with pytest.raises(TypeError):
        cluster_map.members["c"] = "h:3"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cluster_map.epoch = 2  # type: ignore[misc]


def test_lookups_agree_with_the_placement() -> None:
    cluster_map = make_map(["a", "b", "c", "d"])
    for node_id in cluster_map.members:
        assert cluster_map.partitions_of(node_id) == tuple(
            p for p in range(cluster_map.partitions) if node_id in cluster_map.replicas(p)
        )
    assert cluster_map.preferred_leader(5) == cluster_map.replicas(5)[0]
    assert cluster_map.partition_for_key(b"{t}:x") == partition_for_key(b"t", 64)
    for bad_partition in (-1, 64):
        with pytest.raises(ValueError, match="partition"):
            cluster_map.replicas(bad_partition)
    with pytest.raises(ValueError, match="not a member"):
        cluster_map.partitions_of("zz")


@pytest.mark.parametrize(
    "codec",
    [
        pytest.param(lambda d: json.loads(json.dumps(d)), id="json"),
        pytest.param(lambda d: msgpack.unpackb(msgpack.packb(d)), id="msgpack"),
    ],
)
def test_cluster_map_round_trips_through_plain_data(
    codec: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    cluster_map = ClusterMap(
        epoch=7,
        members={"b": "h:2", "a": "h:1", "c": "h:3"},
        partitions=16,
        vnodes=8,
        tokens={"c": (1, 2**63)},
    )
    restored = ClusterMap.from_dict(codec(cluster_map.to_dict()))
    assert restored == cluster_map
    assert hash(restored) == hash(cluster_map)
    assert restored.to_dict() == cluster_map.to_dict()


def test_from_dict_rejects_a_placement_it_does_not_compute() -> None:
    data = make_map(["a", "b", "c", "d"]).to_dict()
    data["placement"][0] = list(reversed(data["placement"][0]))
    with pytest.raises(ValueError, match="placement"):
        ClusterMap.from_dict(data)
    data["placement"] = "nonsense"
    with pytest.raises(ValueError, match="placement"):
        ClusterMap.from_dict(data)


@pytest.mark.parametrize("missing", ["epoch", "members", "partitions", "replication_factor", "vnodes"])
def test_from_dict_names_a_missing_field(missing: str) -> None:
    data = make_map(["a"]).to_dict()
    del data[missing]
    with pytest.raises(ValueError, match=missing):
        ClusterMap.from_dict(data)


def test_membership_changes_advance_the_epoch() -> None:
    cluster_map = make_map(["a", "b"])
    grown = cluster_map.with_member("c", "h:3")
    assert (grown.epoch, set(grown.members)) == (2, {"a", "b", "c"})
    shrunk = grown.without_member("a")
    assert (shrunk.epoch, set(shrunk.members)) == (3, {"b", "c"})
    with pytest.raises(ValueError, match="not a member"):
        shrunk.without_member("a")


# --- rebalance plans and balance reports -------------------------------------------------


def test_same_placement_needs_no_moves() -> None:
    cluster_map = make_map(["a", "b", "c", "d"])
    assert rebalance_plan(cluster_map, dataclasses.replace(cluster_map, epoch=9)) == []


def test_plan_between_different_partition_counts_is_refused() -> None:
    with pytest.raises(ValueError, match="partition count"):
        rebalance_plan(make_map(["a"], partitions=8), make_map(["a"], partitions=16))


def test_plan_lists_added_and_removed_replicas_in_replica_order() -> None:
    quarter = RING_SIZE // 4
    old = ClusterMap(
        epoch=1,
        members={"a": "h", "b": "h"},
        partitions=4,
        replication_factor=2,
        tokens={"a": (0,), "b": (quarter, 2 * quarter, 3 * quarter)},
    )
    new = old.with_member("c", "h", tokens=[quarter // 2])
    moves = rebalance_plan(old, new)
    # Partition 0 now walks a, c, b: c displaces b. Partitions 1-3 meet b, then a, before c.
    assert [(m.partition, m.add, m.remove, m.new_replicas) for m in moves] == [
        (0, ("c",), ("b",), ("a", "c"))
    ]
    assert sorted(new.node_tokens("c")) == [quarter // 2]


def test_balance_report_counts_members_without_replicas() -> None:
    half = RING_SIZE // 2
    cluster_map = ClusterMap(
        epoch=1,
        members={"a": "h", "b": "h", "idle": "h"},
        partitions=2,
        replication_factor=1,
        tokens={"a": (0,), "b": (half,), "idle": (half + 1,)},
    )
    report = balance_report(cluster_map)
    assert dict(report.replicas_per_node) == {"a": 1, "b": 1, "idle": 0}
    assert dict(report.leaders_per_node) == {"a": 1, "b": 1, "idle": 0}
    assert (report.max_replicas, report.min_replicas, report.max_min_ratio) == (1, 0, float("inf"))


def test_balance_of_random_clusters_of_3_to_10_nodes() -> None:
    rng = random.Random(2024)
    worst = {}
    for size in range(3, 11):
        ratios = []
        for _ in range(60):
            ids = [f"{rng.getrandbits(48):012x}" for _ in range(size)]
            ratios.append(balance_report(make_map(ids)).max_min_ratio)
        worst[size] = max(ratios)
    print("worst max/min replicas per node over 60 random clusters (P=64, RF=3, V=64):", worst)
    assert max(worst.values()) <= MAX_MIN_BOUND


# --- properties --------------------------------------------------------------------------


@given(
    ids=member_lists, partitions=partition_counts, replication_factor=replication_factors, vnodes=vnode_counts
)
@fast
def test_every_partition_has_min_rf_n_distinct_member_replicas(
    ids: list[str], partitions: int, replication_factor: int, vnodes: int
) -> None:
    cluster_map = make_map(ids, partitions, replication_factor, vnodes)
    assert len(cluster_map.placement) == partitions
    for replicas in cluster_map.placement:
        assert len(set(replicas)) == len(replicas) == min(replication_factor, len(ids))
        assert set(replicas) <= set(ids)
    report = balance_report(cluster_map)
    assert sum(report.replicas_per_node.values()) == partitions * min(replication_factor, len(ids))


# Derandomized: balance is a statistical property, so the examples are fixed to keep CI stable.
@given(ids=st.lists(node_ids, min_size=1, max_size=10, unique=True))
@settings(max_examples=40, deadline=None, derandomize=True)
def test_replicas_per_node_are_balanced(ids: list[str]) -> None:
    report = balance_report(make_map(ids))
    assert report.min_replicas > 0
    assert report.max_min_ratio <= MAX_MIN_BOUND


@given(ids=member_lists, new_id=node_ids, replication_factor=replication_factors, vnodes=vnode_counts)
@fast
def test_adding_a_node_moves_only_replicas_to_it(
    ids: list[str], new_id: str, replication_factor: int, vnodes: int
) -> None:
    assume(new_id not in ids)
    old = make_map(ids, replication_factor=replication_factor, vnodes=vnodes)
    new = old.with_member(new_id, "h:9")
    moves = {move.partition: move for move in rebalance_plan(old, new)}
    for partition, (before, after) in enumerate(zip(old.placement, new.placement, strict=True)):
        if partition not in moves:
            # A partition that does not gain the node keeps its replicas and their order.
            assert after == before and new_id not in after
            continue
        move = moves[partition]
        assert move.add == (new_id,)
        # The new node displaces exactly one replica, unless the set was below RF.
        assert len(move.remove) == (1 if len(ids) >= replication_factor else 0)


@given(
    ids=st.lists(node_ids, min_size=2, max_size=10, unique=True),
    replication_factor=replication_factors,
    vnodes=vnode_counts,
)
@fast
def test_removing_a_node_moves_only_its_replicas(
    ids: list[str], replication_factor: int, vnodes: int
) -> None:
    gone = ids[0]
    old = make_map(ids, replication_factor=replication_factor, vnodes=vnodes)
    new = old.without_member(gone)
    moves = {move.partition: move for move in rebalance_plan(old, new)}
    assert set(moves) == set(old.partitions_of(gone))
    for partition, (before, after) in enumerate(zip(old.placement, new.placement, strict=True)):
        if partition not in moves:
            assert after == before
            continue
        assert moves[partition].remove == (gone,)
        assert len(moves[partition].add) == (1 if len(ids) > replication_factor else 0)


# Derandomized for the same reason as the balance test: how many replicas a node gains or
# loses is its share of the ring, a statistical quantity (with V=1 one node can own most of it).
@given(ids=st.lists(node_ids, min_size=2, max_size=11, unique=True))
@settings(max_examples=40, deadline=None, derandomize=True)
def test_a_membership_change_moves_close_to_the_minimum(ids: list[str]) -> None:
    smaller, larger = make_map(ids[1:]), make_map(ids)
    ideal = min(3, len(ids)) * 64 / len(ids)
    for old, new in ((smaller, larger), (larger, smaller)):
        moves = rebalance_plan(old, new)
        assert sum(len(move.add) for move in moves) <= MOVE_BOUND * ideal
        assert sum(len(move.remove) for move in moves) <= MOVE_BOUND * ideal


@given(
    ids=member_lists,
    partitions=partition_counts,
    replication_factor=replication_factors,
    seed=st.integers(0, 2**32),
)
@fast
def test_placement_ignores_member_order(
    ids: list[str], partitions: int, replication_factor: int, seed: int
) -> None:
    shuffled = list(ids)
    random.Random(seed).shuffle(shuffled)
    tokens = resolve_tokens(ids, 8)
    shuffled_tokens = {node_id: tuple(reversed(tokens[node_id])) for node_id in shuffled}
    assert place(shuffled, shuffled_tokens, partitions, replication_factor) == place(
        ids, tokens, partitions, replication_factor
    )
    assert (
        make_map(shuffled, partitions, replication_factor).to_dict()
        == make_map(ids, partitions, replication_factor).to_dict()
    )
