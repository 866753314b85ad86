"""A real 3-node cluster on loopback, driven through the public client library."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc
from kvstore.client import SyncClient
from kvstore.ring import partition_for_key
from tests.integration.harness import LocalCluster, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    # Small logs compact quickly, so restarts exercise catching up by snapshot.
    local = LocalCluster(tmp_path, size=3, partitions=8, extra_args=["--snapshot-entries", "40"])
    with local.running():
        local.start_all()
        yield local


def client_for(endpoints: list[str]) -> SyncClient:
    return SyncClient(endpoints, timeout=20.0)


def test_write_through_one_node_read_through_another_and_scan_spans_partitions(cluster: LocalCluster) -> None:
    with client_for([cluster.address(1)]) as writer:
        for i in range(40):
            writer.put(f"user/{i:03d}", f"value-{i}")
    with client_for([cluster.address(3)]) as reader:
        stored = reader.get("user/007")
        assert stored is not None and stored.value == b"value-7"
        found = reader.scan(prefix="user/")
        assert [kv.key for kv in found] == [f"user/{i:03d}".encode() for i in range(40)]
        partitions = {partition_for_key(kv.key, cluster.partitions) for kv in found}
        assert len(partitions) > 1, "the keys should spread over several partitions"
        assert [kv.key for kv in reader.scan(prefix="user/", limit=5)] == [f"user/{i:03d}".encode() for i in range(5)]


@pytest.mark.parametrize(("writes", "through_snapshot"), [(10, False), (150, True)], ids=["log", "snapshot"])
def test_killed_leader_is_replaced_and_catches_up(cluster: LocalCluster, writes: int, through_snapshot: bool) -> None:
    """With a few writes while it is down the old leader catches up from the log; with many,
    the leader has compacted past it (--snapshot-entries 40) and sends a snapshot."""
    key = "failover-key"
    partition = partition_for_key(key.encode(), cluster.partitions)
    with client_for(cluster.endpoints) as client:
        client.put(key, "before")
        victim = cluster.leaders()[partition]
        cluster.kill(victim, signal.SIGKILL)
        wait_for(lambda: cluster.leaders().get(partition, victim) != victim, "a new leader for the partition")
        for i in range(writes):
            client.put(key, f"after-{i}")
        last = f"after-{writes - 1}".encode()
        stored = client.get(key)
        assert stored is not None and stored.value == last
        cluster.start(victim)
        new_leader = cluster.leaders()[partition]
        target = cluster.applied_index(new_leader, partition)
        wait_for(lambda: cluster.applied_index(victim, partition) >= target, "the restarted node to catch up")
        installed = f"partition {partition} installed a snapshot" in cluster.log_tail(victim, 200)
        assert installed == through_snapshot
        cluster.kill(new_leader, signal.SIGKILL)  # now the caught-up node must serve with the third one
        stored = client.get(key)
        assert stored is not None and stored.value == last


def test_every_acknowledged_write_survives_kill_9_of_every_node(cluster: LocalCluster) -> None:
    acknowledged: dict[str, str] = {}
    with client_for(cluster.endpoints) as client:
        for i in range(200):
            key, value = f"durable/{i % 50}", f"v{i}"
            client.put(key, value)
            acknowledged[key] = value
    for node_id in cluster.node_ids:
        cluster.kill(node_id, signal.SIGKILL)
    for node_id in cluster.node_ids:
        cluster.start(node_id)
    cluster.wait_all_partitions_led()
    with client_for(cluster.endpoints) as client:
        stored = {kv.key.decode(): kv.value.decode() for kv in client.scan(prefix="durable/")}
    assert stored == acknowledged


def test_a_retried_write_or_transaction_is_applied_once(cluster: LocalCluster) -> None:
    key = b"retried"
    partition = partition_for_key(key, cluster.partitions)
    leader = cluster.leaders()[partition]
    header = pb.RequestHeader(client_id="retry-test", request_seq=7)
    with grpc.insecure_channel(cluster.address(leader)) as channel:
        kv = kvstore_pb2_grpc.KVStub(channel)
        first = kv.Put(pb.PutRequest(header=header, key=key, value=b"first"), timeout=20)
        # The same request again, as a client does after a timeout: it must not apply twice.
        again = kv.Put(pb.PutRequest(header=header, key=key, value=b"first"), timeout=20)
        assert not first.HasField("error") and not again.HasField("error")
        assert again.header.revision == first.header.revision
        got = kv.Get(pb.GetRequest(key=key), timeout=20)
        assert got.kv.version == 1
        assert got.kv.mod_revision == first.header.revision

        # A compare-and-set in a Batch, sent twice: the retry gets the first answer back,
        # although its compare no longer holds.
        cas = pb.TxnRequest(
            header=pb.RequestHeader(client_id="retry-test", request_seq=8),
            compare=[pb.Compare(key=key, target=pb.Compare.VERSION, result=pb.Compare.EQUAL, number=1)],
            success=[pb.RequestOp(put=pb.PutRequest(key=key, value=b"second"))],
        )
        batch = pb.BatchRequest(ops=[pb.RequestOp(txn=cas)])
        first_cas = kv.Batch(batch, timeout=20).results[0].txn
        again_cas = kv.Batch(batch, timeout=20).results[0].txn
        assert first_cas.succeeded and not first_cas.HasField("error")
        assert again_cas == first_cas
        got = kv.Get(pb.GetRequest(key=key), timeout=20)
    assert (got.kv.value, got.kv.version) == (b"second", 2)


def test_stale_read_is_served_by_a_follower(cluster: LocalCluster) -> None:
    key = "stale-key"
    partition = partition_for_key(key.encode(), cluster.partitions)
    with client_for(cluster.endpoints) as client:
        client.put(key, "x")
    follower = next(n for n in cluster.node_ids if n != cluster.leaders()[partition])
    with grpc.insecure_channel(cluster.address(follower)) as channel:
        kv = kvstore_pb2_grpc.KVStub(channel)
        wait_for(lambda: kv.Get(pb.GetRequest(key=key.encode(), consistency=pb.STALE), timeout=5).found,
                 "the follower to apply the write")
        response = kv.Get(pb.GetRequest(key=key.encode(), consistency=pb.STALE), timeout=5)
        assert response.header.served == pb.STALE and response.header.node_id == follower
        linearizable = kv.Get(pb.GetRequest(key=key.encode()), timeout=5)
        assert linearizable.error.code == pb.NOT_LEADER
        assert linearizable.error.leader_address == cluster.address(cluster.leaders()[partition])


def test_a_node_stops_cleanly_on_sigterm_while_a_peer_holds_its_stream_open(cluster: LocalCluster) -> None:
    """A paused peer never closes its stream into the stopping node, so the node's server must
    cut that stream when its grace period ends, and do so quietly."""
    cluster.processes[1].send_signal(signal.SIGSTOP)
    try:
        process = cluster.processes[2]
        cluster.kill(2, signal.SIGTERM)
    finally:
        cluster.processes[1].send_signal(signal.SIGCONT)
    assert process.returncode == 0
    assert "node 2 stopped" in cluster.log_tail(2)
    assert not cluster.any_fatal(), cluster.any_fatal()
