"""The KV service: validate -> hand to the node (`Backend`) -> fill the response header -> map
errors through the one table (`kvstore.rpc.errors`).

Errors travel inside responses (`error` field), not as gRPC status codes, so that a `Batch`
can report each operation's outcome on its own.

Every operation goes the same way, alone or in a `Batch`: a write's `RequestOp` is checked and
its bytes are proposed as they are (they are the `LogCommand` the log carries); a get asks the
node for a replica to read from. Operations go in two steps: every operation of the request is
validated and handed to the node at once, then the request waits once for all of them. No
task or timer per operation: a batch of hundreds costs one wait.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc
from kvstore.errors import CrossPartitionError, InvalidArgumentError, KvTimeoutError, UnavailableError
from kvstore.rpc.answers import check_partition, error_of, fill_header, timeout_of, wait
from kvstore.rpc.backend import Backend, LeaderDurable, Reader, ServedRead, WriteOutcome
from kvstore.statemachine import KvRequest, WriteResponse, check_command, txn_keys
from kvstore.storage.keys import prefix_end

OpResponse = pb.GetResponse | pb.PutResponse | pb.DeleteResponse | pb.TxnResponse


@dataclass(slots=True)
class _Read:
    """A get handed to the node: the future resolves to the replica to read from."""

    request: pb.GetRequest
    partition: int
    future: asyncio.Future[ServedRead[Reader]]
    timeout_s: float
    what: str


@dataclass(slots=True)
class _Write:
    """A write proposed to the node: the future resolves to the applier's response."""

    kind: str  # the RequestOp field: put, delete or txn
    partition: int
    future: asyncio.Future[WriteOutcome]
    timeout_s: float
    what: str


_Started = pb.ResponseOp | _Read | _Write


class KVService(kvstore_pb2_grpc.KVServicer):
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def add_to(self, server: Any) -> None:
        kvstore_pb2_grpc.add_KVServicer_to_server(self, server)

    # -- RPCs -------------------------------------------------------------------------------

    async def Get(self, request: pb.GetRequest, context: Any) -> pb.GetResponse:
        (response,) = await self._run([self._start(pb.RequestOp(get=request))])
        return response.get

    async def Put(self, request: pb.PutRequest, context: Any) -> pb.PutResponse:
        (response,) = await self._run([self._start(pb.RequestOp(put=request))])
        return response.put

    async def Delete(self, request: pb.DeleteRequest, context: Any) -> pb.DeleteResponse:
        (response,) = await self._run([self._start(pb.RequestOp(delete=request))])
        return response.delete

    async def Txn(self, request: pb.TxnRequest, context: Any) -> pb.TxnResponse:
        (response,) = await self._run([self._start(pb.RequestOp(txn=request))])
        return response.txn

    async def Batch(self, request: pb.BatchRequest, context: Any) -> pb.BatchResponse:
        return pb.BatchResponse(results=await self._run([self._start(op) for op in request.ops]))

    async def Scan(self, request: pb.ScanRequest, context: Any) -> pb.ScanResponse:
        partition = request.partition
        response = pb.ScanResponse()
        try:
            check_partition(self._backend, partition)
            timeout_s = timeout_of(self._backend, request.header)
            _check_consistency(request.consistency)
            read = self._backend.read(partition, request.consistency, request.min_revision, request.max_staleness_ms)
            served = await wait(read, timeout_s, f"read from partition {partition}")
            reader = served.reader
            if request.prefix:
                start, end = request.prefix, prefix_end(request.prefix)
            else:
                start, end = request.start, request.end or None
            kvs, more = reader.scan(start, end, request.limit)
            response.kvs.extend(kvs)
            response.more = more
            if request.keys_only:
                for kv in response.kvs:
                    kv.ClearField("value")
            fill_header(self._backend, response.header, partition, reader.applied_index, served.served,
                        served.staleness_ms)  # fmt: skip
        except Exception as error:
            response = pb.ScanResponse(error=error_of(self._backend, error))
            fill_header(self._backend, response.header, partition, 0, pb.LINEARIZABLE)
        return response

    # -- two steps: start each operation (validate, hand to the node), then one wait for all ---

    async def _run(self, started: list[_Started]) -> list[pb.ResponseOp]:
        pending = [op for op in started if not isinstance(op, pb.ResponseOp) and not op.future.done()]
        if pending:
            try:
                await asyncio.wait([op.future for op in pending], timeout=max(op.timeout_s for op in pending))
            except asyncio.CancelledError:
                # The call was cancelled (its deadline passed, or the client left): nobody will read
                # these futures, so the node must not fail them later (and skips them).
                for op in pending:
                    op.future.cancel()
                raise
        return [op if isinstance(op, pb.ResponseOp) else self._answer(op) for op in started]

    def _start(self, op: pb.RequestOp) -> _Started:
        """Validate `op` and hand it to the node; its answer at once if that fails."""
        kind = op.WhichOneof("op") or "get"
        partition = 0
        try:
            if op.HasField("get"):
                get = op.get
                partition = self._partition_of([get.key])
                _check_consistency(get.consistency)
                level = pb.ReadConsistency.Name(get.consistency).lower()
                what = f"{level} read from partition {partition}"
                if get.min_revision:
                    what += f" at revision {get.min_revision} or later"
                future = self._backend.read(partition, get.consistency, get.min_revision, get.max_staleness_ms)
                return _Read(get, partition, future, timeout_of(self._backend, get.header), what)
            request = _write_request(op)
            problem = check_command(request) or _concern_problem(request)
            if problem is not None:
                raise InvalidArgumentError(problem)
            partition = self._partition_of(txn_keys(request) if isinstance(request, pb.TxnRequest) else [request.key])
            self._check_values(request)
            proposal = self._backend.propose(partition, op.SerializeToString(), request.concern)
            concern = pb.WriteConcern.Name(request.concern).lower()
            what = f"write to partition {partition} (concern {concern})"
            return _Write(kind, partition, proposal, timeout_of(self._backend, request.header), what)
        except Exception as error:
            return self._failed(kind, partition, error)

    def _answer(self, started: _Read | _Write) -> pb.ResponseOp:
        future = started.future
        if not future.done():
            future.cancel()  # the node skips it; a write may still be applied, as with any timeout
            message = f"{started.what} did not complete within {started.timeout_s:g}s"
            if isinstance(started, _Write):
                message += " (outcome unknown: it may still be applied)"
            return self._failed(_kind(started), started.partition, KvTimeoutError(message))
        if future.cancelled():
            return self._failed(_kind(started), started.partition, UnavailableError(f"{started.what} was cancelled"))
        error = future.exception()
        if error is not None:
            return self._failed(_kind(started), started.partition, error)
        if isinstance(started, _Read):
            served = started.future.result()
            result = pb.ResponseOp()
            get = result.get
            kv = served.reader.get(started.request.key)
            if kv is not None:
                get.found = True
                get.kv.CopyFrom(kv)
            fill_header(self._backend, get.header, started.partition, served.reader.applied_index, served.served,
                        served.staleness_ms)  # fmt: skip
            return result
        outcome = started.future.result()
        if isinstance(outcome, LeaderDurable):
            # Durable on the leader alone: the revision it gets if it commits, and nothing that
            # needs the apply (a LEADER delete cannot say whether the key existed).
            result = pb.ResponseOp()
            fill_header(self._backend, _inner(result, started.kind).header, started.partition, outcome.index, pb.LINEARIZABLE)
            return result
        response = outcome
        if response.error.code:
            response.error.epoch = self._backend.epoch
        fill_header(self._backend, response.header, started.partition, response.header.revision, pb.LINEARIZABLE)
        return _wrap(response)

    def _failed(self, kind: str, partition: int, error: BaseException) -> pb.ResponseOp:
        result = pb.ResponseOp()
        inner = _inner(result, kind)
        inner.error.CopyFrom(error_of(self._backend, error))
        fill_header(self._backend, inner.header, partition, 0, pb.LINEARIZABLE)
        return result

    # -- validation and answers -------------------------------------------------------------

    def _partition_of(self, keys: list[bytes]) -> int:
        """The one partition holding `keys` (checked against the key limits)."""
        if not keys:
            raise InvalidArgumentError("the transaction has no compares and no operations")
        limit = self._backend.limits.max_key_bytes
        cluster_state = self._backend.cluster_state
        partitions = set()
        for key in keys:
            if not key:
                raise InvalidArgumentError("the key is empty")
            if len(key) > limit:
                raise InvalidArgumentError(f"the key is {len(key)} bytes; the limit is {limit}")
            partitions.add(cluster_state.partition_for_key(key))
        if len(partitions) > 1:
            raise CrossPartitionError(
                f"the transaction touches partitions {sorted(partitions)}; a transaction must stay in one "
                "partition (put related keys under one {hash tag})"
            )
        return partitions.pop()

    def _check_values(self, request: KvRequest) -> None:
        if isinstance(request, pb.DeleteRequest):
            return
        if isinstance(request, pb.PutRequest):
            values = [request.value]
        else:
            values = [op.put.value for branch in (request.success, request.failure) for op in branch
                      if op.HasField("put")]
        limit = self._backend.limits.max_value_bytes
        for value in values:
            if len(value) > limit:
                raise InvalidArgumentError(f"the value is {len(value)} bytes; the limit is {limit}")



