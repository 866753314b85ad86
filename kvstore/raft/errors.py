"""Errors raised by the Raft core and its log storage."""

from __future__ import annotations

from kvstore.raft.types import NONE


class RaftError(Exception):
    """Base class of every error the Raft core raises."""


class NotLeaderError(RaftError):
    """A proposal or read reached a node that is not the leader; `leader_hint` may help."""

    def __init__(self, leader_hint: int = NONE) -> None:
        self.leader_hint = leader_hint
        hint = f"; leader is node {leader_hint}" if leader_hint != NONE else "; leader unknown"
        super().__init__(f"not the leader{hint}")


class ProposalDroppedError(RaftError):
    """The leader refused a proposal for now (transfer in progress, conf change pending)."""


class CompactedError(RaftError):
    """The requested index has been compacted into a snapshot."""


class UnavailableError(RaftError):
    """The requested index is beyond the last index in storage."""


class SnapshotTemporarilyUnavailableError(RaftError):
    """Storage is producing a snapshot; ask again later."""
