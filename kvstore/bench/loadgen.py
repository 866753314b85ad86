"""The load generator: K client processes, each with its share of the outstanding operations.

Several processes, because one Python client process saturates a core well before a cluster
does. They start together on one shared CLOCK_MONOTONIC instant, warm up, measure, and send
back an encoded HdrHistogram each, which the parent adds up. Used identically for every target.
"""

from __future__ import annotations

import asyncio
import ctypes
import math
import multiprocessing
import os
import queue
import random
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import uvloop
from hdrh.histogram import HdrHistogram

from kvstore.bench.clusters import BenchError, process_cpu_s
from kvstore.bench.drivers import Driver, TargetSpec, open_driver
from kvstore.bench.keys import Distribution, key_name, make_chooser
from kvstore.bench.workloads import Workload, WriteKind
from kvstore.client import ReadConsistency

MAX_LATENCY_US = 60_000_000
HISTOGRAM_DIGITS = 3
START_TIMEOUT_S = 120.0
# After a failed operation a client task pauses this long, so a target that refuses fast
# (a closed port) does not turn the client into a busy loop that starves the nodes' CPU.
ERROR_PAUSE_S = 0.01
LOAD_ATTEMPTS = 5
# Bulk calls in flight per client process while loading: each carries `chunk` keys, so a few
# already keep every node busy. More only queue up until calls time out and are retried.
LOAD_CALLS_PER_PROCESS = 8


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, MAX_LATENCY_US, HISTOGRAM_DIGITS)


@dataclass(frozen=True, slots=True)
class TimedPhase:
    """Run a workload: `warmup_s` unmeasured, then `duration_s` measured."""

    workload: Workload
    distribution: Distribution
    keys: int
    value_size: int
    consistency: ReadConsistency
    warmup_s: float
    duration_s: float
    op_timeout_s: float


@dataclass(frozen=True, slots=True)
class LoadPhase:
    """Write keys 0..keys-1 once, in bulk (`chunk` keys per call); not a measurement."""

    keys: int
    value_size: int
    chunk: int
    op_timeout_s: float


Phase = TimedPhase | LoadPhase


@dataclass(frozen=True, slots=True)
class WorkerResult:
    ops: int
    errors: int
    cas_failures: int
    histogram: bytes  # HdrHistogram.encode() of latencies in microseconds
    per_second: tuple[int, ...]
    first_error: str


@dataclass(frozen=True, slots=True)
class PhaseResult:
    ops: int
    errors: int
    cas_failures: int
    histogram: HdrHistogram
    per_second: tuple[int, ...]
    first_error: str
    # CPU seconds (user + system, all threads) during the measurement of a timed phase; NaN for
    # a load, and for servers when `run_phase` was given no `server_pids`.
    client_cpu_s: float
    server_cpu_s: float


ProgressCallback = Callable[[int], None]
# Completed operations per client process, in shared memory; each process writes only its own slot.
Counters = ctypes.Array[ctypes.c_longlong]


