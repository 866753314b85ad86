"""The Peer service: the receiving end of other nodes' Raft message streams."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from kvstore._pb import peer_pb2, peer_pb2_grpc
from kvstore.node.server import Node
from kvstore.node.wire import decode_batch

log = logging.getLogger("kvstore.peer")


class PeerService(peer_pb2_grpc.PeerServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    def add_to(self, server: Any) -> None:
        peer_pb2_grpc.add_PeerServicer_to_server(self, server)

    async def Stream(self, request_iterator: AsyncIterator[peer_pb2.PeerFrame], context: Any) -> None:
        peer = 0
        try:
            async for frame in request_iterator:
                if frame.HasField("hello"):
                    refusal = self.node.admission.judge(frame.hello)
                    await context.write(peer_pb2.PeerFrame(hello=self.node.admission.hello(refusal)))
                    if refusal != peer_pb2.ACCEPTED:
                        return
                    peer = frame.hello.node_id
                    continue
                if frame.raft_batch and peer:
                    self.node.deliver(decode_batch(frame.raft_batch))
        except asyncio.CancelledError:
            # A peer's stream lasts as long as both nodes run: when this node stops, the server
            # (or the loop's shutdown) cancels it. That is the normal end, not an error.
            log.debug("stream from peer %d ended by shutdown", peer)

    async def SendSnapshot(
        self, request_iterator: AsyncIterator[peer_pb2.SnapshotChunk], context: Any
    ) -> peer_pb2.SnapshotAck:
        """Reassemble a snapshot sent in chunks and hand it to Raft as one message."""
        parts: list[bytes] = []
        received = 0
        async for chunk in request_iterator:
            if chunk.offset != received:
                return peer_pb2.SnapshotAck(ok=False, error=f"chunk at offset {chunk.offset}, expected {received}")
            parts.append(chunk.data)
            received += len(chunk.data)
            if chunk.last:
                self.node.deliver(decode_batch(b"".join(parts)))
                return peer_pb2.SnapshotAck(ok=True)
        return peer_pb2.SnapshotAck(ok=False, error="the stream ended before the last chunk")
