"""`kvctl lease grant|keep-alive|revoke|ttl|list`: leases (docs/locks.md)."""

from __future__ import annotations

import asyncio

import click

from kvctl.connection import DataCommand, connection_options, epilog, run_with_client, settings
from kvctl.printer import Printer
from kvstore.client import Client, Lease, LeaseStatus

_EXIT_CODES = (
    "Exit codes: 0 ok, 2 bad usage or an unknown (expired, revoked) lease, 3 unavailable or timed out."
)


@click.group(
    "lease",
    epilog=epilog(
        "  kvctl lease grant 30 --for-key job -o simple  grant one, print its id\n"
        "  kvctl lease keep-alive ID                   keep it alive until Ctrl-C\n"
        "  kvctl lease ttl ID --keys                   time left and attached keys\n"
        "  kvctl lease list\n"
        "  kvctl lease revoke ID                       delete it and its keys",
        _EXIT_CODES,
    ),
)
def lease() -> None:
    """Grant, keep alive, revoke and inspect leases.

    A lease expires TTL seconds after the last keepalive its partition's leader acknowledged,
    deleting every key attached to it (kvctl put KEY VALUE --lease ID). It lives in one
    partition, which its id encodes: attach keys of that partition only (grant it with
    --for-key).
    """


@lease.command(
    "grant",
    cls=DataCommand,
    epilog=epilog(
        "  kvctl lease grant 30                    a lease of 30 s (in partition 0)\n"
        "  kvctl lease grant 30 --for-key {user42}:cart  in the partition of that key\n"
        '  ID=$(kvctl lease grant 30 --for-key job -o simple) && kvctl put job running --lease "$ID"',
        _EXIT_CODES,
    ),
)
@click.argument("ttl", type=click.IntRange(min=1))
@click.option(
    "--for-key",
    "for_key",
    metavar="KEY",
    help="Grant it in KEY's partition, so that KEY can be attached to it (--key is the TLS key).",
)
@connection_options
@click.pass_context
def grant(ctx: click.Context, ttl: int, for_key: str | None) -> None:
    """Grant a lease of TTL seconds; print its id."""

    async def action(client: Client) -> Lease:
        return await client.grant(ttl, key=for_key)

    Printer(settings(ctx).output).lease_granted(run_with_client(ctx, action))


@lease.command(
    "keep-alive",
    cls=DataCommand,
    epilog=epilog(
        "  kvctl lease keep-alive 140737488355331          renew every third of its TTL until Ctrl-C\n"
        "  kvctl lease keep-alive 140737488355331 --once   renew it once",
        _EXIT_CODES,
    ),
)
@click.argument("lease_id", metavar="ID", type=click.IntRange(min=1))
@click.option("--once", is_flag=True, help="Renew once and exit.")
@connection_options
@click.pass_context
def keep_alive(ctx: click.Context, lease_id: int, once: bool) -> None:
    """Keep lease ID alive, printing each renewal, until Ctrl-C (or once, with --once)."""
    printer = Printer(settings(ctx).output)

    async def action(client: Client) -> None:
        while True:
            ttl = await client.keep_alive_once(lease_id)
            printer.lease_kept_alive(lease_id, ttl)
            if once:
                return
            await asyncio.sleep(ttl / 3)

    try:
        run_with_client(ctx, action)
    except KeyboardInterrupt:
        return


@lease.command(
    "revoke",
    cls=DataCommand,
    epilog=epilog("  kvctl lease revoke 140737488355331", _EXIT_CODES),
)
@click.argument("lease_id", metavar="ID", type=click.IntRange(min=1))
@connection_options
@click.pass_context
def revoke(ctx: click.Context, lease_id: int) -> None:
    """Revoke lease ID, deleting every key attached to it."""

    async def action(client: Client) -> None:
        await client.revoke(lease_id)

    run_with_client(ctx, action)
    Printer(settings(ctx).output).lease_revoked(lease_id)


@lease.command(
    "ttl",
    cls=DataCommand,
    epilog=epilog("  kvctl lease ttl 140737488355331\n  kvctl lease ttl 140737488355331 --keys -o json", _EXIT_CODES),
)
@click.argument("lease_id", metavar="ID", type=click.IntRange(min=1))
@click.option("--keys", is_flag=True, help="Also list the keys attached to it.")
@connection_options
@click.pass_context
def ttl(ctx: click.Context, lease_id: int, keys: bool) -> None:
    """Show how long lease ID has left at least (the leader's view) and its granted TTL."""

    async def action(client: Client) -> LeaseStatus:
        return await client.time_to_live(lease_id, keys=keys)

    Printer(settings(ctx).output).lease_status(run_with_client(ctx, action), keys)


@lease.command(
    "list",
    cls=DataCommand,
    epilog=epilog("  kvctl lease list\n  kvctl lease list -o simple    the ids alone", _EXIT_CODES),
)
@connection_options
@click.pass_context
def list_leases(ctx: click.Context) -> None:
    """List every lease of every partition."""

    async def action(client: Client) -> list[LeaseStatus]:
        return await client.leases()

    Printer(settings(ctx).output).leases(run_with_client(ctx, action))
