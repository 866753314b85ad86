"""Benchmark records and their outputs: JSON, rich tables, PNG plots."""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hdrh.histogram import HdrHistogram
from rich.table import Table

import kvstore.raft.raft
from kvstore.bench.drivers import TargetKind
from kvstore.bench.workloads import WORKLOADS, WriteKind
from kvstore.compiled import is_compiled

if TYPE_CHECKING:
    from matplotlib.figure import Figure

JSON_FILE = "results.json"
THROUGHPUT_PNG = "throughput.png"
TIMELINE_PNG = "throughput-timeline.png"
LATENCY_PNG = "latency-cdf.png"
SOAK_PNG = "soak.png"
MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Machine:
    platform: str
    machine: str
    cpu_model: str
    cpu_count: int
    python: str
    kernel: str
    kvstore_build: str  # "compiled" (mypyc) or "pure Python" (KVSTORE_PURE_PYTHON=1)


def machine_info() -> Machine:
    cpu_model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu_model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                          if line.startswith("model name")), "")
    build = "compiled" if is_compiled(kvstore.raft.raft) else "pure Python"
    return Machine(platform.platform(), platform.machine(), cpu_model, os.cpu_count() or 0,
                   sys.version.split()[0], platform.release(), build)


def machine_line() -> str:
    """The one line every benchmark prints first: what the figures were measured on."""
    m = machine_info()
    return (f"machine: {m.cpu_model or m.machine}, {m.cpu_count} CPUs, Python {m.python}, {m.platform}; "
            f"kvstore {m.kvstore_build}")


def load_average() -> float:
    """1-minute load average: recorded with every measurement, since other work on the machine
    (a Jepsen run, say) takes CPU from the cluster under test."""
    return os.getloadavg()[0]


@dataclass(frozen=True, slots=True)
class WorkloadRecord:
    workload: str
    target: str
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float
    # CPU (user + system) per completed operation during the measurement: of the target's members
    # together (NaN with --endpoints, whose processes are not ours) and of the client processes.
    server_cpu_us_per_op: float
    client_cpu_us_per_op: float
    ops: int
    errors: int
    cas_failures: int  # workload f: read-modify-writes whose compare lost to a concurrent write
    first_error: str
    duration_s: float
    warmup_s: float
    concurrency: int
    processes: int
    distribution: str
    keys: int
    value_size: int
    read_consistency: str
    load_avg_1m: float  # just before the run
    per_second: tuple[int, ...]  # completed operations in each second of the measurement
    histogram: str  # HdrHistogram, base64 (latency in microseconds): re-plot or re-merge later
    machine: Machine

    def decoded_histogram(self) -> HdrHistogram:
        return HdrHistogram.decode(self.histogram.encode())


@dataclass(frozen=True, slots=True)
class FailoverRecord:
    workload: str  # "failover"
    target: str
    kills: int
    victims: tuple[int, ...]
    partitions_per_kill: tuple[int, ...]
    recoveries_ms: tuple[float | None, ...]  # None: writes had not resumed within the limit
    p50_ms: float
    max_ms: float
    failed: int
    load_avg_1m: float
    machine: Machine


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    workload: str  # "memory"
    target: str
    keys: int
    value_size: int
    load_s: float
    rss_before_mb: tuple[float, ...]  # per member
    rss_after_mb: tuple[float, ...]
    max_rss_mb: float
    disk_mb: float
    load_avg_1m: float
    machine: Machine


@dataclass(frozen=True, slots=True)
class SoakRecord:
    """RSS and open files of every member, sampled while clients write for a long time."""

    workload: str  # "soak"
    target: str
    duration_s: float  # measured writes, after warmup_s
    warmup_s: float
    interval_s: float
    concurrency: int
    processes: int
    keys: int
    value_size: int
    ops: int  # completed in the measured part
    errors: int
    first_error: str
    measure_from_s: float  # the end of the warm-up, in seconds since the first sample
    at_s: tuple[float, ...]  # when each sample was taken, seconds since the first
    rss_mb: tuple[tuple[float, ...], ...]  # per member, one value per sample (0: not readable)
    open_files: tuple[tuple[int, ...], ...]  # per member, one value per sample
    ops_at: tuple[int, ...]  # operations completed by each sample (warm-up included)
    load_avg_1m: float
    machine: Machine

    def _measured(self, member: int) -> list[tuple[float, float]]:
        return [(at, rss) for at, rss in zip(self.at_s, self.rss_mb[member], strict=True) if at >= self.measure_from_s]

    def rss_after_warmup_mb(self, member: int) -> float:
        measured = self._measured(member)
        return measured[0][1] if measured else math.nan

    def growth_mb_per_min(self, member: int) -> float:
        """Least-squares slope of the member's RSS after the warm-up: 0 when it is flat."""
        measured = self._measured(member)
        if len(measured) < 2:
            return math.nan
        slope, _ = statistics.linear_regression([at for at, _ in measured], [rss for _, rss in measured])
        return slope * 60


