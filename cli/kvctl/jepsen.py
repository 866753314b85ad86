"""`kvctl jepsen`: run a Jepsen-style test against a throwaway cluster in network namespaces, or
clean up what a crashed run left behind."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from kvctl.progress import ConsoleProgress
from kvstore.client import ReadConsistency
from kvstore.jepsen.checker import Validity
from kvstore.jepsen.nemesis import NemesisKind
from kvstore.jepsen.netns import NetworkError, cleanup_leftovers, missing_prerequisites
from kvstore.jepsen.runner import WORKLOAD_NAMES, ExitStatus, RunConfig, RunResult, run

_VALIDITY_STYLE = {Validity.VALID: "green", Validity.INVALID: "bold red", Validity.UNKNOWN: "yellow"}


def _parse_nemeses(ctx: click.Context, param: click.Parameter, text: str) -> tuple[NemesisKind, ...]:
    kinds: list[NemesisKind] = []
    for name in filter(None, (part.strip() for part in text.split(","))):
        if name == "none":
            continue
        try:
            kinds.append(NemesisKind(name))
        except ValueError:
            choices = ", ".join(kind.value for kind in NemesisKind)
            raise click.BadParameter(f"unknown nemesis {name!r} (choose from {choices}, or none)") from None
    return tuple(dict.fromkeys(kinds))


@click.group()
def jepsen() -> None:
    """Jepsen-style tests: real nodes, real faults, checked histories (needs root)."""


@jepsen.command("run", epilog="\b\nExit codes:\n  0  every checker valid\n  1  a checker found a violation\n"
                "  2  unknown (checker timed out) or the run hit an error\n  3  could not run (e.g. not root)")  # fmt: skip
@click.option("--workload", type=click.Choice(WORKLOAD_NAMES), default="register", show_default=True)
@click.option("--nemesis", "nemeses", default="partition", show_default=True, callback=_parse_nemeses,
              help="Comma list of kill, pause, partition, clock, membership (add, replace and remove nodes "
                   "through the membership RPCs), client-pause (lock workload: stop a worker holding the lock "
                   "for longer than its lease's TTL), or none.")  # fmt: skip
@click.option("--fencing", type=click.Choice(["on", "off"]), default="on", show_default=True,
              help="Lock workload: send the lock's fencing token with every read and write of the protected "
                   "registers; off is the negative control, which client-pause must show unsafe.")  # fmt: skip
@click.option("--time", "time_s", type=click.FloatRange(min=1), default=30, show_default=True,
              help="Seconds of load (then heal and final reads).")  # fmt: skip
@click.option("--concurrency", type=click.IntRange(min=1), default=5, show_default=True,
              help="Client workers (the lock workload's are processes of their own).")  # fmt: skip
@click.option("--read-consistency", type=click.Choice([c.name.lower() for c in ReadConsistency]),
              default="linearizable", show_default=True)  # fmt: skip
@click.option("--seed", type=int, default=None, help="Seed of the op and fault choices (default: random).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory (default ./jepsen-runs/<timestamp>).")  # fmt: skip
@click.option("--nodes", type=click.Choice(["3", "5"]), default="3", show_default=True)
@click.option("--keys", type=click.IntRange(min=1), default=4, show_default=True,
              help="Register keys (register and lock workloads).")  # fmt: skip
@click.option("--partitions", type=click.IntRange(min=1), default=4, show_default=True,
              help="Partitions of the key space (a power of two).")  # fmt: skip
@click.option("--secure", is_flag=True,
              help="TLS for clients and peers, auth enabled, clients signed in as a user with readwrite on "
                   "the workload's keys only (register, set and counter workloads).")  # fmt: skip
def run_command(
    workload: str,
    nemeses: tuple[NemesisKind, ...],
    fencing: str,
    time_s: float,
    concurrency: int,
    read_consistency: str,
    seed: int | None,
    out_dir: Path | None,
    nodes: str,
    keys: int,
    partitions: int,
    secure: bool,
) -> None:
    """Start a cluster in network namespaces, run WORKLOAD while the nemeses strike, check it.

    Progress goes to stderr: a live display on a terminal, a timestamped line every few seconds
    otherwise (phases, time left, operations and faults so far, then each checker's keys).

    \b
    Examples:
      kvctl jepsen run --workload register --nemesis kill,partition --time 60
      kvctl jepsen run --workload set --nemesis membership,kill,partition --time 120
      kvctl jepsen run --workload register --secure    # the same with TLS and auth on
      kvctl jepsen run --workload lock --nemesis client-pause               # valid: fencing
      kvctl jepsen run --workload lock --nemesis client-pause --fencing off # not valid
    """
    if partitions & (partitions - 1):
        raise click.BadParameter(f"must be a power of two, got {partitions}", param_hint="--partitions")
    if NemesisKind.CLIENT_PAUSE in nemeses and workload != "lock":
        raise click.BadParameter("client-pause stops workers of the lock workload: add --workload lock",
                                 param_hint="--nemesis")  # fmt: skip
    if fencing == "off" and workload != "lock":
        raise click.BadParameter("applies to the lock workload only: add --workload lock", param_hint="--fencing")
    if secure and workload == "lock":
        raise click.BadParameter("the lock workload's worker processes do not sign in: use register, set or counter",
                                 param_hint="--secure")  # fmt: skip
    if secure and NemesisKind.MEMBERSHIP in nemeses:
        raise click.BadParameter("a node added during the run would need a certificate of its own, which the "
                                 "harness does not make: leave out the membership nemesis", param_hint="--secure")
    chosen_seed = seed if seed is not None else int(time.time_ns() % 1_000_000)
    config = RunConfig(
        workload=workload,
        nemeses=nemeses,
        time_s=time_s,
        out_dir=out_dir or Path("jepsen-runs") / time.strftime("%Y%m%d-%H%M%S"),
        concurrency=concurrency,
        read_consistency=ReadConsistency[read_consistency.upper()],
        seed=chosen_seed,
        nodes=int(nodes),
        keys=keys,
        partitions=partitions,
        fencing=fencing == "on",
        secure=secure,
    )
    console = Console()
    fenced = f" with fencing {fencing}" if workload == "lock" else ""
    console.print(
        f"kvctl jepsen: {workload}{fenced} under {','.join(nemeses) or 'no faults'} for {time_s:g}s"
        f"{', TLS and auth on' if secure else ''}, "
        f"seed {chosen_seed}, writing {config.out_dir}"
    )
    try:
        with ConsoleProgress(Console(stderr=True)) as progress:
            result = run(config, progress)
    except KeyboardInterrupt:
        console.print("interrupted: nodes, namespaces and bridge removed")
        sys.exit(ExitStatus.UNKNOWN)
    _print_summary(console, result)
    sys.exit(result.status)


def _print_summary(console: Console, result: RunResult) -> None:
    if result.status is ExitStatus.COULD_NOT_RUN:
        console.print(f"[bold red]could not run:[/] {result.error}")
        return
    table = Table(title=f"{result.config.workload}: {result.status.name.lower()}")
    table.add_column("checker")
    table.add_column("verdict")
    table.add_column("summary")
    for outcome in result.outcomes:
        style = _VALIDITY_STYLE[outcome.validity]
        table.add_row(outcome.checker, f"[{style}]{outcome.validity.value}[/]", outcome.summary)
    console.print(table)
    counts = ", ".join(
        f"{f} {'/'.join(str(per.get(kind, 0)) for kind in ('ok', 'fail', 'info'))}"
        for f, per in sorted(result.operation_counts.items())
    )
    console.print(f"operations (ok/fail/info): {counts or 'none'}; faults injected: {result.faults}")
    if result.error is not None:
        console.print(f"[yellow]error:[/] {result.error}")
    console.print(f"report: {result.config.out_dir / 'index.html'} ({result.duration_s:.0f}s)")


@jepsen.command("cleanup")
def cleanup_command() -> None:
    """Remove namespaces, veths and bridges (and their processes) left by a crashed run."""
    problem = missing_prerequisites()
    if problem is not None:
        click.echo(f"kvctl jepsen cleanup: {problem}", err=True)
        sys.exit(ExitStatus.COULD_NOT_RUN)
    try:
        removed = cleanup_leftovers()
    except NetworkError as error:
        click.echo(f"kvctl jepsen cleanup: {error}", err=True)
        sys.exit(ExitStatus.UNKNOWN)
    for item in removed:
        click.echo(f"removed {item}")
    click.echo(f"{len(removed)} leftovers removed" if removed else "nothing to clean up")
