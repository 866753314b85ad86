"""What a node keeps of a replica it deleted (`Tombstone`). The Raft core never sees one: the
node stores it beside the group's log and filters the votes a re-created replica steps."""

from __future__ import annotations

from dataclasses import dataclass

from kvstore.raft.types import Message, MessageType


@dataclass(frozen=True, slots=True)
class Tombstone:
    """What a node keeps of a replica it deleted, should the group come back to it later.

    A re-created replica starts with an empty log. Under a newer configuration it is only a
    learner, but a member that missed the changes still counts it as a voter of the old one, and
    an empty log would vote for that member even when its own log lacks entries the group
    committed since: the two could elect a leader that overwrites committed entries (the cluster
    simulation found this). With its log, the deleted replica would have refused. So a re-created
    replica keeps the term and vote it had reached (it never votes twice in a term), and refuses
    every candidate whose log is behind where its deleted log ended, as that log would have.
    """

    term: int
    vote: int
    last_index: int
    last_term: int

    def refuses(self, message: Message) -> bool:
        """Whether `message` asks for a vote the deleted replica's log would have refused."""
        return (message.type in (MessageType.VOTE, MessageType.PRE_VOTE)
                and (message.log_term, message.index) < (self.last_term, self.last_index))

    def merged(self, newer: Tombstone) -> Tombstone:
        """The tombstone of a replica deleted again: the later term and vote, the furthest log."""
        furthest = max((self.last_term, self.last_index), (newer.last_term, newer.last_index))
        return Tombstone(newer.term, newer.vote, furthest[1], furthest[0])
