"""`kvctl bench`: the same workloads against kvstore and etcd, side by side (kvstore.bench)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

import click
from rich.console import Console

from kvctl.exitcodes import ExitCode
from kvctl.progress import ConsoleProgress
from kvstore.bench.clusters import BenchError
from kvstore.bench.drivers import TargetKind
from kvstore.bench.keys import Distribution
from kvstore.bench.report import JSON_FILE, LATENCY_PNG, SOAK_PNG, THROUGHPUT_PNG, TIMELINE_PNG, tables
from kvstore.bench.runner import SCENARIOS, BenchConfig, run_bench
from kvstore.bench.workloads import WORKLOADS
from kvstore.client import ReadConsistency

_WORKLOAD_HELP = "; ".join(f"{w.name}: {w.description}" for w in WORKLOADS.values())


def _names(value: str, allowed: list[str], option: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip().lower() for part in value.split(",") if part.strip()))
    unknown = [n for n in names if n not in allowed]
    if not names or unknown:
        raise click.BadParameter(f"{', '.join(unknown) or 'nothing given'}; choose from {', '.join(allowed)}",
                                 param_hint=option)
    return names


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds through the finally blocks that stop the clusters and client processes.
    raise SystemExit(128 + signum)


@click.command()
@click.option("--workload", "-w", "workloads", default="put,get", show_default=True,
              help=f"Comma-separated. {_WORKLOAD_HELP}; failover: kill -9 a leader under writes, --kills times, "
                   "and time until writes to its partitions succeed again; memory: RSS of each member after "
                   "loading --memory-keys keys into a fresh cluster; soak: puts for --warmup + --duration seconds "
                   "into a fresh cluster, each member's RSS and open files sampled every --sample-interval "
                   "seconds and plotted.")
@click.option("--target", "-t", "targets", default="kvstore,etcd", show_default=True,
              help="Comma-separated: kvstore (a 3-node cluster started in a temp dir, or --endpoints) and/or "
                   "etcd (a 3-member cluster of the `etcd` on PATH, default settings, fsync on).")
@click.option("--duration", default=30.0, show_default=True, type=click.FloatRange(min=0.5),
              help="Measured seconds per workload.")
@click.option("--warmup", default=5.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Unmeasured seconds before each measurement.")
@click.option("--concurrency", "-c", default=128, show_default=True, type=click.IntRange(min=1),
              help="Outstanding operations in total, split over the client processes.")
@click.option("--processes", "-p", default=2, show_default=True, type=click.IntRange(min=1),
              help="Client processes (one Python process cannot saturate a cluster).")
@click.option("--keys", default=10_000, show_default=True, type=click.IntRange(min=2),
              help="Key space; every key is written once before the workloads.")
@click.option("--value-size", default=100, show_default=True, type=click.IntRange(min=1), help="Bytes per value.")
@click.option("--distribution", default=Distribution.UNIFORM.value, show_default=True,
              type=click.Choice([d.value for d in Distribution]),
              help="Key popularity: uniform, or zipfian (theta 0.99, hot keys scattered by a hash).")
@click.option("--read-consistency", default="linearizable", show_default=True,
              type=click.Choice([c.name.lower() for c in ReadConsistency]),
              help="kvstore read level. etcd: linearizable/lease use its default (linearizable) Range, "
                   "session/stale its serializable Range.")
@click.option("--endpoints", default="", help="HOST:PORT,... of a running kvstore cluster to use instead of "
                                              "starting one (failover, memory and soak then skip kvstore).")
@click.option("--partitions", default=64, show_default=True, type=int,
              help="Partitions of the kvstore cluster the benchmark starts.")
@click.option("--kills", default=5, show_default=True, type=click.IntRange(min=1), help="failover: leader kills.")
@click.option("--memory-keys", default=1_000_000, show_default=True, type=click.IntRange(min=1),
              help="memory: keys loaded before RSS is read.")
@click.option("--sample-interval", default=5.0, show_default=True, type=click.FloatRange(min=0.1),
              help="soak: seconds between two samples of every member's RSS and open files.")
@click.option("--op-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds before one operation counts as an error.")
@click.option("--tls", is_flag=True,
              help="The kvstore cluster the benchmark starts serves TLS (certificates made for it), so the cost "
                   "of TLS is the difference from a run without; not with --endpoints.")
@click.option("--seed", default=1, show_default=True, type=int, help="Seeds the key choices of every process.")
@click.option("--output", "-o", "output", default="bench-results", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help=f"Directory for {JSON_FILE}, {THROUGHPUT_PNG}, {TIMELINE_PNG}, {LATENCY_PNG} and {SOAK_PNG}.")
def bench(workloads: str, targets: str, duration: float, warmup: float, concurrency: int, processes: int,
          keys: int, value_size: int, distribution: str, read_consistency: str, endpoints: str, partitions: int,
          kills: int, memory_keys: int, sample_interval: float, op_timeout: float, tls: bool, seed: int,
          output: Path) -> None:
    """Benchmark kvstore side by side with etcd: same load generator, processes and concurrency.

    \b
    Prints a table per workload (ops/s, p50/p99/p99.9 latency, kvstore/etcd ratio) and writes
    the JSON records and PNG plots to --output. Targets run one after the other. Progress goes
    to stderr: a live display on a terminal, timestamped lines otherwise.
    \b
    Examples:
      kvctl bench -w put,get,a,b --duration 30 --concurrency 128 --processes 3
      kvctl bench -w f --distribution zipfian --target kvstore
      kvctl bench -w failover,memory --memory-keys 200000
      kvctl bench -w soak --target kvstore --warmup 60 --duration 600   # is memory flat?
      kvctl bench -w put,get --target kvstore --tls      # compare with the same run without --tls
    """
    if partitions <= 0 or partitions & (partitions - 1):
        raise click.BadParameter(f"must be a power of two, got {partitions}", param_hint="--partitions")
    if tls and endpoints:
        raise click.BadParameter("applies to the cluster the benchmark starts, not to one given with --endpoints",
                                 param_hint="--tls")
    if processes > concurrency:
        raise click.BadParameter(f"{processes} processes need at least as many outstanding operations",
                                 param_hint="--processes")
    config = BenchConfig(
        workloads=_names(workloads, [*WORKLOADS, *SCENARIOS], "--workload"),
        targets=tuple(TargetKind(t) for t in _names(targets, [t.value for t in TargetKind], "--target")),
        endpoints=tuple(e.strip() for e in endpoints.split(",") if e.strip()),
        duration_s=duration, warmup_s=warmup, concurrency=concurrency, processes=processes, keys=keys,
        value_size=value_size, distribution=Distribution(distribution),
        consistency=ReadConsistency[read_consistency.upper()], partitions=partitions, kills=kills,
        memory_keys=memory_keys, op_timeout_s=op_timeout, seed=seed, output=output, tls=tls,
        sample_interval_s=sample_interval,
    )
    console = Console()
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        with ConsoleProgress(Console(stderr=True)) as progress:
            report = run_bench(config, progress)
    except BenchError as error:
        click.echo(f"kvctl: {error}", err=True)
        sys.exit(ExitCode.UNAVAILABLE)
    finally:
        signal.signal(signal.SIGTERM, previous)
    for table in tables(report):
        console.print(table)
    plots = [THROUGHPUT_PNG, TIMELINE_PNG, LATENCY_PNG] if report.workloads else []
    plots += [SOAK_PNG] if report.soaks else []
    written = f"results: {output / JSON_FILE}"
    console.print(f"{written}; plots: {', '.join(str(output / p) for p in plots)}" if plots else written)
