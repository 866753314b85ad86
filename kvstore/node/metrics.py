"""Prometheus metrics of one node, at almost no cost on the hot path.

Two kinds of figures:

* **Events** (requests, proposals, applies, fsyncs, Ready cycles, peer bytes, leader changes,
  snapshots) are counted by the code where they happen, in `NodeMetrics`: plain integer
  attributes and fixed-bucket `Histogram`s. An event costs an integer add or a bisect and two
  adds, with no lock: only the event loop's thread updates them (a duration measured on the
  disk thread is returned to the loop, which records it).
* **State** (each partition's term, leader, commit and applied index, the LevelDB size, which
  peers are connected) is read when Prometheus scrapes, through the narrow `NodeReadings`
  protocol, so keeping it costs nothing between scrapes.

`NodeCollector` turns both into metric families at scrape time; `metrics_registry` puts it in a
registry of its own (with the process collector), which the HTTP server exposes as text.
`RequestMetricsInterceptor` times every KV operation by operation and consistency level, at the
gRPC boundary, so the RPC layer itself carries no metrics code.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import grpc
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

import kvstore
from kvstore._pb import kvstore_pb2 as pb
from kvstore.hub import HubTotals
from kvstore.rpc.backend import PartitionStatus

# Bucket upper bounds. Durations double from 100 us (disk, Ready cycle) or 500 us (requests);
# batch sizes double from 1.
DISK_SECONDS = tuple(0.0001 * 2**i for i in range(15))  # 100 us .. 1.6 s
REQUEST_SECONDS = tuple(0.0005 * 2**i for i in range(15))  # 0.5 ms .. 8.2 s
BATCH_SIZES = tuple(float(2**i) for i in range(13))  # 1 .. 4096


class Histogram:
    """Counts observations into fixed buckets (`value <= bound`, as Prometheus' `le`).

    No lock and no labels: one object per label set, updated from one thread.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one counts values above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, observations <= le) for every bound and +Inf, as exposition wants them."""
        buckets = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(total)))
        return buckets


@dataclass(slots=True)
class NodeMetrics:
    """What happened on this node since it started; updated in place by the node and transport."""

    requests: dict[tuple[str, str], Histogram] = field(default_factory=dict)  # (op, consistency)
    request_errors: dict[tuple[str, str], int] = field(default_factory=dict)  # (op, error code)
    proposals: int = 0
    proposals_failed: int = 0  # refused at once: not the leader, or the proposal was dropped
    entries_applied: int = 0
    fsync_seconds: Histogram = field(default_factory=lambda: Histogram(DISK_SECONDS))
    ready_cycle_seconds: Histogram = field(default_factory=lambda: Histogram(DISK_SECONDS))
    ready_groups: Histogram = field(default_factory=lambda: Histogram(BATCH_SIZES))
    ready_entries: Histogram = field(default_factory=lambda: Histogram(BATCH_SIZES))
    leader_changes: int = 0
    elections_won: int = 0
    snapshots_sent: int = 0
    snapshots_failed: int = 0
    snapshots_installed: int = 0
    peer_sent_bytes: dict[int, int] = field(default_factory=dict)
    peer_connects: dict[int, int] = field(default_factory=dict)

    def request_histogram(self, op: str, consistency: str) -> Histogram:
        key = (op, consistency)
        histogram = self.requests.get(key)
        if histogram is None:
            histogram = self.requests[key] = Histogram(REQUEST_SECONDS)
        return histogram


def timed(action: Callable[[], object]) -> float:
    """Run `action`; its duration in seconds (for the disk thread to hand back to the loop)."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


# -- state read at scrape time ------------------------------------------------------------------


class NodeReadings(Protocol):
    """What the collector reads from a node when scraped (the node implements it)."""

    @property
    def node_id(self) -> int: ...
    def status(self) -> Sequence[PartitionStatus]: ...
    def db_size_bytes(self) -> int: ...
    def peer_connections(self) -> Mapping[int, bool]: ...
    def watch_totals(self) -> HubTotals: ...


@dataclass(frozen=True, slots=True)
class FixedReadings:
    """`NodeReadings` from fixed values: the in-memory implementation (tests, examples)."""

    node_id: int
    partitions: tuple[PartitionStatus, ...] = ()
    db_size: int = 0
    peers: Mapping[int, bool] = field(default_factory=dict)
    watches: HubTotals = HubTotals()

    def status(self) -> Sequence[PartitionStatus]:
        return self.partitions

    def db_size_bytes(self) -> int:
        return self.db_size

    def peer_connections(self) -> Mapping[int, bool]:
        return self.peers

    def watch_totals(self) -> HubTotals:
        return self.watches


