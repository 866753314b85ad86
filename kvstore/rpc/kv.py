"""The KV service: validate → route to the partition → delegate to the node → map errors.

Errors travel inside responses (`error` field), not as gRPC status codes, so that a `Batch`
can report each operation's outcome on its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc
from kvstore.node.errors import RequestError, invalid
from kvstore.node.replica import Replica
from kvstore.node.server import Node
from kvstore.rpc.convert import (
    compare_from_pb,
    delete_from_pb,
    delete_result_to_pb,
    get_result_to_pb,
    kv_to_pb,
    put_from_pb,
    put_result_to_pb,
    txn_keys,
    txn_op_from_pb,
)
from kvstore.rpc.errors import to_error
from kvstore.statemachine import (
    Command,
    DeleteResult,
    ErrorResult,
    GetResult,
    PutResult,
    Txn,
    TxnResult,
    check_command,
    encode_command,
)
from kvstore.storage.keys import prefix_end


class KVService(kvstore_pb2_grpc.KVServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    def add_to(self, server: Any) -> None:
        kvstore_pb2_grpc.add_KVServicer_to_server(self, server)

    # -- helpers ----------------------------------------------------------------------------

    def _timeout(self, header: pb.RequestHeader) -> float:
        return header.timeout_ms / 1000 if header.timeout_ms else self.node.config.request_timeout_s

    def _header(self, partition: int, revision: int, served: int = pb.LINEARIZABLE) -> pb.ResponseHeader:
        return pb.ResponseHeader(
            partition=partition, revision=revision, served=served, node_id=self.node.id,
            epoch=self.node.cluster_map.epoch,
        )

    def _error(self, error: BaseException | ErrorResult) -> pb.Error:
        return to_error(error, self.node.cluster_map.epoch, self.node.address_of)

    def _check_key(self, key: bytes) -> None:
        if not key:
            raise invalid("the key is empty")
        limit = self.node.config.max_key_bytes
        if len(key) > limit:
            raise invalid(f"the key is {len(key)} bytes; the limit is {limit}")

    def _check_value(self, value: bytes) -> None:
        limit = self.node.config.max_value_bytes
        if len(value) > limit:
            raise invalid(f"the value is {len(value)} bytes; the limit is {limit}")

    def _partition(self, key: bytes) -> int:
        self._check_key(key)
        return self.node.cluster_map.partition_for_key(key)

    async def _readable(self, partition: int, consistency: int, min_revision: int, timeout_s: float) -> Replica:
        node = self.node
        if consistency == pb.STALE:
            return node.replica(partition)
        if consistency == pb.SESSION:
            return await node.session_barrier(partition, min_revision, timeout_s)
        return await node.read_barrier(partition, lease=consistency == pb.LEASE, timeout_s=timeout_s)

    async def _propose(self, partition: int, header: pb.RequestHeader, op: Any) -> object:
        command = Command(header.client_id, header.request_seq, op)
        problem = check_command(command)
        if problem is not None:
            return problem
        return await self.node.propose(partition, encode_command(command), self._timeout(header))

    # -- RPCs -------------------------------------------------------------------------------

    async def Get(self, request: pb.GetRequest, context: Any) -> pb.GetResponse:
        partition = 0
        try:
            partition = self._partition(request.key)
            replica = await self._readable(
                partition, request.consistency, request.min_revision, self._timeout(request.header)
            )
            header = self._header(partition, replica.sm.applied_index, request.consistency)
            return get_result_to_pb(GetResult(replica.sm.get(request.key)), header)
        except Exception as e:
            return pb.GetResponse(header=self._header(partition, 0), error=self._error(e))

    async def Put(self, request: pb.PutRequest, context: Any) -> pb.PutResponse:
        partition = 0
        try:
            partition = self._partition(request.key)
            self._check_value(request.value)
            result = await self._propose(partition, request.header, put_from_pb(request))
            if isinstance(result, PutResult):
                return put_result_to_pb(result, self._header(partition, result.revision))
            raise _unexpected(result)
        except Exception as e:
            return pb.PutResponse(header=self._header(partition, 0), error=self._error(e))

    async def Delete(self, request: pb.DeleteRequest, context: Any) -> pb.DeleteResponse:
        partition = 0
        try:
            partition = self._partition(request.key)
            result = await self._propose(partition, request.header, delete_from_pb(request))
            if isinstance(result, DeleteResult):
                return delete_result_to_pb(result, self._header(partition, result.revision))
            raise _unexpected(result)
        except Exception as e:
            return pb.DeleteResponse(header=self._header(partition, 0), error=self._error(e))

    async def Scan(self, request: pb.ScanRequest, context: Any) -> pb.ScanResponse:
        partition = request.partition
        try:
            if partition >= self.node.cluster_map.partitions:
                raise invalid(f"partition {partition} does not exist")
            replica = await self._readable(partition, request.consistency, 0, self._timeout(request.header))
            if request.prefix:
                start, end = request.prefix, prefix_end(request.prefix)
            else:
                start, end = request.start, request.end or None
            kvs, more = replica.sm.scan(start, end, request.limit)
            header = self._header(partition, replica.sm.applied_index, request.consistency)
            response = pb.ScanResponse(header=header, more=more)
            for kv in kvs:
                item = kv_to_pb(kv)
                if request.keys_only:
                    item.ClearField("value")
                response.kvs.append(item)
            return response
        except Exception as e:
            return pb.ScanResponse(header=self._header(partition, 0), error=self._error(e))

    async def Txn(self, request: pb.TxnRequest, context: Any) -> pb.TxnResponse:
        partition = 0
        try:
            keys = txn_keys(request)
            if not keys:
                raise invalid("the transaction has no compares and no operations")
            partitions = sorted({self._partition(key) for key in keys})
            if len(partitions) > 1:
                raise RequestError(
                    "CROSS_PARTITION",
                    f"the transaction touches partitions {partitions}; a transaction must stay in one partition "
                    "(put related keys under one {hash tag})",
                )
            partition = partitions[0]
            txn = Txn(
                tuple(compare_from_pb(c) for c in request.compare),
                tuple(txn_op_from_pb(op) for op in request.success),
                tuple(txn_op_from_pb(op) for op in request.failure),
            )
            result = await self._propose(partition, request.header, txn)
            if not isinstance(result, TxnResult):
                raise _unexpected(result)
            response = pb.TxnResponse(header=self._header(partition, result.revision), succeeded=result.succeeded)
            for item in result.results:
                response.responses.append(_txn_result_to_pb(item, self._header(partition, result.revision)))
            return response
        except Exception as e:
            return pb.TxnResponse(header=self._header(partition, 0), error=self._error(e))

    async def Batch(self, request: pb.BatchRequest, context: Any) -> pb.BatchResponse:
        results = await asyncio.gather(*(self._batch_op(op) for op in request.ops))
        return pb.BatchResponse(results=results)

    async def _batch_op(self, op: pb.RequestOp) -> pb.ResponseOp:
        kind = op.WhichOneof("op")
        if kind == "get":
            return pb.ResponseOp(get=await self.Get(op.get, None))
        if kind == "put":
            return pb.ResponseOp(put=await self.Put(op.put, None))
        if kind == "delete":
            return pb.ResponseOp(delete=await self.Delete(op.delete, None))
        return pb.ResponseOp(get=pb.GetResponse(error=self._error(invalid("empty operation in batch"))))


def _txn_result_to_pb(result: object, header: pb.ResponseHeader) -> pb.ResponseOp:
    if isinstance(result, PutResult):
        return pb.ResponseOp(put=put_result_to_pb(result, header))
    if isinstance(result, DeleteResult):
        return pb.ResponseOp(delete=delete_result_to_pb(result, header))
    if isinstance(result, GetResult):
        return pb.ResponseOp(get=get_result_to_pb(result, header))
    raise _unexpected(result)


def _unexpected(result: object) -> BaseException:
    if isinstance(result, ErrorResult):
        return RequestError(str(result.code), result.message)
    return RequestError("INTERNAL", f"unexpected result {type(result).__name__}")
