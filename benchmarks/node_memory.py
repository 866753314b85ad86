"""Where a node's memory goes under sustained writes: tracemalloc growth by line, against RSS.

Runs a 3-node cluster in this process (real `Node`s, gRPC on loopback, LevelDB in a temp dir)
under the put workload of `kvctl bench` (client processes of its load generator), with
tracemalloc on. Every `--interval` seconds it prints this process's RSS (the three nodes
together), what tracemalloc traces (Python objects), LevelDB's own estimate of its memory
(memtables and block cache), and the source lines whose live allocations grew most since the
first report. What RSS holds beyond the traced and LevelDB figures is native: gRPC, the
allocator's free lists and fragmentation.

tracemalloc slows the nodes down (fewer writes per second than a real run), so compare where
memory goes, not how fast; `kvctl bench -w soak` measures the nodes as they run.

    .venv/bin/python benchmarks/node_memory.py [--duration 300] [--interval 60] [--partitions 64]
        [--concurrency 128] [--processes 3] [--top 20]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

from kvstore.bench.clusters import rss_bytes
from kvstore.bench.drivers import TargetKind, TargetSpec
from kvstore.bench.keys import Distribution
from kvstore.bench.loadgen import TimedPhase, run_phase
from kvstore.bench.report import machine_line
from kvstore.bench.workloads import WORKLOADS
from kvstore.client import ReadConsistency
from kvstore.node.local import start_in_process, stop_in_process
from kvstore.node.server import Node
from kvstore.storage import LevelDBEngine

MB = 1 << 20
NODES = 3


def leveldb_bytes(nodes: list[Node]) -> int:
    total = 0
    for node in nodes:
        assert isinstance(node.engine, LevelDBEngine)
        total += int(node.engine._db.get_property(b"leveldb.approximate-memory-usage"))
    return total


def report(nodes: list[Node], first: tracemalloc.Snapshot, elapsed: float, top: int) -> None:
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    traced, _ = tracemalloc.get_traced_memory()
    print(f"\n-- {elapsed:.0f} s: RSS {rss_bytes(os.getpid()) / MB:.0f} MB for {NODES} nodes; traced (Python) "
          f"{traced / MB:.0f} MB; LevelDB (memtables, block cache) {leveldb_bytes(nodes) / MB:.0f} MB")
    for stat in snapshot.compare_to(first, "lineno")[:top]:
        frame = stat.traceback[0]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        print(f"  {stat.size / MB:8.1f} MB ({stat.size_diff / MB:+7.1f}) {stat.count:>9,} blocks  {where}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--partitions", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(machine_line())
    tracemalloc.start()
    with tempfile.TemporaryDirectory(prefix="node-memory-") as tmp:
        nodes = await start_in_process(Path(tmp), args.partitions)
        try:
            target = TargetSpec(TargetKind.KVSTORE, tuple(node.address for node in nodes))
            phase = TimedPhase(WORKLOADS["put"], Distribution.UNIFORM, args.keys, 100, ReadConsistency.LINEARIZABLE,
                               0.0, args.duration, 10.0)
            load = asyncio.create_task(asyncio.to_thread(
                run_phase, target, phase, args.processes, args.concurrency, 1, lambda ops: None))
            started = time.monotonic()
            first = tracemalloc.take_snapshot()
            while not load.done():
                await asyncio.wait([load], timeout=args.interval)
                report(nodes, first, time.monotonic() - started, args.top)
            result = load.result()
            print(f"\n{result.ops:,} puts in {args.duration:.0f} s ({result.errors} errors)")
        finally:
            await stop_in_process(nodes)


if __name__ == "__main__":
    asyncio.run(main())