class NodeCollector(Collector):
    """Every kvstore_* family of one node, built when scraped."""

    def __init__(self, readings: NodeReadings, metrics: NodeMetrics) -> None:
        self.readings = readings
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._state()
        yield from self._events()

    def _state(self) -> Iterator[Metric]:
        readings = self.readings
        info = GaugeMetricFamily("kvstore_node_info", "This node's id and version (always 1).",
                                 labels=["node_id", "version"])
        info.add_metric([str(readings.node_id), kvstore.__version__], 1)
        yield info
        statuses = readings.status()
        per_partition = {
            "term": ("kvstore_partition_term", "Raft term of this node's replica of the partition."),
            "leader": ("kvstore_partition_leader", "Node id of the partition's leader as this replica knows it (0: none)."),
            "commit": ("kvstore_partition_commit_index", "Highest log index this replica knows to be committed."),
            "applied": ("kvstore_partition_applied_index", "Highest log index this replica has applied."),
        }
        for attribute, (name, documentation) in per_partition.items():
            family = GaugeMetricFamily(name, documentation, labels=["partition"])
            for status in statuses:
                family.add_metric([str(status.partition)], getattr(status, attribute))
            yield family
        voters = GaugeMetricFamily("kvstore_partition_replicas", "Voting replicas of the partition.", labels=["partition"])
        for status in statuses:
            voters.add_metric([str(status.partition)], len(status.replicas))
        yield voters
        yield GaugeMetricFamily("kvstore_partitions_led", "Partitions this node leads.",
                                value=sum(1 for s in statuses if s.leader == readings.node_id))
        yield GaugeMetricFamily("kvstore_db_size_bytes", "Approximate size of this node's LevelDB on disk.",
                                value=readings.db_size_bytes())
        watches = readings.watch_totals()
        yield GaugeMetricFamily("kvstore_watches", "Watches this node serves (docs/watch.md).", value=watches.cursors)
        yield GaugeMetricFamily("kvstore_watch_history_changes",
                                "Applied changes the partitions' watch histories hold, all together.",
                                value=watches.changes)
        yield GaugeMetricFamily("kvstore_watch_history_bytes",
                                "Memory of the watch histories' changes (as the history bound counts it).",
                                value=watches.bytes)
        connected = GaugeMetricFamily("kvstore_peer_connected", "1 while the Raft stream to the peer is open.",
                                      labels=["peer"])
        for peer, up in sorted(readings.peer_connections().items()):
            connected.add_metric([str(peer)], 1 if up else 0)
        yield connected

    def _events(self) -> Iterator[Metric]:
        m = self.metrics
        requests = HistogramMetricFamily(
            "kvstore_request_duration_seconds",
            "KV operations served, by operation and requested consistency (reads) or write concern (writes); "
            "an operation of a Batch takes the Batch's duration.",
            labels=["op", "consistency"],
        )
        for (op, consistency), histogram in sorted(m.requests.items()):
            requests.add_metric([op, consistency], histogram.cumulative(), histogram.sum)
        yield requests
        errors = CounterMetricFamily("kvstore_request_errors", "KV operations answered with an error, by error code.",
                                     labels=["op", "code"])
        for (op, code), count in sorted(m.request_errors.items()):
            errors.add_metric([op, code], count)
        yield errors
        yield CounterMetricFamily("kvstore_proposals", "Commands proposed to Raft by this node as leader.",
                                  value=m.proposals)
        yield CounterMetricFamily("kvstore_proposals_failed",
                                  "Commands refused at proposal time (not the leader, or dropped).",
                                  value=m.proposals_failed)
        yield CounterMetricFamily("kvstore_entries_applied", "Committed log entries applied to the state machine.",
                                  value=m.entries_applied)
        yield _histogram("kvstore_disk_fsync_duration_seconds", "Synced LevelDB writes of a Ready cycle (group commit).",
                         m.fsync_seconds)
        yield _histogram("kvstore_ready_cycle_duration_seconds",
                         "One Ready-loop cycle: step inputs, persist, send, apply, advance.", m.ready_cycle_seconds)
        yield _histogram("kvstore_ready_groups", "Raft groups with a Ready handled together in one cycle.",
                         m.ready_groups)
        yield _histogram("kvstore_ready_entries", "Log entries persisted together in one cycle (cycles that persist any).",
                         m.ready_entries)
        yield CounterMetricFamily("kvstore_leader_changes", "Times a hosted partition's leader changed, as seen here.",
                                  value=m.leader_changes)
        yield CounterMetricFamily("kvstore_elections_won", "Elections this node won.", value=m.elections_won)
        snapshots = CounterMetricFamily("kvstore_snapshots_sent", "Snapshots sent to followers, by outcome.",
                                        labels=["outcome"])
        snapshots.add_metric(["ok"], m.snapshots_sent)
        snapshots.add_metric(["failed"], m.snapshots_failed)
        yield snapshots
        yield CounterMetricFamily("kvstore_snapshots_installed", "Snapshots received from a leader and installed.",
                                  value=m.snapshots_installed)
        sent = CounterMetricFamily("kvstore_peer_sent_bytes", "Bytes of Raft frames written to the peer's stream.",
                                   labels=["peer"])
        for peer, count in sorted(m.peer_sent_bytes.items()):
            sent.add_metric([str(peer)], count)
        yield sent
        connects = CounterMetricFamily("kvstore_peer_connects", "Streams opened to the peer (more than one: reconnects).",
                                       labels=["peer"])
        for peer, count in sorted(m.peer_connects.items()):
            connects.add_metric([str(peer)], count)
        yield connects


