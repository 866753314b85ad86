"""The Peer service: the receiving end of other nodes' Raft message streams, and the meta group's
leader taking a command passed to it. Only peers reach it: the guard admits a caller to it (with
TLS, one with a peer certificate; `kvstore.rpc.policy`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from kvstore._pb import meta_pb2, peer_pb2, peer_pb2_grpc
from kvstore.codec import CodecError, decode_peer_frame
from kvstore.errors import KvError
from kvstore.rpc.backend import Backend

log = logging.getLogger("kvstore.peer")


class PeerService(peer_pb2_grpc.PeerServicer):
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def add_to(self, server: Any) -> None:
        peer_pb2_grpc.add_PeerServicer_to_server(self, server)

    async def Stream(self, request_iterator: AsyncIterator[peer_pb2.PeerFrame], context: Any) -> None:
        peer = 0
        try:
            async for frame in request_iterator:
                if frame.HasField("hello"):
                    # The reply admits the sender or says why not; the sender judges it too.
                    hello = frame.hello
                    reply = self._backend.answer_hello(hello)
                    await context.write(peer_pb2.PeerFrame(hello=reply))
                    if reply.refusal != peer_pb2.ACCEPTED:
                        await context.abort(
                            grpc.StatusCode.FAILED_PRECONDITION,
                            f"node {reply.node_id} of cluster {reply.cluster_id!r} refuses node {hello.node_id} of "
                            f"cluster {hello.cluster_id!r}: {peer_pb2.PeerRefusal.Name(reply.refusal)}")
                    peer = hello.node_id
                    continue
                if frame.raft_batch and peer:
                    if not self._backend.is_member(peer):
                        # Removed since: its sender reconnects, is refused, and so learns it left.
                        await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                            f"node {peer} is no longer a member")
                    self._backend.deliver(decode_peer_frame(frame.raft_batch))
        except CodecError as error:
            # The peer reconnects with a new stream; what this frame carried, Raft sends again.
            log.warning("dropping the stream from peer %d: %s", peer, error)
        except asyncio.CancelledError:
            # A peer's stream lasts as long as both nodes run: when this node stops, the server
            # (or the loop's shutdown) cancels it. That is the normal end, not an error.
            log.debug("stream from peer %d ended by shutdown", peer)

    async def ProposeMeta(self, request: meta_pb2.MetaCommand, context: Any) -> meta_pb2.MetaResult:
        """A meta command another node passes to this one as the meta group's leader."""
        try:
            result = await self._backend.propose_meta(request, forward=False)
        except KvError as error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, error.message)
        return result.to_pb()

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
                try:
                    items = decode_peer_frame(b"".join(parts))
                except CodecError as error:
                    return peer_pb2.SnapshotAck(ok=False, error=str(error))
                self._backend.deliver(items)
                return peer_pb2.SnapshotAck(ok=True)
        return peer_pb2.SnapshotAck(ok=False, error="the stream ended before the last chunk")
