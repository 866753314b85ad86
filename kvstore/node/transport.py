"""Peer transport: one long-lived gRPC stream to each peer, carrying batches of Raft messages.

`send()` never blocks and never awaits: it appends to the peer's queue and wakes the peer's
sender task, which writes everything queued as one frame. While a peer is unreachable its
messages are dropped (Raft retransmits) and the node is told: a leader stops pipelining to
it, and followers whose leader it was elect a new one right after the lease instead of at a
random later point. The sender reconnects with exponential backoff.

Snapshots do not ride in the batches: each goes in its own `SendSnapshot` call, cut into
chunks, and its outcome is reported back so Raft can resume replicating to that follower.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import grpc

from kvstore._pb import peer_pb2, peer_pb2_grpc
from kvstore.node.identity import PeerAdmission
from kvstore.node.wire import encode_batch, snapshot_chunks
from kvstore.raft import Message

log = logging.getLogger("kvstore.transport")

GRPC_OPTIONS = [
    ("grpc.max_send_message_length", 256 << 20),
    ("grpc.max_receive_message_length", 256 << 20),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]
MAX_QUEUED_MESSAGES = 100_000
SNAPSHOT_CHUNK_BYTES = 1 << 20
SNAPSHOT_TIMEOUT_S = 300.0
BACKOFF_INITIAL_S = 0.05
BACKOFF_MAX_S = 1.0
HANDSHAKE_TIMEOUT_S = 5.0


class _PeerSender:
    def __init__(self, peer_id: int, address: str, admission: PeerAdmission,
                 on_unreachable: Callable[[int], None]) -> None:
        self.peer_id = peer_id
        self.address = address
        self.admission = admission
        self.on_unreachable = on_unreachable
        self.queue: list[tuple[int, Message]] = []
        self.wake = asyncio.Event()
        self.connected = False
        self.task: asyncio.Task[None] | None = None

    def enqueue(self, items: list[tuple[int, Message]]) -> None:
        """Queue messages for the next frame; dropped while disconnected or when the queue is full."""
        if not self.connected or len(self.queue) >= MAX_QUEUED_MESSAGES:
            return
        self.queue.extend(items)
        self.wake.set()

    async def run(self) -> None:
        backoff = BACKOFF_INITIAL_S
        while True:
            channel = grpc.aio.insecure_channel(self.address, options=GRPC_OPTIONS)
            try:
                call = peer_pb2_grpc.PeerStub(channel).Stream()
                await call.write(peer_pb2.PeerFrame(hello=self.admission.hello()))
                # The peer answers with its own hello, which says whether it refuses us.
                reply = await asyncio.wait_for(call.read(), HANDSHAKE_TIMEOUT_S)
                if reply is grpc.aio.EOF or not reply.HasField("hello"):
                    raise ConnectionError("the peer ended the stream without a hello")
                if not self.admission.check_reply(self.peer_id, reply.hello):
                    backoff = BACKOFF_MAX_S  # a refusal lasts until someone fixes a configuration
                    raise ConnectionRefusedError("the handshake refused the stream")
                self.connected = True
                log.info("connected to peer %d at %s", self.peer_id, self.address)
                backoff = BACKOFF_INITIAL_S
                await self._pump(call)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # any stream failure: drop, tell Raft, reconnect
                if self.connected:
                    log.warning("lost peer %d at %s: %s", self.peer_id, self.address, _short(e))
                self.connected = False
                self.queue.clear()
                self.on_unreachable(self.peer_id)
            finally:
                self.connected = False
                await channel.close(grace=None)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _pump(self, call: grpc.aio.StreamStreamCall) -> None:
        # A follower may have nothing to send to a leader that died (it only answers), so the
        # stream's end wakes the pump too: followers learn of the loss at once and elect early.
        call.add_done_callback(lambda _: self.wake.set())
        while True:
            await self.wake.wait()
            self.wake.clear()
            if call.done():
                raise ConnectionError("peer closed the stream")
            items, self.queue = self.queue, []
            if items:
                await call.write(peer_pb2.PeerFrame(raft_batch=encode_batch(items)))


class PeerTransport:
    """Owns one sender task per peer and the snapshot uploads; `start()`, `send()`, `close()`."""

    def __init__(self, node_id: int, peers: dict[int, str],
                 on_unreachable: Callable[[int], None],
                 on_snapshot_sent: Callable[[int, int, bool], None]) -> None:
        self._node_id = node_id
        self._peers = peers
        self._on_unreachable = on_unreachable
        self._on_snapshot_sent = on_snapshot_sent
        self._senders: dict[int, _PeerSender] = {}
        self._snapshot_tasks: set[asyncio.Task[None]] = set()

    def start(self, admission: PeerAdmission) -> None:
        """Connect to every peer; each stream starts with a handshake judged by `admission`."""
        self._senders = {
            peer_id: _PeerSender(peer_id, address, admission, self._on_unreachable)
            for peer_id, address in self._peers.items()
            if peer_id != self._node_id
        }
        for sender in self._senders.values():
            sender.task = asyncio.create_task(sender.run(), name=f"peer-sender-{sender.peer_id}")

    def send(self, items: Iterable[tuple[int, Message]]) -> None:
        """Queue (group, message) pairs, each for the peer it is addressed to."""
        by_peer: dict[int, list[tuple[int, Message]]] = {}
        for group, message in items:
            if message.snapshot is not None:
                task = asyncio.create_task(self._send_snapshot(group, message), name=f"snapshot-{group}")
                self._snapshot_tasks.add(task)
                task.add_done_callback(self._snapshot_tasks.discard)
                continue
            peer_items = by_peer.get(message.to)
            if peer_items is None:
                by_peer[message.to] = [(group, message)]
            else:
                peer_items.append((group, message))
        senders = self._senders
        for peer_id, peer_items in by_peer.items():
            sender = senders.get(peer_id)
            if sender is not None:
                sender.enqueue(peer_items)

    async def _send_snapshot(self, group: int, message: Message) -> None:
        """Upload one snapshot message in chunks; tell Raft whether it arrived."""
        assert message.snapshot is not None
        meta = message.snapshot.meta
        chunks = snapshot_chunks(group, self._node_id, message, SNAPSHOT_CHUNK_BYTES)
        ok = False
        async with grpc.aio.insecure_channel(self._peers[message.to], options=GRPC_OPTIONS) as channel:
            try:
                ack = await peer_pb2_grpc.PeerStub(channel).SendSnapshot(chunks, timeout=SNAPSHOT_TIMEOUT_S)
                ok = ack.ok
                if not ok:
                    log.warning("peer %d refused snapshot %d of group %d: %s", message.to, meta.index, group, ack.error)
            except grpc.aio.AioRpcError as e:
                log.warning("snapshot %d of group %d to peer %d failed: %s", meta.index, group, message.to, _short(e))
        log.info("sent snapshot %d of group %d to peer %d: %s", meta.index, group, message.to,
                 "ok" if ok else "failed")
        self._on_snapshot_sent(group, message.to, ok)

    def connected(self, peer_id: int) -> bool:
        sender = self._senders.get(peer_id)
        return sender is not None and sender.connected

    async def close(self) -> None:
        tasks = [s.task for s in self._senders.values() if s.task is not None] + list(self._snapshot_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _short(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return str(error) or type(error).__name__
