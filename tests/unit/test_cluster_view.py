"""The cluster view behind the status page and `kvctl cluster status`: leaders, lag, nodes down."""

from __future__ import annotations

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore.node.cluster_view import build_cluster_view, map_replicas, reported_replicas, short_reason
from kvstore.statemachine.cluster_state import ClusterState

MEMBERS = {1: "10.0.0.1:2379", 2: "10.0.0.2:2379", 3: "10.0.0.3:2379"}


def status(node: int, *partitions: tuple[int, int, int, int, int]) -> pb.StatusResponse:
    """(partition, leader, term, commit, applied) per hosted replica; every partition on nodes 1-3."""
    infos = [pb.PartitionInfo(id=p, replicas=[1, 2, 3], leader=leader, term=term, commit_index=commit,
                              applied_index=applied) for p, leader, term, commit, applied in partitions]
    return pb.StatusResponse(node_id=node, version="0.1.0", epoch=1, partitions_hosted=len(infos),
                             partitions_led=sum(1 for i in infos if i.leader == node), partitions=infos)


def test_leader_and_lag_come_from_what_each_replica_reports() -> None:
    answers: dict[int, pb.StatusResponse | str] = {
        1: status(1, (0, 1, 4, 100, 100), (1, 2, 3, 48, 45)),
        2: status(2, (0, 1, 4, 97, 90), (1, 2, 3, 50, 50)),
        3: "unreachable: connection refused",
    }
    view = build_cluster_view(MEMBERS, {0: (1, 2, 3), 1: (2, 3, 1)}, answers)

    p0, p1 = view.partitions
    assert (p0.leader, p0.term, p0.commit) == (1, 4, 100)
    assert [(s.node, s.commit_lag, s.apply_lag) for s in p0.states] == [(1, 0, 0), (2, 3, 7)]
    assert (p1.leader, p1.commit, p1.replicas) == (2, 50, (2, 3, 1))
    assert [(s.node, s.commit_lag, s.apply_lag) for s in p1.states] == [(1, 2, 3), (2, 0, 0)]
    node1, node2, node3 = view.nodes
    assert node1.up and (node1.partitions_led, node1.commit_lag, node1.apply_lag) == (1, 2, 3)
    assert node2.up and (node2.commit_lag, node2.apply_lag) == (3, 7)
    assert not node3.up and node3.reason == "unreachable: connection refused"
    assert view.epoch == 1


def test_a_partition_whose_replicas_are_all_silent_is_shown_without_leader() -> None:
    cluster_state = ClusterState.bootstrap("c0ffee", MEMBERS, 4, 1, 16)
    answers: dict[int, pb.StatusResponse | str] = {n: "no answer within 1s" for n in MEMBERS}
    view = build_cluster_view(MEMBERS, map_replicas(cluster_state), answers)
    assert [p.id for p in view.partitions] == [0, 1, 2, 3]
    assert all(p.leader == 0 and not p.states and len(p.replicas) == 1 for p in view.partitions)
    assert not any(n.up for n in view.nodes)
    assert reported_replicas(answers) == {}


def test_short_reasons_replace_grpc_paragraphs() -> None:
    def error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
        return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)

    refused = ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
               "Failed to connect to remote host: Connection refused")
    assert short_reason(error(grpc.StatusCode.UNAVAILABLE, refused), 1.0) == "unreachable: connection refused"
    assert short_reason(error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), 1.0) == "no answer within 1s"
    assert short_reason(error(grpc.StatusCode.UNIMPLEMENTED, ""), 1.0) == "unimplemented"
