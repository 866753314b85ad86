"""The standard gRPC health checking and reflection services, as a node serves them.

Health (`grpc.health.v1.Health`) answers for the whole server (service "") and for each
public service by name: NOT_SERVING while the node starts, SERVING once it has replayed its log
and started its Ready loop, NOT_SERVING for good from the moment it begins to shut down (a
`Watch` stream sees that change before the server closes). The HTTP `/readyz` endpoint reports
the same state, for probes that cannot speak gRPC.

Reflection lets `grpcurl` and similar tools list the services and their methods; it lists the
services the node serves, and no other.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class NodeHealth:
    """The health service's state for `services` (and "", the server as a whole)."""

    def __init__(self, services: Sequence[str]) -> None:
        self.services = ("", *services)
        self.servicer = health.aio.HealthServicer()
        self.serving = False

    def add_to(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    async def set_serving(self, serving: bool) -> None:
        for service in self.services:
            await self.servicer.set(service, SERVING if serving else NOT_SERVING)
        self.serving = serving

    async def shut_down(self) -> None:
        """NOT_SERVING for every service, and no later `set_serving` changes it."""
        self.serving = False
        await self.servicer.enter_graceful_shutdown()


def add_reflection(server: grpc.aio.Server, services: Sequence[str]) -> None:
    """Serve reflection for `services`, the health service and reflection itself."""
    reflection.enable_server_reflection([*services, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
