"""`kvctl txn`: compare-and-set transactions written as shell arguments."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click

from kvctl.connection import (
    DataCommand,
    KvctlError,
    argument_bytes,
    connection_options,
    hex_option,
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


def parse_compare(text: str, hex_encoded: bool = False) -> Compare:
    """``TARGET(KEY) OP OPERAND`` → a `Compare`; `KvctlError` (exit 2) with the reason otherwise.
    With `hex_encoded`, the key and a value() operand are hex digits."""
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
    operand: bytes | int
    if match["target"] == "value":
        operand = argument_bytes(operand_text, f"--compare {text!r}: value", hex_encoded)
    else:
        if not operand_text.isdigit():
            raise KvctlError(
                f"--compare {text!r}: {match['target']}() compares with a whole number, got {operand_text!r}",
                ExitCode.USAGE,
            )
        operand = int(operand_text)
    left = target(argument_bytes(_unquote(match["key"]), f"--compare {text!r}: key", hex_encoded))
    operator = match["operator"]
    if operator in ("=", "=="):
        return left == operand
    if operator == "!=":
        return left != operand
    return left > operand if operator == ">" else left < operand


def parse_op(text: str, option: str, hex_encoded: bool = False) -> Op:
    """``put KEY VALUE``, ``get KEY`` or ``del KEY`` → an operation (keys and values in hex with
    `hex_encoded`)."""
    try:
        words = shlex.split(text)
    except ValueError as error:
        raise KvctlError(f"{option} {text!r}: {error}", ExitCode.USAGE) from None

    def data(word: str, what: str) -> bytes:
        return argument_bytes(word, f"{option} {text!r}: {what}", hex_encoded)

    match words:
        case ["put", key, value]:
            return ops.put(data(key, "key"), data(value, "value"))
        case ["get", key]:
            return ops.get(data(key, "key"))
        case ["del" | "delete", key]:
            return ops.delete(data(key, "key"))
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
  # keys and values as hex (--hex), for bytes that are not UTF-8
  kvctl txn --hex --compare 'version(00ff) = 0' --then 'put 00ff c0ffee'
\b
  # acknowledged once every replica applied it
  kvctl txn --compare 'version(lock) = 0' --then 'put lock me' --concern all

\b
Prints SUCCESS (every compare held: the --then operations ran) or FAILURE (the --else
operations ran), then each operation that ran with what it returned.
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
@hex_option
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
    hex_encoded: bool,
) -> None:
    """Atomically: if every --compare holds, run the --then operations, else the --else ones."""
    if not (compares or success or failure):
        raise KvctlError("a transaction needs at least one --compare, --then or --else", ExitCode.USAGE)
    guards = [parse_compare(text, hex_encoded) for text in compares]
    then_ops = [parse_op(text, "--then", hex_encoded) for text in success]
    else_ops = [parse_op(text, "--else", hex_encoded) for text in failure]
    session = open_session(session_token, session_file)

    async def action(client: Client) -> TxnResult:
        return await client.txn(guards, then_ops, else_ops, concern=WriteConcern[concern.upper()])

    result = run_with_client(ctx, action, session)
    Printer(settings(ctx).output, session.token).txn(result, then_ops if result.succeeded else else_ops)
