"""Benchmark of kvstore.ring: hashing throughput, placement time and balance (the data moved on
a membership change is measured by benchmarks/rebalance.py).

    .venv/bin/python benchmarks/ring.py [--keys 300000] [--clusters 200]

Balance is reported two ways: for the ids ``node-1..node-N`` (what a small deployment looks
like) and as median / p99 / worst over `--clusters` clusters of random ids per size, for several
tokens-per-node values, which is the evidence behind the default V.
"""

import argparse
import hashlib
import random
import statistics
import time
from collections.abc import Callable

from kvstore.bench.report import machine_line
from kvstore.ring import DEFAULT_VNODES, ClusterMap, balance_report, hash64, partition_for_key

PARTITIONS = 64
REPLICATION_FACTOR = 3
SIZES = range(3, 11)
VNODE_CHOICES = (8, 16, 32, 64, 128)


def keys_per_second(function: Callable[[bytes], object], keys: list[bytes]) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for key in keys:
            function(key)
        best = min(best, time.perf_counter() - started)
    return len(keys) / best


def make_map(ids: list[str], vnodes: int = DEFAULT_VNODES) -> ClusterMap:
    return ClusterMap(
        epoch=1,
        members={node_id: f"{node_id}:7000" for node_id in ids},
        partitions=PARTITIONS,
        replication_factor=REPLICATION_FACTOR,
        vnodes=vnodes,
    )


def canonical_ids(size: int) -> list[str]:
    return [f"node-{index}" for index in range(1, size + 1)]


def print_hashing(key_count: int) -> None:
    rng = random.Random(1)
    keys = [f"user{rng.getrandbits(32)}:{rng.getrandbits(16)}".encode() for _ in range(key_count)]
    tagged = [b"{" + key + b"}:profile" for key in keys]
    cluster_map = make_map(canonical_ids(5))
    candidates: list[tuple[str, Callable[[bytes], object]]] = [
        ("hash64 (blake2b-64, used)", hash64),
        ("md5 truncated to 64 bits", lambda key: int.from_bytes(hashlib.md5(key).digest()[:8], "big")),
        ("sha1 truncated to 64 bits", lambda key: int.from_bytes(hashlib.sha1(key).digest()[:8], "big")),
        ("partition_for_key(key, 64)", lambda key: partition_for_key(key, PARTITIONS)),
        ("ClusterMap.partition_for_key", cluster_map.partition_for_key),
    ]
    print(f"\nhashing ({key_count} keys of ~20 bytes, best of 3)")
    for name, function in candidates:
        print(f"  {name:32} {keys_per_second(function, keys) / 1e6:6.2f} M keys/s")
    rate = keys_per_second(cluster_map.partition_for_key, tagged)
    print(f"  {'... with a {hash tag}':32} {rate / 1e6:6.2f} M keys/s")


def print_placement_time() -> None:
    print(f"\nplacement time (ClusterMap construction, P={PARTITIONS}, RF={REPLICATION_FACTOR}, best of 5)")
    for size in (3, 10, 30, 100):
        for vnodes in (DEFAULT_VNODES, 256):
            ids = canonical_ids(size)
            best = float("inf")
            for _ in range(5):
                started = time.perf_counter()
                make_map(ids, vnodes)
                best = min(best, time.perf_counter() - started)
            print(f"  N={size:<4} V={vnodes:<4} {best * 1e3:8.2f} ms")


def print_canonical_balance() -> None:
    print(f"\nbalance for ids node-1..node-N (P={PARTITIONS}, RF={REPLICATION_FACTOR}, V={DEFAULT_VNODES})")
    print(f"  {'N':>3} {'ideal':>6} {'min':>4} {'max':>4} {'max/min':>8}  leaders min..max")
    for size in SIZES:
        report = balance_report(make_map(canonical_ids(size)))
        leaders = report.leaders_per_node.values()
        ideal = PARTITIONS * REPLICATION_FACTOR / size
        print(
            f"  {size:>3} {ideal:6.1f} {report.min_replicas:>4} {report.max_replicas:>4}"
            f" {report.max_min_ratio:8.2f}  {min(leaders)}..{max(leaders)}"
        )


def print_random_balance(cluster_count: int) -> None:
    print(f"\nmax/min replicas per node over {cluster_count} random clusters per size: median / p99 / worst")
    print("  " + "V".rjust(4) + "".join(f"{'N=' + str(size):>17}" for size in SIZES))
    for vnodes in VNODE_CHOICES:
        rng = random.Random(vnodes)
        cells = []
        for size in SIZES:
            ratios = sorted(
                balance_report(
                    make_map([f"{rng.getrandbits(48):012x}" for _ in range(size)], vnodes)
                ).max_min_ratio
                for _ in range(cluster_count)
            )
            p99 = ratios[min(len(ratios) - 1, int(0.99 * len(ratios)))]
            cells.append(f"{statistics.median(ratios):.2f}/{p99:.2f}/{ratios[-1]:.2f}".rjust(17))
        marker = " (default)" if vnodes == DEFAULT_VNODES else ""
        print(f"  {vnodes:>4}" + "".join(cells) + marker)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=300_000, help="keys hashed per throughput measurement")
    parser.add_argument("--clusters", type=int, default=200, help="random clusters per size in the V sweep")
    arguments = parser.parse_args()
    print(machine_line())
    print_hashing(arguments.keys)
    print_placement_time()
    print_canonical_balance()
    print_random_balance(arguments.clusters)


if __name__ == "__main__":
    main()
