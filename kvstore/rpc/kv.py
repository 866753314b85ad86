"""The KV service: validate → route to the partition → delegate to the node → map errors.

Errors travel inside responses (`error` field), not as gRPC status codes, so that a `Batch`
can report each operation's outcome on its own.

Get, Put and Delete (alone or in a `Batch`) go in two steps: every operation of the request is
validated and submitted to the node at once, then the request waits once for all of them. No
task or timer per operation: a batch of hundreds costs one wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc
from kvstore.node.errors import RequestError, invalid, timeout
from kvstore.node.replica import Replica
from kvstore.node.server import Node, wait_within
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

    def _submit_read(
        self, partition: int, consistency: int, min_revision: int
    ) -> tuple[asyncio.Future[None] | None, str]:
        """What a read at `consistency` waits for (None: it may read now), and its name for a
        timeout."""
        node = self.node
        if consistency == pb.STALE:
            return None, ""
        if consistency == pb.SESSION:
            future = node.submit_session_read(partition, min_revision)
            return future, f"session read from partition {partition} (revision {min_revision})"
        return node.submit_read(partition, lease=consistency == pb.LEASE), f"read from partition {partition}"

    async def _readable(self, partition: int, consistency: int, min_revision: int, timeout_s: float) -> Replica:
        future, what = self._submit_read(partition, consistency, min_revision)
        if future is not None:
            await wait_within(future, timeout_s, what)
        return self.node.replica(partition)

    def _submit_command(self, partition: int, header: pb.RequestHeader, op: Any) -> asyncio.Future[object]:
        """Check and propose one command; the future resolves to the applier's result."""
        command = Command(header.client_id, header.request_seq, op)
        problem = check_command(command)
        if problem is not None:
            raise _unexpected(problem)
        return self.node.submit_proposal(partition, encode_command(command))

    # -- RPCs -------------------------------------------------------------------------------

    async def Get(self, request: pb.GetRequest, context: Any) -> pb.GetResponse:
        (response,) = await self._run([self._start_get(request)])
        return response.get

    async def Put(self, request: pb.PutRequest, context: Any) -> pb.PutResponse:
        (response,) = await self._run([self._start_put(request)])
        return response.put

    async def Delete(self, request: pb.DeleteRequest, context: Any) -> pb.DeleteResponse:
        (response,) = await self._run([self._start_delete(request)])
        return response.delete

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
            result = await wait_within(
                self._submit_command(partition, request.header, txn),
                self._timeout(request.header),
                f"write to partition {partition}",
            )
            if not isinstance(result, TxnResult):
                raise _unexpected(result)
            response = pb.TxnResponse(header=self._header(partition, result.revision), succeeded=result.succeeded)
            for item in result.results:
                response.responses.append(_txn_result_to_pb(item, self._header(partition, result.revision)))
            return response
        except Exception as e:
            return pb.TxnResponse(header=self._header(partition, 0), error=self._error(e))

    async def Batch(self, request: pb.BatchRequest, context: Any) -> pb.BatchResponse:
        return pb.BatchResponse(results=await self._run([self._start(op) for op in request.ops]))

    # -- two-step operations: start (validate, submit), then one wait for all ----------------

    async def _run(self, started: list[pb.ResponseOp | _Waiting]) -> list[pb.ResponseOp]:
        waiting = [op for op in started if isinstance(op, _Waiting)]
        if waiting:
            try:
                await asyncio.wait([op.future for op in waiting], timeout=max(op.timeout_s for op in waiting))
            except asyncio.CancelledError:
                # The call was cancelled (its deadline passed, or the client left): nobody will read
                # these futures, so the node must not fail them later (and skips them).
                for op in waiting:
                    op.future.cancel()
                raise
        return [op if isinstance(op, pb.ResponseOp) else op.outcome() for op in started]

    def _start(self, op: pb.RequestOp) -> pb.ResponseOp | _Waiting:
        kind = op.WhichOneof("op")
        if kind == "get":
            return self._start_get(op.get)
        if kind == "put":
            return self._start_put(op.put)
        if kind == "delete":
            return self._start_delete(op.delete)
        return pb.ResponseOp(get=pb.GetResponse(error=self._error(invalid("empty operation in batch"))))

    def _start_get(self, request: pb.GetRequest) -> pb.ResponseOp | _Waiting:
        partition = 0

        def fail(error: BaseException) -> pb.ResponseOp:
            return pb.ResponseOp(get=pb.GetResponse(header=self._header(partition, 0), error=self._error(error)))

        try:
            partition = self._partition(request.key)
            consistency = request.consistency
            replica = self.node.replica(partition)

            def finish(_: object) -> pb.ResponseOp:
                header = self._header(partition, replica.sm.applied_index, consistency)
                return pb.ResponseOp(get=get_result_to_pb(GetResult(replica.sm.get(request.key)), header))

            future, what = self._submit_read(partition, consistency, request.min_revision)
            if future is None:
                return finish(None)
            return _Waiting(future, finish, fail, self._timeout(request.header), what)
        except Exception as e:
            return fail(e)

    def _start_put(self, request: pb.PutRequest) -> pb.ResponseOp | _Waiting:
        return self._start_write(request.header, request.key, request.value, put_from_pb(request), _PUT)

    def _start_delete(self, request: pb.DeleteRequest) -> pb.ResponseOp | _Waiting:
        return self._start_write(request.header, request.key, None, delete_from_pb(request), _DELETE)

    def _start_write(
        self, request_header: pb.RequestHeader, key: bytes, value: bytes | None, op: Any, kind: _WriteKind
    ) -> pb.ResponseOp | _Waiting:
        """Validate and propose one write; its answer is built as `kind` says."""
        partition = 0

        def fail(error: BaseException) -> pb.ResponseOp:
            response = kind.response(header=self._header(partition, 0), error=self._error(error))
            return pb.ResponseOp(**{kind.field: response})

        def finish(result: object) -> pb.ResponseOp:
            if not isinstance(result, kind.result):
                raise _unexpected(result)
            return pb.ResponseOp(**{kind.field: kind.to_pb(result, self._header(partition, result.revision))})

        try:
            partition = self._partition(key)
            if value is not None:
                self._check_value(value)
            future = self._submit_command(partition, request_header, op)
            return _Waiting(future, finish, fail, self._timeout(request_header), f"write to partition {partition}")
        except Exception as e:
            return fail(e)


