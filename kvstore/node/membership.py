"""The node's side of membership that talks to other nodes: joining a running cluster, and
passing a meta command to the meta group's leader.

The decisions are pure and live elsewhere (`kvstore.node.reconcile`); the Ready loop carries
them out (`kvstore.node.server`). A node proposes a meta command itself when it leads the meta
group, and otherwise sends it to the leader over `Peer.ProposeMeta`: Raft here does not forward
proposals, and the answer (a new member's id, a refusal) must come back to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc, meta_pb2, peer_pb2_grpc
from kvstore.errors import NotLeaderError, UnavailableError, exception_for
from kvstore.node.reconcile import ReplicaView
from kvstore.node.transport import GRPC_OPTIONS, PeerChannels
from kvstore.raft import RawNode
from kvstore.statemachine.cluster_state import CommandResult

log = logging.getLogger("kvstore.membership")

JOIN_TIMEOUT_S = 10.0
FORWARD_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class JoinInfo:
    """What a running cluster tells a node that joins it."""

    node_id: int
    cluster_id: str
    partitions: int
    members: dict[int, str]  # node id -> address


async def join(seeds: Sequence[str], address: str, channels: PeerChannels) -> JoinInfo:
    """Ask the seeds, in turn, for this node's place in the cluster (it was added as a member
    listening on `address`); the first answer wins. KvError when none can say."""
    problems: list[str] = []
    for seed in seeds:
        async with channels.peer_channel(seed, GRPC_OPTIONS) as channel:
            try:
                response = await kvstore_pb2_grpc.ClusterStub(channel).Join(
                    pb.JoinRequest(address=address), timeout=JOIN_TIMEOUT_S)
            except grpc.aio.AioRpcError as e:
                problems.append(f"{seed}: {e.code().name}: {e.details()}")
                continue
        if response.HasField("error") and response.error.code:
            raise exception_for(response.error.code, response.error.message)
        return JoinInfo(response.node_id, response.cluster_id, response.partition_count,
                        {m.id: m.address for m in response.members})
    raise UnavailableError(f"no seed answered ({'; '.join(problems)}); check --join")


async def forward(channels: PeerChannels, address: str, command: meta_pb2.MetaCommand) -> CommandResult:
    """`command`'s result from the meta leader at `address`."""
    async with channels.peer_channel(address, GRPC_OPTIONS) as channel:
        try:
            result = await peer_pb2_grpc.PeerStub(channel).ProposeMeta(command, timeout=FORWARD_TIMEOUT_S)
        except grpc.aio.AioRpcError as e:
            if e.code() is grpc.StatusCode.UNAVAILABLE:  # not reached (it failed): an election is due
                raise NotLeaderError(f"the meta group's leader at {address} cannot be reached: {e.details()}") from None
            raise UnavailableError(f"the meta group's leader at {address} did not answer: "
                                   f"{e.code().name}: {e.details()}") from None
    return CommandResult.from_pb(result)


def replica_view(group: int, raw: RawNode) -> ReplicaView:
    """What reconcile needs to know of one of this node's replicas."""
    status = raw.status()
    return ReplicaView(group, status.leader, status.conf_state.voters, status.conf_state.learners, status.commit,
                       {node_id: peer.match for node_id, peer in status.progress.items()},
                       raw.conf_change_pending, raw.transferring_leadership)
