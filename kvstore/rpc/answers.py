"""What every servicer does around the node's answer: the request's timeout, the response
header, errors through the one table, and waiting with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb.internal_pb2 import LogCommand
from kvstore.errors import InvalidArgumentError, KvTimeoutError
from kvstore.rpc.backend import Backend, LeaderDurable
from kvstore.rpc.errors import to_error
from kvstore.statemachine import COMMAND_FIELDS, WriteRequest, WriteResponse, check_command

T = TypeVar("T")


def timeout_of(backend: Backend, header: pb.RequestHeader) -> float:
    """The seconds the request may take: its own `timeout_ms`, else the node's default."""
    return header.timeout_ms / 1000 if header.timeout_ms else backend.limits.request_timeout_s


def fill_header(
    backend: Backend,
    header: pb.ResponseHeader,
    partition: int,
    revision: int,
    served: pb.ReadConsistency,
    staleness_ms: int = 0,
) -> None:
    """`served` is the path that answered a read (`ServedRead`), LINEARIZABLE for a write;
    `staleness_ms` the bound a STALE read guarantees."""
    header.partition = partition
    header.revision = revision
    header.served = served
    header.node_id = backend.node_id
    header.epoch = backend.epoch
    header.staleness_ms = staleness_ms


def error_of(backend: Backend, error: BaseException) -> pb.Error:
    return to_error(error, backend.epoch, backend.address_of)


def check_partition(backend: Backend, partition: int) -> None:
    count = backend.cluster_state.partition_count
    if partition >= count:
        raise InvalidArgumentError(f"partition {partition} does not exist (the cluster has {count})")


async def wait(awaitable: Awaitable[T], timeout_s: float | None, what: str) -> T:
    """The result, or a TIMEOUT error naming `what` after `timeout_s` (None: no limit)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await awaitable
    except TimeoutError:
        raise KvTimeoutError(f"{what} did not complete within {timeout_s:g}s") from None


async def propose(backend: Backend, partition: int, request: WriteRequest) -> WriteResponse:
    """Check `request`'s shape, propose it wrapped in a `LogCommand` and wait for the applier's
    response, with the header filled."""
    problem = check_command(request)
    if problem is not None:
        raise InvalidArgumentError(problem)
    check_partition(backend, partition)
    command = LogCommand()
    getattr(command, COMMAND_FIELDS[type(request)][0]).CopyFrom(request)
    what = f"{type(request).__name__} in partition {partition}"
    proposal = backend.propose(partition, command.SerializeToString(), pb.MAJORITY)
    response = await wait(proposal, timeout_of(backend, request.header), what)
    assert not isinstance(response, LeaderDurable)  # a MAJORITY write is answered once applied
    if response.error.code:
        response.error.epoch = backend.epoch
    fill_header(backend, response.header, partition, response.header.revision, pb.LINEARIZABLE)
    return response


def refusal(backend: Backend, request: WriteRequest, partition: int, error: BaseException) -> WriteResponse:
    """The response of `request`'s kind that carries `error`."""
    response = COMMAND_FIELDS[type(request)][1](error=error_of(backend, error))
    fill_header(backend, response.header, partition, 0, pb.LINEARIZABLE)
    return response
