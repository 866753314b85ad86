"""The Cluster service: what a client needs to route (members, partition map, leaders)."""

from __future__ import annotations

from typing import Any

import kvstore
from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc
from kvstore.node.server import Node


class ClusterService(kvstore_pb2_grpc.ClusterServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    def add_to(self, server: Any) -> None:
        kvstore_pb2_grpc.add_ClusterServicer_to_server(self, server)

    def _members(self) -> list[pb.Member]:
        return [pb.Member(id=node_id, name=f"node-{node_id}", address=address)
                for node_id, address in sorted(self.node.config.peers.items())]

    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusResponse:
        node = self.node
        statuses = node.status()
        return pb.StatusResponse(
            node_id=node.id,
            address=node.config.listen,
            version=kvstore.__version__,
            epoch=node.cluster_map.epoch,
            partitions_hosted=len(statuses),
            partitions_led=sum(1 for s in statuses if s.leader == node.id),
            partitions=[
                pb.PartitionInfo(id=s.partition, replicas=s.replicas, leader=s.leader, term=s.term,
                                 commit_index=s.commit, applied_index=s.applied)
                for s in statuses
            ],
            db_size_bytes=node.engine.approximate_size() if node.engine is not None else 0,
        )

    async def Members(self, request: pb.MembersRequest, context: Any) -> pb.MembersResponse:
        return pb.MembersResponse(epoch=self.node.cluster_map.epoch, members=self._members())

    async def Partitions(self, request: pb.PartitionsRequest, context: Any) -> pb.PartitionsResponse:
        node = self.node
        cluster_map = node.cluster_map
        hosted = {s.partition: s for s in node.status()}
        partitions = []
        for p in range(cluster_map.partitions):
            info = pb.PartitionInfo(id=p, replicas=[int(n) for n in cluster_map.replicas(p)])
            status = hosted.get(p)
            if status is not None:  # what this node knows of the partitions it holds a replica of
                info.leader, info.term = status.leader, status.term
                info.commit_index, info.applied_index = status.commit, status.applied
            partitions.append(info)
        return pb.PartitionsResponse(
            epoch=cluster_map.epoch,
            partition_count=cluster_map.partitions,
            replication_factor=cluster_map.replication_factor,
            partitions=partitions,
            members=self._members(),
        )
