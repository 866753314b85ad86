"""`kvctl cluster`: start and stop a local cluster of node processes."""

from __future__ import annotations

import sys

import click

from kvctl.exitcodes import ExitCode


@click.group()
def cluster() -> None:
    """Run a local multi-node cluster on this machine."""


@cluster.command()
@click.option("--nodes", default=3, show_default=True, help="Number of node processes.")
@click.option("--demo", is_flag=True, help="Run a short demo against the cluster once it is up.")
def up(nodes: int, demo: bool) -> None:
    """Start NODES node processes on loopback."""
    click.echo(
        "kvctl: the node runtime is not built yet (running-cluster issue); "
        "`make test` runs the Raft core and its deterministic simulation.",
        err=True,
    )
    sys.exit(ExitCode.UNAVAILABLE)
