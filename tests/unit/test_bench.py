"""`kvctl bench` end to end on a tiny configuration, and its key choosers.

Only the shape of the output is checked, never a timing: the machine may be busy.
"""

from __future__ import annotations

import io
import json
import random
import shutil
from collections import Counter
from pathlib import Path

from click.testing import CliRunner
from kvctl.main import cli
from rich.console import Console
from rich.table import Table

from kvstore.bench.keys import UniformChooser, ZipfianChooser
from kvstore.bench.loadgen import split
from kvstore.bench.report import (
    JSON_FILE,
    LATENCY_PNG,
    SOAK_PNG,
    THROUGHPUT_PNG,
    TIMELINE_PNG,
    SoakRecord,
    WorkloadRecord,
    cpu_table,
    machine_info,
    soak_table,
)

PNG_MAGIC = b"\x89PNG"


def test_bench_runs_end_to_end(tmp_path: Path) -> None:
    targets = ["kvstore", "etcd"] if shutil.which("etcd") else ["kvstore"]
    output = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "bench", "--workload", "put,get", "--target", ",".join(targets), "--duration", "2", "--warmup", "0.5",
        "--concurrency", "4", "--processes", "1", "--keys", "200", "--partitions", "8", "--output", str(output),
    ])
    assert result.exit_code == 0, result.output

    records = json.loads((output / JSON_FILE).read_text())["records"]
    assert {(r["workload"], r["target"]) for r in records} == {(w, t) for w in ("put", "get") for t in targets}
    for record in records:
        for field in ("ops_per_s", "p50_ms", "p99_ms", "p999_ms", "errors"):
            assert isinstance(record[field], int | float), field
        assert record["ops"] > 0 and record["errors"] == 0, record["first_error"]
        assert record["p50_ms"] <= record["p99_ms"] <= record["p999_ms"]
        # The benchmark started these clusters itself, so it measures their CPU as well as the clients'.
        assert record["server_cpu_us_per_op"] > 0 and record["client_cpu_us_per_op"] > 0, record
        assert {"platform", "cpu_count", "python", "kernel", "kvstore_build"} <= record["machine"].keys()
    for png in (THROUGHPUT_PNG, TIMELINE_PNG, LATENCY_PNG):
        assert (output / png).read_bytes().startswith(PNG_MAGIC), png
    assert "ops/s" in result.output and "p99.9 ms" in result.output and "CPU per operation" in result.output
    if "etcd" in targets:
        assert "kvstore/etcd" in result.output
    # Not a terminal: progress is timestamped lines on stderr, a line per phase and its final state.
    progress = [line[9:] for line in result.stderr.splitlines()]
    for target in targets:
        assert f"{target}: starting a 3-member cluster" in progress
        assert f"{target}: loading 200 keys (200 keys)" in progress
        assert f"{target}: put (2.5 s)" in progress
        assert any(line.startswith(f"{target}: put: 2.5/2.5 s · ") and line.endswith(" ops") for line in progress)


def test_soak_samples_every_member_while_writing(tmp_path: Path) -> None:
    """A smoke test of the soak: the figures it measures go to benchmarks/RESULTS.md, not here."""
    output = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "bench", "--workload", "soak", "--target", "kvstore", "--duration", "2", "--warmup", "0.5",
        "--sample-interval", "0.25", "--concurrency", "4", "--processes", "1", "--keys", "100", "--partitions", "8",
        "--output", str(output),
    ])
    assert result.exit_code == 0, result.output

    (record,) = json.loads((output / JSON_FILE).read_text())["records"]
    assert record["workload"] == "soak" and record["target"] == "kvstore"
    assert record["ops"] > 0 and record["errors"] == 0, record["first_error"]
    samples = len(record["at_s"])
    assert samples >= 3 and record["at_s"] == sorted(record["at_s"])
    assert len(record["rss_mb"]) == len(record["open_files"]) == 3  # every member
    for rss, files in zip(record["rss_mb"], record["open_files"], strict=True):
        assert len(rss) == len(files) == samples
        assert all(mb > 0 for mb in rss) and all(count > 0 for count in files)  # read while the nodes ran
    assert record["ops_at"][-1] >= record["ops"]  # the warm-up's writes are sampled too
    assert (output / SOAK_PNG).read_bytes().startswith(PNG_MAGIC)
    assert "soak: puts for" in result.output and str(output / SOAK_PNG) in result.output


