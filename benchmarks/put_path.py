"""CPU of the whole put path in one process: servicer -> propose -> Ready -> persist -> send ->
apply -> answer, on the three real `Node`s of a 3-node cluster, without the network.

Each node is opened over its own engine (LevelDB in a temp dir, or `--engine memory`) and
driven by `Node.cycle`, in turn, by this script instead of its Ready-loop task and ticker. The
peer transport is an in-process loopback that encodes each cycle's messages into peer frames
and decodes them at the receiver, as the real transport and `PeerService.Stream` do (the wire
codec counts; gRPC's streams do not: `benchmarks/peer_stream.py` measures those). Clients are
`BatchRequest`s built beforehand: each round, each of `--clients` clients sends one batch of
`--batch` puts (100-byte values, fresh keys) to each node, for the partitions that node
leads; the node parses it, `KVService.Batch` serves it, and the answer is serialized, as the
gRPC server would. Partition p is led by node p % 3 + 1 (placed by a TIMEOUT_NOW handover at
the start); nothing ticks afterwards, so there are no heartbeats and no elections.

    .venv/bin/python benchmarks/put_path.py [--rounds 100] [--partitions 64] [--engine leveldb|memory]

prints the process's CPU time per put (all threads). For instruction counts, repeatable however
loaded the machine is:

    .venv/bin/python benchmarks/put_path.py --instructions [--rounds 40] [--partitions 64]

runs the script twice under `valgrind --tool=callgrind` (`--rounds` rounds, then 1; both build
the same requests and elect the same leaders) and prints the difference divided by the puts
of the extra rounds: instructions per put for the three nodes together, and their split by
shared object (the interpreter, kvstore's compiled modules, protobuf, msgpack, LevelDB, libc).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from kvstore._pb import kvstore_pb2 as pb
from kvstore.bench.report import machine_line
from kvstore.codec import Encoder, decode_peer_frame
from kvstore.node.config import NodeConfig
from kvstore.node.identity import PeerAdmission
from kvstore.node.replica import BOOTSTRAP_INDEX
from kvstore.node.server import Node
from kvstore.node.transport import MAX_FRAME_BYTES, PeerTransport
from kvstore.raft import Message, MessageType, Role
from kvstore.rpc.kv import KVService
from kvstore.storage import LevelDBEngine, MemoryEngine

NODES = (1, 2, 3)
VALUE = bytes(range(100))
MAX_PASSES_PER_ROUND = 1000
# A round is done when every node has cycled enough, however long that takes on the clock:
# under callgrind, on a loaded machine, a round of 64 partitions can take many seconds.
TIMEOUT_MS = 600_000


class LoopbackTransport(PeerTransport):
    """Delivers a node's messages to the other nodes of this process as decoded peer frames."""

    def __init__(self, node: Node, nodes: dict[int, Node]) -> None:
        super().__init__(node.node_id, {}, node.security, lambda _: None, lambda *_: None, node.metrics)
        self._nodes = nodes
        self._frames = Encoder()

    def start(self, admission: PeerAdmission) -> None:
        pass

    def send(self, items: Iterable[tuple[int, Message]]) -> None:
        by_peer: dict[int, list[tuple[int, Message]]] = collections.defaultdict(list)
        for group, message in items:
            by_peer[message.to].append((group, message))
        for peer_id, peer_items in by_peer.items():
            for frame in self._frames.peer_frames(peer_items, MAX_FRAME_BYTES):
                self._nodes[peer_id].deliver(decode_peer_frame(frame))

    def connected(self, peer_id: int) -> bool:
        return True

    async def close(self) -> None:
        pass


def leader_of(partition: int) -> int:
    return NODES[partition % len(NODES)]


