"""Per-node auto-batching: concurrent key operations for one node travel in one `Batch` RPC.

There is no flush timer. The flusher sends whatever is queued as soon as it runs; operations that
arrive while a batch is in flight queue up and leave together in the next one. A lone call
therefore goes out at once, and under load batches grow by themselves.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from dataclasses import dataclass

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.errors import (
    ERRORS,
    RETRY_AFTER_METADATA,
    ErrorCode,
    InvalidArgumentError,
    KvError,
    ResourceExhaustedError,
    UnavailableError,
    code_for_status,
)


class TransportError(Exception):
    """A node could not be reached or did not answer in time; the operation may be retried elsewhere."""


# An operation joins a batch only while the batch stays within this many bytes (one larger
# operation travels alone): every node accepts requests of 1 MiB and more (--max-request-bytes).
MAX_BATCH_BYTES = 1 << 20

# gRPC's own words when a node refuses a message over its --max-request-bytes.
_TOO_LARGE = re.compile(r"SERVER: Received message larger than max \((\d+) vs\. (\d+)\)")

# gRPC's words for why a connection failed (in a failed RPC's details), and ours, shorter.
_CONNECTION_PROBLEMS = (
    ("Connection refused", "connection refused"),
    ("errors resolving", "unknown host"),
    ("No route to host", "no route to host"),
    ("Connection reset", "connection reset"),
    ("Socket closed", "connection closed"),
    ("Connection timed out", "connection timed out"),
)
_MAX_REASON_CHARS = 100


def failure_reason(error: grpc.aio.AioRpcError) -> str:
    """A few words on why the RPC failed ("connection refused"), never gRPC's multi-part dump."""
    status = error.code()
    if status is grpc.StatusCode.DEADLINE_EXCEEDED:
        return "no answer in time"
    details = error.details() or ""
    for words, reason in _CONNECTION_PROBLEMS:
        if words in details:
            return reason
    first_line = details.splitlines()[0] if details else ""
    if len(first_line) > _MAX_REASON_CHARS:
        first_line = first_line[: _MAX_REASON_CHARS - 3] + "..."
    return f"{status.name.lower()}: {first_line}" if first_line else status.name.lower()


def transport_failure(error: grpc.aio.AioRpcError) -> Exception:
    """The exception a failed RPC becomes (its status read through `kvstore.errors.ERRORS`): a
    `TransportError` when another attempt may succeed, else the code's final `KvError`."""
    status = error.code()
    details = error.details() or ""
    too_large = _TOO_LARGE.search(details) if status is grpc.StatusCode.RESOURCE_EXHAUSTED else None
    if too_large:
        return InvalidArgumentError(
            f"the request is {too_large[1]} bytes; the node accepts at most {too_large[2]} (its "
            "--max-request-bytes, plus room for framing): send fewer or smaller operations at once"
        )
    code = code_for_status(status)
    if code is ErrorCode.RESOURCE_EXHAUSTED:
        return ResourceExhaustedError(details or "over the rate limit", retry_after_s=_retry_after_s(error))
    kind = ERRORS[code]
    if kind.retryable:
        return TransportError(failure_reason(error))
    if code in _REFUSALS and details:
        return kind.exception(details, code=code)  # the guard's one-line reason, as it is
    return kind.exception(f"the node failed the request: {failure_reason(error)}", code=code)


# What the node's guard refuses a call with: the status details are the reason, for the user.
_REFUSALS = frozenset({ErrorCode.PERMISSION_DENIED, ErrorCode.UNAUTHENTICATED, ErrorCode.NO_SPACE})


def _retry_after_s(error: grpc.aio.AioRpcError) -> float:
    """The pause a RESOURCE_EXHAUSTED answer asks for (trailing metadata `retry-after-ms`)."""
    for key, value in error.trailing_metadata() or ():
        if key == RETRY_AFTER_METADATA:
            try:
                return max(0.0, int(value) / 1000)
            except ValueError:
                break
    return 0.0


@dataclass(frozen=True, slots=True)
class _QueuedOp:
    request: pb.RequestOp
    size: int  # of the encoded request
    deadline: float  # loop time
    reply: asyncio.Future[pb.ResponseOp]
    expiry: asyncio.TimerHandle  # fails `reply` at `deadline`

    def answer(self, result: pb.ResponseOp) -> None:
        self.expiry.cancel()
        if not self.reply.done():  # else its caller gave up (deadline or cancellation)
            self.reply.set_result(result)

    def fail(self, error: Exception) -> None:
        self.expiry.cancel()
        if not self.reply.done():
            self.reply.set_exception(error)


def _expire(reply: asyncio.Future[pb.ResponseOp], timeout: float) -> None:
    if not reply.done():
        reply.set_exception(TransportError(f"no answer within {timeout:g}s"))


class NodeBatcher:
    """The queue and flusher task of one node address. `start()` once, `close()` to stop."""

    def __init__(self, address: str, stub: pb_grpc.KVStub, max_batch: int) -> None:
        self.address = address
        self._stub = stub
        self._max_batch = max_batch
        self._queue: deque[_QueuedOp] = deque()
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._in_flight: list[_QueuedOp] = []

    def start(self) -> None:
        self._flusher = asyncio.get_running_loop().create_task(
            self._flush_forever(), name=f"kvstore-batcher-{self.address}"
        )

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        for queued in [*self._in_flight, *self._queue]:
            queued.fail(UnavailableError("the client was closed"))
        self._in_flight = []
        self._queue.clear()

    def submit(self, request: pb.RequestOp, timeout: float) -> asyncio.Future[pb.ResponseOp]:
        """Queue one operation; the future resolves to its response or fails with the RPC's error.

        Without an answer within `timeout` seconds it fails with `TransportError`. The batcher
        owns this deadline (one timer per operation, cancelled by the answer), so callers await
        the future directly instead of wrapping it in `asyncio.wait_for`.
        """
        if self._flusher is None:
            raise UnavailableError("the client is not connected")
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[pb.ResponseOp] = loop.create_future()
        deadline = loop.time() + timeout
        expiry = loop.call_at(deadline, _expire, reply, timeout)
        self._queue.append(_QueuedOp(request, request.ByteSize(), deadline, reply, expiry))
        self._wakeup.set()
        return reply

    def _take_batch(self) -> list[_QueuedOp]:
        batch: list[_QueuedOp] = []
        size = 0
        queue = self._queue
        while queue and len(batch) < self._max_batch:
            queued = queue[0]
            if queued.reply.done():  # its caller gave up (deadline or cancellation): skip it
                queue.popleft()
                continue
            if batch and size + queued.size > MAX_BATCH_BYTES:
                break
            batch.append(queue.popleft())
            size += queued.size
        return batch

    async def _flush_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while batch := self._take_batch():
                self._in_flight = batch
                await self._send(batch)
                self._in_flight = []

    async def _send(self, batch: list[_QueuedOp]) -> None:
        loop = asyncio.get_running_loop()
        timeout = max(max(queued.deadline for queued in batch) - loop.time(), 0.001)
        request = pb.BatchRequest(ops=[queued.request for queued in batch])
        try:
            response = await self._stub.Batch(request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            failure = transport_failure(error)
            for queued in batch:
                queued.fail(failure)
            return
        if len(response.results) != len(batch):
            mismatch = KvError(
                f"node {self.address} answered {len(response.results)} results to a batch of {len(batch)}",
                code=ErrorCode.INTERNAL,
            )
            for queued in batch:
                queued.fail(mismatch)
            return
        for queued, result in zip(batch, response.results, strict=True):
            queued.answer(result)
