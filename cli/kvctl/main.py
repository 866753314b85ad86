"""kvctl entry point: one click group, one module per command group."""

from __future__ import annotations

import click

from kvctl.auth import auth, role, user
from kvctl.bench import bench
from kvctl.cert import cert
from kvctl.check import check
from kvctl.cluster import cluster
from kvctl.connection import global_options
from kvctl.jepsen import jepsen
from kvctl.kv import delete, get, put, scan
from kvctl.lease import lease
from kvctl.lock import lock
from kvctl.member import member
from kvctl.topology import partitions, status
from kvctl.txn import txn
from kvctl.watch import watch


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="kvstore", prog_name="kvctl")
@global_options
def cli() -> None:
    """kvctl — command line for kvstore, a distributed key-value store.

    \b
    Examples:
      kvctl cluster up --nodes 3        start a local 3-node cluster
      kvctl cluster up --tls            the same, serving TLS (certificates made for it)
      kvctl cluster up --tls --auth     the same, with users: prints root's password
      kvctl put greeting hello          write a key
      kvctl get greeting -o simple      print its value alone
      kvctl lease grant 10 --for-key job  a lease of 10 s, in job's partition
      kvctl lock orders -- ./job.sh     run a command while holding a lock
      kvctl watch jobs/ --prefix        print the changes under jobs/ as they happen
      kvctl check --model register h.jsonl   check a history for linearizability
    """


cli.add_command(cluster)
cli.add_command(bench)
cli.add_command(check)
cli.add_command(cert)
cli.add_command(jepsen)
cli.add_command(lease)
cli.add_command(lock)
for auth_command in (auth, user, role):
    cli.add_command(auth_command)
for data_command in (get, put, delete, scan, txn, watch, status, partitions, member):
    cli.add_command(data_command)


def main() -> None:
    cli(prog_name="kvctl")


if __name__ == "__main__":
    main()
