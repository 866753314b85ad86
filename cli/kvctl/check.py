"""`kvctl check`: check a recorded history for linearizability."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from kvctl.exitcodes import ExitCode
from kvstore.jepsen import checker
from kvstore.jepsen.edn import read_edn
from kvstore.jepsen.history import (
    Event,
    HistoryError,
    Operation,
    Value,
    freeze,
    pair_operations,
    read_jsonl,
    render_key,
)
from kvstore.jepsen.models import MODEL_NAMES, Model, model_named
from kvstore.jepsen.timeline import render_timeline

_MAX_STATES_SHOWN = 10


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
    epilog="\b\nExit codes:\n  0  linearizable\n  1  not linearizable\n"
    "  2  unknown (timed out) or unusable input (bad usage, unreadable or malformed file)",
)
@click.argument("history_file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--model", "model_name", type=click.Choice(MODEL_NAMES), required=True, help="What the history is of."
)
@click.option(
    "--initial", default="null", show_default=True, metavar="JSON", help="The value every key starts with."
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
    initial: str,
    timeout: float | None,
    history_format: str,
    html_path: Path | None,
) -> None:
    """Check that the history in FILE is linearizable.

    FILE holds one event per line (JSON lines, or Jepsen's EDN maps). Keys are checked one at a
    time; the last line of the output is the verdict.
    """
    model = model_named(model_name)
    operations = _load_operations(history_file, history_format)
    initial_value = _parse_initial(initial)
    try:
        result = checker.check(operations, model, initial_value, timeout=timeout)
    except HistoryError as error:
        raise _UnusableInput(f"{history_file}: {error}") from None
    except ValueError as error:
        raise _UnusableInput(f"--initial: {error}") from None

    click.echo(
        f"checked {result.keys_checked} of {result.keys_total} keys ({result.operations_checked} operations) "
        f"in {result.elapsed:.2f}s with the {model.name} model"
    )
    if result.verdict is checker.Verdict.NOT_LINEARIZABLE:
        _print_violation(result, model)
        if html_path is not None:
            _write_timeline(html_path, render_timeline(result, operations, model))
    elif html_path is not None:
        click.echo(f"no violation to draw: {html_path} not written")
    click.echo(_verdict_line(result))
    sys.exit(_exit_code(result.verdict))


def _load_operations(path: Path, history_format: str) -> list[Operation]:
    edn = history_format == "edn" or (history_format == "auto" and path.suffix.lower() == ".edn")
    try:
        events: list[Event] = read_edn(path) if edn else read_jsonl(path)
        return pair_operations(events)
    except HistoryError as error:
        raise _UnusableInput(f"{path}: {error}") from None
    except OSError as error:
        raise _UnusableInput(f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise _UnusableInput(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


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


def _print_operations(operations: Sequence[Operation], culprit: Operation) -> None:
    rows = [
        (
            str(op.process),
            op.describe(),
            op.outcome.value,
            str(op.invoke_line),
            "-" if op.complete_line is None else str(op.complete_line),
            "<- cannot be linearized" if op.id == culprit.id else "",
        )
        for op in operations
    ]
    header = ("process", "operation", "outcome", "invoke", "complete", "")
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    for row in [header, *rows]:
        click.echo(
            "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _lines(op: Operation) -> str:
    return f"{op.invoke_line}-{op.complete_line if op.complete_line is not None else '?'}"


def _write_timeline(path: Path, html: str) -> None:
    try:
        path.write_text(html, encoding="utf-8")
    except OSError as error:
        # The verdict still stands and is what scripts act on; say what went wrong and go on.
        click.echo(f"kvctl check: cannot write {path}: {error.strerror or error}", err=True)
        return
    click.echo(f"timeline written to {path}")


def _verdict_line(result: checker.CheckResult) -> str:
    if result.verdict is checker.Verdict.LINEARIZABLE:
        return "linearizable"
    if result.verdict is checker.Verdict.NOT_LINEARIZABLE:
        return (
            "NOT linearizable" if result.key is None else f"NOT linearizable (key {render_key(result.key)})"
        )
    return f"unknown: timed out after {result.timeout or 0:g}s"


def _exit_code(verdict: checker.Verdict) -> ExitCode:
    if verdict is checker.Verdict.LINEARIZABLE:
        return ExitCode.OK
    if verdict is checker.Verdict.NOT_LINEARIZABLE:
        return ExitCode.NOT_LINEARIZABLE
    return ExitCode.UNKNOWN
