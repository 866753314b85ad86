"""The client's `Watch` against in-process nodes: Watch services over in-memory backends (the real
applier and change hub, no Raft), two nodes replicating every partition. A watch resumes on the
other node from its position when its node stops (no event lost or repeated), takes a revision
that came in fragments as one, tries the other replica when one answers COMPACTED, and ends
with WatchCompactedError, carrying the revision the replicas hold from, when both do."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.client import (
    EventType,
    InvalidArgumentError,
    KvTimeoutError,
    Watch,
    WatchCompactedError,
    WatchEvent,
)
from kvstore.client.routing import Router
from kvstore.client.types import ClusterLayout, Member, PartitionInfo
from kvstore.hub import ChangeHub
from kvstore.rpc import KVService, MemoryBackend, WatchService

WAIT_S = 10.0
PARTITIONS = 4


class Refusing(pb_grpc.WatchServicer):
    """A node that ends every Watch call at once with `status` (as a guard refusing a caller)."""

    def __init__(self, status: grpc.StatusCode) -> None:
        self._status = status

    def add_to(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_WatchServicer_to_server(self, server)

    async def Watch(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(self._status, "refused")


@dataclass
class Nodes:
    """Node 1 and node 2, each serving watches of its own backend; `write` applies the same
    writes to both backends, so both hold the same changes at the same revisions (as replicas
    do). Node 1 is every partition's leader: the client asks it first."""

    backends: dict[int, MemoryBackend]
    services: dict[int, WatchService | Refusing]
    servers: dict[int, grpc.aio.Server] = field(default_factory=dict)
    addresses: dict[int, str] = field(default_factory=dict)
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    async def start(self) -> None:
        for node_id, service in self.services.items():
            server = grpc.aio.server()
            service.add_to(server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            self.servers[node_id], self.addresses[node_id] = server, f"127.0.0.1:{port}"

    async def stop(self, node_id: int) -> None:
        await self.servers.pop(node_id).stop(grace=None)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
        for server in self.servers.values():
            await server.stop(grace=None)

    async def write(self, request: pb.PutRequest | pb.DeleteRequest | pb.TxnRequest) -> int:
        """Apply `request` on both backends; its revision."""
        revisions = set()
        for backend in self.backends.values():
            kv = KVService(backend)
            if isinstance(request, pb.PutRequest):
                response = await kv.Put(request, None)
            elif isinstance(request, pb.DeleteRequest):
                response = await kv.Delete(request, None)
            else:
                response = await kv.Txn(request, None)
            assert response.error.code == pb.OK, response.error.message
            revisions.add(response.header.revision)
        (revision,) = revisions
        return revision

    def watch(
        self, key: bytes, *, prefix: bool = False, start_revision: int | None = None, timeout: float = WAIT_S
    ) -> Watch:
        layout = ClusterLayout(
            epoch=1,
            partition_count=PARTITIONS,
            replication_factor=2,
            partitions=tuple(PartitionInfo(p, (1, 2), 1, 1, 0, 0) for p in range(PARTITIONS)),
            members=tuple(Member(n, f"node-{n}", address, False) for n, address in self.addresses.items()),
        )
        router = Router(layout)

        async def route(deadline: float) -> Router:
            return router

        async def refresh(deadline: float) -> None:
            return None

        def stub(address: str) -> pb_grpc.WatchStub:
            channel = grpc.aio.insecure_channel(address)
            self.channels.append(channel)
            return pb_grpc.WatchStub(channel)

        return Watch(key, prefix, start_revision, False, router=route, refresh=refresh, stub=stub,
                     timeout=timeout, on_close=lambda watch: None)


def nodes(**services: Callable[[MemoryBackend], WatchService | Refusing]) -> Nodes:
    backends = {n: MemoryBackend(partitions=PARTITIONS) for n in (1, 2)}
    make = {n: services.get(f"node{n}", WatchService) for n in (1, 2)}
    return Nodes(backends, {n: make[n](backends[n]) for n in (1, 2)})


@pytest.fixture
async def two_nodes() -> AsyncIterator[Nodes]:
    started = nodes()
    await started.start()
    yield started
    await started.close()


def put(key: bytes, value: bytes = b"v") -> pb.PutRequest:
    return pb.PutRequest(key=key, value=value)


async def take(watch: Watch, count: int) -> list[WatchEvent]:
    async with asyncio.timeout(WAIT_S):
        return [await anext(watch) for _ in range(count)]


def shorten_history(backend: MemoryBackend, max_changes: int) -> None:
    backend.hub = ChangeHub(max_changes=max_changes)
    for partition in range(PARTITIONS):
        backend.hub.open(partition, 0)


async def test_a_watch_resumes_on_the_other_replica_without_losing_or_repeating_an_event(two_nodes: Nodes) -> None:
    written = []
    async with two_nodes.watch(b"k/", prefix=True) as watch:
        for number in range(6):
            key = b"k/%d" % number
            written.append((key, await two_nodes.write(put(key))))
        seen = await take(watch, 6)
        await two_nodes.stop(1)  # the node serving every partition's watch
        for number in range(6, 12):
            key = b"k/%d" % number
            written.append((key, await two_nodes.write(put(key))))
        seen += await take(watch, 6)
    assert sorted((event.key, event.revision) for event in seen) == sorted(written)


async def test_a_revision_in_fragments_is_handed_out_whole() -> None:
    # On node 1 every change is larger than a response may be: each comes in a fragment of its own.
    fragmenting = nodes(node1=lambda backend: WatchService(backend, max_response_bytes=1))
    await fragmenting.start()
    try:
        async with fragmenting.watch(b"{t}", prefix=True) as watch:
            revision = await fragmenting.write(pb.TxnRequest(success=[
                pb.RequestOp(put=put(b"{t}a")), pb.RequestOp(put=put(b"{t}b")), pb.RequestOp(put=put(b"{t}c")),
            ]))
            seen = await take(watch, 1)
            partition = seen[0].partition
            assert watch.position[partition] == revision  # the revision is not delivered until all of it is
            seen += await take(watch, 2)
            assert watch.position[partition] == revision + 1
    finally:
        await fragmenting.close()
    assert [(event.key, event.revision) for event in seen] == [(b"{t}a", revision), (b"{t}b", revision),
                                                              (b"{t}c", revision)]


async def test_a_replica_whose_history_is_too_short_is_passed_over_for_one_that_holds_it() -> None:
    short = nodes()
    shorten_history(short.backends[1], max_changes=1)  # node 1, asked first, keeps one change
    await short.start()
    try:
        first = await short.write(put(b"{c}0"))
        await short.write(put(b"{c}1"))
        await short.write(pb.DeleteRequest(key=b"{c}0"))
        async with short.watch(b"{c}", prefix=True, start_revision=first) as watch:
            seen = await take(watch, 3)
    finally:
        await short.close()
    assert [(event.type, event.key) for event in seen] == [
        (EventType.PUT, b"{c}0"), (EventType.PUT, b"{c}1"), (EventType.DELETE, b"{c}0")
    ]


async def test_a_start_revision_no_replica_holds_ends_the_watch_with_the_revision_they_hold_from() -> None:
    short = nodes()
    shorten_history(short.backends[1], max_changes=1)
    shorten_history(short.backends[2], max_changes=2)
    await short.start()
    try:
        revisions = [await short.write(put(b"{c}%d" % number)) for number in range(4)]
        watch = short.watch(b"{c}", prefix=True, start_revision=revisions[0])
        with pytest.raises(WatchCompactedError) as refused:
            await watch.start()
    finally:
        await short.close()
    error = refused.value
    # Node 1 holds the last revision only, node 2 the last two: both hold from revisions[3] on.
    assert (error.revision, error.compact_revision) == (revisions[0], revisions[3])
    assert f"revision {revisions[3]}" in error.message


async def test_a_watch_no_replica_can_serve_times_out_saying_why_in_one_line(two_nodes: Nodes) -> None:
    await two_nodes.stop(1)
    await two_nodes.stop(2)
    watch = two_nodes.watch(b"k/", prefix=True, timeout=0.5)
    with pytest.raises(KvTimeoutError) as timed_out:
        await watch.start()
    message = timed_out.value.message
    assert message.startswith("the watch could not be started within 0.5s (partition") and "\n" not in message
    named = [int(number) for group in re.findall(r"partitions? ([\d, ]+):", message) for number in group.split(", ")]
    assert sorted(named) == list(range(PARTITIONS)), message  # each once, with what its last attempt met
    assert "connection refused" in message


async def test_a_stream_refused_for_good_ends_the_watch_with_that_error_at_once() -> None:
    refusing = nodes(node1=lambda backend: Refusing(grpc.StatusCode.INVALID_ARGUMENT))
    await refusing.start()
    try:
        watch = refusing.watch(b"k", timeout=WAIT_S)
        async with asyncio.timeout(WAIT_S / 2):  # not retried until the watch's own timeout
            with pytest.raises(InvalidArgumentError, match="refused"):
                await watch.start()
    finally:
        await refusing.close()
