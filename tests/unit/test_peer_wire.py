"""Snapshots sent between nodes in chunks, reassembled by the Peer service (the peer frame's
codec itself is tested in test_codec.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from kvstore._pb import peer_pb2
from kvstore.codec import Encoder
from kvstore.node.transport import snapshot_chunks
from kvstore.raft import ConfState, Message, MessageType, Snapshot, SnapshotMeta
from kvstore.rpc.peer import PeerService


class RecordingNode:
    def __init__(self) -> None:
        self.delivered: list[tuple[int, Message]] = []

    def deliver(self, items: list[tuple[int, Message]]) -> None:
        self.delivered.extend(items)


async def stream(chunks: Iterable[peer_pb2.SnapshotChunk]) -> AsyncIterator[peer_pb2.SnapshotChunk]:
    for chunk in chunks:
        yield chunk


def snapshot_message(size: int) -> Message:
    meta = SnapshotMeta(120, 3, ConfState(frozenset({1, 2, 3}), frozenset({4})))
    return Message(MessageType.SNAPSHOT, 2, 1, term=3, snapshot=Snapshot(meta, bytes(range(256)) * (size // 256)))


async def test_a_large_snapshot_arrives_whole_through_chunks() -> None:
    message = snapshot_message(2_500_000)
    chunks = list(snapshot_chunks(Encoder(), 9, 1, message, chunk_bytes=1 << 20))
    assert len(chunks) == 3 and chunks[-1].last and not any(c.last for c in chunks[:-1])
    node = RecordingNode()
    ack = await PeerService(node).SendSnapshot(stream(chunks), None)  # type: ignore[arg-type]
    assert ack.ok
    assert node.delivered == [(9, message)]


async def test_a_snapshot_with_a_missing_chunk_is_refused() -> None:
    chunks = list(snapshot_chunks(Encoder(), 9, 1, snapshot_message(2_500_000), chunk_bytes=1 << 20))
    node = RecordingNode()
    ack = await PeerService(node).SendSnapshot(stream([chunks[0], chunks[2]]), None)  # type: ignore[arg-type]
    assert not ack.ok and "offset" in ack.error
    assert node.delivered == []
