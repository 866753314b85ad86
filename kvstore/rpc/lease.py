"""The Lease service: grant, revoke, keep alive, inspect leases (docs/locks.md).

A lease lives in one partition, which its id encodes: grants and revocations are proposed to
that partition's Raft group; keepalives go to the partition's leader, whose lessor answers each
once it may (`Backend.keep_alive`); TimeToLive and Leases read the leader's table.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc
from kvstore.errors import InvalidArgumentError, LeaseNotFoundError
from kvstore.rpc.answers import check_partition, error_of, fill_header, propose, refusal, timeout_of, wait
from kvstore.rpc.backend import Backend, Reader
from kvstore.statemachine import Lease, lease_partition


class LeaseService(kvstore_pb2_grpc.LeaseServicer):
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def add_to(self, server: Any) -> None:
        kvstore_pb2_grpc.add_LeaseServicer_to_server(self, server)

    async def Grant(self, request: pb.LeaseGrantRequest, context: Any) -> pb.LeaseGrantResponse:
        partition = request.partition
        try:
            if request.id and lease_partition(request.id) != partition:
                raise InvalidArgumentError(
                    f"lease id {request.id} belongs to partition {lease_partition(request.id)}, not to "
                    f"partition {partition}"
                )
            response = await propose(self._backend, partition, request)
        except Exception as error:
            response = refusal(self._backend, request, partition, error)
        assert isinstance(response, pb.LeaseGrantResponse)
        return response

    async def Revoke(self, request: pb.LeaseRevokeRequest, context: Any) -> pb.LeaseRevokeResponse:
        partition = lease_partition(request.id)
        try:
            response = await propose(self._backend, partition, request)
        except Exception as error:
            response = refusal(self._backend, request, partition, error)
        assert isinstance(response, pb.LeaseRevokeResponse)
        return response

    async def KeepAlive(
        self, request_iterator: AsyncIterator[pb.LeaseKeepAliveRequest], context: Any
    ) -> AsyncIterator[pb.LeaseKeepAliveResponse]:
        """Answer each keepalive when its lessor does, in whatever order they come: one stream
        carries all of a client's leases led by this node."""
        answers: asyncio.Queue[pb.LeaseKeepAliveResponse | None] = asyncio.Queue()
        pending: set[asyncio.Task[None]] = set()

        async def answer(request: pb.LeaseKeepAliveRequest) -> None:
            answers.put_nowait(await self._keep_alive(request))

        async def read() -> None:
            try:
                async for request in request_iterator:
                    task = asyncio.create_task(answer(request), name=f"keepalive {request.id}")
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                if pending:
                    await asyncio.wait(set(pending))
            finally:
                answers.put_nowait(None)

        reader = asyncio.create_task(read(), name="keepalive stream")
        try:
            while (response := await answers.get()) is not None:
                yield response
        finally:
            for task in (reader, *pending):
                task.cancel()

    async def _keep_alive(self, request: pb.LeaseKeepAliveRequest) -> pb.LeaseKeepAliveResponse:
        backend = self._backend
        response = pb.LeaseKeepAliveResponse(id=request.id)
        partition = lease_partition(request.id)
        try:
            if not request.id:
                raise InvalidArgumentError("a lease id must not be 0")
            check_partition(backend, partition)
            timeout_s = backend.limits.request_timeout_s
            response.ttl_seconds = await wait(
                backend.keep_alive(request.id), timeout_s, f"keepalive of lease {request.id}"
            )
        except Exception as error:
            response.error.CopyFrom(error_of(backend, error))
        fill_header(backend, response.header, partition, 0, pb.LINEARIZABLE)
        return response

    async def TimeToLive(
        self, request: pb.LeaseTimeToLiveRequest, context: Any
    ) -> pb.LeaseTimeToLiveResponse:
        partition = lease_partition(request.id)
        response = pb.LeaseTimeToLiveResponse(id=request.id)
        revision = 0
        try:
            reader = await self._leader_reader(partition, request.header)
            revision = reader.applied_index
            lease = reader.leases.get(request.id)
            if lease is None:
                raise LeaseNotFoundError(
                    f"lease {request.id} does not exist (expired, revoked or never granted)"
                )
            response.ttl_seconds = self._remaining(partition, lease)
            response.granted_ttl_seconds = lease.ttl
            if request.keys:
                response.keys.extend(reader.leases.keys(request.id))
        except Exception as error:
            response = pb.LeaseTimeToLiveResponse(id=request.id, error=error_of(self._backend, error))
        fill_header(self._backend, response.header, partition, revision, pb.LINEARIZABLE)
        return response

    async def Leases(self, request: pb.LeaseLeasesRequest, context: Any) -> pb.LeaseLeasesResponse:
        partition = request.partition
        response = pb.LeaseLeasesResponse()
        revision = 0
        try:
            reader = await self._leader_reader(partition, request.header)
            revision = reader.applied_index
            for lease in reader.leases.leases():
                response.leases.add(
                    id=lease.id, ttl_seconds=self._remaining(partition, lease), granted_ttl_seconds=lease.ttl
                )
        except Exception as error:
            response = pb.LeaseLeasesResponse(error=error_of(self._backend, error))
        fill_header(self._backend, response.header, partition, revision, pb.LINEARIZABLE)
        return response

    async def _leader_reader(self, partition: int, header: pb.RequestHeader) -> Reader:
        """The partition's table, read linearizably (on its leader, after a ReadIndex round)."""
        backend = self._backend
        check_partition(backend, partition)
        future = backend.read(partition, pb.LINEARIZABLE, 0, 0)
        served = await wait(future, timeout_of(backend, header), f"read of partition {partition}'s leases")
        return served.reader

    def _remaining(self, partition: int, lease: Lease) -> int:
        """Whole seconds the lease has left at least: the leader's lessor's view, or its full TTL
        while no lessor keeps it (a new leader restarts it from there)."""
        remaining = self._backend.lease_remaining(partition, lease.id)
        return lease.ttl if remaining is None else math.floor(remaining)
