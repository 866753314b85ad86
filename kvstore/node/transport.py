"""Peer transport: one long-lived gRPC stream to each peer, carrying batches of Raft messages.

`send()` never blocks and never awaits: it appends to the peer's queue and wakes the peer's
sender task, which writes everything queued as frames of at most `MAX_FRAME_BYTES`. While a
peer is unreachable its messages are dropped (Raft retransmits) and the node is told: a leader
stops pipelining to it, and followers whose leader it was elect a new one right after the
lease instead of at a random later point. The sender reconnects with exponential backoff.

A stream counts as connected once the peer has admitted it: with TLS it checks this node's
certificate, then it answers this node's hello with its own, and each end judges the other's
(`kvstore.node.identity.PeerAdmission`: same cluster, a member, the same incarnation as before). When the node's certificates are
rotated the sender opens a new stream with them beside the old one, which carries on, and
moves over once the peer has admitted the new one, so nothing is dropped or held up; if the
peer refuses the new certificate the old stream stays in use.

Snapshots do not ride in the batches: each goes in its own `SendSnapshot` call, cut into
chunks, and its outcome is reported back so Raft can resume replicating to that follower.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import grpc

from kvstore._pb import peer_pb2, peer_pb2_grpc
from kvstore.codec import Encoder
from kvstore.node.identity import PeerAdmission
from kvstore.node.metrics import NodeMetrics
from kvstore.raft import Message
from kvstore.tls import ChannelOptions

log = logging.getLogger("kvstore.transport")

KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", 256 << 20),
    ("grpc.max_receive_message_length", 256 << 20),
    *KEEPALIVE_OPTIONS,
]
MAX_QUEUED_MESSAGES = 100_000
# Frames stay within the smallest request limit a node accepts (config.MIN_REQUEST_BYTES); a
# larger message, which carries one entry, travels alone and fits the peer's own limit.
MAX_FRAME_BYTES = 1 << 20
SNAPSHOT_CHUNK_BYTES = 1 << 20
SNAPSHOT_PROGRESS_EVERY_S = 5.0
MIB = 1 << 20
SNAPSHOT_TIMEOUT_S = 300.0
BACKOFF_INITIAL_S = 0.05
BACKOFF_MAX_S = 1.0
DIAGNOSIS_TIMEOUT_S = 2.0
RENEW_GRACE_S = 0.2
_UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})


class PeerChannels(Protocol):
    """Where peer channels come from (`NodeSecurity`): plaintext, or TLS with the node's
    current certificates; `generation` moves on each time those change."""

    @property
    def generation(self) -> int: ...

    def peer_channel(self, address: str, options: ChannelOptions) -> grpc.aio.Channel: ...

    async def diagnose_peer(self, address: str, timeout: float) -> str | None:
        """Why a connection to the peer failed at the TLS layer, if it did."""
        ...


@dataclass(frozen=True, slots=True)
class _Link:
    channel: grpc.aio.Channel
    call: grpc.aio.StreamStreamCall
    generation: int  # of the certificates it was opened with


def snapshot_chunks(payload: bytes, group: int, from_node: int, message: Message,
                    chunk_bytes: int) -> Iterator[peer_pb2.SnapshotChunk]:
    """A SNAPSHOT message cut into chunks for `Peer.SendSnapshot`: `payload`, the peer frame of
    this one message, split. The receiver joins the data of all chunks (offsets must be
    contiguous) and decodes it as a peer frame."""
    assert message.snapshot is not None
    meta = message.snapshot.meta
    for offset in range(0, len(payload), chunk_bytes):
        yield peer_pb2.SnapshotChunk(
            group_id=group, from_node=from_node, to_node=message.to, index=meta.index, term=meta.term,
            offset=offset, data=payload[offset : offset + chunk_bytes], last=offset + chunk_bytes >= len(payload),
        )


def logged_progress(chunks: Iterable[peer_pb2.SnapshotChunk], total_bytes: int, what: str,
                    clock: Callable[[], float] = time.monotonic) -> Iterator[peer_pb2.SnapshotChunk]:
    """`chunks` as they are taken, with a log line on the way every SNAPSHOT_PROGRESS_EVERY_S
    (a large snapshot to a slow peer can take minutes: the operator sees it move)."""
    logged_at = clock()
    for chunk in chunks:
        yield chunk
        now = clock()
        if now - logged_at >= SNAPSHOT_PROGRESS_EVERY_S and not chunk.last:
            logged_at = now
            sent = chunk.offset + len(chunk.data)
            log.info("sending %s: %.1f of %.1f MiB (%d%%)", what, sent / MIB, total_bytes / MIB,
                     100 * sent // max(1, total_bytes))


class _PeerSender:
    def __init__(self, peer_id: int, address: str, admission: PeerAdmission, channels: PeerChannels,
                 on_unreachable: Callable[[int], None], metrics: NodeMetrics) -> None:
        self.encoder = Encoder()
        self.peer_id = peer_id
        self.address = address
        self.admission = admission
        self.channels = channels
        self.on_unreachable = on_unreachable
        self.metrics = metrics
        self.queue: list[tuple[int, Message]] = []
        self.wake = asyncio.Event()
        self.connected = False
        self.task: asyncio.Task[None] | None = None
        self._failure = ""  # the last failure to connect logged: a peer that stays away is logged once

    def enqueue(self, items: list[tuple[int, Message]]) -> None:
        """Queue messages for the next frame; dropped while disconnected or when the queue is full."""
        if not self.connected or len(self.queue) >= MAX_QUEUED_MESSAGES:
            return
        self.queue.extend(items)
        self.wake.set()

    async def run(self) -> None:
        backoff = BACKOFF_INITIAL_S
        while True:
            try:
                await self._stream()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # any stream failure: drop, tell Raft, reconnect
                was_connected, self.connected = self.connected, False
                self.queue.clear()
                self.on_unreachable(self.peer_id)
                if was_connected:
                    backoff = BACKOFF_INITIAL_S
                await self._report_failure(e, was_connected)
            finally:
                self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _open(self, generation: int) -> _Link:
        """A stream the peer has admitted, with the certificates of `generation` (the current)."""
        channel = self.channels.peer_channel(self.address, GRPC_OPTIONS)
        try:
            call = peer_pb2_grpc.PeerStub(channel).Stream()
            await call.write(peer_pb2.PeerFrame(hello=self.admission.hello()))
            reply = await call.read()  # the peer's own hello, which says whether it refuses us
            if reply is grpc.aio.EOF or not reply.HasField("hello"):
                raise await _ended(call)
            if not self.admission.check_reply(self.peer_id, reply.hello):
                raise PeerRefusedError(self.peer_id, reply.hello)
        except BaseException:
            await channel.close(grace=None)
            raise
        call.add_done_callback(lambda _: self.wake.set())
        return _Link(channel, call, generation)

    async def _stream(self) -> None:
        """Open a stream and write every queued message to it, until it fails.

        After the node's certificates change, a second stream is opened with the new ones while
        this one carries on; once the peer has admitted it, writing moves over (make before
        break). A follower may have nothing to send to a leader that died (it only answers), so
        the stream's end wakes the loop too: followers learn of the loss at once and elect early.
        """
        link = await self._open(self.channels.generation)
        renewal: asyncio.Task[_Link] | None = None
        renewal_generation = link.generation
        self.connected = True
        self._failure = ""
        connects, sent_bytes = self.metrics.peer_connects, self.metrics.peer_sent_bytes
        connects[self.peer_id] = connects.get(self.peer_id, 0) + 1
        sent_bytes.setdefault(self.peer_id, 0)
        log.info("connected to peer %d at %s", self.peer_id, self.address)
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                if renewal is not None and renewal.done():
                    link = await self._move_over(link, renewal, renewal_generation)
                    renewal = None
                if link.call.done():
                    raise await _ended(link.call)
                items, self.queue = self.queue, []
                for frame in self.encoder.peer_frames(items, MAX_FRAME_BYTES):
                    await link.call.write(peer_pb2.PeerFrame(raft_batch=frame))
                    sent_bytes[self.peer_id] += len(frame)
                if renewal is None and link.generation != self.channels.generation:
                    renewal_generation = self.channels.generation
                    renewal = asyncio.create_task(self._open(renewal_generation), name=f"peer-renewal-{self.peer_id}")
                    renewal.add_done_callback(lambda _: self.wake.set())
        finally:
            if renewal is not None:
                renewal.cancel()
                opened = await asyncio.gather(renewal, return_exceptions=True)
                if isinstance(opened[0], _Link):
                    await opened[0].channel.close(grace=None)
            await link.channel.close(grace=None)

    async def _move_over(self, link: _Link, renewal: asyncio.Task[_Link], generation: int) -> _Link:
        """The stream to write to, now that `renewal` (with the certificates of `generation`)
        has finished: the new one if the peer admitted it, and the old one is closed; else the
        old one, kept until the certificates change again."""
        error = renewal.exception()
        if error is not None:
            log.warning("peer %d at %s refuses this node's new certificates, the connection made with the old "
                        "ones stays in use: %s", self.peer_id, self.address, _short(error))
            return _Link(link.channel, link.call, generation)
        renewed = renewal.result()
        try:
            await link.call.done_writing()
            # What was written reaches the peer first; the wait is bounded well below an
            # election timeout, so the peer never misses a heartbeat's worth of messages.
            await link.channel.close(grace=RENEW_GRACE_S)
        except BaseException:
            await renewed.channel.close(grace=None)
            raise
        log.info("reconnected to peer %d at %s with the new certificates", self.peer_id, self.address)
        return renewed

    async def _report_failure(self, error: Exception, was_connected: bool) -> None:
        reason = _short(error)
        if was_connected:
            log.warning("lost peer %d at %s: %s", self.peer_id, self.address, reason)
            return
        if reason == self._failure:
            return
        self._failure = reason
        status = error.code() if isinstance(error, grpc.aio.AioRpcError | StreamEndedError) else None
        refused = status is not None and status not in _UNREACHABLE
        if status is grpc.StatusCode.UNAVAILABLE:  # gRPC's word for a failed TLS handshake, among others
            diagnosis = await self.channels.diagnose_peer(self.address, DIAGNOSIS_TIMEOUT_S)
            if diagnosis is not None:
                reason, refused = diagnosis, True
        # A peer that is down is routine (it is starting, or restarting); one that refuses is not.
        log.log(logging.WARNING if refused else logging.INFO, "cannot connect to peer %d at %s: %s",
                self.peer_id, self.address, reason)


class PeerTransport:
    """Owns one sender task per peer and the snapshot uploads; `start()`, `send()`, `close()`."""

    def __init__(self, node_id: int, peers: Mapping[int, str], channels: PeerChannels,
                 on_unreachable: Callable[[int], None],
                 on_snapshot_sent: Callable[[int, int, bool], None], metrics: NodeMetrics) -> None:
        self._node_id = node_id
        self._peers = dict(peers)
        self._admission: PeerAdmission | None = None
        self._encoder = Encoder()
        self._channels = channels
        self._on_unreachable = on_unreachable
        self._on_snapshot_sent = on_snapshot_sent
        self._metrics = metrics
        self._senders: dict[int, _PeerSender] = {}
        self._snapshot_tasks: set[asyncio.Task[None]] = set()
        self._stopping: set[asyncio.Task[None]] = set()  # senders of peers that left, ending

    def start(self, admission: PeerAdmission) -> None:
        """Connect to every peer; each stream starts with a handshake judged by `admission`."""
        self._admission = admission
        self.set_peers(self._peers)

    def set_peers(self, peers: Mapping[int, str]) -> None:
        """Follow the membership: connect to each new peer, let go of those that left."""
        assert self._admission is not None, "start() first"
        self._peers = dict(peers)
        for peer_id in sorted(set(self._senders) - set(peers)):
            sender = self._senders.pop(peer_id)
            if sender.task is not None:
                sender.task.cancel()
                self._stopping.add(sender.task)
                sender.task.add_done_callback(self._stopping.discard)
        for peer_id, address in sorted(peers.items()):
            if peer_id != self._node_id and peer_id not in self._senders:
                sender = self._senders[peer_id] = _PeerSender(peer_id, address, self._admission, self._channels,
                                                              self._on_unreachable, self._metrics)
                sender.task = asyncio.create_task(sender.run(), name=f"peer-sender-{peer_id}")

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
        address = self._peers.get(message.to)
        if address is None:  # a member this node does not know yet (or any more)
            self._on_snapshot_sent(group, message.to, False)
            return
        payload = self._encoder.peer_frame([(group, message)])
        what = f"snapshot {meta.index} of group {group} to peer {message.to}"
        chunks = logged_progress(snapshot_chunks(payload, group, self._node_id, message, SNAPSHOT_CHUNK_BYTES),
                                 len(payload), what)
        started = time.monotonic()
        ok = False
        async with self._channels.peer_channel(address, GRPC_OPTIONS) as channel:
            try:
                ack = await peer_pb2_grpc.PeerStub(channel).SendSnapshot(chunks, timeout=SNAPSHOT_TIMEOUT_S)
                ok = ack.ok
                if not ok:
                    log.warning("peer %d refused snapshot %d of group %d: %s", message.to, meta.index, group, ack.error)
            except grpc.aio.AioRpcError as e:
                log.warning("snapshot %d of group %d to peer %d failed: %s", meta.index, group, message.to, _short(e))
        if ok:
            self._metrics.snapshots_sent += 1
        else:
            self._metrics.snapshots_failed += 1
        size = f"{len(payload) / MIB:.1f} MiB" if len(payload) >= MIB else f"{len(payload) / 1024:.1f} KiB"
        log.info("sent %s: %s, %s in %.2f s", what, "ok" if ok else "failed", size, time.monotonic() - started)
        self._on_snapshot_sent(group, message.to, ok)

    def certificates_changed(self) -> None:
        """The node's certificates were reloaded: every stream is renewed with them."""
        for sender in self._senders.values():
            sender.wake.set()

    def connected(self, peer_id: int) -> bool:
        sender = self._senders.get(peer_id)
        return sender is not None and sender.connected

    async def close(self) -> None:
        tasks = [s.task for s in self._senders.values() if s.task is not None]
        tasks += [*self._snapshot_tasks, *self._stopping]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class PeerRefusedError(ConnectionRefusedError):
    """The handshake refused the stream, on this end or the peer's (`PeerAdmission` logs why)."""

    def __init__(self, peer_id: int, reply: peer_pb2.PeerHello) -> None:
        reason = peer_pb2.PeerRefusal.Name(reply.refusal) if reply.refusal else "refused by this node"
        super().__init__(f"peer {peer_id} (node {reply.node_id} of cluster {reply.cluster_id}): {reason}")


class StreamEndedError(ConnectionError):
    """The peer ended the stream, e.g. refusing this node: its status says why."""

    def __init__(self, status: grpc.StatusCode, details: str) -> None:
        super().__init__(f"the peer ended the stream: {status.name}: {details}")
        self.status = status

    def code(self) -> grpc.StatusCode:
        return self.status


async def _ended(call: grpc.aio.StreamStreamCall) -> StreamEndedError:
    return StreamEndedError(await call.code(), await call.details() or "")


def _short(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return str(error) or type(error).__name__
