"""`kvctl auth|user|role`: turning authentication on and off, users, roles and their grants.

Once auth is enabled every command needs a user (`--user NAME[:PASSWORD]`, `KVSTORE_USER`, or a
TLS client certificate whose common name is the user), and these commands need the root role.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

import click

from kvctl.connection import DataCommand, KvctlError, connection_options, run_with_client, settings
from kvctl.exitcodes import ExitCode
from kvctl.printer import Printer
from kvstore.client import Client
from kvstore.client.types import AuthStatus, Permission, RateLimit, Role, User

_EXIT_CODES = ("Exit codes: 0 ok, 1 no such user or role, 2 bad usage or refused (not root, a name that "
               "exists, auth enabled without a root user), 3 unavailable or timed out.")


def _command(group: click.Group, name: str, examples: str) -> Callable[[Callable[..., None]], click.Command]:
    """A subcommand of `group` with the connection options, its examples and the exit codes."""
    def decorate(function: Callable[..., None]) -> click.Command:
        command = group.command(name, cls=DataCommand, epilog=f"\b\nExamples:\n{examples}\n\n\b\n{_EXIT_CODES}")
        return command(connection_options(click.pass_context(function)))
    return decorate


def _run(ctx: click.Context, action: Callable[[Client], Awaitable[int]], done: str) -> None:
    """Make a change; print it with the auth revision it applied at."""
    revision = run_with_client(ctx, action)
    Printer(settings(ctx).output).done(done, revision)


def _new_password(argument: str, what: str) -> tuple[str, str]:
    """NAME[:PASSWORD] -> (name, password), asking for it (twice) on a terminal when missing."""
    name, colon, password = argument.partition(":")
    if colon:
        if not password:
            raise KvctlError(f"the password for {name!r} is empty", ExitCode.USAGE)
        return name, password
    if not sys.stdin.isatty():
        raise KvctlError(f"no password for {what} {name!r}: give {name}:PASSWORD, or --no-password for a user "
                         "who signs in with a client certificate", ExitCode.USAGE)
    return name, click.prompt(f"password for {name}", hide_input=True, confirmation_prompt=True, err=True)


# -- auth -----------------------------------------------------------------------------------


@click.group("auth")
def auth() -> None:
    """Turn authentication on or off; see whether it is on and who you are."""


@_command(auth, "enable", "  kvctl user add root          # first: enabling needs the user root\n  kvctl auth enable")
def enable(ctx: click.Context) -> None:
    """Require every call to come from a user (needs the user root, who keeps every right)."""
    _run(ctx, lambda client: client.auth.enable(), "auth enabled")


@_command(auth, "disable", "  kvctl --user root auth disable")
def disable(ctx: click.Context) -> None:
    """Let anyone do anything again (users and roles are kept; tokens issued so far are void)."""
    _run(ctx, lambda client: client.auth.disable(), "auth disabled")


@_command(auth, "status", "  kvctl auth status\n  kvctl --user alice auth status -o json")
def auth_status(ctx: click.Context) -> None:
    """Whether auth is enabled, the auth revision, and the user the cluster takes you for."""

    async def action(client: Client) -> AuthStatus:
        return await client.auth.status()

    Printer(settings(ctx).output).auth_status(run_with_client(ctx, action))


# -- users ----------------------------------------------------------------------------------


@click.group("user")
def user() -> None:
    """Add, delete and list users; set passwords, roles and rate limits."""


@_command(user, "add", "  kvctl user add root             # asks for the password\n"
                       "  kvctl user add alice:s3cret\n"
                       "  kvctl user add bob --no-password   # bob signs in with a certificate, CN=bob")
@click.argument("name", metavar="NAME[:PASSWORD]")
@click.option("--no-password", is_flag=True, help="A user who signs in with a TLS client certificate only.")
def user_add(ctx: click.Context, name: str, no_password: bool) -> None:
    """Add a user (the user root gets the root role)."""
    if no_password:
        if ":" in name:
            raise KvctlError("--no-password and NAME:PASSWORD contradict each other", ExitCode.USAGE)
        password = None
    else:
        name, password = _new_password(name, "user")
    _run(ctx, lambda client: client.auth.user_add(name, password), f"user {name} added")


@_command(user, "delete", "  kvctl user delete alice")
@click.argument("name")
def user_delete(ctx: click.Context, name: str) -> None:
    """Delete a user (its tokens are void at once)."""
    _run(ctx, lambda client: client.auth.user_delete(name), f"user {name} deleted")


@_command(user, "passwd", "  kvctl user passwd alice          # asks for the new password\n"
                          "  kvctl user passwd alice:n3w")
@click.argument("name", metavar="NAME[:PASSWORD]")
def user_passwd(ctx: click.Context, name: str) -> None:
    """Change a user's password (the tokens issued before are void)."""
    name, password = _new_password(name, "user")
    _run(ctx, lambda client: client.auth.user_change_password(name, password), f"password of {name} changed")


