"""Throughput of the partition applier, and the cost of parsing a command and serializing its
response (protobuf: the client's RequestOp bytes are the entry's data).

Applies Puts of `--value-size`-byte values (keys drawn round-robin from `--keys` distinct keys,
each command from one of `--clients` clients with dedup on, each client's seqs increasing) in
batches of `--batch` entries per `apply`, one write per batch: the in-memory engine, then
LevelDB with a synced write per batch, as the node does once per Ready cycle. Entries are
serialized beforehand (the client serializes them); parsing is measured separately.
Lower `--dedup-window` / `--max-dedup-results` to measure the steady state where every request
also evicts a remembered result. A node applies a few entries per partition per Ready cycle:
`--batch 4 --clients 3 --dedup-window 64` is close to that.

Times are CPU time of this process (other processes share the machine); each run is repeated
`--repeat` times over a fresh engine and the fastest is reported.

    .venv/bin/python benchmarks/applier.py [--commands 50000] [--batch 100] [--clients 64]
        [--value-size 100] [--dedup-window 1024] [--max-dedup-results 65536] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb.internal_pb2 import LogCommand, LogResponse
from kvstore.bench.report import machine_line
from kvstore.raft.types import Entry
from kvstore.statemachine import PartitionStateMachine
from kvstore.statemachine.applier import DEFAULT_DEDUP_WINDOW, DEFAULT_MAX_DEDUP_RESULTS
from kvstore.storage import Engine, LevelDBEngine, MemoryEngine


def make_commands(count: int, clients: int, keys: int, value_size: int) -> list[bytes]:
    """Serialized RequestOps of Puts, as a client sends them and the node proposes them."""
    value = bytes(range(256)) * (value_size // 256 + 1)
    return [
        pb.RequestOp(
            put=pb.PutRequest(
                header=pb.RequestHeader(client_id=f"client-{n % clients:04d}", request_seq=n // clients + 1),
                key=f"key{n % keys:08d}".encode(),
                value=value[:value_size],
            )
        ).SerializeToString()
        for n in range(count)
    ]


def codec_microseconds(commands: list[bytes]) -> tuple[float, float, float]:
    """µs per command: parse it, and for a Put's response: serialize it, parse it (dedup)."""
    started = time.process_time()
    for raw in commands:
        LogCommand.FromString(raw)
    parse_us = (time.process_time() - started) / len(commands) * 1e6
    response = LogResponse(put=pb.PutResponse(header=pb.ResponseHeader(revision=123456)))
    started = time.process_time()
    for _ in commands:
        raw_response = response.SerializeToString()
    response_serialize_us = (time.process_time() - started) / len(commands) * 1e6
    started = time.process_time()
    for _ in commands:
        LogResponse.FromString(raw_response)
    response_parse_us = (time.process_time() - started) / len(commands) * 1e6
    return parse_us, response_serialize_us, response_parse_us


def run_applier(
    engine: Engine,
    entries: list[Entry],
    batch_size: int,
    sync: bool,
    dedup_window: int,
    max_dedup_results: int,
) -> tuple[float, float]:
    """(seconds in apply, seconds in write) for all `entries`."""
    machine = PartitionStateMachine(
        engine, partition_id=1, dedup_window=dedup_window, max_dedup_results=max_dedup_results
    )
    apply_seconds = write_seconds = 0.0
    for start in range(0, len(entries), batch_size):
        started = time.process_time()
        batch = engine.new_batch()
        machine.apply(batch, entries[start : start + batch_size])
        applied = time.process_time()
        engine.write(batch, sync=sync)
        apply_seconds += applied - started
        write_seconds += time.process_time() - applied
    assert machine.applied_index == len(entries)
    return apply_seconds, write_seconds


def best_run(
    open_engine: Callable[[], AbstractContextManager[Engine]],
    entries: list[Entry],
    batch_size: int,
    sync: bool,
    bounds: tuple[int, int],
    repeat: int,
) -> tuple[float, float]:
    """`run_applier` `repeat` times, each over a fresh engine: the run with the least apply time."""
    runs = []
    for _ in range(repeat):
        with open_engine() as engine:
            runs.append(run_applier(engine, entries, batch_size, sync, *bounds))
    return min(runs)


@contextmanager
def leveldb_engine() -> Iterator[LevelDBEngine]:
    with (
        tempfile.TemporaryDirectory(prefix="kvstore-bench-") as directory,
        LevelDBEngine(directory) as engine,
    ):
        yield engine


def report(name: str, count: int, apply_seconds: float, write_seconds: float) -> None:
    total = apply_seconds + write_seconds
    print(
        f"{name:<28} {count / total:>10,.0f} commands/s   "
        f"apply {apply_seconds / count * 1e6:6.1f} µs/cmd   write {write_seconds / count * 1e6:6.1f} µs/cmd"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commands", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--dedup-window", type=int, default=DEFAULT_DEDUP_WINDOW)
    parser.add_argument("--max-dedup-results", type=int, default=DEFAULT_MAX_DEDUP_RESULTS)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    print(machine_line())
    print(
        f"{args.commands:,} Puts of {args.value_size}-byte values from {args.clients} clients, "
        f"{args.batch} entries per apply"
    )
    print(f"dedup window {args.dedup_window}, at most {args.max_dedup_results:,} results remembered\n")
    bounds = (args.dedup_window, args.max_dedup_results)

    commands = make_commands(args.commands, args.clients, args.keys, args.value_size)
    parse_us, response_serialize_us, response_parse_us = codec_microseconds(commands)
    print(
        f"protobuf: command parse {parse_us:.2f} µs; "
        f"response serialize {response_serialize_us:.2f} µs, parse {response_parse_us:.2f} µs"
    )

    entries = [Entry(index, 1, command) for index, command in enumerate(commands, start=1)]
    report(
        "MemoryEngine", len(entries), *best_run(MemoryEngine, entries, args.batch, False, bounds, args.repeat)
    )
    report(
        "LevelDB, synced per batch",
        len(entries),
        *best_run(leveldb_engine, entries, args.batch, True, bounds, args.repeat),
    )


if __name__ == "__main__":
    main()