def split(total: int, parts: int) -> list[int]:
    """`total` outstanding operations over `parts` processes, as evenly as possible."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class _CpuWindow:
    """CPU seconds that groups of processes use between two CLOCK_MONOTONIC instants, sampled
    on a thread of its own so that the instants are kept whatever the caller is doing. NaN for
    a group that is empty, or whose process was gone (or unreadable) at either instant."""

    def __init__(self, groups: Sequence[Sequence[int]], start: float, end: float) -> None:
        self._groups = [tuple(pids) for pids in groups]
        self._start = start
        self._end = end
        self._stop = threading.Event()
        self._used = [math.nan] * len(self._groups)
        self._thread = threading.Thread(target=self._sample, name="bench-cpu-window", daemon=True)

    def _totals(self) -> list[float]:
        totals = []
        for pids in self._groups:
            try:
                totals.append(sum(process_cpu_s(pid) for pid in pids) if pids else math.nan)
            except (OSError, ValueError, IndexError):
                totals.append(math.nan)
        return totals

    def _sample(self) -> None:
        if self._stop.wait(max(0.0, self._start - time.monotonic())):
            return
        before = self._totals()
        if self._stop.wait(max(0.0, self._end - time.monotonic())):
            return
        self._used = [after - first for first, after in zip(before, self._totals(), strict=True)]

    def start(self) -> None:
        self._thread.start()

    def close(self) -> list[float]:
        """The CPU seconds each group used in the window (waits for its end), or NaN."""
        if time.monotonic() < self._end:
            self._stop.set()
        self._thread.join()
        return self._used


def run_phase(target: TargetSpec, phase: Phase, processes: int, concurrency: int, seed: int,
              on_progress: ProgressCallback, server_pids: Sequence[int] = ()) -> PhaseResult:
    """Run `phase` in `processes` client processes; `on_progress(ops so far)` while it runs.
    For a timed phase, the CPU that the client processes and `server_pids` use during its
    measurement is measured too."""
    shares = [share for share in split(concurrency, processes) if share > 0]
    context = multiprocessing.get_context("spawn")  # grpc's threads do not survive fork()
    progress = context.Array("q", len(shares), lock=False)
    start_at = context.RawValue("d", 0.0)
    messages = context.Queue()
    workers = [
        context.Process(
            target=_worker_main, name=f"bench-client-{i}", daemon=True,
            args=(target, phase, i, len(shares), share, seed * 1000 + i, os.getpid(), progress, start_at, messages),
        )
        for i, share in enumerate(shares)
    ]
    cpu_window: _CpuWindow | None = None
    client_cpu_s = server_cpu_s = math.nan
    try:
        for worker in workers:
            worker.start()
        _collect(messages, workers, "ready", START_TIMEOUT_S, lambda: None)
        start_at.value = time.monotonic()
        if isinstance(phase, TimedPhase):
            measure_from = start_at.value + phase.warmup_s
            client_pids = [worker.pid for worker in workers if worker.pid is not None]
            cpu_window = _CpuWindow([client_pids, server_pids], measure_from, measure_from + phase.duration_s)
            cpu_window.start()
        budget = START_TIMEOUT_S + (phase.warmup_s + phase.duration_s if isinstance(phase, TimedPhase) else 86400)
        results = _collect(messages, workers, "result", budget, lambda: on_progress(sum(progress)))
        on_progress(sum(progress))
        for worker in workers:
            worker.join(10)
    finally:
        if cpu_window is not None:
            client_cpu_s, server_cpu_s = cpu_window.close()
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join()
        messages.close()
    return _merge([results[i] for i in range(len(workers))], client_cpu_s, server_cpu_s)


def _collect(messages: Any, workers: list[Any], kind: str, timeout: float, tick: Callable[[], None]) -> dict[int, Any]:
    """Wait for one `kind` message from every worker; a worker's error or death aborts."""
    got: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    while len(got) < len(workers):
        if time.monotonic() > deadline:
            raise BenchError(f"client processes sent {len(got)}/{len(workers)} '{kind}' messages in {timeout:.0f}s")
        try:
            message_kind, index, payload = messages.get(timeout=0.25)
        except queue.Empty:
            tick()
            dead = [w.name for i, w in enumerate(workers) if i not in got and w.exitcode is not None]
            if dead:
                raise BenchError(f"client process(es) {', '.join(dead)} exited without a result") from None
            continue
        if message_kind == "error":
            raise BenchError(f"client process {index} failed:\n{payload}")
        got[index] = payload
    return got


def _merge(results: list[WorkerResult], client_cpu_s: float, server_cpu_s: float) -> PhaseResult:
    histogram = new_histogram()
    for result in results:
        histogram.decode_and_add(result.histogram)
    width = max((len(r.per_second) for r in results), default=0)
    per_second = tuple(sum(r.per_second[i] for r in results if i < len(r.per_second)) for i in range(width))
    return PhaseResult(
        ops=sum(r.ops for r in results),
        errors=sum(r.errors for r in results),
        cas_failures=sum(r.cas_failures for r in results),
        histogram=histogram,
        per_second=per_second,
        first_error=next((r.first_error for r in results if r.first_error), ""),
        client_cpu_s=client_cpu_s,
        server_cpu_s=server_cpu_s,
    )


# ---- inside a client process ----------------------------------------------------------------


def _worker_main(target: TargetSpec, phase: Phase, index: int, processes: int, concurrency: int, seed: int,
                 parent_pid: int, progress: Counters, start_at: ctypes.c_double,
                 messages: Any) -> None:
    try:
        result = uvloop.run(_worker(target, phase, index, processes, concurrency, seed, parent_pid, progress,
                                    start_at, messages))
        messages.put(("result", index, result))
    except BaseException:
        messages.put(("error", index, traceback.format_exc()))