def _write_request(op: pb.RequestOp) -> KvRequest:
    if op.HasField("put"):
        return op.put
    if op.HasField("delete"):
        return op.delete
    if op.HasField("txn"):
        return op.txn
    raise InvalidArgumentError("the operation is empty")


def _check_consistency(consistency: int) -> None:
    if consistency not in pb.ReadConsistency.values():
        raise InvalidArgumentError(f"unknown read consistency {consistency}")


def _concern_problem(request: KvRequest) -> str | None:
    """What makes `request`'s write concern unservable, if anything (`kvstore.node.writes`)."""
    concern = request.concern
    if concern not in pb.WriteConcern.values():
        return f"unknown write concern {concern}"
    if concern != pb.LEADER:
        return None
    if isinstance(request, pb.TxnRequest):
        return ("a transaction cannot be acknowledged with write concern LEADER: whether its compares held is "
                "known only once it is applied, after a quorum has it; use majority or all")  # fmt: skip
    if request.prev_kv:
        return ("prev_kv cannot be returned with write concern LEADER: the previous value is known only once "
                "the write is applied, after a quorum has it; use majority or all")  # fmt: skip
    return None


def _kind(started: _Read | _Write) -> str:
    return "get" if isinstance(started, _Read) else started.kind


def _wrap(response: WriteResponse) -> pb.ResponseOp:
    if isinstance(response, pb.PutResponse):
        return pb.ResponseOp(put=response)
    if isinstance(response, pb.DeleteResponse):
        return pb.ResponseOp(delete=response)
    if isinstance(response, pb.TxnResponse):
        return pb.ResponseOp(txn=response)
    raise TypeError(f"a {type(response).__name__} answers no RequestOp")


def _inner(result: pb.ResponseOp, kind: str) -> OpResponse:
    """The response of `kind` inside `result` (it becomes the one set once changed)."""
    if kind == "put":
        return result.put
    if kind == "delete":
        return result.delete
    if kind == "txn":
        return result.txn
    return result.get
