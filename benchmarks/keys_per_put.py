"""LevelDB keys written per put per replica, counted in the engine of three real nodes.

Starts a 3-node cluster in this process (real `Node`s, gRPC on loopback, LevelDB in a temp dir)
whose engines count every key each write batch puts or deletes, by the key's tag byte (see
`kvstore/storage/keys.py` and `kvstore/statemachine/layout.py`: L log entry, H hard state,
A apply state, D user data, C client dedup, S snapshot metadata, F fence). Then it writes
`--puts` puts of fresh 100-byte values through the real client, `--concurrency` at a time,
and divides what the three engines wrote (elections and warm-up excluded) by puts × 3.

Counts depend on batching, not on CPU speed, so they hold on a busy machine too: with one put
in flight every put is a Ready cycle of its own; with many in flight a cycle carries many puts
and the per-batch keys (hard state, apply state, a client's dedup record) are shared.

    .venv/bin/python benchmarks/keys_per_put.py [--puts 2000] [--concurrency 1,64] [--partitions 8]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from kvstore.bench.report import machine_line
from kvstore.client import Client
from kvstore.node import server
from kvstore.node.local import start_in_process, stop_in_process
from kvstore.storage.engine import LevelDBEngine, LevelDBWriteBatch

NODES = 3


class CountingBatch(LevelDBWriteBatch):
    def __init__(self, owner: CountingEngine, staged: Any) -> None:
        super().__init__(owner, staged)
        self.tags: collections.Counter[str] = collections.Counter()

    def put(self, key: bytes, value: bytes) -> None:
        super().put(key, value)
        self.tags[key[:1].decode()] += 1

    def delete(self, key: bytes) -> None:
        super().delete(key)
        self.tags[key[:1].decode()] += 1


class CountingEngine(LevelDBEngine):
    """A LevelDB engine that counts the keys of every batch it writes, by tag."""

    written: collections.Counter[str] = collections.Counter()  # shared by the nodes of this process
    batches = 0

    def new_batch(self) -> CountingBatch:
        return CountingBatch(self, self._db.write_batch())

    def write(self, batch: Any, *, sync: bool) -> None:
        super().write(batch, sync=sync)
        CountingEngine.written.update(batch.tags)
        CountingEngine.batches += 1


@contextmanager
def counting_engines() -> Iterator[None]:
    with mock.patch.object(server, "LevelDBEngine", CountingEngine):
        yield


async def measure(endpoints: list[str], puts: int, concurrency: int) -> tuple[collections.Counter[str], int]:
    value = os.urandom(100)
    async with Client(endpoints, timeout=30.0) as client:
        await asyncio.gather(*(client.put(f"warm/{n}", value) for n in range(64)))
        await asyncio.sleep(1.0)  # followers apply the warm-up's last commits
        CountingEngine.written.clear()
        CountingEngine.batches = 0
        keys = iter(range(puts))

        async def writer() -> None:
            for n in keys:
                await client.put(f"key/{n}", value)

        await asyncio.gather(*(writer() for _ in range(concurrency)))
        # Followers apply a commit after the leader answered: wait for their last apply batch.
        await asyncio.sleep(1.0)
    return collections.Counter(CountingEngine.written), CountingEngine.batches


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--puts", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,64", help="comma-separated puts in flight, one run each")
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # not the nodes' reports of peers going away at the end
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="keys-per-put-") as tmp, counting_engines():
        nodes = await start_in_process(Path(tmp), args.partitions)
        try:
            endpoints = [node.address for node in nodes]
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                written, batches = await measure(endpoints, args.puts, concurrency)
                per_put = {tag: count / args.puts / NODES for tag, count in sorted(written.items())}
                breakdown = ", ".join(f"{tag} {figure:.2f}" for tag, figure in per_put.items())
                print(f"{concurrency:>4} in flight: {sum(per_put.values()):.2f} keys per put per replica "
                      f"({breakdown}); {batches / NODES:.0f} batches per node")
        finally:
            await stop_in_process(nodes)


if __name__ == "__main__":
    asyncio.run(main())
