"""A fake kvstore cluster: N in-process gRPC servers (KV and Cluster services) over one dict.

It is not Raft: every node reads and writes one shared store. What it does model is what a
client has to cope with: each partition has a leader and the other replicas answer NOT_LEADER
with a hint; nodes outside a partition's replica set answer WRONG_NODE; a node can answer
UNAVAILABLE or be stopped; a write's response can be lost after the write was applied, and a
retry with the same (client_id, request_seq) gets the first answer back instead of applying twice.
SESSION and STALE reads are served by any replica; a replica can be made to lag (it has applied
only up to some revision, and refuses reads that need more), and every read records who served it.

    async with FakeCluster(nodes=3, partitions=8) as cluster:
        async with Client(cluster.endpoints) as client: ...
        cluster.move_leader(3, node_id=2)
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass, replace
from types import TracebackType

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.ring import partition_for_key

_FOLLOWER_READS = (pb.SESSION, pb.STALE)


@dataclass(frozen=True, slots=True)
class _Entry:
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


class _SharedState:
    """Everything the fake nodes share: the data, the placement and the test knobs."""

    def __init__(self, node_ids: list[int], partition_count: int, replication_factor: int) -> None:
        self.node_ids = node_ids
        self.partition_count = partition_count
        self.replication_factor = replication_factor
        self.addresses: dict[int, str] = {}
        self.epoch = 1
        self.revision = 0
        self.entries: dict[bytes, _Entry] = {}
        self.fencing_tokens: dict[bytes, int] = {}
        self.replicas = {
            partition: [node_ids[(partition + i) % len(node_ids)] for i in range(replication_factor)]
            for partition in range(partition_count)
        }
        self.leaders = {partition: replicas[0] for partition, replicas in self.replicas.items()}
        self.completed_writes: dict[tuple[str, int], pb.ResponseOp | pb.TxnResponse] = {}
        self.unavailable_nodes: set[int] = set()
        self.unavailable_partitions: set[int] = set()
        self.leader_hints_hidden = False
        self.responses_to_drop = 0
        self.scan_page_size = 0
        self.map_delay_s = 0.0
        self.rpc_counts: Counter[str] = Counter()
        self.writes_applied: Counter[bytes] = Counter()
        self.applied_by: dict[int, int] = {}  # node -> the revision a lagging node has applied
        self.reads: list[tuple[int, int, int]] = []  # (node, consistency, min_revision) per read served
        self.write_headers: list[pb.RequestHeader] = []


class _Node:
    """One fake node's answers; `node_id` decides what it leads and hosts."""

    def __init__(self, node_id: int, state: _SharedState) -> None:
        self.node_id = node_id
        self.state = state

    # ---- routing checks, as a real node would make them -------------------------------------

    def refusal(self, partition: int, consistency: int = pb.LINEARIZABLE) -> pb.Error | None:
        state = self.state
        if self.node_id in state.unavailable_nodes:
            return pb.Error(code=pb.UNAVAILABLE, message=f"node {self.node_id} cannot reach a quorum")
        if partition in state.unavailable_partitions:
            return pb.Error(code=pb.UNAVAILABLE, message=f"partition {partition} has no quorum")
        if self.node_id not in state.replicas[partition]:
            return pb.Error(
                code=pb.WRONG_NODE,
                message=f"node {self.node_id} does not host partition {partition}",
                epoch=state.epoch,
            )
        leader = state.leaders[partition]
        if leader != self.node_id and consistency not in _FOLLOWER_READS:
            if state.leader_hints_hidden:
                return pb.Error(code=pb.NOT_LEADER, message="leader unknown", epoch=state.epoch)
            return pb.Error(
                code=pb.NOT_LEADER,
                message=f"node {self.node_id} does not lead partition {partition}",
                leader_hint=leader,
                leader_address=state.addresses[leader],
                epoch=state.epoch,
            )
        return None

    def header(self, partition: int, consistency: pb.ReadConsistency = pb.LINEARIZABLE) -> pb.ResponseHeader:
        return pb.ResponseHeader(
            partition=partition,
            revision=self.state.revision,
            served=consistency,
            node_id=self.node_id,
            epoch=self.state.epoch,
        )

    def partition_of(self, key: bytes) -> int:
        return partition_for_key(key, self.state.partition_count)

    def kv(self, key: bytes) -> pb.KeyValue | None:
        entry = self.state.entries.get(key)
        return None if entry is None else self.kv_of(key, entry)

    @staticmethod
    def kv_of(key: bytes, entry: _Entry) -> pb.KeyValue:
        return pb.KeyValue(
            key=key,
            value=entry.value,
            create_revision=entry.create_revision,
            mod_revision=entry.mod_revision,
            version=entry.version,
            lease=entry.lease,
        )

    # ---- key operations ---------------------------------------------------------------------

    def get(self, request: pb.GetRequest) -> pb.GetResponse:
        partition = self.partition_of(request.key)
        refusal = self.refusal(partition, request.consistency) or self.lagging(request.min_revision)
        if refusal is not None:
            return pb.GetResponse(error=refusal)
        self.state.reads.append((self.node_id, request.consistency, request.min_revision))
        kv = self.kv(request.key)
        header = self.header(partition, request.consistency)
        header.revision = self.state.applied_by.get(self.node_id, header.revision)
        return pb.GetResponse(header=header, found=kv is not None, kv=kv)

    def lagging(self, min_revision: int) -> pb.Error | None:
        applied = self.state.applied_by.get(self.node_id)
        if applied is None or applied >= min_revision:
            return None
        return pb.Error(code=pb.UNAVAILABLE, message=f"node {self.node_id} has applied up to revision {applied}")

    def put(self, request: pb.PutRequest, partition: int) -> pb.PutResponse:
        state = self.state
        if request.fencing_token:
            accepted = state.fencing_tokens.get(request.key, 0)
            if request.fencing_token < accepted:
                return pb.PutResponse(
                    header=self.header(partition),
                    error=pb.Error(
                        code=pb.STALE_FENCING_TOKEN,
                        message=f"fencing token {request.fencing_token} is older than {accepted}",
                    ),
                )
            state.fencing_tokens[request.key] = request.fencing_token
        previous = self.kv(request.key)
        state.revision += 1
        old = state.entries.get(request.key)
        state.entries[request.key] = (
            _Entry(request.value, state.revision, state.revision, 1, request.lease)
            if old is None
            else replace(
                old,
                value=request.value,
                mod_revision=state.revision,
                version=old.version + 1,
                lease=request.lease,
            )
        )
        state.writes_applied[request.key] += 1
        return pb.PutResponse(
            header=self.header(partition),
            had_prev=request.prev_kv and previous is not None,
            prev_kv=previous if request.prev_kv else None,
        )

    def delete(self, request: pb.DeleteRequest, partition: int) -> pb.DeleteResponse:
        state = self.state
        previous = self.kv(request.key)
        if previous is None:
            return pb.DeleteResponse(header=self.header(partition), deleted=False)
        state.revision += 1
        del state.entries[request.key]
        state.writes_applied[request.key] += 1
        return pb.DeleteResponse(
            header=self.header(partition), deleted=True, prev_kv=previous if request.prev_kv else None
        )

    def write(self, request: pb.RequestOp) -> pb.ResponseOp:
        """A put or delete, applied once per (client_id, request_seq)."""
        inner = request.put if request.HasField("put") else request.delete
        partition = self.partition_of(inner.key)
        refusal = self.refusal(partition)
        if refusal is not None:
            return (
                pb.ResponseOp(put=pb.PutResponse(error=refusal))
                if request.HasField("put")
                else (pb.ResponseOp(delete=pb.DeleteResponse(error=refusal)))
            )
        self.state.write_headers.append(inner.header)
        request_id = (inner.header.client_id, inner.header.request_seq)
        done = self.state.completed_writes.get(request_id)
        if request_id[1] and isinstance(done, pb.ResponseOp):
            return done
        if request.HasField("put"):
            response = pb.ResponseOp(put=self.put(request.put, partition))
        else:
            response = pb.ResponseOp(delete=self.delete(request.delete, partition))
        if request_id[1]:
            self.state.completed_writes[request_id] = response
        return response

    def run_op(self, request: pb.RequestOp) -> pb.ResponseOp:
        if request.HasField("get"):
            return pb.ResponseOp(get=self.get(request.get))
        if request.HasField("txn"):
            return pb.ResponseOp(txn=self.txn(request.txn))
        return self.write(request)

    def scan(self, request: pb.ScanRequest) -> pb.ScanResponse:
        state = self.state
        refusal = self.refusal(request.partition, request.consistency)
        if refusal is not None:
            return pb.ScanResponse(error=refusal)
        keys = sorted(
            key
            for key in state.entries
            if self.partition_of(key) == request.partition
            and key.startswith(request.prefix)
            and key >= request.start
            and (not request.end or key < request.end)
        )
        page = min(filter(None, (request.limit, state.scan_page_size)), default=len(keys))
        kvs = [self.kv_of(key, state.entries[key]) for key in keys[:page]]
        if request.keys_only:
            for kv in kvs:
                kv.value = b""
        return pb.ScanResponse(
            header=self.header(request.partition, request.consistency), kvs=kvs, more=len(keys) > page
        )

    def compare_holds(self, compare: pb.Compare) -> bool:
        entry = self.state.entries.get(compare.key)
        if compare.target == pb.Compare.VALUE:
            if entry is None:
                return False
            actual: bytes | int = entry.value
            expected: bytes | int = compare.value
        else:
            actual = 0
            if entry is not None:
                actual = {
                    pb.Compare.VERSION: entry.version,
                    pb.Compare.MOD_REVISION: entry.mod_revision,
                    pb.Compare.CREATE_REVISION: entry.create_revision,
                }[compare.target]
            expected = compare.number
        return {
            pb.Compare.EQUAL: actual == expected,
            pb.Compare.NOT_EQUAL: actual != expected,
            pb.Compare.GREATER: actual > expected,  # type: ignore[operator]
            pb.Compare.LESS: actual < expected,  # type: ignore[operator]
        }[compare.result]

    def txn(self, request: pb.TxnRequest) -> pb.TxnResponse:
        keys = [compare.key for compare in request.compare] + [
            getattr(op, op.WhichOneof("op")).key for op in (*request.success, *request.failure)
        ]
        partitions = {self.partition_of(key) for key in keys}
        if len(partitions) != 1:
            return pb.TxnResponse(error=pb.Error(code=pb.CROSS_PARTITION, message="keys span partitions"))
        partition = partitions.pop()
        refusal = self.refusal(partition)
        if refusal is not None:
            return pb.TxnResponse(error=refusal)
        self.state.write_headers.append(request.header)
        request_id = (request.header.client_id, request.header.request_seq)
        done = self.state.completed_writes.get(request_id)
        if request_id[1] and isinstance(done, pb.TxnResponse):
            return done
        succeeded = all(self.compare_holds(compare) for compare in request.compare)
        responses = []
        for op in request.success if succeeded else request.failure:
            if op.HasField("get"):
                responses.append(pb.ResponseOp(get=self.get(op.get)))
            elif op.HasField("put"):
                responses.append(pb.ResponseOp(put=self.put(op.put, partition)))
            else:
                responses.append(pb.ResponseOp(delete=self.delete(op.delete, partition)))
        # As a real node's, the operations' answers carry no header: the transaction's applies.
        for result in responses:
            getattr(result, result.WhichOneof("op")).ClearField("header")
        response = pb.TxnResponse(header=self.header(partition), succeeded=succeeded, responses=responses)
        if request_id[1]:
            self.state.completed_writes[request_id] = response
        return response

    # ---- cluster information ----------------------------------------------------------------

    def partition_infos(self, only_hosted: bool) -> list[pb.PartitionInfo]:
        state = self.state
        return [
            pb.PartitionInfo(id=partition, replicas=replicas, leader=state.leaders[partition], term=1)
            for partition, replicas in state.replicas.items()
            if not only_hosted or self.node_id in replicas
        ]

    def members(self) -> list[pb.Member]:
        return [
            pb.Member(id=node_id, name=f"node-{node_id}", address=address)
            for node_id, address in self.state.addresses.items()
        ]


