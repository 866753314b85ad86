"""Read levels and write concerns on a real 3-node cluster: what answered, what it waited for,
how stale it may be, and what a client is told when a write's outcome is unknown.

One cluster for the module; a test that pauses a node resumes it before it ends.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc
from kvstore.client import (
    InvalidArgumentError,
    KvTimeoutError,
    ReadConsistency,
    SyncClient,
    WriteConcern,
    ops,
)
from kvstore.ring import partition_for_key
from tests.integration.harness import LocalCluster, wait_for

pytestmark = pytest.mark.slow

PAUSE_S = 2.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(Path(tmp_path_factory.mktemp("consistency")), size=3, partitions=4)
    local.start_all()
    try:
        yield local
    finally:
        local.stop_all()
        assert not local.any_fatal(), local.any_fatal()


def client_for(cluster: LocalCluster, timeout: float = 20.0, session_token: str = "") -> SyncClient:
    return SyncClient(cluster.endpoints, timeout=timeout, session_token=session_token)


def leader_and_follower(cluster: LocalCluster, key: str) -> tuple[int, int]:
    partition = partition_for_key(key.encode(), cluster.partitions)
    leader = cluster.leaders()[partition]
    return leader, next(node for node in cluster.node_ids if node != leader)


def test_served_says_which_read_path_answered(cluster: LocalCluster) -> None:
    with client_for(cluster) as client:
        client.put("served", "v")
        levels = {level: client.get_result("served", consistency=level).header for level in ReadConsistency}
    leader, _ = leader_and_follower(cluster, "served")
    assert levels[ReadConsistency.LINEARIZABLE].served is ReadConsistency.LINEARIZABLE
    # A healthy leader's lease holds; a lease read that fell back to a round would say LINEARIZABLE.
    assert levels[ReadConsistency.LEASE].served in (ReadConsistency.LEASE, ReadConsistency.LINEARIZABLE)
    assert levels[ReadConsistency.SESSION].served is ReadConsistency.SESSION
    assert levels[ReadConsistency.STALE].served is ReadConsistency.STALE
    assert levels[ReadConsistency.STALE].node_id != leader  # followers take the STALE reads


def test_an_all_write_waits_for_a_paused_follower_and_times_out_with_its_outcome_unknown(
    cluster: LocalCluster,
) -> None:
    key = "concern-all"
    _, follower = leader_and_follower(cluster, key)
    with client_for(cluster, timeout=3.0) as client:
        client.put(key, "everywhere", concern=WriteConcern.ALL)
        cluster.processes[follower].send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(KvTimeoutError) as raised:
                client.put(key, "not-everywhere", concern=WriteConcern.ALL)
            # A quorum has it: the write was applied; the client could only not know.
            assert client.get(key).value == b"not-everywhere"  # type: ignore[union-attr]
            client.put(key, "majority-is-enough")
        finally:
            cluster.processes[follower].send_signal(signal.SIGCONT)
        assert raised.value.may_be_applied
        assert "outcome is unknown" in raised.value.message and "concern all" in raised.value.message
        client.put(key, "everywhere-again", concern=WriteConcern.ALL)
    with grpc.insecure_channel(cluster.address(follower)) as channel:
        # ALL acknowledged: the follower has applied it already, no need to wait.
        stale = kvstore_pb2_grpc.KVStub(channel).Get(pb.GetRequest(key=key.encode(), consistency=pb.STALE), timeout=20)
    assert stale.kv.value == b"everywhere-again"


def test_stale_reads_from_a_follower_resumed_after_a_pause_report_a_bound_covering_what_they_missed(
    cluster: LocalCluster,
) -> None:
    """Every STALE read that returned a version some acknowledged write had overwritten must
    report a staleness reaching back to that write's acknowledgement (the node and this test
    share the machine's clock)."""
    key = "stale-after-pause"
    _, follower = leader_and_follower(cluster, key)
    acknowledged: list[tuple[int, float]] = []  # (revision, when acknowledged)
    reads: list[tuple[float, int, int]] = []  # (invoked, revision read, staleness_ms) served by the follower
    with client_for(cluster) as client:
        acknowledged.append((client.put(key, "before").header.revision, time.monotonic()))
        wait_for(lambda: _stale_read_by(client, key, follower) is not None, "a STALE read served by the follower")
        cluster.processes[follower].send_signal(signal.SIGSTOP)
        try:
            for value in ("during-1", "during-2"):
                acknowledged.append((client.put(key, value).header.revision, time.monotonic()))
            time.sleep(PAUSE_S)  # the pause itself is what the bound must cover
        finally:
            cluster.processes[follower].send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 20
        while len(reads) < 20 and time.monotonic() < deadline:
            invoked = time.monotonic()
            result = _stale_read_by(client, key, follower)
            if result is not None:
                reads.append((invoked, *result))
    assert reads, "the resumed follower served no STALE read"
    for invoked, revision, staleness_ms in reads:
        overwritten = [at for written, at in acknowledged if written > revision]
        if overwritten:
            assert invoked - staleness_ms / 1000 < min(overwritten), (revision, staleness_ms, acknowledged)