async def open_nodes(directory: Path, partitions: int, engine: str) -> dict[int, Node]:
    peers = {node_id: f"127.0.0.1:{node_id}" for node_id in NODES}  # never listened on
    nodes: dict[int, Node] = {}
    for node_id in NODES:
        config = NodeConfig(node_id, peers[node_id], directory / str(node_id), peers, partitions=partitions)
        node = Node(config)
        node.engine = opened = MemoryEngine() if engine == "memory" else LevelDBEngine(str(config.data_dir / "db"))
        # What `Node.start` does before it listens: the identity, the meta group, the partitions.
        await node._open_groups(opened)
        node.transport = LoopbackTransport(node, nodes)
        nodes[node_id] = node
    return nodes


async def settle(nodes: dict[int, Node], done: Callable[[], bool]) -> None:
    """Cycle every node in turn until `done()`."""
    for _ in range(MAX_PASSES_PER_ROUND):
        await asyncio.sleep(0)  # let the servicers' tasks run up to their wait
        for node in nodes.values():
            await node.cycle()
        if done():
            return
    raise RuntimeError(f"the cluster did not settle within {MAX_PASSES_PER_ROUND} passes")


async def elect(nodes: dict[int, Node], partitions: int) -> None:
    """Partition p's leader becomes node p % 3 + 1, in term 2, as if handed over to it."""
    for partition in range(partitions):
        leader = leader_of(partition)
        handing_over = next(node_id for node_id in NODES if node_id != leader)
        nodes[leader].deliver([(partition, Message(MessageType.TIMEOUT_NOW, leader, handing_over, 1))])

    def placed() -> bool:
        # Every replica knows its leader, and each leader applied its term's first entry.
        return all(
            replica.leader == leader_of(partition)
            and (replica.raw.role is not Role.LEADER or replica.sm.applied_index > BOOTSTRAP_INDEX)
            for node in nodes.values()
            for partition, replica in node.replicas.items()
        )

    await settle(nodes, placed)


def build_rounds(nodes: dict[int, Node], rounds: int, clients: int, batch: int) -> list[list[tuple[int, bytes]]]:
    """Each round's serialized `BatchRequest`s, with the node each goes to."""
    cluster_state = nodes[NODES[0]].cluster_state
    seqs = [0] * clients
    keys = iter(range(1 << 62))
    built = []
    for _ in range(rounds):
        requests = []
        for client in range(clients):
            lowest_pending = seqs[client] + 1
            for node_id in NODES:
                request = pb.BatchRequest()
                while len(request.ops) < batch:
                    key = f"key/{next(keys):012d}".encode()
                    if leader_of(cluster_state.partition_for_key(key)) != node_id:
                        continue
                    seqs[client] += 1
                    header = pb.RequestHeader(client_id=f"client-{client}", request_seq=seqs[client], epoch=1,
                                              timeout_ms=TIMEOUT_MS, lowest_pending_seq=lowest_pending)
                    request.ops.add(put=pb.PutRequest(header=header, key=key, value=VALUE))
                requests.append((node_id, request.SerializeToString()))
        built.append(requests)
    return built


def all_done(tasks: list[asyncio.Task[bytes]]) -> bool:
    return all(task.done() for task in tasks)


async def serve(service: KVService, raw: bytes) -> bytes:
    """What the gRPC server does with one call: parse, serve, serialize."""
    response = await service.Batch(pb.BatchRequest.FromString(raw), None)
    for result in response.results:
        if result.put.error.code:
            raise RuntimeError(f"a put failed: {result.put.error.message}")
    return response.SerializeToString()


async def run(args: argparse.Namespace) -> tuple[int, float]:
    """(puts served in the measured rounds, CPU seconds they took)."""
    with tempfile.TemporaryDirectory(prefix="put-path-") as tmp:
        nodes = await open_nodes(Path(tmp), args.partitions, args.engine)
        services = {node_id: KVService(node) for node_id, node in nodes.items()}
        built = build_rounds(nodes, args.warmup + args.build, args.clients, args.batch)
        await elect(nodes, args.partitions)
        puts = 0
        started = 0.0
        for number, requests in enumerate(built[: args.warmup + args.rounds]):
            if number == args.warmup:
                started = time.process_time()
            tasks = [asyncio.create_task(serve(services[node_id], raw)) for node_id, raw in requests]
            await settle(nodes, functools.partial(all_done, tasks))
            for task in tasks:
                task.result()
            if number >= args.warmup:
                puts += len(requests) * args.batch
        cpu = time.process_time() - started
        for node in nodes.values():
            node.close()
            await node.wait_closed()
    return puts, cpu


