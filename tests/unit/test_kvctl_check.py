"""`kvctl check` as users and scripts see it: output, last-line verdict, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from kvctl.main import cli


def write_history(path: Path, *events: dict[str, object]) -> Path:
    path.write_text("".join(json.dumps(event) + "\n" for event in events), encoding="utf-8")
    return path


def event(process: int, event_type: str, f: str, value: object = None, **extra: object) -> dict[str, object]:
    return {"process": process, "type": event_type, "f": f, "value": value, **extra}


STALE_READ = (
    event(0, "invoke", "write", 1, key="k1"),
    event(0, "ok", "write", 1, key="k1"),
    event(1, "invoke", "write", 2, key="k1"),
    event(1, "ok", "write", 2, key="k1"),
    event(2, "invoke", "read", key="k1"),
    event(2, "ok", "read", 1, key="k1"),
)


def run(*arguments: str | Path) -> Result:
    return CliRunner().invoke(cli, ["check", *map(str, arguments)])


def last_line(result: Result) -> str:
    return result.output.rstrip("\n").splitlines()[-1]


def test_linearizable_history_exits_0(tmp_path: Path) -> None:
    path = write_history(
        tmp_path / "h.jsonl", *STALE_READ[:4], event(2, "invoke", "read"), event(2, "ok", "read")
    )
    result = run("--model", "register", path)
    assert result.exit_code == 0
    assert last_line(result) == "linearizable"
    assert result.stdout.startswith("checked 2 of 2 keys (3 operations)")


def test_violation_exits_1_and_explains_itself(tmp_path: Path) -> None:
    result = run("--model", "cas-register", write_history(tmp_path / "h.jsonl", *STALE_READ))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[-1] == "NOT linearizable (key k1)"
    assert "key k1: cannot linearize 'read → 1' of process 2 (lines 5-6)" in lines[1]
    assert any(line.split() == ["1", "write", "2", "ok", "3", "4"] for line in lines)
    assert any(
        line.split()[:6] == ["2", "read", "→", "1", "ok", "5"] and "cannot be linearized" in line
        for line in lines
    )
    assert "  2  (after 'write 2' of process 1, lines 3-4)" in lines


def test_html_timeline_of_the_violating_key(tmp_path: Path) -> None:
    html_path = tmp_path / "timeline.html"
    result = run("--model", "register", write_history(tmp_path / "h.jsonl", *STALE_READ), "--html", html_path)
    assert result.exit_code == 1
    assert f"timeline written to {html_path}" in result.stdout
    html = html_path.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert html.count('class="culprit"') == 1 and html.count('class="window"') == 1
    assert "process 0" in html and "process 2" in html
    assert "<script" not in html and "<link" not in html  # self-contained


def test_html_is_not_written_without_a_violation(tmp_path: Path) -> None:
    html_path = tmp_path / "timeline.html"
    result = run(
        "--model", "register", write_history(tmp_path / "h.jsonl", *STALE_READ[:2]), "--html", html_path
    )
    assert result.exit_code == 0
    assert not html_path.exists()


def test_timeout_gives_unknown_and_exit_2(tmp_path: Path) -> None:
    result = run("--model", "register", write_history(tmp_path / "h.jsonl", *STALE_READ), "--timeout", "0")
    assert result.exit_code == 2
    assert last_line(result) == "unknown: timed out after 0s"


def test_initial_value_is_json(tmp_path: Path) -> None:
    path = write_history(tmp_path / "h.jsonl", event(0, "invoke", "read"), event(0, "ok", "read", [1, "a"]))
    assert run("--model", "register", path, "--initial", '[1, "a"]').exit_code == 0
    assert run("--model", "register", path).exit_code == 1


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"process": 0, "type": "invoke", "f": "read"}', "{not json"], "h.jsonl: line 2: invalid JSON"),
        (['{"process": 0, "type": "begin", "f": "read"}'], "h.jsonl: line 1: unknown type 'begin'"),
        (
            ['{"process": 0, "type": "ok", "f": "read"}'],
            "h.jsonl: line 1: ok completion of process 0 without an invoke",
        ),
        (
            [
                '{"process": 0, "type": "invoke", "f": "read"}',
                '{"process": 0, "type": "invoke", "f": "read"}',
            ],
            "h.jsonl: line 2: process 0 invokes while its read from line 1 is still outstanding",
        ),
        (
            ['{"process": 0, "type": "invoke", "f": "add", "value": 1}'],
            "h.jsonl: line 1: operation 'add' is not part",
        ),
    ],
)
def test_malformed_history_is_one_line_error_with_exit_2(
    tmp_path: Path, lines: list[str], message: str
) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run("--model", "register", path)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert message in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("HISTORY",), "Missing option '--model'. Choose from: register, cas-register, set, mutex"),
        (("--model", "queue", "HISTORY"), "'queue' is not one of"),
        (("--model", "register", "MISSING"), "missing.jsonl: No such file or directory"),
        (("--model", "register", "HISTORY", "--initial", "{oops"), "--initial is not a JSON value"),
        (("--model", "set", "HISTORY", "--initial", "3"), "the initial value of a set must be a list"),
        (("--model", "register", "HISTORY", "--timeout", "-1"), "--timeout"),
    ],
)
def test_bad_usage_is_one_line_error_with_exit_2(
    tmp_path: Path, arguments: tuple[str, ...], message: str
) -> None:
    paths = {
        "HISTORY": str(write_history(tmp_path / "h.jsonl", *STALE_READ[:2])),
        "MISSING": str(tmp_path / "missing.jsonl"),
    }
    result = run(*(paths.get(argument, argument) for argument in arguments))
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1
    assert message in result.stderr


EDN_STALE_READ = """\
{:process 0, :type :invoke, :f :write, :value 1}
{:process 0, :type :ok, :f :write, :value 1}
{:process 1, :type :invoke, :f :read, :value nil}
{:process 1, :type :ok, :f :read, :value nil}
"""


def test_edn_is_detected_by_extension(tmp_path: Path) -> None:
    path = tmp_path / "history.edn"
    path.write_text(EDN_STALE_READ, encoding="utf-8")
    result = run("--model", "register", path)
    assert result.exit_code == 1
    assert last_line(result) == "NOT linearizable"


def test_edn_format_can_be_forced(tmp_path: Path) -> None:
    path = tmp_path / "history.txt"
    path.write_text(EDN_STALE_READ, encoding="utf-8")
    assert run("--model", "register", path).exit_code == 2  # read as JSON lines by default
    assert run("--model", "register", path, "--format", "edn").exit_code == 1


def test_mutex_double_acquire_via_the_command_line(tmp_path: Path) -> None:
    path = write_history(
        tmp_path / "locks.jsonl",
        event(0, "invoke", "acquire", key="l"),
        event(0, "ok", "acquire", key="l"),
        event(1, "invoke", "acquire", key="l"),
        event(1, "ok", "acquire", key="l"),
    )
    result = run("--model", "mutex", path)
    assert result.exit_code == 1
    assert "  held by process 0  (after 'acquire' of process 0, lines 1-2)" in result.stdout.splitlines()


# --- session and staleness guarantees ----------------------------------------------------------------

MS = 1_000_000

SESSION_HISTORY = (
    event(0, "invoke", "write", 1, key="k1", time=0),
    event(0, "ok", "write", 1, key="k1", revision=5, time=10 * MS),
    event(1, "invoke", "write", 2, key="k1", time=20 * MS),
    event(1, "ok", "write", 2, key="k1", revision=6, time=30 * MS),
    event(1, "invoke", "read", key="k1", time=40 * MS),
    event(1, "ok", "read", 2, key="k1", revision=6, time=50 * MS, staleness_ms=0),
)
# Process 0 then reads the version before its own write, from a replica 200 ms behind.
READ_BEFORE_OWN_WRITE = (
    event(0, "invoke", "read", key="k1", time=300 * MS),
    event(0, "ok", "read", None, key="k1", revision=0, time=310 * MS, staleness_ms=200),
)


def test_session_guarantees_hold(tmp_path: Path) -> None:
    result = run("--model", "session", write_history(tmp_path / "h.jsonl", *SESSION_HISTORY))
    assert result.exit_code == 0
    assert result.stdout.startswith("checked 1 of 1 keys (3 operations)")
    assert "with the session checker" in result.stdout
    assert last_line(result) == "session guarantees hold"


def test_session_violation_shows_the_operations_and_their_revisions(tmp_path: Path) -> None:
    path = write_history(tmp_path / "h.jsonl", *SESSION_HISTORY, *READ_BEFORE_OWN_WRITE)
    result = run("--model", "session", path)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[1] == "1 anomaly: read-your-writes 1"
    assert lines[2].startswith("read-your-writes: process 0 read revision 0 after its own write 1")
    assert lines[4].split() == ["process", "operation", "outcome", "invoke", "complete", "revision"]
    assert lines[5].split() == ["0", "write", "1", "ok", "1", "2", "5"]
    assert lines[6].split()[:7] == ["0", "read", "→", "null", "ok", "7", "8"]
    assert lines[6].endswith("<- breaks the guarantee")
    assert lines[-1] == "session guarantees VIOLATED (key k1: read-your-writes)"


def test_staleness_reports_the_worst_excess_and_draws_it(tmp_path: Path) -> None:
    html_path = tmp_path / "stale.html"
    path = write_history(tmp_path / "h.jsonl", *SESSION_HISTORY, *READ_BEFORE_OWN_WRITE)
    result = run("--model", "staleness", path, "--html", html_path)
    assert result.exit_code == 1
    # Absent until the write completed at 10 ms; the read (300 ms, bound 200 ms) may look back to 100 ms.
    assert last_line(result) == "staleness bound EXCEEDED by 90.0 ms (key k1: stale-read)"
    html = html_path.read_text(encoding="utf-8")
    assert html.count('class="culprit"') == 1 and "breaks the guarantee" in html and "stale-read" in html


def test_staleness_within_the_bound(tmp_path: Path) -> None:
    result = run("--model", "staleness", write_history(tmp_path / "h.jsonl", *SESSION_HISTORY))
    assert result.exit_code == 0
    assert last_line(result) == "every bounded read within its bound"


@pytest.mark.parametrize(
    ("model", "verdict"),
    [
        ("session", "unknown: cannot check: the write of process 0 (lines 1-2) has no revision"),
        ("staleness", "unknown: cannot check: no read carries a staleness bound"),
    ],
)
def test_history_without_revisions_or_bounds_is_unknown(tmp_path: Path, model: str, verdict: str) -> None:
    result = run("--model", model, write_history(tmp_path / "h.jsonl", *STALE_READ))
    assert result.exit_code == 2
    assert last_line(result).startswith(verdict)


def test_initial_value_does_not_apply_to_revision_checkers(tmp_path: Path) -> None:
    result = run("--model", "session", write_history(tmp_path / "h.jsonl", *SESSION_HISTORY), "--initial", "0")
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: --initial does not apply to --model session (it checks revisions)"


def test_quick_checks_print_no_progress(tmp_path: Path) -> None:
    result = run("--model", "session", write_history(tmp_path / "h.jsonl", *SESSION_HISTORY))
    assert result.exit_code == 0 and result.stderr == ""


def test_long_checks_show_loading_and_checking_progress_on_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kvctl.check.SHOW_PROGRESS_AFTER_S", 0.0)  # every check counts as long
    result = run("--model", "session", write_history(tmp_path / "h.jsonl", *SESSION_HISTORY))
    assert result.exit_code == 0
    assert last_line(result) == "session guarantees hold"  # the verdict is still stdout's last line
    progress = [line[9:] for line in result.stderr.splitlines()]  # without the HH:MM:SS stamps
    assert progress[0] == "loading h.jsonl (0.0 MB)"
    assert progress[1].startswith("loading h.jsonl: 0.0/0.0 MB") and progress[1].endswith("· 6 events")
    assert progress[2] == "checking (session)"
    assert progress[3].startswith("checking (session): 1/1 keys") and progress[3].endswith("· 3 ops")
