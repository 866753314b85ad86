"""What every kvctl data command shares: connection options, the client's lifetime, error → exit code
(through `kvstore.errors.ERRORS`)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import click

from kvctl.exitcodes import ExitCode
from kvstore.client import Client, KvError, TlsConfig
from kvstore.errors import ERRORS

ENDPOINTS_ENV = "KVSTORE_ENDPOINTS"
USER_ENV = "KVSTORE_USER"
# The TLS files: flag -> environment variable.
TLS_ENV = {"--cacert": "KVSTORE_CACERT", "--cert": "KVSTORE_CERT", "--key": "KVSTORE_KEY"}
DEFAULT_ENDPOINTS = "127.0.0.1:2379"
DEFAULT_TIMEOUT_S = 5.0

# Where option values land: ctx.meta is shared by the group's and the command's contexts, so
# `kvctl -o json get k` and `kvctl get k -o json` both work; the command's value wins.
_OPTIONS_KEY = "kvctl.connection"
_SETTINGS_KEY = "kvctl.settings"

ResultT = TypeVar("ResultT")


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    SIMPLE = "simple"


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    endpoints: tuple[str, ...]
    output: OutputFormat
    timeout: float
    tls: TlsConfig | None
    user: str | None = None
    password: str | None = None  # None with a user: the TLS client certificate is the user's


class KvctlError(click.ClickException):
    """A one-line error on stderr with one of the fixed exit codes."""

    def __init__(self, message: str, exit_code: ExitCode) -> None:
        super().__init__(message)
        # click declares exit_code a class variable; kvctl picks one per error.
        self.exit_code = int(exit_code)  # type: ignore[misc]


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and param.name is not None:
        ctx.meta.setdefault(_OPTIONS_KEY, {})[param.name] = value
    return value


_OUTPUT_HELP = (
    "Output format: table (for people), json (one stable JSON document; bytes that are not "
    "UTF-8 appear base64-encoded under '<field>_base64'), simple (bare values, for scripts)."
)


_TLS_HELP = {
    "--cacert": "Connect with TLS, trusting node certificates signed by this CA certificate (PEM); "
              "needs --cert and --key",
    "--cert": "Client certificate (PEM), signed by the cluster's CA",
    "--key": "Private key of --cert (PEM)",
}


def _options(with_defaults: bool) -> list[Callable[[Callable[..., Any]], Callable[..., Any]]]:
    return [
        click.option(
            "--endpoints",
            envvar=ENDPOINTS_ENV if with_defaults else None,
            default=DEFAULT_ENDPOINTS if with_defaults else None,
            show_default=with_defaults,
            metavar="HOST:PORT,...",
            expose_value=False,
            callback=_remember,
            help=f"Comma-separated seed nodes (env {ENDPOINTS_ENV}).",
        ),
        click.option(
            "-o",
            "--output",
            type=click.Choice([fmt.value for fmt in OutputFormat]),
            default=OutputFormat.TABLE.value if with_defaults else None,
            show_default=with_defaults,
            expose_value=False,
            callback=_remember,
            help=_OUTPUT_HELP,
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=DEFAULT_TIMEOUT_S if with_defaults else None,
            show_default=with_defaults,
            metavar="SECONDS",
            expose_value=False,
            callback=_remember,
            help="Give up on a request after this long.",
        ),
        click.option(
            "--user",
            envvar=USER_ENV if with_defaults else None,
            metavar="NAME[:PASSWORD]",
            expose_value=False,
            callback=_remember,
            help=f"Sign in as this user (env {USER_ENV}); without :PASSWORD, kvctl asks for it on a terminal.",
        ),
        *(
            click.option(
                flag,
                "tls_" + flag.removeprefix("--"),  # not `key`: commands have a KEY argument
                envvar=TLS_ENV[flag] if with_defaults else None,
                type=click.Path(dir_okay=False),
                expose_value=False,
                callback=_remember,
                help=f"{text} (env {TLS_ENV[flag]}).",
            )
            for flag, text in _TLS_HELP.items()
        ),
    ]


def global_options(group: Callable[..., Any]) -> Callable[..., Any]:
    """The connection options of the `kvctl` group, with their defaults."""
    for option in reversed(_options(with_defaults=True)):
        group = option(group)
    return group


def connection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The same options on a command, overriding the group's when given."""
    for option in reversed(_options(with_defaults=False)):
        command = option(command)
    return command


def settings(ctx: click.Context) -> ConnectionSettings:
    """The command's connection settings, worked out once (a password is asked for once)."""
    cached: ConnectionSettings | None = ctx.meta.get(_SETTINGS_KEY)
    if cached is None:
        cached = ctx.meta[_SETTINGS_KEY] = _settings(ctx)
    return cached


