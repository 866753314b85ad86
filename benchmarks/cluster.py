"""Put and linearizable Get against a local 3-node cluster, through the async client.

Starts its own cluster (in a temporary data dir, on free loopback ports) unless --endpoints is
given; runs each workload for --duration seconds with --concurrency outstanding operations
from one client process; prints ops/s and p50/p99/p99.9 latency (HdrHistogram).

    python benchmarks/cluster.py [--duration 10] [--concurrency 64] [--keys 1000] [--value-size 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

from hdrh.histogram import HdrHistogram

from kvstore.client import Client

MAX_LATENCY_US = 60_000_000


async def run_workload(client: Client, workload: str, duration: float, concurrency: int, keys: int,
                       value: bytes) -> tuple[int, HdrHistogram, int]:
    histogram = HdrHistogram(1, MAX_LATENCY_US, 3)
    deadline = time.monotonic() + duration
    done = 0
    errors = 0

    async def worker(seed: int) -> None:
        nonlocal done, errors
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            key = f"bench/{rng.randrange(keys):08d}"
            started = time.perf_counter()
            try:
                if workload == "put":
                    await client.put(key, value)
                else:
                    await client.get(key)
            except Exception:
                errors += 1
                continue
            histogram.record_value(max(1, int((time.perf_counter() - started) * 1e6)))
            done += 1

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done, histogram, errors


async def main_async(args: argparse.Namespace, endpoints: list[str]) -> None:
    value = os.urandom(args.value_size)
    async with Client(endpoints, timeout=30.0) as client:
        # Pre-load every key so Gets find data.
        await asyncio.gather(*(client.put(f"bench/{i:08d}", value) for i in range(args.keys)))
        for workload in args.workloads.split(","):
            done, histogram, errors = await run_workload(
                client, workload, args.duration, args.concurrency, args.keys, value
            )
            print(
                f"{workload:>4}: {done / args.duration:10,.0f} ops/s   "
                f"p50 {histogram.get_value_at_percentile(50) / 1000:7.2f} ms   "
                f"p99 {histogram.get_value_at_percentile(99) / 1000:7.2f} ms   "
                f"p99.9 {histogram.get_value_at_percentile(99.9) / 1000:7.2f} ms   errors {errors}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", help="use a running cluster instead of starting one")
    parser.add_argument("--workloads", default="put,get")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=64)
    args = parser.parse_args()

    print(f"machine: {platform.machine()} cpus={os.cpu_count()} python={sys.version.split()[0]} "
          f"{platform.system()} {platform.release()}")
    print(f"3 nodes, {args.partitions} partitions, RF 3, {args.concurrency} concurrent ops, "
          f"{args.value_size} B values, {args.keys} keys, {args.duration:g}s per workload, 1 client process")
    if args.endpoints:
        asyncio.run(main_async(args, args.endpoints.split(",")))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.integration.harness import LocalCluster

    with tempfile.TemporaryDirectory(prefix="kvstore-bench-") as root:
        cluster = LocalCluster(Path(root), size=3, partitions=args.partitions)
        cluster.start_all()
        try:
            asyncio.run(main_async(args, cluster.endpoints))
        finally:
            cluster.stop_all()


if __name__ == "__main__":
    main()
