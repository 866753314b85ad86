"""`kvctl lock NAME [-- COMMAND...]`: take a distributed lock, print its fencing token, hold it
(docs/locks.md)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import click

from kvctl.connection import DataCommand, KvctlError, connection_options, run_with_client, settings
from kvctl.exitcodes import ExitCode
from kvctl.printer import Printer
from kvstore.client import Client, Lock

LOCK_KEY_ENV = "KVSTORE_LOCK_KEY"
FENCING_TOKEN_ENV = "KVSTORE_FENCING_TOKEN"


@click.command(
    "lock",
    cls=DataCommand,
    context_settings={"ignore_unknown_options": True},
    epilog=f"""\b
Examples:
  kvctl lock orders                   hold the lock 'orders' until Ctrl-C
  kvctl lock orders --ttl 10 -- ./reprice.sh --all
                                      run the command while holding it; its exit
                                      status is kvctl's
  kvctl lock orders -- sh -c 'kvctl put stock 5 --fencing-token "${FENCING_TOKEN_ENV}"'

\b
The command sees {LOCK_KEY_ENV} (the lock key) and {FENCING_TOKEN_ENV} (the token to pass as
--fencing-token with every write the lock protects: a holder that lost the lock while paused is
then refused). Waiters are served in order; a holder that dies loses the lock TTL seconds later.

\b
Exit codes: 0 ok (or the command's own), 2 bad usage or refused, 3 unavailable or timed out.""",
)
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- COMMAND [ARGS]...]")
@click.option(
    "--ttl",
    type=click.IntRange(min=1),
    default=60,
    show_default=True,
    help="Seconds the lock outlives this process if it dies without unlocking.",
)
@connection_options
@click.pass_context
def lock(ctx: click.Context, name: str, command: tuple[str, ...], ttl: int) -> None:
    """Wait until this process holds lock NAME, print its key and fencing token, and hold it
    until Ctrl-C — or run COMMAND while holding it, then release it."""
    printer = Printer(settings(ctx).output)
    if command and command[0] == "--":
        command = command[1:]

    async def action(client: Client) -> int:
        async with client.lock(name, ttl=ttl) as held:
            printer.lock_held(held)
            if command:
                return await _run(command, held)
            await _until_stopped(held)
            return 0

    try:
        status = run_with_client(ctx, action)
    except KeyboardInterrupt:
        raise KvctlError(
            f"interrupted before lock {name!r} was taken; left the queue", ExitCode.UNAVAILABLE
        ) from None
    if status:
        sys.exit(status)


async def _until_stopped(held: Lock) -> None:
    """Hold the lock until SIGINT or SIGTERM; fail if the lease holding it is lost."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        lost = asyncio.ensure_future(held.lost.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({lost, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for waiting in (lost, stopped):
            waiting.cancel()
        if held.lost.is_set():
            raise KvctlError("lost the lock: its lease could not be kept alive in time", ExitCode.UNAVAILABLE)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _run(command: tuple[str, ...], held: Lock) -> int:
    """Run `command` with the lock's key and token in its environment; its exit status. Ctrl-C
    reaches the command (same terminal); kvctl waits for it, then releases the lock."""
    environment = {
        **os.environ,
        LOCK_KEY_ENV: held.key.decode("utf-8", "backslashreplace"),
        FENCING_TOKEN_ENV: str(held.token),
    }
    loop = asyncio.get_running_loop()
    try:
        process = await asyncio.create_subprocess_exec(*command, env=environment)
    except OSError as error:
        raise KvctlError(f"cannot run {command[0]!r}: {error.strerror}", ExitCode.USAGE) from None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, process.send_signal, sig)
    try:
        status = await process.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if held.lost.is_set():
        click.echo(
            "kvctl: warning: the lock was lost while the command ran (its lease could not be kept "
            "alive); writes with its fencing token may have been refused",
            err=True,
        )
    return status if status >= 0 else 128 - status
