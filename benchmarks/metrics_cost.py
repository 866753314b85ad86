"""CPU cost per event of the node's metrics, against prometheus-client's own metric objects.

The node counts events on its hot path (`kvstore.node.metrics`): an integer attribute add, a
dict entry add, and `Histogram.observe` (a bisect and two adds, no lock). prometheus-client's
`Histogram.observe` and `Counter.inc` take a lock per call. Also measured: what the request
interceptor adds to one KV RPC (a Batch of 1 and of 100 operations) over calling the handler
directly, in an event loop as the node runs it.

    python benchmarks/metrics_cost.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from typing import Any

import grpc
import prometheus_client
import uvloop

from kvstore._pb import kvstore_pb2 as pb
from kvstore.bench.report import machine_line
from kvstore.node.metrics import (
    REQUEST_SECONDS,
    Histogram,
    NodeMetrics,
    RequestMetricsInterceptor,
    aio_unary_behaviour,
)

EVENTS = 1_000_000


def per_event_ns(action: Callable[[], object], repeats: int, number: int = EVENTS) -> float:
    """Best of `repeats` runs of `number` calls, in ns per call, minus an empty call's cost."""
    def empty() -> None:
        pass

    best = min(timeit.repeat(action, number=number, repeat=repeats))
    baseline = min(timeit.repeat(empty, number=number, repeat=repeats))
    return (best - baseline) / number * 1e9


def event_costs(repeats: int) -> dict[str, float]:
    metrics = NodeMetrics()
    histogram = Histogram(REQUEST_SECONDS)
    registry = prometheus_client.CollectorRegistry()
    library_histogram = prometheus_client.Histogram("h_seconds", "h", buckets=REQUEST_SECONDS, registry=registry)
    library_counter = prometheus_client.Counter("c", "c", registry=registry)
    peers = metrics.peer_sent_bytes
    peers[2] = 0

    def add_attribute() -> None:
        metrics.proposals += 1

    def add_dict_entry() -> None:
        peers[2] += 1500

    return {
        "NodeMetrics attribute += 1": per_event_ns(add_attribute, repeats),
        "NodeMetrics dict entry += n": per_event_ns(add_dict_entry, repeats),
        "kvstore Histogram.observe": per_event_ns(lambda: histogram.observe(0.003), repeats),
        "prometheus_client Histogram.observe": per_event_ns(lambda: library_histogram.observe(0.003), repeats),
        "prometheus_client Counter.inc": per_event_ns(library_counter.inc, repeats),
    }


def interceptor_cost(ops: int, calls: int, repeats: int) -> float:
    """us per RPC the interceptor adds to a Batch of `ops` puts (lookup, timing, labels,
    histogram updates, the scan of the answers for errors)."""
    async def batch(request: Any, context: Any) -> pb.BatchResponse:
        return pb.BatchResponse(results=[pb.ResponseOp(put=pb.PutResponse(header=pb.ResponseHeader(revision=i)))
                                         for i in range(len(request.ops))])

    handler: grpc.RpcMethodHandler = grpc.unary_unary_rpc_method_handler(batch)

    class Details:
        method = "/kvstore.v1.KV/Batch"
        invocation_metadata = ()

    async def continuation(details: Any) -> grpc.RpcMethodHandler:
        return handler

    interceptor = RequestMetricsInterceptor(NodeMetrics())
    request = pb.BatchRequest(ops=[pb.RequestOp(put=pb.PutRequest(key=b"k%d" % i, value=b"v")) for i in range(ops)])

    async def direct() -> None:
        for _ in range(calls):
            await aio_unary_behaviour(handler)(request, None)

    async def intercepted() -> None:
        for _ in range(calls):
            wrapped = await interceptor.intercept_service(continuation, Details())  # type: ignore[arg-type]
            assert wrapped is not None
            await aio_unary_behaviour(wrapped)(request, None)

    def best(run: Callable[[], Any]) -> float:
        return min(timeit.repeat(lambda: uvloop.run(run()), number=1, repeat=repeats)) / calls * 1e6

    return best(intercepted) - best(direct)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(machine_line())
    for name, ns in event_costs(args.repeats).items():
        print(f"{name:40s} {ns:8.0f} ns per event")
    for ops, calls in ((1, 20_000), (100, 2_000)):
        us = interceptor_cost(ops, calls, args.repeats)
        print(f"{f'interceptor, Batch of {ops}':40s} {us:8.2f} us per RPC")


if __name__ == "__main__":
    main()
