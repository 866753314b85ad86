"""The Peer service: who it admits, its streams, and snapshots sent in chunks and reassembled
(the peer frame's codec itself is tested in test_codec.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable

import grpc
import pytest

from kvstore._pb import peer_pb2
from kvstore.codec import Encoder
from kvstore.node.transport import logged_progress, snapshot_chunks
from kvstore.raft import ConfState, Message, MessageType, Snapshot, SnapshotMeta
from kvstore.rpc import MemoryBackend, PeerService


class FakeContext:
    """A Peer RPC's context: records what the service tells the caller; `abort` raises as gRPC's does."""

    def __init__(self) -> None:
        self.written: list[peer_pb2.PeerFrame] = []
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5555"

    async def write(self, frame: peer_pb2.PeerFrame) -> None:
        self.written.append(frame)

    @property
    def admitted(self) -> bool:
        """Whether the service answered a hello without refusing (the sender is then connected)."""
        return any(f.HasField("hello") and f.hello.refusal == peer_pb2.ACCEPTED for f in self.written)

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise grpc.aio.AbortError(details)


async def stream(chunks: Iterable[peer_pb2.SnapshotChunk]) -> AsyncIterator[peer_pb2.SnapshotChunk]:
    for chunk in chunks:
        yield chunk


def snapshot_message(size: int) -> Message:
    meta = SnapshotMeta(120, 3, ConfState(frozenset({1, 2, 3}), frozenset({4})))
    return Message(MessageType.SNAPSHOT, 2, 1, term=3, snapshot=Snapshot(meta, bytes(range(256)) * (size // 256)))


def chunked(message: Message) -> list[peer_pb2.SnapshotChunk]:
    return list(snapshot_chunks(Encoder().peer_frame([(9, message)]), 9, 1, message, chunk_bytes=1 << 20))


async def test_a_large_snapshot_arrives_whole_through_chunks() -> None:
    message = snapshot_message(2_500_000)
    chunks = chunked(message)
    assert len(chunks) == 3 and chunks[-1].last and not any(c.last for c in chunks[:-1])
    node = MemoryBackend()
    ack = await PeerService(node).SendSnapshot(stream(chunks), FakeContext())
    assert ack.ok
    assert node.delivered == [(9, message)]


def test_a_long_snapshot_transfer_logs_its_progress(caplog: pytest.LogCaptureFixture) -> None:
    message = snapshot_message(5_000_000)
    payload = Encoder().peer_frame([(9, message)])
    ticks = iter(range(0, 100, 3))  # each chunk takes 3 s to go
    with caplog.at_level(logging.INFO, logger="kvstore.transport"):
        sent = list(logged_progress(snapshot_chunks(payload, 9, 1, message, 1 << 20), len(payload), "snapshot 120",
                                    clock=lambda: float(next(ticks))))
    assert len(sent) == 5
    assert [r.getMessage() for r in caplog.records] == [
        "sending snapshot 120: 2.0 of 4.8 MiB (41%)", "sending snapshot 120: 4.0 of 4.8 MiB (83%)"]


async def test_a_snapshot_with_a_missing_chunk_is_refused() -> None:
    chunks = chunked(snapshot_message(2_500_000))
    node = MemoryBackend()
    ack = await PeerService(node).SendSnapshot(stream([chunks[0], chunks[2]]), FakeContext())
    assert not ack.ok and "offset" in ack.error
    assert node.delivered == []


async def test_a_snapshot_that_does_not_decode_is_refused() -> None:
    chunks = chunked(snapshot_message(1024))
    chunks[0].data = chunks[0].data[:-1]  # a byte short
    node = MemoryBackend()
    ack = await PeerService(node).SendSnapshot(stream(chunks), FakeContext())
    assert not ack.ok and "peer frame" in ack.error
    assert node.delivered == []


async def frames(*items: peer_pb2.PeerFrame) -> AsyncIterator[peer_pb2.PeerFrame]:
    for item in items:
        yield item


async def test_a_stream_delivers_frames_of_a_peer_of_the_same_cluster_only() -> None:
    message = Message(MessageType.HEARTBEAT, 2, 1, term=3, commit=7)
    frame = peer_pb2.PeerFrame(raft_batch=Encoder().peer_frame([(4, message)]))
    node = MemoryBackend()
    hello = peer_pb2.PeerFrame(hello=peer_pb2.PeerHello(node_id=1, cluster_id="kvstore"))
    context = FakeContext()
    await PeerService(node).Stream(frames(hello, frame, peer_pb2.PeerFrame(raft_batch=b"\xc1"), frame), context)
    assert node.delivered == [(4, message)]  # the frame that does not decode ended the stream
    assert context.admitted  # the sender counts as connected once it has the reply hello
    stranger = peer_pb2.PeerFrame(hello=peer_pb2.PeerHello(node_id=5, cluster_id="other"))
    context = FakeContext()
    with pytest.raises(grpc.aio.AbortError):
        await PeerService(node).Stream(frames(stranger, frame), context)
    assert node.delivered == [(4, message)]
    assert not context.admitted and context.written[0].hello.refusal == peer_pb2.OTHER_CLUSTER
    assert context.aborted == (grpc.StatusCode.FAILED_PRECONDITION,
                               "node 1 of cluster 'kvstore' refuses node 5 of cluster 'other': OTHER_CLUSTER")
