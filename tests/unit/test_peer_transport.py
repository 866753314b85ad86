"""The peer transport against an in-process Peer service: the hello handshake, and renewing the
stream after a certificate reload (make before break), also when the peer refuses the new one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from kvstore._pb import peer_pb2, peer_pb2_grpc
from kvstore.codec import decode_peer_frame
from kvstore.node.identity import LAYOUT_VERSION, Identity, PeerAdmission
from kvstore.node.metrics import NodeMetrics
from kvstore.node.transport import GRPC_OPTIONS, PeerTransport
from kvstore.raft import Message, MessageType
from kvstore.storage import MemoryEngine

CLUSTER = "0123456789abcdef"


class RecordingPeer(peer_pb2_grpc.PeerServicer):
    """Node 2: admits streams while `admitting` (with TLS: this node's certificate), answers each
    hello with its own, refusing with `refusal`, and records each frame's messages by stream."""

    def __init__(self) -> None:
        self.admitting = True
        self.refusal: peer_pb2.PeerRefusal = peer_pb2.ACCEPTED
        self.streams = 0
        self.received: list[tuple[int, int]] = []  # (stream number, message commit index)

    async def Stream(self, request_iterator: AsyncIterator[peer_pb2.PeerFrame], context: Any) -> None:
        self.streams += 1
        number = self.streams
        if not self.admitting:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not with that certificate")
        async for frame in request_iterator:
            if frame.HasField("hello"):
                await context.write(peer_pb2.PeerFrame(hello=peer_pb2.PeerHello(
                    node_id=2, cluster_id=CLUSTER, incarnation="bbbb", refusal=self.refusal)))
                if self.refusal != peer_pb2.ACCEPTED:
                    return
                continue
            self.received.extend((number, message.commit) for _, message in decode_peer_frame(frame.raft_batch))


class FakeChannels:
    """Plaintext channels; `generation` stands for the node's certificates."""

    def __init__(self) -> None:
        self.generation = 0

    def peer_channel(self, address: str, options: Any) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(address, options=options)

    async def diagnose_peer(self, address: str, timeout: float) -> str | None:
        return None


async def eventually(condition: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(10):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def heartbeat(commit: int) -> tuple[int, Message]:
    return 0, Message(MessageType.HEARTBEAT, 2, 1, 3, commit=commit)


@pytest.fixture
async def peer() -> AsyncIterator[tuple[RecordingPeer, str]]:
    servicer = RecordingPeer()
    server = grpc.aio.server(options=GRPC_OPTIONS)
    peer_pb2_grpc.add_PeerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def admission(fatal: Callable[[str], None] = lambda _: None) -> PeerAdmission:
    """Node 1's, in a cluster of nodes 1 and 2."""
    return PeerAdmission(Identity(CLUSTER, 1, 4, LAYOUT_VERSION, "aaaa"), MemoryEngine(), lambda: (1, 2), fatal)


@pytest.fixture
async def transport(peer: tuple[RecordingPeer, str]) -> AsyncIterator[tuple[PeerTransport, FakeChannels, list[int]]]:
    channels, unreachable = FakeChannels(), list[int]()
    sender = PeerTransport(1, {1: "127.0.0.1:1", 2: peer[1]}, channels, unreachable.append, lambda *_: None,
                           NodeMetrics())
    sender.start(admission())
    try:
        yield sender, channels, unreachable
    finally:
        await sender.close()


async def test_after_a_reload_messages_move_to_a_stream_with_the_new_certificates(
    peer: tuple[RecordingPeer, str], transport: tuple[PeerTransport, FakeChannels, list[int]]
) -> None:
    servicer, (sender, channels, unreachable) = peer[0], transport
    await eventually(lambda: sender.connected(2), "the stream to be admitted")
    sender.send([heartbeat(1)])
    await eventually(lambda: servicer.received == [(1, 1)], "the first message")

    channels.generation = 1
    sender.certificates_changed()
    await eventually(lambda: servicer.streams == 2, "a second stream")
    await asyncio.sleep(0)
    for commit in range(2, 40):
        sender.send([heartbeat(commit)])
        await asyncio.sleep(0.001)

    await eventually(lambda: len(servicer.received) == 39, "every message")
    assert sorted(commit for _, commit in servicer.received) == list(range(1, 40))  # none lost, none twice
    assert servicer.received[-1][0] == 2  # written to the new stream in the end
    assert sender.connected(2) and unreachable == []


async def test_when_the_peer_refuses_the_new_certificates_the_old_stream_stays_in_use(
    peer: tuple[RecordingPeer, str], transport: tuple[PeerTransport, FakeChannels, list[int]],
    caplog: pytest.LogCaptureFixture
) -> None:
    servicer, (sender, channels, unreachable) = peer[0], transport
    await eventually(lambda: sender.connected(2), "the stream to be admitted")
    servicer.admitting = False

    with caplog.at_level(logging.WARNING, logger="kvstore.transport"):
        channels.generation = 1
        sender.certificates_changed()
        await eventually(lambda: any("refuses this node's new certificates" in r.getMessage()
                                     for r in caplog.records), "the refusal")
    sender.send([heartbeat(7)])

    await eventually(lambda: servicer.received == [(1, 7)], "the message, on the first stream")
    assert servicer.streams == 2 and sender.connected(2) and unreachable == []
    assert "PERMISSION_DENIED: not with that certificate" in caplog.records[-1].getMessage()


async def test_a_peer_that_refuses_the_hello_is_not_connected(peer: tuple[RecordingPeer, str]) -> None:
    servicer = peer[0]
    servicer.refusal = peer_pb2.REUSED_NODE_ID
    sender = PeerTransport(1, {1: "127.0.0.1:1", 2: peer[1]}, FakeChannels(), lambda _: None, lambda *_: None,
                           NodeMetrics())
    sender.start(admission())
    try:
        await eventually(lambda: servicer.streams >= 2, "the sender to try again")
        sender.send([heartbeat(1)])
        assert not sender.connected(2)
        servicer.refusal = peer_pb2.ACCEPTED
        await eventually(lambda: sender.connected(2), "the stream to be admitted once the peer accepts")
    finally:
        await sender.close()
