"""kvctl entry point: one click group, one module per command group."""

from __future__ import annotations

import click

from kvctl.check import check
from kvctl.cluster import cluster


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="kvstore", prog_name="kvctl")
def cli() -> None:
    """kvctl — command line for kvstore, a distributed key-value store.

    \b
    Examples:
      kvctl cluster up --nodes 3        start a local 3-node cluster
      kvctl check --model register h.jsonl   check a history for linearizability
    """


cli.add_command(cluster)
cli.add_command(check)


def main() -> None:
    cli(prog_name="kvctl")
