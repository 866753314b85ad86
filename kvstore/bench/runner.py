"""What `kvctl bench` runs: for each target, its throughput workloads on one cluster (after
loading the keys), then the failover kills on that cluster, then memory and soak, each on a
fresh cluster.

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

from kvstore.bench.clusters import BenchError, LocalCluster, start_cluster
from kvstore.bench.drivers import TargetKind, TargetSpec
from kvstore.bench.keys import Distribution
from kvstore.bench.loadgen import LoadPhase, ProgressCallback, TimedPhase, run_phase
from kvstore.bench.report import (
    MB,
    BenchReport,
    FailoverRecord,
    Machine,
    MemoryRecord,
    SoakRecord,
    WorkloadRecord,
    load_average,
    machine_info,
    write_json,
    write_plots,
)
from kvstore.bench.scenarios import FailoverRound, measure_failover, measure_memory, measure_soak
from kvstore.bench.workloads import WORKLOADS
from kvstore.client import ReadConsistency
from kvstore.progress import Progress

FAILOVER = "failover"
MEMORY = "memory"
SOAK = "soak"
SCENARIOS = (FAILOVER, MEMORY, SOAK)


@dataclass(frozen=True, slots=True)
class BenchConfig:
    workloads: tuple[str, ...]  # names in WORKLOADS, and/or those in SCENARIOS
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
    sample_interval_s: float = 5.0  # soak: seconds between two samples of every member


def _counting(progress: Progress) -> ProgressCallback:
    """Loads: progress measured in operations, one per key."""
    return lambda ops: progress.update(ops)


def _timing(progress: Progress) -> ProgressCallback:
    """Timed workloads: progress in seconds since the first report (the processes' common start),
    with the operations so far as the detail."""
    started: list[float] = []

    def update(ops: int) -> None:
        if not started:
            started.append(time.monotonic())
        progress.update(time.monotonic() - started[0], detail=f"{ops:,} ops")

    return update


@contextmanager
def _target_cluster(config: BenchConfig, kind: TargetKind, etcd_binary: str | None,
                    progress: Progress) -> Iterator[tuple[TargetSpec, LocalCluster | None]]:
    if kind is TargetKind.KVSTORE and config.endpoints:
        yield TargetSpec(kind, config.endpoints), None
        return
    progress.phase(f"{kind}: starting a 3-member cluster")
    cluster = start_cluster(kind, config.partitions, etcd_binary, config.tls)
    try:
        yield cluster.target, cluster
    finally:
        cluster.close()


def run_bench(config: BenchConfig, progress: Progress) -> BenchReport:
    """Run every workload of ``config`` on every target, each step a phase of ``progress``."""
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
    soaks: list[SoakRecord] = []
    for kind in config.targets:
        timed = [w for w in config.workloads if w in WORKLOADS]
        if timed or FAILOVER in config.workloads:
            with _target_cluster(config, kind, etcd_binary, progress) as (target, cluster):
                if timed:
                    load = LoadPhase(config.keys, config.value_size, chunk=64, op_timeout_s=config.op_timeout_s)
                    progress.phase(f"{kind}: loading {config.keys:,} keys", total=config.keys, unit="keys")
                    run_phase(target, load, config.processes, config.concurrency, config.seed, _counting(progress))
                server_pids = [cluster.pid(member) for member in cluster.members] if cluster else []
                for name in timed:
                    workloads.append(_run_workload(config, kind, target, name, machine, progress, server_pids))
                if FAILOVER in config.workloads:
                    if cluster is None:
                        progress.note(f"{kind}: failover needs a cluster the benchmark starts (not --endpoints); "
                                      "skipped")
                    else:
                        failovers.append(_run_failover(config, kind, cluster, machine, progress))
        for scenario in (MEMORY, SOAK):
            if scenario not in config.workloads:
                continue
            if kind is TargetKind.KVSTORE and config.endpoints:
                progress.note(f"kvstore: {scenario} needs a cluster the benchmark starts; skipped")
            elif scenario == MEMORY:
                memories.append(_run_memory(config, kind, etcd_binary, machine, progress))
            else:
                soaks.append(_run_soak(config, kind, etcd_binary, machine, progress))
    report = BenchReport(shlex.join(["kvctl", *sys.argv[1:]]), tuple(workloads), tuple(failovers), tuple(memories),
                         tuple(soaks))
    config.output.mkdir(parents=True, exist_ok=True)
    write_json(report, config.output)
    write_plots(report, config.output)
    return report


def _run_workload(config: BenchConfig, kind: TargetKind, target: TargetSpec, name: str, machine: Machine,
                  progress: Progress, server_pids: list[int]) -> WorkloadRecord:
    phase = TimedPhase(WORKLOADS[name], config.distribution, config.keys, config.value_size, config.consistency,
                       config.warmup_s, config.duration_s, config.op_timeout_s)
    load_avg = load_average()
    total_s = config.warmup_s + config.duration_s
    progress.phase(f"{kind}: {name}", total=total_s, unit="s")
    result = run_phase(target, phase, config.processes, config.concurrency, config.seed, _timing(progress),
                       server_pids)
    progress.update(total_s, detail=f"{result.ops:,} ops")
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
                  progress: Progress) -> FailoverRecord:
    load_avg = load_average()
    progress.phase(f"{kind}: failover", total=config.kills, unit="kills")
    rounds: list[FailoverRound] = []

    def on_round(finished: FailoverRound) -> None:
        rounds.append(finished)
        progress.update(len(rounds))

    outcome = measure_failover(cluster, config.kills, config.op_timeout_s, on_round)
    return FailoverRecord(
        workload=FAILOVER, target=str(kind), kills=config.kills, victims=tuple(r.victim for r in outcome.rounds),
        partitions_per_kill=tuple(r.partitions for r in outcome.rounds),
        recoveries_ms=tuple(r.recovery_ms for r in outcome.rounds), p50_ms=outcome.p50_ms, max_ms=outcome.max_ms,
        failed=outcome.failed, load_avg_1m=load_avg, machine=machine,
    )


def _run_memory(config: BenchConfig, kind: TargetKind, etcd_binary: str | None, machine: Machine,
                progress: Progress) -> MemoryRecord:
    progress.phase(f"{kind}: starting a fresh 3-member cluster for the memory measurement")
    cluster = start_cluster(kind, config.partitions, etcd_binary, config.tls)
    try:
        load_avg = load_average()
        progress.phase(f"{kind}: memory, loading", total=config.memory_keys, unit="keys")
        outcome = measure_memory(cluster, config.memory_keys, config.value_size, config.processes,
                                 config.concurrency, config.seed, config.op_timeout_s, _counting(progress))
    finally:
        cluster.close()
    return MemoryRecord(
        workload=MEMORY, target=str(kind), keys=outcome.keys, value_size=config.value_size, load_s=outcome.load_s,
        rss_before_mb=tuple(b / MB for b in outcome.rss_before), rss_after_mb=tuple(b / MB for b in outcome.rss_after),
        max_rss_mb=max(outcome.rss_after) / MB, disk_mb=outcome.disk_bytes / MB, load_avg_1m=load_avg,
        machine=machine,
    )


def _run_soak(config: BenchConfig, kind: TargetKind, etcd_binary: str | None, machine: Machine,
              progress: Progress) -> SoakRecord:
    progress.phase(f"{kind}: starting a fresh 3-member cluster for the soak")
    cluster = start_cluster(kind, config.partitions, etcd_binary, config.tls)
    phase = TimedPhase(WORKLOADS["put"], config.distribution, config.keys, config.value_size, config.consistency,
                       config.warmup_s, config.duration_s, config.op_timeout_s)
    try:
        load_avg = load_average()
        total_s = config.warmup_s + config.duration_s
        progress.phase(f"{kind}: soak, puts while sampling RSS and open files every {config.sample_interval_s:g} s",
                       total=total_s, unit="s")
        outcome = measure_soak(cluster, phase, config.processes, config.concurrency, config.seed,
                               config.sample_interval_s, _timing(progress))
        progress.update(total_s, detail=f"{outcome.ops:,} ops")
    finally:
        cluster.close()
    samples = outcome.samples
    members = range(len(samples[0].rss_bytes))
    return SoakRecord(
        workload=SOAK, target=str(kind), duration_s=config.duration_s, warmup_s=config.warmup_s,
        interval_s=config.sample_interval_s, concurrency=config.concurrency, processes=config.processes,
        keys=config.keys, value_size=config.value_size, ops=outcome.ops, errors=outcome.errors,
        first_error=outcome.first_error, measure_from_s=outcome.measure_from_s,
        at_s=tuple(s.at_s for s in samples),
        rss_mb=tuple(tuple(s.rss_bytes[m] / MB for s in samples) for m in members),
        open_files=tuple(tuple(s.open_files[m] for s in samples) for m in members),
        ops_at=tuple(s.ops for s in samples), load_avg_1m=load_avg, machine=machine,
    )
