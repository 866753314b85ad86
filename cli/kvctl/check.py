"""`kvctl check`: check a recorded history for linearizability, or for the session and staleness
guarantees."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, NoReturn

import click
from rich.console import Console

from kvctl.exitcodes import ExitCode
from kvctl.progress import ConsoleProgress
from kvstore.jepsen import checker
from kvstore.jepsen.checker import Validity
from kvstore.jepsen.edn import parse_edn
from kvstore.jepsen.guarantees import (
    GUARANTEE_NAMES,
    SESSION,
    Anomaly,
    GuaranteeResult,
    check_guarantee,
    count_anomalies,
)
from kvstore.jepsen.history import (
    HistoryError,
    Operation,
    Value,
    freeze,
    pair_operations,
    parse_jsonl,
    render_key,
)
from kvstore.jepsen.models import MODEL_NAMES, Model, model_named
from kvstore.jepsen.timeline import render_anomaly_timeline, render_timeline
from kvstore.progress import Progress

_MAX_STATES_SHOWN = 10
_MAX_ANOMALIES_SHOWN = 10
_BYTES_PER_MB = 1_000_000
_LINES_PER_PROGRESS_UPDATE = 10_000
SHOW_PROGRESS_AFTER_S = 1.0
CHECKABLE = (*MODEL_NAMES, *GUARANTEE_NAMES)


class _UnusableInput(click.ClickException):
    """Bad usage or a bad file: one line on stderr and the same exit code as an unknown verdict."""

    exit_code = ExitCode.UNKNOWN


class _CheckCommand(click.Command):
    """Reports usage errors on one line, like every other error of this command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as error:
            message = " ".join(error.format_message().split())  # click wraps choice lists over lines
            raise _UnusableInput(f"{message} (see 'kvctl check --help')") from None


@click.command(
    cls=_CheckCommand,
    epilog="\b\nExit codes:\n  0  valid (linearizable, or the session/staleness guarantees hold)\n"
    "  1  violation (not linearizable, or an anomaly)\n"
    "  2  unknown (timed out, or the history lacks what the checker needs) or unusable input\n"
    "     (bad usage, unreadable or malformed file)",
)
@click.argument("history_file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--model",
    "model_name",
    type=click.Choice(CHECKABLE),
    required=True,
    help="What to check the history against: a model for linearizability, or the session or "
    "staleness guarantees (these need the history's revisions).",
)
@click.option(
    "--initial",
    default=None,
    metavar="JSON",
    help="The value every key starts with (linearizability models only).  [default: null]",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Give up after this long (verdict unknown). No limit by default.",
)
@click.option(
    "--format",
    "history_format",
    type=click.Choice(["auto", "jsonl", "edn"]),
    default="auto",
    show_default=True,
    help="History format; auto means EDN for a .edn file, JSON lines otherwise.",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write an HTML timeline of the key with the violation.",
)
def check(
    history_file: Path,
    model_name: str,
    initial: str | None,
    timeout: float | None,
    history_format: str,
    html_path: Path | None,
) -> None:
    """Check the history in FILE: linearizable, or keeping the session or staleness guarantees.

    FILE holds one event per line (JSON lines, or Jepsen's EDN maps). Keys are checked one at a
    time; the last line of the output is the verdict.

    \b
    --model session    read-your-writes, monotonic reads and monotonic writes per process
    --model staleness  every read with a staleness bound returned a value no older than it allows

    \b
    Examples:
      kvctl check --model cas-register history.jsonl --html timeline.html
      kvctl check --model session history.jsonl
    """
    guarantee = model_name in GUARANTEE_NAMES
    if guarantee and initial is not None:
        raise _UnusableInput(f"--initial does not apply to --model {model_name} (it checks revisions)")
    initial_value = _parse_initial("null" if initial is None else initial)
    # Progress goes to stderr, and only once the work has taken a while: quick checks stay quiet.
    with ConsoleProgress(Console(stderr=True), show_after_s=SHOW_PROGRESS_AFTER_S) as progress:
        operations = _load_operations(history_file, history_format, progress)
        progress.phase(f"checking ({model_name})", unit="keys")
        try:
            if guarantee:
                outcome: GuaranteeResult | checker.CheckResult = check_guarantee(
                    model_name, operations, timeout=timeout, progress=progress
                )
            else:
                outcome = checker.check(
                    operations, model_named(model_name), initial_value, timeout=timeout, progress=progress
                )
        except HistoryError as error:
            raise _UnusableInput(f"{history_file}: {error}") from None
        except ValueError as error:
            raise _UnusableInput(f"--initial: {error}") from None
    if isinstance(outcome, GuaranteeResult):
        _report_guarantee(outcome, operations, html_path)
    _report_linearizability(outcome, operations, model_named(model_name), html_path)


