"""The measurements that are not a throughput run: failover, memory and soak."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kvstore.bench.clusters import LocalCluster, dir_bytes, open_files, rss_bytes
from kvstore.bench.drivers import Driver, open_driver
from kvstore.bench.loadgen import LoadPhase, ProgressCallback, TimedPhase, run_phase
from kvstore.client import ReadConsistency

# Each written key gets a new write this often, whether or not earlier ones have returned
# (open loop): a closed-loop writer stuck in a write that hangs until its timeout (etcd holds a
# proposal up to 7 s when its leader dies) would measure that timeout, not the outage.
PROBE_INTERVAL_S = 0.05
# Steady writes before the kill, so the clients have routed to the leader that is killed.
PRE_KILL_S = 1.5
# A kill after which writes have not resumed in this long counts as a failed recovery.
RECOVERY_LIMIT_S = 30.0
# After a load, nodes may still be applying and flushing; RSS is read once they are quiet.
MEMORY_SETTLE_S = 3.0


@dataclass(frozen=True, slots=True)
class FailoverRound:
    victim: int
    partitions: int  # partitions the victim led, each written to (etcd: 1, its only group)
    recovery_ms: float | None  # None: writes did not resume within RECOVERY_LIMIT_S


@dataclass(frozen=True, slots=True)
class FailoverOutcome:
    rounds: tuple[FailoverRound, ...]

    @property
    def recoveries_ms(self) -> list[float]:
        return [r.recovery_ms for r in self.rounds if r.recovery_ms is not None]

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.recoveries_ms) if self.recoveries_ms else float("nan")

    @property
    def max_ms(self) -> float:
        return max(self.recoveries_ms, default=float("nan"))

    @property
    def failed(self) -> int:
        return sum(r.recovery_ms is None for r in self.rounds)


class _RoundState:
    """Shared by the probe tasks of one kill (one event loop: no locking)."""

    def __init__(self, keys: list[bytes]) -> None:
        self.keys = keys
        self.kill_at: float | None = None
        self.recovered: dict[bytes, float] = {}
        self.successes_before_kill = 0
        self.all_recovered = asyncio.Event()
        self.probes: set[asyncio.Task[None]] = set()


async def _probe(driver: Driver, key: bytes, state: _RoundState) -> None:
    """One write. The first that *started* after the kill and succeeded marks when its
    partition took writes again (writes in flight at the kill do not count)."""
    started = time.monotonic()
    try:
        await driver.put(key, b"x" * 100)
    except Exception:  # refused, timed out, not leader: the outage being measured
        return
    kill_at = state.kill_at
    if kill_at is None:
        state.successes_before_kill += 1
    elif started >= kill_at and key not in state.recovered:
        state.recovered[key] = time.monotonic() - kill_at
        if len(state.recovered) == len(state.keys):
            state.all_recovered.set()


async def _prober(driver: Driver, key: bytes, state: _RoundState) -> None:
    while True:
        task = asyncio.create_task(_probe(driver, key, state))
        state.probes.add(task)
        task.add_done_callback(state.probes.discard)
        await asyncio.sleep(PROBE_INTERVAL_S)


async def _failover_round(cluster: LocalCluster, round_number: int, op_timeout_s: float) -> FailoverRound:
    victim, keys = cluster.failover_victim(round_number)
    state = _RoundState(keys)
    driver = await open_driver(cluster.target, ReadConsistency.LINEARIZABLE, op_timeout_s)
    probers = [asyncio.create_task(_prober(driver, key, state)) for key in keys]
    try:
        await asyncio.sleep(PRE_KILL_S)
        state.kill_at = time.monotonic()
        cluster.kill(victim)
        try:
            await asyncio.wait_for(state.all_recovered.wait(), RECOVERY_LIMIT_S)
        except TimeoutError:
            pass
    finally:
        owned = [*probers, *state.probes]
        for task in owned:
            task.cancel()
        await asyncio.gather(*owned, return_exceptions=True)
        await driver.close()
    # Synchronously, on the main thread: the restarted member's death signal follows the
    # thread that started it. Nothing else runs on this loop now.
    cluster.restart(victim)
    complete = len(state.recovered) == len(keys) and state.successes_before_kill > 0
    return FailoverRound(victim, len(keys), max(state.recovered.values()) * 1000 if complete else None)


def measure_failover(cluster: LocalCluster, kills: int, op_timeout_s: float,
                     on_round: Callable[[FailoverRound], None]) -> FailoverOutcome:
    """kill -9 a leader `kills` times under write load (a write per key every PROBE_INTERVAL_S);
    after each, restart it and wait until the cluster is whole again. The time is from the kill until writes to every partition the
    victim led succeed again."""

    async def run() -> FailoverOutcome:
        rounds = []
        for round_number in range(kills):
            outcome = await _failover_round(cluster, round_number, op_timeout_s)
            on_round(outcome)
            rounds.append(outcome)
        return FailoverOutcome(tuple(rounds))

    return asyncio.run(run())


@dataclass(frozen=True, slots=True)
class MemoryOutcome:
    keys: int
    load_s: float
    rss_before: tuple[int, ...]  # bytes, per member
    rss_after: tuple[int, ...]
    disk_bytes: int  # all members' data directories together


def measure_memory(cluster: LocalCluster, keys: int, value_size: int, processes: int, concurrency: int,
                   seed: int, op_timeout_s: float, on_progress: ProgressCallback) -> MemoryOutcome:
    """Resident memory of each member before and after writing `keys` keys of `value_size` bytes."""
    before = tuple(rss_bytes(cluster.pid(m)) for m in cluster.members)
    started = time.monotonic()
    run_phase(cluster.target, LoadPhase(keys, value_size, chunk=128, op_timeout_s=op_timeout_s),
              processes, concurrency, seed, on_progress)
    load_s = time.monotonic() - started
    time.sleep(MEMORY_SETTLE_S)
    after = tuple(rss_bytes(cluster.pid(m)) for m in cluster.members)
    return MemoryOutcome(keys, load_s, before, after, dir_bytes(cluster.root))


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """Every member of a cluster at one instant of a soak."""

    at_s: float  # seconds since the soak started
    rss_bytes: tuple[int, ...]  # per member; 0 when the process could not be read (it exited)
    open_files: tuple[int, ...]  # per member, sockets and pipes included
    ops: int  # operations the clients had completed


@dataclass(frozen=True, slots=True)
class SoakOutcome:
    samples: tuple[ProcessSample, ...]
    measure_from_s: float  # when the clients' warm-up ended, in seconds since the soak started
    ops: int  # completed in the measured part
    errors: int
    first_error: str


class _Sampler:
    """Samples the members' RSS and open files every `interval_s` on a thread of its own, so the
    samples keep their pace whatever the caller waits for; once more when stopped."""

    def __init__(self, pids: Sequence[int], interval_s: float) -> None:
        self._pids = tuple(pids)
        self._interval_s = interval_s
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._samples: list[ProcessSample] = []
        self.ops = 0  # set by the caller as the clients report progress
        self._thread = threading.Thread(target=self._run, name="bench-soak-sampler", daemon=True)

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def _sample(self) -> None:
        rss, files = [], []
        for pid in self._pids:
            try:
                rss.append(rss_bytes(pid))
                files.append(open_files(pid))
            except (OSError, ValueError):
                rss.append(0)
                files.append(0)
        self._samples.append(ProcessSample(self.elapsed(), tuple(rss), tuple(files), self.ops))

    def _run(self) -> None:
        self._sample()
        while not self._stop.wait(self._interval_s):
            self._sample()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> tuple[ProcessSample, ...]:
        self._stop.set()
        self._thread.join()
        self._sample()
        return tuple(self._samples)


def measure_soak(cluster: LocalCluster, phase: TimedPhase, processes: int, concurrency: int, seed: int,
                 interval_s: float, on_progress: ProgressCallback) -> SoakOutcome:
    """Run `phase` (sustained writes) against a fresh cluster while sampling every member's RSS
    and open files every `interval_s` seconds, from before the clients start until they end."""
    sampler = _Sampler([cluster.pid(m) for m in cluster.members], interval_s)
    clients_started: list[float] = []

    def progress(ops: int) -> None:
        if not clients_started:  # the first report comes within a fraction of a second of their start
            clients_started.append(sampler.elapsed())
        sampler.ops = ops
        on_progress(ops)

    sampler.start()
    try:
        result = run_phase(cluster.target, phase, processes, concurrency, seed, progress)
    finally:
        samples = sampler.stop()
    measure_from = (clients_started[0] if clients_started else 0.0) + phase.warmup_s
    return SoakOutcome(samples, measure_from, result.ops, result.errors, result.first_error)
