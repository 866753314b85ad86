"""CPU cost of the peer wire codec (`kvstore.codec`'s peer frame) on frames like a loaded node's.

A frame holds `--messages` (group, message) pairs of the four common kinds in turn: APPEND
with one entry of `--size` bytes, APPEND_RESP, HEARTBEAT, HEARTBEAT_RESP. Reports CPU per
message to encode and to decode, best and median of `--repeats` runs.

    python benchmarks/peer_wire.py [--messages 20] [--size 130] [--frames 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from kvstore.bench.report import machine_line
from kvstore.codec import Encoder, decode_peer_frame
from kvstore.raft import Entry, Message, MessageType


def sample_frame(messages: int, size: int) -> list[tuple[int, Message]]:
    data = os.urandom(size)
    kinds = [
        lambda i: Message(MessageType.APPEND, 2, 1, 7, 7, 1000 + i, (Entry(1001 + i, 7, data),), commit=999 + i),
        lambda i: Message(MessageType.APPEND_RESP, 1, 2, 7, index=1000 + i),
        lambda i: Message(MessageType.HEARTBEAT, 2, 1, 7, commit=999 + i, context=55 + i),
        lambda i: Message(MessageType.HEARTBEAT_RESP, 1, 2, 7, context=55 + i),
    ]
    return [(i % 64, kinds[i % len(kinds)](i)) for i in range(messages)]


def _cpu_per_call(fn: object, arg: object, calls: int) -> float:
    clock = time.process_time
    t0 = clock()
    for _ in range(calls):
        fn(arg)  # type: ignore[operator]
    return (clock() - t0) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20, help="messages per frame")
    parser.add_argument("--size", type=int, default=130, help="payload bytes per entry")
    parser.add_argument("--frames", type=int, default=20_000, help="frames per run")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    frame = sample_frame(args.messages, args.size)
    encode = Encoder().peer_frame
    data = encode(frame)
    assert decode_peer_frame(data) == frame, "the codec does not round-trip"
    encode_us = [_cpu_per_call(encode, frame, args.frames) / args.messages * 1e6 for _ in range(args.repeats)]
    decode_us = [_cpu_per_call(decode_peer_frame, data, args.frames) / args.messages * 1e6 for _ in range(args.repeats)]

    print(machine_line())
    print(f"peer wire, frames of {args.messages} messages (APPEND with 1 entry of {args.size} B, APPEND_RESP, "
          f"HEARTBEAT, HEARTBEAT_RESP in turn), {len(data)} B per frame, best of {args.repeats}")
    print(f"encode: {min(encode_us):.3f} us per message (median {statistics.median(encode_us):.3f})")
    print(f"decode: {min(decode_us):.3f} us per message (median {statistics.median(decode_us):.3f})")


if __name__ == "__main__":
    main()
