"""The client against a fake cluster: routing, redirects, retries, batching, scans, txns, errors."""

from __future__ import annotations

import asyncio
import inspect
import re
import socket
import sys
from collections.abc import AsyncIterator
from typing import cast

import grpc
import pytest

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.client import (
    BatchError,
    Client,
    CrossPartitionError,
    ErrorCode,
    GetResult,
    InvalidArgumentError,
    KvTimeoutError,
    NotLeaderError,
    PutResult,
    ReadConsistency,
    StaleFencingTokenError,
    SyncClient,
    UnavailableError,
    ops,
)
from kvstore.client.attempts import Attempts
from kvstore.client.batching import (
    MAX_BATCH_BYTES,
    NodeBatcher,
    TransportError,
    failure_reason,
    transport_failure,
)
from kvstore.client.pending import PendingSeqs
from tests.fakes.fake_cluster import FakeCluster


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    async with FakeCluster(nodes=3, partitions=8) as fake:
        yield fake


@pytest.fixture
async def client(cluster: FakeCluster) -> AsyncIterator[Client]:
    async with Client(cluster.endpoints, timeout=3.0) as connected:
        yield connected


def unused_address() -> str:
    """An address nothing listens on: a port the OS just handed out and took back."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def other_replica(cluster: FakeCluster, partition: int) -> int:
    return next(node for node in cluster.replicas_of(partition) if node != cluster.leader_of(partition))


async def test_put_then_get_round_trips_str_and_bytes(client: Client) -> None:
    await client.put("greeting", "héllo")
    await client.put(b"\x00raw", b"\xff\xfe")

    greeting = await client.get("greeting")
    raw = await client.get(b"\x00raw")

    assert greeting is not None and greeting.value == "héllo".encode()
    assert greeting.version == 1 and greeting.create_revision == greeting.mod_revision
    assert raw is not None and raw.value == b"\xff\xfe"


async def test_get_of_missing_key_is_none(client: Client) -> None:
    assert await client.get("nothing-here") is None


async def test_each_request_is_served_by_its_partition_leader(cluster: FakeCluster, client: Client) -> None:
    keys = [cluster.key_in_partition(partition, "k") for partition in range(cluster.partition_count)]
    results = [await client.put(key, "v") for key in keys]

    for key, result in zip(keys, results, strict=True):
        partition = cluster.partition_of(key)
        assert result.header.partition == partition
        assert result.header.node_id == cluster.leader_of(partition)


async def test_get_result_reports_partition_revision_and_level_served(
    cluster: FakeCluster, client: Client
) -> None:
    put = await client.put("k", "v")
    result = await client.get_result("k", consistency=ReadConsistency.STALE)

    assert result.header.partition == cluster.partition_of(b"k")
    assert result.header.revision >= put.header.revision
    assert result.header.served is ReadConsistency.STALE


async def test_not_leader_hint_is_followed_to_the_new_leader(cluster: FakeCluster, client: Client) -> None:
    await client.put("k", "v1")
    partition = cluster.partition_of(b"k")
    new_leader = other_replica(cluster, partition)
    cluster.move_leader(partition, new_leader)

    result = await client.put("k", "v2")

    assert result.header.node_id == new_leader
    assert cluster.value_of(b"k") == b"v2"


async def test_not_leader_without_hint_refreshes_the_map(cluster: FakeCluster, client: Client) -> None:
    partition = cluster.partition_of(b"k")
    new_leader = other_replica(cluster, partition)
    cluster.hide_leader_hints()
    cluster.move_leader(partition, new_leader)
    map_fetches = cluster.rpc_count("Partitions")

    result = await client.put("k", "v")

    assert result.header.node_id == new_leader
    assert cluster.rpc_count("Partitions") > map_fetches


async def test_wrong_node_refreshes_the_map() -> None:
    async with FakeCluster(nodes=4, partitions=4, replication_factor=2) as cluster:
        async with Client(cluster.endpoints, timeout=3.0) as client:
            await client.put("k", "v")
            partition = cluster.partition_of(b"k")
            newcomers = [node for node in (1, 2, 3, 4) if node not in cluster.replicas_of(partition)]
            cluster.move_partition(partition, newcomers)

            result = await client.get_result("k")

    assert result.header.node_id == newcomers[0]
    assert result.kv is not None and result.kv.value == b"v"


async def test_unavailable_leader_makes_the_client_try_other_replicas(
    cluster: FakeCluster, client: Client
) -> None:
    partition = cluster.partition_of(b"k")
    old_leader, new_leader = cluster.leader_of(partition), other_replica(cluster, partition)
    cluster.make_unavailable(old_leader)
    cluster.move_leader(partition, new_leader)

    result = await client.put("k", "v")

    assert result.header.node_id == new_leader


async def test_stopped_leader_makes_the_client_try_other_replicas(
    cluster: FakeCluster, client: Client
) -> None:
    partition = cluster.partition_of(b"k")
    old_leader, new_leader = cluster.leader_of(partition), other_replica(cluster, partition)
    await cluster.stop_node(old_leader)
    cluster.move_leader(partition, new_leader)

    result = await client.put("k", "v")

    assert result.header.node_id == new_leader


async def test_write_whose_response_was_lost_is_retried_and_applied_once(
    cluster: FakeCluster, client: Client
) -> None:
    cluster.drop_write_responses(1)

    await client.put("k", "v")

    kv = await client.get("k")
    assert cluster.times_written(b"k") == 1
    assert kv is not None and kv.version == 1


async def test_txn_whose_response_was_lost_is_retried_and_applied_once(
    cluster: FakeCluster, client: Client
) -> None:
    cluster.drop_write_responses(1)

    result = await client.txn([ops.version("{t}counter") == 0], [ops.put("{t}counter", "1")])

    assert result.succeeded  # the retry got the first answer back, not a failed compare
    assert cluster.times_written(b"{t}counter") == 1


async def test_writes_tell_the_nodes_the_lowest_seq_still_awaited(cluster: FakeCluster, client: Client) -> None:
    """Each write carries the lowest request seq the client still awaits an answer for, so the
    nodes can forget the answers below it: one awaited write holds it down, its answer (or the
    client giving up on it) lets it rise."""
    await client.put("a", "1")
    await client.txn([], [ops.put("{t}b", "2")])
    assert cluster.write_seqs() == [(1, 1), (2, 2)]

    stuck_partition = cluster.partition_of(b"stuck")
    other_key = next(f"k{n}" for n in range(100) if cluster.partition_of(f"k{n}".encode()) != stuck_partition)
    cluster.make_partition_unavailable(stuck_partition)
    stuck = asyncio.create_task(client.put("stuck", "3"))  # seq 3, retried while the partition is down
    while cluster.rpc_count("batched ops") < 3:
        await asyncio.sleep(0.01)
    await client.put(other_key, "4")
    assert cluster.write_seqs()[-1] == (4, 3)
    cluster.make_partition_unavailable(stuck_partition, False)
    await stuck
    assert cluster.write_seqs()[-1] == (3, 3)
    await client.put(other_key, "5")
    assert cluster.write_seqs()[-1] == (5, 5)


async def test_a_write_given_up_at_its_deadline_is_no_longer_awaited(cluster: FakeCluster) -> None:
    async with Client(cluster.endpoints, timeout=0.5) as client:
        cluster.make_partition_unavailable(cluster.partition_of(b"down"))
        with pytest.raises((KvTimeoutError, UnavailableError)):
            await client.put("down", "1")  # seq 1: its outcome is unknown, and it is never sent again
        up = next(f"k{n}" for n in range(100) if cluster.partition_of(f"k{n}".encode()) != cluster.partition_of(b"down"))
        await client.put(up, "2")
        assert cluster.write_seqs()[-1] == (2, 2)


async def test_concurrent_calls_are_coalesced_into_few_batch_rpcs(cluster: FakeCluster) -> None:
    # A generous deadline: on a loaded machine a batch that outlives the per-attempt cap is sent
    # again (correctly, deduplicated), which would blur the count this test is about.
    async with Client(cluster.endpoints, timeout=30.0) as client:
        await asyncio.gather(*(client.put(f"key-{index}", str(index)) for index in range(300)))

    assert cluster.rpc_count("batched ops") == 300
    # 3 nodes: a handful of batches each, far from one RPC per call.
    assert cluster.rpc_count("Batch") <= 30
    assert all(cluster.value_of(f"key-{index}".encode()) == str(index).encode() for index in range(300))


async def test_batches_respect_max_batch(cluster: FakeCluster) -> None:
    async with Client(cluster.endpoints, max_batch=4) as client:
        keys = [cluster.key_in_partition(0, f"k{index}") for index in range(12)]
        await asyncio.gather(*(client.put(key, "v") for key in keys))

    assert cluster.rpc_count("Batch") >= 3  # 12 ops to one leader, at most 4 per RPC


async def test_only_the_redirected_op_of_a_batch_is_rerouted(cluster: FakeCluster, client: Client) -> None:
    moved_key, steady_key = cluster.key_in_partition(0, "moved"), cluster.key_in_partition(1, "steady")
    cluster.move_leader(0, other_replica(cluster, 0))

    moved, steady = await asyncio.gather(client.put(moved_key, "a"), client.put(steady_key, "b"))

    assert moved.header.node_id == cluster.leader_of(0)
    assert steady.header.node_id == cluster.leader_of(1)
    assert cluster.times_written(moved_key) == cluster.times_written(steady_key) == 1


async def test_batch_ops_fail_on_their_own_and_the_error_carries_every_outcome(
    cluster: FakeCluster, client: Client
) -> None:
    await client.put("fenced", "v", fencing_token=10)

    with pytest.raises(BatchError) as raised:
        await client.batch(
            [ops.put("a", "1"), ops.put("fenced", "old writer", fencing_token=3), ops.get("a")]
        )

    first, fenced, read = raised.value.outcomes
    assert isinstance(first, PutResult) and first.header.revision > 0
    assert isinstance(fenced, StaleFencingTokenError)
    assert isinstance(read, GetResult) and read.kv is not None and read.kv.value == b"1"
    # The batch's code is its first failure's: the error table gives kvctl's exit code from it.
    assert raised.value.code is ErrorCode.STALE_FENCING_TOKEN
    assert "1 of 3 operations failed (2 succeeded); the first, ops[1]: fencing token 3" in raised.value.message
    assert cluster.value_of(b"a") == b"1" and cluster.value_of(b"fenced") == b"v"


async def test_sync_client_batch_raises_the_same_batch_error(cluster: FakeCluster) -> None:
    def batch_with_a_stale_token() -> BatchError:
        with SyncClient(cluster.endpoints) as client:
            client.put("fenced", "v", fencing_token=10)
            try:
                client.batch([ops.put("fenced", "old", fencing_token=1), ops.put("b", "2")])
            except BatchError as error:
                return error
        raise AssertionError("the batch did not fail")

    error = await asyncio.to_thread(batch_with_a_stale_token)

    assert [type(outcome) for outcome in error.outcomes] == [StaleFencingTokenError, PutResult]
    assert cluster.value_of(b"b") == b"2"


async def test_batch_returns_results_in_order(client: Client) -> None:
    await client.put("x", "1")

    results = await client.batch(
        [ops.get("x"), ops.put("y", "2", prev_kv=True), ops.delete("x"), ops.get("x")]
    )

    first_get, put, delete, second_get = results
    assert first_get.kv is not None and first_get.kv.value == b"1"  # type: ignore[union-attr]
    assert put.prev_kv is None  # type: ignore[union-attr]
    assert delete.deleted  # type: ignore[union-attr]
    assert second_get.kv is None  # type: ignore[union-attr]


async def test_delete_reports_whether_something_was_deleted(client: Client) -> None:
    await client.put("k", "v")

    first = await client.delete("k", prev_kv=True)
    second = await client.delete("k")

    assert first.deleted and first.prev_kv is not None and first.prev_kv.value == b"v"
    assert not second.deleted and second.prev_kv is None


async def test_scan_merges_all_partitions_in_key_order(cluster: FakeCluster, client: Client) -> None:
    keys = [f"user/{index:03d}" for index in range(40)]
    await asyncio.gather(*(client.put(key, key.upper()) for key in reversed(keys)), client.put("other", "x"))

    found = await client.scan(prefix="user/")

    assert [kv.key.decode() for kv in found] == keys
    assert {cluster.partition_of(kv.key) for kv in found} == set(range(cluster.partition_count))
    assert found[0].value == b"USER/000"


async def test_scan_limit_applies_to_the_merged_result(client: Client) -> None:
    keys = [f"k{index:02d}" for index in range(30)]
    await asyncio.gather(*(client.put(key, "v") for key in keys))

    found = await client.scan(start="k05", end="k99", limit=7)

    assert [kv.key.decode() for kv in found] == keys[5:12]


async def test_scan_follows_partial_pages(cluster: FakeCluster, client: Client) -> None:
    keys = [f"k{index:02d}" for index in range(30)]
    await asyncio.gather(*(client.put(key, "v") for key in keys))
    cluster.limit_scan_pages(2)

    found = await client.scan(prefix="k", keys_only=True)

    assert [kv.key.decode() for kv in found] == keys
    assert all(kv.value == b"" for kv in found)


async def test_scan_of_a_hash_tagged_prefix_asks_one_partition(cluster: FakeCluster, client: Client) -> None:
    await asyncio.gather(*(client.put(f"{{cart}}:{index}", "v") for index in range(5)))
    scans_before = cluster.rpc_count("Scan")

    found = await client.scan(prefix="{cart}:")

    assert len(found) == 5
    assert cluster.rpc_count("Scan") - scans_before == 1


async def test_scan_refuses_prefix_with_range(client: Client) -> None:
    with pytest.raises(InvalidArgumentError):
        await client.scan(prefix="a", start="b")


async def test_txn_runs_success_or_failure_branch(client: Client) -> None:
    await client.put("{acct}:a", "10")

    swapped = await client.txn(
        [ops.value("{acct}:a") == "10"], [ops.put("{acct}:a", "0"), ops.put("{acct}:b", "10")]
    )
    refused = await client.txn(
        [ops.value("{acct}:a") == "10"], [ops.put("{acct}:a", "-1")], [ops.get("{acct}:a")]
    )

    assert swapped.succeeded and not refused.succeeded
    (current,) = refused.responses
    assert current.kv is not None and current.kv.value == b"0"  # type: ignore[union-attr]


async def test_txns_travel_in_batches_with_key_operations(cluster: FakeCluster, client: Client) -> None:
    puts = [client.put(f"{{t}}:{index}", "v") for index in range(20)]
    txns = [client.txn([ops.version(f"{{t}}:x{index}") == 0], [ops.put(f"{{t}}:x{index}", "1")]) for index in range(20)]
    batches_before = cluster.rpc_count("Batch")

    _, txn_results = await asyncio.gather(asyncio.gather(*puts), asyncio.gather(*txns))
    last = txn_results[-1]

    assert cluster.rpc_count("Txn") == 0 and cluster.rpc_count("batched ops") >= 40
    assert cluster.rpc_count("Batch") - batches_before < 40
    assert last.succeeded and last.header.partition == cluster.partition_of(b"{t}:x19")
    assert last.responses[0].header == last.header  # an operation inside carries the txn's header


async def test_cross_partition_txn_is_refused_before_sending(cluster: FakeCluster, client: Client) -> None:
    first, second = cluster.key_in_partition(1, "a"), cluster.key_in_partition(5, "b")

    with pytest.raises(CrossPartitionError) as raised:
        await client.txn([ops.version(first) > 0], [ops.put(second, "v")])

    assert "partition 1" in str(raised.value) and "partition 5" in str(raised.value)
    assert "hash tag" in str(raised.value)
    assert cluster.rpc_count("Batch") == 0


@pytest.mark.parametrize(
    ("key", "value"),
    [("", "v"), ("k" * 4097, "v"), ("k", "v" * 101)],
    ids=["empty key", "key over 4 KiB", "value over the limit"],
)
async def test_invalid_requests_are_refused_locally(cluster: FakeCluster, key: str, value: str) -> None:
    async with Client(cluster.endpoints, max_value_bytes=100) as client:
        with pytest.raises(InvalidArgumentError):
            await client.put(key, value)

    assert cluster.rpc_count("Batch") == 0


async def test_call_times_out_with_a_message_naming_the_partition(cluster: FakeCluster) -> None:
    async with Client(cluster.endpoints, timeout=0.3) as client:
        for node in (1, 2, 3):
            cluster.make_unavailable(node)

        with pytest.raises(KvTimeoutError) as raised:
            await client.get("k")

    message = str(raised.value)
    assert f"partition {cluster.partition_of(b'k')}" in message
    assert "0.3s" in message and "cannot reach a quorum" in message
    assert isinstance(raised.value, UnavailableError)


class _SilentNode:
    """A KV stub whose Batch RPCs are received and never answered."""

    def __init__(self) -> None:
        self.batches: list[pb.BatchRequest] = []

    async def Batch(self, request: pb.BatchRequest, timeout: float) -> pb.BatchResponse:
        self.batches.append(request)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_batched_operation_without_an_answer_fails_as_retryable_after_its_timeout() -> None:
    node = _SilentNode()
    batcher = NodeBatcher("127.0.0.1:1", cast(pb_grpc.KVStub, node), max_batch=8)
    batcher.start()
    try:
        with pytest.raises(TransportError, match=r"^no answer within 0\.05s$"):
            await batcher.submit(pb.RequestOp(get=pb.GetRequest(key=b"k")), 0.05)
    finally:
        await batcher.close()

    assert [len(batch.ops) for batch in node.batches] == [1]


async def test_connect_with_no_reachable_seed_is_unavailable() -> None:
    client = Client([unused_address()], timeout=0.3)

    with pytest.raises(UnavailableError, match="could not reach"):
        await client.connect()
    await client.close()


async def test_connect_skips_dead_seeds(cluster: FakeCluster) -> None:
    async with Client([unused_address(), cluster.endpoints[1]]) as client:
        await client.put("k", "v")

    assert cluster.value_of(b"k") == b"v"


async def test_cluster_information(cluster: FakeCluster, client: Client) -> None:
    members = await client.members()
    layout = await client.partitions()
    status = await client.status(cluster.address_of(2))

    assert [member.address for member in members] == cluster.endpoints
    assert layout.partition_count == cluster.partition_count
    assert [info.leader for info in layout.partitions] == [cluster.leader_of(p) for p in range(8)]
    assert status.node_id == 2 and status.address == cluster.address_of(2)


async def test_calls_after_close_are_refused(cluster: FakeCluster) -> None:
    client = Client(cluster.endpoints)
    await client.connect()
    await client.close()

    with pytest.raises(UnavailableError, match="not connected"):
        await client.get("k")


async def test_sync_client_offers_the_same_api(cluster: FakeCluster) -> None:
    def use_sync_client() -> tuple[bytes | None, list[bytes], bool]:
        with SyncClient(cluster.endpoints) as client:
            client.put("a", "1")
            client.put("b", "2")
            value = client.get("a")
            keys = [kv.key for kv in client.scan()]
            succeeded = client.txn([ops.value("a") == "1"], [ops.delete("a")]).succeeded
        return (value.value if value else None), keys, succeeded

    value, keys, succeeded = await asyncio.to_thread(use_sync_client)

    assert value == b"1" and keys == [b"a", b"b"] and succeeded
    assert cluster.value_of(b"a") is None


async def test_sync_client_refuses_calls_after_close(cluster: FakeCluster) -> None:
    def call_after_close() -> None:
        client = SyncClient(cluster.endpoints)
        client.connect()
        client.close()
        client.get("k")

    with pytest.raises(UnavailableError):
        await asyncio.to_thread(call_after_close)


def test_the_lowest_pending_seq_rises_as_the_oldest_write_ends() -> None:
    pending = PendingSeqs()
    assert [pending.issue() for _ in range(3)] == [1, 2, 3] and pending.lowest == 1
    pending.end(2)  # answered out of order: 1 is still awaited
    assert pending.lowest == 1
    pending.end(1)
    assert pending.lowest == 3
    pending.end(3)
    assert pending.lowest == 4  # nothing awaited: the next seq to issue
    assert pending.issue() == 4 and pending.lowest == 4


def test_writes_in_flight_stay_inside_the_servers_dedup_window() -> None:
    """A retried write keeps its request id; the server must still remember that id, which it
    does for the last DEFAULT_DEDUP_WINDOW ids of a client. The client bounds its writes in flight
    (held until each is answered, retries included), so the ids in flight never span more."""
    from kvstore.client.client import MAX_OUTSTANDING_MUTATIONS
    from kvstore.statemachine.applier import DEFAULT_DEDUP_WINDOW

    assert MAX_OUTSTANDING_MUTATIONS < DEFAULT_DEDUP_WINDOW


# ---- rough edges a new user hits: bad input, deadlines, what a failure says ---------------------


@pytest.mark.parametrize("endpoint", ["nonsense", "host:notaport", ":80", "host:99999", "host:0", "[::1]"])
def test_a_malformed_endpoint_is_refused_at_once(endpoint: str) -> None:
    with pytest.raises(InvalidArgumentError, match=f"endpoint '{re.escape(endpoint)}'"):
        Client(["127.0.0.1:2379", endpoint])


@pytest.mark.parametrize("endpoint", ["127.0.0.1:2379", "kv-1.example:2379", "[::1]:2379", "localhost:1"])
def test_well_formed_endpoints_are_accepted(endpoint: str) -> None:
    Client([endpoint])


async def test_a_str_key_that_is_not_unicode_text_is_invalid(client: Client) -> None:
    undecodable = b"k\xff".decode("utf-8", "surrogateescape")  # as Python hands over a non-UTF-8 argv

    with pytest.raises(InvalidArgumentError, match="is not valid Unicode text; pass it as bytes"):
        await client.put(undecodable, "v")


async def test_connecting_counts_against_the_calls_deadline(cluster: FakeCluster) -> None:
    """The cluster map takes half the timeout to arrive; the call must still end at its one
    deadline, not after a fresh timeout for the operation (it used to take 0.9 + 2 s here)."""
    cluster.delay_map_answers(0.9)
    for node in (1, 2, 3):
        cluster.make_unavailable(node)
    client = Client(cluster.endpoints, timeout=2.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(KvTimeoutError):
            await client.put("k", "v")
    finally:
        await client.close()

    # An upper bound only, half of what a fresh deadline would add (a property of the deadline),
    # with slack so that a loaded machine does not fail it.
    assert loop.time() - started < 2.0 + 0.8


async def test_a_call_that_times_out_says_what_each_replica_answered(cluster: FakeCluster) -> None:
    partition = cluster.partition_of(b"k")
    leader, follower, other = cluster.leader_of(partition), *(
        node for node in cluster.replicas_of(partition) if node != cluster.leader_of(partition)
    )
    async with Client([cluster.address_of(follower)], timeout=5.0) as client:
        await cluster.stop_node(leader)
        await cluster.stop_node(other)

        with pytest.raises(UnavailableError) as raised:
            await client.put("k", "v")

    message = raised.value.message
    assert f"partition {partition}" in message and "within 5s" in message
    assert f"1 of its 3 replicas answered (node {follower}: node {follower} does not lead" in message
    assert "could not be reached (" in message and f"{cluster.address_of(leader)}: connection refused" in message
    assert "a leader needs 2 of the 3" in message
    assert message.endswith("the write's outcome is unknown: it may or may not have been applied")


def test_a_write_never_sent_was_not_applied_and_reads_say_nothing_of_outcomes() -> None:
    never_sent = Attempts().deadline_error(3, (1, 2, 3), 5.0, write=True)
    read = Attempts()
    read.answered(2, "h:2", ErrorCode.NOT_LEADER, "no leader is known yet")
    read_error = read.deadline_error(3, (1, 2, 3), 5.0, write=False)

    assert isinstance(never_sent, KvTimeoutError)
    assert never_sent.message == (
        "partition 3 was not served within 5s: 0 of its 3 replicas answered, nodes 1, 2, 3 not tried, "
        "a leader needs 2 of the 3; the write was not applied"
    )
    assert isinstance(read_error, NotLeaderError)
    assert read_error.message == (
        "no leader for partition 3 within 5s: 1 of its 3 replicas answered (node 2: no leader is known "
        "yet), nodes 1, 3 not tried, a leader needs 2 of the 3"
    )


async def test_status_of_one_node_is_asked_once_and_says_why_it_failed(cluster: FakeCluster) -> None:
    dead = unused_address()
    async with Client(cluster.endpoints, timeout=30.0) as client:
        # Generous: retrying until the client's 30 s timeout would blow it.
        with pytest.raises(UnavailableError) as raised:
            await asyncio.wait_for(client.status(dead), 10)
        answered = await client.status(cluster.address_of(1), timeout=0.5)

    assert raised.value.message == f"{dead}: connection refused"
    assert answered.node_id == 1


def _rpc_error(status: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(status, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


@pytest.mark.parametrize(
    ("status", "details", "reason"),
    [
        (
            grpc.StatusCode.UNAVAILABLE,
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
            "Failed to connect to remote host: Connection refused",
            "connection refused",
        ),
        (
            grpc.StatusCode.UNAVAILABLE,
            "errors resolving kv-9:2379: [field:hostname lookup error:address lookup failed for kv-9:2379: "
            "Domain name not found]",
            "unknown host",
        ),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", "no answer in time"),
        (
            grpc.StatusCode.UNAVAILABLE,
            "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:1: Socket closed",
            "connection closed",
        ),
        (grpc.StatusCode.INTERNAL, "x" * 300 + "\nsecond line", "internal: " + "x" * 97 + "..."),
    ],
)
def test_rpc_failures_read_as_a_few_words(status: grpc.StatusCode, details: str, reason: str) -> None:
    assert failure_reason(_rpc_error(status, details)) == reason


def test_every_public_client_method_says_what_it_does() -> None:
    for cls in (Client, SyncClient):
        undocumented = [
            name
            for name, member in inspect.getmembers(cls)
            if not name.startswith("_") and callable(member) and not (member.__doc__ or "").strip()
        ]
        assert not undocumented, f"{cls.__name__}: {undocumented}"


async def test_a_sync_client_left_open_prints_nothing_at_exit(cluster: FakeCluster) -> None:
    program = (
        "import sys; from kvstore.client import SyncClient\n"
        "client = SyncClient(sys.argv[1:]); client.connect(); client.put('k', 'v')\n"
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", program, *cluster.endpoints,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(child.communicate(), 60)

    assert child.returncode == 0 and stdout == b"" and stderr == b"", stderr.decode()
    assert cluster.value_of(b"k") == b"v"
class _AnsweringNode:
    """A KV stub that answers every Batch at once and records it."""

    def __init__(self) -> None:
        self.batches: list[pb.BatchRequest] = []

    async def Batch(self, request: pb.BatchRequest, timeout: float) -> pb.BatchResponse:
        self.batches.append(request)
        return pb.BatchResponse(results=[pb.ResponseOp(put=pb.PutResponse()) for _ in request.ops])


async def test_a_batch_stops_growing_before_it_passes_max_batch_bytes() -> None:
    node = _AnsweringNode()
    batcher = NodeBatcher("127.0.0.1:1", cast(pb_grpc.KVStub, node), max_batch=256)
    batcher.start()
    value = bytes(MAX_BATCH_BYTES * 2 // 5)
    try:
        await asyncio.gather(*(batcher.submit(pb.RequestOp(put=pb.PutRequest(key=b"k%d" % i, value=value)), 5.0)
                               for i in range(5)))
    finally:
        await batcher.close()

    assert [len(batch.ops) for batch in node.batches] == [2, 2, 1]
    assert all(batch.ByteSize() <= MAX_BATCH_BYTES + 64 for batch in node.batches)


def test_a_request_the_node_refuses_as_too_large_is_a_final_error_that_says_so() -> None:
    refused = grpc.aio.AioRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                   details="SERVER: Received message larger than max (9437300 vs. 8454144)")

    failure = transport_failure(refused)

    assert isinstance(failure, InvalidArgumentError)
    assert "9437300 bytes" in failure.message and "at most 8454144" in failure.message
    assert "--max-request-bytes" in failure.message
