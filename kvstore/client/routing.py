"""The client's view of where each partition lives: the cached cluster layout plus leaders learned since."""

from __future__ import annotations

import random
from enum import Enum

from kvstore.client.types import ClusterLayout, ReadConsistency
from kvstore.ring import routing_key
from kvstore.ring.hashing import key_partition, partition_bits


class Pick(Enum):
    """Which replica of a partition a request goes to first."""

    LEADER = "leader"  # the known leader, else replicas in order: writes, LINEARIZABLE and LEASE reads
    ANY = "any"  # a replica at random, the leader included: SESSION reads spread the load
    FOLLOWER = "follower"  # a replica other than the known leader at random, the leader last: STALE reads

    @classmethod
    def for_read(cls, consistency: ReadConsistency) -> Pick:
        if consistency is ReadConsistency.SESSION:
            return cls.ANY
        if consistency is ReadConsistency.STALE:
            return cls.FOLLOWER
        return cls.LEADER


class Router:
    """Which node to ask for a partition. One per client, replaced state on every layout refresh."""

    def __init__(self, layout: ClusterLayout) -> None:
        self.layout = layout
        # The partition count is checked once here, not on every key.
        self._partition_bits = partition_bits(layout.partition_count)
        self._addresses = {member.id: member.address for member in layout.members}
        self._replicas = {info.id: info.replicas for info in layout.partitions}
        # Leaders change far more often than the layout; hints from NOT_LEADER answers land here.
        self._leaders = {info.id: info.leader for info in layout.partitions if info.leader}

    @property
    def partition_count(self) -> int:
        return self.layout.partition_count

    @property
    def epoch(self) -> int:
        return self.layout.epoch

    def partition_for(self, key: bytes) -> int:
        """The partition holding `key` (hash tags honoured)."""
        return key_partition(key, self._partition_bits)

    def partitions_under(self, prefix: bytes) -> list[int]:
        """The partitions that may hold keys starting with `prefix`: the one of its {hash tag}
        when the prefix fixes every such key's routing key, else all."""
        if routing_key(prefix) != prefix:
            return [self.partition_for(prefix)]
        return list(range(self.partition_count))

    def replicas_of(self, partition: int) -> tuple[int, ...]:
        return self._replicas.get(partition, ())

    def address_of(self, node_id: int) -> str | None:
        return self._addresses.get(node_id)

    def addresses(self) -> list[str]:
        return list(self._addresses.values())

    def note_leader(self, partition: int, node_id: int, address: str) -> None:
        self._leaders[partition] = node_id
        if address:
            # The hint may name a node that joined after our layout was fetched.
            self._addresses[node_id] = address

    def forget_leader(self, partition: int, node_id: int) -> None:
        if self._leaders.get(partition) == node_id:
            del self._leaders[partition]

    def choose(
        self, partition: int, excluded: set[int], pick: Pick = Pick.LEADER, rng: random.Random | None = None
    ) -> int | None:
        """The node to try next, among those not `excluded` (failed in this call): by `pick`, the
        known leader or else the first replica, or a replica drawn with `rng`. None: all failed."""
        leader = self._leaders.get(partition)
        candidates = [node_id for node_id in self._replicas.get(partition, ())
                      if node_id not in excluded and node_id in self._addresses]  # fmt: skip
        if pick is not Pick.LEADER and rng is not None:
            followers = [node_id for node_id in candidates if node_id != leader]
            pool = followers if pick is Pick.FOLLOWER and followers else candidates
            return rng.choice(pool) if pool else None
        if leader is not None and leader not in excluded and leader in self._addresses:
            return leader
        return candidates[0] if candidates else None
