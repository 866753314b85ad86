"""The node's HTTP side (`--metrics-address`): Prometheus metrics, probes, the status page.

| path | what |
|---|---|
| `/metrics` | Prometheus text exposition of `kvstore.node.metrics` |
| `/healthz` | liveness: 200 while the process's event loop answers |
| `/readyz` | readiness: 200 while the gRPC health state is SERVING, else 503 |
| `/` | the live status page (`static/status.html`), which polls `/api/cluster` |
| `/api/cluster` | the cluster view as JSON (`kvstore.node.cluster_view`) |

It runs on the node's event loop, so a scrape reads the node's state between two Ready
cycles, never in the middle of one.
"""

from __future__ import annotations

import dataclasses
import logging
from importlib.resources import files

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from kvstore.address import parse_address
from kvstore.errors import UnavailableError
from kvstore.node.cluster_view import ClusterStatusSource
from kvstore.node.health import NodeHealth
from kvstore.node.server import AddressInUseError

log = logging.getLogger("kvstore.http")

ROUTES = {"/metrics": "_metrics", "/healthz": "_healthz", "/readyz": "_readyz", "/": "_page",
          "/api/cluster": "_cluster"}  # path -> the OpsServer method that answers it
PATHS = tuple(ROUTES)
STATUS_PAGE = files("kvstore.node") / "static" / "status.html"


class OpsServer:
    """`await start()`, `await close()`; serves the paths in `PATHS` on `address`."""

    def __init__(self, address: str, node_id: int, registry: CollectorRegistry, health: NodeHealth,
                 cluster: ClusterStatusSource) -> None:
        self.host, self.port = parse_address(address)  # checked with the node's configuration
        self.node_id = node_id
        self.registry = registry
        self.health = health
        self.cluster = cluster
        app = web.Application()
        app.add_routes([web.get(path, getattr(self, method)) for path, method in ROUTES.items()])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)

    async def start(self) -> None:
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port, reuse_port=False).start()
        except OSError as e:
            await self._runner.cleanup()
            raise AddressInUseError(f"cannot serve metrics on {self.host}:{self.port}: {e.strerror or e}") from None
        log.info("metrics and the status page on http://%s:%d/", self.host, self.port)

    async def close(self) -> None:
        await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.health.serving:
            return web.Response(text="serving\n")
        return web.Response(status=503, text="not serving\n")

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(text=STATUS_PAGE.read_text(encoding="utf-8"), content_type="text/html")

    async def _cluster(self, request: web.Request) -> web.Response:
        try:
            view = await self.cluster.view()
        except UnavailableError as error:  # a joining node does not know the cluster yet
            return web.Response(status=503, text=f"{error.message}\n")
        return web.json_response({"served_by": self.node_id, **dataclasses.asdict(view)})
