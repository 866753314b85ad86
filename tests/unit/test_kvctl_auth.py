"""kvctl's auth, user and role commands and --user, against a guarded node (loopback, in-memory
backend): their output, exit codes, and the one-line refusals."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from click.testing import CliRunner, Result
from kvctl.main import cli

from tests.fakes.guarded import serving


async def kvctl(address: str, *arguments: str, env: dict[str, str] | None = None) -> Result:
    """kvctl in a worker thread, so this loop keeps serving meanwhile (stdin is not a terminal)."""
    return await asyncio.to_thread(CliRunner().invoke, cli, [*arguments, "--endpoints", address, "--timeout", "5"],
                                   env=env)


async def test_users_roles_and_auth_from_the_command_line() -> None:
    async with serving() as served:
        a = served.address
        assert (await kvctl(a, "user", "add", "root:rootpw")).exit_code == 0
        enabled = await kvctl(a, "auth", "enable")
        assert enabled.exit_code == 0 and enabled.stdout.startswith("OK: auth enabled (auth revision ")
        anonymous = await kvctl(a, "put", "app/k", "v")
        assert anonymous.exit_code == 2 and "sign in" in anonymous.stderr
        root = ("--user", "root:rootpw")
        for command in (["role", "add", "app"], ["role", "grant", "app", "readwrite", "app/"],
                        ["user", "add", "alice:pw"], ["user", "grant-role", "alice", "app"],
                        ["user", "limit", "alice", "--requests", "50"]):
            result = await kvctl(a, *root, *command)
            assert result.exit_code == 0, result.output
        listed = json.loads((await kvctl(a, *root, "user", "list", "-o", "json")).stdout)
        assert {u["name"]: u["roles"] for u in listed["users"]} == {"alice": ["app"], "root": ["root"]}
        assert listed["users"][0]["rate_limit"]["requests_per_second"] == 50
        roles = json.loads((await kvctl(a, *root, "role", "list", "-o", "json")).stdout)
        assert roles["roles"][0]["grants"] == [{"prefix": "app/", "permission": "readwrite"}]
        assert (await kvctl(a, "--user", "alice:pw", "put", "app/k", "v")).exit_code == 0
        denied = await kvctl(a, "--user", "alice:pw", "get", "other/k")
        assert denied.exit_code == 2 and "user 'alice' lacks read permission on key 'other/k'" in denied.stderr
        not_root = await kvctl(a, "--user", "alice:pw", "user", "add", "eve:pw")
        assert not_root.exit_code == 2 and "lacks the root role" in not_root.stderr
        missing = await kvctl(a, *root, "user", "delete", "nobody")
        assert missing.exit_code == 1 and "there is no user 'nobody'" in missing.stderr
        env_user = await kvctl(a, "auth", "status", env={"KVSTORE_USER": "alice:pw"})
        assert re.fullmatch(r"auth enabled \(auth revision \d+\); you are 'alice'\n", env_user.stdout)


@pytest.mark.parametrize("arguments", [["--user", "alice", "get", "k"], ["user", "add", "alice"],
                                       ["user", "passwd", "alice"]])
async def test_a_password_that_cannot_be_asked_for_is_bad_usage(arguments: list[str]) -> None:
    async with serving() as served:
        result = await kvctl(served.address, *arguments)
        assert result.exit_code == 2 and "PASSWORD" in result.stderr


def test_cluster_up_auth_needs_tls() -> None:
    result = CliRunner().invoke(cli, ["cluster", "up", "--auth", "--data-dir", "unused"])
    assert result.exit_code == 2 and "--auth needs --tls" in result.stderr


@pytest.mark.parametrize("command", [["user", "add"], ["user", "passwd"], ["user", "limit"], ["role", "grant"],
                                     ["role", "revoke"], ["auth", "enable"]])
def test_the_auth_commands_help_shows_examples(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0 and "Examples:" in result.stdout and "kvctl " + " ".join(command) in result.stdout
