"""One async driver per target, so the load generator issues the same operations to both.

kvstore goes through its own client (which coalesces concurrent calls per node into batches).
etcd goes through its v3 gRPC API with one unary RPC per operation, as etcd's clients do,
spread round-robin over the members the way etcd's client balancer spreads them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import grpc

from kvstore._pb import etcd_kv_pb2 as etcd_pb
from kvstore._pb import etcd_kv_pb2_grpc as etcd_grpc
from kvstore.client import Client, ReadConsistency, TlsConfig, ops


class TargetKind(StrEnum):
    KVSTORE = "kvstore"
    ETCD = "etcd"


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """Where a driver connects; picklable, so it can be handed to client processes."""

    kind: TargetKind
    endpoints: tuple[str, ...]
    tls: TlsConfig | None = None  # kvstore serving TLS: the client's files


class Driver(Protocol):
    async def get(self, key: bytes) -> bytes | None: ...

    async def put(self, key: bytes, value: bytes) -> None: ...

    async def compare_and_put(self, key: bytes, expected: bytes | None, value: bytes) -> bool:
        """Write `value` only if the key still holds `expected` (None: does not exist)."""
        ...

    async def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        """Bulk loading (not measured): as few round trips as the target allows."""
        ...

    async def close(self) -> None: ...


class KvstoreDriver:
    def __init__(self, client: Client, consistency: ReadConsistency) -> None:
        self._client = client
        self._consistency = consistency

    async def get(self, key: bytes) -> bytes | None:
        kv = await self._client.get(key, consistency=self._consistency)
        return None if kv is None else kv.value

    async def put(self, key: bytes, value: bytes) -> None:
        await self._client.put(key, value)

    async def compare_and_put(self, key: bytes, expected: bytes | None, value: bytes) -> bool:
        guard = ops.version(key) == 0 if expected is None else ops.value(key) == expected
        result = await self._client.txn([guard], [ops.put(key, value)])
        return result.succeeded

    async def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        await self._client.batch([ops.put(key, value) for key, value in items])

    async def close(self) -> None:
        await self._client.close()


# etcd refuses transactions with more operations than --max-txn-ops (default 128).
ETCD_MAX_TXN_OPS = 128


class EtcdDriver:
    def __init__(self, endpoints: Sequence[str], serializable: bool, timeout: float) -> None:
        self._channels = [grpc.aio.insecure_channel(endpoint) for endpoint in endpoints]
        self._stubs = itertools.cycle([etcd_grpc.KVStub(channel) for channel in self._channels])
        self._serializable = serializable
        self._timeout = timeout

    async def get(self, key: bytes) -> bytes | None:
        request = etcd_pb.RangeRequest(key=key, serializable=self._serializable)
        response = await next(self._stubs).Range(request, timeout=self._timeout)
        return response.kvs[0].value if response.kvs else None

    async def put(self, key: bytes, value: bytes) -> None:
        await next(self._stubs).Put(etcd_pb.PutRequest(key=key, value=value), timeout=self._timeout)

    async def compare_and_put(self, key: bytes, expected: bytes | None, value: bytes) -> bool:
        if expected is None:
            guard = etcd_pb.Compare(key=key, target=etcd_pb.Compare.VERSION, result=etcd_pb.Compare.EQUAL, version=0)
        else:
            guard = etcd_pb.Compare(key=key, target=etcd_pb.Compare.VALUE, result=etcd_pb.Compare.EQUAL,
                                    value=expected)
        request = etcd_pb.TxnRequest(
            compare=[guard], success=[etcd_pb.RequestOp(request_put=etcd_pb.PutRequest(key=key, value=value))]
        )
        response = await next(self._stubs).Txn(request, timeout=self._timeout)
        return response.succeeded

    async def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        for start in range(0, len(items), ETCD_MAX_TXN_OPS):
            chunk = items[start:start + ETCD_MAX_TXN_OPS]
            request = etcd_pb.TxnRequest(
                success=[etcd_pb.RequestOp(request_put=etcd_pb.PutRequest(key=k, value=v)) for k, v in chunk]
            )
            await next(self._stubs).Txn(request, timeout=self._timeout)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


def etcd_serializable(consistency: ReadConsistency) -> bool:
    """etcd has two read levels. Its default Range is linearizable (a ReadIndex round), which is
    what kvstore's LINEARIZABLE and LEASE promise; SESSION and STALE are local reads, like
    etcd's serializable Range."""
    return consistency in (ReadConsistency.SESSION, ReadConsistency.STALE)


async def open_driver(target: TargetSpec, consistency: ReadConsistency, timeout: float) -> Driver:
    if target.kind is TargetKind.KVSTORE:
        client = Client(list(target.endpoints), timeout=timeout, tls=target.tls)
        await client.connect()
        return KvstoreDriver(client, consistency)
    return EtcdDriver(target.endpoints, etcd_serializable(consistency), timeout)
