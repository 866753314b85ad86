"""`kvctl watch KEY [--prefix]`: print the changes of a key or of the keys under a prefix as the
cluster applies them (docs/watch.md)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

import click

from kvctl.connection import (
    DataCommand,
    argument_bytes,
    connection_options,
    epilog,
    hex_option,
    run_with_client,
    settings,
)
from kvctl.printer import Printer
from kvstore.client import Client, Watch


@click.command(
    "watch",
    cls=DataCommand,
    epilog=epilog(
        "  kvctl watch greeting                      changes of one key, from now on\n"
        "  kvctl watch jobs/ --prefix -o json        every key under jobs/, one JSON object a line\n"
        "  kvctl watch jobs/ --prefix --count 10     exit after 10 events\n"
        "  kvctl watch greeting --rev 42 --prev-kv   from revision 42, with each key's previous value\n"
        "  kvctl watch '' --prefix                   every key of the cluster",
        "Ctrl-C stops watching (exit 0). Exit codes: 0 ok, 2 bad usage or refused (COMPACTED: --rev\n"
        "is older than every replica's history; the message says the revision to re-list from),\n"
        "3 unavailable or timed out (the watch could not be established).",
    ),
)
@click.argument("key")
@click.option("--prefix", is_flag=True, help="Watch every key starting with KEY (across the partitions holding them).")
@click.option(
    "--rev",
    type=click.IntRange(min=1),
    default=None,
    help="Start from this revision, in every partition the watch covers (revisions are per partition: "
    "'kvctl get KEY -o json' shows a key's). Default: from now on.",
)
@click.option("--prev-kv", is_flag=True, help="Print each key's value before the change too.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Exit after this many events.")
@hex_option
@connection_options
@click.pass_context
def watch(
    ctx: click.Context, key: str, prefix: bool, rev: int | None, prev_kv: bool, count: int | None, hex_encoded: bool
) -> None:
    """Print every change of KEY (with --prefix: of every key starting with KEY), one line per
    event, in revision order per partition, until Ctrl-C or --count events. The watch follows
    node deaths and leader changes without losing or repeating an event."""
    printer = Printer(settings(ctx).output)
    key_bytes = argument_bytes(key, "prefix" if prefix else "key", hex_encoded)

    async def action(client: Client) -> None:
        changes = client.watch(key_bytes, prefix=prefix, start_revision=rev, prev_kv=prev_kv)
        await _until_stopped(_print(changes, printer, prev_kv, count))

    try:
        run_with_client(ctx, action)
    except KeyboardInterrupt:  # before the watch took over Ctrl-C: stopping is not a failure
        pass
    except BrokenPipeError:  # the reader went away (`| head`): nothing left to do
        # Python flushes stdout again at exit; point it somewhere that accepts the bytes.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


async def _print(changes: Watch, printer: Printer, prev_kv: bool, count: int | None) -> None:
    async with changes:
        printed = 0
        async for event in changes:
            printer.watch_event(event, prev_kv)
            printed += 1
            if printed == count:
                return


async def _until_stopped(watching: Coroutine[Any, Any, None]) -> None:
    """Run `watching` until it ends (its errors are raised) or SIGINT/SIGTERM stops it."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.ensure_future(watching)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        stopped.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
