"""The Cluster service: what a client needs to route (members, partition map, leaders), and the
membership changes (any node takes them; the meta group's leader applies them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

import kvstore
from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc, meta_pb2
from kvstore.errors import KvError, NotFoundError, UnavailableError
from kvstore.rpc.backend import Backend, PartitionStatus
from kvstore.rpc.errors import raise_refusal, to_error
from kvstore.statemachine.cluster_state import ClusterState, CommandResult, Member, MemberState


class ClusterService(kvstore_pb2_grpc.ClusterServicer):
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def add_to(self, server: Any) -> None:
        kvstore_pb2_grpc.add_ClusterServicer_to_server(self, server)

    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusResponse:
        backend = self._backend
        statuses = backend.status()
        try:
            alarms = backend.control_state.alarms
        except UnavailableError:
            alarms = frozenset()  # a joining node does not know them yet; it says what it knows
        return pb.StatusResponse(
            node_id=backend.node_id,
            address=backend.address,
            version=kvstore.__version__,
            epoch=backend.epoch,
            partitions_hosted=len(statuses),
            partitions_led=sum(1 for s in statuses if s.leader == backend.node_id),
            partitions=[_partition_info(s) for s in statuses],
            db_size_bytes=backend.db_size_bytes(),
            quota_backend_bytes=backend.limits.quota_backend_bytes,
            alarms=[pb.Alarm(node_id=alarm.node_id, type=alarm.type.value)
                    for alarm in sorted(alarms, key=lambda alarm: (alarm.node_id, alarm.type))],
            stored_bytes=backend.stored_bytes(),
        )

    async def _state(self, context: Any) -> ClusterState:
        """The cluster state, or the call ends UNAVAILABLE (a joining node does not know it yet:
        the client asks another node)."""
        try:
            return self._backend.cluster_state
        except UnavailableError as error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, error.message)
            raise  # abort raises; this line is for the type checker

    async def Members(self, request: pb.MembersRequest, context: Any) -> pb.MembersResponse:
        state = await self._state(context)
        return pb.MembersResponse(epoch=state.epoch, members=[_member(m) for m in state.members])

    async def Partitions(self, request: pb.PartitionsRequest, context: Any) -> pb.PartitionsResponse:
        state = await self._state(context)
        hosted = {s.partition: s for s in self._backend.status()}
        partitions = []
        for p, current in enumerate(state.partitions):
            info = pb.PartitionInfo(id=p, replicas=current.replicas, learners=current.learners)
            status = hosted.get(p)
            if status is not None:  # what this node knows of the partitions it holds a replica of
                info.leader, info.term = status.leader, status.term
                info.commit_index, info.applied_index = status.commit, status.applied
            if current.move is not None:
                progress = current.move.progress(p)
                info.moving_to.extend(current.move.target)
                info.move_step, info.move_steps = progress.done, len(progress.steps)
            partitions.append(info)
        return pb.PartitionsResponse(
            epoch=state.epoch,
            partition_count=state.partition_count,
            replication_factor=state.replication_factor,
            partitions=partitions,
            members=[_member(m) for m in state.members if m.state is not MemberState.REMOVED],
        )

    async def MemberAdd(self, request: pb.MemberAddRequest, context: Any) -> pb.MemberChangeResponse:
        command = meta_pb2.MetaCommand(add_member=meta_pb2.AddMember(address=request.address))
        return await self._change(command, lambda result: result.node_id)

    async def MemberRemove(self, request: pb.MemberRemoveRequest, context: Any) -> pb.MemberChangeResponse:
        command = meta_pb2.MetaCommand(remove_member=meta_pb2.RemoveMember(node_id=request.node_id))
        return await self._change(command, lambda _: request.node_id)

    async def MemberReplace(self, request: pb.MemberReplaceRequest, context: Any) -> pb.MemberChangeResponse:
        command = meta_pb2.MetaCommand(
            replace_member=meta_pb2.ReplaceMember(node_id=request.node_id, address=request.address))
        return await self._change(command, lambda result: result.node_id or request.node_id)

    async def _change(self, command: meta_pb2.MetaCommand,
                      member_of: Callable[[CommandResult], int]) -> pb.MemberChangeResponse:
        """Propose `command` and answer with the member it concerns (`member_of(result)`'s id)."""
        response = pb.MemberChangeResponse()
        backend = self._backend
        try:
            result: CommandResult = await backend.propose_meta(command)
            raise_refusal(result)
            response.epoch = result.epoch
            response.member.id = member_of(result)
            state = backend.cluster_state
            member = state.member(response.member.id) if state.epoch >= result.epoch else None
            if member is not None:
                response.member.CopyFrom(_member(member))
        except Exception as error:  # every failure goes to the caller through the one error table
            response.error.CopyFrom(to_error(error, backend.epoch, backend.address_of))
        response.header.node_id = backend.node_id
        response.header.epoch = response.epoch or backend.epoch
        return response

    async def Join(self, request: pb.JoinRequest, context: Any) -> pb.JoinResponse:
        backend = self._backend
        try:
            state = backend.cluster_state
            joining = _joining_at(state, request.address)
        except KvError as error:
            return pb.JoinResponse(error=to_error(error, backend.epoch, backend.address_of))
        return pb.JoinResponse(
            node_id=joining.id, cluster_id=backend.cluster_id, partition_count=state.partition_count,
            members=[pb.Member(id=node_id, address=address) for node_id, address in sorted(state.addresses().items())],
        )


def _joining_at(state: ClusterState, address: str) -> Member:
    for member in state.members:
        if member.address == address and member.state is MemberState.JOINING and not member.lost:
            return member
    raise NotFoundError(f"no member is joining at {address}: add it first with `kvctl member add --address "
                        f"{address}`")


def _member(member: Member) -> pb.Member:
    return pb.Member(id=member.id, name=f"node-{member.id}", address=member.address, state=member.state.value,
                     lost=member.lost)


def _partition_info(status: PartitionStatus) -> pb.PartitionInfo:
    return pb.PartitionInfo(id=status.partition, replicas=status.replicas, leader=status.leader, term=status.term,
                            commit_index=status.commit, applied_index=status.applied)
