"""When the leader acknowledges a write, by its write concern.

* MAJORITY (default): once this leader applied the entry. It was committed first, i.e. durable
  in the logs of a quorum, so it survives any failover the cluster survives.
* ALL: the applier's response is held until every current replica (voters and learners) has
  reported that it applied the entry (`RawNode.applied_by_all`, from the `applied` field of
  their append and heartbeat responses). A replica that is down, paused or cut off holds the
  acknowledgement back until the request times out; the write is then committed, and its
  outcome unknown to the client.
* LEADER: as soon as the entry is durable in this leader's own log, before it is replicated,
  committed or applied: the answer is `LeaderDurable(index)`. If this leader fails before a
  quorum has the entry, a new leader's log replaces it: the acknowledged write is lost. Since
  nothing is applied yet, the answer can carry no result that needs the apply: a transaction
  (did its compares hold?) or `prev_kv` is refused with LEADER (the servicer checks).
"""

from __future__ import annotations

import asyncio
from collections import deque

from kvstore.errors import KvError
from kvstore.rpc.backend import LeaderDurable, WriteOutcome
from kvstore.statemachine import WriteResponse


class WriteAcks:
    """The acknowledgements one leader replica holds back: LEADER writes until their entry is on
    disk, ALL writes until every replica applied theirs. Both queues are in log order."""

    __slots__ = ("_durable", "_all")

    def __init__(self) -> None:
        self._durable: deque[tuple[int, asyncio.Future[WriteOutcome]]] = deque()
        self._all: deque[tuple[int, asyncio.Future[WriteOutcome], WriteResponse]] = deque()

    @property
    def holding_for_all(self) -> bool:
        return bool(self._all)

    def when_durable(self, index: int, future: asyncio.Future[WriteOutcome]) -> None:
        """A LEADER write proposed at `index`."""
        self._durable.append((index, future))

    def persisted(self, last_index: int) -> None:
        """The log is durable up to `last_index`: acknowledge the LEADER writes it holds."""
        durable = self._durable
        while durable and durable[0][0] <= last_index:
            index, future = durable.popleft()
            if not future.done():
                future.set_result(LeaderDurable(index))

    def hold_for_all(self, index: int, future: asyncio.Future[WriteOutcome], response: WriteResponse) -> None:
        """An ALL write applied here at `index`, answered with `response` once every replica has it."""
        self._all.append((index, future, response))

    def applied_by_all(self, index: int) -> None:
        """Every replica has applied up to `index`: acknowledge the ALL writes it covers."""
        held = self._all
        while held and held[0][0] <= index:
            _, future, response = held.popleft()
            if not future.done():
                future.set_result(response)

    def fail(self, error: KvError) -> None:
        """Leadership was lost: these writes may or may not survive (LEADER), or are applied but
        not known to be everywhere (ALL); either way their outcome is unknown to the client."""
        for _, future in self._durable:
            if not future.done():
                future.set_exception(error)
        for _, future, _ in self._all:
            if not future.done():
                future.set_exception(error)
        self._durable.clear()
        self._all.clear()
