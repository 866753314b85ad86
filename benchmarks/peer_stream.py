"""CPU cost of carrying one peer frame: the node's gRPC stream against a plain asyncio TCP stream.

Both ends run in this process on one event loop (uvloop, as the node does). A sender writes
`--frames` frames of `--size` bytes, one every `--gap-ms`, as a node's peer sender does under
load (frames are spread out, not back to back); the receiver reads them. Reported: process CPU
(all threads, so gRPC's own threads count) per frame, sender and receiver together, after
subtracting what the same loop costs with the sleeps alone. The plain stream is length-prefixed
frames over `asyncio.open_connection`, the least a hand-written transport would do.

It informs one design question, whether the peer transport should leave gRPC; it measures no
kvstore code but the node's gRPC options and generated Peer service.

    python benchmarks/peer_stream.py [--frames 3000] [--size 2000] [--gap-ms 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import uvloop

from kvstore._pb import peer_pb2, peer_pb2_grpc
from kvstore.bench.report import machine_line
from kvstore.node.transport import GRPC_OPTIONS

FRAME_HEADER_BYTES = 4


class _CountingPeer(peer_pb2_grpc.PeerServicer):
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = 0
        self.all_received = asyncio.Event()

    async def Stream(self, request_iterator: AsyncIterator[peer_pb2.PeerFrame], context: Any) -> None:
        async for _ in request_iterator:
            self.received += 1
            if self.received == self.expected:
                self.all_received.set()


async def _sleeps_only(frames: int, gap_s: float) -> float:
    started = time.process_time()
    for _ in range(frames):
        await asyncio.sleep(gap_s)
    return time.process_time() - started


async def _grpc_stream(frames: int, payload: bytes, gap_s: float) -> float:
    peer = _CountingPeer(frames + 1)
    server = grpc.aio.server(options=GRPC_OPTIONS)
    peer_pb2_grpc.add_PeerServicer_to_server(peer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=GRPC_OPTIONS)
    try:
        call = peer_pb2_grpc.PeerStub(channel).Stream()
        await call.write(peer_pb2.PeerFrame(raft_batch=payload))  # connection set up, not measured
        while peer.received < 1:
            await asyncio.sleep(0.001)
        started = time.process_time()
        for _ in range(frames):
            await call.write(peer_pb2.PeerFrame(raft_batch=payload))
            await asyncio.sleep(gap_s)
        await peer.all_received.wait()
        used = time.process_time() - started
        await call.done_writing()
        await call.code()  # the server's end has finished: stopping it then cancels nothing
        return used
    finally:
        await channel.close()
        await server.stop(None)


async def _tcp_stream(frames: int, payload: bytes, gap_s: float) -> float:
    received = 0
    all_received = asyncio.Event()

    async def receive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        try:
            while True:
                header = await reader.readexactly(FRAME_HEADER_BYTES)
                await reader.readexactly(int.from_bytes(header, "big"))
                received += 1
                if received == frames:
                    all_received.set()
        except asyncio.IncompleteReadError:
            pass  # the sender closed the connection
        finally:
            writer.close()

    server = await asyncio.start_server(receive, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        frame = len(payload).to_bytes(FRAME_HEADER_BYTES, "big") + payload
        started = time.process_time()
        for _ in range(frames):
            writer.write(frame)
            await writer.drain()
            await asyncio.sleep(gap_s)
        await all_received.wait()
        return time.process_time() - started
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


async def _measure(args: argparse.Namespace) -> dict[str, list[float]]:
    payload = os.urandom(args.size)
    gap_s = args.gap_ms / 1000
    cases: dict[str, Callable[[], Awaitable[float]]] = {
        "sleeps alone": lambda: _sleeps_only(args.frames, gap_s),
        "gRPC stream": lambda: _grpc_stream(args.frames, payload, gap_s),
        "TCP stream": lambda: _tcp_stream(args.frames, payload, gap_s),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, case in cases.items():
            results[name].append(await case() / args.frames * 1e6)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=3000, help="frames per run")
    parser.add_argument("--size", type=int, default=2000, help="bytes per frame (a loaded node's are ~1-3 kB)")
    parser.add_argument("--gap-ms", type=float, default=1.0, help="pause between frames")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = uvloop.run(_measure(args))

    print(f"{machine_line()}; load average {os.getloadavg()[0]:.2f}")
    print(f"{args.frames} frames of {args.size} B, one every {args.gap_ms:g} ms, sender and receiver in one "
          f"process; CPU per frame, best of {args.repeats}")
    baseline = min(results["sleeps alone"])
    print(f"  sleeps alone: {baseline:6.1f} us per frame (subtracted below)")
    for name in ("gRPC stream", "TCP stream"):
        best, median = min(results[name]), statistics.median(results[name])
        print(f"  {name}:  {best - baseline:6.1f} us per frame sent and received (median {median - baseline:.1f})")


if __name__ == "__main__":
    main()
