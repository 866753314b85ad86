"""Raft messages on the wire between nodes: batches, and snapshots sent in chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from kvstore._pb import peer_pb2
from kvstore.node.config import NodeConfig
from kvstore.node.security import NodeSecurity
from kvstore.node.wire import decode_batch, encode_batch, encode_frames, snapshot_chunks
from kvstore.raft import ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMeta
from kvstore.rpc.peer import PeerService


class RecordingNode:
    def __init__(self) -> None:
        self.delivered: list[tuple[int, Message]] = []
        self.security = NodeSecurity(NodeConfig(1, "127.0.0.1:1", Path("unused")))  # plaintext: admits all

    def deliver(self, items: list[tuple[int, Message]]) -> None:
        self.delivered.extend(items)


async def stream(chunks: Iterable[peer_pb2.SnapshotChunk]) -> AsyncIterator[peer_pb2.SnapshotChunk]:
    for chunk in chunks:
        yield chunk


def snapshot_message(size: int) -> Message:
    meta = SnapshotMeta(120, 3, ConfState(frozenset({1, 2, 3}), frozenset({4})))
    return Message(MessageType.SNAPSHOT, 2, 1, term=3, snapshot=Snapshot(meta, bytes(range(256)) * (size // 256)))


def test_a_batch_round_trips_every_field() -> None:
    append = Message(MessageType.APPEND, 2, 1, 5, 4, 10, (Entry(11, 5, b"x"), Entry(12, 5, b"", EntryType.CONF_CHANGE)),
                     commit=9, reject=True, reject_hint=7, context=3, transfer=True)
    items = [(7, append), (8, snapshot_message(1024))]
    assert decode_batch(encode_batch(items)) == items


def test_frames_stay_within_their_size_unless_one_message_alone_is_larger() -> None:
    def append(index: int, size: int) -> Message:
        return Message(MessageType.APPEND, 2, 1, 5, 5, index, (Entry(index + 1, 5, bytes(size)),), commit=index)

    items = [(i % 4, append(i, 300)) for i in range(40)] + [(1, append(99, 5000))] + [(2, append(100, 10))]

    frames = list(encode_frames(items, max_frame_bytes=2000))

    assert [item for frame in frames for item in decode_batch(frame)] == items  # all of them, in order
    assert all(len(frame) <= 2000 for frame in frames if len(decode_batch(frame)) > 1)
    assert [len(decode_batch(frame)) for frame in frames if len(frame) > 2000] == [1]  # the 5000-byte one, alone
    assert len(frames) < len(items) / 2  # frames are filled, not one message each


async def test_a_large_snapshot_arrives_whole_through_chunks() -> None:
    message = snapshot_message(2_500_000)
    chunks = list(snapshot_chunks(9, 1, message, chunk_bytes=1 << 20))
    assert len(chunks) == 3 and chunks[-1].last and not any(c.last for c in chunks[:-1])
    node = RecordingNode()
    ack = await PeerService(node).SendSnapshot(stream(chunks), None)  # type: ignore[arg-type]
    assert ack.ok
    assert node.delivered == [(9, message)]


async def test_a_snapshot_with_a_missing_chunk_is_refused() -> None:
    chunks = list(snapshot_chunks(9, 1, snapshot_message(2_500_000), chunk_bytes=1 << 20))
    node = RecordingNode()
    ack = await PeerService(node).SendSnapshot(stream([chunks[0], chunks[2]]), None)  # type: ignore[arg-type]
    assert not ack.ok and "offset" in ack.error
    assert node.delivered == []
