"""`kvctl get|put|del|scan`: read and write keys, at a chosen read consistency or write concern."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import click

from kvctl.connection import (
    DataCommand,
    KvctlError,
    argument_bytes,
    connection_options,
    epilog,
    hex_option,
    open_session,
    run_with_client,
    settings,
)
from kvctl.exitcodes import ExitCode
from kvctl.printer import Printer
from kvctl.session import session_options
from kvstore.client import (
    Client,
    DeleteResult,
    GetResult,
    PutResult,
    ReadConsistency,
    ScanResult,
    WriteConcern,
)

_EXIT_CODES = (
    "Exit codes: 0 ok, 1 key not found (get), 2 bad usage or request refused (a refused write was not "
    "applied), 3 unavailable or timed out (a write's outcome is then unknown: it may have been applied)."
)

CONSISTENCY_HELP = (
    "linearizable: the leader, after a quorum confirms it still leads (never stale). "
    "lease: the leader alone while its lease holds (as fresh, if clocks drift less than the lease allows). "
    "session: any replica that has this session's writes and reads (--session-file, --session-token). "
    "stale: any follower, now; reports how stale it may be (staleness_ms)."
)

CONCERN_HELP = (
    "When the write is acknowledged. majority: once a quorum has it (survives any failover). "
    "all: once every replica applied it (waits for, and times out on, a replica that is down). "
    "leader: once the leader alone has it on disk, before replication: FASTER, BUT AN ACKNOWLEDGED WRITE "
    "IS LOST if that leader fails before a follower has it; no --prev-kv, no txn."
)


class Duration(click.ParamType):
    """A duration with its unit, `500ms` or `1.5s`, as whole milliseconds."""

    name = "duration"
    _FORMAT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*$")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = self._FORMAT.match(str(value))
        if match is None:
            self.fail(f"{value!r} is not a duration: use e.g. 500ms or 1.5s", param, ctx)
        number, unit = float(match[1]), match[2]
        milliseconds = round(number * (1000 if unit == "s" else 1))
        if milliseconds < 1 or milliseconds >= 1 << 32:
            self.fail(f"{value!r} is out of range (1ms to 49 days)", param, ctx)
        return milliseconds


def _level_option(flag: str, levels: type[ReadConsistency] | type[WriteConcern], default: str, text: str) -> Any:
    return click.option(flag, type=click.Choice([level.name.lower() for level in levels]), default=default,
                        show_default=True, help=text)  # fmt: skip


def _read_options(command: Any) -> Any:
    """--consistency, --max-staleness and --min-revision, and the session options."""
    command = session_options(command)
    command = click.option(
        "--min-revision",
        type=click.IntRange(min=0),
        default=0,
        metavar="N",
        help="Only a replica that has applied revision N answers (any level).",
    )(command)
    command = click.option(
        "--max-staleness",
        "max_staleness_ms",
        type=Duration(),
        default=None,
        metavar="DURATION",
        help="With --consistency stale: only a replica that can bound its staleness under this answers "
        "(e.g. 500ms, 2s); one that cannot refuses and another is asked.",
    )(command)
    return _level_option("--consistency", ReadConsistency, "linearizable", CONSISTENCY_HELP)(command)


def _write_options(command: Any) -> Any:
    """--concern and the session options."""
    return _level_option("--concern", WriteConcern, "majority", CONCERN_HELP)(session_options(command))


@click.command(
    "get",
    cls=DataCommand,
    epilog=epilog(
        "  kvctl get greeting\n"
        "  kvctl get greeting -o simple                 print the value alone\n"
        "  kvctl get greeting --consistency stale --max-staleness 500ms -o json\n"
        "                                               a follower at most 0.5 s behind; json shows\n"
        "                                               served, node_id, revision, staleness_ms\n"
        "  KVSTORE_SESSION=/tmp/s kvctl get greeting --consistency session\n"
        "                                               sees what earlier commands with /tmp/s wrote\n"
        "  kvctl get --hex 00ff                         the key made of the bytes 0x00 0xff",
        _EXIT_CODES,
    ),
)
@click.argument("key")
@_read_options
@hex_option
@connection_options
@click.pass_context
def get(
    ctx: click.Context,
    key: str,
    consistency: str,
    max_staleness_ms: int | None,
    min_revision: int,
    session_token: str | None,
    session_file: Path | None,
    hex_encoded: bool,
) -> None:
    """Print the value of KEY; exit 1 when it does not exist."""
    level = ReadConsistency[consistency.upper()]
    key_bytes = argument_bytes(key, "key", hex_encoded)
    session = open_session(session_token, session_file)

    async def action(client: Client) -> GetResult:
        return await client.get_result(
            key_bytes, consistency=level, min_revision=min_revision, max_staleness_ms=max_staleness_ms or 0
        )

    result = run_with_client(ctx, action, session)
    Printer(settings(ctx).output, session.token).get(result)
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
        "  kvctl put greeting hello --concern all  wait until every replica applied it\n"
        "  kvctl put metric 1 --concern leader     fast, but lost if the leader dies before replicating\n"
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
@_write_options
@hex_option
@connection_options
@click.pass_context
def put(
    ctx: click.Context,
    key: str,
    value: str,
    lease: int,
    fencing_token: int,
    prev_kv: bool,
    concern: str,
    session_token: str | None,
    session_file: Path | None,
    hex_encoded: bool,
) -> None:
    """Set KEY to VALUE ('-' reads the value from stdin, bytes as they are, with or without --hex)."""
    key_bytes = argument_bytes(key, "key", hex_encoded)
    data = sys.stdin.buffer.read() if value == "-" else argument_bytes(value, "value", hex_encoded)
    session = open_session(session_token, session_file)

    async def action(client: Client) -> PutResult:
        return await client.put(key_bytes, data, lease=lease, fencing_token=fencing_token, prev_kv=prev_kv,
                                concern=WriteConcern[concern.upper()])  # fmt: skip

    result = run_with_client(ctx, action, session)
    Printer(settings(ctx).output, session.token).put(result)


@click.command(
    "del",
    cls=DataCommand,
    epilog=epilog(
        "  kvctl del greeting\n"
        "  kvctl del greeting --prev-kv -o json\n"
        "  kvctl del greeting --concern leader      acknowledged before the apply: prints 'accepted'\n"
        "  kvctl del --hex 00ff",
        _EXIT_CODES,
    ),
)
@click.argument("key")
@click.option("--prev-kv", is_flag=True, help="Print the deleted key-value.")
@click.option("--fencing-token", type=click.IntRange(min=0), default=0, help="As for put.")
@_write_options
@hex_option
@connection_options
@click.pass_context
def delete(
    ctx: click.Context,
    key: str,
    prev_kv: bool,
    fencing_token: int,
    concern: str,
    session_token: str | None,
    session_file: Path | None,
    hex_encoded: bool,
) -> None:
    """Delete KEY (deleting a missing key is not an error: it prints 0 deleted)."""
    key_bytes = argument_bytes(key, "key", hex_encoded)
    session = open_session(session_token, session_file)

    async def action(client: Client) -> DeleteResult:
        return await client.delete(key_bytes, prev_kv=prev_kv, fencing_token=fencing_token,
                                   concern=WriteConcern[concern.upper()])  # fmt: skip

    result = run_with_client(ctx, action, session)
    Printer(settings(ctx).output, session.token).delete(result)


@click.command(
    "scan",
    cls=DataCommand,
    epilog=epilog(
        "  kvctl scan --prefix user/                 every key starting with user/\n"
        "  kvctl scan --start a --end m --limit 10   the first 10 keys in [a, m)\n"
        "  kvctl scan --prefix '{user42}:' --keys-only -o simple\n"
        "  kvctl scan --consistency stale -o json    from followers; each partition's header\n"
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
@_read_options
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
    max_staleness_ms: int | None,
    min_revision: int,
    session_token: str | None,
    session_file: Path | None,
    hex_encoded: bool,
) -> None:
    """List keys in key order, across all partitions (each read at the chosen consistency)."""
    if prefix is not None and (start is not None or end is not None):
        raise KvctlError("use either --prefix or --start/--end, not both", ExitCode.USAGE)
    level = ReadConsistency[consistency.upper()]
    bounds = {
        name: argument_bytes(text, f"--{name}", hex_encoded)
        for name, text in (("prefix", prefix), ("start", start), ("end", end))
        if text is not None
    }
    session = open_session(session_token, session_file)

    async def action(client: Client) -> ScanResult:
        return await client.scan_result(
            **bounds, limit=limit, keys_only=keys_only, consistency=level, min_revision=min_revision,
            max_staleness_ms=max_staleness_ms or 0,
        )  # fmt: skip

    result = run_with_client(ctx, action, session)
    Printer(settings(ctx).output, session.token).scan(result, keys_only)
