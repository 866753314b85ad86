"""`kvctl member list|add|remove|replace`: change who is in the cluster, and watch the partitions
move to follow (docs/membership.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import click
from rich.console import Console

from kvctl.connection import DataCommand, KvctlError, connection_options, run_with_client, settings
from kvctl.exitcodes import ExitCode
from kvctl.printer import Printer
from kvctl.progress import ConsoleProgress
from kvstore.client import Client, ClusterLayout, KvError, Member, MemberState

POLL_S = 0.5
DEFAULT_WAIT_S = 600.0
_EXIT_CODES = ("Exit codes: 0 ok, 1 no such member, 2 refused (bad address, last member...), "
               "3 unavailable or the moves did not finish within --wait.")


@click.group()
def member() -> None:
    """List, add, remove and replace the cluster's members."""


@member.command("list", cls=DataCommand,
                epilog=f"\b\nExamples:\n  kvctl member list\n  kvctl member list -o json\n\n\b\n{_EXIT_CODES}")
@connection_options
@click.pass_context
def member_list(ctx: click.Context) -> None:
    """Every member: id, address and state (joining, active, leaving, removed)."""

    async def action(client: Client) -> list[Member]:
        return await client.members()

    Printer(settings(ctx).output).members(run_with_client(ctx, action))


def _wait_option(command: Callable[..., None]) -> Callable[..., None]:
    return click.option("--wait", "wait_s", default=DEFAULT_WAIT_S, show_default=True, type=click.FloatRange(0),
                        help="Seconds to follow the partitions moving (0: return at once; they move anyway).")(command)


@member.command("add", cls=DataCommand, epilog=f"""\b
Examples:
  kvctl member add --address 10.0.0.4:2379
  then, on that machine:
  kvstore-node --join 10.0.0.1:2379 --listen 10.0.0.4:2379 --data-dir /var/lib/kvstore

\b
{_EXIT_CODES}""")
@click.option("--address", required=True, metavar="HOST:PORT", help="Where the new node will listen.")
@_wait_option
@connection_options
@click.pass_context
def member_add(ctx: click.Context, address: str, wait_s: float) -> None:
    """Add a member; the cluster gives it an id. Start the new node with `kvstore-node --join`
    and this address: partitions then move to it, shown as they go."""
    seeds = ",".join(settings(ctx).endpoints)

    async def action(client: Client) -> None:
        added = await client.member_add(address)
        click.echo(f"added node {added.id} at {added.address}; start it with:\n"
                   f"  kvstore-node --join {seeds} --listen {added.address} --data-dir DIR", err=True)
        await follow(client, added.id, MemberState.ACTIVE, wait_s)

    run_with_client(ctx, action)


@member.command("remove", cls=DataCommand,
                epilog=f"\b\nExamples:\n  kvctl member remove 4\n  kvctl member remove 4 --wait 0\n\n\b\n{_EXIT_CODES}")
@click.argument("node_id", type=int)
@_wait_option
@connection_options
@click.pass_context
def member_remove(ctx: click.Context, node_id: int, wait_s: float) -> None:
    """Remove a member: its partitions move to the others first (it keeps serving meanwhile),
    then it is removed and may be stopped. Its id is never given out again."""

    async def action(client: Client) -> None:
        await client.member_remove(node_id)
        await follow(client, node_id, MemberState.REMOVED, wait_s, shrinking=True)

    run_with_client(ctx, action)


@member.command("replace", cls=DataCommand, epilog=f"""\b
Examples:
  kvctl member replace 3                            # rebuild node 3's replicas on the others
  kvctl member replace 3 --address 10.0.0.3:2379    # on a fresh node at that address, then:
  kvstore-node --join 10.0.0.1:2379 --listen 10.0.0.3:2379 --data-dir /var/lib/kvstore.new

\b
{_EXIT_CODES}""")
@click.argument("node_id", type=int)
@click.option("--address", default="", metavar="HOST:PORT",
              help="A fresh node's address (usually the dead one's): it takes over the replicas.")
@_wait_option
@connection_options
@click.pass_context
def member_replace(ctx: click.Context, node_id: int, address: str, wait_s: float) -> None:
    """Replace a dead member, or one whose data dir is damaged or lost: its replicas are rebuilt
    from the others. The replaced node must never run again (stop it first; a node that
    answers is refused)."""
    seeds = ",".join(settings(ctx).endpoints)

    async def action(client: Client) -> None:
        old = next((m for m in await client.members() if m.id == node_id), None)
        if old is not None and old.state is not MemberState.REMOVED and await _answers(client, old.address):
            raise KvctlError(f"node {node_id} at {old.address} is running: stop it first (a replaced node must "
                             "never come back), or move its data away with `kvctl member remove`",
                             ExitCode.USAGE)
        fresh = await client.member_replace(node_id, address)
        if address:
            click.echo(f"node {fresh.id} at {fresh.address} replaces node {node_id}; start it with:\n"
                       f"  kvstore-node --join {seeds} --listen {fresh.address} --data-dir NEW_DIR", err=True)
        await follow(client, node_id, MemberState.REMOVED, wait_s)

    run_with_client(ctx, action)


async def _answers(client: Client, address: str) -> bool:
    try:
        await asyncio.wait_for(client.status(address), 2.0)
    except (KvError, TimeoutError):
        return False
    return True


async def follow(client: Client, node_id: int, until: MemberState, wait_s: float, *, shrinking: bool = False) -> None:
    """Show the partitions moving until member `node_id` reaches `until` and no move is left,
    then say how many moved against the ideal (the share of one node among the larger of the
    memberships before and after: after, unless `shrinking`). KvctlError (exit 3) after
    `wait_s` seconds."""
    if wait_s == 0:
        return
    before = await client.partitions()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    moving: set[int] = set()
    with ConsoleProgress(Console(stderr=True)) as progress:
        progress.phase("moving partitions", unit="partitions")
        while True:
            layout = await client.partitions()
            now_moving = {info.id for info in layout.partitions if info.moving_to}
            moving |= now_moving
            moved = _moved(before, layout)
            progress.update(len(moved - now_moving), total=max(len(moving | moved), 1),
                            detail=f"epoch {layout.epoch}")
            state = next((m.state for m in layout.members if m.id == node_id), MemberState.REMOVED)
            if not now_moving and state is until:
                break
            if loop.time() > deadline:
                raise KvctlError(f"the partitions are still moving after {wait_s:g}s; they go on in the background "
                                 "(watch them with `kvctl partitions`)", ExitCode.UNAVAILABLE)
            await asyncio.sleep(POLL_S)
    active = sum(1 for m in layout.members if m.state is MemberState.ACTIVE)
    members = active + 1 if shrinking else active
    ideal = min(layout.replication_factor, members) * layout.partition_count / max(members, 1)
    click.echo(f"moved {len(_moved(before, layout))} of {layout.partition_count} partitions "
               f"(the ideal is RF·P/N = {layout.replication_factor}·{layout.partition_count}/{members} "
               f"= {ideal:.1f})")


def _moved(before: ClusterLayout, after: ClusterLayout) -> set[int]:
    """The partitions whose replica set differs between the two layouts."""
    old = {info.id: set(info.replicas) for info in before.partitions}
    return {info.id for info in after.partitions if set(info.replicas) != old.get(info.id, set())}
