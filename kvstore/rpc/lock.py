"""The Lock service: a FIFO lock per name on top of leases, with fencing tokens (docs/locks.md).

`Lock` proposes the caller's lock key (its name's queue, `kvstore.locks`, on the caller's lease)
and waits on the node until that key heads the queue; it answers the key and its create
revision, the fencing token. `Unlock` deletes the key.
"""

from __future__ import annotations

from typing import Any

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc
from kvstore.errors import CrossPartitionError, InvalidArgumentError
from kvstore.names import lock_key, lock_prefix
from kvstore.rpc.answers import propose, refusal, wait
from kvstore.rpc.backend import Backend
from kvstore.statemachine import lease_partition


class LockService(kvstore_pb2_grpc.LockServicer):
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def add_to(self, server: Any) -> None:
        kvstore_pb2_grpc.add_LockServicer_to_server(self, server)

    async def Lock(self, request: pb.LockRequest, context: Any) -> pb.LockResponse:
        backend = self._backend
        partition = 0
        try:
            if not request.name:
                raise InvalidArgumentError("a lock name must not be empty")
            partition = backend.cluster_state.partition_for_key(lock_prefix(request.name))
            if request.lease and lease_partition(request.lease) != partition:
                raise CrossPartitionError(
                    f"lock {request.name!r:.80} lives in partition {partition} but lease {request.lease} in partition "
                    f"{lease_partition(request.lease)}: lock with a lease of the lock's partition (a client "
                    "Session holds one per partition it touches)"
                )
            key = lock_key(request.name, request.lease)
            if len(key) > backend.limits.max_key_bytes:
                raise InvalidArgumentError(
                    f"the lock key is {len(key)} bytes; the limit is {backend.limits.max_key_bytes}"
                )
            response = await propose(backend, partition, request)
            assert isinstance(response, pb.LockResponse)
            if not response.error.code:
                # Waits as long as the caller does, unless its request names a timeout.
                timeout_s = request.header.timeout_ms / 1000 if request.header.timeout_ms else None
                await wait(
                    backend.hold_lock(partition, request.name, response.key),
                    timeout_s,
                    f"lock {request.name!r:.80}",
                )
        except Exception as error:
            refused = refusal(backend, request, partition, error)
            assert isinstance(refused, pb.LockResponse)
            return refused
        return response

    async def Unlock(self, request: pb.UnlockRequest, context: Any) -> pb.UnlockResponse:
        partition = 0
        try:
            if request.key:
                partition = self._backend.cluster_state.partition_for_key(request.key)
            response = await propose(self._backend, partition, request)
        except Exception as error:
            response = refusal(self._backend, request, partition, error)
        assert isinstance(response, pb.UnlockResponse)
        return response