class _KVServicer(pb_grpc.KVServicer):
    def __init__(self, node: _Node) -> None:
        self._node = node

    async def _maybe_drop(self, context: grpc.aio.ServicerContext, wrote: bool) -> None:
        """Lose the answer to a write that was applied, as a connection reset would."""
        state = self._node.state
        if wrote and state.responses_to_drop > 0:
            state.responses_to_drop -= 1
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "connection reset (response dropped by the fake)"
            )

    def _count(self, method: str) -> None:
        self._node.state.rpc_counts[method] += 1

    async def Get(self, request: pb.GetRequest, context: grpc.aio.ServicerContext) -> pb.GetResponse:
        self._count("Get")
        return self._node.get(request)

    async def Put(self, request: pb.PutRequest, context: grpc.aio.ServicerContext) -> pb.PutResponse:
        self._count("Put")
        response = self._node.write(pb.RequestOp(put=request)).put
        await self._maybe_drop(context, response.error.code == pb.OK)
        return response

    async def Delete(self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext) -> pb.DeleteResponse:
        self._count("Delete")
        response = self._node.write(pb.RequestOp(delete=request)).delete
        await self._maybe_drop(context, response.error.code == pb.OK)
        return response

    async def Scan(self, request: pb.ScanRequest, context: grpc.aio.ServicerContext) -> pb.ScanResponse:
        self._count("Scan")
        return self._node.scan(request)

    async def Txn(self, request: pb.TxnRequest, context: grpc.aio.ServicerContext) -> pb.TxnResponse:
        self._count("Txn")
        response = self._node.txn(request)
        await self._maybe_drop(context, response.error.code == pb.OK)
        return response

    async def Batch(self, request: pb.BatchRequest, context: grpc.aio.ServicerContext) -> pb.BatchResponse:
        self._count("Batch")
        self._node.state.rpc_counts["batched ops"] += len(request.ops)
        results = [self._node.run_op(op) for op in request.ops]
        wrote = any(
            not op.HasField("get") and getattr(result, result.WhichOneof("op")).error.code == pb.OK
            for op, result in zip(request.ops, results, strict=True)
        )
        await self._maybe_drop(context, wrote)
        return pb.BatchResponse(results=results)