def _settings(ctx: click.Context) -> ConnectionSettings:
    given: dict[str, Any] = ctx.meta.get(_OPTIONS_KEY, {})
    raw_endpoints = given.get("endpoints") or os.environ.get(ENDPOINTS_ENV) or DEFAULT_ENDPOINTS
    endpoints = tuple(part.strip() for part in raw_endpoints.split(",") if part.strip())
    if not endpoints:
        raise KvctlError("--endpoints needs at least one HOST:PORT", ExitCode.USAGE)
    user, password = _user(given.get("user") or os.environ.get(USER_ENV))
    return ConnectionSettings(
        endpoints=endpoints,
        output=OutputFormat(given.get("output", OutputFormat.TABLE.value)),
        timeout=float(given.get("timeout", DEFAULT_TIMEOUT_S)),
        tls=_tls(given),
        user=user,
        password=password,
    )


def _user(value: str | None) -> tuple[str | None, str | None]:
    """NAME[:PASSWORD] -> (name, password); the password asked for on a terminal when missing."""
    if not value:
        return None, None
    name, colon, password = value.partition(":")
    if not name:
        raise KvctlError("--user needs a name: NAME or NAME:PASSWORD", ExitCode.USAGE)
    if colon:
        return name, password
    if not sys.stdin.isatty():
        raise KvctlError(f"no password for user {name!r}: give --user {name}:PASSWORD (or {USER_ENV}), "
                         "or run kvctl on a terminal to be asked", ExitCode.USAGE)
    return name, click.prompt(f"password for {name}", hide_input=True, err=True)


HEX_HELP = (
    "KEY and VALUE (and any other key, prefix or value given) are hex digits standing for bytes, "
    "e.g. 6b6579 for 'key': the way to pass bytes that are not UTF-8."
)


def hex_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--hex` on a command whose arguments are keys and values."""
    return click.option("--hex", "hex_encoded", is_flag=True, help=HEX_HELP)(command)


def argument_bytes(text: str, what: str, hex_encoded: bool) -> bytes:
    """A key or value from the command line as the bytes it stands for: its UTF-8 encoding, or,
    with --hex, the bytes its hex digits spell. Anything else is bad usage (exit 2)."""
    if hex_encoded:
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise KvctlError(f"{what} {text!r} is not hex digits (--hex), e.g. 6b6579 for 'key'", ExitCode.USAGE) from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Python hands arguments that are not UTF-8 over with their bytes escaped; fsencode undoes it.
        raw = os.fsencode(text)
        raise KvctlError(
            f"{what} {raw!r} is not UTF-8; pass its bytes as hex digits with --hex: {raw.hex()}", ExitCode.USAGE
        ) from None
def _tls(given: dict[str, Any]) -> TlsConfig | None:
    files = {flag: given.get("tls_" + flag.removeprefix("--")) or os.environ.get(env) for flag, env in TLS_ENV.items()}
    if not any(files.values()):
        return None
    missing = [flag for flag, path in files.items() if not path]
    if missing:
        raise KvctlError(f"--cacert, --cert and --key go together: missing {', '.join(missing)} "
                         f"(or {', '.join(TLS_ENV[flag] for flag in missing)})", ExitCode.USAGE)
    paths = {flag: Path(path) for flag, path in files.items() if path}
    return TlsConfig(ca=paths["--cacert"], cert=paths["--cert"], key=paths["--key"])


def run_with_client(ctx: click.Context, action: Callable[[Client], Awaitable[ResultT]]) -> ResultT:
    """Connect, run `action`, close; a client error becomes a one-line message and its exit code."""
    connection = settings(ctx)

    async def run() -> ResultT:
        # Not `async with`: the client connects on first use, so bad input is reported as bad
        # usage before any attempt to reach the cluster.
        client = Client(connection.endpoints, timeout=connection.timeout, tls=connection.tls, user=connection.user,
                        password=connection.password)
        try:
            return await action(client)
        finally:
            await client.close()

    try:
        return asyncio.run(run())
    except KvError as error:
        raise KvctlError(error.message, ERRORS[error.code].exit_code) from None


def epilog(examples: str, exit_codes: str) -> str:
    """A command's help epilog: its examples, then its exit codes, laid out as written."""
    return f"\b\nExamples:\n{examples}\n\n\b\n{exit_codes}"


class DataCommand(click.Command):
    """A kvctl command whose usage errors are one line, like its other errors (exit code 2)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as error:
            message = " ".join(error.format_message().split())
            raise KvctlError(f"{message} (see 'kvctl {self.name} --help')", ExitCode.USAGE) from None
