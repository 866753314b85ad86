"""`kvctl get|put|del|scan`: read and write keys."""

from __future__ import annotations

import sys

import click

from kvctl.connection import (
    DataCommand,
    KvctlError,
    argument_bytes,
    connection_options,
    epilog,
    hex_option,
    run_with_client,
    settings,
)
from kvctl.exitcodes import ExitCode
from kvctl.printer import Printer
from kvstore.client import Client, DeleteResult, GetResult, KeyValue, PutResult, ReadConsistency

_EXIT_CODES = (
    "Exit codes: 0 ok, 1 key not found (get), 2 bad usage or request refused, 3 unavailable or timed out."
)


@click.command(
    "get",
    cls=DataCommand,
    epilog=epilog(
        "  kvctl get greeting\n"
        "  kvctl get greeting -o simple          print the value alone\n"
        "  kvctl get greeting --consistency stale -o json\n"
        "  kvctl get --hex 00ff                   the key made of the bytes 0x00 0xff",
        _EXIT_CODES,
    ),
)
@click.argument("key")
@click.option(
    "--consistency",
    type=click.Choice([level.name.lower() for level in ReadConsistency]),
    default="linearizable",
    show_default=True,
    help="linearizable: confirmed by a quorum; lease: leader's lease; session/stale: any replica.",
)
@hex_option
@connection_options
@click.pass_context
def get(ctx: click.Context, key: str, consistency: str, hex_encoded: bool) -> None:
    """Print the value of KEY; exit 1 when it does not exist."""
    level = ReadConsistency[consistency.upper()]
    key_bytes = argument_bytes(key, "key", hex_encoded)

    async def action(client: Client) -> GetResult:
        return await client.get_result(key_bytes, consistency=level)

    result = run_with_client(ctx, action)
    Printer(settings(ctx).output).get(result)
    if not result.found:
        raise KvctlError(f"key {key!r} not found", ExitCode.NOT_FOUND)


@click.command(
    "put",
    cls=DataCommand,
    epilog=epilog(
        "  kvctl put greeting hello\n"
        "  kvctl put greeting hello --prev-kv     also print the value it replaced\n"
        "  kvctl put {user42}:cart apples --lease 140737488355331\n"
        "  kvctl put config v2 --fencing-token 42  refused if the key saw a larger token\n"
        "  echo hello | kvctl put greeting -      read the value from stdin\n"
        "  kvctl put --hex 00ff c0ffee            bytes that are not UTF-8, as hex",
        _EXIT_CODES,
    ),
)
@click.argument("key")
@click.argument("value")
@click.option("--lease", type=click.IntRange(min=0), default=0, help="Attach the key to this lease id.")
@click.option(
    "--fencing-token",
    type=click.IntRange(min=0),
    default=0,
    help="Lock fencing token; the write is refused when the key already accepted a larger one.",
)
@click.option("--prev-kv", is_flag=True, help="Print the previous key-value, if any.")
@hex_option
@connection_options
@click.pass_context
def put(
    ctx: click.Context, key: str, value: str, lease: int, fencing_token: int, prev_kv: bool, hex_encoded: bool
) -> None:
    """Set KEY to VALUE ('-' reads the value from stdin, bytes as they are, with or without --hex)."""
    key_bytes = argument_bytes(key, "key", hex_encoded)
    data = sys.stdin.buffer.read() if value == "-" else argument_bytes(value, "value", hex_encoded)

    async def action(client: Client) -> PutResult:
        return await client.put(key_bytes, data, lease=lease, fencing_token=fencing_token, prev_kv=prev_kv)

    Printer(settings(ctx).output).put(run_with_client(ctx, action))


@click.command(
    "del",
    cls=DataCommand,
    epilog=epilog("  kvctl del greeting\n  kvctl del greeting --prev-kv -o json\n  kvctl del --hex 00ff", _EXIT_CODES),
)
@click.argument("key")
@click.option("--prev-kv", is_flag=True, help="Print the deleted key-value.")
@click.option("--fencing-token", type=click.IntRange(min=0), default=0, help="As for put.")
@hex_option
@connection_options
@click.pass_context
def delete(ctx: click.Context, key: str, prev_kv: bool, fencing_token: int, hex_encoded: bool) -> None:
    """Delete KEY (deleting a missing key is not an error: it prints 0 deleted)."""
    key_bytes = argument_bytes(key, "key", hex_encoded)

    async def action(client: Client) -> DeleteResult:
        return await client.delete(key_bytes, prev_kv=prev_kv, fencing_token=fencing_token)

    Printer(settings(ctx).output).delete(run_with_client(ctx, action))


@click.command(
    "scan",
    cls=DataCommand,
    epilog=epilog(
        "  kvctl scan --prefix user/                 every key starting with user/\n"
        "  kvctl scan --start a --end m --limit 10   the first 10 keys in [a, m)\n"
        "  kvctl scan --prefix '{user42}:' --keys-only -o simple\n"
        "  kvctl scan                                the whole key space\n"
        "  kvctl scan --hex --prefix 00              keys starting with the byte 0x00",
        _EXIT_CODES,
    ),
)
@click.option("--prefix", help="Keys starting with this (not with --start/--end).")
@click.option("--start", help="First key, inclusive.")
@click.option("--end", help="Last key, exclusive (default: to the end).")
@click.option("--limit", type=click.IntRange(min=0), default=0, help="At most this many keys (0 = all).")
@click.option("--keys-only", is_flag=True, help="Print keys without values.")
@click.option(
    "--consistency",
    type=click.Choice([level.name.lower() for level in ReadConsistency]),
    default="linearizable",
    show_default=True,
)
@hex_option
@connection_options
@click.pass_context
def scan(
    ctx: click.Context,
    prefix: str | None,
    start: str | None,
    end: str | None,
    limit: int,
    keys_only: bool,
    consistency: str,
    hex_encoded: bool,
) -> None:
    """List keys in key order, across all partitions."""
    if prefix is not None and (start is not None or end is not None):
        raise KvctlError("use either --prefix or --start/--end, not both", ExitCode.USAGE)
    level = ReadConsistency[consistency.upper()]
    bounds = {
        name: argument_bytes(text, f"--{name}", hex_encoded)
        for name, text in (("prefix", prefix), ("start", start), ("end", end))
        if text is not None
    }

    async def action(client: Client) -> list[KeyValue]:
        return await client.scan(**bounds, limit=limit, keys_only=keys_only, consistency=level)

    Printer(settings(ctx).output).scan(run_with_client(ctx, action), keys_only)