def _histogram(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, buckets=histogram.cumulative(), sum_value=histogram.sum)


def metrics_registry(readings: NodeReadings, metrics: NodeMetrics) -> CollectorRegistry:
    """A registry of this node's collectors alone (no process-global state)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(readings, metrics))
    ProcessCollector(registry=registry)
    return registry


# -- requests, timed at the gRPC boundary -------------------------------------------------------

_READ_LEVELS = {value: name.lower() for name, value in pb.ReadConsistency.items()}
_WRITE_CONCERNS = {value: name.lower() for name, value in pb.WriteConcern.items()}
_ERROR_NAMES = {value: name for name, value in pb.ErrorCode.items()}
_KV_SERVICE = "/" + pb.DESCRIPTOR.services_by_name["KV"].full_name + "/"


def _labels(op: str, request: Any) -> str:
    """The consistency label of one operation: its read level, or its write concern."""
    if op in ("get", "scan"):
        return _READ_LEVELS.get(request.consistency, "unknown")
    return _WRITE_CONCERNS.get(request.concern, "unknown")


def _operations(method: str, request: Any) -> Iterable[tuple[str, str]]:
    """(op, consistency) of every operation an RPC carries (a Batch carries many)."""
    if method == "Batch":
        for op in request.ops:
            kind = op.WhichOneof("op")
            if kind is not None:
                yield kind, _labels(kind, getattr(op, kind))
    else:
        kind = method.lower()
        yield kind, _labels(kind, request)


def _errors(method: str, response: Any) -> Iterable[tuple[str, int]]:
    """(op, error code) of every operation answered with an error."""
    if method == "Batch":
        for result in response.results:
            kind = result.WhichOneof("op")
            if kind is not None:
                code = getattr(result, kind).error.code
                if code:
                    yield kind, code
    elif response.error.code:
        yield method.lower(), response.error.code


AioUnaryBehaviour = Callable[[Any, Any], Awaitable[Any]]


def aio_unary_behaviour(handler: grpc.RpcMethodHandler) -> AioUnaryBehaviour:
    """`handler`'s unary behaviour as the aio server runs it: a coroutine function of (request,
    context). grpc's stubs type method handlers for the sync server only."""
    return cast(AioUnaryBehaviour, handler.unary_unary)


class RequestMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Times every unary KV RPC and counts its operations' errors in `NodeMetrics`.

    Other services (Cluster, Peer, health, reflection) pass through untouched.
    """

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        full_method = handler_call_details.method
        if handler is None or handler.unary_unary is None or not full_method.startswith(_KV_SERVICE):
            return handler
        cached = self._wrapped.get(full_method)
        if cached is None or cached[0] is not handler:
            cached = (handler, self._wrap(full_method[len(_KV_SERVICE):], handler))
            self._wrapped[full_method] = cached
        return cached[1]

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        behaviour = aio_unary_behaviour(handler)
        metrics = self.metrics

        async def timed_behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            try:
                response = await behaviour(request, context)
            except asyncio.CancelledError:
                _count_errors(metrics, ((op, "CANCELLED") for op, _ in _operations(method, request)))
                raise
            elapsed = time.perf_counter() - start
            for op, consistency in _operations(method, request):
                metrics.request_histogram(op, consistency).observe(elapsed)
            _count_errors(metrics, ((op, _ERROR_NAMES.get(code, str(code))) for op, code in _errors(method, response)))
            return response

        return grpc.unary_unary_rpc_method_handler(
            timed_behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _count_errors(metrics: NodeMetrics, errors: Iterable[tuple[str, str]]) -> None:
    counts = metrics.request_errors
    for key in errors:
        counts[key] = counts.get(key, 0) + 1
