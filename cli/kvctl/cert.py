"""`kvctl cert init`: a development CA with node and client certificates, for a TLS cluster."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from kvctl.exitcodes import ExitCode
from kvstore.certs import DEFAULT_DAYS, DEFAULT_HOSTS, CertificateError, init_certificates


@click.group()
def cert() -> None:
    """Certificates for running a cluster with TLS (see docs/security.md)."""


@cert.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 1000),
              help="Node certificates to make: node-1 ... node-N.")
@click.option("--hosts", multiple=True, metavar="HOST[,HOST...]",
              help=f"More DNS names or IP addresses the node certificates are valid for (repeatable); "
                   f"{' and '.join(DEFAULT_HOSTS)} are always in.")
@click.option("--days", default=DEFAULT_DAYS, show_default=True, type=click.IntRange(1, 3650),
              help="Validity of every certificate.")
@click.option("--force", is_flag=True, help="Replace certificates and keys already in DIRECTORY.")
def init(directory: Path, nodes: int, hosts: tuple[str, ...], days: int, force: bool) -> None:
    """Create a development CA, node certificates and a client certificate in DIRECTORY.

    \b
    Writes ca.crt/ca.key, node-N.crt/node-N.key (each node serves with its own, and presents it
    to its peers: it carries the peer mark) and client-root.crt/client-root.key (the user
    root). Keys are readable by their owner only. Keep ca.key private: whoever has it can make
    certificates the cluster trusts.
    \b
    Examples:
      kvctl cert init certs --nodes 3
      kvctl cert init certs --nodes 5 --hosts db1.example.com,10.0.0.7 --days 90
    Exit codes: 0 created, 2 refused (files exist without --force, a bad host, unwritable DIRECTORY).
    """
    extra_hosts = [host.strip() for value in hosts for host in value.split(",") if host.strip()]
    try:
        made = init_certificates(directory, nodes, extra_hosts, days, force)
    except CertificateError as error:
        click.echo(f"kvctl: {error}", err=True)
        sys.exit(ExitCode.USAGE)
    node = made.nodes[1]
    click.echo(f"created a CA, {nodes} node certificate(s) and a client certificate (user root) in {directory}, "
               f"valid for {days} days\n"
               f"  a node:  kvstore-node --cert {node.cert} --key {node.key} --ca {made.ca.cert} ...\n"
               f"  kvctl:   export KVSTORE_CACERT={made.ca.cert} KVSTORE_CERT={made.client.cert} "
               f"KVSTORE_KEY={made.client.key}")
