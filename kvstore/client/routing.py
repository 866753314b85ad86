"""The client's view of where each partition lives: the cached cluster layout plus leaders learned since."""

from __future__ import annotations

from kvstore.client.types import ClusterLayout
from kvstore.ring import routing_key
from kvstore.ring.hashing import key_partition, partition_bits


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

    def choose(self, partition: int, excluded: set[int]) -> int | None:
        """The node to try next: the known leader, else the first replica not yet failed in this call."""
        leader = self._leaders.get(partition)
        if leader is not None and leader not in excluded and leader in self._addresses:
            return leader
        for node_id in self._replicas.get(partition, ()):
            if node_id not in excluded and node_id in self._addresses:
                return node_id
        return None
