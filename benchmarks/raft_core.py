"""Throughput of the Raft core alone: a 3-node group in memory, no I/O, no serialisation.

Proposals are batched (default 100 entries per propose call); messages are delivered
synchronously. Reports committed entries per second and CPU time per entry.

    python benchmarks/raft_core.py [--entries N] [--batch B] [--size BYTES]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time

from kvstore.raft import Config, ConfState, MemoryLogStorage, Message, RawNode, Role


class InMemoryGroup:
    """Nodes exchanging messages through in-process queues, each Ready handled in order."""

    def __init__(self, size: int, seed: int) -> None:
        voters = frozenset(range(1, size + 1))
        self.storages: dict[int, MemoryLogStorage] = {}
        self.nodes: dict[int, RawNode] = {}
        for node_id in voters:
            storage = MemoryLogStorage()
            self.storages[node_id] = storage
            self.nodes[node_id] = RawNode(
                Config(node_id, max_inflight_msgs=4096), _bootstrapped(storage, voters), random.Random(seed + node_id)
            )
        self.applied_entries = 0

    def deliver_all(self) -> None:
        pending: list[Message] = []
        while True:
            for node_id, node in self.nodes.items():
                if node.has_ready():
                    rd = node.ready()
                    storage = self.storages[node_id]
                    if rd.hard_state is not None:
                        storage.set_hard_state(rd.hard_state)
                    storage.append(rd.entries)
                    pending.extend(rd.messages)
                    if node_id == 1:
                        self.applied_entries += len(rd.committed_entries)
                    node.advance(rd)
            if not pending:
                return
            for message in pending:
                self.nodes[message.to].step(message)
            pending = []


def _bootstrapped(storage: MemoryLogStorage, voters: frozenset[int]) -> MemoryLogStorage:
    from kvstore.raft import Snapshot, SnapshotMeta

    storage.apply_snapshot(Snapshot(SnapshotMeta(1, 1, ConfState(voters))))
    return storage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--size", type=int, default=100, help="payload bytes per entry")
    args = parser.parse_args()

    group = InMemoryGroup(3, seed=1)
    group.nodes[1].campaign()
    group.deliver_all()
    leader = group.nodes[1]
    assert leader.status().role is Role.LEADER, "node 1 did not win the election"
    group.applied_entries = 0

    payload = [os.urandom(args.size)] * args.batch
    rounds = args.entries // args.batch
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        leader.propose(payload)
        group.deliver_all()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    committed = group.applied_entries
    assert committed == rounds * args.batch, f"committed {committed}, expected {rounds * args.batch}"

    print(f"machine: {platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()} "
          f"python={sys.version.split()[0]} {platform.system()}")
    print(f"raft core, 3 nodes in memory, batch={args.batch}, entry={args.size} B")
    print(f"committed entries: {committed}")
    print(f"throughput: {committed / wall:,.0f} committed entries/s")
    print(f"cpu per entry: {cpu / committed * 1e6:.2f} us (all three nodes)")


if __name__ == "__main__":
    main()
