"""`kvctl txn`: compare-and-set transactions written as shell arguments."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click

from kvctl.connection import (
    DataCommand,
    KvctlError,
    connection_options,
    open_session,
    run_with_client,
    settings,
)
from kvctl.exitcodes import ExitCode
from kvctl.printer import Printer
from kvctl.session import session_options
from kvstore.client import Client, Compare, Op, TxnResult, WriteConcern, ops

# A quoted word ("..." with backslash escapes, or '...') or a bare word without quotes, spaces or parens.
_WORD = r"""(?:"(?:[^"\\]|\\.)*"|'[^']*'|[^\s()'"=!<>]+)"""
_COMPARE = re.compile(
    rf"""^\s*(?P<target>[a-z_]+)\s*\(\s*(?P<key>{_WORD})\s*\)\s*(?P<operator>==|=|!=|>|<)\s*(?P<operand>{_WORD})\s*$"""
)

_TARGETS = {
    "value": ops.value,
    "version": ops.version,
    "mod": ops.mod_revision,
    "mod_revision": ops.mod_revision,
    "create": ops.create_revision,
    "create_revision": ops.create_revision,
}


def _unquote(word: str) -> str:
    return shlex.split(word)[0] if word[0] in "\"'" else word


def parse_compare(text: str) -> Compare:
    """``TARGET(KEY) OP OPERAND`` → a `Compare`; `KvctlError` (exit 2) with the reason otherwise."""
    match = _COMPARE.match(text)
    if match is None:
        raise KvctlError(
            f"--compare {text!r}: expected TARGET(KEY) OP OPERAND, e.g. 'value(\"k\") = \"v\"' or 'version(k) > 0'",
            ExitCode.USAGE,
        )
    target = _TARGETS.get(match["target"])
    if target is None:
        raise KvctlError(
            f"--compare {text!r}: unknown target {match['target']!r} (use {', '.join(_TARGETS)})",
            ExitCode.USAGE,
        )
    operand_text = _unquote(match["operand"])
    operand: str | int = operand_text
    if match["target"] != "value":
        if not operand_text.isdigit():
            raise KvctlError(
                f"--compare {text!r}: {match['target']}() compares with a whole number, got {operand_text!r}",
                ExitCode.USAGE,
            )
        operand = int(operand_text)
    left = target(_unquote(match["key"]))
    operator = match["operator"]
    if operator in ("=", "=="):
        return left == operand
    if operator == "!=":
        return left != operand
    return left > operand if operator == ">" else left < operand


def parse_op(text: str, option: str) -> Op:
    """``put KEY VALUE``, ``get KEY`` or ``del KEY`` → an operation."""
    try:
        words = shlex.split(text)
    except ValueError as error:
        raise KvctlError(f"{option} {text!r}: {error}", ExitCode.USAGE) from None
    match words:
        case ["put", key, value]:
            return ops.put(key, value)
        case ["get", key]:
            return ops.get(key)
        case ["del" | "delete", key]:
            return ops.delete(key)
    raise KvctlError(
        f"{option} {text!r}: expected 'put KEY VALUE', 'get KEY' or 'del KEY' (quote words with spaces)",
        ExitCode.USAGE,
    )


@click.command(
    "txn",
    cls=DataCommand,
    epilog="""\b
Compare syntax:  TARGET(KEY) OP OPERAND
  TARGET   value | version | mod (mod_revision) | create (create_revision)
  OP       =  !=  >  <
  OPERAND  a string for value(), a whole number for the others
  Quote keys and values containing spaces or ( ) = ! < > with "..." or '...'.
  A missing key has version, mod and create 0; value() of a missing key is never equal.

\b
Operation syntax (--then, --else):  put KEY VALUE | get KEY | del KEY

\b
All keys must be in one partition: give them a common {hash tag}.

\b
Examples:
  # set a key only if it does not exist yet
  kvctl txn --compare 'version(lock) = 0' --then 'put lock me'
\b
  # compare-and-swap, printing the current value when it fails
  kvctl txn --compare 'value("{acct}:a") = "10"' \\
            --then 'put {acct}:a 0' --then 'put {acct}:b 10' --else 'get {acct}:a'

\b

  # wait until every replica applied it
  kvctl txn --compare 'version(lock) = 0' --then 'put lock me' --concern all


Prints SUCCESS or FAILURE, then the results of the operations that ran.
Exit codes: 0 ran (either branch), 2 bad usage or request refused (not applied),
3 unavailable or timed out (outcome unknown: it may have been applied).""",
)
@click.option(
    "--compare",
    "compares",
    multiple=True,
    metavar="'TARGET(KEY) OP OPERAND'",
    help="A guard (repeatable; all must hold).",
)
@click.option(
    "--then", "success", multiple=True, metavar="'OP ...'", help="Run when every compare holds (repeatable)."
)
@click.option("--else", "failure", multiple=True, metavar="'OP ...'", help="Run otherwise (repeatable).")
@click.option(
    "--concern",
    type=click.Choice([concern.name.lower() for concern in WriteConcern]),
    default="majority",
    show_default=True,
    help="When the transaction is acknowledged: majority (a quorum has it) or all (every replica applied "
    "it). leader is refused: whether the compares held is known only once a quorum has it and it is applied.",
)
@session_options
@connection_options
@click.pass_context
def txn(
    ctx: click.Context,
    compares: tuple[str, ...],
    success: tuple[str, ...],
    failure: tuple[str, ...],
    concern: str,
    session_token: str | None,
    session_file: Path | None,
) -> None:
    """Atomically: if every --compare holds, run the --then operations, else the --else ones."""
    if not (compares or success or failure):
        raise KvctlError("a transaction needs at least one --compare, --then or --else", ExitCode.USAGE)
    guards = [parse_compare(text) for text in compares]
    then_ops = [parse_op(text, "--then") for text in success]
    else_ops = [parse_op(text, "--else") for text in failure]
    session = open_session(session_token, session_file)

    async def action(client: Client) -> TxnResult:
        return await client.txn(guards, then_ops, else_ops, concern=WriteConcern[concern.upper()])

    result = run_with_client(ctx, action, session)
    Printer(settings(ctx).output, session.token).txn(result)