@dataclass(frozen=True, slots=True)
class BenchReport:
    command: str
    workloads: tuple[WorkloadRecord, ...]
    failovers: tuple[FailoverRecord, ...]
    memories: tuple[MemoryRecord, ...]
    soaks: tuple[SoakRecord, ...] = ()


def _json_safe(value: object) -> object:
    """NaN (no measurement, e.g. every kill failed) becomes null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_json(report: BenchReport, output: Path) -> Path:
    path = output / JSON_FILE
    records = [*map(asdict, report.workloads), *map(asdict, report.failovers), *map(asdict, report.memories),
               *map(asdict, report.soaks)]
    document = _json_safe({"command": report.command, "records": records})
    path.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n")
    return path


# ---- tables ---------------------------------------------------------------------------------


def _ratio(numerator: float, denominator: float) -> str:
    if not denominator or math.isnan(numerator) or math.isnan(denominator):
        return "-"
    return f"{numerator / denominator:.2f}×"


def workload_table(workload: str, records: Sequence[WorkloadRecord]) -> Table:
    first = records[0]
    table = Table(title=f"{WORKLOADS[workload].description}\n{first.concurrency} outstanding ops, "
                        f"{first.processes} client processes, {first.distribution} keys ({first.keys:,}), "
                        f"{first.value_size} B values, {first.read_consistency} reads, {first.duration_s:g} s")
    rmw = WORKLOADS[workload].write_kind is WriteKind.READ_MODIFY_WRITE
    for column in ("target", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "errors", *(["cas lost"] if rmw else []),
                   "load avg"):
        table.add_column(column, justify="left" if column == "target" else "right", no_wrap=True)
    for r in records:
        table.add_row(r.target, f"{r.ops_per_s:,.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.p999_ms:.2f}",
                      str(r.errors), *([str(r.cas_failures)] if rmw else []), f"{r.load_avg_1m:.2f}")
    by_target = {r.target: r for r in records}
    kv, etcd = by_target.get(TargetKind.KVSTORE), by_target.get(TargetKind.ETCD)
    if kv is not None and etcd is not None:
        table.add_row("[bold]kvstore/etcd[/]", _ratio(kv.ops_per_s, etcd.ops_per_s), _ratio(kv.p50_ms, etcd.p50_ms),
                      _ratio(kv.p99_ms, etcd.p99_ms), _ratio(kv.p999_ms, etcd.p999_ms), "", *([""] if rmw else []), "")
    return table


def cpu_table(records: Sequence[WorkloadRecord]) -> Table:
    """CPU per operation of every workload and target: what a target costs, whatever else ran."""
    targets = list(dict.fromkeys(r.target for r in records))
    by_key = {(r.workload, r.target): r for r in records}
    both = {TargetKind.KVSTORE, TargetKind.ETCD} <= set(targets)
    # The ratio exists only when both targets ran; the title names only what the table shows.
    table = Table(title="CPU per operation (user + system, µs) during the measurement: servers = the "
                        "members together, clients = the client processes"
                        + (", ratio = kvstore/etcd" if both else ""))
    table.add_column("workload")
    for role in ("servers", "clients"):
        for target in targets:
            table.add_column(f"{target} {role}", justify="right")
        if both:
            table.add_column("ratio", justify="right")
    for workload in dict.fromkeys(r.workload for r in records):
        cells = [workload]
        for role in ("server", "client"):
            figures = {t: getattr(by_key[(workload, t)], f"{role}_cpu_us_per_op") if (workload, t) in by_key
                       else math.nan for t in targets}
            cells += ["-" if math.isnan(figures[t]) else f"{figures[t]:,.0f}" for t in targets]
            if both:
                cells.append(_ratio(figures[TargetKind.KVSTORE], figures[TargetKind.ETCD]))
        table.add_row(*cells)
    return table


def failover_table(records: Sequence[FailoverRecord]) -> Table:
    table = Table(title="failover: kill -9 a leader under writes; time until writes to its partitions succeed again")
    for column in ("target", "kills", "p50 ms", "max ms", "failed", "each kill (ms)"):
        table.add_column(column, justify="left" if column in ("target", "each kill (ms)") else "right")
    for r in records:
        each = ", ".join("-" if ms is None else f"{ms:.0f}" for ms in r.recoveries_ms)
        table.add_row(r.target, str(r.kills), f"{r.p50_ms:.0f}", f"{r.max_ms:.0f}", str(r.failed), each)
    return table


def memory_table(records: Sequence[MemoryRecord]) -> Table:
    first = records[0]
    table = Table(title=f"memory: resident set of each member after {first.keys:,} keys of {first.value_size} B")
    for column in ("target", "RSS before (MB)", "RSS after (MB)", "max (MB)", "disk (MB)", "load s"):
        table.add_column(column, justify="left" if column == "target" else "right", no_wrap=True)
    for r in records:
        table.add_row(r.target, " ".join(f"{mb:.0f}" for mb in r.rss_before_mb),
                      " ".join(f"{mb:.0f}" for mb in r.rss_after_mb), f"{r.max_rss_mb:.0f}", f"{r.disk_mb:.0f}",
                      f"{r.load_s:.0f}")
    return table


def soak_table(records: Sequence[SoakRecord]) -> Table:
    first = records[0]
    table = Table(title=f"soak: puts for {first.warmup_s:g} s of warm-up and {first.duration_s:g} s measured "
                        f"({first.concurrency} outstanding, {first.keys:,} keys of {first.value_size} B), each "
                        f"member sampled every {first.interval_s:g} s: RSS in MB after the warm-up, at the end and "
                        "at most; its growth after the warm-up in MB per minute (least squares); open files")
    for column in ("target", "member", "warm", "end", "max", "MB/min", "files", "puts/s", "errors"):
        table.add_column(column, justify="left" if column == "target" else "right", no_wrap=True)
    for r in records:
        for member, (rss, files) in enumerate(zip(r.rss_mb, r.open_files, strict=True)):
            table.add_row(r.target, str(member + 1), f"{r.rss_after_warmup_mb(member):.0f}", f"{rss[-1]:.0f}",
                          f"{max(rss):.0f}", f"{r.growth_mb_per_min(member):+.2f}", f"{min(files)}-{max(files)}",
                          f"{r.ops / r.duration_s:,.0f}", str(r.errors))
    return table


def tables(report: BenchReport) -> list[Table]:
    result = []
    for workload in dict.fromkeys(r.workload for r in report.workloads):
        result.append(workload_table(workload, [r for r in report.workloads if r.workload == workload]))
    if report.workloads:
        result.append(cpu_table(report.workloads))
    if report.failovers:
        result.append(failover_table(report.failovers))
    if report.memories:
        result.append(memory_table(report.memories))
    if report.soaks:
        result.append(soak_table(report.soaks))
    return result


# ---- plots (matplotlib's object API: no pyplot global state, no GUI backend) ----------------


def write_plots(report: BenchReport, output: Path) -> list[Path]:
    written = []
    if report.workloads:
        workloads = list(dict.fromkeys(r.workload for r in report.workloads))
        targets = list(dict.fromkeys(r.target for r in report.workloads))
        by_key = {(r.workload, r.target): r for r in report.workloads}
        written += [_throughput_bars(workloads, targets, by_key, output / THROUGHPUT_PNG),
                    _timelines(workloads, targets, by_key, output / TIMELINE_PNG),
                    _latency_cdfs(workloads, targets, by_key, output / LATENCY_PNG)]
    if report.soaks:
        written.append(_soak_plot(report.soaks, output / SOAK_PNG))
    return written


RecordIndex = dict[tuple[str, str], WorkloadRecord]


def _figure(width: float, height: float) -> Figure:
    # Imported here, not at the top: importing matplotlib takes about a second, and every kvctl
    # command imports this module (kvctl's --timeout would pay for it on every `kvctl get`).
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _throughput_bars(workloads: list[str], targets: list[str], by_key: RecordIndex, path: Path) -> Path:
    figure = _figure(max(6.0, 1.6 * len(workloads) * len(targets)), 4.5)
    axes = figure.subplots()
    width = 0.8 / len(targets)
    for t, target in enumerate(targets):
        xs = [w + (t - (len(targets) - 1) / 2) * width for w in range(len(workloads))]
        heights = [by_key[(w, target)].ops_per_s if (w, target) in by_key else 0.0 for w in workloads]
        bars = axes.bar(xs, heights, width, label=target)
        axes.bar_label(bars, labels=[f"{h:,.0f}" for h in heights], fontsize=8)
    axes.set_xticks(range(len(workloads)), workloads)
    axes.set_ylabel("operations / s")
    axes.set_title("throughput per workload")
    axes.legend()
    figure.savefig(path, dpi=110)
    return path


def _timelines(workloads: list[str], targets: list[str], by_key: RecordIndex, path: Path) -> Path:
    figure = _figure(7.0, 2.4 * len(workloads))
    for axes, workload in zip(figure.subplots(len(workloads), 1, squeeze=False)[:, 0], workloads, strict=True):
        for target in targets:
            record = by_key.get((workload, target))
            if record is not None:
                axes.plot(range(1, len(record.per_second) + 1), record.per_second, marker=".", label=target)
        axes.set_title(f"{workload}: operations completed per second")
        axes.set_xlabel("second of the measurement")
        axes.set_ylim(bottom=0)
        axes.legend()
    figure.savefig(path, dpi=110)
    return path


def _latency_cdfs(workloads: list[str], targets: list[str], by_key: RecordIndex, path: Path) -> Path:
    figure = _figure(7.0, 3.0 * len(workloads))
    for axes, workload in zip(figure.subplots(len(workloads), 1, squeeze=False)[:, 0], workloads, strict=True):
        for target in targets:
            record = by_key.get((workload, target))
            if record is None or record.ops == 0:
                continue
            histogram = record.decoded_histogram()
            total = histogram.get_total_count()
            xs, ys = [], []
            for step in histogram.get_recorded_iterator():
                xs.append(histogram.get_highest_equivalent_value(step.value_iterated_to) / 1000)
                ys.append(100.0 * step.total_count_to_this_value / total)
            axes.step(xs, ys, where="post", label=target)
        axes.set_xscale("log")
        axes.set_xlabel("latency (ms, log scale)")
        axes.set_ylabel("percentile")
        axes.set_title(f"{workload}: latency CDF")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    figure.savefig(path, dpi=110)
    return path


def _soak_plot(records: Sequence[SoakRecord], path: Path) -> Path:
    """RSS, open files and write rate over time, a line per member, the warm-up's end marked."""
    figure = _figure(8.0, 8.0)
    rss_axes, files_axes, rate_axes = figure.subplots(3, 1, sharex=True)
    for r in records:
        minutes = [at / 60 for at in r.at_s]
        for member, (rss, files) in enumerate(zip(r.rss_mb, r.open_files, strict=True)):
            rss_axes.plot(minutes, rss, label=f"{r.target} member {member + 1}")
            files_axes.plot(minutes, files, label=f"{r.target} member {member + 1}")
        points = list(zip(r.at_s, r.ops_at, strict=True))
        rates = [(ops - ops_before) / (at - before) if at > before else 0.0
                 for (before, ops_before), (at, ops) in itertools.pairwise(points)]
        rate_axes.plot(minutes[1:], rates, label=r.target)
        for axes in (rss_axes, files_axes, rate_axes):
            axes.axvline(r.measure_from_s / 60, color="grey", linestyle=":", linewidth=1)
    rss_axes.set_ylabel("RSS (MB)")
    rss_axes.set_title("soak: memory of each member under sustained writes (dotted: end of warm-up)")
    files_axes.set_ylabel("open files")
    rate_axes.set_ylabel("puts / s")
    rate_axes.set_xlabel("minutes since the first sample (the clients start a few seconds later)")
    for axes in (rss_axes, files_axes, rate_axes):
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7)
    figure.savefig(path, dpi=110)
    return path
