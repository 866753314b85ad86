"""The cluster as its members report it: who is up, who leads each partition, how far behind.

`build_cluster_view` is pure: from the members, each partition's replicas and each member's
`Status` answer (or the short reason it gave none) it derives every node's and every
partition's state, and the lag of each replica. `ClusterStatusSource` gathers those answers over the public Cluster API, with
short timeouts, for the status page; `kvctl cluster status` builds the same view from its own
probes.

Lag, per replica: *commit lag* is how far its commit index trails the partition leader's (how
much it has yet to learn is committed), *apply lag* how far its applied index trails its own
commit index (committed work it has yet to apply).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc
from kvstore.statemachine.cluster_state import ClusterState

STATUS_TIMEOUT_S = 1.0
MAX_AGE_S = 0.5  # page views within this share one gathering


@dataclass(frozen=True, slots=True)
class ReplicaView:
    node: int
    commit: int
    applied: int
    commit_lag: int
    apply_lag: int


@dataclass(frozen=True, slots=True)
class PartitionView:
    id: int
    replicas: tuple[int, ...]  # preferred leader first
    leader: int  # the replica that reports leading it; 0 when none does
    term: int  # the highest term its answering replicas report
    commit: int  # the leader's commit index (the highest known when there is no leader)
    states: tuple[ReplicaView, ...]  # the replicas that answered


@dataclass(frozen=True, slots=True)
class NodeView:
    id: int
    address: str
    up: bool
    reason: str  # why it is down, in a few words; empty when up
    version: str = ""
    partitions_hosted: int = 0
    partitions_led: int = 0
    db_size_bytes: int = 0
    commit_lag: int = 0  # summed over its replicas
    apply_lag: int = 0


@dataclass(frozen=True, slots=True)
class ClusterView:
    epoch: int  # the newest cluster map epoch a member reports
    nodes: tuple[NodeView, ...]
    partitions: tuple[PartitionView, ...]


def map_replicas(cluster_state: ClusterState) -> dict[int, tuple[int, ...]]:
    """Partition -> its replicas, from the cluster map."""
    return {p: current.replicas for p, current in enumerate(cluster_state.partitions)}


def reported_replicas(answers: Mapping[int, pb.StatusResponse | str]) -> dict[int, tuple[int, ...]]:
    """Partition -> its replicas, as the members that answered report them (for a caller
    without the cluster map: partitions none of them hosts are missing)."""
    return {
        info.id: tuple(info.replicas)
        for answer in answers.values()
        if isinstance(answer, pb.StatusResponse)
        for info in answer.partitions
    }


def build_cluster_view(members: Mapping[int, str], replicas: Mapping[int, tuple[int, ...]],
                       answers: Mapping[int, pb.StatusResponse | str]) -> ClusterView:
    """The view from every member's answer: its `Status`, or why it gave none."""
    statuses = {node: answer for node, answer in answers.items() if isinstance(answer, pb.StatusResponse)}
    reported: dict[int, dict[int, pb.PartitionInfo]] = {}  # partition -> node -> what that node reports
    for node, status in statuses.items():
        for info in status.partitions:
            reported.setdefault(info.id, {})[node] = info
    partitions = []
    lags: dict[int, list[ReplicaView]] = {node: [] for node in statuses}
    for partition, partition_replicas in sorted(replicas.items()):
        infos = reported.get(partition, {})
        leader = next((node for node, info in infos.items() if info.leader == node), 0)
        commit = infos[leader].commit_index if leader else max((i.commit_index for i in infos.values()), default=0)
        states = []
        for node, info in sorted(infos.items()):
            state = ReplicaView(node, info.commit_index, info.applied_index, max(0, commit - info.commit_index),
                                info.commit_index - info.applied_index)
            states.append(state)
            lags[node].append(state)
        partitions.append(PartitionView(
            partition, partition_replicas, leader,
            max((i.term for i in infos.values()), default=0), commit, tuple(states),
        ))
    nodes = []
    for node_id, address in sorted(members.items()):
        answer = answers.get(node_id, "not asked")
        if isinstance(answer, str):
            nodes.append(NodeView(node_id, address, False, answer))
            continue
        nodes.append(NodeView(
            node_id, address, True, "", answer.version, answer.partitions_hosted, answer.partitions_led,
            answer.db_size_bytes, sum(s.commit_lag for s in lags[node_id]), sum(s.apply_lag for s in lags[node_id]),
        ))
    return ClusterView(max((s.epoch for s in statuses.values()), default=0), tuple(nodes), tuple(partitions))


def short_reason(error: grpc.aio.AioRpcError, timeout_s: float) -> str:
    """A few words on why a node gave no answer, instead of gRPC's paragraph."""
    code = error.code()
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer within {timeout_s:g}s"
    if code is grpc.StatusCode.UNAVAILABLE:
        details = (error.details() or "").lower()
        if "connection refused" in details:
            return "unreachable: connection refused"
        if "name resolution" in details or "dns" in details:
            return "unreachable: unknown host"
        return "unreachable"
    return code.name.lower().replace("_", " ")


async def fetch_status(channel_to: Callable[[str], grpc.aio.Channel], address: str,
                       timeout_s: float) -> pb.StatusResponse | str:
    """One node's `Status` through a channel from `channel_to`, or the short reason it gave none."""
    async with channel_to(address) as channel:
        try:
            return await kvstore_pb2_grpc.ClusterStub(channel).Status(pb.StatusRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            return short_reason(error, timeout_s)


class ClusterStatusSource:
    """Asks every member of the current cluster map for its status, all at once.

    Requests that arrive while a gathering is under way, or within `MAX_AGE_S` of the last one,
    share it: any number of open status pages cost the cluster one round per half second.
    """

    def __init__(self, cluster_state: Callable[[], ClusterState], channel_to: Callable[[str], grpc.aio.Channel],
                 timeout_s: float = STATUS_TIMEOUT_S) -> None:
        self._cluster_state = cluster_state
        self._channel_to = channel_to  # a new channel to an address (TLS with the node's certificate, if any)
        self._timeout_s = timeout_s
        self._lock = asyncio.Lock()
        self._last: tuple[float, ClusterView] | None = None

    async def view(self) -> ClusterView:
        async with self._lock:
            if self._last is not None and time.monotonic() - self._last[0] < MAX_AGE_S:
                return self._last[1]
            cluster_state = self._cluster_state()
            members = cluster_state.addresses()
            answers = await asyncio.gather(*(fetch_status(self._channel_to, a, self._timeout_s)
                                             for a in members.values()))
            view = build_cluster_view(members, map_replicas(cluster_state),
                                      dict(zip(members, answers, strict=True)))
            self._last = (time.monotonic(), view)
            return view