@_command(user, "grant-role", "  kvctl user grant-role alice app")
@click.argument("name")
@click.argument("role")
def user_grant_role(ctx: click.Context, name: str, role: str) -> None:
    """Give a user a role (the role root makes it an administrator)."""
    _run(ctx, lambda client: client.auth.user_grant_role(name, role), f"role {role} granted to {name}")


@_command(user, "revoke-role", "  kvctl user revoke-role alice app")
@click.argument("name")
@click.argument("role")
def user_revoke_role(ctx: click.Context, name: str, role: str) -> None:
    """Take a role from a user."""
    _run(ctx, lambda client: client.auth.user_revoke_role(name, role), f"role {role} revoked from {name}")


def _limit_options(function: Callable[..., None]) -> Callable[..., None]:
    function = click.option("--bytes", "bytes_per_second", type=click.FloatRange(min=0), default=0.0,
                            help="Request bytes per second, per node (0: not limited here).")(function)
    return click.option("--requests", "requests_per_second", type=click.FloatRange(min=0), default=0.0,
                        help="Operations per second, per node; a batch counts its operations (0: not limited "
                             "here).")(function)


@_command(user, "limit", "  kvctl user limit alice --requests 100 --bytes 1000000\n"
                         "  kvctl user limit alice            # back to its roles' limit, or the node default")
@click.argument("name")
@_limit_options
def user_limit(ctx: click.Context, name: str, requests_per_second: float, bytes_per_second: float) -> None:
    """Set a user's rate limit at each node, which replaces its roles' and the node default."""
    limit = RateLimit(requests_per_second, bytes_per_second)
    _run(ctx, lambda client: client.auth.user_set_rate_limit(name, limit), f"rate limit of user {name} set")


@_command(user, "list", "  kvctl user list\n  kvctl user list -o json")
def user_list(ctx: click.Context) -> None:
    """List the users with their roles and rate limits."""

    async def action(client: Client) -> list[User]:
        return await client.auth.user_list()

    Printer(settings(ctx).output).users(run_with_client(ctx, action))


# -- roles ----------------------------------------------------------------------------------


@click.group("role")
def role() -> None:
    """Add, delete and list roles; grant and revoke read or readwrite on key prefixes."""


@_command(role, "add", "  kvctl role add app")
@click.argument("name")
def role_add(ctx: click.Context, name: str) -> None:
    """Add a role (it grants nothing until `role grant`)."""
    _run(ctx, lambda client: client.auth.role_add(name), f"role {name} added")


@_command(role, "delete", "  kvctl role delete app")
@click.argument("name")
def role_delete(ctx: click.Context, name: str) -> None:
    """Delete a role; the users that had it lose it."""
    _run(ctx, lambda client: client.auth.role_delete(name), f"role {name} deleted")


@_command(role, "grant", "  kvctl role grant app readwrite app/     # every key starting with app/\n"
                         "  kvctl role grant audit read ''          # every key")
@click.argument("name")
@click.argument("permission", type=click.Choice(["read", "readwrite"]))
@click.argument("prefix")
def role_grant(ctx: click.Context, name: str, permission: str, prefix: str) -> None:
    """Grant read or readwrite on every key starting with PREFIX (replacing the role's grant on it)."""
    access = Permission[permission.upper()]
    _run(ctx, lambda client: client.auth.role_grant(name, prefix, access), f"{permission} on {prefix!r} granted to {name}")


@_command(role, "revoke", "  kvctl role revoke app app/")
@click.argument("name")
@click.argument("prefix")
def role_revoke(ctx: click.Context, name: str, prefix: str) -> None:
    """Take back the role's grant on PREFIX."""
    _run(ctx, lambda client: client.auth.role_revoke(name, prefix), f"grant on {prefix!r} revoked from {name}")


@_command(role, "limit", "  kvctl role limit app --requests 500")
@click.argument("name")
@_limit_options
def role_limit(ctx: click.Context, name: str, requests_per_second: float, bytes_per_second: float) -> None:
    """Set the rate limit of the role's users at each node (a user with several roles gets the
    most generous; a user's own limit wins)."""
    limit = RateLimit(requests_per_second, bytes_per_second)
    _run(ctx, lambda client: client.auth.role_set_rate_limit(name, limit), f"rate limit of role {name} set")


@_command(role, "list", "  kvctl role list\n  kvctl role list -o json")
def role_list(ctx: click.Context) -> None:
    """List the roles with their grants and rate limits."""

    async def action(client: Client) -> list[Role]:
        return await client.auth.role_list()

    Printer(settings(ctx).output).roles(run_with_client(ctx, action))
