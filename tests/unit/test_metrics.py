"""The node's metrics: the cheap histogram, the scrape-time collector, the request interceptor."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kvstore._pb import kvstore_pb2 as pb
from kvstore.hub import HubTotals
from kvstore.node.metrics import (
    FixedReadings,
    Histogram,
    NodeMetrics,
    RequestMetricsInterceptor,
    aio_unary_behaviour,
    metrics_registry,
)
from kvstore.rpc.backend import PartitionStatus


def scrape(readings: FixedReadings, metrics: NodeMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Family or sample name -> [(labels, value)], parsed back from the text exposition."""
    text = generate_latest(metrics_registry(readings, metrics)).decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_histogram_buckets_are_inclusive_and_cumulative() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.1", 2.0), ("1.0", 4.0), ("+Inf", 5.0)]
    assert histogram.sum == pytest.approx(8.65)


def test_scrape_reports_partition_state_and_events() -> None:
    readings = FixedReadings(
        node_id=2,
        partitions=(PartitionStatus(0, (1, 2, 3), 2, 5, 40, 38), PartitionStatus(1, (1, 2, 3), 1, 4, 17, 17)),
        db_size=4096,
        peers={1: True, 3: False},
        watches=HubTotals(cursors=3, changes=120, bytes=40960),
    )
    metrics = NodeMetrics()
    metrics.proposals = 12
    metrics.entries_applied = 55
    metrics.fsync_seconds.observe(0.003)
    metrics.peer_sent_bytes[3] = 900
    metrics.snapshots_sent = 1
    samples = scrape(readings, metrics)

    assert samples["kvstore_partition_leader"] == [({"partition": "0"}, 2.0), ({"partition": "1"}, 1.0)]
    assert samples["kvstore_partition_commit_index"][0] == ({"partition": "0"}, 40.0)
    assert samples["kvstore_partition_applied_index"][0] == ({"partition": "0"}, 38.0)
    assert samples["kvstore_partition_term"][1] == ({"partition": "1"}, 4.0)
    assert samples["kvstore_partitions_led"] == [({}, 1.0)]
    assert samples["kvstore_db_size_bytes"] == [({}, 4096.0)]
    assert samples["kvstore_watches"] == [({}, 3.0)]
    assert samples["kvstore_watch_history_changes"] == [({}, 120.0)]
    assert samples["kvstore_watch_history_bytes"] == [({}, 40960.0)]
    assert samples["kvstore_peer_connected"] == [({"peer": "1"}, 1.0), ({"peer": "3"}, 0.0)]
    assert samples["kvstore_proposals_total"] == [({}, 12.0)]
    assert samples["kvstore_entries_applied_total"] == [({}, 55.0)]
    assert samples["kvstore_disk_fsync_duration_seconds_count"] == [({}, 1.0)]
    assert samples["kvstore_peer_sent_bytes_total"] == [({"peer": "3"}, 900.0)]
    assert ({"outcome": "ok"}, 1.0) in samples["kvstore_snapshots_sent_total"]
    assert samples["kvstore_node_info"][0][0]["node_id"] == "2"
    assert "process_cpu_seconds_total" in samples


class _Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def _handler(behaviour: Callable[[Any, Any], Awaitable[Any]]) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(behaviour)


async def _call(interceptor: RequestMetricsInterceptor, method: str, handler: grpc.RpcMethodHandler,
                request: Any) -> Any:
    async def continuation(details: Any) -> grpc.RpcMethodHandler:
        return handler

    wrapped = await interceptor.intercept_service(continuation, _Details(method))  # type: ignore[arg-type]
    assert wrapped is not None
    return await aio_unary_behaviour(wrapped)(request, None)


async def test_interceptor_times_each_operation_of_a_batch_by_consistency() -> None:
    metrics = NodeMetrics()
    interceptor = RequestMetricsInterceptor(metrics)

    async def batch(request: pb.BatchRequest, context: Any) -> pb.BatchResponse:
        return pb.BatchResponse(results=[
            pb.ResponseOp(get=pb.GetResponse()),
            pb.ResponseOp(get=pb.GetResponse()),
            pb.ResponseOp(put=pb.PutResponse(error=pb.Error(code=pb.NOT_LEADER))),
        ])

    request = pb.BatchRequest(ops=[
        pb.RequestOp(get=pb.GetRequest(key=b"a", consistency=pb.STALE)),
        pb.RequestOp(get=pb.GetRequest(key=b"b")),
        pb.RequestOp(put=pb.PutRequest(key=b"c", value=b"v")),
    ])
    await _call(interceptor, "/kvstore.v1.KV/Batch", _handler(batch), request)

    async def get(request: pb.GetRequest, context: Any) -> pb.GetResponse:
        return pb.GetResponse(error=pb.Error(code=pb.TIMEOUT))

    await _call(interceptor, "/kvstore.v1.KV/Get", _handler(get), pb.GetRequest(key=b"a", consistency=pb.LEASE))

    counts = {key: sum(h.counts) for key, h in metrics.requests.items()}
    assert counts == {("get", "stale"): 1, ("get", "linearizable"): 1, ("put", "majority"): 1, ("get", "lease"): 1}
    assert metrics.request_errors == {("put", "NOT_LEADER"): 1, ("get", "TIMEOUT"): 1}


async def test_interceptor_counts_cancelled_calls_and_leaves_other_services_alone() -> None:
    metrics = NodeMetrics()
    interceptor = RequestMetricsInterceptor(metrics)

    async def never(request: Any, context: Any) -> Any:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await _call(interceptor, "/kvstore.v1.KV/Put", _handler(never), pb.PutRequest(key=b"k"))
    assert metrics.request_errors == {("put", "CANCELLED"): 1}

    status_handler = _handler(never)

    async def continuation(details: Any) -> grpc.RpcMethodHandler:
        return status_handler

    passed = await interceptor.intercept_service(continuation, _Details("/kvstore.v1.Cluster/Status"))  # type: ignore[arg-type]
    assert passed is status_handler


def test_docs_list_exactly_the_families_a_node_exports() -> None:
    readings = FixedReadings(node_id=1, partitions=(PartitionStatus(0, (1,), 1, 2, 3, 3),), peers={2: True})
    metrics = NodeMetrics()
    metrics.request_histogram("get", "linearizable").observe(0.01)
    metrics.request_errors[("put", "TIMEOUT")] = 1
    metrics.peer_connects[2] = 1
    text = generate_latest(metrics_registry(readings, metrics)).decode()
    exported = {f.name + ("_total" if f.type == "counter" else "")
                for f in text_string_to_metric_families(text) if f.name.startswith("kvstore_")}
    docs = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"^\| `(kvstore_[a-z_]+)` \|", docs, flags=re.MULTILINE))
    assert documented == exported