@dataclass(frozen=True, slots=True)
class _WriteKind:
    """How the answer to one kind of write is built: the `ResponseOp` field, its message, the
    applier's result type and its conversion."""

    field: str
    response: Callable[..., Any]
    result: type[PutResult] | type[DeleteResult]
    to_pb: Callable[[Any, pb.ResponseHeader], Any]


_PUT = _WriteKind("put", pb.PutResponse, PutResult, put_result_to_pb)
_DELETE = _WriteKind("delete", pb.DeleteResponse, DeleteResult, delete_result_to_pb)


@dataclass(slots=True)
class _Waiting:
    """An operation submitted to the node: its answer once `future` is done."""

    future: asyncio.Future[Any]
    finish: Callable[[Any], pb.ResponseOp]  # the future's result -> the answer
    fail: Callable[[BaseException], pb.ResponseOp]
    timeout_s: float
    what: str

    def outcome(self) -> pb.ResponseOp:
        future = self.future
        if not future.done():
            future.cancel()  # the node skips it; a write may still be applied, as with any timeout
            return self.fail(timeout(self.what, self.timeout_s))
        if future.cancelled():
            return self.fail(RequestError("UNAVAILABLE", f"{self.what} was cancelled"))
        try:
            return self.finish(future.result())
        except Exception as e:
            return self.fail(e)


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
