"""What `kvctl bench` runs: for each target, its throughput workloads on one cluster (after
loading the keys), then the failover kills on that cluster, then memory on a fresh cluster.

Targets run one after the other, never side by side: an idle cluster still costs CPU (Raft
ticks), which would be taken from the one being measured.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from kvstore.bench.clusters import BenchError, LocalCluster, start_cluster
from kvstore.bench.drivers import TargetKind, TargetSpec
from kvstore.bench.keys import Distribution
from kvstore.bench.loadgen import LoadPhase, ProgressCallback, TimedPhase, run_phase
from kvstore.bench.report import (
    BenchReport,
    FailoverRecord,
    Machine,
    MemoryRecord,
    WorkloadRecord,
    load_average,
    machine_info,
    write_json,
    write_plots,
)
from kvstore.bench.scenarios import FailoverRound, measure_failover, measure_memory
from kvstore.bench.workloads import WORKLOADS
from kvstore.client import ReadConsistency

FAILOVER = "failover"
MEMORY = "memory"
SCENARIOS = (FAILOVER, MEMORY)
MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class BenchConfig:
    workloads: tuple[str, ...]  # names in WORKLOADS, and/or "failover", "memory"
    targets: tuple[TargetKind, ...]
    endpoints: tuple[str, ...]  # a running kvstore cluster to use instead of starting one
    duration_s: float
    warmup_s: float
    concurrency: int
    processes: int
    keys: int
    value_size: int
    distribution: Distribution
    consistency: ReadConsistency
    partitions: int
    kills: int
    memory_keys: int
    op_timeout_s: float
    seed: int
    output: Path
    tls: bool = False  # the kvstore cluster the benchmark starts serves TLS


class _Bars:
    """The rich progress bars: one per phase, in seconds for timed runs, in keys for loads."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def add(self, description: str, total: float, unit: str = "ops") -> TaskID:
        return self._progress.add_task(description, total=total, ops=0, unit=unit)

    def counter(self, task: TaskID) -> ProgressCallback:
        """Progress measured in operations (loads: one per key)."""
        return lambda ops: self._progress.update(task, completed=ops, ops=ops)

    def clock(self, task: TaskID) -> ProgressCallback:
        """Progress measured in seconds since the first report (the processes' common start)."""
        started: list[float] = []

        def update(ops: int) -> None:
            if not started:
                started.append(time.monotonic())
            self._progress.update(task, completed=time.monotonic() - started[0], ops=ops)

        return update

    def advance(self, task: TaskID) -> None:
        done = next(t.completed for t in self._progress.tasks if t.id == task) + 1
        self._progress.update(task, completed=done, ops=int(done))

    def finish(self, task: TaskID) -> None:
        total = next(t.total for t in self._progress.tasks if t.id == task)
        self._progress.update(task, completed=total)


@contextmanager
def _target_cluster(config: BenchConfig, kind: TargetKind, etcd_binary: str | None,
                    console: Console) -> Iterator[tuple[TargetSpec, LocalCluster | None]]:
    if kind is TargetKind.KVSTORE and config.endpoints:
        yield TargetSpec(kind, config.endpoints), None
        return
    with console.status(f"starting a 3-member {kind} cluster..."):
        cluster = start_cluster(kind, config.partitions, etcd_binary, config.tls)
    try:
        yield cluster.target, cluster
    finally:
        cluster.close()


