"""The Jepsen run report as a reader sees it: settings by name, verdicts, results.json, the lock
workload's critical sections."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from kvstore.client import ReadConsistency
from kvstore.jepsen.nemesis import EventPhase, NemesisEvent, NemesisKind
from kvstore.jepsen.report import render_index, results_document, write_report
from kvstore.jepsen.runner import ExitStatus, RunConfig, RunResult
from kvstore.jepsen.workloads import CheckOutcome, Validity


def run_result(tmp_path: Path, **overrides: object) -> RunResult:
    config = dataclasses.replace(
        RunConfig(
            workload="register",
            nemeses=(NemesisKind.KILL, NemesisKind.PAUSE),
            time_s=20,
            out_dir=tmp_path / "run",
            read_consistency=ReadConsistency.LINEARIZABLE,
        ),
        **overrides,  # type: ignore[arg-type]
    )
    outcome = CheckOutcome("linearizable", Validity.VALID, "linearizable")
    return RunResult(config, ExitStatus.VALID, (outcome,), None, {"read": {"ok": 3}}, 2, 21.5)


def settings(html: str) -> dict[str, str]:
    section = html.split("<h2>Settings</h2>", 1)[1]
    return dict(re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td></tr>", section))


def test_settings_show_names_not_enum_numbers_or_python_lists(tmp_path: Path) -> None:
    shown = settings(render_index(run_result(tmp_path), [], []))
    assert shown["read_consistency"] == "linearizable"
    assert shown["nemeses"] == "kill, pause"
    assert shown["intervals"] == "healthy 2–4 s, faulty 3–6 s"
    assert shown["workload"] == "register" and shown["time_s"] == "20"


def test_settings_of_a_run_without_faults_and_with_stale_reads(tmp_path: Path) -> None:
    result = run_result(tmp_path, nemeses=(), read_consistency=ReadConsistency.STALE)
    shown = settings(render_index(result, [], []))
    assert shown["nemeses"] == "none"
    assert shown["read_consistency"] == "stale"


def test_results_json_names_the_read_level(tmp_path: Path) -> None:
    config = results_document(run_result(tmp_path))["config"]
    assert config["read_consistency"] == "linearizable"
    assert config["nemeses"] == ["kill", "pause"]


def test_each_checker_with_a_violation_gets_its_timeline_linked_from_the_index(tmp_path: Path) -> None:
    violations = (
        CheckOutcome("linearizable", Validity.INVALID, "NOT linearizable", {}, "<html>lin</html>"),
        CheckOutcome("session", Validity.INVALID, "1 anomaly", {}, "<html>session</html>"),
        CheckOutcome("staleness", Validity.VALID, "every bounded read within its bound"),
    )
    result = dataclasses.replace(run_result(tmp_path), status=ExitStatus.INVALID, outcomes=violations)
    result.config.out_dir.mkdir()
    write_report(result, [], [])
    out = result.config.out_dir
    assert (out / "timeline-linearizable.html").read_text() == "<html>lin</html>"
    assert (out / "timeline-session.html").read_text() == "<html>session</html>"
    assert not (out / "timeline-staleness.html").exists()
    index = (out / "index.html").read_text()
    assert '<a href="timeline-linearizable.html">' in index and '<a href="timeline-session.html">' in index


def test_a_lock_run_draws_its_critical_sections_and_links_the_workers_logs(tmp_path: Path) -> None:
    """latency.png gets one lane per worker under the latencies; the index links every worker's log."""
    from PIL import Image

    from tests.unit.test_jepsen_locks import paused_holder

    events = paused_holder(fencing=True).sorted()
    pause = [
        NemesisEvent(200 * 10**6, phase, NemesisKind.CLIENT_PAUSE, "SIGSTOP worker 0", (), (0,))
        for phase in (EventPhase.FAULT, EventPhase.HEAL)
    ]
    sizes = {}
    for workload in ("register", "lock"):
        result = run_result(tmp_path / workload, workload=workload, concurrency=2, nemeses=(NemesisKind.CLIENT_PAUSE,))
        (result.config.out_dir / "workers").mkdir(parents=True)
        (result.config.out_dir / "workers" / "worker-0.log").write_text("")
        write_report(result, events, pause)
        with Image.open(result.config.out_dir / "latency.png") as image:
            sizes[workload] = image.size
    assert sizes["lock"][0] == sizes["register"][0] and sizes["lock"][1] > sizes["register"][1]
    index = (tmp_path / "lock" / "run" / "index.html").read_text()
    assert '<a href="workers/worker-0.log">' in index
    assert settings(index)["fencing"] == "True"
