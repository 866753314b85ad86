"""A client session: the newest revision the client has seen of each partition, and the token
that carries it to another client or process.

Every answer a node gives carries a revision (a write: the revision it was applied at; a read:
the revision the replica had applied). A SESSION read asks for a replica that has applied at
least the session's revision of the key's partition, so the session reads its own writes and
never sees a partition go back in time (monotonic reads), whichever replica answers.

The token is plain text, safe in a shell variable or a file: ``PARTITION:REVISION`` pairs joined
by commas, e.g. ``3:118,7:40`` (empty: a session that has seen nothing). Importing a token and
then seeing newer revisions keeps the larger revision of each partition, so sessions merge.
"""

from __future__ import annotations

from collections.abc import Mapping

from kvstore.errors import InvalidArgumentError


class SessionRevisions:
    """Revisions per partition, only ever growing (a consistency session, unrelated to the
    lease-holding `kvstore.client.leases.Session`)."""

    __slots__ = ("_revisions",)

    def __init__(self, revisions: Mapping[int, int] | None = None) -> None:
        self._revisions: dict[int, int] = {}
        for partition, revision in (revisions or {}).items():
            self.note(partition, revision)

    @classmethod
    def from_token(cls, token: str) -> SessionRevisions:
        """The session a `token()` exported; `InvalidArgumentError` naming the bad part otherwise."""
        revisions: dict[int, int] = {}
        for item in filter(None, (part.strip() for part in token.strip().split(","))):
            partition, sep, revision = item.partition(":")
            if not (sep and partition.isdigit() and revision.isdigit()):
                raise InvalidArgumentError(
                    f"bad session token {token!r}: {item!r} is not PARTITION:REVISION (e.g. '3:118,7:40')"
                )
            revisions[int(partition)] = max(revisions.get(int(partition), 0), int(revision))
        return cls(revisions)

    def note(self, partition: int, revision: int) -> None:
        """The client saw `revision` of `partition`."""
        if revision > self._revisions.get(partition, 0):
            self._revisions[partition] = revision

    def merge(self, other: SessionRevisions) -> None:
        for partition, revision in other._revisions.items():
            self.note(partition, revision)

    def revision(self, partition: int) -> int:
        """The revision a SESSION read of `partition` must find applied (0: none seen)."""
        return self._revisions.get(partition, 0)

    def token(self) -> str:
        return ",".join(f"{partition}:{revision}" for partition, revision in sorted(self._revisions.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SessionRevisions) and self._revisions == other._revisions

    def __repr__(self) -> str:
        return f"SessionRevisions({self.token()!r})"