class _ClusterServicer(pb_grpc.ClusterServicer):
    def __init__(self, node: _Node) -> None:
        self._node = node

    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusResponse:
        node, state = self._node, self._node.state
        hosted = node.partition_infos(only_hosted=True)
        return pb.StatusResponse(
            node_id=node.node_id,
            address=state.addresses[node.node_id],
            version="fake",
            epoch=state.epoch,
            partitions_hosted=len(hosted),
            partitions_led=sum(info.leader == node.node_id for info in hosted),
            partitions=hosted,
            db_size_bytes=sum(len(key) + len(entry.value) for key, entry in state.entries.items()),
        )

    async def Members(
        self, request: pb.MembersRequest, context: grpc.aio.ServicerContext
    ) -> pb.MembersResponse:
        return pb.MembersResponse(epoch=self._node.state.epoch, members=self._node.members())

    async def Partitions(
        self, request: pb.PartitionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.PartitionsResponse:
        state = self._node.state
        state.rpc_counts["Partitions"] += 1
        await asyncio.sleep(state.map_delay_s)
        return pb.PartitionsResponse(
            epoch=state.epoch,
            partition_count=state.partition_count,
            replication_factor=state.replication_factor,
            partitions=self._node.partition_infos(only_hosted=False),
            members=self._node.members(),
        )


class FakeCluster:
    """`nodes` fake nodes with ids 1..nodes on 127.0.0.1 ephemeral ports. `start()`, then `close()`."""

    def __init__(self, nodes: int = 3, partitions: int = 8, replication_factor: int = 3) -> None:
        self._state = _SharedState(list(range(1, nodes + 1)), partitions, min(replication_factor, nodes))
        self._servers: dict[int, grpc.aio.Server] = {}

    async def start(self) -> None:
        for node_id in self._state.node_ids:
            server = grpc.aio.server()
            node = _Node(node_id, self._state)
            pb_grpc.add_KVServicer_to_server(_KVServicer(node), server)
            pb_grpc.add_ClusterServicer_to_server(_ClusterServicer(node), server)
            port = server.add_insecure_port("127.0.0.1:0")
            self._state.addresses[node_id] = f"127.0.0.1:{port}"
            await server.start()
            self._servers[node_id] = server

    async def close(self) -> None:
        servers, self._servers = self._servers, {}
        for server in servers.values():
            await server.stop(grace=None)

    async def __aenter__(self) -> FakeCluster:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ---- what tests read --------------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        return list(self._state.addresses.values())

    def address_of(self, node_id: int) -> str:
        return self._state.addresses[node_id]

    @property
    def partition_count(self) -> int:
        return self._state.partition_count

    def leader_of(self, partition: int) -> int:
        return self._state.leaders[partition]

    def replicas_of(self, partition: int) -> list[int]:
        return list(self._state.replicas[partition])

    def rpc_count(self, method: str) -> int:
        """How many `method` RPCs all nodes received ("batched ops" counts ops inside Batch RPCs)."""
        return self._state.rpc_counts[method]

    def times_written(self, key: bytes) -> int:
        """How many times a put or delete of `key` was applied (a deduplicated retry is not counted)."""
        return self._state.writes_applied[key]

    def write_seqs(self) -> list[tuple[int, int]]:
        """(request_seq, lowest_pending_seq) of every write a leader was asked to apply, in order."""
        return [(header.request_seq, header.lowest_pending_seq) for header in self._state.write_headers]

    def value_of(self, key: bytes) -> bytes | None:
        entry = self._state.entries.get(key)
        return None if entry is None else entry.value

    def partition_of(self, key: bytes) -> int:
        return partition_for_key(key, self._state.partition_count)

    def key_in_partition(self, partition: int, stem: str) -> bytes:
        """The first key ``{stem}-N`` that lives in `partition`."""
        for counter in itertools.count():
            key = f"{stem}-{counter}".encode()
            if self.partition_of(key) == partition:
                return key
        raise AssertionError("unreachable")

    # ---- knobs ------------------------------------------------------------------------------

    def move_leader(self, partition: int, node_id: int) -> None:
        """Make `node_id` (a replica) the partition's leader; the others start pointing at it."""
        if node_id not in self._state.replicas[partition]:
            raise ValueError(f"node {node_id} is not a replica of partition {partition}")
        self._state.leaders[partition] = node_id

    def move_partition(self, partition: int, replicas: list[int]) -> None:
        """Give the partition a new replica set (first one leads) at a new epoch; old hosts answer WRONG_NODE."""
        self._state.replicas[partition] = list(replicas)
        self._state.leaders[partition] = replicas[0]
        self._state.epoch += 1

    def lag(self, node_id: int, applied: int | None) -> None:
        """The node has applied only up to revision `applied` (None: it is caught up): reads
        report that revision, and it refuses those that need a later one."""
        if applied is None:
            self._state.applied_by.pop(node_id, None)
        else:
            self._state.applied_by[node_id] = applied

    def reads_served(self) -> list[tuple[int, int, int]]:
        """(node, consistency, min_revision) of every get served, in order."""
        return list(self._state.reads)

    def hide_leader_hints(self, hidden: bool = True) -> None:
        """Followers answer NOT_LEADER without saying who leads (as during an election)."""
        self._state.leader_hints_hidden = hidden

    def make_unavailable(self, node_id: int, unavailable: bool = True) -> None:
        """The node answers every key request with UNAVAILABLE (it is up but cannot serve)."""
        if unavailable:
            self._state.unavailable_nodes.add(node_id)
        else:
            self._state.unavailable_nodes.discard(node_id)

    def make_partition_unavailable(self, partition: int, unavailable: bool = True) -> None:
        """Every replica answers the partition's requests with UNAVAILABLE (it lost its quorum)."""
        if unavailable:
            self._state.unavailable_partitions.add(partition)
        else:
            self._state.unavailable_partitions.discard(partition)

    def drop_write_responses(self, count: int = 1) -> None:
        """The next `count` RPCs that apply a write lose their response (after applying it)."""
        self._state.responses_to_drop = count

    def limit_scan_pages(self, page_size: int) -> None:
        """Scans return at most `page_size` keys per RPC, with `more` set, as a real node may."""
        self._state.scan_page_size = page_size

    def delay_map_answers(self, seconds: float) -> None:
        """Every node takes `seconds` to answer a request for the cluster map (a slow network)."""
        self._state.map_delay_s = seconds

    async def stop_node(self, node_id: int) -> None:
        """Stop the node's server: its port refuses connections from now on."""
        await self._servers.pop(node_id).stop(grace=None)
