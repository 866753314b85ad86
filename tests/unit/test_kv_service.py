"""The KV service's two-step batches: every operation is submitted at once, the request waits
once, and each operation gets its own answer — a result, its error, or a timeout."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from kvstore._pb import kvstore_pb2 as pb
from kvstore.node.errors import not_leader
from kvstore.rpc.kv import KVService
from kvstore.statemachine import KeyValue, PutResult

PARTITIONS = 4


@dataclass
class FakeStateMachine:
    applied_index: int = 7
    data: dict[bytes, bytes] = field(default_factory=dict)

    def get(self, key: bytes) -> KeyValue | None:
        value = self.data.get(key)
        return None if value is None else KeyValue(key, value, 1, 1, 1, 0)


@dataclass
class FakeReplica:
    sm: FakeStateMachine = field(default_factory=FakeStateMachine)


@dataclass
class FakeConfig:
    request_timeout_s: float = 5.0
    max_key_bytes: int = 64
    max_value_bytes: int = 64


@dataclass
class FakeClusterMap:
    epoch: int = 3
    partitions: int = PARTITIONS

    def partition_for_key(self, key: bytes) -> int:
        return key[0] % PARTITIONS


class FakeNode:
    """Answers proposals only when told to; partition 3 says another node leads it."""

    def __init__(self) -> None:
        self.id = 1
        self.config = FakeConfig()
        self.cluster_map = FakeClusterMap()
        self.replica_ = FakeReplica()
        self.proposals: list[asyncio.Future[object]] = []

    def address_of(self, node_id: int) -> str:
        return f"10.0.0.{node_id}:2379"

    def replica(self, partition: int) -> FakeReplica:
        return self.replica_

    def submit_proposal(self, partition: int, data: bytes) -> asyncio.Future[object]:
        if partition == 3:
            raise not_leader(partition, 2)
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.proposals.append(future)
        return future

    def submit_read(self, partition: int, lease: bool) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def submit_session_read(self, partition: int, min_revision: int) -> asyncio.Future[None] | None:
        return None


def put_op(key: bytes, timeout_ms: int = 0, value: bytes = b"v") -> pb.RequestOp:
    header = pb.RequestHeader(client_id="c", request_seq=1, timeout_ms=timeout_ms)
    return pb.RequestOp(put=pb.PutRequest(header=header, key=key, value=value))


def get_op(key: bytes, consistency: Any = pb.LINEARIZABLE) -> pb.RequestOp:
    return pb.RequestOp(get=pb.GetRequest(key=key, consistency=consistency))


async def test_each_operation_of_a_batch_gets_its_own_answer() -> None:
    node = FakeNode()
    node.replica_.sm.data[b"a"] = b"hello"
    service = KVService(node)  # type: ignore[arg-type]
    request = pb.BatchRequest(ops=[
        put_op(b"a"),                      # partition 1: applied below
        put_op(b"c"),                      # partition 3: led by node 2
        put_op(b""),                       # empty key
        put_op(b"a", value=b"x" * 100),    # value over the limit
        get_op(b"a"),
        get_op(b"zz", pb.STALE),
    ])
    batch = asyncio.ensure_future(service.Batch(request, None))
    while not node.proposals:
        await asyncio.sleep(0)
    node.proposals[0].set_result(PutResult(revision=9, prev=None))
    results = (await batch).results

    assert results[0].put.header.revision == 9 and results[0].put.error.code == pb.OK
    assert results[1].put.error.code == pb.NOT_LEADER
    assert results[1].put.error.leader_hint == 2 and results[1].put.error.leader_address == "10.0.0.2:2379"
    assert results[2].put.error.code == pb.INVALID_ARGUMENT
    assert results[3].put.error.code == pb.INVALID_ARGUMENT
    assert results[4].get.found and results[4].get.kv.value == b"hello"
    assert results[4].get.header.revision == 7
    assert not results[5].get.found and results[5].get.error.code == pb.OK
    assert len(node.proposals) == 1


async def test_a_write_not_applied_in_time_times_out_alone() -> None:
    node = FakeNode()
    service = KVService(node)  # type: ignore[arg-type]
    request = pb.BatchRequest(ops=[put_op(b"a", timeout_ms=50), get_op(b"b")])
    results = (await service.Batch(request, None)).results
    assert results[0].put.error.code == pb.TIMEOUT
    assert "write to partition 1" in results[0].put.error.message
    assert results[1].get.error.code == pb.OK
    assert node.proposals[0].cancelled()  # the node will skip it


async def test_a_failed_proposal_reports_its_error() -> None:
    node = FakeNode()
    service = KVService(node)  # type: ignore[arg-type]
    single = asyncio.ensure_future(service.Put(put_op(b"a").put, None))
    while not node.proposals:
        await asyncio.sleep(0)
    node.proposals[0].set_exception(not_leader(1, 3))
    response = await single
    assert response.error.code == pb.NOT_LEADER and response.error.leader_hint == 3


async def test_a_cancelled_call_cancels_what_it_waits_for() -> None:
    """A call cancelled by gRPC (deadline, client gone) leaves no future for the node to fail
    later with nobody to read it: asyncio would log "Future exception was never retrieved"."""
    node = FakeNode()
    service = KVService(node)  # type: ignore[arg-type]
    call = asyncio.ensure_future(service.Batch(pb.BatchRequest(ops=[put_op(b"a"), put_op(b"b")]), None))
    while len(node.proposals) < 2:
        await asyncio.sleep(0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert all(future.cancelled() for future in node.proposals)