def _report_linearizability(
    result: checker.CheckResult, operations: list[Operation], model: Model, html_path: Path | None
) -> NoReturn:
    _echo_checked(result.keys_checked, result.keys_total, result.operations_checked, result.elapsed,
                  f"the {model.name} model")  # fmt: skip
    violation = result.verdict is checker.Verdict.NOT_LINEARIZABLE
    if violation:
        _print_violation(result, model)
    _timeline(html_path, render_timeline(result, operations, model) if violation else None)
    click.echo(_verdict_line(result))
    sys.exit(_exit_code(result.verdict.validity))


def _report_guarantee(result: GuaranteeResult, operations: list[Operation], html_path: Path | None) -> NoReturn:
    _echo_checked(result.keys_checked, result.keys_total, result.operations_checked, result.elapsed,
                  f"the {result.checker} checker")  # fmt: skip
    if result.anomalies:
        _print_anomalies(result.anomalies)
    first = result.anomalies[0] if result.anomalies else None
    _timeline(html_path, None if first is None else render_anomaly_timeline(first, operations, result.checker))
    click.echo(_guarantee_verdict_line(result))
    sys.exit(_exit_code(result.validity))


def _echo_checked(keys_checked: int, keys_total: int, operations: int, elapsed: float, what: str) -> None:
    click.echo(f"checked {keys_checked} of {keys_total} keys ({operations} operations) in {elapsed:.2f}s with {what}")


def _timeline(html_path: Path | None, html: str | None) -> None:
    """Write the violation's timeline where --html asked for it, or say there is none."""
    if html_path is None:
        return
    if html is None:
        click.echo(f"no violation to draw: {html_path} not written")
        return
    try:
        html_path.write_text(html, encoding="utf-8")
    except OSError as error:
        # The verdict still stands and is what scripts act on; say what went wrong and go on.
        click.echo(f"kvctl check: cannot write {html_path}: {error.strerror or error}", err=True)
        return
    click.echo(f"timeline written to {html_path}")


