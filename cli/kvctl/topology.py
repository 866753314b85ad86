"""`kvctl status|partitions`: what the cluster is made of, who leads what, and what is moving."""

from __future__ import annotations

import asyncio

import click

from kvctl.connection import DataCommand, KvctlError, connection_options, run_with_client, settings
from kvctl.exitcodes import ExitCode
from kvctl.printer import Printer
from kvstore.client import Client, ClusterLayout, InvalidArgumentError, KvError, MemberState, NodeStatus

# The members answered just before the deadline: each node still gets this long to answer.
_LAST_MOMENT_S = 0.01
_EXIT_CODES = "Exit codes: 0 ok, 2 bad usage, 3 unavailable or timed out (status: some node did not answer)."


@click.command(
    "status",
    cls=DataCommand,
    epilog=f"""\b
Examples:
  kvctl status                          every member of the cluster
  kvctl status 10.0.0.7:2379 -o json    one node

\b
{_EXIT_CODES}""",
)
@click.argument("nodes", nargs=-1, metavar="[HOST:PORT]...")
@connection_options
@click.pass_context
def status(ctx: click.Context, nodes: tuple[str, ...]) -> None:
    """Show each node's id, version, epoch and how many partitions it hosts and leads."""

    async def one(client: Client, address: str, timeout: float) -> NodeStatus | tuple[str, str]:
        try:
            return await client.status(address, timeout=timeout)
        except InvalidArgumentError:
            raise  # a malformed address: bad usage, not a node that is down
        except KvError as error:
            # One short reason per node; the address has a column of its own.
            return (address, error.message.removeprefix(f"{address}: "))

    async def action(client: Client) -> list[NodeStatus | tuple[str, str]]:
        # One deadline for the whole command: asking for the members uses part of --timeout.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + client.timeout
        addresses = list(nodes) or [member.address for member in await client.members()
                                    if member.state is not MemberState.REMOVED]
        left = max(deadline - loop.time(), _LAST_MOMENT_S)
        return list(await asyncio.gather(*(one(client, address, left) for address in addresses)))

    statuses = run_with_client(ctx, action)
    Printer(settings(ctx).output).statuses(statuses)
    unreachable = [entry[0] for entry in statuses if isinstance(entry, tuple)]
    if unreachable:
        raise KvctlError(f"no status from {', '.join(unreachable)}", ExitCode.UNAVAILABLE)


@click.command(
    "partitions",
    cls=DataCommand,
    epilog=f"\b\nExamples:\n  kvctl partitions\n  kvctl partitions -o json | jq '.partitions[0]'\n\n\b\n{_EXIT_CODES}",
)
@connection_options
@click.pass_context
def partitions(ctx: click.Context) -> None:
    """Show the cluster map: each partition's replicas, current leader, and any move under way."""

    async def action(client: Client) -> ClusterLayout:
        return await client.partitions()

    Printer(settings(ctx).output).partitions(run_with_client(ctx, action))
