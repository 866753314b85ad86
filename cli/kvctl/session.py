"""kvctl's session: read-your-writes and monotonic reads across separate kvctl commands.

One kvctl command is one client, and its session (the newest revision it saw of each partition,
`kvstore.client.session`) would end with it. A shell cannot let a command change the shell's
environment, so the session travels in one of two ways:

* a session FILE: ``KVSTORE_SESSION=/path/file`` (or ``--session-file``). Each command starts from
  the token in the file and merges the revisions it saw back into it (under a lock, so concurrent
  commands do not lose each other's revisions). The file is created on first use.

      export KVSTORE_SESSION=$(mktemp)
      kvctl put greeting hello
      kvctl get greeting --consistency session     # any replica that has the put

* a TOKEN, passed by hand: every command's ``-o json`` output carries ``session_token``; give it
  to a later command with ``--session-token``.

      token=$(kvctl put greeting hello -o json | jq -r .session_token)
      kvctl get greeting --consistency session --session-token "$token"
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from kvstore.client.session import SessionRevisions
from kvstore.errors import InvalidArgumentError

SESSION_ENV = "KVSTORE_SESSION"


class SessionFileError(Exception):
    """The session cannot be read or written; the message says which and why (one line)."""


@dataclass(slots=True)
class SessionStore:
    """Where a command's session comes from (`token`: what its client starts with) and goes to
    (`path`); after `finish`, `token` is the session the command ended with."""

    token: str
    path: Path | None

    @classmethod
    def open(cls, token: str | None, path: Path | None) -> SessionStore:
        """The session of `token` and of the file at `path` (missing: empty) together."""
        session = SessionRevisions()
        try:
            if token:
                session.merge(SessionRevisions.from_token(token))
            if path is not None and path.exists():
                session.merge(SessionRevisions.from_token(path.read_text(encoding="utf-8")))
        except InvalidArgumentError as error:
            raise SessionFileError(error.message) from None
        except OSError as error:
            raise SessionFileError(f"cannot read the session file {path}: {error.strerror}") from None
        return cls(session.token(), path)

    def finish(self, token: str) -> None:
        """The command's client ended with session `token`: merge it into the file, if any,
        under a lock, so that concurrent commands sharing the file lose none of each other's."""
        session = SessionRevisions.from_token(token)
        if self.path is not None:
            try:
                with self.path.open("a+", encoding="utf-8") as stream:
                    fcntl.flock(stream, fcntl.LOCK_EX)  # released on close
                    stream.seek(0)
                    session.merge(SessionRevisions.from_token(stream.read()))
                    stream.seek(0)
                    stream.truncate()
                    stream.write(session.token() + "\n")
            except OSError as error:
                raise SessionFileError(f"cannot update the session file {self.path}: {error.strerror}") from None
            except InvalidArgumentError as error:
                raise SessionFileError(f"session file {self.path}: {error.message}") from None
        self.token = session.token()


def session_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--session-token TOKEN` and `--session-file FILE` (env KVSTORE_SESSION)."""
    command = click.option(
        "--session-file",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar=SESSION_ENV,
        metavar="FILE",
        help=f"Continue the session kept in FILE, and update it (env {SESSION_ENV}): SESSION reads then "
        "see the writes and reads of every earlier command that used the file.",
    )(command)
    return click.option(
        "--session-token",
        metavar="TOKEN",
        help="Continue the session of an earlier command: the session_token of its -o json output.",
    )(command)