def _load_operations(path: Path, history_format: str, progress: Progress) -> list[Operation]:
    edn = history_format == "edn" or (history_format == "auto" and path.suffix.lower() == ".edn")
    try:
        size_mb = path.stat().st_size / _BYTES_PER_MB
        progress.phase(f"loading {path.name}", total=size_mb, unit="MB")
        with path.open("rb") as raw:
            lines = _reporting_lines(io.TextIOWrapper(raw, encoding="utf-8"), raw, progress)
            events = parse_edn(lines) if edn else parse_jsonl(lines)
        progress.update(size_mb, detail=f"{len(events):,} events")
        return pair_operations(events)
    except HistoryError as error:
        raise _UnusableInput(f"{path}: {error}") from None
    except OSError as error:
        raise _UnusableInput(f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise _UnusableInput(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def _reporting_lines(text: Iterable[str], raw: BinaryIO, progress: Progress) -> Iterator[str]:
    """The lines of ``text``, telling ``progress`` how far into the file they are as they go."""
    for number, line in enumerate(text, start=1):
        if number % _LINES_PER_PROGRESS_UPDATE == 0:
            progress.update(raw.tell() / _BYTES_PER_MB, detail=f"{number:,} lines")
        yield line


def _parse_initial(text: str) -> Value:
    try:
        return freeze(json.loads(text))
    except json.JSONDecodeError as error:
        raise _UnusableInput(f"--initial is not a JSON value: {error.msg}") from None
    except HistoryError as error:
        raise _UnusableInput(f"--initial: {error.message}") from None


def _print_violation(result: checker.CheckResult, model: Model) -> None:
    key = "" if result.key is None else f"key {render_key(result.key)}: "
    culprit = result.culprit
    if culprit is None:
        click.echo(f"{key}not linearizable; timed out before narrowing down the operations involved")
        return
    click.echo(
        f"{key}cannot linearize '{culprit.describe()}' of process {culprit.process} "
        f"(lines {_lines(culprit)}); shortest failing prefix ends at line {culprit.complete_line}"
    )
    click.echo(f"window ({len(result.window)} operations, in invoke order):")
    _print_operations(result.window, culprit)
    shown = result.states_tried[:_MAX_STATES_SHOWN]
    click.echo(f"states it was tried in ({len(result.states_tried)}):")
    for stuck in shown:
        after = (
            "initial state"
            if stuck.after is None
            else f"after '{stuck.after.describe()}' of process {stuck.after.process}, lines {_lines(stuck.after)}"
        )
        click.echo(f"  {model.describe_state(stuck.state)}  ({after})")
    if len(result.states_tried) > len(shown):
        click.echo(f"  ... and {len(result.states_tried) - len(shown)} more")


def _print_anomalies(anomalies: Sequence[Anomaly]) -> None:
    click.echo(count_anomalies(anomalies))
    first = anomalies[0]
    click.echo(first.explanation)
    click.echo(f"window ({len(first.window)} operations, in invoke order):")
    _print_operations(first.window, first.culprit, "<- breaks the guarantee")
    shown = anomalies[1:_MAX_ANOMALIES_SHOWN]
    if shown:
        click.echo("other anomalies:")
    for anomaly in shown:
        click.echo(f"  {anomaly.explanation}")
    if len(anomalies) > _MAX_ANOMALIES_SHOWN:
        click.echo(f"  ... and {len(anomalies) - _MAX_ANOMALIES_SHOWN} more")


def _print_operations(
    operations: Sequence[Operation], culprit: Operation, mark: str = "<- cannot be linearized"
) -> None:
    # Revisions decide the session and staleness checks: show them when the history has them.
    revisions = any(op.revision is not None for op in operations)
    rows = [
        (
            str(op.process),
            op.describe(),
            op.outcome.value,
            str(op.invoke_line),
            "-" if op.complete_line is None else str(op.complete_line),
            *((("-" if op.revision is None else str(op.revision)),) if revisions else ()),
            mark if op.id == culprit.id else "",
        )
        for op in operations
    ]
    header = ("process", "operation", "outcome", "invoke", "complete", *(("revision",) if revisions else ()), "")
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    for row in [header, *rows]:
        click.echo(
            "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _lines(op: Operation) -> str:
    return f"{op.invoke_line}-{op.complete_line if op.complete_line is not None else '?'}"


def _verdict_line(result: checker.CheckResult) -> str:
    if result.verdict is checker.Verdict.LINEARIZABLE:
        return "linearizable"
    if result.verdict is checker.Verdict.NOT_LINEARIZABLE:
        return (
            "NOT linearizable" if result.key is None else f"NOT linearizable (key {render_key(result.key)})"
        )
    return f"unknown: timed out after {result.timeout or 0:g}s"


def _guarantee_verdict_line(result: GuaranteeResult) -> str:
    if result.validity is Validity.UNKNOWN:
        return f"unknown: {result.reason}"
    if result.checker == SESSION:
        if result.validity is Validity.VALID:
            return "session guarantees hold"
        first = result.anomalies[0]
        return f"session guarantees VIOLATED (key {render_key(first.key)}: {first.kind})"
    if result.validity is Validity.VALID:
        return "every bounded read within its bound"
    worst = result.anomalies[0]
    return f"staleness bound EXCEEDED by {worst.excess_ms:,.1f} ms (key {render_key(worst.key)}: {worst.kind})"


def _exit_code(validity: Validity) -> ExitCode:
    if validity is Validity.VALID:
        return ExitCode.OK
    if validity is Validity.INVALID:
        return ExitCode.VIOLATION
    return ExitCode.UNKNOWN
