"""The Cluster service: what a client needs to route (members, partition map, leaders)."""

from __future__ import annotations

from typing import Any

import kvstore
from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc
from kvstore.rpc.backend import Backend, PartitionStatus


class ClusterService(kvstore_pb2_grpc.ClusterServicer):
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def add_to(self, server: Any) -> None:
        kvstore_pb2_grpc.add_ClusterServicer_to_server(self, server)

    def _members(self) -> list[pb.Member]:
        members = self._backend.cluster_map.members
        return [pb.Member(id=int(node_id), name=f"node-{node_id}", address=address)
                for node_id, address in sorted(members.items(), key=lambda member: int(member[0]))]

    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusResponse:
        backend = self._backend
        statuses = backend.status()
        return pb.StatusResponse(
            node_id=backend.node_id,
            address=backend.address,
            version=kvstore.__version__,
            epoch=backend.cluster_map.epoch,
            partitions_hosted=len(statuses),
            partitions_led=sum(1 for s in statuses if s.leader == backend.node_id),
            partitions=[_partition_info(s) for s in statuses],
            db_size_bytes=backend.db_size_bytes(),
            quota_backend_bytes=backend.limits.quota_backend_bytes,
            alarms=[pb.Alarm(node_id=alarm.node_id, type=alarm.type.value)
                    for alarm in sorted(backend.control_state.alarms, key=lambda alarm: (alarm.node_id, alarm.type))],
            stored_bytes=backend.stored_bytes(),
        )

    async def Members(self, request: pb.MembersRequest, context: Any) -> pb.MembersResponse:
        return pb.MembersResponse(epoch=self._backend.cluster_map.epoch, members=self._members())

    async def Partitions(self, request: pb.PartitionsRequest, context: Any) -> pb.PartitionsResponse:
        cluster_map = self._backend.cluster_map
        hosted = {s.partition: s for s in self._backend.status()}
        partitions = []
        for p in range(cluster_map.partitions):
            status = hosted.get(p)
            # What this node knows of the partitions it holds a replica of; the placement of others.
            partitions.append(
                _partition_info(status)
                if status is not None
                else pb.PartitionInfo(id=p, replicas=[int(n) for n in cluster_map.replicas(p)])
            )
        return pb.PartitionsResponse(
            epoch=cluster_map.epoch,
            partition_count=cluster_map.partitions,
            replication_factor=cluster_map.replication_factor,
            partitions=partitions,
            members=self._members(),
        )


def _partition_info(status: PartitionStatus) -> pb.PartitionInfo:
    return pb.PartitionInfo(id=status.partition, replicas=status.replicas, leader=status.leader, term=status.term,
                            commit_index=status.commit, applied_index=status.applied)
