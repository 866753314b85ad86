"""CPU cost of the Raft core alone: 3-node groups in memory, no I/O, no serialisation.

Two regimes:

* throughput (default): one group, proposals batched (default 100 entries per propose call),
  messages delivered synchronously; reports committed entries per second and CPU per entry;
* node (`--groups G`): G groups on the same 3 nodes, as a kvstore node runs them: each cycle
  proposes 1 entry to `--touched` groups, ticks every group every `--tick-every` cycles
  (heartbeats), then collects every node's Readies and steps the resulting messages. Reports
  the CPU per stepped message and per Ready collection (`has_ready` + `ready` + `advance`),
  which dominate when messages carry ~1 entry.

    python benchmarks/raft_core.py [--entries N] [--batch B] [--size BYTES]
    python benchmarks/raft_core.py --groups 64 [--touched T] [--tick-every K] [--cycles C]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from kvstore.bench.report import machine_line
from kvstore.raft import Config, ConfState, MemoryLogStorage, Message, RawNode, Role, Snapshot, SnapshotMeta


class InMemoryGroup:
    """Nodes exchanging messages through in-process queues, each Ready handled in order."""

    def __init__(self, size: int, seed: int, skip_bcast_commit: bool = False) -> None:
        voters = frozenset(range(1, size + 1))
        self.storages: dict[int, MemoryLogStorage] = {}
        self.nodes: dict[int, RawNode] = {}
        for node_id in voters:
            storage = MemoryLogStorage()
            self.storages[node_id] = storage
            config = Config(node_id, max_inflight_msgs=4096, skip_bcast_commit=skip_bcast_commit)
            self.nodes[node_id] = RawNode(config, _bootstrapped(storage, voters), random.Random(seed + node_id))
        self.applied_entries = 0

    def collect_readies(self, pending: list[Message]) -> int:
        """Handle every node's Ready (if any), queueing its messages; returns how many."""
        handled = 0
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
                handled += 1
        return handled

    def deliver_all(self) -> None:
        pending: list[Message] = []
        while True:
            self.collect_readies(pending)
            if not pending:
                return
            for message in pending:
                self.nodes[message.to].step(message)
            pending = []


def _bootstrapped(storage: MemoryLogStorage, voters: frozenset[int]) -> MemoryLogStorage:
    storage.apply_snapshot(Snapshot(SnapshotMeta(1, 1, ConfState(voters))))
    return storage


def throughput(entries: int, batch: int, size: int) -> None:
    group = InMemoryGroup(3, seed=1)
    group.nodes[1].campaign()
    group.deliver_all()
    leader = group.nodes[1]
    assert leader.status().role is Role.LEADER, "node 1 did not win the election"
    group.applied_entries = 0

    payload = [os.urandom(size)] * batch
    rounds = entries // batch
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        leader.propose(payload)
        group.deliver_all()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    committed = group.applied_entries
    assert committed == rounds * batch, f"committed {committed}, expected {rounds * batch}"

    print(machine_line())
    print(f"raft core, 3 nodes in memory, batch={batch}, entry={size} B")
    print(f"committed entries: {committed}")
    print(f"throughput: {committed / wall:,.0f} committed entries/s")
    print(f"cpu per entry: {cpu / committed * 1e6:.2f} us (all three nodes)")


def node_regime(groups: int, touched: int, tick_every: int, cycles: int, size: int, repeats: int) -> None:
    """Many groups, ~1 entry per message: the per-message and per-Ready constant costs."""
    step_us: list[float] = []
    ready_us: list[float] = []
    for _ in range(repeats):
        step_cpu, ready_cpu, messages, readies = _run_node_regime(groups, touched, tick_every, cycles, size)
        step_us.append(step_cpu / messages * 1e6)
        ready_us.append(ready_cpu / readies * 1e6)
    print(machine_line())
    print(f"raft core, node regime: {groups} groups x 3 nodes, {touched} groups proposed to per cycle "
          f"(1 entry of {size} B), ticks every {tick_every} cycles, {cycles} cycles, best of {repeats}")
    print(f"messages stepped per run: {messages}, Readies handled per run: {readies}")
    print(f"cpu per stepped message: {min(step_us):.2f} us (median {statistics.median(step_us):.2f})")
    print(f"cpu per Ready (has_ready+ready+advance): {min(ready_us):.2f} us "
          f"(median {statistics.median(ready_us):.2f})")


def _run_node_regime(groups: int, touched_per_cycle: int, tick_every: int, cycles: int, size: int) -> tuple[float, float, int, int]:
    group_list = [InMemoryGroup(3, seed=g * 10, skip_bcast_commit=True) for g in range(groups)]
    for group in group_list:
        group.nodes[1].campaign()
        group.deliver_all()
        assert group.nodes[1].status().role is Role.LEADER, "node 1 did not win the election"
    payload = [os.urandom(size)]
    step_cpu = ready_cpu = 0.0
    messages = readies = 0
    clock = time.process_time
    next_group = 0
    for cycle in range(cycles):
        # As a node does: feed the cycle's inputs, then collect the Readies of the groups they
        # touched, step the messages those produced, and so on until no group has messages.
        touched: set[int] = set()
        for _ in range(touched_per_cycle):
            group_list[next_group].nodes[1].propose(payload)
            touched.add(next_group)
            next_group = (next_group + 1) % groups
        if cycle % tick_every == 0:
            for group in group_list:
                for node in group.nodes.values():
                    node.tick()
            touched = set(range(groups))
        while touched:
            outboxes: dict[int, list[Message]] = {g: [] for g in touched}
            t0 = clock()
            for g, outbox in outboxes.items():
                readies += group_list[g].collect_readies(outbox)
            ready_cpu += clock() - t0
            touched = {g for g, outbox in outboxes.items() if outbox}
            messages += sum(len(outbox) for outbox in outboxes.values())
            t0 = clock()
            for g in touched:
                nodes = group_list[g].nodes
                for message in outboxes[g]:
                    nodes[message.to].step(message)
            step_cpu += clock() - t0
    return step_cpu, ready_cpu, messages, readies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--size", type=int, default=100, help="payload bytes per entry")
    parser.add_argument("--groups", type=int, default=0, help="run the node regime with this many groups")
    parser.add_argument("--touched", type=int, default=16, help="node regime: groups proposed to per cycle")
    parser.add_argument("--tick-every", type=int, default=4, help="node regime: cycles between ticks")
    parser.add_argument("--cycles", type=int, default=4000, help="node regime: cycles per run")
    parser.add_argument("--repeats", type=int, default=5, help="node regime: runs (best and median shown)")
    args = parser.parse_args()
    if args.groups:
        node_regime(args.groups, args.touched, args.tick_every, args.cycles, args.size, args.repeats)
    else:
        throughput(args.entries, args.batch, args.size)


if __name__ == "__main__":
    main()
