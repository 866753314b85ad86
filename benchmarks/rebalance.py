"""Data moved when a node joins or leaves: kvstore's ring against the ideal and naive modulo hashing.

    .venv/bin/python benchmarks/rebalance.py [--keys 100000] [--max-nodes 10]

Pure computation (no cluster): for each cluster size N it adds node N+1 to N nodes, and removes
node N from N nodes, and counts the data each placement has to copy, in units of the whole data
set (1.0 = one full copy of every key):

* ring: kvstore's placement (64 partitions, RF 3, 64 virtual nodes per node): the replicas the
  move plan adds (`kvstore.ring.plan_moves`, one ADD_LEARNER step per partition replica);
* ideal: what no placement can avoid: the newcomer's even share, min(RF, N+1) / (N+1); or the
  leaver's share, min(RF, N) / N, re-created on the others (nothing when N-1 < RF: then every
  node already holds every partition);
* modulo partitions: the same partitions, replica i of partition p on node (p + i) mod N;
* modulo keys: no partitions, replica i of a key on node (hash(key) + i) mod N, measured on
  `--keys` random keys.
"""

from __future__ import annotations

import argparse
import random

from kvstore.bench.report import machine_line
from kvstore.ring import ClusterMap, StepKind, hash64, plan_moves

PARTITIONS = 64
REPLICATION_FACTOR = 3


def node_ids(count: int) -> list[str]:
    return [f"node-{index}" for index in range(1, count + 1)]


def ideal_copies(old_size: int, new_size: int) -> float:
    if new_size > old_size:
        return min(REPLICATION_FACTOR, new_size) / new_size
    return min(REPLICATION_FACTOR, old_size) / old_size if new_size >= REPLICATION_FACTOR else 0.0


def ring_copies(old_ids: list[str], new_ids: list[str]) -> float:
    def cluster(ids: list[str]) -> ClusterMap:
        return ClusterMap(epoch=1, members={node_id: f"{node_id}:7000" for node_id in ids},
                          partitions=PARTITIONS, replication_factor=REPLICATION_FACTOR)

    added = sum(1 for move in plan_moves(cluster(old_ids), cluster(new_ids))
                for step in move.steps if step.kind is StepKind.ADD_LEARNER)
    return added / PARTITIONS


def modulo_replicas(slot: int, ids: list[str]) -> set[str]:
    return {ids[(slot + offset) % len(ids)] for offset in range(min(REPLICATION_FACTOR, len(ids)))}


def modulo_partition_copies(old_ids: list[str], new_ids: list[str]) -> float:
    added = sum(len(modulo_replicas(p, new_ids) - modulo_replicas(p, old_ids)) for p in range(PARTITIONS))
    return added / PARTITIONS


def modulo_key_copies(old_ids: list[str], new_ids: list[str], hashes: list[int]) -> float:
    added = sum(len(modulo_replicas(h, new_ids) - modulo_replicas(h, old_ids)) for h in hashes)
    return added / len(hashes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=100_000, help="random keys for the modulo-of-keys column")
    parser.add_argument("--max-nodes", type=int, default=10, help="largest cluster size N measured")
    arguments = parser.parse_args()
    rng = random.Random(1)
    hashes = [hash64(f"user{rng.getrandbits(48)}".encode()) for _ in range(arguments.keys)]
    print(machine_line())
    print(f"data copied on one membership change, in full copies of the data set "
          f"(P={PARTITIONS}, RF={REPLICATION_FACTOR})")
    print(f"  {'change':>8} {'ideal':>7} {'ring':>7} {'ring/ideal':>11} {'modulo partitions':>18} {'modulo keys':>12}")
    for size in range(3, arguments.max_nodes + 1):
        for label, old_ids, new_ids in (
            (f"{size}->{size + 1}", node_ids(size), node_ids(size + 1)),
            (f"{size}->{size - 1}", node_ids(size), node_ids(size - 1)),
        ):
            ideal = ideal_copies(len(old_ids), len(new_ids))
            ring = ring_copies(old_ids, new_ids)
            ratio = f"{ring / ideal:11.2f}" if ideal else f"{'-':>11}"
            print(f"  {label:>8} {ideal:7.2f} {ring:7.2f} {ratio} "
                  f"{modulo_partition_copies(old_ids, new_ids):18.2f} {modulo_key_copies(old_ids, new_ids, hashes):12.2f}")


if __name__ == "__main__":
    main()