def soak_record(rss_mb: tuple[tuple[float, ...], ...]) -> SoakRecord:
    at_s = tuple(30.0 * i for i in range(len(rss_mb[0])))
    return SoakRecord(
        workload="soak", target="kvstore", duration_s=at_s[-1] - 30, warmup_s=30.0, interval_s=30.0, concurrency=8,
        processes=1, keys=100, value_size=100, ops=1000, errors=0, first_error="", measure_from_s=30.0, at_s=at_s,
        rss_mb=rss_mb, open_files=tuple((20,) * len(at_s) for _ in rss_mb), ops_at=tuple(range(len(at_s))),
        load_avg_1m=0.5, machine=machine_info(),
    )


def test_soak_growth_is_the_slope_after_the_warm_up() -> None:
    # Member 1 grows during the warm-up only; member 2 keeps growing by 1 MB per 30 s sample.
    record = soak_record(((50.0, 90.0, 90.0, 90.0, 90.0), (50.0, 60.0, 61.0, 62.0, 63.0)))
    assert record.rss_after_warmup_mb(0) == 90.0 and record.growth_mb_per_min(0) == 0.0
    assert record.rss_after_warmup_mb(1) == 60.0 and abs(record.growth_mb_per_min(1) - 2.0) < 1e-9
    text = rendered(soak_table([record]))
    assert "+0.00" in text and "+2.00" in text


def test_zipfian_is_skewed_deterministic_and_in_range() -> None:
    keys = 1000
    chooser = ZipfianChooser(keys, random.Random(7))
    draws = [chooser.next_index() for _ in range(20_000)]
    again = ZipfianChooser(keys, random.Random(7))
    assert draws == [again.next_index() for _ in range(20_000)]
    assert all(0 <= d < keys for d in draws)
    top_ten = sum(count for _, count in Counter(draws).most_common(10))
    assert top_ten > 0.3 * len(draws)  # theta 0.99: the 10 hottest of 1000 keys get about 40%
    # Scrambled: the hottest keys are not simply the first key names.
    assert {key for key, _ in Counter(draws).most_common(3)} != {0, 1, 2}


def test_uniform_covers_the_key_space() -> None:
    chooser = UniformChooser(50, random.Random(1))
    assert {chooser.next_index() for _ in range(5000)} == set(range(50))


def test_concurrency_is_split_over_processes() -> None:
    assert split(128, 3) == [43, 43, 42]
    assert sum(split(7, 4)) == 7


def workload_record(target: str, workload: str = "put") -> WorkloadRecord:
    return WorkloadRecord(
        workload=workload, target=target, ops_per_s=1000.0, p50_ms=1.0, p99_ms=2.0, p999_ms=3.0, max_ms=4.0,
        mean_ms=1.2, server_cpu_us_per_op=900.0, client_cpu_us_per_op=250.0, ops=30_000, errors=0, cas_failures=0,
        first_error="", duration_s=30.0, warmup_s=1.0, concurrency=128, processes=3, distribution="uniform",
        keys=10_000, value_size=100, read_consistency="linearizable", load_avg_1m=0.5, per_second=(1000,) * 30,
        histogram="", machine=machine_info(),
    )


def rendered(table: Table) -> str:
    console = Console(file=io.StringIO(), width=300)
    console.print(table)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_cpu_table_names_only_the_targets_that_ran() -> None:
    text = rendered(cpu_table([workload_record("kvstore"), workload_record("kvstore", "get")]))
    assert "etcd" not in text and "ratio =" not in text
    assert "kvstore servers" in text and "kvstore clients" in text


def test_cpu_table_compares_kvstore_with_etcd_when_both_ran() -> None:
    text = rendered(cpu_table([workload_record("kvstore"), workload_record("etcd")]))
    assert "ratio = kvstore/etcd" in text
    assert "etcd servers" in text and "1.00×" in text