def _stale_read_by(client: SyncClient, key: str, node: int) -> tuple[int, int] | None:
    result = client.get_result(key, consistency=ReadConsistency.STALE)
    if result.header.node_id != node or result.kv is None:
        return None
    return result.kv.mod_revision, result.header.staleness_ms


def test_a_replica_that_cannot_bound_its_staleness_under_the_maximum_refuses_and_the_leader_serves(
    cluster: LocalCluster,
) -> None:
    key = "bounded"
    leader, follower = leader_and_follower(cluster, key)
    with client_for(cluster) as client:
        client.put(key, "v")
        with grpc.insecure_channel(cluster.address(follower)) as channel:
            refused = kvstore_pb2_grpc.KVStub(channel).Get(
                pb.GetRequest(key=key.encode(), consistency=pb.STALE, max_staleness_ms=1), timeout=20
            )
        # A follower's bound includes a round trip to its leader: never under 1 ms. The leader,
        # within its lease, knows nothing newer exists anywhere: staleness 0.
        served = client.get_result(key, consistency=ReadConsistency.STALE, max_staleness_ms=1).header
    assert refused.error.code == pb.UNAVAILABLE
    assert f"node {follower}" in refused.error.message and "cannot bound its staleness under 1 ms" in refused.error.message
    assert (served.node_id, served.staleness_ms) == (leader, 0)


def test_a_session_token_gives_another_client_read_your_writes_on_any_replica(cluster: LocalCluster) -> None:
    with client_for(cluster) as writer:
        for i in range(20):
            writer.put(f"session/{i}", f"v{i}")
        token = writer.session_token()
    with client_for(cluster, session_token=token) as reader:
        served_by = set()
        for i in range(20):
            result = reader.get_result(f"session/{i}", consistency=ReadConsistency.SESSION)
            assert result.kv is not None and result.kv.value == f"v{i}".encode()
            served_by.add(result.header.node_id)
    assert len(served_by) > 1  # spread over the replicas, yet never behind the writer


def test_a_leader_write_is_acknowledged_with_its_revision_and_a_leader_txn_is_refused(cluster: LocalCluster) -> None:
    with client_for(cluster) as client:
        written = client.put("leader-concern", "fast", concern=WriteConcern.LEADER)
        wait_for(lambda: client.get("leader-concern") is not None, "the LEADER write to commit")
        assert client.get("leader-concern").mod_revision == written.header.revision  # type: ignore[union-attr]
        with pytest.raises(InvalidArgumentError) as raised:
            client.txn([ops.version("leader-concern") > 0], [ops.put("leader-concern", "x")], concern=WriteConcern.LEADER)
    assert "the write was not applied" in raised.value.message