async def _worker(target: TargetSpec, phase: Phase, index: int, processes: int, concurrency: int, seed: int,
                  parent_pid: int, progress: Counters, start_at: ctypes.c_double,
                  messages: Any) -> WorkerResult:
    consistency = phase.consistency if isinstance(phase, TimedPhase) else ReadConsistency.LINEARIZABLE
    driver = await open_driver(target, consistency, phase.op_timeout_s)
    try:
        messages.put(("ready", index, None))
        while start_at.value == 0.0:
            if os.getppid() != parent_pid:
                raise BenchError("the benchmark process exited")
            await asyncio.sleep(0.005)
        if isinstance(phase, LoadPhase):
            return await _load(driver, phase, index, processes, concurrency, seed, progress)
        return await _timed(driver, phase, index, concurrency, seed, start_at.value, progress)
    finally:
        await driver.close()


class _Tally:
    """Counters of one client process (one asyncio thread: no locking needed)."""

    def __init__(self, duration_s: float) -> None:
        self.ops = 0
        self.errors = 0
        self.cas_failures = 0
        self.first_error = ""
        self.histogram = new_histogram()
        self.per_second = [0] * max(1, math.ceil(duration_s))


async def _timed(driver: Driver, phase: TimedPhase, index: int, concurrency: int, seed: int, start: float,
                 progress: Counters) -> WorkerResult:
    measure_from = start + phase.warmup_s
    end = measure_from + phase.duration_s
    chooser = make_chooser(phase.distribution, phase.keys, seed)
    rng = random.Random(seed + 1)
    value = rng.randbytes(phase.value_size)
    workload = phase.workload
    tally = _Tally(phase.duration_s)

    async def operation() -> bool:
        """One operation of the mix; False when a read-modify-write lost its compare."""
        key = key_name(chooser.next_index())
        if rng.random() < workload.read_fraction:
            await driver.get(key)
            return True
        if workload.write_kind is WriteKind.PUT:
            await driver.put(key, value)
            return True
        current = await driver.get(key)
        return await driver.compare_and_put(key, current, rng.randbytes(phase.value_size))

    async def client_task() -> None:
        while (started := time.monotonic()) < end:
            try:
                applied = await operation()
            except Exception as error:  # every failure counts as an error; the run goes on
                if time.monotonic() >= measure_from:
                    tally.errors += 1
                    tally.first_error = tally.first_error or f"{type(error).__name__}: {error}"[:300]
                await asyncio.sleep(ERROR_PAUSE_S)
                continue
            finished = time.monotonic()
            progress[index] += 1
            if measure_from <= finished < end:
                tally.ops += 1
                tally.cas_failures += not applied
                tally.histogram.record_value(max(1, int((finished - started) * 1e6)))
                tally.per_second[min(len(tally.per_second) - 1, int(finished - measure_from))] += 1

    await asyncio.gather(*(client_task() for _ in range(concurrency)))
    return WorkerResult(tally.ops, tally.errors, tally.cas_failures, tally.histogram.encode(),
                        tuple(tally.per_second), tally.first_error)


async def _load(driver: Driver, phase: LoadPhase, index: int, processes: int, concurrency: int, seed: int,
                progress: Counters) -> WorkerResult:
    value = random.Random(seed).randbytes(phase.value_size)
    mine = range(index, phase.keys, processes)
    chunks: Iterator[range] = (mine[i:i + phase.chunk] for i in range(0, len(mine), phase.chunk))

    async def loader() -> None:
        # The tasks share one iterator; asyncio switches only at awaits, so each chunk goes to one task.
        for chunk in chunks:
            items = [(key_name(i), value) for i in chunk]
            for attempt in range(LOAD_ATTEMPTS):
                try:
                    await driver.put_many(items)
                    break
                except Exception:
                    if attempt == LOAD_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(0.5)
            progress[index] += len(items)

    await asyncio.gather(*(loader() for _ in range(min(concurrency, LOAD_CALLS_PER_PROCESS))))
    return WorkerResult(len(mine), 0, 0, new_histogram().encode(), (), "")
