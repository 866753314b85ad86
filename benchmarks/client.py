"""Benchmark of kvstore.client: the client's own CPU per put and per get.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/client.py [--concurrency 43] [--seconds 5] [--runs 3]
    PYTHONPATH=$PWD .venv/bin/python benchmarks/client.py --endpoints 127.0.0.1:2379,...  # a real cluster

Without `--endpoints`, a fake cluster (tests/fakes/fake_cluster.py, 3 nodes, 64 partitions) is
served from a child process, so its CPU is not counted. `--concurrency` loops each await one
operation after another through one `Client`; the figure is `time.process_time()` of this process
(the client's Python code plus gRPC's threads) divided by the operations completed. The event
loop is uvloop's, as in `kvctl bench`.
"""

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import time

import uvloop

from kvstore.bench.report import machine_line
from kvstore.client import Client

VALUE = b"x" * 100
KEY_SPACE = 10_000


async def serve_fake_cluster() -> None:
    """Serve a fake cluster, print its endpoints on one line, and run until stdin closes."""
    from tests.fakes.fake_cluster import FakeCluster

    async with FakeCluster(nodes=3, partitions=64) as cluster:
        print(",".join(cluster.endpoints), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def measure(endpoints: list[str], kind: str, concurrency: int, seconds: float) -> tuple[float, float]:
    """(client CPU µs per operation, operations per second) of `concurrency` loops of `kind`."""
    async with Client(endpoints, timeout=10) as client:
        loop = asyncio.get_running_loop()
        completed = 0
        stop_at = loop.time() + seconds

        async def one_loop(rng: random.Random) -> None:
            nonlocal completed
            while loop.time() < stop_at:
                key = b"key%08d" % rng.randrange(KEY_SPACE)
                if kind == "put":
                    await client.put(key, VALUE)
                else:
                    await client.get(key)
                completed += 1

        await client.put(b"key%08d" % 0, VALUE)  # connections up before the clock starts
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one_loop(random.Random(seed)) for seed in range(concurrency)))
        cpu, wall = time.process_time() - cpu_started, time.perf_counter() - wall_started
    return cpu / completed * 1e6, completed / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", help="a real cluster's endpoints, comma-separated (default: a fake one)")
    parser.add_argument("--concurrency", type=int, default=43)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kinds", default="put,get")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_fake_cluster())
        return

    print(machine_line())
    server = None
    if args.endpoints:
        endpoints = args.endpoints.split(",")
    else:
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None
        endpoints = server.stdout.readline().strip().split(",")
    try:
        for kind in args.kinds.split(","):
            runs = [uvloop.run(measure(endpoints, kind, args.concurrency, args.seconds)) for _ in range(args.runs)]
            cpu = [cpu_per_op for cpu_per_op, _ in runs]
            rates = ", ".join(f"{rate:.0f}" for _, rate in runs)
            print(
                f"{kind}: client CPU per op median {statistics.median(cpu):.0f} µs, best {min(cpu):.0f} µs"
                f" (runs: {', '.join(f'{value:.0f}' for value in cpu)}; ops/s: {rates})"
            )
    finally:
        if server is not None:
            assert server.stdin is not None
            server.stdin.close()
            server.wait()


if __name__ == "__main__":
    main()
