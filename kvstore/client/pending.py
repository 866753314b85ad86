"""The request seqs of a client's writes, and which of them still await an answer."""

from __future__ import annotations

from collections import deque


class PendingSeqs:
    """Issues a client's request seqs (1, 2, ...) and tracks the writes still awaiting an answer.

    `lowest` is the client's word to the nodes (`RequestHeader.lowest_pending_seq`): it will never
    retry a seq below it, so a partition may forget its answers below it (Raft thesis §6.3) and
    its dedup table holds the requests in flight rather than a window of history.
    """

    def __init__(self) -> None:
        self._next = 1
        self._pending: set[int] = set()
        # The pending seqs in issue order, i.e. ascending; ended ones are dropped from the front
        # once no pending seq precedes them.
        self._issued: deque[int] = deque()

    def issue(self) -> int:
        """A new seq, pending until `end`."""
        seq = self._next
        self._next += 1
        self._pending.add(seq)
        self._issued.append(seq)
        return seq

    def end(self, seq: int) -> None:
        """The write of `seq` was answered, failed for good, or given up: the client will not
        send it again."""
        self._pending.discard(seq)
        issued = self._issued
        while issued and issued[0] not in self._pending:
            issued.popleft()

    @property
    def lowest(self) -> int:
        """The lowest seq still pending; the next to issue when none is."""
        return self._issued[0] if self._issued else self._next
