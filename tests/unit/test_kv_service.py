"""The RPC services over the in-memory backend (the real applier, no Raft): a `Batch`'s two
steps (every operation handed over at once, one wait, each its own answer — a result, its error
or a timeout), transactions in a batch, writes proposed as the client's bytes, and the Cluster
service's view."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import grpc
import pytest

from kvstore._pb import kvstore_pb2 as pb
from kvstore.errors import UnavailableError
from kvstore.node.replica import not_leader
from kvstore.rpc import ClusterService, KVService, MemoryBackend


def key_in(backend: MemoryBackend, partition: int, stem: str = "k") -> bytes:
    for counter in itertools.count():
        key = f"{stem}-{counter}".encode()
        if backend.cluster_state.partition_for_key(key) == partition:
            return key
    raise AssertionError("unreachable")


def put_op(key: bytes, timeout_ms: int = 0, value: bytes = b"v", seq: int = 1) -> pb.RequestOp:
    header = pb.RequestHeader(client_id="c", request_seq=seq, timeout_ms=timeout_ms)
    return pb.RequestOp(put=pb.PutRequest(header=header, key=key, value=value))


def get_op(key: bytes, consistency: Any = pb.LINEARIZABLE) -> pb.RequestOp:
    return pb.RequestOp(get=pb.GetRequest(key=key, consistency=consistency))


def txn_op(seq: int, compares: list[pb.Compare], success: list[pb.RequestOp]) -> pb.RequestOp:
    header = pb.RequestHeader(client_id="c", request_seq=seq)
    return pb.RequestOp(txn=pb.TxnRequest(header=header, compare=compares, success=success))


async def test_each_operation_of_a_batch_gets_its_own_answer() -> None:
    backend = MemoryBackend()
    backend.leaders[3] = 2
    service = KVService(backend)
    present = key_in(backend, 1, "present")
    await service.Put(put_op(present, value=b"hello", seq=1).put, None)
    request = pb.BatchRequest(ops=[
        put_op(key_in(backend, 1), seq=2),            # partition 1: applied at revision 2
        put_op(key_in(backend, 3), seq=3),            # partition 3: led by node 2
        put_op(b"", seq=4),                           # empty key
        put_op(key_in(backend, 1), value=b"x" * 100, seq=5),  # value over the limit
        get_op(present),
        get_op(b"absent", pb.STALE),
        pb.RequestOp(),                               # empty operation
    ])
    results = (await service.Batch(request, None)).results

    assert results[0].put.error.code == pb.OK
    assert results[0].put.header.revision == 2 and results[0].put.header.partition == 1
    assert (results[0].put.header.node_id, results[0].put.header.epoch) == (1, backend.epoch) != (1, 0)
    assert results[1].put.error.code == pb.NOT_LEADER
    assert results[1].put.error.leader_hint == 2 and results[1].put.error.leader_address == "10.0.0.2:2379"
    assert results[2].put.error.code == pb.INVALID_ARGUMENT
    assert results[3].put.error.code == pb.INVALID_ARGUMENT and "limit is 64" in results[3].put.error.message
    assert results[4].get.found and results[4].get.kv.value == b"hello"
    assert results[4].get.header.revision == 2
    assert not results[5].get.found and results[5].get.error.code == pb.OK
    assert results[5].get.header.served == pb.STALE
    assert results[6].get.error.code == pb.INVALID_ARGUMENT
    assert [status.applied for status in backend.status()] == [0, 2, 0, 0]  # nothing else was proposed


async def test_a_write_is_proposed_as_the_bytes_the_client_sent() -> None:
    backend = MemoryBackend(hold_proposals=True)
    service = KVService(backend)
    op = put_op(key_in(backend, 0))
    batch = asyncio.ensure_future(service.Batch(pb.BatchRequest(ops=[op]), None))
    while not backend.held:
        await asyncio.sleep(0)
    assert backend.held[0][1] == op.SerializeToString()
    backend.apply_held()
    assert (await batch).results[0].put.header.revision == 1


async def test_a_write_not_applied_in_time_times_out_alone() -> None:
    backend = MemoryBackend(hold_proposals=True)
    service = KVService(backend)
    key = key_in(backend, 1)
    request = pb.BatchRequest(ops=[put_op(key, timeout_ms=50), get_op(key_in(backend, 2))])
    results = (await service.Batch(request, None)).results
    assert results[0].put.error.code == pb.TIMEOUT
    assert "write to partition 1" in results[0].put.error.message
    assert results[1].get.error.code == pb.OK
    assert backend.held[0][3].cancelled()  # the node will skip it
    assert "(outcome unknown: it may still be applied)" in results[0].put.error.message
    backend.apply_held()
    assert backend.status()[1].applied == 0


async def test_a_failed_proposal_reports_its_error() -> None:
    backend = MemoryBackend(hold_proposals=True)
    service = KVService(backend)
    single = asyncio.ensure_future(service.Put(put_op(key_in(backend, 1)).put, None))
    while not backend.held:
        await asyncio.sleep(0)
    backend.fail_held(not_leader(1, 3))
    response = await single
    assert response.error.code == pb.NOT_LEADER and response.error.leader_hint == 3


async def test_a_batch_carries_transactions_each_answered_on_its_own() -> None:
    backend = MemoryBackend()
    service = KVService(backend)
    a, b = key_in(backend, 0, "a"), key_in(backend, 0, "b")
    elsewhere = key_in(backend, 2)
    absent = pb.Compare(key=a, target=pb.Compare.VERSION, result=pb.Compare.EQUAL, number=0)
    nested = pb.RequestOp(txn=pb.TxnRequest(success=[put_op(a)]))
    request = pb.BatchRequest(ops=[
        txn_op(1, [absent], [put_op(a, value=b"1"), put_op(b, value=b"2"), get_op(a)]),
        put_op(elsewhere, seq=2),
        txn_op(3, [absent], [put_op(a, value=b"again")]),  # the compare no longer holds
        txn_op(4, [], [nested]),
        txn_op(5, [absent], [put_op(elsewhere)]),
    ])
    results = (await service.Batch(request, None)).results

    first = results[0].txn
    assert first.error.code == pb.OK and first.succeeded and first.header.revision == 1
    assert [op.WhichOneof("op") for op in first.responses] == ["put", "put", "get"]
    assert first.responses[2].get.found and first.responses[2].get.kv.value == b"1"
    assert results[1].put.header.revision == 1 and results[1].put.header.partition == 2
    assert not results[2].txn.succeeded and results[2].txn.header.revision == 2
    assert results[3].txn.error.code == pb.INVALID_ARGUMENT
    assert "cannot contain a transaction" in results[3].txn.error.message
    assert results[4].txn.error.code == pb.CROSS_PARTITION
    # The Txn RPC is the same path.
    retried = await service.Txn(request.ops[0].txn, None)
    assert retried == first  # seq 1 again: the remembered answer


async def test_an_applier_refusal_arrives_in_the_response_with_the_epoch() -> None:
    backend = MemoryBackend()
    service = KVService(backend)
    key = key_in(backend, 1)
    await service.Put(pb.PutRequest(key=key, value=b"v", fencing_token=5), None)
    stale = await service.Put(pb.PutRequest(key=key, value=b"w", fencing_token=4), None)
    assert stale.error.code == pb.STALE_FENCING_TOKEN and stale.error.epoch == backend.epoch > 0
    assert stale.header.partition == 1 and stale.header.revision == 0


async def test_scan_answers_one_partition_keys_only_if_asked() -> None:
    backend = MemoryBackend()
    service = KVService(backend)
    keys = sorted(key_in(backend, 2, f"s{n}") for n in range(3))
    for seq, key in enumerate(keys, start=1):
        await service.Put(put_op(key, value=b"value", seq=seq).put, None)
    response = await service.Scan(pb.ScanRequest(partition=2, keys_only=True, limit=2), None)
    assert [kv.key for kv in response.kvs] == keys[:2] and response.more
    assert all(kv.value == b"" for kv in response.kvs)
    assert response.header.revision == 3 and response.header.partition == 2
    missing = await service.Scan(pb.ScanRequest(partition=9), None)
    assert missing.error.code == pb.INVALID_ARGUMENT


async def test_the_cluster_service_reports_what_the_node_hosts_and_leads() -> None:
    backend = MemoryBackend()
    backend.leaders[3] = 2
    service = ClusterService(backend)
    status = await service.Status(pb.StatusRequest(), None)
    assert (status.node_id, status.address, status.epoch) == (1, "10.0.0.1:2379", backend.epoch) != (1, "", 0)
    assert (status.partitions_hosted, status.partitions_led) == (4, 3)
    layout = await service.Partitions(pb.PartitionsRequest(), None)
    assert layout.partition_count == 4 and [p.leader for p in layout.partitions] == [1, 1, 1, 2]
    assert [member.id for member in layout.members] == [1, 2, 3]


class _Joining:
    """A backend of a node still joining: it does not know the cluster state."""

    @property
    def cluster_state(self) -> Any:
        raise UnavailableError("node 4 is joining and does not know the cluster state yet")


class _Aborted(Exception):
    pass


class _Context:
    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _Aborted(code, details)


@pytest.mark.parametrize("method", ["Members", "Partitions"])
async def test_a_joining_node_answers_the_map_unavailable_so_the_client_asks_another(method: str) -> None:
    service = ClusterService(_Joining())  # type: ignore[arg-type]
    request = pb.MembersRequest() if method == "Members" else pb.PartitionsRequest()
    with pytest.raises(_Aborted) as aborted:
        await getattr(service, method)(request, _Context())
    assert aborted.value.args == (grpc.StatusCode.UNAVAILABLE, "node 4 is joining and does not know the cluster state yet")


async def test_a_cancelled_call_cancels_what_it_waits_for() -> None:
    """A call cancelled by gRPC (deadline, client gone) leaves no future for the node to fail
    later with nobody to read it: asyncio would log "Future exception was never retrieved"."""
    backend = MemoryBackend(hold_proposals=True)
    service = KVService(backend)
    ops = [put_op(key_in(backend, 1), seq=1), put_op(key_in(backend, 2), seq=2)]
    call = asyncio.ensure_future(service.Batch(pb.BatchRequest(ops=ops), None))
    while len(backend.held) < 2:
        await asyncio.sleep(0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert all(future.cancelled() for *_, future in backend.held)


async def test_a_leader_concern_write_is_answered_with_its_revision_and_nothing_that_needs_the_apply() -> None:
    backend = MemoryBackend()
    service = KVService(backend)
    key = key_in(backend, 1)
    put = put_op(key, seq=1)
    put.put.concern = pb.LEADER
    delete = pb.RequestOp(delete=pb.DeleteRequest(header=pb.RequestHeader(client_id="c", request_seq=2),
                                                  key=key, concern=pb.LEADER))  # fmt: skip
    results = (await service.Batch(pb.BatchRequest(ops=[put, delete]), None)).results
    assert results[0].put.error.code == pb.OK and results[0].put.header.revision == 1
    assert results[1].delete.error.code == pb.OK and results[1].delete.header.revision == 2
    assert not results[1].delete.deleted  # not known before the apply: the client says "unknown"


async def test_a_leader_concern_transaction_or_prev_kv_is_refused_as_never_applied() -> None:
    backend = MemoryBackend()
    service = KVService(backend)
    key = key_in(backend, 1)
    txn = txn_op(1, [], [put_op(key)])
    txn.txn.concern = pb.LEADER
    with_prev = put_op(key, seq=2)
    with_prev.put.concern = pb.LEADER
    with_prev.put.prev_kv = True
    unknown = put_op(key, seq=3)
    unknown.put.concern = 9  # type: ignore[assignment]
    results = (await service.Batch(pb.BatchRequest(ops=[txn, with_prev, unknown]), None)).results
    assert results[0].txn.error.code == pb.INVALID_ARGUMENT
    assert "compares held is known only once it is applied" in results[0].txn.error.message
    assert results[1].put.error.code == pb.INVALID_ARGUMENT and "prev_kv" in results[1].put.error.message
    assert results[2].put.error.code == pb.INVALID_ARGUMENT and "unknown write concern 9" in results[2].put.error.message
    assert backend.held == []  # nothing was proposed


async def test_reads_report_the_level_that_served_them_and_honour_min_revision() -> None:
    backend = MemoryBackend(hold_proposals=True)
    service = KVService(backend)
    key = key_in(backend, 2)
    stale = (await service.Get(pb.GetRequest(key=key, consistency=pb.STALE), None)).header
    assert (stale.served, stale.staleness_ms) == (pb.STALE, 0)
    waiting = asyncio.ensure_future(
        service.Get(pb.GetRequest(key=key, consistency=pb.SESSION, min_revision=1), None)
    )
    write = backend.propose(2, put_op(key).SerializeToString(), pb.MAJORITY)  # held: not applied yet
    await asyncio.sleep(0)
    assert not waiting.done()  # the replica has not applied revision 1
    backend.apply_held()
    assert write.done()
    header = (await waiting).header
    assert (header.served, header.revision) == (pb.SESSION, 1)
    unknown = await service.Get(pb.GetRequest(key=key, consistency=7), None)  # type: ignore[arg-type]
    assert unknown.error.code == pb.INVALID_ARGUMENT
    scan = await service.Scan(pb.ScanRequest(partition=2, consistency=pb.STALE, min_revision=1), None)
    assert (scan.error.code, scan.header.served, scan.header.revision) == (pb.OK, pb.STALE, 1)