def run_bench(config: BenchConfig, console: Console) -> BenchReport:
    unknown = [w for w in config.workloads if w not in WORKLOADS and w not in SCENARIOS]
    if unknown:
        raise BenchError(f"unknown workload(s): {', '.join(unknown)}")
    etcd_binary = shutil.which("etcd")
    if TargetKind.ETCD in config.targets and etcd_binary is None:
        raise BenchError("target etcd: no `etcd` binary on PATH (Debian: apt-get install etcd-server; "
                         "`make bench` installs it)")
    machine = machine_info()
    workloads: list[WorkloadRecord] = []
    failovers: list[FailoverRecord] = []
    memories: list[MemoryRecord] = []
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[ops]:>10,} {task.fields[unit]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as rich_progress:
        bars = _Bars(rich_progress)
        for kind in config.targets:
            timed = [w for w in config.workloads if w in WORKLOADS]
            if timed or FAILOVER in config.workloads:
                with _target_cluster(config, kind, etcd_binary, console) as (target, cluster):
                    if timed:
                        load = LoadPhase(config.keys, config.value_size, chunk=64, op_timeout_s=config.op_timeout_s)
                        task = bars.add(f"{kind}: loading {config.keys:,} keys", config.keys, "keys")
                        run_phase(target, load, config.processes, config.concurrency, config.seed,
                                  bars.counter(task))
                    server_pids = [cluster.pid(member) for member in cluster.members] if cluster else []
                    for name in timed:
                        workloads.append(_run_workload(config, kind, target, name, machine, bars, server_pids))
                    if FAILOVER in config.workloads:
                        if cluster is None:
                            console.print(f"[yellow]{kind}: failover needs a cluster the benchmark starts "
                                          "(not --endpoints); skipped[/]")
                        else:
                            failovers.append(_run_failover(config, kind, cluster, machine, bars))
            if MEMORY in config.workloads:
                if kind is TargetKind.KVSTORE and config.endpoints:
                    console.print("[yellow]kvstore: memory needs a cluster the benchmark starts; skipped[/]")
                    continue
                memories.append(_run_memory(config, kind, etcd_binary, machine, bars, console))
    report = BenchReport(shlex.join(["kvctl", *sys.argv[1:]]), tuple(workloads), tuple(failovers), tuple(memories))
    config.output.mkdir(parents=True, exist_ok=True)
    write_json(report, config.output)
    write_plots(report, config.output)
    return report


def _run_workload(config: BenchConfig, kind: TargetKind, target: TargetSpec, name: str, machine: Machine,
                  bars: _Bars, server_pids: list[int]) -> WorkloadRecord:
    phase = TimedPhase(WORKLOADS[name], config.distribution, config.keys, config.value_size, config.consistency,
                       config.warmup_s, config.duration_s, config.op_timeout_s)
    load_avg = load_average()
    task = bars.add(f"{kind}: {name}", config.warmup_s + config.duration_s)
    result = run_phase(target, phase, config.processes, config.concurrency, config.seed, bars.clock(task),
                       server_pids)
    bars.finish(task)
    histogram = result.histogram

    def ms(percentile: float) -> float:
        return histogram.get_value_at_percentile(percentile) / 1000 if result.ops else float("nan")

    def us_per_op(cpu_s: float) -> float:
        return cpu_s / result.ops * 1e6 if result.ops else float("nan")

    return WorkloadRecord(
        workload=name, target=str(kind), ops_per_s=result.ops / config.duration_s, p50_ms=ms(50), p99_ms=ms(99),
        p999_ms=ms(99.9), max_ms=histogram.get_max_value() / 1000, mean_ms=histogram.get_mean_value() / 1000,
        server_cpu_us_per_op=us_per_op(result.server_cpu_s), client_cpu_us_per_op=us_per_op(result.client_cpu_s),
        ops=result.ops, errors=result.errors, cas_failures=result.cas_failures, first_error=result.first_error,
        duration_s=config.duration_s, warmup_s=config.warmup_s, concurrency=config.concurrency,
        processes=config.processes, distribution=str(config.distribution), keys=config.keys,
        value_size=config.value_size, read_consistency=config.consistency.name.lower(), load_avg_1m=load_avg,
        per_second=result.per_second, histogram=histogram.encode().decode(), machine=machine,
    )


def _run_failover(config: BenchConfig, kind: TargetKind, cluster: LocalCluster, machine: Machine,
                  bars: _Bars) -> FailoverRecord:
    load_avg = load_average()
    task = bars.add(f"{kind}: failover", config.kills, "kills")

    def on_round(_: FailoverRound) -> None:
        bars.advance(task)

    outcome = measure_failover(cluster, config.kills, config.op_timeout_s, on_round)
    return FailoverRecord(
        workload=FAILOVER, target=str(kind), kills=config.kills, victims=tuple(r.victim for r in outcome.rounds),
        partitions_per_kill=tuple(r.partitions for r in outcome.rounds),
        recoveries_ms=tuple(r.recovery_ms for r in outcome.rounds), p50_ms=outcome.p50_ms, max_ms=outcome.max_ms,
        failed=outcome.failed, load_avg_1m=load_avg, machine=machine,
    )


def _run_memory(config: BenchConfig, kind: TargetKind, etcd_binary: str | None, machine: Machine,
                bars: _Bars, console: Console) -> MemoryRecord:
    with console.status(f"starting a fresh 3-member {kind} cluster for the memory measurement..."):
        cluster = start_cluster(kind, config.partitions, etcd_binary, config.tls)
    try:
        load_avg = load_average()
        task = bars.add(f"{kind}: memory, loading", config.memory_keys, "keys")
        outcome = measure_memory(cluster, config.memory_keys, config.value_size, config.processes,
                                 config.concurrency, config.seed, config.op_timeout_s, bars.counter(task))
    finally:
        cluster.close()
    return MemoryRecord(
        workload=MEMORY, target=str(kind), keys=outcome.keys, value_size=config.value_size, load_s=outcome.load_s,
        rss_before_mb=tuple(b / MB for b in outcome.rss_before), rss_after_mb=tuple(b / MB for b in outcome.rss_after),
        max_rss_mb=max(outcome.rss_after) / MB, disk_mb=outcome.disk_bytes / MB, load_avg_1m=load_avg,
        machine=machine,
    )
