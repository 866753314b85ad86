"""Benchmark of kvstore.storage: write batches (synced and not) and Raft log reads on LevelDB.

    .venv/bin/python benchmarks/storage.py [--seconds 2] [--dir PATH]

Writes go through `DurableLogStorage.append` and `LevelDBEngine.write`, as a node's Ready loop
does: "1 entry" is a lone proposal, "100 entries" a busy group's Ready, "64 groups x 1" one
group-commit batch for 64 groups. Reads use `entries()` in chunks of 100, once from the engine
(tail cache off) and once from the tail cache. Synced figures depend on the disk's flush
latency, so run with --dir on the disk the data directory will use.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import plyvel

from kvstore.bench.report import machine_line
from kvstore.raft.types import EMPTY_SNAPSHOT, Entry, Snapshot
from kvstore.storage import DurableLogStorage, LevelDBEngine

ENTRY_BYTES = 100
READ_CHUNK = 100
READ_LOG_ENTRIES = 20_000


def no_snapshot() -> Snapshot:
    return EMPTY_SNAPSHOT


def filesystem_of(path: Path) -> str:
    """The mount point and type holding `path` (Linux), to tell a real disk from tmpfs."""
    best = ("?", "?")
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                _, mount_point, kind, *_ = line.split()
                if str(path.resolve()).startswith(mount_point) and len(mount_point) >= len(best[0]):
                    best = (mount_point, kind)
    except OSError:
        return "unknown"
    return f"{best[1]} at {best[0]}"


def timed(seconds: float, step: Callable[[], int]) -> tuple[float, float]:
    """Run `step` (which returns how many items it did) for about `seconds`:
    (steps per second, items per second)."""
    steps = items = 0
    started = time.perf_counter()
    elapsed = 0.0
    while elapsed < seconds:
        items += step()
        steps += 1
        elapsed = time.perf_counter() - started
    return steps / elapsed, items / elapsed


def bench_writes(directory: Path, seconds: float, *, groups: int, entries_per_group: int, sync: bool) -> str:
    with LevelDBEngine(directory / f"w-{groups}-{entries_per_group}-{sync}") as engine:
        logs = [DurableLogStorage.open(engine, group, no_snapshot) for group in range(groups)]
        payload = os.urandom(ENTRY_BYTES)

        def one_batch() -> int:
            batch = engine.new_batch()
            for log in logs:
                first = log.last_index() + 1
                log.append(
                    batch, [Entry(index, 1, payload) for index in range(first, first + entries_per_group)]
                )
            engine.write(batch, sync=sync)
            return groups * entries_per_group

        batches, entries = timed(seconds, one_batch)
    return f"{batches:10,.0f} batches/s {entries:12,.0f} entries/s {entries * ENTRY_BYTES / 1e6:8.1f} MB/s"


def bench_reads(directory: Path, seconds: float, *, cached: bool) -> str:
    with LevelDBEngine(directory / f"r-{cached}") as engine:
        writer = DurableLogStorage.open(engine, 1, no_snapshot)
        payload = os.urandom(ENTRY_BYTES)
        for first in range(1, READ_LOG_ENTRIES + 1, 1000):
            batch = engine.new_batch()
            writer.append(batch, [Entry(index, 1, payload) for index in range(first, first + 1000)])
            engine.write(batch, sync=False)
        log = DurableLogStorage.open(
            engine,
            1,
            no_snapshot,
            max_cached_entries=READ_LOG_ENTRIES if cached else 0,
            max_cached_bytes=1 << 30,
        )
        position = [1]

        def one_read() -> int:
            lo = position[0]
            found = log.entries(lo, lo + READ_CHUNK, 1 << 30)
            position[0] = 1 if lo + 2 * READ_CHUNK > READ_LOG_ENTRIES else lo + READ_CHUNK
            return len(found)

        reads, entries = timed(seconds, one_read)
    return f"{reads:10,.0f} reads/s   {entries:12,.0f} entries/s {entries * ENTRY_BYTES / 1e6:8.1f} MB/s"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--dir", type=Path, default=None, help="where to create the LevelDB directories")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="kvstore-bench-") as name:
        directory = Path(name)
        print(machine_line())
        print(f"plyvel:  {plyvel.__version__}")
        print(f"disk:    {directory} ({filesystem_of(directory)})")
        print(f"entries: {ENTRY_BYTES} bytes of data each; {args.seconds:g} s per line\n")
        for sync in (True, False):
            label = "synced  " if sync else "unsynced"
            for groups, per_group, shape in (
                (1, 1, "1 entry       "),
                (1, 100, "100 entries   "),
                (64, 1, "64 groups x 1 "),
            ):
                result = bench_writes(
                    directory, args.seconds, groups=groups, entries_per_group=per_group, sync=sync
                )
                print(f"write {label} {shape} {result}")
        for cached, label in ((False, "from LevelDB "), (True, "from the cache")):
            print(f"read {READ_CHUNK} entries {label}  {bench_reads(directory, args.seconds, cached=cached)}")


if __name__ == "__main__":
    main()