def callgrind(args: argparse.Namespace, rounds: int, out: Path) -> dict[str, int]:
    """Instructions of one run of this script under callgrind, by shared object."""
    command = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
        sys.executable, __file__, "--rounds", str(rounds), "--build", str(args.rounds), "--warmup", str(args.warmup),
        "--partitions", str(args.partitions), "--clients", str(args.clients), "--batch", str(args.batch),
        "--engine", args.engine,
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    annotated = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=100", str(out)],
        check=True, capture_output=True, text=True,
    ).stdout
    by_object: collections.Counter[str] = collections.Counter()
    for line in annotated.splitlines():
        match = re.match(r"\s*([\d,]+) \([^)]*\)\s+\S.* \[(.+)\]$", line)
        if match:
            by_object[_library(match.group(2))] += int(match.group(1).replace(",", ""))
    return dict(by_object)


def _library(path: str) -> str:
    name = os.path.basename(path)
    for prefix, label in (
        ("kvstore_compiled", "kvstore compiled"), ("libpython", "Python"), ("python3", "Python"),
        ("_message", "protobuf"), ("_cmsgpack", "msgpack"), ("_unpacker", "msgpack"), ("_packer", "msgpack"),
        ("libleveldb", "LevelDB"), ("plyvel", "plyvel"), ("libc.", "libc"), ("ld-linux", "libc"),
        ("libstdc++", "libstdc++"), ("vgpreload", "valgrind malloc"), ("cygrpc", "gRPC"),
    ):  # fmt: skip
        if name.startswith(prefix):
            return label
    return "other" if not name.endswith(".so") else name.split(".")[0]


def instructions(args: argparse.Namespace) -> None:
    puts_per_round = args.clients * len(NODES) * args.batch
    with tempfile.TemporaryDirectory(prefix="put-path-cg-") as tmp:
        full = callgrind(args, args.rounds, Path(tmp, "full.out"))
        base = callgrind(args, 1, Path(tmp, "base.out"))
    puts = (args.rounds - 1) * puts_per_round
    per_put = {name: (full.get(name, 0) - base.get(name, 0)) / puts for name in full.keys() | base.keys()}
    total = sum(per_put.values())
    print(f"instructions per put (3 nodes together, {puts:,} puts between the two runs): {total:,.0f}")
    for name, figure in sorted(per_put.items(), key=lambda item: -item[1]):
        if abs(figure) >= total / 200:
            print(f"  {name:<20} {figure:>10,.0f}  {figure / total:6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=100, help="measured rounds")
    parser.add_argument("--warmup", type=int, default=5, help="rounds before the measured ones")
    parser.add_argument("--build", type=int, default=0, help="rounds of requests to build (default: --rounds)")
    parser.add_argument("--partitions", type=int, default=64)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="puts per batch (each client, each node, each round)")
    parser.add_argument("--engine", choices=("leveldb", "memory"), default="leveldb")
    parser.add_argument("--instructions", action="store_true", help="count instructions under callgrind")
    args = parser.parse_args()
    args.build = max(args.build, args.rounds)
    logging.basicConfig(level=logging.WARNING)
    if args.instructions:
        print(machine_line())
        instructions(args)
        return
    puts, cpu = asyncio.run(run(args))
    print(machine_line())
    print(f"{args.partitions} partitions, {args.engine}, {args.clients} clients x {len(NODES)} nodes x "
          f"{args.batch} puts per round, {args.rounds} rounds")
    print(f"CPU per put (3 nodes together): {cpu / puts * 1e6:.1f} us")


if __name__ == "__main__":
    main()
